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
//! A publisher's process registers once, when its first publisher is
//! created ([`publisher_fence`] checks a flag set by
//! [`register_publisher`]); a process that only subscribes never
//! registers, so neither a sleeper's barrier nor a gating registration's
//! interrupts the CPUs it runs on. Where the kernel lacks the command
//! (before 4.16) or a seccomp filter refuses it, the publisher keeps the
//! `SeqCst` fence. A subscriber whose barrier call fails while the kernel
//! supports the command, or whose process is refused `membarrier`
//! altogether (a seccomp filter; its query fails, and that looks the same
//! as a kernel built without the call), cannot rule out a publisher
//! elsewhere relying on the barrier, nor a lost wake: it sleeps in slices
//! of [`UNBARRIERED_SLICE`]. For the same reason such a process may not
//! register a gating subscriber on a single-producer topic.
//!
//! # Fork
//!
//! A child forked from a registered process is registered too: the
//! kernel keeps the registration in the memory descriptor, which `fork`
//! copies (`dup_mm`) and only `execve` clears (`membarrier_exec_mmap`;
//! there is no command to unregister). The child also inherits
//! `PUBLISHER_REGISTERED`, set, and the once-only registration done, so
//! the two agree: a publisher the child creates skips its fence and is
//! still covered by every sleeper's barrier, and its single-producer
//! claims by every registration barrier (the protocol above holds in the
//! child unchanged; `a_forked_child_of_a_publisher_stays_registered_for_membarrier`
//! checks the kernel's side where it can be read, Linux 6.3+). What it
//! costs: a child that only subscribes is interrupted as a publisher's
//! process is, once per sleeper's (or gating registration's) barrier while
//! one of its threads is on a CPU, a few microseconds each, where a
//! process that never registered is left alone. Not undone, for want of
//! an unregister command; a child that `exec`s starts unregistered.

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
/// processes (a shared, not private, futex). Returns true if it was
/// queued and woken (`FUTEX_WAIT` returned 0: a `FUTEX_WAKE`, or a
/// spurious wake-up; the thread may have been woken before it was
/// switched out); false if it returned at once (the word no longer held
/// `expected`: EAGAIN), timed out, or was interrupted.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call;
    // FUTEX_WAIT only reads it and may return early (EAGAIN, EINTR, timeout),
    // which callers handle by re-checking.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    r == 0
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
/// Linux 6.3+: the `REGISTER_*` commands this process is registered for.
#[cfg(test)]
const MEMBARRIER_CMD_GET_REGISTRATIONS: libc::c_long = 1 << 9;

/// How long a subscriber sleeps at most when its [`sleeper_barrier`]
/// failed: a wake may then be lost, and this bounds how late it comes.
pub const UNBARRIERED_SLICE: Duration = Duration::from_millis(1);

/// Environment variable: `1` makes this process's publishers keep the
/// `SeqCst` wake fence (and claim single-producer rings with a `SeqCst`
/// fence) instead of relying on the sleepers' membarrier; `0`, or unset,
/// is the default (the membarrier where the kernel offers it). Exactly
/// these: any other value (an empty one included) is refused when a
/// publisher is created ([`check_wake_fence_setting`]), and a process that
/// registers anyway ([`register_publisher`]) keeps the fence.
pub const WAKE_FENCE_ENV: &str = "ZEROCAST_WAKE_FENCE";

/// What [`WAKE_FENCE_ENV`] accepts, for its error.
const WAKE_FENCE_EXPECTED: &str = "`0` (rely on the sleeping subscribers' membarrier where \
                                   the kernel offers it: the default) or `1` (keep the SeqCst \
                                   wake fence in every publish)";

/// `Some(true)` for `1` (keep the fence), `Some(false)` for `0`, `None`
/// for anything else.
fn wake_fence_choice(v: &std::ffi::OsStr) -> Option<bool> {
    match v.to_str() {
        Some("1") => Some(true),
        Some("0") => Some(false),
        _ => None,
    }
}

