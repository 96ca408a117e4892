//! Round trips between two pinned threads: the core-to-core floor, the
//! ping-pong method of iceoryx2's own `benchmarks/publish-subscribe` (mean
//! of RTT/2 over N round trips) for both transports, and the same with both
//! sides asleep in the kernel (a bare futex pair, zerocast's blocking
//! subscriber with no spin, iceoryx2's Listener/Notifier, as iceoryx2's own
//! `benchmarks/event` does).
//!
//! Every figure here is one-way: a round trip's time halved. The echoing
//! side reads the clock right after each answer it sends, and a round trip
//! is the time between two such reads (consecutive reads, so the mean is
//! exactly total time / (2 × rounds), iceoryx2's figure). The read is off
//! the round trip's path: it runs while the answer travels to the pinging
//! side and that side's next frame travels back, and the pinging side
//! reads no clock at all. (Timed on the pinging side, after each answer
//! arrived, the clock read sat inside every round trip: on an AMD EPYC
//! family 26 guest with the two vCPUs near each other it doubled the
//! core-to-core floor, 45 ns one-way against 22-26 ns untimed, and made
//! iceoryx2's ping-pong 227-230 ns where it is 170-179 timed off the path
//! (`docs/bench/zen5/iox-own-before-after/`); every multiple of the floor
//! was flattened towards 1.) The read stays off the path only while it takes
//! less than the answer's way there and the next frame's way back; so
//! every case also runs as many round trips again with no clock read
//! inside the loop, and reports that mean beside the timed one
//! (`one_way_mean_untimed_ns`: iceoryx2's figure exactly); timed and
//! untimed halves alternate, so that a drift over the run falls on both.
//! The first tenth of the rounds warms up and is not counted.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use iceoryx2::prelude::*;
use serde_json::{json, Value};
use zerocast_core::frame::TradeEvent;
use zerocast_ipc::wait::{futex_wait, futex_wake};
use zerocast_ipc::{
    Bus, Config, Producers, Publisher, RecvError, Start, Subscriber, SubscriberOptions,
    TopicConfig, TopicKind, WaitStrategy,
};

use crate::{bench_trade, trade_frame};

/// How many round trips each kind of case makes.
#[derive(Clone, Copy, Debug)]
pub struct Rounds {
    /// Round trips of the busy-polling cases (floor and ping-pong).
    pub spin: u64,
    /// Round trips of the cases that sleep in the kernel.
    pub wake: u64,
}

impl Rounds {
    /// Tiny counts: checks the cases work, not their timings.
    pub const SMOKE: Self = Self {
        spin: 2_000,
        wake: 200,
    };
}

/// One-way figures of a ping-pong: the p50 and the mean of RTT/2.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneWay {
    /// Round trips counted (after warm-up).
    pub rounds: u64,
    /// Median round trip, halved, in ns.
    pub p50_ns: f64,
    /// Mean round trip, halved, in ns.
    pub mean_ns: f64,
    /// The mean again, over as many round trips run in two halves between
    /// and after the timed ones, with no clock read inside either half (0
    /// where not measured): iceoryx2's own figure, the check that the
    /// per-round reads stayed off the round trip's path.
    pub untimed_mean_ns: f64,
}

impl OneWay {
    /// From the round-trip times `rtts` (ns), in any order.
    ///
    /// ```
    /// let w = zerocast_benches::pingpong::OneWay::from_rtts(&mut [300, 100, 200]);
    /// assert_eq!((w.rounds, w.p50_ns, w.mean_ns, w.untimed_mean_ns), (3, 100.0, 100.0, 0.0));
    /// ```
    pub fn from_rtts(rtts: &mut [u64]) -> Self {
        rtts.sort_unstable();
        let n = rtts.len().max(1) as f64;
        Self {
            rounds: rtts.len() as u64,
            p50_ns: rtts.get(rtts.len() / 2).copied().unwrap_or(0) as f64 / 2.0,
            mean_ns: rtts.iter().sum::<u64>() as f64 / n / 2.0,
            untimed_mean_ns: 0.0,
        }
    }

    /// As JSON, with the ratios to `base` (`None`: no ratios).
    pub fn json(&self, base: Option<(&str, &OneWay)>) -> Value {
        let mut v = json!({
            "rounds": self.rounds,
            "one_way_p50_ns": self.p50_ns,
            "one_way_mean_ns": self.mean_ns,
            "one_way_mean_untimed_ns": self.untimed_mean_ns,
        });
        if let Some((name, b)) = base {
            v[format!("p50_x_{name}")] = json!(self.p50_ns / b.p50_ns.max(f64::MIN_POSITIVE));
            v[format!("mean_x_{name}")] = json!(self.mean_ns / b.mean_ns.max(f64::MIN_POSITIVE));
            v[format!("mean_untimed_x_{name}")] =
                json!(self.untimed_mean_ns / b.untimed_mean_ns.max(f64::MIN_POSITIVE));
        }
        v
    }
}

/// Runs a ping-pong between core `cores[0]` (the pinging side) and
/// `cores[1]` (the echoing side, which times: see the module docs).
/// `make_ping` runs first on its thread, then `make_echo` on the other (so
/// the first creates what the second opens, with no race); each returns
/// one round trip's half: `ping` sends and waits for the answer, `echo`
/// waits and answers. Returns the round trips after warm-up.
///
/// A side whose set-up panics fails the case (a panic here, which the
/// harness catches per case). A side that panics in its loop, after the
/// start, ends the process with [`PANIC_MID_RUN_EXIT`], naming the side:
/// its partner may be waiting for an answer that cannot come, and no
/// thread can be stopped from outside. Nothing is cleaned up then (the
/// case's segments stay in `/dev/shm` until `zerocast stat
/// --remove-stale` or a reboot) and the harness writes no results.
pub fn run_pair<FP, P, FE, E>(
    cores: [usize; 2],
    rounds: u64,
    make_ping: FP,
    make_echo: FE,
) -> OneWay
where
    FP: FnOnce() -> P + Send,
    P: FnMut(),
    FE: FnOnce() -> E + Send,
    E: FnMut(),
{
    let base = Instant::now();
    run_pair_clocked(cores, rounds, make_ping, make_echo, move || {
        base.elapsed().as_nanos() as u64
    })
}

