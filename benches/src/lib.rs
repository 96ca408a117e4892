//! Shared pieces of the zerocast benchmarks.

pub mod bridge_load;
pub mod criteria;
pub mod delayed;
pub mod durability;
pub mod gateway_load;
pub mod pingpong;
pub mod plot;
pub mod rings;

use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use zerocast_core::broadcast::{Broadcast, BroadcastHeader, GatingCache, ReadCursor, TryRecvError};
use zerocast_core::frame::{self, id::id, Direction, TradeEvent};
use zerocast_core::storage::Storage;

/// A 64-byte item, the size the SPSC comparisons use.
#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
pub struct Item(pub [u64; 8]);

/// Items moved per cross-thread measurement.
pub const ITEMS_PER_RUN: u64 = 200_000;

/// The trade the benchmarks publish.
pub fn bench_trade() -> TradeEvent {
    TradeEvent {
        trade_id: id("T-1").unwrap(),
        order_id: id("O-1").unwrap(),
        instrument_id: id("BTC-USDT").unwrap(),
        price: 64_000.0,
        volume: 0.5,
        direction: Direction::Buy,
        timestamp: 1,
    }
}

/// An encoded trade frame (20 words), the frame the ring benchmarks move:
/// [`bench_trade`] encoded.
pub fn trade_frame() -> Vec<u64> {
    let mut buf = vec![0u64; frame::MAX_FRAME_WORDS];
    let words = frame::encode(&bench_trade(), 1, 2, &mut buf).unwrap();
    buf.truncate(words);
    buf
}

/// Pushes [`ITEMS_PER_RUN`] items, spinning while the queue is full.
pub fn push_all(mut push: impl FnMut(Item) -> bool) {
    for i in 0..ITEMS_PER_RUN {
        let item = Item([i; 8]);
        while !push(item) {
            std::hint::spin_loop();
        }
    }
}

/// Pushes [`ITEMS_PER_RUN`] copies of `item`, spinning while the queue is
/// full.
pub fn push_copies<T: Copy>(item: T, mut push: impl FnMut(T) -> bool) {
    for _ in 0..ITEMS_PER_RUN {
        while !push(item) {
            std::hint::spin_loop();
        }
    }
}

/// Storage of a broadcast ring, on the heap or in a mapped region.
pub trait RingStorage: Storage<Header = BroadcastHeader, Elem = AtomicU64> + Sync {}
impl<T: Storage<Header = BroadcastHeader, Elem = AtomicU64> + Sync> RingStorage for T {}

/// Publishes [`ITEMS_PER_RUN`] copies of `frame` into `ring`, one per
/// `try_publish` or `batch` per `try_publish_batch`, spinning while a gating
/// consumer holds the ring full.
pub fn publish_all(ring: &Broadcast<impl RingStorage>, frame: &[u64], batch: usize) {
    let mut cache = GatingCache::default();
    if batch == 1 {
        for _ in 0..ITEMS_PER_RUN {
            while ring.try_publish(&mut cache, frame).is_err() {
                std::hint::spin_loop();
            }
        }
        return;
    }
    let words: Vec<u64> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * batch)
        .collect();
    for _ in 0..ITEMS_PER_RUN / batch as u64 {
        while ring
            .try_publish_batch(&mut cache, &words, frame.len())
            .is_err()
        {
            std::hint::spin_loop();
        }
    }
}

/// What a consumer got from a ring: frames it read, and sequences it never
/// read because the ring lapped it (an overwriting ring's `Lagged`). A
/// rate that compares rings must count `received`, not the sequences
/// passed: a lossless queue delivers every item, an overwriting ring only
/// `received` of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Frames read.
    pub received: u64,
    /// Sequences skipped: overwritten before they were read.
    pub lagged: u64,
}

/// Receives from `cursor` on until it has passed [`ITEMS_PER_RUN`] sequences
/// (frames read or counted as lagged), then gives up its gating slot if it
/// has one. Returns how many were read and how many were skipped.
pub fn receive_all(
    ring: &Broadcast<impl RingStorage>,
    mut cursor: ReadCursor,
    frame_words: usize,
) -> Delivery {
    let end = cursor.next() + ITEMS_PER_RUN;
    let mut out = vec![0u64; frame_words];
    let mut delivery = Delivery::default();
    while cursor.next() < end {
        match ring.try_recv(&mut cursor, &mut out) {
            Ok(seq) => {
                black_box(seq);
                delivery.received += 1;
            }
            Err(TryRecvError::Lagged(n)) => {
                black_box(n);
            }
            Err(_) => std::hint::spin_loop(),
        }
    }
    ring.unregister_gating(&mut cursor);
    // Every sequence of the run not read was lapped (a lag can carry the
    // cursor past `end`, so the lag counts would overstate it).
    delivery.lagged = ITEMS_PER_RUN - delivery.received;
    delivery
}

/// The median of the finite values of `v` (the mean of the two middle
/// ones for an even count), or `None` if there is none.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Pops [`ITEMS_PER_RUN`] items, spinning while the queue is empty.
pub fn pop_all<T>(mut pop: impl FnMut() -> Option<T>) {
    let mut got = 0;
    while got < ITEMS_PER_RUN {
        if let Some(item) = pop() {
            black_box(item);
            got += 1;
        }
    }
}

/// The cores this process may run on, read once before anything is pinned
/// (`core_affinity::get_core_ids` reads the calling thread's mask, which
/// shrinks to one core once that thread is pinned).
pub fn cores() -> &'static [core_affinity::CoreId] {
    static CORES: OnceLock<Vec<core_affinity::CoreId>> = OnceLock::new();
    CORES.get_or_init(|| {
        core_affinity::get_core_ids().expect("cannot read this process's CPU affinity")
    })
}

/// Pins the calling thread to the `index`-th available core (modulo the
/// count). Panics if pinning fails: an unpinned benchmark would silently
/// measure something else.
pub fn pin(index: usize) {
    let cores = cores();
    assert!(!cores.is_empty(), "no cores available to pin to");
    let core = cores[index % cores.len()];
    assert!(
        core_affinity::set_for_current(core),
        "failed to pin thread to core {core:?}"
    );
}