/// Refuses a [`WAKE_FENCE_ENV`] other than `0` or `1` (unset is fine),
/// naming it and what is accepted: publishers call it when they are
/// created, before [`register_publisher`].
pub fn check_wake_fence_setting() -> crate::Result<()> {
    match std::env::var_os(WAKE_FENCE_ENV) {
        Some(v) if wake_fence_choice(&v).is_none() => Err(crate::Error::BadSetting {
            var: WAKE_FENCE_ENV,
            value: v.to_string_lossy().into_owned(),
            expected: WAKE_FENCE_EXPECTED,
        }),
        _ => Ok(()),
    }
}

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

/// What this process learnt of `MEMBARRIER_CMD_GLOBAL_EXPEDITED` (asked once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Support {
    /// The kernel offers the command (and its registration).
    Offered,
    /// The kernel answered the query without the command: no process on
    /// this kernel can have registered, so every publisher fences.
    Absent,
    /// The query itself failed (a seccomp filter refusing `membarrier` to
    /// this process, or a kernel built without it; the two look alike):
    /// publishers in other processes may have registered.
    Unknown,
}

fn support() -> Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    *SUPPORT.get_or_init(|| {
        let mask = membarrier(MEMBARRIER_CMD_QUERY);
        if mask < 0 {
            Support::Unknown
        } else if mask & MEMBARRIER_CMD_GLOBAL_EXPEDITED != 0
            && mask & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED != 0
        {
            Support::Offered
        } else {
            Support::Absent
        }
    })
}

/// Whether the kernel offers `MEMBARRIER_CMD_GLOBAL_EXPEDITED` to this
/// process (asked once).
pub fn global_expedited_supported() -> bool {
    support() == Support::Offered
}

/// Registers this process's threads for the subscribers' barrier, once;
/// called when a publisher is created (`ShmPublisher::new`), before its
/// first publish. Only publishers' processes need it: the sleeper's barrier
/// and the registration barrier force a full barrier on the CPUs of
/// processes that publish, and a process that only subscribes is left
/// uninterrupted. Returns whether publishers of
/// this process skip the `SeqCst` fence (false: the kernel lacks the
/// command or refused it; they keep the fence).
pub fn register_publisher() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        // ZEROCAST_WAKE_FENCE=1 keeps this process's publishers on the
        // SeqCst fence, as on a kernel without the command: to test that
        // path, and to measure what the fence costs. A value it does not
        // know (refused by `check_wake_fence_setting`) keeps it too: the
        // fence is never wrong, only slower.
        let forced_fence =
            std::env::var_os(WAKE_FENCE_ENV).is_some_and(|v| wake_fence_choice(&v) != Some(false));
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

/// Whether this process is registered for the subscribers' barrier (its
/// publishers skip the `SeqCst` fences): [`register_publisher`] ran and
/// succeeded.
#[doc(hidden)]
pub fn publisher_registered() -> bool {
    // Relaxed: see `publisher_fence`.
    PUBLISHER_REGISTERED.load(Ordering::Relaxed)
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
    match support() {
        // No publisher on this kernel can have registered: all of them
        // fence, and the fence above pairs with theirs.
        Support::Absent => true,
        // Forces a full barrier on every CPU running a registered
        // publisher (pairs with their compiler fence in `publisher_fence`).
        Support::Offered => membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0,
        // Refused to us, not necessarily to publishers elsewhere, which
        // may have registered and skip their fence: a wake may be lost.
        Support::Unknown => false,
    }
}

