//! One producer thread, one consumer thread, pinned to two cores, in
//! interleaved runs: `spsc` against rtrb with 64-byte items, and the
//! `broadcast` ring (overwriting and gating, single and batch-32 publishes,
//! on the heap and in one 2 MiB transparent huge page) against rtrb moving the
//! same 160-byte trade frames.
//!
//! `cargo run --release -p zerocast-benches --example cross_thread -- [runs]`
//!
//! Each run moves 200,000 items on a fresh ring and times from the
//! producer's first push until the consumer has taken the last one. The cases
//! take turns, run after run, so that a noisy neighbour on a shared machine
//! slows them all alike; the report gives the median, minimum and maximum
//! over the runs of each case. The criterion bench (`--bench rings`)
//! measures the same pairs, one case after another.
//!
//! Rates count *delivered* items: what the consumer read. rtrb, spsc and
//! the gating rings deliver every item; the overwriting ring may lap its
//! consumer, which then skips frames (`Lagged`). Those are not delivered:
//! its rate counts only the frames read, and the frames it lost are
//! reported beside it (median and largest per run), so that a lossy rate
//! is never compared with a lossless one as if both delivered everything.
//!
//! The huge-page cases exist because a 4096-slot trade ring (768 KiB) on
//! 4 KiB pages runs at one of two speeds depending on which physical pages
//! it gets (how its lines spread over the L2 cache's sets); in one huge page
//! it does not depend on that.

use std::time::Instant;

use zerocast_benches::{
    cores, pin, pop_all, publish_all, push_all, push_copies, receive_all, trade_frame, Delivery,
    Item, RingStorage, ITEMS_PER_RUN,
};
use zerocast_core::broadcast::{Broadcast, Start};
use zerocast_core::spsc::Spsc;

const CAPACITY: usize = 4096;

/// One run: millions of items delivered per second, and items lost.
#[derive(Clone, Copy)]
struct Run {
    delivered_m_per_s: f64,
    lost: u64,
}

/// `produce` runs here, `consume` on the second core, both started
/// together; timed until the consumer is done. `consume` says what it
/// delivered.
fn two_threads(produce: impl FnOnce(), consume: impl FnOnce() -> Delivery + Send) -> Run {
    let start = std::sync::Barrier::new(2);
    let (t0, delivery) = std::thread::scope(|s| {
        let start = &start;
        let consumer = s.spawn(move || {
            pin(1);
            start.wait();
            consume()
        });
        start.wait();
        let t0 = Instant::now();
        produce();
        (t0, consumer.join().expect("consumer thread"))
    });
    Run {
        delivered_m_per_s: delivery.received as f64 / t0.elapsed().as_secs_f64() / 1e6,
        lost: delivery.lagged,
    }
}

/// A lossless consumer's delivery: every item.
fn all_items(consume: impl FnOnce()) -> impl FnOnce() -> Delivery {
    move || {
        consume();
        Delivery {
            received: ITEMS_PER_RUN,
            lagged: 0,
        }
    }
}

fn spsc() -> Run {
    let mut q = Spsc::<Item, _>::with_capacity(CAPACITY).unwrap();
    let (mut p, mut c) = q.split();
    two_threads(
        || push_all(|item| p.push(item).is_ok()),
        all_items(|| pop_all(|| c.pop().ok())),
    )
}

fn rtrb_items() -> Run {
    let (mut p, mut c) = rtrb::RingBuffer::<Item>::new(CAPACITY);
    two_threads(
        || push_all(|item| p.push(item).is_ok()),
        all_items(|| pop_all(|| c.pop().ok())),
    )
}

/// One run through a fresh ring.
fn broadcast(gating: bool, frame: &[u64], batch: usize) -> Run {
    let ring = Broadcast::with_capacity(CAPACITY, frame.len()).unwrap();
    run_broadcast(&ring, gating, frame, batch)
}

/// One run through a fresh ring in single-producer mode (claims by plain
/// store), with the ipc layer's barriers: a compiler fence on the producer
/// where this process could register for membarrier.
fn broadcast_single(gating: bool, frame: &[u64], batch: usize) -> Run {
    let mut ring = Broadcast::with_capacity(CAPACITY, frame.len()).unwrap();
    // SAFETY: one producer (the run's producer thread), and this is the
    // ring's only handle.
    unsafe { ring.set_single_producer(zerocast_ipc::wait::single_producer_mode()) };
    run_broadcast(&ring, gating, frame, batch)
}

