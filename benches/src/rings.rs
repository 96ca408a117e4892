//! The broadcast ring against rtrb between two pinned threads, in
//! interleaved runs: the `cross_thread` example's cases, and the harness's
//! check of issue 14's first target (the broadcast ring, 1 producer -> 1
//! consumer, 160 B trade frames, single publishes, at least rtrb's rate
//! for the same frames).
//!
//! Each run moves [`ITEMS_PER_RUN`] items on a fresh ring and times from
//! the producer's first push until the consumer has taken the last one.
//! Rates count *delivered* items: an overwriting ring that laps its
//! consumer delivers fewer than it was given, and the frames it lost are
//! reported beside its rate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{json, Value};
use zerocast_core::broadcast::{Broadcast, Start};

use crate::{
    pin, pop_all, publish_all, push_copies, receive_all, trade_frame, Delivery, RingStorage,
    ITEMS_PER_RUN,
};

/// Slots of every ring the comparisons make.
pub const CAPACITY: usize = 4096;

/// One run: millions of items delivered per second, and items lost.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Items the consumer read, per second, in millions.
    pub delivered_m_per_s: f64,
    /// Items sent and never read (an overwriting ring lapped its consumer).
    pub lost: u64,
    /// rtrb's runs only: how full its queue was, on average, as the
    /// consumer saw it every [`FILL_SAMPLE_EVERY`] items (rtrb runs in one
    /// of two regimes, near empty or full, at very different rates: see
    /// the `rtrb_regime` example).
    pub fill: Option<f64>,
}

/// How often an rtrb consumer samples its queue's fill, in items.
pub const FILL_SAMPLE_EVERY: u64 = 256;

/// `produce` runs on the calling thread, `consume` on a thread pinned to
/// the second core, both started together; timed until the consumer is
/// done. `consume` says what it delivered. The caller pins itself.
pub fn two_threads(produce: impl FnOnce(), consume: impl FnOnce() -> Delivery + Send) -> Run {
    let (secs, delivery) = pinned_pair(produce, consume);
    Run {
        delivered_m_per_s: delivery.received as f64 / secs / 1e6,
        lost: delivery.lagged,
        fill: None,
    }
}

/// [`two_threads`] for any consumer result: the seconds from the start
/// until the consumer was done, and what it returned. A consumer that
/// cannot pin fails the run (a panic) instead of leaving the producer at
/// the barrier.
pub fn pinned_pair<R: Send>(
    produce: impl FnOnce(),
    consume: impl FnOnce() -> R + Send,
) -> (f64, R) {
    let start = std::sync::Barrier::new(2);
    // Set by a consumer that could not be pinned: the producer then does
    // not start (it would wait forever for room, or at the barrier).
    let failed = AtomicBool::new(false);
    let (t0, result) = std::thread::scope(|s| {
        let (start, failed) = (&start, &failed);
        let consumer = s.spawn(move || {
            let pinned = std::panic::catch_unwind(|| pin(1));
            if pinned.is_err() {
                // Relaxed: read after the barrier below, which orders it.
                failed.store(true, Ordering::Relaxed);
            }
            start.wait();
            if let Err(e) = pinned {
                std::panic::resume_unwind(e);
            }
            consume()
        });
        start.wait();
        // Relaxed: stored before the barrier both sides passed.
        if failed.load(Ordering::Relaxed) {
            consumer.join().expect("consumer thread: could not pin");
            unreachable!("a consumer that could not pin returned");
        }
        let t0 = Instant::now();
        produce();
        (t0, consumer.join().expect("consumer thread"))
    });
    (t0.elapsed().as_secs_f64(), result)
}

/// A lossless consumer's delivery: every item.
pub fn all_items(consume: impl FnOnce()) -> impl FnOnce() -> Delivery {
    move || {
        consume();
        Delivery {
            received: ITEMS_PER_RUN,
            lagged: 0,
        }
    }
}

/// One run through a fresh heap ring (overwriting, or with a gating
/// consumer), single publishes or batches of `batch`.
pub fn broadcast(gating: bool, frame: &[u64], batch: usize) -> Run {
    let ring = Broadcast::with_capacity(CAPACITY, frame.len()).expect("ring");
    run_broadcast(&ring, gating, frame, batch)
}

/// One run through a fresh ring in single-producer mode (claims by plain
/// store), with the ipc layer's barriers: a compiler fence on the producer
/// where this process could register for membarrier.
pub fn broadcast_single(gating: bool, frame: &[u64], batch: usize) -> Run {
    let mut ring = Broadcast::with_capacity(CAPACITY, frame.len()).expect("ring");
    // SAFETY: one producer (the run's producer thread), and this is the
    // ring's only handle.
    unsafe { ring.set_single_producer(zerocast_ipc::wait::single_producer_mode()) };
    run_broadcast(&ring, gating, frame, batch)
}

/// One run of `frame` through `ring`, from the calling thread to a
/// consumer on the second core.
pub fn run_broadcast(
    ring: &Broadcast<impl RingStorage>,
    gating: bool,
    frame: &[u64],
    batch: usize,
) -> Run {
    let cursor = if gating {
        ring.register_gating(Start::Newest).expect("gating slot")
    } else {
        ring.cursor(Start::Newest)
    };
    two_threads(
        || publish_all(ring, frame, batch),
        move || receive_all(ring, cursor, frame.len()),
    )
}

