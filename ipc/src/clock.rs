//! The publish path's clock: `CLOCK_REALTIME` nanoseconds, read from the
//! CPU's time-stamp counter where the kernel itself trusts it.
//!
//! Every frame header carries the time its publish began ([`now_ns`], on
//! `CLOCK_REALTIME`). Through the vDSO that read costs about 27-40 ns on
//! the development guest (AMD EPYC, KVM, clocksource `tsc`): nearly half
//! of a ~60 ns `Publisher::publish(&TradeEvent)`, and the whole gap
//! between it and the raw ring's publish rate. The vDSO itself computes
//! the time from the TSC (`rdtsc`, then a scale and an offset it reads
//! from the kernel's data page under a sequence lock, with an ordering
//! fence); [`FrameClock`] does the same arithmetic with its own scale and
//! offset, kept per publisher, so a publish pays one `rdtsc` (about
//! 15 ns back to back, partly hidden by the surrounding stores), a
//! multiply and a compare.
//!
//! How the result stays the kernel's `CLOCK_REALTIME`:
//!
//! - It is used only where the kernel's own clocksource is `tsc`
//!   (`/sys/devices/system/clocksource/clocksource0/current_clocksource`,
//!   read once per process) on x86-64: there the kernel has checked the
//!   counter is invariant and synchronised across CPUs, and every
//!   `clock_gettime` is itself a scaled TSC reading. Anywhere else (another
//!   clocksource, another architecture, or `ZEROCAST_CLOCK=os` in the
//!   environment) every read is [`now_ns`].
//! - Each clock is *anchored*: a TSC reading paired with `CLOCK_REALTIME`
//!   read between two TSC readings. A reading more than
//!   [`REANCHOR_NS`] (1 ms) past its anchor re-anchors first, so a clock
//!   step (`settimeofday`, an NTP step) is picked up within a millisecond
//!   of publishing, and the scale's error is multiplied by at most 1 ms.
//! - The scale (nanoseconds per tick) is measured, not assumed: at each
//!   anchor it is the ratio of `CLOCK_MONOTONIC` elapsed to ticks elapsed
//!   since this clock's first anchor (monotonic: a realtime step does not
//!   skew it). The counter is used once two estimates, at 1 and 2 ms of
//!   baseline, agree within 1%; until then every read is [`now_ns`]: a new
//!   publisher pays the slow read for its first two milliseconds, never a
//!   calibration spin at start-up.
//! - A scale that moved more than 1% between anchors, or one outside
//!   0.01-100 ns per tick (an anchor read across a preemption, a counter
//!   that jumped) restarts the baseline; after [`MAX_RESTARTS`] restarts,
//!   or on a counter that went backwards (a reading below the anchor: not
//!   synchronised across CPUs after all), this clock reads [`now_ns`] for
//!   good.
//!
//! The error against a `clock_gettime(CLOCK_REALTIME)` made at the same
//! instant is the anchor's bracket (a few tens of ns) plus the scale's
//! error over at most 1 ms (under 0.1 ppm after a second of publishing,
//! that is under 0.1 ns; an NTP frequency slew changes the true scale by
//! at most 500 ppm, 500 ns over 1 ms, and is followed within 1 ms). The
//! tests check every reading against a bracket of two `now_ns` reads.
//!
//! Why not `quanta`: it calibrates the counter against `CLOCK_MONOTONIC`
//! once, with a busy loop of up to 200 ms at start-up, and offers no
//! realtime anchor; frames need `CLOCK_REALTIME`, followed within a
//! millisecond.

use std::sync::OnceLock;

use crate::layout::now_ns;

/// How far past its anchor a reading may be extrapolated.
pub const REANCHOR_NS: u64 = 1_000_000;

/// How long the scale's baseline must be before it is used.
const BASELINE_NS: u64 = 1_000_000;

/// An anchor whose TSC bracket is wider than this many ticks (preempted
/// between the reads) is read again, up to [`ANCHOR_TRIES`] times.
const TIGHT_BRACKET_TICKS: u64 = 20_000;
const ANCHOR_TRIES: u32 = 4;

/// How many times a clock restarts its baseline before it gives up on the
/// counter.
pub const MAX_RESTARTS: u32 = 8;

/// A source of counter ticks: the TSC, or a test's counter.
pub trait Ticks {
    /// The current count.
    fn ticks(&mut self) -> u64;
}

