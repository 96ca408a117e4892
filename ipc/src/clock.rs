//! The frame clock: the publish time stamped into every frame header.
//!
//! A frame's `publish_ns` is `CLOCK_REALTIME` in ns since the Unix epoch,
//! the clock every process on the host shares ([`now_ns`]). Read through
//! the vDSO it costs about half of a publish (27 ns of 59 on the AMD EPYC
//! KVM guest, `loan_interleaved`; the vDSO's `rdtscp` is most of it). Where
//! the kernel's clocksource is the TSC, a thread that publishes often reads
//! only the TSC (`rdtsc`, not serialising: 11 ns there) and advances its
//! last real reading by the ticks since, as long as that reading is less
//! than [`WINDOW_NS`] old; every other publish reads the clock, and that
//! reading becomes the thread's new anchor. So:
//!
//! - every time is a real `CLOCK_REALTIME` reading made at most about
//!   [`WINDOW_NS`] earlier on the same thread, advanced by the TSC;
//! - between two readings the advance is the ticks since times the thread's
//!   estimate of ns per tick, taken over at least [`SCALE_BASELINE_NS`]
//!   between readings and checked against every later reading: a reading
//!   that disagrees with what the estimate predicted (by more than
//!   [`PREDICTION_SLACK_NS`] plus 0.1% of the time since the anchor: NTP
//!   slews the clock by far less) turns interpolation off until a new
//!   estimate is taken;
//! - the advance is capped at [`WINDOW_NS`], and the window is capped at
//!   [`MAX_TICKS_PER_NS`] ticks per ns, so a wrong estimate can shift a
//!   time by at most a few µs before the next reading corrects it (in
//!   practice the times agree with the clock within a few ns: see the
//!   tests);
//! - per thread, times never go back by less than [`WINDOW_NS`] (a reading
//!   a few ns below an interpolated time is raised to it); a larger step
//!   back is the wall clock's own (an NTP step) and passes through, as it
//!   does for `clock_gettime`.
//!
//! A thread that publishes less often than once per [`WINDOW_NS`] reads the
//! TSC and the clock on every publish: the TSC read (about 11 ns there) is
//! what the interpolation costs it. `ZEROCAST_FRAME_CLOCK=realtime` in the
//! environment (read once per process) turns interpolation off: every frame
//! time is then a `clock_gettime` reading, and no TSC is read.
use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::layout::now_ns;

/// How long after a real clock reading a thread's frame times are
/// interpolated from the TSC.
pub const WINDOW_NS: u64 = 1_000;

/// The shortest span between two readings that a ns-per-tick estimate is
/// taken over.
pub const SCALE_BASELINE_NS: u64 = 1_000_000;

/// The span after which the estimate's base moves to the latest reading,
/// so that the estimate follows a rate that changes (an NTP slew).
pub const SCALE_REBASE_NS: u64 = 1_000_000_000;

/// A reading may differ from the estimate's prediction by this much (plus
/// 0.1% of the time since the anchor) before interpolation is turned off.
pub const PREDICTION_SLACK_NS: u64 = 200;

/// The most TSC ticks per ns the window is ever sized for (an 8 GHz TSC):
/// bounds the window in real time when the estimate is too low.
pub const MAX_TICKS_PER_NS: u64 = 8;

/// The frame time of a publish on this thread: see the module docs.
#[inline(always)]
pub fn frame_ns() -> u64 {
    #[cfg(target_arch = "x86_64")]
    if interpolating() {
        // SAFETY: `rdtsc` exists on every x86_64 CPU and only reads the
        // time-stamp counter.
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        return CLOCK.with(|c| {
            let mut clock = c.get();
            let ns = clock.now(tsc, now_ns);
            c.set(clock);
            ns
        });
    }
    now_ns()
}

/// Decides, once per process, whether frame times are interpolated (it
/// reads the clocksource from `/sys`): publishers call it when they are
/// created, so that no publish pays for the file read.
pub fn prepare() {
    interpolating();
}

thread_local! {
    static CLOCK: Cell<Interpolation> = const { Cell::new(Interpolation::new()) };
}

/// 0: not decided yet; 1: interpolate; 2: read the clock every time.
static MODE: AtomicU8 = AtomicU8::new(0);

