//! Lossless bounded single-producer single-consumer queue.
//!
//! Backpressure: [`Producer::push`] returns [`PushError::Full`] with the value
//! instead of overwriting. Each side keeps a cached copy of the other side's
//! index and only reads the shared one when the cache says full (producer) or
//! empty (consumer), so in steady state a push or pop touches one shared cache
//! line. [`Producer::push_slice`] and [`Consumer::pop_into`] move a whole chunk
//! and publish the index once per chunk.
//!
//! # Progress
//!
//! Wait-free on both sides: every operation is a bounded number of steps. A
//! stalled or dead consumer makes the producer see `Full` once the queue
//! fills; a stalled or dead producer makes the consumer see `Empty`. Neither
//! corrupts the other; a restarted peer re-attaches at the shared indices.
//!
//! Items are `Copy` plain data: the queue can live in shared memory, and a
//! queue dropped with items in it needs no destructor calls.

use core::fmt;
use core::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::storage::{check_capacity, LayoutError, Storage};
use crate::sync::{AtomicU64, Ordering, UnsafeCell};

/// Shared indices of an SPSC queue. Positions grow forever; the slot of
/// position `p` is `p & (capacity - 1)`. Invariant: `head <= tail <= head +
/// capacity`.
#[repr(C)]
pub struct SpscHeader {
    /// Next position to pop. Written only by the consumer.
    head: CachePadded<AtomicU64>,
    /// Next position to push. Written only by the producer.
    tail: CachePadded<AtomicU64>,
    /// Slot count. Written once by `init`.
    capacity: AtomicU64,
}