/// [`run_pair`] with the clock (ns) it reads: only on the echoing side,
/// after each answer.
fn run_pair_clocked<FP, P, FE, E>(
    cores: [usize; 2],
    rounds: u64,
    make_ping: FP,
    make_echo: FE,
    mut clock: impl FnMut() -> u64 + Send,
) -> OneWay
where
    FP: FnOnce() -> P + Send,
    P: FnMut(),
    FE: FnOnce() -> E + Send,
    E: FnMut(),
{
    let warmup = rounds / 10;
    let total = warmup + rounds;
    let made = Barrier::new(2);
    let start = Barrier::new(2);
    // Set by a side whose set-up failed, so that neither side starts a loop
    // whose partner will never answer (a hang instead of an error).
    let failed = AtomicBool::new(false);
    let set_up = |make: &mut dyn FnMut()| {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(make)).is_err() {
            // Relaxed: read after the `start` barrier, which orders it.
            failed.store(true, Ordering::Relaxed);
        }
    };
    let (mut rtts, untimed) = std::thread::scope(|s| {
        let (made, start, failed, set_up) = (&made, &start, &failed, &set_up);
        let echo = s.spawn(move || {
            made.wait();
            let mut make = Some(make_echo);
            let mut echo = None;
            // The round-trip times' buffer, written through before the
            // start (every page faulted in: a first touch inside the timed
            // loop would put a page fault into a round trip), as part of
            // the set-up, so that an allocation that fails stops both sides.
            let mut rtts = Vec::new();
            // Pinned in the set-up: a core that cannot be had fails the
            // case instead of leaving the partner at a barrier.
            set_up(&mut || {
                pin_exactly(cores[1]);
                rtts = vec![u64::MAX; rounds as usize];
                echo = make.take().map(|f| f());
            });
            start.wait();
            // Relaxed: the barrier above orders the store before this load.
            let mut echo = echo.filter(|_| !failed.load(Ordering::Relaxed))?;
            let mut timed = 0;
            // Timed and untimed halves alternate (timed, untimed, timed,
            // untimed), so that a drift over the run (the guest's speed,
            // the vCPUs' placement) falls on both alike.
            // Every span, timed or not, runs from one read to the next, so
            // each holds its round trips and one read, never two.
            let half = rounds / 2;
            let mut untimed = 0;
            let _exit = ExitOnPanic("echoing");
            let mut last = clock();
            for (phase, n) in [warmup + half, half, rounds - half, rounds - half]
                .into_iter()
                .enumerate()
            {
                if phase % 2 == 1 {
                    // No clock read inside the loop.
                    for _ in 0..n {
                        echo();
                    }
                    let now = clock();
                    untimed += now.saturating_sub(last);
                    last = now;
                    continue;
                }
                for i in 0..n {
                    echo();
                    // After the answer left: this read overlaps its way to
                    // the pinging side and the next frame's way back, as
                    // long as it takes less than those.
                    let now = clock();
                    if phase > 0 || i >= warmup {
                        rtts[timed] = now.saturating_sub(last);
                        timed += 1;
                    }
                    last = now;
                }
            }
            rtts.truncate(timed);
            Some((rtts, untimed))
        });
        let ping = s.spawn(move || {
            let mut make = Some(make_ping);
            let mut ping = None;
            set_up(&mut || {
                pin_exactly(cores[0]);
                ping = make.take().map(|f| f());
            });
            made.wait();
            start.wait();
            // Relaxed: the barrier above orders the store before this load.
            let mut ping = ping
                .filter(|_| !failed.load(Ordering::Relaxed))
                .expect("a ping-pong side failed to set up");
            let _exit = ExitOnPanic("pinging");
            for _ in 0..total + rounds {
                ping();
            }
        });
        let rtts = echo.join().expect("echo thread");
        ping.join().expect("ping thread");
        rtts.expect("a ping-pong side failed to set up")
    });
    let mut w = OneWay::from_rtts(&mut rtts);
    w.untimed_mean_ns = untimed as f64 / rounds.max(1) as f64 / 2.0;
    w
}

/// The most round trips a two-core case may be asked for (the harness's
/// and the examples' bound): their times are kept (8 bytes each), and
/// `rounds + rounds / 10` must not overflow.
pub const MAX_ROUNDS: u64 = 100_000_000;

/// Held by a ping-pong side from the start of its loop: dropped while the
/// thread unwinds from a panic, its partner may be waiting for an answer
/// that cannot come, spinning forever (a hung harness instead of a failed
/// one), so the process exits instead, naming the side. The message is
/// written to the process's stderr directly, not through `eprintln!`,
/// which a test harness captures (and the exit would throw away); a
/// failed write is ignored.
struct ExitOnPanic(&'static str);

/// The exit status of a process whose ping-pong side panicked mid-run
/// (EX_SOFTWARE; not 101, which a panicking `main` and a failed test run
/// also return).
pub const PANIC_MID_RUN_EXIT: i32 = 70;

impl Drop for ExitOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "the {} side of a ping-pong panicked after the start; its partner may wait \
             for an answer forever: exiting with status {PANIC_MID_RUN_EXIT}",
            self.0
        );
        std::process::exit(PANIC_MID_RUN_EXIT);
    }
}

/// The first two cores of this machine (the first twice on a one-core
/// machine): where the examples and tests run their ping-pongs.
pub fn two_cores() -> [usize; 2] {
    let ids: Vec<usize> = crate::cores().iter().map(|c| c.id).collect();
    [ids[0], *ids.get(1).unwrap_or(&ids[0])]
}

fn pin_exactly(core: usize) {
    assert!(
        core_affinity::set_for_current(core_affinity::CoreId { id: core }),
        "failed to pin to core {core}"
    );
}

/// A word alone on its cache line (and the adjacent-line prefetcher's
/// pair), so that only the two participants' accesses move it.
#[repr(align(128))]
struct Line<T>(T);