/// The CPU's time-stamp counter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tsc;

impl Ticks for Tsc {
    #[inline(always)]
    fn ticks(&mut self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: `rdtsc` exists on every x86-64 CPU, has no memory
            // effects and no preconditions; it is unordered with the
            // instructions around it, which moves the reading by a few
            // ns at most (the anchor's bracket absorbs the same).
            unsafe { core::arch::x86_64::_rdtsc() }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            // Never reached: `tsc_trusted` is false off x86-64.
            0
        }
    }
}

/// Whether the kernel reads time from the TSC (and so trusts it) and the
/// environment does not ask for the OS clock. Read once per process.
pub fn tsc_trusted() -> bool {
    static TRUSTED: OnceLock<bool> = OnceLock::new();
    *TRUSTED.get_or_init(|| {
        if !cfg!(target_arch = "x86_64") {
            return false;
        }
        if std::env::var_os("ZEROCAST_CLOCK").is_some_and(|v| v == "os") {
            return false;
        }
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .is_ok_and(|s| s.trim() == "tsc")
    })
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How a [`FrameClock`] reads the time now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every read is [`now_ns`]: the TSC is not trusted here, or was
    /// found inconsistent.
    Os,
    /// Anchored, but the scale's baseline is not yet long enough: reads
    /// are [`now_ns`], and re-anchor once [`BASELINE_NS`] has passed.
    Calibrating,
    /// Reads extrapolate from the anchor.
    Counter,
}

/// `CLOCK_REALTIME` nanoseconds from the TSC, anchored and re-anchored to
/// the kernel's clock (see the [module](self) docs). One per publisher:
/// reading needs `&mut self` (a re-anchor updates it), nothing is shared.
#[derive(Debug, Clone)]
pub struct FrameClock<T: Ticks = Tsc> {
    source: T,
    mode: Mode,
    /// The anchor: a tick count and the realtime read with it.
    anchor_ticks: u64,
    anchor_ns: u64,
    /// Past this many ticks after the anchor, re-anchor first.
    limit_ticks: u64,
    /// Nanoseconds per tick, 32.32 fixed point.
    scale: u64,
    /// The scale's baseline: the first anchor's ticks and monotonic time.
    first_ticks: u64,
    first_mono: u64,
    /// While calibrating: the monotonic time of the next estimate.
    check_at_mono: u64,
    /// Re-anchors done (tests and diagnostics).
    anchors: u64,
    /// Baselines restarted after an implausible or unsteady scale.
    restarts: u32,
}

impl Default for FrameClock<Tsc> {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameClock<Tsc> {
    /// A clock on the TSC where the kernel trusts it, else on [`now_ns`].
    pub fn new() -> Self {
        Self::with_source(Tsc, tsc_trusted())
    }
}

impl<T: Ticks> FrameClock<T> {
    /// A clock reading `source`; `trusted` false makes every read
    /// [`now_ns`].
    pub fn with_source(source: T, trusted: bool) -> Self {
        let mut c = FrameClock {
            source,
            mode: if trusted { Mode::Calibrating } else { Mode::Os },
            anchor_ticks: 0,
            anchor_ns: 0,
            limit_ticks: 0,
            scale: 0,
            first_ticks: 0,
            first_mono: 0,
            check_at_mono: 0,
            anchors: 0,
            restarts: 0,
        };
        if c.mode != Mode::Os {
            let (ticks, _, mono) = c.read_anchor();
            c.first_ticks = ticks;
            c.first_mono = mono;
            c.check_at_mono = mono + BASELINE_NS;
            c.anchor_ticks = ticks;
        }
        c
    }

    /// Whether reads extrapolate from the counter (false: [`now_ns`]).
    pub fn on_counter(&self) -> bool {
        self.mode == Mode::Counter
    }

    /// How many times this clock has re-anchored.
    pub fn anchors(&self) -> u64 {
        self.anchors
    }

    /// `CLOCK_REALTIME` nanoseconds now.
    #[inline]
    pub fn now_ns(&mut self) -> u64 {
        if self.mode == Mode::Counter {
            let d = self.source.ticks().wrapping_sub(self.anchor_ticks);
            // A reading below the anchor wraps to a huge `d` and takes the
            // slow path, as one past the limit does.
            if d < self.limit_ticks {
                return self.anchor_ns + ((d as u128 * self.scale as u128) >> 32) as u64;
            }
        } else if self.mode == Mode::Os {
            return now_ns();
        }
        self.slow_now()
    }

