//! Wait strategies, the futex a blocking subscriber sleeps on, and the
//! asymmetric barrier that lets publishers check for sleepers without a
//! fence.
//!
//! # The wake-up protocol
//!
//! A publisher commits its frame (a Release store), then loads `sleepers`
//! and, if it is not zero, bumps `wake_seq` and calls FUTEX_WAKE. A
//! subscriber about to sleep increments `sleepers`, reads `wake_seq`,
//! re-checks the ring and calls FUTEX_WAIT on the `wake_seq` it read. This
//! is a store-buffering pattern (each side stores, then loads what the
//! other stored): without a full barrier on *both* sides, the publisher's
//! load of `sleepers` may be satisfied before its commit is visible while
//! the subscriber's re-check misses the commit, and the wake is lost.
//!
//! The barrier on the publisher's side is the costly one (paid on every
//! publish: an `mfence` or locked instruction on x86-64, even when nobody
//! sleeps); the subscriber's side is paid only when it goes to sleep. So
//! the barrier is asymmetric: a publisher issues only a compiler fence
//! ([`publisher_fence`]), and a subscriber about to sleep calls
//! [`sleeper_barrier`]: `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`,
//! which returns only after every CPU running a thread of a process that
//! registered with `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED` has executed
//! a full memory barrier (a CPU not running such a thread passed through a
//! context switch, itself a full barrier). That promotes the publisher's
//! compiler fence to a full fence at whatever point of its program the
//! barrier hits: if the publisher's load of `sleepers` comes after that
//! point, it sees the increment (stored before the syscall); if before, its
//! commit, which precedes the load in program order and which the compiler
//! fence keeps there, is visible to the subscriber's re-check after the
//! syscall. Either way the wake is not lost (the loom model
//! `wake_protocol_never_loses_a_wake` checks the protocol with both
//! barriers as `SeqCst` fences).
//!
//! A publisher's process registers once ([`publisher_fence`] checks a
//! flag set by [`register_publisher`]); where the kernel lacks the command
//! (before 4.16) or a seccomp filter refuses it, the publisher keeps the
//! `SeqCst` fence. A subscriber whose barrier call fails while the kernel
//! supports the command (a publisher elsewhere may rely on it) cannot rule
//! out a lost wake, so it sleeps in slices of [`UNBARRIERED_SLICE`].

use std::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicU32, Ordering};
use std::sync::OnceLock;
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
    /// while some subscriber sleeps). Each time it goes to sleep it issues
    /// one `membarrier` (see the module docs), which interrupts the CPUs
    /// running publisher threads once, so that publishes need no fence.
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

/// `membarrier` commands (`<linux/membarrier.h>`); libc names only the
/// syscall.
const MEMBARRIER_CMD_QUERY: libc::c_long = 0;
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_long = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_long = 1 << 2;

/// How long a subscriber sleeps at most when its [`sleeper_barrier`]
/// failed: a wake may then be lost, and this bounds how late it comes.
pub const UNBARRIERED_SLICE: Duration = Duration::from_millis(1);

/// Environment variable: `1` makes this process's publishers keep the
/// `SeqCst` wake fence (and claim single-producer rings with a `SeqCst`
/// fence) instead of relying on the sleepers' membarrier.
pub const WAKE_FENCE_ENV: &str = "ZEROCAST_WAKE_FENCE";

/// Set once this process is registered for `MEMBARRIER_CMD_GLOBAL_EXPEDITED`;
/// from then on its publishers skip the `SeqCst` fence.
static PUBLISHER_REGISTERED: AtomicBool = AtomicBool::new(false);

fn membarrier(cmd: libc::c_long) -> libc::c_long {
    // SAFETY: membarrier takes two integer arguments (cmd, flags; a third,
    // cpu_id, only for a flag we do not pass) and touches no user memory.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    }
}

/// Whether the kernel offers `MEMBARRIER_CMD_GLOBAL_EXPEDITED` (asked once).
pub fn global_expedited_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let mask = membarrier(MEMBARRIER_CMD_QUERY);
        mask >= 0
            && mask & MEMBARRIER_CMD_GLOBAL_EXPEDITED != 0
            && mask & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED != 0
    })
}

