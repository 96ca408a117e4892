//! The bus's publish paths at full speed, one publisher thread to one
//! subscriber thread on the two pinned cores (shared memory, one process):
//! the subscriber busy-polls `Subscriber::try_recv` and does nothing else
//! per frame, so the publisher's own cost decides the rate, as it would
//! for an engine thread publishing into a topic whose readers keep up.
//! Interleaved rounds, each path once per round, on an overwriting topic
//! (a reader that falls behind is lapped and counts `Lagged`):
//!
//! - `publish`: `Publisher::publish(&TradeEvent)` (frame clock, encode in
//!   place, in-flight record, wake check);
//! - `single`: the same on a single-producer topic;
//! - `at`, `single-at`: `Publisher::publish_at(&TradeEvent, t)` with the
//!   trade's own timestamp for the frame time (no clock read), on both
//!   topic kinds;
//! - `single-tsc` (x86_64): `publish_at` on a single-producer topic with a
//!   bare TSC read (`rdtsc`) right before each publish for the time: the
//!   least any clock read per frame adds (no conversion, no state), to
//!   hold `single` against;
//! - `words`: `ShmPublisher::publish_words` of a frame encoded once (the
//!   bus's bookkeeping, no clock, no encode);
//! - `raw`: the segment's ring below the bus, `Broadcast::try_publish` of
//!   the same encoded frame (no bookkeeping at all).
//!
//! `cargo run --release -p zerocast-benches --example bus_threads [rounds]`
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerocast_benches::{bench_trade, pin, trade_frame};
use zerocast_core::broadcast::GatingCache;
use zerocast_ipc::{
    Bus, Config, Producers, Publisher, RecvError, Start, SubscriberOptions, TopicConfig, TopicKind,
    WaitStrategy,
};

const FRAMES: u64 = 2_000_000;

/// What one path's run measured.
struct Run {
    /// Frames published per second (M/s).
    rate: f64,
    received: u64,
    lagged: u64,
}

fn run(path: &str, round: usize) -> Run {
    let mut topic = TopicConfig::new("bench", 16 << 20, TopicKind::Trade);
    if path.starts_with("single") {
        topic.producers = Producers::Single;
    }
    let bus = Bus::new(Config {
        namespace: format!("busthr{}{path}{round}", std::process::id()),
        topics: vec![topic],
    });
    bus.remove_segments();
    // Removes the run's segments however it ends (a panic included).
    struct Cleanup(Bus);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            self.0.remove_segments();
        }
    }
    let cleanup = Cleanup(bus.clone());
    pin(0);
    let ready = Arc::new(AtomicBool::new(false));
    let reader = {
        let (bus, ready) = (bus.clone(), ready.clone());
        std::thread::spawn(move || {
            pin(1);
            let mut sub = bus
                .subscriber(
                    "bench",
                    SubscriberOptions {
                        name: "bus-threads".into(),
                        start: Start::Newest,
                        wait: WaitStrategy::BusySpin,
                        ..Default::default()
                    },
                )
                .expect("subscriber");
            // Release: pairs with the publisher's Acquire load below; the
            // subscriber exists before the first frame.
            ready.store(true, Ordering::Release);
            let (mut received, mut lagged) = (0, 0);
            // Empty polls in a row; the clock is read every 1024th (as
            // `Subscriber::recv_timeout` does when busy-spinning), never per poll:
            // how often a caught-up reader looks at the slot being written
            // changes the publisher's rate.
            let (mut empty, mut idle_since) = (0u32, None::<Instant>);
            loop {
                match sub.try_recv() {
                    Ok(f) => {
                        received += 1;
                        empty = 0;
                        if f.seq + 1 >= FRAMES {
                            break;
                        }
                    }
                    Err(RecvError::Lagged(n)) => lagged += n,
                    Err(RecvError::Empty) => {
                        empty = empty.wrapping_add(1);
                        if empty % 1024 == 0 {
                            // Gives up only if the publisher stopped early.
                            let now = Instant::now();
                            let since = *idle_since.get_or_insert(now);
                            if empty == 1024 {
                                idle_since = Some(now);
                            } else if now - since > Duration::from_secs(5) {
                                break;
                            }
                        }
                        std::hint::spin_loop();
                    }
                    Err(e) => panic!("bus_threads receive: {e}"),
                }
            }
            (received, lagged)
        })
    };
    // Acquire: pairs with the Release store above.
    while !ready.load(Ordering::Acquire) {
        if reader.is_finished() {
            // It panicked before it was ready (no subscriber): say why.
            let _ = reader.join().expect("subscriber thread");
            panic!("the subscriber thread ended before subscribing");
        }
        std::thread::yield_now();
    }
    let mut publisher = bus.publisher("bench").expect("publisher");
    let seg = bus.segment("bench").expect("segment");
    let (trade, frame, mut cache) = (bench_trade(), trade_frame(), GatingCache::default());
    let t0 = Instant::now();
    for _ in 0..FRAMES {
        match (path, &mut publisher) {
            ("raw", _) => {
                seg.ring()
                    .try_publish(&mut cache, &frame)
                    .expect("raw publish");
            }
            #[cfg(target_arch = "x86_64")]
            ("single-tsc", _) => {
                let tsc = zerocast_benches::pingpong::PathClock::Rdtsc.read();
                publisher.publish_at(&trade, tsc).expect("publish_at");
            }
            ("at" | "single-at", _) => {
                // The trade's own time field for the frame's (a constant
                // here, as the raw ring's frame is).
                publisher
                    .publish_at(&trade, trade.timestamp as u64)
                    .expect("publish_at");
            }
            ("words", Publisher::Shm(p)) => {
                p.publish_words(&frame).expect("publish_words");
            }
            _ => {
                publisher.publish(&trade).expect("publish");
            }
        }
    }
    let rate = FRAMES as f64 / t0.elapsed().as_secs_f64() / 1e6;
    let (received, lagged) = reader.join().expect("subscriber thread");
    drop(publisher);
    drop(cleanup);
    Run {
        rate,
        received,
        lagged,
    }
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("rounds"))
        .unwrap_or(5);
    let mut paths = vec!["publish", "single", "at", "single-at", "words", "raw"];
    if cfg!(target_arch = "x86_64") {
        paths.insert(4, "single-tsc");
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    // Runs whose reader was lapped (it fell a ring behind): their rate is
    // still the publisher's, but not every frame was read.
    let mut lapped = vec![0usize; paths.len()];
    for round in 0..rounds {
        for (i, path) in paths.iter().enumerate() {
            let r = run(path, round);
            eprintln!(
                "round {round} {path:10} {:6.2} M/s published, received {} lagged {}",
                r.rate, r.received, r.lagged
            );
            rates[i].push(r.rate);
            lapped[i] += usize::from(r.lagged > 0);
        }
    }
    println!(
        "M frames/s published, 1 publisher -> 1 busy-polling subscriber thread, {FRAMES} \
         trade frames per run, median of {rounds} interleaved rounds (x raw: over the raw \
         ring's median)"
    );
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<f64> = rates.iter_mut().map(median).collect();
    let raw = medians[paths.len() - 1];
    for ((path, m), lapped) in paths.iter().zip(&medians).zip(&lapped) {
        println!(
            "{path:10} {m:6.2}  {:.2}x raw  (reader lapped in {lapped} of {rounds} runs)",
            m / raw
        );
    }
}