/// The registration barrier of a single-producer topic
/// ([`SingleProducer::registration_barrier`](zerocast_core::broadcast::SingleProducer::registration_barrier)):
/// forces a full barrier on every CPU running a registered publisher, whose
/// claim then needs only a compiler fence. A no-op where the kernel lacks
/// the command (no publisher can have registered; all of them fence). A
/// gating subscriber checks [`registration_barrier_works`] before it
/// registers, so a failure here is not expected; if it happens (the command
/// worked once, the kernel documents no later failure) it is remembered:
/// the ring gives the registration up (slot freed) and
/// [`registration_barrier_works`] says false from then on, so the
/// subscriber gets [`Error::NoRegistrationBarrier`](crate::Error::NoRegistrationBarrier).
pub fn registration_barrier() -> bool {
    if !global_expedited_supported() {
        return true;
    }
    let ok = membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0;
    if !ok {
        // Relaxed: a sticky flag read by later registrations only.
        BARRIER_FAILED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    ok
}

/// Set when [`registration_barrier`] failed after it had worked.
static BARRIER_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`registration_barrier`] does its job in this process: the
/// kernel lacks the command (then publishers fence), or the command
/// succeeds here (asked once). False where `membarrier` is refused to this
/// process altogether (a publisher elsewhere may still rely on it).
pub fn registration_barrier_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    // Relaxed: see `BARRIER_FAILED`.
    !BARRIER_FAILED.load(std::sync::atomic::Ordering::Relaxed)
        && *WORKS.get_or_init(|| {
            match support() {
                Support::Absent => true,
                Support::Offered => membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0,
                // A publisher elsewhere may rely on a barrier we cannot run.
                Support::Unknown => false,
            }
        })
}

/// The single-producer mode of a ring handle that this process claims
/// through: registers the process as a publisher ([`register_publisher`])
/// and claims with the compiler fence where that worked; registrations run
/// [`registration_barrier`]. For a ring a program drives itself (the
/// benches); a topic's segment uses [`single_producer_mode_with`] and
/// registers only when a publisher is created.
pub fn single_producer_mode() -> zerocast_core::broadcast::SingleProducer {
    single_producer_mode_with(register_publisher())
}