/// Registers this process's threads for the subscribers' barrier, once;
/// called before a publisher's first publish. Returns whether publishers of
/// this process skip the `SeqCst` fence (false: the kernel lacks the
/// command or refused it; they keep the fence).
pub fn register_publisher() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        // ZEROCAST_WAKE_FENCE=1 keeps this process's publishers on the
        // SeqCst fence, as on a kernel without the command: to test that
        // path, and to measure what the fence costs.
        let forced_fence = std::env::var_os(WAKE_FENCE_ENV).is_some_and(|v| v == "1");
        let ok = !forced_fence
            && global_expedited_supported()
            && membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
        // Relaxed: the flag is read by this process's publishers, each
        // created after this call returned (in this thread, or handed to
        // another thread, which synchronises); the kernel-side registration
        // completed before the syscall returned.
        PUBLISHER_REGISTERED.store(ok, Ordering::Relaxed);
        ok
    })
}

/// The publisher's half of the wake-up protocol, between its commit and
/// its load of `sleepers` (see the module docs): a compiler fence once
/// this process is registered, a `SeqCst` fence otherwise.
#[inline(always)]
pub fn publisher_fence() {
    // Relaxed: set once by `register_publisher` before any publisher of
    // this process existed (see there).
    if PUBLISHER_REGISTERED.load(Ordering::Relaxed) {
        // Keeps the compiler from moving the `sleepers` load above the
        // commit; the CPU's reordering is undone by the sleeper's
        // membarrier, which runs a full barrier on this CPU.
        compiler_fence(Ordering::SeqCst);
    } else {
        // SeqCst fence: pairs with the SeqCst fence in `sleeper_barrier`
        // (the classic symmetric protocol).
        fence(Ordering::SeqCst);
    }
}

/// The sleeper's half of the wake-up protocol, between its increment of
/// `sleepers` and its re-check of the ring. Returns false when a wake may
/// be lost (the kernel supports the barrier, so a publisher may rely on it,
/// but this call failed): the caller then sleeps at most
/// [`UNBARRIERED_SLICE`].
pub fn sleeper_barrier() -> bool {
    // SeqCst fence: pairs with the SeqCst fence of a publisher that could
    // not register (`publisher_fence`).
    fence(Ordering::SeqCst);
    if !global_expedited_supported() {
        // No publisher on this kernel can have registered: all of them
        // fence, and the fence above pairs with theirs.
        return true;
    }
    // Forces a full barrier on every CPU running a registered publisher
    // (pairs with their compiler fence in `publisher_fence`).
    membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0
}

/// The registration barrier of a single-producer topic
/// ([`SingleProducer::registration_barrier`](zerocast_core::broadcast::SingleProducer::registration_barrier)):
/// forces a full barrier on every CPU running a registered publisher, whose
/// claim then needs only a compiler fence. A no-op where the kernel lacks
/// the command (no publisher can have registered; all of them fence). A
/// gating subscriber checks [`registration_barrier_works`] before it
/// registers, so a failure here is not expected.
pub fn registration_barrier() {
    if global_expedited_supported() {
        let ok = membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0;
        debug_assert!(ok, "membarrier(GLOBAL_EXPEDITED) failed after it worked");
    }
}

/// Whether [`registration_barrier`] does its job in this process: the
/// kernel lacks the command (then publishers fence), or the command
/// succeeds here (asked once).
pub fn registration_barrier_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        !global_expedited_supported() || membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0
    })
}

/// The single-producer mode of a ring in this process: its claims use the
/// compiler fence when this process is registered (publishers register
/// when they are created; here, when the segment is opened, so that the
/// mode is fixed before any claim), and its registrations run
/// [`registration_barrier`].
pub fn single_producer_mode() -> zerocast_core::broadcast::SingleProducer {
    zerocast_core::broadcast::SingleProducer {
        asymmetric: register_publisher(),
        registration_barrier,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registration is asked once and agrees with what the kernel offers;
    /// the sleeper's barrier then succeeds (where the kernel offers the
    /// command and no filter refuses it, as on the machines this runs on).
    #[test]
    fn publisher_registration_follows_kernel_support_and_sleeper_barrier_works() {
        let registered = register_publisher();
        assert_eq!(
            register_publisher(),
            registered,
            "registration is asked once"
        );
        if registered {
            assert!(global_expedited_supported());
            // Relaxed: set by this thread's `register_publisher` above.
            assert!(PUBLISHER_REGISTERED.load(Ordering::Relaxed));
        }
        assert!(
            sleeper_barrier() || global_expedited_supported(),
            "without kernel support the sleeper's fence is enough"
        );
        if registered {
            assert!(sleeper_barrier(), "membarrier(GLOBAL_EXPEDITED) failed");
        }
    }
}
