//! Why rtrb's rate swings between runs of the same 160 B frames (the
//! harness's ring-vs-rtrb comparison): each run also reports how full its
//! queue was, sampled by the consumer every 256 items, and how often the
//! consumer found it empty; then each side's rate alone, on a warm ring
//! with nobody on the other side, for rtrb and the broadcast ring.
//!
//! A bounded queue between two cores settles near one of two ends: its
//! consumer keeps up (the queue near empty; the consumer polls what the
//! producer is writing), or its producer does (the queue full; the
//! producer waits for, and at once rewrites, the slot the consumer has
//! just freed). Which end a run settles at, and how fast it then runs,
//! varies between runs of the same frames on the 2-vCPU guests; the fill
//! says which side waits, not the rate. A consumer much faster than its
//! producer (the broadcast ring's) always keeps up.
//!
//! `cargo run --release -p zerocast-benches --example rtrb_regime [runs]`
use std::time::Instant;

use zerocast_benches::{pin, rings, trade_frame};
use zerocast_core::broadcast::{Broadcast, GatingCache, Start, TryRecvError};

/// Items per run (as the harness's).
const ITEMS: u64 = 200_000;
/// Consumer samples of the queue's fill, one every this many items.
const SAMPLE_EVERY: u64 = 256;

/// One two-thread run: delivered rate (M/s), mean fill of the queue as
/// the consumer saw it, and how many polls found nothing.
struct Run {
    rate: f64,
    fill: f64,
    /// Polls that found nothing (or a frame still being written).
    empty_polls: u64,
    /// Sent and never read (the overwriting ring lapped its consumer).
    lost: u64,
}

fn rtrb_run(item: [u64; 20]) -> Run {
    let (mut producer, mut consumer) = rtrb::RingBuffer::<[u64; 20]>::new(rings::CAPACITY);
    let (secs, (fill, empty_polls)) = rings::pinned_pair(
        || {
            for _ in 0..ITEMS {
                while producer.push(item).is_err() {
                    std::hint::spin_loop();
                }
            }
        },
        move || {
            // As the harness's consumer (`pop_all`): no pause on empty.
            let (mut got, mut fill, mut samples, mut empty) = (0u64, 0u64, 0u64, 0u64);
            while got < ITEMS {
                match consumer.pop() {
                    Ok(x) => {
                        std::hint::black_box(x);
                        got += 1;
                        if got % SAMPLE_EVERY == 0 {
                            fill += consumer.slots() as u64;
                            samples += 1;
                        }
                    }
                    Err(_) => empty += 1,
                }
            }
            // NaN without a sample: never a 0 that reads as "near empty".
            (fill as f64 / samples as f64, empty)
        },
    );
    Run {
        rate: ITEMS as f64 / secs / 1e6,
        fill,
        empty_polls,
        lost: 0,
    }
}

fn broadcast_run(frame: &[u64]) -> Run {
    let ring = Broadcast::with_capacity(rings::CAPACITY, frame.len()).expect("ring");
    let mut cursor = ring.cursor(Start::Newest);
    let ring = &ring;
    let (secs, (got, fill, empty_polls)) = rings::pinned_pair(
        || {
            let mut cache = GatingCache::default();
            for _ in 0..ITEMS {
                ring.try_publish(&mut cache, frame).expect("publish");
            }
        },
        move || {
            // As the harness's consumer (`receive_all`): a pause on empty.
            let mut out = vec![0u64; frame.len()];
            let (mut got, mut fill, mut samples, mut empty) = (0u64, 0u64, 0u64, 0u64);
            while cursor.next() < ITEMS {
                match ring.try_recv(&mut cursor, &mut out) {
                    Ok(seq) => {
                        std::hint::black_box(seq);
                        got += 1;
                        if got % SAMPLE_EVERY == 0 {
                            fill += ring.head().saturating_sub(cursor.next());
                            samples += 1;
                        }
                    }
                    Err(TryRecvError::Lagged(_)) => {}
                    Err(_) => {
                        empty += 1;
                        std::hint::spin_loop();
                    }
                }
            }
            (got, fill as f64 / samples as f64, empty)
        },
    );
    Run {
        rate: got as f64 / secs / 1e6,
        fill,
        empty_polls,
        lost: ITEMS - got,
    }
}

/// Each side alone on a warm ring (M items/s): rtrb's push and pop, the
/// broadcast ring's publish and receive; `rounds` fills and drains of
/// most of the ring, on the calling thread.
fn solo(item: [u64; 20], frame: &[u64], rounds: usize) -> [f64; 4] {
    let n = rings::CAPACITY - 64;
    let (mut producer, mut consumer) = rtrb::RingBuffer::<[u64; 20]>::new(rings::CAPACITY);
    let ring = Broadcast::with_capacity(rings::CAPACITY, frame.len()).expect("ring");
    let mut cursor = ring.register_gating(Start::Newest).expect("gating slot");
    let mut cache = GatingCache::default();
    let mut out = vec![0u64; frame.len()];
    let mut secs = [0f64; 4];
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..n {
            producer.push(item).expect("room");
        }
        secs[0] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(consumer.pop().expect("item"));
        }
        secs[1] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..n {
            ring.try_publish(&mut cache, frame).expect("room");
        }
        secs[2] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(ring.try_recv(&mut cursor, &mut out).expect("frame"));
        }
        secs[3] += t.elapsed().as_secs_f64();
        ring.release(&mut cursor);
    }
    secs.map(|s| (rounds * n) as f64 / s / 1e6)
}

fn main() {
    // Take the core list before this thread pins itself, then pin it: it
    // is every run's producer (and the solo runs' only thread).
    let _ = zerocast_benches::cores();
    pin(0);
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("runs"))
        .unwrap_or(20);
    assert!(runs > 0, "at least one run");
    let frame = trade_frame();
    let mut item = [0u64; 20];
    item.copy_from_slice(&frame[..20]);
    println!(
        "two threads on the two pinned cores, {ITEMS} trade frames (160 B) per run, rings of {} \
         slots; fill: the queue's mean length as the consumer saw it (every {SAMPLE_EVERY} items)",
        rings::CAPACITY
    );
    let (mut full, mut kept_up, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let r = rtrb_run(item);
        let b = broadcast_run(&frame);
        println!(
            "run {run:2}  rtrb {:6.1} M/s  fill {:6.0}  empty polls {:8}  |  broadcast overwriting \
             {:6.1} M/s  fill {:6.0}  empty polls {:8}  lost {}",
            r.rate, r.fill, r.empty_polls, b.rate, b.fill, b.empty_polls, b.lost
        );
        // A queue a quarter full or more on average: its consumer fell
        // behind and stayed behind (the producer waits).
        if r.fill >= rings::CAPACITY as f64 / 4.0 {
            full.push(r.rate);
        } else {
            kept_up.push(r.rate);
        }
        ours.push(b.rate);
    }
    let median = |v: &[f64]| zerocast_benches::median(v).map_or("-".into(), |m| format!("{m:.1}"));
    println!(
        "rtrb, consumer kept up (fill under a quarter): {} runs, median {} M/s; queue full: {} \
         runs, median {} M/s; broadcast overwriting: median {} M/s",
        kept_up.len(),
        median(&kept_up),
        full.len(),
        median(&full),
        median(&ours)
    );
    let [push, pop, publish, recv] = solo(item, &frame, 50);
    println!(
        "alone on a warm ring, one thread: rtrb push {push:.1}, pop {pop:.1} M/s; broadcast \
         publish {publish:.1}, receive {recv:.1} M/s"
    );
}