/// The core-to-core floor: one cache line ping-ponged between the two
/// cores. The pinging side writes an odd number and waits for the next
/// even one; the echoing side answers each odd number with the next even
/// one. Nothing that crosses between these cores can be faster.
pub fn cache_line_floor(cores: [usize; 2], rounds: u64) -> OneWay {
    let line = Line(AtomicU64::new(0));
    let line = &line.0;
    run_pair(
        cores,
        rounds,
        || {
            let mut n = 0u64;
            move || {
                // Release: pairs with the echo's Acquire load; Acquire
                // below pairs with the echo's Release store. (Nothing else
                // is published: the orders only keep the loop honest.)
                line.store(n + 1, Ordering::Release);
                while line.load(Ordering::Acquire) != n + 2 {
                    core::hint::spin_loop();
                }
                n += 2;
            }
        },
        || {
            let mut n = 0u64;
            move || {
                // Acquire: pairs with the ping's Release store.
                while line.load(Ordering::Acquire) != n + 1 {
                    core::hint::spin_loop();
                }
                // Release: pairs with the ping's Acquire load.
                line.store(n + 2, Ordering::Release);
                n += 2;
            }
        },
    )
}

/// The floor for anything that sleeps: a bare futex park/unpark pair. Each
/// side sets the other's word, wakes it (FUTEX_WAKE, shared futex as the
/// segment's), and sleeps on its own word (FUTEX_WAIT) until answered,
/// with no spin: a side sleeps in the kernel unless the answer is already
/// there when it looks (see [`futex_pingpong_counted`]).
pub fn futex_pingpong(cores: [usize; 2], rounds: u64) -> OneWay {
    futex_pingpong_counted(cores, rounds).0
}

/// What the waits of [`futex_pingpong_counted`] did (both sides, over all
/// its round trips: warm-up, timed and untimed; the two timed phases may
/// differ, so these shares describe the run, not its p50 alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FutexWaits {
    /// Waits (one per side per round trip).
    pub waits: u64,
    /// Those that found no answer at their first look and called
    /// `FUTEX_WAIT`.
    pub entered: u64,
    /// Those in which a `FUTEX_WAIT` returned 0: the side was queued in
    /// the kernel and woken (a call that returns EAGAIN, the word changed
    /// before the kernel looked, was not). An upper bound on the waits that
    /// slept: a wake that finds the waiter queued before it was switched
    /// out returns 0 too, and a late wake of one round may end the next
    /// round's wait.
    pub slept: u64,
}

/// [`futex_pingpong`], with what its waits did: a wait whose answer is
/// already there when it looks, or arrives before the kernel looks,
/// returns without sleeping, so where the two cores answer faster than a
/// side gets to sleep (a system call slower than the cross-core hop), the
/// pair's p50 can be no sleep at all, and these counts say how often that
/// happened.
pub fn futex_pingpong_counted(cores: [usize; 2], rounds: u64) -> (OneWay, FutexWaits) {
    let (to_echo, to_ping) = (Line(AtomicU32::new(0)), Line(AtomicU32::new(0)));
    let (to_echo, to_ping) = (&to_echo.0, &to_ping.0);
    // Waits of each side, and those that found no answer at their first
    // look (each side counts its own, on its own line).
    let (ping_waits, echo_waits) = (Line(AtomicU64::new(0)), Line(AtomicU64::new(0)));
    let (ping_waits, echo_waits) = (&ping_waits.0, &echo_waits.0);
    let (ping_entered, echo_entered) = (Line(AtomicU64::new(0)), Line(AtomicU64::new(0)));
    let (ping_entered, echo_entered) = (&ping_entered.0, &echo_entered.0);
    let (ping_slept, echo_slept) = (Line(AtomicU64::new(0)), Line(AtomicU64::new(0)));
    let (ping_slept, echo_slept) = (&ping_slept.0, &echo_slept.0);
    // Sleeps until `word` holds `want`; FUTEX_WAIT returns at once if the
    // word changed after the load, so no wake is lost.
    fn wait_for(
        word: &AtomicU32,
        want: u32,
        waits: &AtomicU64,
        entered: &AtomicU64,
        slept: &AtomicU64,
    ) {
        // Relaxed (all three counters): each is written by one thread and read
        // after the threads are joined.
        waits.fetch_add(1, Ordering::Relaxed);
        let (mut first, mut counted) = (true, false);
        loop {
            // Acquire: pairs with the Release store of the other side.
            let seen = word.load(Ordering::Acquire);
            if seen == want {
                return;
            }
            if first {
                entered.fetch_add(1, Ordering::Relaxed);
                first = false;
            }
            if futex_wait(word, seen, Duration::from_secs(1)) && !counted {
                slept.fetch_add(1, Ordering::Relaxed);
                counted = true;
            }
        }
    }
    let w = run_pair(
        cores,
        rounds,
        || {
            let mut n = 0u32;
            move || {
                n = n.wrapping_add(1);
                // Release: pairs with the echo's Acquire load in `wait_for`.
                to_echo.store(n, Ordering::Release);
                futex_wake(to_echo);
                wait_for(to_ping, n, ping_waits, ping_entered, ping_slept);
            }
        },
        || {
            let mut n = 0u32;
            move || {
                n = n.wrapping_add(1);
                wait_for(to_echo, n, echo_waits, echo_entered, echo_slept);
                // Release: pairs with the ping's Acquire load in `wait_for`.
                to_ping.store(n, Ordering::Release);
                futex_wake(to_ping);
            }
        },
    );
    // Relaxed: the threads were joined by `run_pair`.
    let waits = ping_waits.load(Ordering::Relaxed) + echo_waits.load(Ordering::Relaxed);
    let entered = ping_entered.load(Ordering::Relaxed) + echo_entered.load(Ordering::Relaxed);
    let slept = ping_slept.load(Ordering::Relaxed) + echo_slept.load(Ordering::Relaxed);
    (
        w,
        FutexWaits {
            waits,
            entered,
            slept,
        },
    )
}

