//! Wait strategies, and the futex a blocking subscriber sleeps on.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// How a subscriber waits when nothing is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Poll without pause: lowest latency, one core at 100%.
    BusySpin,
    /// Poll `spins` times, then yield the CPU between polls.
    SpinThenYield {
        /// Polls before the first yield.
        spins: u32,
    },
    /// Poll `spins` times, then sleep in the kernel on the segment's futex
    /// word until a publisher wakes it: no CPU while idle, woken within
    /// microseconds (one futex wake syscall on the publisher's side, paid only
    /// while some subscriber sleeps).
    Blocking {
        /// Polls before sleeping.
        spins: u32,
    },
}

impl Default for WaitStrategy {
    fn default() -> Self {
        Self::Blocking { spins: 2_000 }
    }
}

/// Sleeps while `*word == expected`, at most `timeout`. Works across
/// processes (a shared, not private, futex).
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call;
    // FUTEX_WAIT only reads it and may return early (EAGAIN, EINTR, timeout),
    // which callers handle by re-checking.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every thread sleeping on `word`, in any process.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE does not access
    // memory beyond identifying the futex.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}
