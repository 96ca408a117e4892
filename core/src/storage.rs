//! Where a ring's memory lives.
//!
//! Every ring in this crate is generic over a [`Storage`]: a header (the ring's
//! shared indices) followed by an array of elements (its slots). The same ring
//! algorithm runs over:
//!
//! - [`Heap`] (feature `alloc`): a boxed header and a boxed slice;
//! - [`Inline`]: header and array in one value, usable in a `static`;
//! - [`Raw`]: a caller-provided memory region, e.g. a shared-memory segment
//!   mapped by `zerocast-ipc`. The header and slots are then shared by every
//!   process that maps the region.

use core::fmt;
use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ptr::NonNull;

/// Memory for a ring: one header and `elems().len()` elements.
///
/// # Safety
///
/// `header()` and `elems()` must return references to the same memory for as
/// long as the storage lives, and nothing outside the ring may write that
/// memory except through the atomics and cells it contains.
pub unsafe trait Storage {
    /// The ring's shared header (indices, configuration).
    type Header;
    /// One element (a slot, or one word of a slot).
    type Elem;
    /// The header.
    fn header(&self) -> &Self::Header;
    /// The elements.
    fn elems(&self) -> &[Self::Elem];
}

/// Alignment of [`Heap`] element arrays: two cache lines (what crossbeam's
/// `CachePadded` uses on x86-64, whose adjacent-line prefetcher pairs lines).
/// Rings pad their slots to whole cache lines; that only keeps neighbouring
/// slots off each other's lines if the array itself starts on a line.
pub const LINE_ALIGN: usize = 128;

/// Heap storage: a boxed header and a heap array of elements starting on a
/// [`LINE_ALIGN`] boundary.
#[cfg(feature = "alloc")]
pub struct Heap<H, E> {
    header: alloc::boxed::Box<H>,
    elems: NonNull<E>,
    len: usize,
}

#[cfg(feature = "alloc")]
impl<H, E> Heap<H, E> {
    fn layout(len: usize) -> core::alloc::Layout {
        core::alloc::Layout::array::<E>(len)
            .and_then(|l| l.align_to(LINE_ALIGN))
            .expect("ring storage larger than the address space")
    }

    /// Allocates a header and `len` elements made by `make(index)`. (If
    /// `make` panics, the array is leaked, not dropped half-made.)
    pub fn new(header: H, len: usize, mut make: impl FnMut(usize) -> E) -> Self {
        let layout = Self::layout(len);
        let elems = if layout.size() == 0 {
            NonNull::dangling()
        } else {
            // SAFETY: the layout's size is not zero.
            let p = unsafe { alloc::alloc::alloc(layout) }.cast::<E>();
            NonNull::new(p).unwrap_or_else(|| alloc::alloc::handle_alloc_error(layout))
        };
        for i in 0..len {
            // SAFETY: `i < len`, so the write is inside the allocation (or of
            // a zero-sized value); each element is written once, before
            // anything reads it.
            unsafe { elems.as_ptr().add(i).write(make(i)) };
        }
        Self {
            header: alloc::boxed::Box::new(header),
            elems,
            len,
        }
    }
}

#[cfg(feature = "alloc")]
impl<H, E> Drop for Heap<H, E> {
    fn drop(&mut self) {
        // SAFETY: `new` initialised all `len` elements; they are dropped once,
        // here, and nothing can reach them afterwards.
        unsafe {
            core::ptr::drop_in_place(core::ptr::slice_from_raw_parts_mut(
                self.elems.as_ptr(),
                self.len,
            ));
        }
        let layout = Self::layout(self.len);
        if layout.size() != 0 {
            // SAFETY: allocated in `new` with this same layout.
            unsafe { alloc::alloc::dealloc(self.elems.as_ptr().cast(), layout) };
        }
    }
}

#[cfg(feature = "alloc")]
impl<H, E> fmt::Debug for Heap<H, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heap")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

// SAFETY: `Heap` owns its header and elements as a `Box<H>` and a `Box<[E]>`
// would; it can move to another thread when they can.
#[cfg(feature = "alloc")]
unsafe impl<H: Send, E: Send> Send for Heap<H, E> {}
// SAFETY: as above: shared access hands out only `&H` and `&[E]`.
#[cfg(feature = "alloc")]
unsafe impl<H: Sync, E: Sync> Sync for Heap<H, E> {}

// SAFETY: the header box and the element array are owned and never
// reallocated, so both references stay valid and stable for the storage's
// life.
#[cfg(feature = "alloc")]
unsafe impl<H, E> Storage for Heap<H, E> {
    type Header = H;
    type Elem = E;
    fn header(&self) -> &H {
        &self.header
    }
    fn elems(&self) -> &[E] {
        // SAFETY: `elems` points at `len` initialised elements (or is a
        // dangling, aligned pointer with nothing to read), owned by `self`.
        unsafe { core::slice::from_raw_parts(self.elems.as_ptr(), self.len) }
    }
}

/// Inline storage: header and `N` elements in one value, so that a ring can
/// live in a `static` or on the stack with no allocator.
#[derive(Debug)]
#[repr(C)]
pub struct Inline<H, E, const N: usize> {
    header: H,
    elems: [E; N],
}

impl<H, E, const N: usize> Inline<H, E, N> {
    /// Wraps a header and an element array.
    pub const fn new(header: H, elems: [E; N]) -> Self {
        Self { header, elems }
    }
}