/// A clock read on a ping-pong's path (see [`ShmSend::PublishAt`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathClock {
    /// `clock_gettime(CLOCK_REALTIME)` through the vDSO (`layout::now_ns`):
    /// what the frame clock reads on a thread that publishes less often
    /// than about three times a microsecond.
    Vdso,
    /// `lfence; rdtsc` (x86_64).
    LfenceRdtsc,
    /// `rdtscp` (x86_64 CPUs that have it).
    Rdtscp,
    /// A plain `rdtsc`, not ordered (x86_64): what the
    /// frame clock reads on a thread that publishes densely.
    Rdtsc,
}

/// Whether the CPU has `rdtscp` (CPUID 0x8000_0001, EDX bit 27; some
/// hypervisors hide it). Asked once: `cpuid` traps to the hypervisor in
/// a guest (a read of it on the ping-pong's path cost 4 µs).
#[cfg(target_arch = "x86_64")]
fn has_rdtscp() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        // SAFETY: `cpuid` exists on every x86_64 CPU and only reads
        // identification registers (a safe function on newer compilers,
        // hence the allow).
        #[allow(unused_unsafe)]
        let r = unsafe { core::arch::x86_64::__cpuid(0x8000_0001) };
        r.edx & (1 << 27) != 0
    })
}

impl PathClock {
    /// The clocks this CPU has, in the order the example prints them (the
    /// TSC reads on x86_64 only, `rdtscp` where CPUID says so).
    pub fn available() -> Vec<PathClock> {
        let all = [
            PathClock::Vdso,
            PathClock::LfenceRdtsc,
            PathClock::Rdtscp,
            PathClock::Rdtsc,
        ];
        all.into_iter().filter(|c| c.exists()).collect()
    }

    /// Whether this CPU has it.
    pub fn exists(self) -> bool {
        match self {
            PathClock::Vdso => true,
            #[cfg(target_arch = "x86_64")]
            PathClock::Rdtscp => has_rdtscp(),
            _ => cfg!(target_arch = "x86_64"),
        }
    }

    /// Its name in a table.
    pub fn name(self) -> &'static str {
        match self {
            PathClock::Vdso => "clock_gettime",
            PathClock::LfenceRdtsc => "lfence+rdtsc",
            PathClock::Rdtscp => "rdtscp",
            PathClock::Rdtsc => "rdtsc",
        }
    }

    /// Reads it (a TSC value for the TSC reads: a frame time only in name,
    /// as the ping-pong never reads it back). Panics for a clock this CPU
    /// does not have (see [`available`](Self::available)).
    #[inline(always)]
    pub fn read(self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            use core::arch::x86_64::{__rdtscp, _mm_lfence, _rdtsc};
            match self {
                PathClock::LfenceRdtsc => {
                    // SAFETY: `lfence` and `rdtsc` exist on every x86_64
                    // CPU (SSE2 is part of x86_64); `lfence` holds back
                    // later instructions until the earlier ones are done
                    // (the effect measured), `rdtsc` reads the TSC.
                    return unsafe {
                        _mm_lfence();
                        _rdtsc()
                    };
                }
                PathClock::Rdtscp => {
                    assert!(has_rdtscp(), "this CPU has no rdtscp");
                    let mut aux = 0u32;
                    // SAFETY: the CPU has `rdtscp` (CPUID checked just
                    // above, once per process); it reads the TSC and
                    // writes the processor id into `aux`, a valid local.
                    return unsafe { __rdtscp(&mut aux) };
                }
                // SAFETY: `rdtsc` exists on every x86_64 CPU and only
                // reads the TSC.
                PathClock::Rdtsc => return unsafe { _rdtsc() },
                PathClock::Vdso => {}
            }
        }
        match self {
            PathClock::Vdso => zerocast_ipc::layout::now_ns(),
            other => panic!("{other:?}: no TSC read on this CPU"),
        }
    }
}

/// How a shared-memory ping-pong sends (see [`shm_pingpong_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShmSend {
    /// `Publisher::publish(&TradeEvent)`.
    Publish,
    /// `Publisher::publish_at(&TradeEvent, t)`: `None`, the trade's own
    /// time (no clock read); `Some(clock)`, `t` read from that clock right
    /// before it (what a clock read costs on the path from a frame
    /// received to the answer published; `Publish` is the frame clock's
    /// case).
    PublishAt(Option<PathClock>),
    /// `ShmPublisher::publish_words` of the trade frame encoded once.
    Words,
    /// iceoryx2's own method (`benchmarks/publish-subscribe`, as the
    /// harness's `iox-plain` row runs it): each side lends its next slot
    /// and writes the trade's body into it (`Publisher::loan`, `write`)
    /// before it waits, and only commits (header and stamp) once the answer
    /// is there; the pinging side sends one frame first to start. The
    /// frame's time is then the time the slot was lent, before the wait.
    LoanHeld,
}

/// zerocast shared memory: topics `ping` and `pong` (trade frames, 160 B),
/// a `Publisher::publish(&TradeEvent)` each way; the subscriber busy-polls
/// `try_recv` (`wait: None`) or waits in `recv` by `wait`.
pub fn shm_pingpong(
    namespace: &str,
    cores: [usize; 2],
    rounds: u64,
    wait: Option<WaitStrategy>,
) -> OneWay {
    shm_pingpong_with(
        namespace,
        cores,
        rounds,
        wait,
        ShmSend::Publish,
        Producers::Many,
    )
    .0
}