/// One run of `frame` (20 words, a trade frame) through a fresh rtrb ring.
pub fn rtrb(frame: &[u64]) -> Run {
    let (mut producer, mut consumer) = rtrb::RingBuffer::<[u64; 20]>::new(CAPACITY);
    let mut item = [0u64; 20];
    item.copy_from_slice(&frame[..20]);
    // The consumer's mean fill, as f64 bits.
    let fill = std::sync::atomic::AtomicU64::new(f64::NAN.to_bits());
    let mut run = two_threads(
        || push_copies(item, |x| producer.push(x).is_ok()),
        all_items(|| {
            let (mut got, mut sum, mut samples) = (0u64, 0u64, 0u64);
            pop_all(|| {
                let x = consumer.pop().ok();
                if x.is_some() {
                    got += 1;
                    if got % FILL_SAMPLE_EVERY == 0 {
                        sum += consumer.slots() as u64;
                        samples += 1;
                    }
                }
                x
            });
            // Relaxed: read after the consumer thread is joined.
            fill.store(
                // No sample (fewer items than one interval): NaN, dropped
                // below, never a 0 that reads as "near empty".
                (sum as f64 / samples as f64).to_bits(),
                Ordering::Relaxed,
            );
        }),
    );
    // Relaxed: the join in `two_threads` ordered the store before this.
    run.fill = Some(f64::from_bits(fill.load(Ordering::Relaxed))).filter(|f| f.is_finite());
    run
}

/// Median, minimum and maximum rate of `runs`, and the median and largest
/// loss.
pub fn stats(runs: &[Run]) -> (f64, f64, f64, u64, u64) {
    let mut rates: Vec<f64> = runs.iter().map(|r| r.delivered_m_per_s).collect();
    rates.sort_by(f64::total_cmp);
    let mut lost: Vec<u64> = runs.iter().map(|r| r.lost).collect();
    lost.sort_unstable();
    (
        crate::median(&rates).unwrap_or(f64::NAN),
        rates[0],
        rates[rates.len() - 1],
        lost[lost.len() / 2],
        lost[lost.len() - 1],
    )
}

/// The cases the harness compares with rtrb, in the order each round runs
/// them: the broadcast ring overwriting and gating (multi-producer), the
/// overwriting ring in single-producer mode, and rtrb with the same frames.
pub const HARNESS_CASES: [&str; 4] = [
    "broadcast overwriting",
    "broadcast gating",
    "broadcast single-producer overwriting",
    "rtrb",
];

/// Runs [`HARNESS_CASES`] in `runs` interleaved rounds (each case once per
/// round, so that a busy machine slows them all alike) on two threads
/// pinned to the first two cores, and reports each case's median rate and
/// the median of its rounds' multiples of rtrb's rate in the same round. The calling thread is not pinned: the
/// runs happen on a thread of their own.
pub fn compare_with_rtrb(runs: usize) -> Value {
    assert!(runs > 0, "at least one run");
    let results = std::thread::scope(|s| {
        s.spawn(|| {
            pin(0);
            let frame = trade_frame();
            let mut results = vec![Vec::with_capacity(runs); HARNESS_CASES.len()];
            for _ in 0..runs {
                for (case, out) in HARNESS_CASES.iter().zip(&mut results) {
                    out.push(match *case {
                        "broadcast overwriting" => broadcast(false, &frame, 1),
                        "broadcast gating" => broadcast(true, &frame, 1),
                        "broadcast single-producer overwriting" => {
                            broadcast_single(false, &frame, 1)
                        }
                        "rtrb" => rtrb(&frame),
                        other => unreachable!("unknown ring case {other}"),
                    });
                }
            }
            results
        })
        .join()
        .expect("ring comparison thread")
    });
    let rtrb_at = HARNESS_CASES
        .iter()
        .position(|c| *c == "rtrb")
        .expect("rtrb is a case");
    let rtrb_runs = &results[rtrb_at];
    let cases: Vec<Value> = HARNESS_CASES
        .iter()
        .zip(&results)
        .map(|(case, runs)| {
            let (median, min, max, lost_median, lost_max) = stats(runs);
            // Each round's ratio to rtrb's run of the same round, then
            // their median: a round run while the guest changed speed is
            // one outlier, not a shift of one side's median.
            let ratios: Vec<f64> = runs
                .iter()
                .zip(rtrb_runs)
                .map(|(r, b)| r.delivered_m_per_s / b.delivered_m_per_s)
                .collect();
            let fills: Vec<Option<f64>> = runs.iter().map(|r| r.fill).collect();
            json!({
                "fill_runs": if fills.iter().any(Option::is_some) { json!(fills) } else { Value::Null },
                "delivered_m_per_s_runs": runs.iter().map(|r| r.delivered_m_per_s).collect::<Vec<_>>(),
                "x_rtrb_runs": ratios,
                "case": case,
                "delivered_m_per_s_median": median,
                "delivered_m_per_s_min": min,
                "delivered_m_per_s_max": max,
                "lost_median": lost_median,
                "lost_max": lost_max,
                "x_rtrb": crate::median(&ratios),
            })
        })
        .collect();
    json!({
        "runs": runs,
        "items_per_run": ITEMS_PER_RUN,
        "capacity": CAPACITY,
        "frame_bytes": 160,
        "cases": cases,
    })
}

#[cfg(test)]
mod tests {
    /// rtrb's runs carry their queue's mean fill (the regime they ran
    /// in), within the queue's capacity; the broadcast ring's carry none.
    #[test]
    fn rtrb_runs_record_their_queue_fill() {
        let frame = crate::trade_frame();
        let fill = super::rtrb(&frame).fill.expect("rtrb's run has no fill");
        assert!(
            (0.0..=super::CAPACITY as f64).contains(&fill),
            "fill {fill} outside 0..={}",
            super::CAPACITY
        );
        assert_eq!(super::broadcast(false, &frame, 1).fill, None);
    }
}
