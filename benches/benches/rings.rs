//! Per-operation cost of the zerocast rings, single-threaded and across two
//! pinned threads, with rtrb and crossbeam's `ArrayQueue` measured in the same
//! run as baselines.
//!
//! `cargo bench -p zerocast-benches --bench rings`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use zerocast_benches::{
    cores, pin, pop_all, publish_all, push_all, push_copies, receive_all, trade_frame, Item,
    ITEMS_PER_RUN,
};
use zerocast_core::broadcast::{Broadcast, GatingCache, Start};
use zerocast_core::mpmc::Mpmc;
use zerocast_core::spsc::Spsc;

const CAPACITY: usize = 4096;

/// Runs `consume` on a second pinned core while `produce` runs here, `iters`
/// times over, and returns the total time for all of it.
fn cross_thread<P, C>(iters: u64, mut setup: impl FnMut() -> (P, C)) -> Duration
where
    P: FnOnce(),
    C: FnOnce() + Send,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let (produce, consume) = setup();
        let started = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let consumer = s.spawn(|| {
                pin(1);
                started.wait();
                consume();
            });
            started.wait();
            let t = Instant::now();
            produce();
            consumer.join().unwrap();
            total += t.elapsed();
        });
    }
    total
}

fn spsc(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc_64B/single_thread");
    g.throughput(Throughput::Elements(1));
    {
        let mut q = Spsc::<Item, _>::with_capacity(CAPACITY).unwrap();
        let (mut p, mut cons) = q.split();
        g.bench_function("zerocast", |b| {
            b.iter(|| {
                p.push(black_box(Item::default())).ok();
                black_box(cons.pop().ok());
            })
        });
    }
    {
        let (mut p, mut cons) = rtrb::RingBuffer::<Item>::new(CAPACITY);
        g.bench_function("rtrb", |b| {
            b.iter(|| {
                p.push(black_box(Item::default())).ok();
                black_box(cons.pop().ok());
            })
        });
    }
    {
        let q = ArrayQueue::<Item>::new(CAPACITY);
        g.bench_function("crossbeam_ArrayQueue", |b| {
            b.iter(|| {
                q.push(black_box(Item::default())).ok();
                black_box(q.pop());
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("spsc_64B/cross_thread");
    g.throughput(Throughput::Elements(ITEMS_PER_RUN));
    g.bench_function("zerocast", |b| {
        b.iter_custom(|iters| {
            let q = Spsc::<Item, _>::with_capacity(CAPACITY).unwrap();
            let q = &q;
            cross_thread(iters, || {
                // SAFETY: one producer and one consumer handle at a time: the
                // previous iteration's handles ended with its threads.
                let (mut p, mut cons) = unsafe { (q.producer(), q.consumer()) };
                (
                    move || {
                        push_all(|item| p.push(item).is_ok());
                    },
                    move || {
                        pop_all(|| cons.pop().ok());
                    },
                )
            })
        })
    });
    g.bench_function("rtrb", |b| {
        b.iter_custom(|iters| {
            // One ring for all iterations, like the others: its halves are
            // handed to the threads and back, so no iteration pays for
            // allocating and faulting in a fresh ring.
            let (p, c) = rtrb::RingBuffer::<Item>::new(CAPACITY);
            let (ps, cs) = (Mutex::new(Some(p)), Mutex::new(Some(c)));
            let (ps, cs) = (&ps, &cs);
            cross_thread(iters, || {
                let mut p = ps.lock().unwrap().take().unwrap();
                let mut cons = cs.lock().unwrap().take().unwrap();
                (
                    move || {
                        push_all(|item| p.push(item).is_ok());
                        *ps.lock().unwrap() = Some(p);
                    },
                    move || {
                        pop_all(|| cons.pop().ok());
                        *cs.lock().unwrap() = Some(cons);
                    },
                )
            })
        })
    });
    g.bench_function("crossbeam_ArrayQueue", |b| {
        b.iter_custom(|iters| {
            let q = ArrayQueue::<Item>::new(CAPACITY);
            let q = &q;
            cross_thread(iters, || {
                (
                    move || {
                        push_all(|item| q.push(item).is_ok());
                    },
                    move || {
                        pop_all(|| q.pop());
                    },
                )
            })
        })
    });
    g.finish();
}

fn mpmc(c: &mut Criterion) {
    let mut g = c.benchmark_group("mpmc_64B/single_thread");
    g.throughput(Throughput::Elements(1));
    let q = Mpmc::<Item, _>::with_capacity(CAPACITY).unwrap();
    g.bench_function("zerocast", |b| {
        b.iter(|| {
            q.push(black_box(Item::default())).ok();
            black_box(q.pop().ok());
        })
    });
    let aq = ArrayQueue::<Item>::new(CAPACITY);
    g.bench_function("crossbeam_ArrayQueue", |b| {
        b.iter(|| {
            aq.push(black_box(Item::default())).ok();
            black_box(aq.pop());
        })
    });
    g.finish();

    let mut g = c.benchmark_group("mpmc_64B/cross_thread");
    g.throughput(Throughput::Elements(ITEMS_PER_RUN));
    g.bench_function("zerocast", |b| {
        b.iter_custom(|iters| {
            let q = &q;
            cross_thread(iters, || {
                (
                    move || {
                        push_all(|item| q.push(item).is_ok());
                    },
                    move || {
                        pop_all(|| q.pop().ok());
                    },
                )
            })
        })
    });
    g.bench_function("crossbeam_ArrayQueue", |b| {
        b.iter_custom(|iters| {
            let q = &aq;
            cross_thread(iters, || {
                (
                    move || {
                        push_all(|item| q.push(item).is_ok());
                    },
                    move || {
                        pop_all(|| q.pop());
                    },
                )
            })
        })
    });
    g.finish();
}

fn broadcast(c: &mut Criterion) {
    let frame = trade_frame();
    let words = frame.len();
    let mut g = c.benchmark_group("broadcast_trade/single_thread");
    g.throughput(Throughput::Elements(1));
    {
        let ring = Broadcast::with_capacity(CAPACITY, words).unwrap();
        let mut cache = GatingCache::default();
        let mut cursor = ring.cursor(Start::Newest);
        let mut out = vec![0u64; words];
        g.bench_function("zerocast_publish_recv", |b| {
            b.iter(|| {
                ring.try_publish(&mut cache, black_box(&frame)).unwrap();
                black_box(ring.try_recv(&mut cursor, &mut out).ok());
            })
        });
        g.bench_function("zerocast_publish_only", |b| {
            b.iter(|| black_box(ring.try_publish(&mut cache, black_box(&frame)).unwrap()))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("broadcast_trade/cross_thread");
    g.throughput(Throughput::Elements(ITEMS_PER_RUN));
    for gating in [false, true] {
        let name = if gating {
            "zerocast_gating"
        } else {
            "zerocast_overwriting"
        };
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let ring = Broadcast::with_capacity(CAPACITY, words).unwrap();
                let ring = &ring;
                let frame = &frame;
                cross_thread(iters, || {
                    let cursor = if gating {
                        ring.register_gating(Start::Newest).unwrap()
                    } else {
                        ring.cursor(Start::Newest)
                    };
                    (
                        move || publish_all(ring, frame, 1),
                        // Counts sequences passed, read or lagged: see the
                        // `cross_thread` example for delivered frames/s and
                        // the lag of the overwriting ring, reported apart.
                        move || {
                            receive_all(ring, cursor, words);
                        },
                    )
                })
            })
        });
    }
    // Baselines moving the same 160-byte frames losslessly between two threads.
    g.bench_function("rtrb_same_frames", |b| {
        b.iter_custom(|iters| {
            // Reused across iterations, as the rings above are.
            let (p, c) = rtrb::RingBuffer::<[u64; 20]>::new(CAPACITY);
            let (ps, cs) = (Mutex::new(Some(p)), Mutex::new(Some(c)));
            let (ps, cs) = (&ps, &cs);
            let mut f = [0u64; 20];
            f.copy_from_slice(&frame[..20]);
            cross_thread(iters, || {
                let mut p = ps.lock().unwrap().take().unwrap();
                let mut cons = cs.lock().unwrap().take().unwrap();
                (
                    move || {
                        push_copies(f, |f| p.push(f).is_ok());
                        *ps.lock().unwrap() = Some(p);
                    },
                    move || {
                        pop_all(|| cons.pop().ok());
                        *cs.lock().unwrap() = Some(cons);
                    },
                )
            })
        })
    });
    g.finish();
}

fn config() -> Criterion {
    // Take the core list before the bench thread pins itself.
    let _ = cores();
    pin(0);
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = spsc, mpmc, broadcast
}
criterion_main!(benches);