impl fmt::Debug for SpscHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed: a debugging snapshot; nothing is published with it.
        f.debug_struct("SpscHeader")
            .field("head", &self.head.load(Ordering::Relaxed))
            .field("tail", &self.tail.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SpscHeader {
    /// A header for a queue not yet initialised.
    #[cfg(not(zerocast_loom))]
    pub const fn new() -> Self {
        Self {
            head: CachePadded::new(AtomicU64::new(0)),
            tail: CachePadded::new(AtomicU64::new(0)),
            capacity: AtomicU64::new(0),
        }
    }

    /// A header for a queue not yet initialised.
    #[cfg(zerocast_loom)]
    pub fn new() -> Self {
        Self {
            head: CachePadded::new(AtomicU64::new(0)),
            tail: CachePadded::new(AtomicU64::new(0)),
            capacity: AtomicU64::new(0),
        }
    }
}

impl Default for SpscHeader {
    fn default() -> Self {
        Self::new()
    }
}

/// One slot of an SPSC queue.
pub struct Slot<T>(UnsafeCell<MaybeUninit<T>>);

impl<T> Slot<T> {
    /// An empty slot.
    #[cfg(not(zerocast_loom))]
    pub const fn new() -> Self {
        Self(UnsafeCell::new(MaybeUninit::uninit()))
    }

    /// An empty slot.
    #[cfg(zerocast_loom)]
    pub fn new() -> Self {
        Self(UnsafeCell::new(MaybeUninit::uninit()))
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: a slot is written only by the producer before it publishes `tail`
// and read only by the consumer after it observes that `tail`; the index
// protocol never lets both touch one slot at once.
unsafe impl<T: Send> Sync for Slot<T> {}

/// Error of [`Producer::push`]: the queue is full; the value comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError<T> {
    /// The queue holds `capacity` items.
    Full(T),
}

/// Error of [`Consumer::pop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopError {
    /// The queue holds no item.
    Empty,
}

/// A lossless single-producer single-consumer queue over storage `S`.
pub struct Spsc<T, S> {
    storage: S,
    mask: u64,
    capacity: u64,
    _marker: core::marker::PhantomData<T>,
}

impl<T, S> fmt::Debug for Spsc<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spsc")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "alloc")]
impl<T: Copy + Send> Spsc<T, crate::storage::Heap<SpscHeader, Slot<T>>> {
    /// A heap-backed queue of `capacity` items (a power of two >= 2).
    pub fn with_capacity(capacity: usize) -> Result<Self, LayoutError> {
        let storage = crate::storage::Heap::new(SpscHeader::new(), capacity, |_| Slot::new());
        Self::init(storage)
    }
}

impl<T, S> Spsc<T, S>
where
    T: Copy + Send,
    S: Storage<Header = SpscHeader, Elem = Slot<T>>,
{
    /// Initialises an empty queue over all of `storage`'s slots.
    pub fn init(storage: S) -> Result<Self, LayoutError> {
        let capacity = storage.elems().len() as u64;
        check_capacity(capacity)?;
        let h = storage.header();
        // Relaxed: nobody else sees the queue yet; whoever shares it publishes
        // it with its own Release store.
        h.head.store(0, Ordering::Relaxed);
        h.tail.store(0, Ordering::Relaxed);
        h.capacity.store(capacity, Ordering::Relaxed);
        Ok(Self::new_unchecked(storage, capacity))
    }

    /// Attaches to a queue another party initialised in `storage`.
    pub fn attach(storage: S) -> Result<Self, LayoutError> {
        // Relaxed: written once before sharing (see `init`).
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

    /// Items in the queue now (a snapshot).
    pub fn len(&self) -> u64 {
        let h = self.storage.header();
        // Relaxed: a snapshot; head is read first so the difference is never
        // negative (tail only grows).
        let head = h.head.load(Ordering::Relaxed);
        let tail = h.tail.load(Ordering::Relaxed);
        tail.saturating_sub(head)
    }

    /// Whether the queue is empty now (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The producer and consumer handles. `&mut self` guarantees one of each.
    pub fn split(&mut self) -> (Producer<'_, T, S>, Consumer<'_, T, S>) {
        // SAFETY: `&mut self` is held for the handles' lifetime, so no other
        // handle of either side can be made.
        unsafe { (self.producer(), self.consumer()) }
    }

    /// A producer handle for a queue shared by reference (e.g. in shared
    /// memory), starting at the shared tail.
    ///
    /// # Safety
    ///
    /// At most one producer handle may exist at a time, across all processes.
    pub unsafe fn producer(&self) -> Producer<'_, T, S> {
        let h = self.storage.header();
        // Relaxed: we are the only writer of tail.
        let tail = h.tail.load(Ordering::Relaxed);
        // Acquire: pairs with the Release store of head in `pop`.
        let cached_head = h.head.load(Ordering::Acquire);
        Producer {
            queue: core::marker::PhantomData,
            capacity: self.capacity,
            header: h,
            slots: self.storage.elems(),
            mask: self.mask,
            tail,
            cached_head,
        }
    }

    /// A consumer handle for a queue shared by reference, starting at the
    /// shared head.
    ///
    /// # Safety
    ///
    /// At most one consumer handle may exist at a time, across all processes.
    pub unsafe fn consumer(&self) -> Consumer<'_, T, S> {
        let h = self.storage.header();
        // Relaxed: we are the only writer of head.
        let head = h.head.load(Ordering::Relaxed);
        // Acquire: pairs with the Release store of tail in `push`.
        let cached_tail = h.tail.load(Ordering::Acquire);
        Consumer {
            queue: core::marker::PhantomData,
            header: h,
            slots: self.storage.elems(),
            mask: self.mask,
            head,
            cached_tail,
        }
    }
}

/// The pushing side of an [`Spsc`].
pub struct Producer<'a, T, S> {
    queue: core::marker::PhantomData<&'a Spsc<T, S>>,
    capacity: u64,
    /// Cached from the storage: no trait call or re-derivation per push.
    header: &'a SpscHeader,
    /// The slots; `slots.len() == mask + 1`.
    slots: &'a [Slot<T>],
    mask: u64,
    /// Our next position (equal to the shared tail once published).
    tail: u64,
    /// A head value the consumer has published; may be stale (lower).
    cached_head: u64,
}

impl<T, S> fmt::Debug for Producer<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("tail", &self.tail)
            .finish()
    }
}

#[inline(always)]
fn slot_at<T>(slots: &[Slot<T>], mask: u64, pos: u64) -> &Slot<T> {
    let index = (pos & mask) as usize;
    debug_assert!(index < slots.len());
    // SAFETY: `slots.len() == mask + 1` (a power of two, checked at init or
    // attach), so `pos & mask` is in bounds.
    unsafe { slots.get_unchecked(index) }
}