/// Whether this process interpolates frame times (decided once).
#[inline(always)]
fn interpolating() -> bool {
    // Relaxed: a cached decision that every thread computes alike.
    match MODE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => decide(),
    }
}

#[cold]
fn decide() -> bool {
    let on = cfg!(target_arch = "x86_64")
        && std::env::var_os("ZEROCAST_FRAME_CLOCK").is_none_or(|v| v != "realtime")
        && clocksource_is_tsc();
    // Relaxed: see `interpolating`.
    MODE.store(if on { 1 } else { 2 }, Ordering::Relaxed);
    on
}

/// Whether the kernel keeps time by the TSC: then it has checked that the
/// TSC runs at a constant rate and agrees across CPUs.
fn clocksource_is_tsc() -> bool {
    std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .is_ok_and(|s| s.trim() == "tsc")
}

/// One thread's interpolation state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interpolation {
    /// The TSC read just before the latest real reading, and that reading.
    anchor_tsc: u64,
    anchor_ns: u64,
    /// The reading the ns-per-tick estimate is measured from.
    base_tsc: u64,
    base_ns: u64,
    /// Estimated ns per tick, 32.32 fixed point; 0 while unknown.
    mult: u64,
    /// The reading `mult` was last estimated at.
    estimated_ns: u64,
    /// Ticks after the anchor that are interpolated; 0 while `mult` is.
    window_ticks: u64,
    /// The last time returned.
    last: u64,
}

impl Interpolation {
    pub(crate) const fn new() -> Self {
        Self {
            anchor_tsc: 0,
            anchor_ns: 0,
            base_tsc: 0,
            base_ns: 0,
            mult: 0,
            estimated_ns: 0,
            window_ticks: 0,
            last: 0,
        }
    }

    /// The frame time for a TSC reading of `tsc`; `real` reads the clock.
    #[inline(always)]
    pub(crate) fn now(&mut self, tsc: u64, real: impl FnOnce() -> u64) -> u64 {
        let since = tsc.wrapping_sub(self.anchor_tsc);
        let ns = if since < self.window_ticks {
            // `since * mult` stays below `(WINDOW_NS + 1) << 32` by the
            // choice of `window_ticks`: no overflow.
            self.anchor_ns + ((since * self.mult) >> 32).min(WINDOW_NS)
        } else {
            let ns = real();
            self.reanchor(tsc, ns);
            ns
        };
        let ns = if ns < self.last && self.last - ns <= WINDOW_NS {
            self.last
        } else {
            ns
        };
        self.last = ns;
        ns
    }

    /// A real reading `ns` made just after the TSC read `tsc`: checks the
    /// estimate against it, updates the estimate, and anchors there.
    #[cold]
    fn reanchor(&mut self, tsc: u64, ns: u64) {
        if self.mult != 0 && !self.predicted(tsc, ns) {
            self.mult = 0;
            self.window_ticks = 0;
            self.base_tsc = tsc;
            self.base_ns = ns;
        }
        self.anchor_tsc = tsc;
        self.anchor_ns = ns;
        if self.base_ns == 0 || ns < self.base_ns || tsc <= self.base_tsc {
            // The first reading, or the clock or the TSC went back (an NTP
            // step, a CPU whose TSC disagrees): measure from here.
            self.base_tsc = tsc;
            self.base_ns = ns;
            return;
        }
        let span_ns = ns - self.base_ns;
        // Measured over at least the baseline, and at most once per
        // baseline (a division; the prediction check above watches the
        // estimate in between).
        if span_ns < SCALE_BASELINE_NS
            || (self.mult != 0 && ns.saturating_sub(self.estimated_ns) < SCALE_BASELINE_NS)
        {
            return;
        }
        self.estimated_ns = ns;
        let ticks = tsc - self.base_tsc;
        let mult = ((u128::from(span_ns) << 32) / u128::from(ticks)).min(u128::from(u64::MAX));
        let mult = mult as u64;
        // Between 1/8 ns (an 8 GHz TSC) and 1000 ns (1 MHz) per tick: a
        // TSC outside that is not one this estimate should trust.
        if ((1u64 << 32) / MAX_TICKS_PER_NS..=1000 << 32).contains(&mult) {
            self.mult = mult;
            self.window_ticks = ((WINDOW_NS << 32) / mult).min(WINDOW_NS * MAX_TICKS_PER_NS);
        } else {
            self.mult = 0;
            self.window_ticks = 0;
        }
        if span_ns >= SCALE_REBASE_NS {
            self.base_tsc = tsc;
            self.base_ns = ns;
        }
    }

