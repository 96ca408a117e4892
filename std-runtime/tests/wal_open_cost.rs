//! What opening a WAL costs: it must not read the whole preallocated last
//! segment into memory. A counting allocator measures the largest
//! allocation `Wal::open` makes (no timing assertions).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use zerocast_runtime::wal::{FsyncPolicy, Wal, WalOptions};

struct Counting;

/// Largest single allocation since the last reset.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only
// records the size asked for.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Relaxed: a statistic read after the measured call returns on the
        // same thread; no other memory depends on it.
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Relaxed: as in `alloc`.
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("zc-open-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn regression_open_does_not_read_the_whole_preallocated_segment() {
    let dir = tempdir("cost");
    let options = WalOptions {
        fsync: FsyncPolicy::Never,
        ..WalOptions::default()
    };
    assert_eq!(options.segment_size, 64 << 20);
    let (mut wal, _) = Wal::open(&dir, "trades", options.clone()).unwrap();
    for seq in 0..100 {
        wal.append_lost(seq, 0).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    // Relaxed: see `Counting::alloc`.
    LARGEST.store(0, Ordering::Relaxed);
    let (wal, _) = Wal::open(&dir, "trades", options).unwrap();
    let largest = LARGEST.load(Ordering::Relaxed);
    assert_eq!(wal.last_seq(), Some(99));
    assert!(
        largest < 1 << 20,
        "opening a WAL with a 64 MiB last segment allocated {largest} bytes at once"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