impl<T, S> Producer<'_, T, S>
where
    T: Copy + Send,
    S: Storage<Header = SpscHeader, Elem = Slot<T>>,
{
    /// Free slots, refreshing the cached head only when the cache says fewer
    /// than `wanted` are free.
    #[inline(always)]
    fn free(&mut self, wanted: u64) -> u64 {
        let cap = self.capacity;
        let free = cap - (self.tail - self.cached_head);
        if free >= wanted {
            return free;
        }
        // Acquire: pairs with the Release store of head in `Consumer::pop*`:
        // the consumer's reads of the slots below head happen before we
        // overwrite them.
        self.cached_head = self.header.head.load(Ordering::Acquire);
        debug_assert!(self.tail - self.cached_head <= cap);
        cap - (self.tail - self.cached_head)
    }

    /// Pushes one item, or returns it in [`PushError::Full`]. Wait-free.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        if self.free(1) == 0 {
            return Err(PushError::Full(value));
        }
        let tail = self.tail;
        slot_at(self.slots, self.mask, tail).0.with_mut(|p| {
            // SAFETY: the slot at `tail` is free (tail - head < capacity) and
            // only the single producer writes free slots.
            unsafe { p.write(MaybeUninit::new(value)) }
        });
        self.tail = tail + 1;
        // Release: pairs with the Acquire load of tail in `Consumer::pop*`;
        // publishes the slot write above.
        self.header.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Pushes as many items from the front of `items` as fit, publishing the
    /// tail once. Returns how many were pushed.
    pub fn push_slice(&mut self, items: &[T]) -> usize {
        let n = (self.free(items.len() as u64) as usize).min(items.len());
        for (i, item) in items[..n].iter().enumerate() {
            slot_at(self.slots, self.mask, self.tail + i as u64)
                .0
                .with_mut(|p| {
                    // SAFETY: positions tail .. tail + n are free (n <= free).
                    unsafe { p.write(MaybeUninit::new(*item)) }
                });
        }
        if n > 0 {
            self.tail += n as u64;
            // Release: as in `push`, publishing all n writes at once.
            self.header.tail.store(self.tail, Ordering::Release);
        }
        n
    }

    /// Free slots (a lower bound: the consumer may have freed more).
    pub fn slots(&mut self) -> u64 {
        self.free(self.capacity)
    }
}

/// The popping side of an [`Spsc`].
pub struct Consumer<'a, T, S> {
    queue: core::marker::PhantomData<&'a Spsc<T, S>>,
    /// Cached from the storage, as in [`Producer`].
    header: &'a SpscHeader,
    /// The slots; `slots.len() == mask + 1`.
    slots: &'a [Slot<T>],
    mask: u64,
    /// Our next position (equal to the shared head once published).
    head: u64,
    /// A tail value the producer has published; may be stale (lower).
    cached_tail: u64,
}

impl<T, S> fmt::Debug for Consumer<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("head", &self.head)
            .finish()
    }
}

impl<T, S> Consumer<'_, T, S>
where
    T: Copy + Send,
    S: Storage<Header = SpscHeader, Elem = Slot<T>>,
{
    /// Items available, refreshing the cached tail only when the cache says
    /// fewer than `wanted`.
    #[inline(always)]
    fn available(&mut self, wanted: u64) -> u64 {
        let avail = self.cached_tail - self.head;
        if avail >= wanted {
            return avail;
        }
        // Acquire: pairs with the Release store of tail in `Producer::push*`;
        // makes the producer's slot writes visible.
        self.cached_tail = self.header.tail.load(Ordering::Acquire);
        self.cached_tail - self.head
    }

    /// Pops one item. Wait-free.
    #[inline]
    pub fn pop(&mut self) -> Result<T, PopError> {
        if self.available(1) == 0 {
            return Err(PopError::Empty);
        }
        let head = self.head;
        let value = slot_at(self.slots, self.mask, head).0.with(|p| {
            // SAFETY: head < tail, so the producer wrote this slot and
            // published it (Acquire above); it will not touch it until we
            // publish a head past it.
            unsafe { (*p).assume_init() }
        });
        self.head = head + 1;
        // Release: pairs with the Acquire load of head in `Producer::free`;
        // our read above happens before the producer reuses the slot.
        self.header.head.store(self.head, Ordering::Release);
        Ok(value)
    }

    /// Pops up to `out.len()` items into `out`, publishing the head once.
    /// Returns how many were popped.
    pub fn pop_into(&mut self, out: &mut [T]) -> usize {
        let n = (self.available(out.len() as u64) as usize).min(out.len());
        for (i, dst) in out[..n].iter_mut().enumerate() {
            *dst = slot_at(self.slots, self.mask, self.head + i as u64)
                .0
                .with(|p| {
                    // SAFETY: positions head .. head + n are below the published
                    // tail (n <= available).
                    unsafe { (*p).assume_init() }
                });
        }
        if n > 0 {
            self.head += n as u64;
            // Release: as in `pop`, for all n slots at once.
            self.header.head.store(self.head, Ordering::Release);
        }
        n
    }

    /// Items available now (a lower bound).
    pub fn slots(&mut self) -> u64 {
        self.available(u64::MAX)
    }
}

