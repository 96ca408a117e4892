//! One producer thread, one consumer thread, pinned to two cores, in
//! interleaved runs: `spsc` against rtrb with 64-byte items, and the
//! `broadcast` ring (overwriting and gating, single and batch-32 publishes)
//! against rtrb moving the same 160-byte trade frames.
//!
//! `cargo run --release -p zerocast-benches --example cross_thread -- [runs]`
//!
//! Each run moves 200,000 items on a fresh ring and times from the
//! producer's first push until the consumer has taken the last one. The cases take turns, run after run, so that a noisy
//! neighbour on a shared machine slows them all alike; the report gives the
//! median, minimum and maximum over the runs of each case. The criterion
//! bench (`--bench rings`) measures the same pairs, one case after another.

use std::time::Instant;

use zerocast_benches::{cores, pin, pop_all, push_all, trade_frame, Item, ITEMS_PER_RUN};
use zerocast_core::broadcast::{Broadcast, GatingCache, Start, TryRecvError};
use zerocast_core::spsc::Spsc;

const CAPACITY: usize = 4096;
const FRAMES: u64 = ITEMS_PER_RUN;

/// Millions of items per second: `produce` runs here, `consume` on the
/// second core, both started together.
fn two_threads(produce: impl FnOnce(), consume: impl FnOnce() + Send) -> f64 {
    let start = std::sync::Barrier::new(2);
    let t0 = std::thread::scope(|s| {
        let start = &start;
        s.spawn(move || {
            pin(1);
            start.wait();
            consume();
        });
        start.wait();
        let t0 = Instant::now();
        produce();
        t0
    });
    FRAMES as f64 / t0.elapsed().as_secs_f64() / 1e6
}

fn spsc() -> f64 {
    let mut q = Spsc::<Item, _>::with_capacity(CAPACITY).unwrap();
    let (mut p, mut c) = q.split();
    two_threads(
        || push_all(|item| p.push(item).is_ok()),
        || pop_all(|| c.pop().ok()),
    )
}

fn rtrb_items() -> f64 {
    let (mut p, mut c) = rtrb::RingBuffer::<Item>::new(CAPACITY);
    two_threads(
        || push_all(|item| p.push(item).is_ok()),
        || pop_all(|| c.pop().ok()),
    )
}

/// Millions of frames per second through a fresh ring.
fn broadcast(gating: bool, frame: &[u64], batch: usize) -> f64 {
    let words = frame.len();
    let ring = Broadcast::with_capacity(CAPACITY, words).unwrap();
    let mut cursor = if gating {
        ring.register_gating(Start::Newest).unwrap()
    } else {
        ring.cursor(Start::Newest)
    };
    let end = cursor.next + FRAMES;
    let batch_words: Vec<u64> = frame.iter().copied().cycle().take(words * batch).collect();
    let ring = &ring;
    two_threads(
        || {
            let mut cache = GatingCache::default();
            for _ in 0..FRAMES / batch as u64 {
                while ring
                    .try_publish_batch(&mut cache, &batch_words, words)
                    .is_err()
                {
                    std::hint::spin_loop();
                }
            }
        },
        move || {
            let mut out = vec![0u64; words];
            while cursor.next < end {
                match ring.try_recv(&mut cursor, &mut out) {
                    Ok(seq) => {
                        std::hint::black_box(seq);
                    }
                    Err(TryRecvError::Lagged(n)) => {
                        std::hint::black_box(n);
                    }
                    Err(_) => std::hint::spin_loop(),
                }
            }
        },
    )
}

/// Millions of frames per second through a fresh rtrb ring.
fn rtrb(frame: &[u64]) -> f64 {
    let (mut producer, mut consumer) = rtrb::RingBuffer::<[u64; 20]>::new(CAPACITY);
    let mut item = [0u64; 20];
    item.copy_from_slice(&frame[..20]);
    two_threads(
        || {
            for _ in 0..FRAMES {
                while producer.push(item).is_err() {
                    std::hint::spin_loop();
                }
            }
        },
        || pop_all(|| consumer.pop().ok()),
    )
}

fn summary(mut runs: Vec<f64>) -> String {
    runs.sort_by(f64::total_cmp);
    format!(
        "median {:6.2}  min {:6.2}  max {:6.2}",
        runs[runs.len() / 2],
        runs[0],
        runs[runs.len() - 1]
    )
}

fn main() {
    // Take the core list before this thread pins itself.
    let _ = cores();
    pin(0);
    let frame = trade_frame();
    assert_eq!(frame.len(), 20, "a trade frame is 20 words");
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("runs: a number"))
        .unwrap_or(30);
    let cases: [(&str, &dyn Fn() -> f64); 7] = [
        ("spsc, 64 B items", &spsc),
        ("rtrb, 64 B items", &rtrb_items),
        ("zerocast overwriting", &|| broadcast(false, &frame, 1)),
        ("zerocast gating", &|| broadcast(true, &frame, 1)),
        ("zerocast overwriting, batch 32", &|| {
            broadcast(false, &frame, 32)
        }),
        ("zerocast gating, batch 32", &|| broadcast(true, &frame, 32)),
        ("rtrb, same trade frames", &|| rtrb(&frame)),
    ];
    let mut results = vec![Vec::with_capacity(runs); cases.len()];
    for _ in 0..runs {
        for ((_, case), out) in cases.iter().zip(&mut results) {
            out.push(case());
        }
    }
    println!("M items/s, median over {runs} interleaved runs of {FRAMES} items, 1 producer -> 1 consumer thread");
    for ((name, _), runs) in cases.iter().zip(results) {
        println!("{name:32} {}", summary(runs));
    }
}
