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

use zerocast_benches::rings::{
    all_items, broadcast, broadcast_single, rtrb, run_broadcast, stats, two_threads, Run, CAPACITY,
};
use zerocast_benches::{cores, pin, pop_all, push_all, trade_frame, Item, ITEMS_PER_RUN};
use zerocast_core::broadcast::Broadcast;
use zerocast_core::spsc::Spsc;

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

fn summary(runs: &[Run]) -> String {
    let (median, min, max, lost_median, lost_max) = stats(runs);
    let fills: Vec<String> = runs
        .iter()
        .filter_map(|r| r.fill)
        .map(|f| format!("{f:.0}"))
        .collect();
    let fill = if fills.is_empty() {
        String::new()
    } else {
        // rtrb's regime per run: near 0, its consumer kept up; near the
        // capacity, it fell behind (see the `rtrb_regime` example).
        format!("  | queue fill per run: {}", fills.join(", "))
    };
    format!(
        "median {median:6.2}  min {min:6.2}  max {max:6.2}  | lost per run: median \
         {lost_median:7}  max {lost_max:7}{fill}",
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
    assert!(runs > 0, "runs: at least 1");
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