#[cfg(all(test, not(zerocast_loom)))]
mod tests {
    extern crate alloc;
    use alloc::vec::Vec;

    use super::*;
    use crate::storage::{Inline, Raw};

    fn iters() -> u64 {
        if cfg!(miri) {
            2_000
        } else {
            200_000
        }
    }

    fn exercise<S: Storage<Header = SpscHeader, Elem = Slot<u64>> + Sync>(mut q: Spsc<u64, S>) {
        let cap = q.capacity();
        let (mut p, mut c) = q.split();
        assert_eq!(c.pop(), Err(PopError::Empty));
        for i in 0..cap {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(99), Err(PushError::Full(99)));
        assert_eq!(c.pop(), Ok(0));
        p.push(cap).unwrap();
        let mut out = [0u64; 64];
        let n = c.pop_into(&mut out);
        assert_eq!(&out[..n], &(1..=cap).collect::<Vec<_>>()[..]);
        let items: Vec<u64> = (0..cap + 5).collect();
        assert_eq!(p.push_slice(&items), cap as usize);
        assert_eq!(p.push_slice(&items), 0);
        assert_eq!(c.pop_into(&mut out[..3]), 3);
        assert_eq!(&out[..3], &[0, 1, 2]);
    }

    #[test]
    fn conformance_heap() {
        exercise(Spsc::<u64, _>::with_capacity(8).unwrap());
    }

    #[test]
    fn conformance_inline() {
        let storage: Inline<SpscHeader, Slot<u64>, 8> =
            Inline::new(SpscHeader::new(), [const { Slot::new() }; 8]);
        exercise(Spsc::init(storage).unwrap());
    }

    #[test]
    fn conformance_raw() {
        type R = Raw<SpscHeader, Slot<u64>>;
        let size = R::region_size(8);
        let mut backing: Vec<u128> = alloc::vec![0; size.div_ceil(16) + 16];
        let base = backing.as_mut_ptr().cast::<u8>();
        let off = base.align_offset(R::region_align());
        // SAFETY: the region lies inside `backing`, which outlives the queue;
        // zeroed bytes are valid atomics and uninitialised slots.
        let raw = unsafe { R::from_region(base.add(off), size, 8).unwrap() };
        exercise(Spsc::init(raw).unwrap());
        // SAFETY: as above; the region was initialised by `init`.
        let again = unsafe { R::from_region(base.add(off), size, 8).unwrap() };
        assert_eq!(Spsc::<u64, _>::attach(again).unwrap().capacity(), 8);
        drop(backing);
    }

    #[test]
    fn bad_capacity_is_rejected() {
        assert_eq!(
            Spsc::<u64, _>::with_capacity(6).unwrap_err(),
            LayoutError::BadCapacity(6)
        );
    }

    #[test]
    fn cross_thread_order_is_kept() {
        let mut q = Spsc::<u64, _>::with_capacity(16).unwrap();
        let (mut p, mut c) = q.split();
        let n = iters();
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut i = 0;
                while i < n {
                    if i % 7 == 0 {
                        let chunk: Vec<u64> = (i..(i + 5).min(n)).collect();
                        i += p.push_slice(&chunk) as u64;
                    } else if p.push(i).is_ok() {
                        i += 1;
                    }
                }
            });
            let mut expected = 0;
            let mut buf = [0u64; 4];
            while expected < n {
                let got = c.pop_into(&mut buf);
                for v in &buf[..got] {
                    assert_eq!(*v, expected);
                    expected += 1;
                }
                if got == 0 {
                    std::thread::yield_now();
                }
            }
        });
    }
}