/// The same on a ring in one 2 MiB transparent huge page: physically
/// contiguous, so where its lines fall in the caches does not depend on which
/// 4 KiB pages the kernel handed out.
fn broadcast_thp(gating: bool, frame: &[u64]) -> Run {
    use zerocast_core::broadcast::{words_needed, BroadcastHeader};
    use zerocast_core::storage::Raw;
    type R = Raw<BroadcastHeader, std::sync::atomic::AtomicU64>;
    const HUGE: usize = 2 << 20;
    let words = words_needed(CAPACITY, frame.len());
    let size = R::region_size(words);
    assert!(size <= HUGE, "the ring must fit one huge page");
    // SAFETY: a fresh anonymous private mapping; checked below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * HUGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED, "mmap failed");
    let aligned = (base as usize).next_multiple_of(HUGE) as *mut u8;
    // SAFETY: `aligned .. aligned + HUGE` lies inside the 2 * HUGE mapping.
    unsafe {
        assert_eq!(
            libc::madvise(aligned.cast(), HUGE, libc::MADV_HUGEPAGE),
            0,
            "madvise(MADV_HUGEPAGE) failed"
        );
        aligned.write_bytes(0, HUGE);
    }
    HUGE_PAGES.get_or_init(huge_pages_granted);
    let rate = {
        // SAFETY: zeroed, aligned to 2 MiB, at least `size` bytes, and
        // unmapped only after this block, where the ring ends.
        let raw = unsafe { R::from_region(aligned, size, words).unwrap() };
        let ring = Broadcast::init(raw, CAPACITY as u64, frame.len() as u64).unwrap();
        run_broadcast(&ring, gating, frame, 1)
    };
    // SAFETY: the mapping made above; nothing refers to it any more.
    unsafe { libc::munmap(base, 2 * HUGE) };
    rate
}

/// What [`huge_pages_granted`] said while the first huge-page ring was mapped.
static HUGE_PAGES: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Whether this kernel backs a `MADV_HUGEPAGE` mapping with a huge page
/// (`/proc/self/smaps_rollup` counts it while mapped).
fn huge_pages_granted() -> String {
    let probe = || {
        std::fs::read_to_string("/proc/self/smaps_rollup")
            .ok()?
            .lines()
            .find(|l| l.starts_with("AnonHugePages"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    probe().unwrap_or_else(|| "AnonHugePages: unknown".into())
}

fn run_broadcast(
    ring: &Broadcast<impl RingStorage>,
    gating: bool,
    frame: &[u64],
    batch: usize,
) -> Run {
    let cursor = if gating {
        ring.register_gating(Start::Newest).unwrap()
    } else {
        ring.cursor(Start::Newest)
    };
    two_threads(
        || publish_all(ring, frame, batch),
        move || receive_all(ring, cursor, frame.len()),
    )
}

/// One run through a fresh rtrb ring.
fn rtrb(frame: &[u64]) -> Run {
    let (mut producer, mut consumer) = rtrb::RingBuffer::<[u64; 20]>::new(CAPACITY);
    let mut item = [0u64; 20];
    item.copy_from_slice(&frame[..20]);
    two_threads(
        || push_copies(item, |x| producer.push(x).is_ok()),
        all_items(|| pop_all(|| consumer.pop().ok())),
    )
}

fn summary(runs: &[Run]) -> String {
    let mut rates: Vec<f64> = runs.iter().map(|r| r.delivered_m_per_s).collect();
    rates.sort_by(f64::total_cmp);
    let mut lost: Vec<u64> = runs.iter().map(|r| r.lost).collect();
    lost.sort_unstable();
    format!(
        "median {:6.2}  min {:6.2}  max {:6.2}  | lost per run: median {:7}  max {:7}",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1],
        lost[lost.len() / 2],
        lost[lost.len() - 1],
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
    let cases: [(&str, &dyn Fn() -> Run); 12] = [
        ("spsc, 64 B items", &spsc),
        ("rtrb, 64 B items", &rtrb_items),
        ("zerocast overwriting", &|| broadcast(false, &frame, 1)),
        ("zerocast gating", &|| broadcast(true, &frame, 1)),
        ("zerocast overwriting, huge page", &|| {
            broadcast_thp(false, &frame)
        }),
        ("zerocast gating, huge page", &|| {
            broadcast_thp(true, &frame)
        }),
        ("zerocast overwriting, batch 32", &|| {
            broadcast(false, &frame, 32)
        }),
        ("zerocast gating, batch 32", &|| broadcast(true, &frame, 32)),
        ("zerocast single-prod. overwriting", &|| {
            broadcast_single(false, &frame, 1)
        }),
        ("zerocast single-prod. gating", &|| {
            broadcast_single(true, &frame, 1)
        }),
        ("zerocast single-prod. overwr. b32", &|| {
            broadcast_single(false, &frame, 32)
        }),
        ("rtrb, same trade frames", &|| rtrb(&frame)),
    ];
    let mut results = vec![Vec::with_capacity(runs); cases.len()];
    for _ in 0..runs {
        for ((_, case), out) in cases.iter().zip(&mut results) {
            out.push(case());
        }
    }
    println!(
        "M items/s delivered (read by the consumer), median over {runs} interleaved runs of \
         {ITEMS_PER_RUN} items sent, 1 producer -> 1 consumer thread; lost = sent - delivered \
         (overwriting rings only)"
    );
    for ((name, _), runs) in cases.iter().zip(results) {
        println!("{name:34} {}", summary(&runs));
    }
    println!(
        "huge-page rings: {} while mapped",
        HUGE_PAGES.get().map_or("not run", String::as_str)
    );
}