    #[cold]
    #[inline(never)]
    fn slow_now(&mut self) -> u64 {
        if self.mode == Mode::Counter {
            let d = self.source.ticks().wrapping_sub(self.anchor_ticks);
            if d > i64::MAX as u64 {
                // The counter went backwards past the anchor: not the
                // synchronised counter the kernel promised.
                self.mode = Mode::Os;
                return now_ns();
            }
        }
        if self.mode == Mode::Calibrating && monotonic_ns() < self.check_at_mono {
            return now_ns();
        }
        self.anchor()
    }

    /// Reads a new anchor and the scale from the baseline; returns the
    /// anchor's realtime. The counter is used once two estimates of the
    /// scale, a baseline apart, agree within 1%, and while every later one
    /// does.
    fn anchor(&mut self) -> u64 {
        let (ticks, real, mono) = self.read_anchor();
        self.anchors += 1;
        let dt = ticks.wrapping_sub(self.first_ticks);
        let dn = mono.saturating_sub(self.first_mono);
        if dt > i64::MAX as u64 {
            // Below the first anchor: as a reading below the anchor.
            self.mode = Mode::Os;
            return real;
        }
        let scale = ((dn as u128) << 32) / dt.max(1) as u128;
        // 0.01 .. 100 ns per tick: a counter between 10 MHz and 100 GHz.
        let plausible = (1u128 << 32) / 100..=(100u128 << 32);
        let steady =
            (scale as i128 - self.scale as i128).unsigned_abs() * 100 <= self.scale as u128;
        if !plausible.contains(&scale) || (self.scale != 0 && !steady) {
            self.restarts += 1;
            if self.restarts > MAX_RESTARTS {
                self.mode = Mode::Os;
            } else {
                // A new baseline from this anchor.
                self.first_ticks = ticks;
                self.first_mono = mono;
                self.scale = 0;
                self.mode = Mode::Calibrating;
                self.check_at_mono = mono + BASELINE_NS;
            }
            return real;
        }
        let first_estimate = self.scale == 0;
        self.scale = scale as u64;
        self.limit_ticks = ((REANCHOR_NS as u128) << 32).div_ceil(scale) as u64;
        self.anchor_ticks = ticks;
        self.anchor_ns = real;
        if first_estimate {
            // A second estimate a baseline later must agree.
            self.check_at_mono = mono + BASELINE_NS;
        } else {
            self.mode = Mode::Counter;
        }
        real
    }