    /// Whether reading `ns` at `tsc` agrees with the estimate's prediction
    /// from the anchor.
    fn predicted(&self, tsc: u64, ns: u64) -> bool {
        let Some(since) = tsc.checked_sub(self.anchor_tsc) else {
            return false;
        };
        let advance = (u128::from(since) * u128::from(self.mult)) >> 32;
        let predicted = u128::from(self.anchor_ns) + advance;
        let slack = u128::from(PREDICTION_SLACK_NS) + advance / 1000;
        u128::from(ns).abs_diff(predicted) <= slack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated host: a TSC at `ticks_per_ns` and a realtime clock
    /// running at `rate` (1.0 = exact; an NTP slew is 1 +- 500e-6) from
    /// `epoch`.
    struct Host {
        ticks_per_ns: f64,
        rate: f64,
        epoch: u64,
        /// True ns since start.
        t: f64,
    }

    impl Host {
        fn new(ticks_per_ns: f64, rate: f64) -> Self {
            Self {
                ticks_per_ns,
                rate,
                epoch: 1_750_000_000_000_000_000,
                t: 0.0,
            }
        }
        fn tsc(&self) -> u64 {
            1_000_000 + (self.t * self.ticks_per_ns) as u64
        }
        fn realtime(&self) -> u64 {
            self.epoch + (self.t * self.rate) as u64
        }
        /// One frame time taken now, with `gap_ns` passing between the TSC
        /// read and the clock read (a preemption); returns (time, the
        /// realtime at the TSC read).
        fn frame(&mut self, clock: &mut Interpolation, gap_ns: f64) -> (u64, u64) {
            let tsc = self.tsc();
            let truth = self.realtime();
            let ns = clock.now(tsc, || {
                self.t += gap_ns;
                self.realtime()
            });
            (ns, truth)
        }
    }

    #[test]
    fn no_time_is_interpolated_before_a_scale_is_measured() {
        let mut host = Host::new(3.0, 1.0);
        let mut clock = Interpolation::new();
        let mut reads = 0;
        for _ in 0..100 {
            let tsc = host.tsc();
            let ns = clock.now(tsc, || {
                reads += 1;
                host.realtime()
            });
            assert_eq!(ns, host.realtime());
            host.t += 50.0;
        }
        assert_eq!(reads, 100, "5 us of publishes: below the 1 ms baseline");
    }

    #[test]
    fn a_dense_publisher_reads_the_clock_about_once_per_window_and_stays_within_a_few_ns() {
        for ticks_per_ns in [2.1, 3.0, 3.7] {
            for rate in [1.0, 1.0 + 500e-6, 1.0 - 500e-6] {
                let mut host = Host::new(ticks_per_ns, rate);
                let mut clock = Interpolation::new();
                let mut reads = 0u64;
                let mut worst = 0u64;
                let n = 200_000u64;
                for i in 0..n {
                    let tsc = host.tsc();
                    let truth = host.realtime();
                    let ns = clock.now(tsc, || {
                        if i > n / 2 {
                            reads += 1;
                        }
                        host.realtime()
                    });
                    if i > n / 2 {
                        worst = worst.max(ns.abs_diff(truth));
                    }
                    host.t += 40.0;
                }
                // 8 ms of publishes every 40 ns; in the last 4 ms, about
                // one reading per 1 us window (25 publishes).
                assert!(reads <= n / 2 / 20, "{reads} readings of {}", n / 2);
                assert!(
                    worst <= 3,
                    "off by {worst} ns ({ticks_per_ns} ticks/ns, rate {rate})"
                );
            }
        }
    }

    #[test]
    fn a_sparse_publisher_reads_the_clock_every_time() {
        let mut host = Host::new(3.0, 1.0);
        let mut clock = Interpolation::new();
        let mut reads = 0;
        for _ in 0..10_000 {
            let tsc = host.tsc();
            let ns = clock.now(tsc, || {
                reads += 1;
                host.realtime()
            });
            assert_eq!(ns, host.realtime());
            host.t += 1_500.0;
        }
        assert_eq!(reads, 10_000);
    }

    #[test]
    fn a_preempted_reading_never_shifts_times_by_more_than_the_window() {
        // Preemptions of every size between the TSC read and the clock
        // read, among dense publishes: an anchor whose reading came late.
        let mut host = Host::new(3.0, 1.0);
        let mut clock = Interpolation::new();
        let mut worst = 0u64;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..400_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let gap = if i % 97 == 0 {
                [300.0, 900.0, 2_000.0, 50_000.0, 3e6][(x % 5) as usize]
            } else {
                5.0
            };
            let (ns, truth) = host.frame(&mut clock, gap);
            // A slow-path time is the reading itself (late by the gap, as
            // any clock read then); compare interpolated ones only.
            if ns != host.realtime() {
                worst = worst.max(ns.abs_diff(truth));
            }
            host.t += 30.0;
        }
        assert!(
            worst <= WINDOW_NS + 10,
            "an interpolated time off by {worst} ns"
        );
    }

