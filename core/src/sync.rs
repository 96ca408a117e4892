//! The one place that names `core::sync::atomic` or `loom`.
//!
//! Under `--cfg zerocast_loom` every atomic, cell and spin hint the rings use
//! comes from loom, so the loom models in `loom-tests/` explore the real ring
//! code. The cfg has the project's own name: plain `--cfg loom` is also read by
//! tokio and would compile its networking out.

#[cfg(not(zerocast_loom))]
mod imp {
    pub use core::sync::atomic::{fence, AtomicU64, Ordering};

    /// `UnsafeCell` with loom's closure API, so ring code compiles unchanged
    /// against both.
    #[derive(Debug)]
    #[repr(transparent)]
    pub struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub const fn new(value: T) -> Self {
            Self(core::cell::UnsafeCell::new(value))
        }

        #[inline(always)]
        pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        #[inline(always)]
        pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// Hint used inside every wait loop.
    #[inline(always)]
    pub fn spin_loop() {
        core::hint::spin_loop();
    }

    /// The light half of an asymmetric barrier: a compiler fence, which a
    /// heavy barrier on the other side (`membarrier`) promotes to a full
    /// fence on this CPU.
    #[inline(always)]
    pub fn light_fence() {
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
    }
}

#[cfg(zerocast_loom)]
mod imp {
    pub use loom::cell::UnsafeCell;
    pub use loom::sync::atomic::{fence, AtomicU64, Ordering};

    /// Under loom a wait loop must yield, or the model never terminates.
    pub fn spin_loop() {
        loom::thread::yield_now();
    }

    /// loom cannot model a barrier one thread forces onto another: the
    /// light half of an asymmetric barrier is modelled as the full fence
    /// that the heavy half (`membarrier`) makes it (see
    /// `loom-tests/tests/wake.rs` for what that does and does not show).
    pub fn light_fence() {
        fence(Ordering::SeqCst);
    }
}

pub use imp::*;