    /// A tick count with the realtime and monotonic time read between two
    /// counter reads: (the bracket's midpoint, realtime, monotonic).
    fn read_anchor(&mut self) -> (u64, u64, u64) {
        let mut best = (0, 0, 0, u64::MAX);
        for _ in 0..ANCHOR_TRIES {
            let t0 = self.source.ticks();
            let real = now_ns();
            let mono = monotonic_ns();
            let t1 = self.source.ticks();
            let width = t1.wrapping_sub(t0);
            if width < best.3 {
                // The two clock reads sit in the middle of the bracket;
                // its midpoint is within half its width of either.
                best = (t0.wrapping_add(width / 2), real, mono, width);
            }
            if width <= TIGHT_BRACKET_TICKS {
                break;
            }
        }
        (best.0, best.1, best.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter a test drives: real TSC-like ticks from the monotonic
    /// clock at a chosen rate, plus an offset the test can move.
    #[derive(Debug)]
    struct Fake {
        ticks_per_ns: f64,
        offset: i64,
    }

    impl Ticks for Fake {
        fn ticks(&mut self) -> u64 {
            ((monotonic_ns() as f64 * self.ticks_per_ns) as i64 + self.offset) as u64
        }
    }

    fn within_bracket<T: Ticks>(c: &mut FrameClock<T>, n: usize) {
        for _ in 0..n {
            let before = now_ns();
            let t = c.now_ns();
            let after = now_ns();
            // Tolerance: the anchor's bracket plus scale error over 1 ms,
            // far under 20 µs; a clock off by its scale or anchor is off
            // by milliseconds or more.
            assert!(
                t + 20_000 >= before && t <= after + 20_000,
                "{t} outside [{before}, {after}] (on counter {})",
                c.on_counter()
            );
        }
    }

    fn spin_ns(ns: u64) {
        let end = monotonic_ns() + ns;
        while monotonic_ns() < end {}
    }

    /// Two baselines' worth of reads: a steady counter is then in use.
    fn settle<T: Ticks>(c: &mut FrameClock<T>) {
        for _ in 0..2 {
            spin_ns(BASELINE_NS + 100_000);
            within_bracket(c, 1);
        }
    }

    #[test]
    fn a_trusted_counter_is_used_after_a_millisecond_and_stays_within_the_kernels_clock() {
        let mut c = FrameClock::with_source(
            Fake {
                ticks_per_ns: 2.9,
                offset: 0,
            },
            true,
        );
        within_bracket(&mut c, 100);
        spin_ns(BASELINE_NS + 100_000);
        within_bracket(&mut c, 10);
        assert!(!c.on_counter(), "one estimate is not trusted yet");
        spin_ns(BASELINE_NS + 100_000);
        within_bracket(&mut c, 10);
        assert!(c.on_counter(), "two estimates agree");
        // Read until two more re-anchors (one per ms of reading), every
        // reading within the kernel's clock; bounded by a second.
        let anchors = c.anchors();
        let give_up = monotonic_ns() + 1_000_000_000;
        while c.anchors() < anchors + 2 && monotonic_ns() < give_up {
            within_bracket(&mut c, 1);
        }
        assert!(c.anchors() >= anchors + 2, "re-anchors: {c:?}");
        assert!(c.on_counter());
    }

    #[test]
    fn a_counter_jump_reanchors_instead_of_extrapolating() {
        // A counter jumping 50 ms ahead (as a long pause between
        // publishes looks) must re-anchor, not extrapolate 50 ms.
        let mut c = FrameClock::with_source(
            Fake {
                ticks_per_ns: 1.0,
                offset: 0,
            },
            true,
        );
        settle(&mut c);
        assert!(c.on_counter());
        let anchors = c.anchors();
        c.source.offset += 50_000_000;
        // The jump re-anchors; over a 1 ms baseline it is an unsteady
        // scale, so the baseline restarts: either way the reading is the
        // kernel's clock, not the extrapolation.
        within_bracket(&mut c, 1);
        assert!(c.anchors() > anchors);
        // And the clock comes back to the counter two baselines later.
        settle(&mut c);
        assert!(c.on_counter());
    }

    #[test]
    fn a_counter_that_keeps_jumping_is_given_up() {
        let mut c = FrameClock::with_source(
            Fake {
                ticks_per_ns: 1.0,
                offset: 0,
            },
            true,
        );
        // Jumps of varying size: no steady rate to be found.
        for i in 0..4 * (MAX_RESTARTS as i64 + 1) {
            spin_ns(BASELINE_NS + 100_000);
            c.source.offset += 1_000_000 + (i % 5) * 7_000_000;
            within_bracket(&mut c, 2);
        }
        assert!(!c.on_counter());
        assert_eq!(c.mode, Mode::Os);
    }

    #[test]
    fn a_counter_that_goes_backwards_falls_back_to_the_os_clock() {
        let mut c = FrameClock::with_source(
            Fake {
                ticks_per_ns: 1.0,
                offset: 0,
            },
            true,
        );
        settle(&mut c);
        assert!(c.on_counter());
        c.source.offset -= 10_000_000;
        within_bracket(&mut c, 10);
        assert!(!c.on_counter(), "a backwards counter is not trusted");
    }

    #[test]
    fn an_untrusted_counter_is_never_read() {
        struct Panics;
        impl Ticks for Panics {
            fn ticks(&mut self) -> u64 {
                panic!("read an untrusted counter")
            }
        }
        let mut c = FrameClock::with_source(Panics, false);
        within_bracket(&mut c, 10);
        assert!(!c.on_counter());
    }

    #[test]
    fn the_tsc_clock_matches_the_kernels_clock_where_it_is_used() {
        let mut c = FrameClock::new();
        within_bracket(&mut c, 100);
        settle(&mut c);
        let end = monotonic_ns() + 3 * REANCHOR_NS;
        while monotonic_ns() < end {
            within_bracket(&mut c, 1);
        }
        assert_eq!(c.on_counter(), tsc_trusted());
    }
}