/// [`shm_pingpong`] sending by `send`, on topics of `producers`; also
/// returns how many frames each side published on its topic (`[ping,
/// pong]`, the last sequence + 1): with warm-up and the untimed rounds,
/// `2 * rounds + rounds / 10` each way, and one more from the pinging side
/// for [`ShmSend::LoanHeld`] (the frame that starts the exchange).
pub fn shm_pingpong_with(
    namespace: &str,
    cores: [usize; 2],
    rounds: u64,
    wait: Option<WaitStrategy>,
    send: ShmSend,
    producers: Producers,
) -> (OneWay, [u64; 2]) {
    // Each side's last sequence + 1, stored after every send (Relaxed, to
    // a line of its own: a plain store; read after the threads joined).
    let published = [Line(AtomicU64::new(0)), Line(AtomicU64::new(0))];
    let (ping_published, echo_published) = (&published[0].0, &published[1].0);
    let topic = |name| {
        let mut t = TopicConfig::new(name, 1 << 20, TopicKind::Trade);
        t.producers = producers;
        t
    };
    let bus = Bus::new(Config {
        namespace: namespace.to_owned(),
        topics: vec![topic("ping"), topic("pong")],
    });
    let side = |out: &'static str, inn: &'static str| {
        let bus = bus.clone();
        move || {
            // In the set-up: a clock this CPU lacks fails the case, not
            // the loop (where a panic ends the process).
            if let ShmSend::PublishAt(Some(clock)) = send {
                assert!(clock.exists(), "{clock:?}: not on this CPU");
            }
            let publisher = bus.publisher(out).expect("ping-pong publisher");
            let subscriber = bus
                .subscriber(
                    inn,
                    SubscriberOptions {
                        name: format!("pingpong-{inn}"),
                        start: Start::Newest,
                        wait: wait.unwrap_or(WaitStrategy::BusySpin),
                        ..Default::default()
                    },
                )
                .expect("ping-pong subscriber");
            (publisher, subscriber, bench_trade())
        }
    };
    let frame = trade_frame();
    let publish = move |publisher: &mut Publisher, trade: &TradeEvent| match (send, publisher) {
        (ShmSend::Publish, p) => p.publish(trade).expect("publish"),
        (ShmSend::PublishAt(clock), p) => {
            let t = clock.map_or(trade.timestamp as u64, PathClock::read);
            p.publish_at(trade, t).expect("publish_at")
        }
        (ShmSend::Words, Publisher::Shm(p)) => p.publish_words(&frame).expect("publish_words"),
        #[allow(unreachable_patterns)]
        (ShmSend::Words, _) => panic!("publish_words is for shared-memory topics"),
        (ShmSend::LoanHeld, _) => unreachable!("a held loan is committed by `loan_held`"),
    };
    let receive = move |subscriber: &mut Subscriber| {
        if wait.is_some() {
            subscriber.recv().map(|_| ()).expect("recv");
            return;
        }
        loop {
            match subscriber.try_recv() {
                Ok(_) => return,
                Err(RecvError::Empty) => core::hint::spin_loop(),
                Err(e) => panic!("ping-pong receive: {e}"),
            }
        }
    };
    // Lends and writes the next frame, waits for the answer, then commits
    // (`ShmSend::LoanHeld`).
    let loan_held =
        move |publisher: &mut Publisher, subscriber: &mut Subscriber, trade: &TradeEvent| {
            let loan = publisher.loan::<TradeEvent>().expect("loan").write(trade);
            receive(subscriber);
            loan.commit()
        };
    let (ping_side, echo_side) = (side("ping", "pong"), side("pong", "ping"));
    let (publish_ping, publish_echo) = (publish.clone(), publish);
    let result = run_pair(
        cores,
        rounds,
        move || {
            let (mut publisher, mut subscriber, trade) = ping_side();
            let mut started = false;
            move || {
                if send == ShmSend::LoanHeld {
                    // The frame that starts the exchange: each round then
                    // waits for the answer to the frame committed by the
                    // round before (the last frame is never answered).
                    if !started {
                        started = true;
                        publisher.publish(&trade).expect("publish");
                    }
                    let seq = loan_held(&mut publisher, &mut subscriber, &trade);
                    // Relaxed: read after the threads joined.
                    ping_published.store(seq + 1, Ordering::Relaxed);
                    return;
                }
                let seq = publish_ping(&mut publisher, &trade);
                // Relaxed: as above.
                ping_published.store(seq + 1, Ordering::Relaxed);
                receive(&mut subscriber);
            }
        },
        move || {
            let (mut publisher, mut subscriber, trade) = echo_side();
            move || {
                let seq = if send == ShmSend::LoanHeld {
                    loan_held(&mut publisher, &mut subscriber, &trade)
                } else {
                    receive(&mut subscriber);
                    publish_echo(&mut publisher, &trade)
                };
                // Relaxed: read after the threads joined.
                echo_published.store(seq + 1, Ordering::Relaxed);
            }
        },
    );
    bus.remove_segments();
    // Relaxed: the threads were joined by `run_pair`.
    let frames = [
        ping_published.load(Ordering::Relaxed),
        echo_published.load(Ordering::Relaxed),
    ];
    (result, frames)
}

fn iox_name(namespace: &str, dir: &str) -> ServiceName {
    format!("zerocast-pingpong/{namespace}/{dir}")
        .as_str()
        .try_into()
        .expect("service name")
}