/// The single-producer mode with claims that issue only a compiler fence
/// (`asymmetric`) or a `SeqCst` fence; registrations run
/// [`registration_barrier`]. `asymmetric` is sound only for a handle whose
/// claims run in a process registered by [`register_publisher`] (the
/// segment opens its ring with [`publisher_registered`] at that moment, and
/// keeps a second, asymmetric handle for its publishers once the process
/// registers: `Segment::producer_ring`).
pub fn single_producer_mode_with(asymmetric: bool) -> zerocast_core::broadcast::SingleProducer {
    zerocast_core::broadcast::SingleProducer {
        asymmetric,
        registration_barrier,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Is a child forked from a registered publisher's process
    /// still registered? It inherits `PUBLISHER_REGISTERED` (set) with the
    /// rest of its memory, so a publisher it creates skips the wake fence
    /// (and claims a single-producer ring with a compiler fence): had the
    /// kernel dropped the child's registration, sleepers' barriers would
    /// no longer reach it and wakes (or a gating registration) could be
    /// missed. Read from the kernel's source (the registration lives in
    /// the copied memory descriptor), checked here where the kernel says
    /// what a process is registered for (`GET_REGISTRATIONS`, Linux 6.3+);
    /// skipped elsewhere. See "Fork" in the module docs.
    #[test]
    fn a_forked_child_of_a_publisher_stays_registered_for_membarrier() {
        if !register_publisher() {
            eprintln!("skipped: membarrier GLOBAL_EXPEDITED not offered to this process");
            return;
        }
        if membarrier(MEMBARRIER_CMD_QUERY) & MEMBARRIER_CMD_GET_REGISTRATIONS == 0 {
            eprintln!("skipped: the kernel does not say what a process registered for");
            return;
        }
        let registered = || {
            let mask = membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS);
            mask >= 0 && mask & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED != 0
        };
        assert!(registered(), "this process registered, the kernel says not");
        // SAFETY: the child makes one system call, reads a static and
        // leaves with _exit, reporting through its exit code.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            let code = match (registered(), publisher_registered()) {
                (true, true) => 0,
                (false, true) => 1,
                (_, false) => 2,
            };
            // SAFETY: ends the child without running the test harness.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "the forked child: 1 = the kernel dropped its registration while its publishers \
             would skip the fence, 2 = it forgot the registration"
        );
    }

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

    #[test]
    fn the_wake_fence_setting_accepts_exactly_0_and_1() {
        use std::ffi::OsStr;
        assert_eq!(wake_fence_choice(OsStr::new("1")), Some(true));
        assert_eq!(wake_fence_choice(OsStr::new("0")), Some(false));
        for bad in ["", "on", "true", "01", " 1", "yes"] {
            assert_eq!(wake_fence_choice(OsStr::new(bad)), None, "{bad:?}");
        }
    }

    /// `ZEROCAST_WAKE_FENCE=on` (meaning "keep the fence") was taken for
    /// off: publishers relied on the sleepers' membarrier. A value other
    /// than `0` or `1` is refused when a publisher is created, naming the
    /// variable, the value and what is accepted; a publisher created
    /// anyway (a ring a program drives itself) keeps the fence.
    #[test]
    fn regression_an_unknown_wake_fence_setting_was_taken_for_off() {
        if std::env::var_os(WAKE_FENCE_ENV).is_none_or(|v| v != "on") {
            // Alone in a child process with ZEROCAST_WAKE_FENCE=on: the
            // setting is read once per process.
            crate::test_child::rerun_alone_with_value(
                "wait::tests::regression_an_unknown_wake_fence_setting_was_taken_for_off",
                WAKE_FENCE_ENV,
                "on",
            );
            return;
        }
        let path = std::env::temp_dir().join(format!("zc-fence-env-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = std::sync::Arc::new(crate::Segment::create(&path, "t", 64, 24).unwrap());
        let made = crate::ShmPublisher::new(seg, &crate::PublisherOptions::default());
        std::fs::remove_file(&path).unwrap();
        let err = made
            .expect_err("a publisher under an unknown wake fence setting")
            .to_string();
        assert!(err.contains("ZEROCAST_WAKE_FENCE=on"), "{err}");
        assert!(err.contains("`0`") && err.contains("`1`"), "{err}");
        assert!(!register_publisher(), "an unknown setting keeps the fence");
        assert!(!publisher_registered());
    }

    /// Set in the child run of
    /// `regression_membarrier_refused_to_this_process_is_not_taken_for_no_kernel_support`.
    const SECCOMP_CHILD_ENV: &str = "ZEROCAST_TEST_MEMBARRIER_REFUSED";

    /// Refuses `membarrier` to the calling thread with EPERM (a seccomp
    /// filter, as a container or service manager may install).
    fn refuse_membarrier() {
        const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
        const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
        const RET_K: u16 = 0x06; // BPF_RET | BPF_K
        let filter = [
            // seccomp_data.nr
            libc::sock_filter {
                code: LD_W_ABS,
                jt: 0,
                jf: 0,
                k: 0,
            },
            libc::sock_filter {
                code: JEQ_K,
                jt: 0,
                jf: 1,
                k: libc::SYS_membarrier as u32,
            },
            libc::sock_filter {
                code: RET_K,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
            },
            libc::sock_filter {
                code: RET_K,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            },
        ];
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: prctl with integer arguments; PR_SET_SECCOMP reads the
        // filter program, which outlives the call.
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            assert_eq!(
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ),
                0,
                "installing the seccomp filter failed"
            );
        }
    }

    /// A process refused `membarrier` (seccomp) on a kernel that offers it
    /// must not conclude that no publisher relies on it: a publisher in
    /// another process may have registered and publish with a compiler
    /// fence only. Its sleeper barrier must report failure (so that it
    /// sleeps in short slices), and a gating registration on a
    /// single-producer topic must be refused.
    #[test]
    fn regression_membarrier_refused_to_this_process_is_not_taken_for_no_kernel_support() {
        if std::env::var_os(SECCOMP_CHILD_ENV).is_some() {
            refuse_membarrier();
            assert!(
                !sleeper_barrier(),
                "sleeper barrier claimed success without membarrier"
            );
            assert!(
                !registration_barrier_works(),
                "registration barrier claimed to work without membarrier"
            );
            return;
        }
        if !register_publisher() {
            // The kernel (or our own sandbox) does not offer the command:
            // no publisher here could rely on it.
            return;
        }
        crate::test_child::rerun_alone_with(
            "wait::tests::regression_membarrier_refused_to_this_process_is_not_taken_for_no_kernel_support",
            SECCOMP_CHILD_ENV,
        );
    }
}