    #[test]
    fn a_wrong_scale_is_caught_by_the_next_reading_and_interpolation_stops() {
        let mut host = Host::new(3.0, 1.0);
        let mut clock = Interpolation::new();
        for _ in 0..50_000 {
            host.frame(&mut clock, 5.0);
            host.t += 40.0;
        }
        assert_ne!(clock.mult, 0, "estimated after 2 ms");
        // The TSC rate changes under us (a migration to a host with another
        // TSC): the next reading disagrees with the prediction.
        host.ticks_per_ns = 1.5;
        host.t += 2_000.0;
        host.frame(&mut clock, 5.0);
        assert_eq!(clock.mult, 0, "interpolation off after a failed prediction");
        // ... and back on with the new rate once measured.
        let mut worst = 0;
        for i in 0..100_000 {
            let (ns, truth) = host.frame(&mut clock, 5.0);
            if i > 50_000 {
                worst = worst.max(ns.abs_diff(truth));
            }
            host.t += 40.0;
        }
        assert_ne!(clock.mult, 0);
        // Each reading comes 5 ns after its TSC read (the gap above).
        assert!(worst <= 5 + 3, "off by {worst} ns after re-estimating");
    }

    #[test]
    fn times_never_step_back_a_little_but_follow_a_clock_step() {
        let mut clock = Interpolation::new();
        // Two readings 2 ms apart, 4M ticks apart: 0.5 ns per tick.
        assert_eq!(clock.now(1_000, || 10_000_000), 10_000_000);
        assert_eq!(clock.now(4_001_000, || 12_000_000), 12_000_000);
        assert_eq!(clock.mult, 1 << 31, "0.5 ns per tick");
        assert_eq!(clock.window_ticks, 2_000);
        // Interpolated: 100 ticks later is 50 ns later.
        assert_eq!(clock.now(4_001_100, || unreachable!()), 12_000_050);
        // The window's last tick: 999 ns after the anchor.
        assert_eq!(clock.now(4_002_999, || unreachable!()), 12_000_999);
        // Past the window, a reading 4 ns below the last time (the
        // estimate ran a little ahead; within the prediction's slack) is
        // raised to it, and the estimate is kept.
        assert_eq!(clock.now(4_003_001, || 12_000_995), 12_000_999);
        assert_ne!(clock.mult, 0, "still interpolating");
        // A wall-clock step back of a second passes through.
        assert_eq!(clock.now(4_005_100, || 11_000_000), 11_000_000);
    }

    #[test]
    fn a_tsc_that_goes_back_reads_the_clock() {
        let mut clock = Interpolation::new();
        clock.now(1_000, || 10_000_000);
        clock.now(2_001_000, || 12_000_000);
        let mut read = false;
        clock.now(2_000_000, || {
            read = true;
            12_000_100
        });
        assert!(read);
    }

    #[test]
    fn frame_times_stay_between_clock_readings_on_this_host() {
        // Whatever this host's clocksource (interpolated or not), a frame
        // time lies between the clock readings around it, give or take the
        // window (and the cap of a wrong estimate).
        let bound = 3 * WINDOW_NS * MAX_TICKS_PER_NS / 2;
        for _ in 0..200_000 {
            let before = now_ns();
            let ns = frame_ns();
            let after = now_ns();
            assert!(
                ns + bound >= before && ns <= after + bound,
                "frame time {ns} outside [{before}, {after}] by more than {bound} ns"
            );
        }
    }
}