/// Plain iceoryx2 set up as its own `benchmarks/publish-subscribe` does:
/// services `a2b` and `b2a`, 1 publisher and 1 subscriber each, a buffer of
/// 1 with safe overflow, no history, and (one node per participant, as two
/// processes would have) at most 2 nodes. The loop is upstream's: each
/// side holds its next sample loaned (and the trade frame's 160 B written
/// into it) before it waits, so that the round trip holds only `send` and
/// the `receive` poll, as in upstream; the receiver polls `receive` with
/// nothing else in the loop. (`benches/iox-own.sh` checks these figures
/// against the ported upstream benchmark, `examples/iox_own_pubsub.rs`.)
pub fn iox_pingpong(namespace: &str, cores: [usize; 2], rounds: u64) -> OneWay {
    set_log_level(LogLevel::Error);
    let frame = trade_frame();
    let side = |out: &'static str, inn: &'static str| {
        let frame = frame.clone();
        move || {
            let node = NodeBuilder::new()
                .create::<ipc::Service>()
                .expect("iceoryx2 node");
            let service = |dir| {
                node.service_builder(&iox_name(namespace, dir))
                    .publish_subscribe::<[u64]>()
                    .max_publishers(1)
                    .max_subscribers(1)
                    .max_nodes(2)
                    .history_size(0)
                    .subscriber_max_buffer_size(1)
                    .enable_safe_overflow(true)
                    .open_or_create()
                    .expect("iceoryx2 ping-pong service")
            };
            let publisher = service(out)
                .publisher_builder()
                .initial_max_slice_len(frame.len())
                .create()
                .expect("iceoryx2 publisher");
            let subscriber = service(inn)
                .subscriber_builder()
                .create()
                .expect("iceoryx2 subscriber");
            (node, publisher, subscriber, frame)
        }
    };
    // The next sample, loaned and written before the round trip needs it.
    fn loaned(
        publisher: &iceoryx2::port::publisher::Publisher<ipc::Service, [u64], ()>,
        frame: &[u64],
    ) -> iceoryx2::sample_mut::SampleMut<ipc::Service, [u64], ()> {
        publisher
            .loan_slice_uninit(frame.len())
            .expect("loan")
            .write_from_slice(frame)
    }
    let (ping_side, echo_side) = (side("a2b", "b2a"), side("b2a", "a2b"));
    run_pair(
        cores,
        rounds,
        move || {
            let (_node, publisher, subscriber, frame) = ping_side();
            let mut next = Some(loaned(&publisher, &frame));
            move || {
                let _ = &_node;
                // Upstream's participant 1: send, loan the next, then wait.
                next.take().expect("loaned").send().expect("send");
                next = Some(loaned(&publisher, &frame));
                while subscriber.receive().expect("receive").is_none() {}
            }
        },
        move || {
            let (_node, publisher, subscriber, frame) = echo_side();
            move || {
                let _ = &_node;
                // Upstream's participant 2: loan, wait, then send.
                let sample = loaned(&publisher, &frame);
                while subscriber.receive().expect("receive").is_none() {}
                sample.send().expect("send");
            }
        },
    )
}

/// iceoryx2's Listener/Notifier, as its own `benchmarks/event` does: event
/// services `a2b` and `b2a` (1 notifier, 1 listener, at most 2 nodes); each
/// side notifies, then sleeps in `blocking_wait` (no spin) until answered.
pub fn iox_event_pingpong(namespace: &str, cores: [usize; 2], rounds: u64) -> OneWay {
    set_log_level(LogLevel::Error);
    let side = |out: &'static str, inn: &'static str| {
        move || {
            let node = NodeBuilder::new()
                .create::<ipc::Service>()
                .expect("iceoryx2 node");
            let service = |dir| {
                node.service_builder(&iox_name(namespace, &format!("event-{dir}")))
                    .event()
                    .max_notifiers(1)
                    .max_listeners(1)
                    .max_nodes(2)
                    .open_or_create()
                    .expect("iceoryx2 event service")
            };
            let notifier = service(out)
                .notifier_builder()
                .create()
                .expect("iceoryx2 notifier");
            let listener = service(inn)
                .listener_builder()
                .create()
                .expect("iceoryx2 listener");
            (node, notifier, listener)
        }
    };
    let wait = |l: &iceoryx2::port::listener::Listener<ipc::Service>| {
        let mut got = false;
        while !got {
            l.blocking_wait(|_| got = true).expect("blocking_wait");
        }
    };
    let (ping_side, echo_side) = (side("a2b", "b2a"), side("b2a", "a2b"));
    run_pair(
        cores,
        rounds,
        move || {
            let (_node, notifier, listener) = ping_side();
            move || {
                let _ = &_node;
                notifier.notify().expect("notify");
                wait(&listener);
            }
        },
        move || {
            let (_node, notifier, listener) = echo_side();
            move || {
                let _ = &_node;
                wait(&listener);
                notifier.notify().expect("notify");
            }
        },
    )
}