// SAFETY: both fields are owned by the value; references to them live as long
// as the borrow of `self`.
unsafe impl<H, E, const N: usize> Storage for Inline<H, E, N> {
    type Header = H;
    type Elem = E;
    fn header(&self) -> &H {
        &self.header
    }
    fn elems(&self) -> &[E] {
        &self.elems
    }
}

/// Why a memory region cannot hold a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionError {
    /// The region's start is not aligned for the header or the elements.
    Misaligned {
        /// Alignment needed.
        needed: usize,
        /// Address of the region.
        address: usize,
    },
    /// The region is smaller than the header plus the elements.
    TooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
}

impl core::fmt::Display for RegionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Misaligned { needed, address } => write!(
                f,
                "memory region at {address:#x} is not aligned to {needed} bytes"
            ),
            Self::TooSmall { needed, available } => write!(
                f,
                "memory region of {available} bytes is too small: the ring needs {needed}"
            ),
        }
    }
}

/// A ring placed in a caller-provided memory region: the header at the start,
/// the elements after it (at the next multiple of their alignment).
pub struct Raw<H, E> {
    header: NonNull<H>,
    elems: NonNull<E>,
    len: usize,
    _marker: PhantomData<(H, E)>,
}

impl<H, E> core::fmt::Debug for Raw<H, E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Raw")
            .field("header", &self.header)
            .field("len", &self.len)
            .finish()
    }
}

// SAFETY: `Raw` is a shared view of memory that is only accessed through the
// atomics and synchronised cells inside `H` and `E`; it is Send/Sync exactly
// when shared references to them are.
unsafe impl<H: Sync, E: Sync> Send for Raw<H, E> {}
// SAFETY: as above.
unsafe impl<H: Sync, E: Sync> Sync for Raw<H, E> {}

impl<H, E> Raw<H, E> {
    /// Byte offset of the first element from the start of the region.
    pub const fn elems_offset() -> usize {
        let a = align_of::<E>();
        size_of::<H>().div_ceil(a) * a
    }

    /// Bytes a region needs for the header and `len` elements.
    pub const fn region_size(len: usize) -> usize {
        Self::elems_offset() + len * size_of::<E>()
    }

    /// Alignment the region's start needs.
    pub const fn region_align() -> usize {
        let (h, e) = (align_of::<H>(), align_of::<E>());
        if h > e {
            h
        } else {
            e
        }
    }

    /// Views `size` bytes at `ptr` as a header and `len` elements.
    ///
    /// # Safety
    ///
    /// The region must be valid for reads and writes for as long as the
    /// returned value (and every ring built on it) lives, and its bytes must
    /// already be a valid `H` and valid `E`s (for the atomics used by the
    /// rings, any bit pattern is valid, so zeroed memory qualifies). Other
    /// users of the region (other processes) must only touch it through the
    /// same ring types.
    pub unsafe fn from_region(ptr: *mut u8, size: usize, len: usize) -> Result<Self, RegionError> {
        let needed_align = Self::region_align();
        if (ptr as usize) % needed_align != 0 {
            return Err(RegionError::Misaligned {
                needed: needed_align,
                address: ptr as usize,
            });
        }
        let needed = Self::region_size(len);
        if size < needed {
            return Err(RegionError::TooSmall {
                needed,
                available: size,
            });
        }
        let header = NonNull::new(ptr.cast::<H>()).ok_or(RegionError::Misaligned {
            needed: needed_align,
            address: 0,
        })?;
        // SAFETY: `elems_offset() + len * size_of::<E>() <= size`, checked
        // above, so the element pointer stays inside the region.
        let elems = unsafe { NonNull::new_unchecked(ptr.add(Self::elems_offset()).cast::<E>()) };
        Ok(Self {
            header,
            elems,
            len,
            _marker: PhantomData,
        })
    }
}

// SAFETY: the region is valid for the storage's life (contract of
// `from_region`), and the pointers never change.
unsafe impl<H, E> Storage for Raw<H, E> {
    type Header = H;
    type Elem = E;
    fn header(&self) -> &H {
        // SAFETY: aligned, in bounds and valid for `H` (from_region's contract).
        unsafe { self.header.as_ref() }
    }
    fn elems(&self) -> &[E] {
        // SAFETY: `len` elements, aligned and in bounds (checked in from_region),
        // valid for `E` (its contract).
        unsafe { core::slice::from_raw_parts(self.elems.as_ptr(), self.len) }
    }
}

/// Why a ring cannot be built over a storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// Capacity is not a power of two of at least 2.
    BadCapacity(u64),
    /// Payload words is 0.
    BadPayload(u64),
    /// The storage has another number of words than capacity and payload need.
    WrongLength {
        /// Words needed.
        needed: usize,
        /// Words in the storage.
        found: usize,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadCapacity(c) => write!(f, "ring capacity {c} is not a power of two >= 2"),
            Self::BadPayload(p) => write!(f, "ring payload of {p} words is out of range"),
            Self::WrongLength { needed, found } => write!(
                f,
                "ring storage holds {found} words, its header describes {needed}"
            ),
        }
    }
}

/// Checks a ring capacity: a power of two of at least 2.
pub(crate) fn check_capacity(capacity: u64) -> Result<(), LayoutError> {
    if capacity < 2 || !capacity.is_power_of_two() {
        return Err(LayoutError::BadCapacity(capacity));
    }
    Ok(())
}

impl core::error::Error for RegionError {}
impl core::error::Error for LayoutError {}
