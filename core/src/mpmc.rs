//! Lossless bounded multi-producer multi-consumer queue (Vyukov's algorithm,
//! one sequence word per slot).
//!
//! For threads of one process: a producer that dies mid-push wedges it (see
//! below), so nothing that killable processes write may depend on it (acks,
//! for one, use a word per subscriber: `zerocast_ipc::acks`).
//!
//! # Progress: not lock-free
//!
//! A push claims a position with a compare-and-swap and then writes the slot;
//! a pop of that position waits for the write. If a producer stalls or dies
//! between its claim and its write, consumers see [`PopError::Empty`] at that
//! position even if later items were pushed, until the producer finishes (a
//! dead one never does: the queue is wedged at that slot). Likewise a consumer
//! stalled between its claim and its read makes producers see `Full` one lap
//! later. Operations never spin on each other: they return `Full`/`Empty`, and
//! the CAS retry loops are lock-free among running threads. This matches the
//! honest description heapless gives its own MPMC queue.

use core::fmt;
use core::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::storage::{check_capacity, LayoutError, Storage};
use crate::sync::{AtomicU64, Ordering, UnsafeCell};

/// Shared indices of an MPMC queue.
#[repr(C)]
pub struct MpmcHeader {
    /// Next position to push.
    enqueue: CachePadded<AtomicU64>,
    /// Next position to pop.
    dequeue: CachePadded<AtomicU64>,
    /// Slot count. Written once by `init`.
    capacity: AtomicU64,
}

impl fmt::Debug for MpmcHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed: a debugging snapshot; nothing is published with it.
        f.debug_struct("MpmcHeader")
            .field("enqueue", &self.enqueue.load(Ordering::Relaxed))
            .field("dequeue", &self.dequeue.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl MpmcHeader {
    /// A header for a queue not yet initialised.
    #[cfg(not(zerocast_loom))]
    pub const fn new() -> Self {
        Self {
            enqueue: CachePadded::new(AtomicU64::new(0)),
            dequeue: CachePadded::new(AtomicU64::new(0)),
            capacity: AtomicU64::new(0),
        }
    }

    /// A header for a queue not yet initialised.
    #[cfg(zerocast_loom)]
    pub fn new() -> Self {
        Self {
            enqueue: CachePadded::new(AtomicU64::new(0)),
            dequeue: CachePadded::new(AtomicU64::new(0)),
            capacity: AtomicU64::new(0),
        }
    }
}

impl Default for MpmcHeader {
    fn default() -> Self {
        Self::new()
    }
}

/// One slot: its sequence word and its value.
///
/// `seq == pos` means free for the push of position `pos`; `seq == pos + 1`
/// means holding the value pushed at `pos`.
pub struct MpmcSlot<T> {
    seq: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

impl<T> MpmcSlot<T> {
    /// A slot (its sequence is set by `init`).
    #[cfg(not(zerocast_loom))]
    pub const fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// A slot (its sequence is set by `init`).
    #[cfg(zerocast_loom)]
    pub fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }
}

impl<T> Default for MpmcSlot<T> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: a slot's value is written only by the one producer whose CAS won
// its position, before it stores `seq = pos + 1` (Release), and read only by
// the one consumer whose CAS won that position after it loaded that seq
// (Acquire).
unsafe impl<T: Send> Sync for MpmcSlot<T> {}

/// A lossless multi-producer multi-consumer queue over storage `S`.
pub struct Mpmc<T, S> {
    storage: S,
    mask: u64,
    capacity: u64,
    _marker: core::marker::PhantomData<T>,
}

impl<T, S> fmt::Debug for Mpmc<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mpmc")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

pub use crate::spsc::{PopError, PushError};

#[cfg(feature = "alloc")]
impl<T: Copy + Send> Mpmc<T, crate::storage::Heap<MpmcHeader, MpmcSlot<T>>> {
    /// A heap-backed queue of `capacity` items (a power of two >= 2).
    pub fn with_capacity(capacity: usize) -> Result<Self, LayoutError> {
        let storage = crate::storage::Heap::new(MpmcHeader::new(), capacity, |_| MpmcSlot::new());
        Self::init(storage)
    }
}

impl<T, S> Mpmc<T, S>
where
    T: Copy + Send,
    S: Storage<Header = MpmcHeader, Elem = MpmcSlot<T>>,
{
    /// Initialises an empty queue over all of `storage`'s slots.
    pub fn init(storage: S) -> Result<Self, LayoutError> {
        let capacity = storage.elems().len() as u64;
        check_capacity(capacity)?;
        let h = storage.header();
        // Relaxed throughout: nobody else sees the queue yet.
        h.enqueue.store(0, Ordering::Relaxed);
        h.dequeue.store(0, Ordering::Relaxed);
        h.capacity.store(capacity, Ordering::Relaxed);
        for (i, slot) in storage.elems().iter().enumerate() {
            slot.seq.store(i as u64, Ordering::Relaxed);
        }
        Ok(Self::new_unchecked(storage, capacity))
    }

    /// Attaches to a queue another party initialised in `storage`.
    pub fn attach(storage: S) -> Result<Self, LayoutError> {
        // Relaxed: written once before sharing.
        let capacity = storage.header().capacity.load(Ordering::Relaxed);
        check_capacity(capacity)?;
        if storage.elems().len() as u64 != capacity {
            return Err(LayoutError::WrongLength {
                needed: capacity as usize,
                found: storage.elems().len(),
            });
        }
        Ok(Self::new_unchecked(storage, capacity))
    }

    fn new_unchecked(storage: S, capacity: u64) -> Self {
        Self {
            storage,
            mask: capacity - 1,
            capacity,
            _marker: core::marker::PhantomData,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Pushes `value`, or returns it if the queue is full.
    pub fn push(&self, value: T) -> Result<(), PushError<T>> {
        let h = self.storage.header();
        // Relaxed: a starting guess; the CAS below validates it.
        let mut pos = h.enqueue.load(Ordering::Relaxed);
        loop {
            let slot = &self.storage.elems()[(pos & self.mask) as usize];
            // Acquire: pairs with the Release store of `seq` in `pop`, so the
            // previous lap's read of this slot happens before our write.
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos) as i64;
            if diff == 0 {
                // Relaxed: the CAS only arbitrates among producers; the slot
                // is published by the Release store of `seq` below.
                match h.enqueue.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        slot.value.with_mut(|p| {
                            // SAFETY: our CAS won position `pos` and its slot
                            // is free (seq == pos): no one else touches it
                            // until we store seq = pos + 1.
                            unsafe { p.write(MaybeUninit::new(value)) }
                        });
                        // Release: pairs with the Acquire seq load in `pop`;
                        // publishes the value.
                        slot.seq.store(pos + 1, Ordering::Release);
                        return Ok(());
                    }
                    Err(actual) => pos = actual,
                }
            } else if diff < 0 {
                // The slot still holds the value from the previous lap.
                return Err(PushError::Full(value));
            } else {
                // Another producer took `pos`; reload (Relaxed: as above).
                pos = h.enqueue.load(Ordering::Relaxed);
            }
        }
    }

    /// Pops the oldest value.
    pub fn pop(&self) -> Result<T, PopError> {
        let h = self.storage.header();
        // Relaxed: a starting guess; the CAS below validates it.
        let mut pos = h.dequeue.load(Ordering::Relaxed);
        loop {
            let slot = &self.storage.elems()[(pos & self.mask) as usize];
            // Acquire: pairs with the Release seq store in `push`, making the
            // value visible.
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos + 1) as i64;
            if diff == 0 {
                // Relaxed: arbitrates among consumers only.
                match h.dequeue.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        let value = slot.value.with(|p| {
                            // SAFETY: seq == pos + 1 means a producer wrote
                            // this slot and published it (Acquire above); our
                            // CAS won the position so no other consumer reads
                            // it, and producers wait for the seq store below.
                            unsafe { (*p).assume_init() }
                        });
                        // Release: pairs with the Acquire seq load in `push`;
                        // our read happens before the next lap's write.
                        slot.seq.store(pos + self.capacity, Ordering::Release);
                        return Ok(value);
                    }
                    Err(actual) => pos = actual,
                }
            } else if diff < 0 {
                return Err(PopError::Empty);
            } else {
                // Relaxed: as above.
                pos = h.dequeue.load(Ordering::Relaxed);
            }
        }
    }
}