/// Everything above on the two cores, as the harness reports it: the
/// floor, the ping-pong of both transports (with their ratios to the
/// floor), and the wake-ups (with their ratios to the bare futex and to
/// the floor).
pub fn run(namespace: &str, cores: [usize; 2], rounds: Rounds) -> Value {
    eprintln!("floor: one cache line between cores {cores:?}");
    let floor = cache_line_floor(cores, rounds.spin);
    eprintln!("ping-pong shm");
    let shm = shm_pingpong(&format!("{namespace}-pp"), cores, rounds.spin, None);
    eprintln!("ping-pong shm, publish_at (the caller's frame time)");
    let shm_at = shm_pingpong_with(
        &format!("{namespace}-pa"),
        cores,
        rounds.spin,
        None,
        ShmSend::PublishAt(None),
        Producers::Many,
    )
    .0;
    eprintln!("ping-pong shm, iceoryx2's method (loan held across the wait)");
    let shm_loan = shm_pingpong_with(
        &format!("{namespace}-pl"),
        cores,
        rounds.spin,
        None,
        ShmSend::LoanHeld,
        Producers::Many,
    )
    .0;
    eprintln!("ping-pong iox-plain");
    let iox = iox_pingpong(namespace, cores, rounds.spin);
    // The two vCPUs of a small guest sit near or far, and can move between
    // cases: a second floor after the busy-polling cases says whether they
    // ran at the placement the first one measured.
    eprintln!("floor again, after the ping-pongs");
    let floor_after = cache_line_floor(cores, rounds.spin);
    eprintln!("wake: bare futex");
    let (futex, counts) = futex_pingpong_counted(cores, rounds.wake);
    let share = |n: u64| n as f64 / counts.waits.max(1) as f64;
    eprintln!("wake: shm blocking, no spin");
    let shm_block = shm_pingpong(
        &format!("{namespace}-wk"),
        cores,
        rounds.wake,
        Some(WaitStrategy::Blocking { spins: 0 }),
    );
    eprintln!("wake: iceoryx2 event");
    let iox_event = iox_event_pingpong(namespace, cores, rounds.wake);
    let with_floor = |w: &OneWay, extra: Value| {
        let mut v = w.json(Some(("floor", &floor)));
        for (k, x) in extra.as_object().into_iter().flatten() {
            v[k] = x.clone();
        }
        v
    };
    let wake = |transport: &str, does: &str, w: &OneWay| {
        let mut v = with_floor(w, json!({"transport": transport, "wait_does": does}));
        let r = w.json(Some(("futex", &futex)));
        v["p50_x_futex"] = r["p50_x_futex"].clone();
        v["mean_x_futex"] = r["mean_x_futex"].clone();
        v["mean_untimed_x_futex"] = r["mean_untimed_x_futex"].clone();
        v
    };
    let futex_row = {
        let does = format!(
            "bare FUTEX_WAIT / FUTEX_WAKE pair, no spin (the floor for anything that sleeps); {:.0}% of its waits (over all its rounds, the untimed ones too) were woken in FUTEX_WAIT (returned 0: at most that many slept), {:.0}% called FUTEX_WAIT, the rest found the answer already there",
            share(counts.slept) * 100.0,
            share(counts.entered) * 100.0,
        );
        let mut v = wake("futex", &does, &futex);
        v["waits_entering_futex_wait"] = json!(share(counts.entered));
        v["waits_sleeping_until_woken"] = json!(share(counts.slept));
        v
    };
    json!({
        "cores": cores,
        "floor": floor.json(None),
        "floor_after": floor_after.json(None),
        "pingpong": [
            with_floor(&shm, json!({"transport": "shm", "payload_bytes": 160,
                "method": "Publisher::publish(&TradeEvent) -> Subscriber::try_recv busy-poll, each way"})),
            with_floor(&shm_at, json!({"transport": "shm-at", "payload_bytes": 160,
                "method": "Publisher::publish_at(&TradeEvent, t), t the trade's timestamp field (a constant here): no clock read on the publish -> Subscriber::try_recv busy-poll, each way"})),
            with_floor(&shm_loan, json!({"transport": "shm-loan", "payload_bytes": 160,
                "method": "iceoryx2's method for zerocast: next slot lent (Publisher::loan) and the trade's body written into it before the wait, its header and commit after (the pinging side sends one frame first to start); Subscriber::try_recv busy-poll"})),
            with_floor(&iox, json!({"transport": "iox-plain", "payload_bytes": 160,
                "method": "iceoryx2 benchmarks/publish-subscribe: 1 publisher, 1 subscriber, buffer 1, max_nodes 2; next sample loaned and its 160 B written before the wait, as upstream; receive busy-poll"})),
        ],
        "wake": [
            futex_row,
            wake("shm", "zerocast Subscriber::recv, WaitStrategy::Blocking { spins: 0 }: sleeps on the segment's futex at once", &shm_block),
            wake("iox-plain", "iceoryx2 Listener::blocking_wait / Notifier::notify (benchmarks/event), no spin", &iox_event),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a side whose set-up panicked left the other waiting at
    /// a barrier or for an answer forever. Now a side whose set-up fails
    /// (an iceoryx2 service refused, a segment that cannot be created)
    /// fails the case; the other side never starts waiting for an answer
    /// that cannot come.
    #[test]
    fn regression_a_failed_pingpong_setup_hung_the_harness() {
        for echo_fails in [true, false] {
            let result = std::panic::catch_unwind(|| {
                run_pair(
                    two_cores(),
                    10,
                    || {
                        assert!(echo_fails, "ping set-up fails");
                        || {}
                    },
                    || {
                        assert!(!echo_fails, "echo set-up fails");
                        || {}
                    },
                )
            });
            assert!(result.is_err(), "echo fails: {echo_fails}");
        }
        // A core that cannot be pinned to, on either side: pinning was
        // outside the set-up, and its panic left the partner at a barrier.
        for bad in [0, 1] {
            let mut cores = two_cores();
            // Within the CPU set size (1024), above any core of these machines.
            cores[bad] = 1023;
            let result = std::panic::catch_unwind(|| run_pair(cores, 10, || || {}, || || {}));
            assert!(result.is_err(), "core {bad} unpinnable");
        }
    }

    /// Regression: a side that panicked in its loop, after the start,
    /// left its partner waiting for an answer forever (a hung harness, and
    /// a CI run that would only end at its time limit). The process now
    /// exits, naming the side. Run in a child process (this test's own
    /// binary, filtered to it, with `MID_PANIC_ENV` set), which must exit
    /// with [`PANIC_MID_RUN_EXIT`] within a bound instead of hanging.
    #[test]
    fn regression_a_panic_mid_pingpong_left_the_other_side_spinning() {
        const MID_PANIC_ENV: &str = "ZEROCAST_TEST_PINGPONG_MID_PANIC";
        if let Ok(side) = std::env::var(MID_PANIC_ENV) {
            // The child: one side panics at its 5th round; the other spins
            // on a flag that is never set (as a receive loop would).
            let answered = AtomicBool::new(false);
            let answered = &answered;
            let mut n = 0;
            let mut panicking = move || {
                n += 1;
                assert!(n < 5, "a side panics mid-run");
            };
            let spinning = move || {
                // Relaxed: never set; nothing is published with it.
                while !answered.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            };
            if side == "ping" {
                run_pair(two_cores(), 100, || move || panicking(), || spinning);
            } else {
                run_pair(two_cores(), 100, || spinning, || move || panicking());
            }
            unreachable!("the run cannot end");
        }
        for side in ["ping", "echo"] {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                // Not `--nocapture`: the message must get out of a test
                // harness's capture too.
                .args([
                    "--exact",
                    "pingpong::tests::regression_a_panic_mid_pingpong_left_the_other_side_spinning",
                    "--test-threads=1",
                ])
                .env(MID_PANIC_ENV, side)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // Read while it runs: a long stderr (a backtrace) must not
            // block the child on a full pipe.
            let mut stderr = child.stderr.take().unwrap();
            let reader = std::thread::spawn(move || {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
                err
            });
            let deadline = Instant::now() + std::time::Duration::from_secs(60);
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if Instant::now() > deadline {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    panic!("{side}: the ping-pong hung after a side panicked");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            let err = reader.join().unwrap();
            assert_eq!(status.code(), Some(PANIC_MID_RUN_EXIT), "{side}: {err}");
            let who = if side == "ping" { "pinging" } else { "echoing" };
            assert!(
                err.contains(&format!("the {who} side of a ping-pong panicked")),
                "{side}: {err}"
            );
        }
    }

    /// Plain iceoryx2's ping-pong, in upstream's loop shape (each side's
    /// next sample loaned before it waits), neither deadlocks nor runs out
    /// of samples to loan, and counts the round trips asked for.
    #[test]
    fn iox_pingpong_with_loans_held_across_the_wait_counts_its_rounds() {
        let ns = format!("test-{}", std::process::id());
        assert_eq!(iox_pingpong(&ns, two_cores(), 50).rounds, 50);
    }

    /// The wake-up rows' ratio of untimed means to the futex pair's was
    /// never copied into the report: results.md printed 0.00x for every
    /// row. Every row of both tables now carries its untimed ratio.
    #[test]
    fn regression_wake_rows_lacked_the_untimed_ratio() {
        let ns = format!("test-run-{}", std::process::id());
        let report = run(&ns, two_cores(), Rounds { spin: 20, wake: 10 });
        for (table, base) in [("pingpong", "floor"), ("wake", "futex")] {
            let rows = report[table].as_array().expect(table);
            assert!(!rows.is_empty(), "{table}");
            for r in rows {
                let x = r[format!("mean_untimed_x_{base}")].as_f64();
                assert!(x.is_some_and(|x| x > 0.0), "{table}: {r}");
            }
        }
    }

    /// The round trips were timed on the pinging side, after each answer
    /// arrived: the clock read sat inside every round trip (on an AMD EPYC
    /// family 26 guest it doubled the core-to-core floor, 45 ns one-way
    /// against 22-26 untimed, and flattened every multiple of it). The clock
    /// is now read only on the echoing side, after each answer left, once
    /// before the loop and once per round trip.
    #[test]
    fn regression_pingpong_clock_read_inside_the_round_trip() {
        use std::sync::Mutex;
        use std::thread::ThreadId;
        let echo_thread: Mutex<Option<ThreadId>> = Mutex::new(None);
        let ping_thread: Mutex<Option<ThreadId>> = Mutex::new(None);
        let reads: Mutex<Vec<ThreadId>> = Mutex::new(Vec::new());
        let line = Line(AtomicU64::new(0));
        let line = &line.0;
        let w = run_pair_clocked(
            two_cores(),
            20,
            || {
                *ping_thread.lock().unwrap() = Some(std::thread::current().id());
                let mut n = 0;
                move || {
                    n += 2;
                    // Release/Acquire: the two sides' hand-over.
                    line.store(n - 1, Ordering::Release);
                    while line.load(Ordering::Acquire) != n {
                        core::hint::spin_loop();
                    }
                }
            },
            || {
                *echo_thread.lock().unwrap() = Some(std::thread::current().id());
                let mut n = 0;
                move || {
                    n += 2;
                    // Release/Acquire: as above.
                    while line.load(Ordering::Acquire) != n - 1 {
                        core::hint::spin_loop();
                    }
                    line.store(n, Ordering::Release);
                }
            },
            || {
                let mut r = reads.lock().unwrap();
                r.push(std::thread::current().id());
                r.len() as u64
            },
        );
        assert_eq!(w.rounds, 20);
        let reads = reads.into_inner().unwrap();
        let (echo, ping) = (
            echo_thread.into_inner().unwrap(),
            ping_thread.into_inner().unwrap(),
        );
        assert_ne!(echo, ping);
        // 20 timed rounds and 2 of warm-up, a read after each and one
        // before the first; 20 untimed in two halves, a read after each
        // (each half runs from the read that ended the timed one before).
        assert_eq!(reads.len(), 1 + 22 + 2);
        // The fake clock steps by 1 per read: every timed round trip is
        // 1 (0.5 one-way), each untimed half spans 1.
        assert_eq!((w.p50_ns, w.mean_ns), (0.5, 0.5));
        assert_eq!(w.untimed_mean_ns, 2.0 / 20.0 / 2.0);
        assert!(
            reads.iter().all(|t| Some(*t) == echo),
            "a clock read off the echoing side"
        );
    }

    /// iceoryx2's method on the bus: each side holds a written loan across
    /// its wait (the pinging side starts with one frame of its own);
    /// neither side waits for a frame that never comes, on either kind of
    /// topic, and the round trips asked for are counted.
    #[test]
    fn shm_pingpong_with_loans_held_across_the_wait_counts_its_rounds() {
        for producers in [Producers::Many, Producers::Single] {
            let ns = format!("test-loan-{}-{producers:?}", std::process::id());
            let (w, frames) =
                shm_pingpong_with(&ns, two_cores(), 50, None, ShmSend::LoanHeld, producers);
            assert_eq!(w.rounds, 50);
            // 50 rounds, 5 of warm-up and 50 untimed each way, and the
            // pinging side's frame that started the exchange (once, not
            // per round).
            assert_eq!(frames, [106, 105], "{producers:?}");
            let (_, frames) =
                shm_pingpong_with(&ns, two_cores(), 50, None, ShmSend::Publish, producers);
            assert_eq!(frames, [105, 105], "{producers:?}");
        }
    }

    /// The floor and the futex pair run, and count the round trips asked
    /// for (the timings are not checked).
    #[test]
    fn floor_and_futex_pairs_count_their_rounds() {
        assert_eq!(cache_line_floor(two_cores(), 100).rounds, 100);
        assert_eq!(futex_pingpong(two_cores(), 20).rounds, 20);
    }

    /// The futex pair's p50 was printed as "both sides asleep in the
    /// kernel on every round trip" on a CPU (AMD EPYC family 26) where it
    /// was 340 ns, no sleep at all: each side's answer was there before it
    /// got into the kernel. The pair now counts its waits and those that
    /// called FUTEX_WAIT, and the harness prints the share.
    #[test]
    fn regression_futex_pair_counts_waits_that_got_into_the_kernel() {
        let (
            w,
            FutexWaits {
                waits,
                entered,
                slept,
            },
        ) = futex_pingpong_counted(two_cores(), 20);
        assert_eq!(w.rounds, 20);
        // 20 rounds, 2 of warm-up and 20 untimed, one wait per side per
        // round.
        assert_eq!(waits, 2 * 42);
        assert!(
            slept <= entered && entered <= waits,
            "{slept} of {entered} of {waits}"
        );
    }
}