#[cfg(all(test, not(zerocast_loom)))]
mod tests {
    extern crate alloc;
    use alloc::vec::Vec;
    use std::sync::Mutex;

    use super::*;
    use crate::storage::{Inline, Raw};

    fn exercise<S: Storage<Header = MpmcHeader, Elem = MpmcSlot<u64>>>(q: Mpmc<u64, S>) {
        assert_eq!(q.pop(), Err(PopError::Empty));
        for i in 0..q.capacity() {
            q.push(i).unwrap();
        }
        assert_eq!(q.push(77), Err(PushError::Full(77)));
        for i in 0..q.capacity() {
            assert_eq!(q.pop(), Ok(i));
        }
        assert_eq!(q.pop(), Err(PopError::Empty));
        // Second lap.
        q.push(5).unwrap();
        assert_eq!(q.pop(), Ok(5));
    }

    #[test]
    fn conformance_heap() {
        exercise(Mpmc::<u64, _>::with_capacity(4).unwrap());
    }

    #[test]
    fn conformance_inline() {
        let storage: Inline<MpmcHeader, MpmcSlot<u64>, 4> =
            Inline::new(MpmcHeader::new(), [const { MpmcSlot::new() }; 4]);
        exercise(Mpmc::init(storage).unwrap());
    }

    #[test]
    fn conformance_raw() {
        type R = Raw<MpmcHeader, MpmcSlot<u64>>;
        let size = R::region_size(4);
        let mut backing: Vec<u128> = alloc::vec![0; size.div_ceil(16) + 16];
        let base = backing.as_mut_ptr().cast::<u8>();
        let off = base.align_offset(R::region_align());
        // SAFETY: region inside `backing`, which outlives the queue; zeroed
        // bytes are valid atomics and uninitialised values.
        let raw = unsafe { R::from_region(base.add(off), size, 4).unwrap() };
        exercise(Mpmc::init(raw).unwrap());
        drop(backing);
    }

    #[test]
    fn many_producers_many_consumers_lose_nothing() {
        let q = Mpmc::<u64, _>::with_capacity(8).unwrap();
        let per = if cfg!(miri) { 200 } else { 20_000 };
        let seen = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for p in 0..3u64 {
                let q = &q;
                s.spawn(move || {
                    for i in 0..per {
                        let mut v = p * per + i;
                        while let Err(PushError::Full(back)) = q.push(v) {
                            v = back;
                            std::thread::yield_now();
                        }
                    }
                });
            }
            for _ in 0..2 {
                let (q, seen) = (&q, &seen);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    // Each consumer takes half.
                    while mine.len() < (3 * per / 2) as usize {
                        match q.pop() {
                            Ok(v) => mine.push(v),
                            Err(PopError::Empty) => std::thread::yield_now(),
                        }
                    }
                    seen.lock().unwrap().extend(mine);
                });
            }
        });
        let mut all = seen.into_inner().unwrap();
        all.sort_unstable();
        assert_eq!(all, (0..3 * per).collect::<Vec<_>>());
    }
}
