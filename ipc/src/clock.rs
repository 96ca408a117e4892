//! The frame clock: the publish time stamped into every frame header.
//!
//! A frame's `publish_ns` is `CLOCK_REALTIME` in ns since the Unix epoch,
//! the clock every process on the host shares ([`now_ns`]). Read through
//! the vDSO it costs about half of a publish (27 ns of 59 on the AMD EPYC
//! KVM guest, `loan_interleaved`; the vDSO's `rdtscp` is most of it). So a
//! thread that publishes often, where the kernel keeps time by the TSC,
//! reads only the TSC (`rdtsc`, not serialising: 11 ns there) and advances
//! its last clock reading by the ticks since, as long as that reading is
//! less than [`WINDOW_NS`] old. Per thread:
//!
//! - **Sparse** (the start, and whenever interpolation stops paying):
//!   every frame time is a clock reading, as without this module.
//!   [`DENSE_AFTER`] readings in a row (or more, below) each less than
//!   [`DENSE_INTERVAL_NS`] after the one before make the thread dense
//!   (closer than that, interpolation pays: a clock read between two TSC
//!   reads costs about twice a plain one, an interpolated time a third).
//!   The reading that would turn the thread dense, if it is close, is
//!   taken between two TSC reads (the first before knowing), to anchor;
//!   if it is not close, the TSC read was spent for nothing, and the
//!   thread needs one more close reading next time. A dense spell that
//!   (with an estimate) interpolated less than 1.5 publishes per reading
//!   doubles the need; one that paid sets it back to [`DENSE_AFTER`].
//!   The need is at most [`DENSE_AFTER_MAX`] and halves back once per
//!   [`SCALE_BASELINE_NS`] after it last grew.
//! - **Dense**: a publish within [`WINDOW_NS`] of the anchor's TSC mark is
//!   interpolated; any other reads the clock between two TSC reads, and the
//!   reading becomes the new anchor (at the second TSC read) only if the
//!   two were close together (nothing preempted the thread between them:
//!   within twice the tightest pair seen plus 64 ticks, and at most
//!   [`MAX_BRACKET_TICKS`]; after [`REJECTED_RESET`] rejected in a row, the
//!   tightest of those is expected instead). Anchored after the reading, an
//!   interpolated time is never ahead of the clock by more than the
//!   estimate's error over one window, and behind it by at most the pair's
//!   width (tens of ns).
//! - A dense thread is scored: an interpolated publish adds
//!   [`SCORE_INTERPOLATED`] (up to [`SCORE_MAX`]), a clock read takes
//!   [`SCORE_READING`]; below 0 the thread is sparse again. So a dense
//!   thread interpolates at least 1.5 publishes per reading on average; one
//!   whose publishes are too far apart for that, or whose readings are not
//!   accepted, goes sparse within a few readings.
//! - The ns-per-tick estimate is measured between accepted readings at
//!   least [`SCALE_BASELINE_NS`] apart (its base moves every
//!   [`SCALE_REBASE_NS`], so that it follows a slewed clock), from a TSC of
//!   1 MHz to 8 GHz ([`MAX_TICKS_PER_NS`]), and checked at every accepted
//!   reading against what it predicted; a reading off by more than
//!   [`PREDICTION_SLACK_NS`] plus 0.1% of the time since the anchor turns
//!   interpolation off until it is measured afresh from the next reading.
//!   Within a window an estimate that is off by `e` shifts a time by at
//!   most `e` times 1 us: 0.5 ns under an NTP slew of 500 ppm, 83 ns at
//!   chrony's largest slew (8.3%), until the estimate follows.
//! - Times never go back by less than [`WINDOW_NS`] (a reading a few ns
//!   below an interpolated time is raised to it, and so are the times
//!   interpolated from it until they pass it); a larger step back is the
//!   wall clock's own (an NTP step) and passes through, as it does for
//!   `clock_gettime`. Across threads, as across processes, times are as
//!   far apart as each thread's error.
//!
//! On a request-response path (a frame received, the answer published)
//! a clock read before the publish costs more than its own time: a
//! ping-pong's one-way time went from 60 to 75-85 ns near with an
//! ordered TSC read before each answer (`clock_gettime` through the
//! vDSO, `lfence; rdtsc`, `rdtscp`; a plain `rdtsc` 65), and from 236 to
//! 400-406 ns at the far vCPU placement (a plain `rdtsc` there mostly
//! 481-496, once 296; AMD EPYC family 26 guest, `clock_on_path`). The
//! frame clock, `publish` inside, measured as the ordered reads did,
//! near as far, although near each side was dense and interpolated 82%
//! of its publishes (a scratch count, unstored); why was not found. A
//! thread that has the time passes it with `ShmPublisher::publish_at`.
//!
//! A dense thread pays a second TSC read (11 ns) once per window; a sparse
//! one pays a look at its thread's state (about 4 ns on the AMD guest)
//! over `clock_gettime`, and a TSC read on a reading that would turn it
//! dense if close. `ZEROCAST_FRAME_CLOCK=realtime` in the environment
//! (read once per process) turns interpolation off: every frame time is
//! then a `clock_gettime` reading and no TSC is read; `auto` is the
//! default, and any other value is refused when a publisher is created. The state is the
//! thread's (`Cell`s): a signal handler that published on an interrupted
//! publishing thread could leave it inconsistent (a wrong time, corrected
//! by the next reading's check), never undefined behaviour.
use std::cell::Cell;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::layout::now_ns;

/// How long after a clock reading a dense thread's frame times are
/// interpolated from the TSC.
pub const WINDOW_NS: u64 = 1_000;

/// Readings in a row, each less than [`DENSE_INTERVAL_NS`] after the one
/// before, that make a sparse thread dense: the least a thread needs (a
/// thread whose dense spells did not pay needs more, up to
/// [`DENSE_AFTER_MAX`]).
pub const DENSE_AFTER: u32 = 3;

/// How close consecutive readings must be to count towards [`DENSE_AFTER`].
pub const DENSE_INTERVAL_NS: u64 = WINDOW_NS / 3;

/// A dense thread's score when it turns dense (its turning reading is
/// anchored): enough for one reading before anything is interpolated.
pub const SCORE_START: i32 = 3;

/// The most close readings in a row a thread whose dense spells did not
/// pay needs to turn dense.
pub const DENSE_AFTER_MAX: u32 = 16;

/// What an interpolated publish adds to a dense thread's score.
pub const SCORE_INTERPOLATED: i32 = 2;

/// What a clock read takes from a dense thread's score.
pub const SCORE_READING: i32 = 3;

/// The most a dense thread's score holds.
pub const SCORE_MAX: i32 = 30;

/// Pairs rejected in a row after which the tightest pair expected is
/// measured afresh (the CPU may have slowed for good).
pub const REJECTED_RESET: u32 = 8;

/// The widest pair of TSC reads around a clock reading that may anchor.
pub const MAX_BRACKET_TICKS: u64 = 2_000;

/// The shortest span between two readings that a ns-per-tick estimate is
/// taken over.
pub const SCALE_BASELINE_NS: u64 = 1_000_000;

/// The span after which the estimate's base moves to the latest reading.
pub const SCALE_REBASE_NS: u64 = 1_000_000_000;

/// A reading may differ from the estimate's prediction by this much (plus
/// 0.1% of the time since the anchor) before interpolation is turned off.
pub const PREDICTION_SLACK_NS: u64 = 200;

/// The most TSC ticks per ns an estimate may say (an 8 GHz TSC): with it,
/// a window is at most `8 * WINDOW_NS` ticks.
pub const MAX_TICKS_PER_NS: u64 = 8;

/// The frame time of a publish on this thread: see the module docs.
#[inline(always)]
pub fn frame_ns() -> u64 {
    // A dense thread interpolates, so the process does: the decision is
    // looked at only by a thread that is not.
    #[cfg(target_arch = "x86_64")]
    return CLOCK.with(|c| {
        if c.dense.get() || interpolating() {
            // SAFETY: `rdtsc` exists on every x86_64 CPU and only reads
            // the time-stamp counter.
            c.now(|| unsafe { core::arch::x86_64::_rdtsc() }, now_ns)
        } else {
            now_ns()
        }
    });
    #[cfg(not(target_arch = "x86_64"))]
    now_ns()
}

/// The environment variable that chooses the frame clock: `auto` (the
/// default: interpolate where the clocksource is `tsc`) or `realtime` (a
/// `clock_gettime` reading for every frame).
pub const FRAME_CLOCK_ENV: &str = "ZEROCAST_FRAME_CLOCK";

/// Decides, once per process, whether frame times are interpolated (it
/// reads the clocksource from `/sys`): publishers call it when they are
/// created, so that no publish pays for the file read. Refuses a
/// [`FRAME_CLOCK_ENV`] other than `auto` or `realtime`, naming it (the
/// frame clock then reads `clock_gettime` for every frame, for whoever
/// publishes anyway).
pub fn prepare() -> crate::Result<()> {
    interpolating();
    match std::env::var_os(FRAME_CLOCK_ENV) {
        Some(v) if frame_clock_choice(&v).is_none() => Err(crate::Error::BadSetting {
            var: FRAME_CLOCK_ENV,
            value: v.to_string_lossy().into_owned(),
            expected: "`auto` (interpolate from the TSC where the clocksource is `tsc`) or \
                       `realtime` (read `clock_gettime` for every frame)",
        }),
        _ => Ok(()),
    }
}

/// `Some(true)` to interpolate where possible (`auto`), `Some(false)` for
/// `realtime`, `None` for anything else.
fn frame_clock_choice(v: &OsStr) -> Option<bool> {
    match v.to_str() {
        Some("auto") => Some(true),
        Some("realtime") => Some(false),
        _ => None,
    }
}

thread_local! {
    static CLOCK: Interpolation = const { Interpolation::new() };
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
    let clocksource =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .ok();
    let on = cfg!(target_arch = "x86_64")
        && decide_from(
            std::env::var_os(FRAME_CLOCK_ENV).as_deref(),
            clocksource.as_deref(),
        );
    // The first decision stands (threads deciding together could differ,
    // one of them failing to read `/sys`): a thread that turned dense
    // under it never looks again. Relaxed: see `interpolating`.
    match MODE.compare_exchange(
        0,
        if on { 1 } else { 2 },
        Ordering::Relaxed,
        Ordering::Relaxed,
    ) {
        Ok(_) => on,
        Err(first) => first == 1,
    }
}

/// Whether to interpolate, given `ZEROCAST_FRAME_CLOCK` and the kernel's
/// clocksource: only where the kernel keeps time by the TSC (then it has
/// checked that the TSC runs at a constant rate and agrees across CPUs),
/// and only when the environment says `auto` or nothing (a value it does
/// not know is refused by `prepare`; here it reads the clock).
fn decide_from(env: Option<&OsStr>, clocksource: Option<&str>) -> bool {
    env.is_none_or(|v| frame_clock_choice(v) == Some(true))
        && clocksource.is_some_and(|s| s.trim() == "tsc")
}

/// One thread's interpolation state.
#[derive(Debug)]
pub(crate) struct Interpolation {
    /// Whether the thread reads the TSC.
    dense: Cell<bool>,
    /// A dense thread's score (see the module docs).
    score: Cell<i32>,
    /// A sparse thread's readings in a row each close to the one before,
    /// and how many make it dense (see `turn_sparse`).
    close: Cell<u32>,
    dense_after: Cell<u32>,
    /// Publishes interpolated, and readings taken, since the thread last
    /// turned dense (`interpolated` brought up to date at each reading).
    interpolated: Cell<u32>,
    /// Publishes interpolated since the last reading: the fast path counts
    /// here only, and each reading adds them to `score` and
    /// `interpolated`, which only readings look at.
    pending: Cell<u32>,
    spell_readings: Cell<u32>,
    /// The reading at which `dense_after` was last halved.
    relaxed_ns: Cell<u64>,
    /// Pairs rejected in a row, and the tightest of them.
    rejected: Cell<u32>,
    rejected_min: Cell<u64>,
    /// The TSC read just after the anchor's clock reading, and the reading.
    anchor_tsc: Cell<u64>,
    anchor_ns: Cell<u64>,
    /// The accepted reading the estimate is measured from (0: none yet).
    base_tsc: Cell<u64>,
    base_ns: Cell<u64>,
    /// Estimated ns per tick, 32.32 fixed point; 0 while unknown.
    mult: Cell<u64>,
    /// The reading `mult` was last estimated at.
    estimated_ns: Cell<u64>,
    /// Ticks after the anchor that are interpolated; 0 while `mult` is. A
    /// cache of `(WINDOW_NS << 32) / mult`: the fast path does no division.
    window_ticks: Cell<u64>,
    /// The tightest pair of TSC reads around a reading seen so far.
    min_bracket: Cell<u64>,
    /// The last clock reading, and the last time returned.
    last_reading: Cell<u64>,
    last: Cell<u64>,
    #[cfg(test)]
    skip_prediction: Cell<bool>,
}

impl Interpolation {
    pub(crate) const fn new() -> Self {
        Self {
            dense: Cell::new(false),
            score: Cell::new(0),
            close: Cell::new(0),
            dense_after: Cell::new(DENSE_AFTER),
            interpolated: Cell::new(0),
            pending: Cell::new(0),
            spell_readings: Cell::new(0),
            relaxed_ns: Cell::new(0),
            rejected: Cell::new(0),
            rejected_min: Cell::new(u64::MAX),
            anchor_tsc: Cell::new(0),
            anchor_ns: Cell::new(0),
            base_tsc: Cell::new(0),
            base_ns: Cell::new(0),
            mult: Cell::new(0),
            estimated_ns: Cell::new(0),
            window_ticks: Cell::new(0),
            min_bracket: Cell::new(u64::MAX),
            last_reading: Cell::new(0),
            last: Cell::new(0),
            #[cfg(test)]
            skip_prediction: Cell::new(false),
        }
    }

    /// The frame time now; `tsc` reads the TSC, `real` the clock. The
    /// interpolated path is inlined into every publish and does no more
    /// than it must: a TSC read, the window check, a count, a multiply and
    /// the never-back step. The score and the spell's count are brought
    /// up to date from that count at the next reading (the only place
    /// they are looked at). Readings are out of line.
    #[inline(always)]
    pub(crate) fn now(&self, mut tsc: impl FnMut() -> u64, real: impl FnOnce() -> u64) -> u64 {
        if self.dense.get() {
            let before = tsc();
            let since = before.wrapping_sub(self.anchor_tsc.get());
            if since < self.window_ticks.get() {
                // Counted since the last reading: publishes inside one
                // window of a TSC that moves on, a few thousand at most (a
                // TSC stopped for 2^32 publishes would wrap it: a wrong
                // score, never a wrong time).
                self.pending.set(self.pending.get().wrapping_add(1));
                // `since * mult < WINDOW_NS << 32` by the choice of
                // `window_ticks`: no overflow; nor in the sum, a clock
                // reading plus less than `WINDOW_NS`. Never below the last
                // time (a reading raised to it anchors below it; a thread
                // moved to a CPU whose TSC is a little behind), which is
                // at most `WINDOW_NS` above it: as `after_reading`.
                let ns =
                    (self.anchor_ns.get() + ((since * self.mult.get()) >> 32)).max(self.last.get());
                self.last.set(ns);
                return ns;
            }
            return self.dense_reading(before, tsc, real);
        }
        self.sparse_reading(tsc, real)
    }

    /// A dense thread's reading, taken between the TSC read `before` (past
    /// the window) and another.
    #[cold]
    #[inline(never)]
    fn dense_reading(
        &self,
        before: u64,
        mut tsc: impl FnMut() -> u64,
        real: impl FnOnce() -> u64,
    ) -> u64 {
        let ns = real();
        let after = tsc();
        self.settle_pending();
        self.spell_readings
            .set(self.spell_readings.get().saturating_add(1));
        self.score.set(self.score.get() - SCORE_READING);
        if self.score.get() < 0 {
            self.turn_sparse(ns);
        }
        self.take_reading(before, after, ns);
        self.after_reading(ns)
    }

    /// A sparse thread's reading.
    #[inline(never)]
    fn sparse_reading(&self, mut tsc: impl FnMut() -> u64, real: impl FnOnce() -> u64) -> u64 {
        // A reading that would make the thread dense if close is taken
        // between two TSC reads, so that it can anchor: the publishes
        // right after it are interpolated.
        if self.dense_after.get() > DENSE_AFTER
            && self
                .last_reading
                .get()
                .saturating_sub(self.relaxed_ns.get())
                >= SCALE_BASELINE_NS
        {
            self.relaxed_ns.set(self.last_reading.get());
            self.dense_after
                .set((self.dense_after.get() / 2).max(DENSE_AFTER));
        }
        let turning = self.close.get() + 1 >= self.dense_after.get();
        let before = if turning { tsc() } else { 0 };
        let ns = real();
        if ns >= self.last_reading.get() && ns - self.last_reading.get() < DENSE_INTERVAL_NS {
            self.close.set(self.close.get() + 1);
            if turning {
                self.dense.set(true);
                self.score.set(SCORE_START);
                // (`pending` is 0: settled at every dense reading,
                // the one that turned the thread sparse included.)
                self.interpolated.set(0);
                self.spell_readings.set(1);
                let after = tsc();
                self.take_reading(before, after, ns);
                return self.after_reading(ns);
            }
        } else {
            self.close.set(0);
            if turning {
                // The TSC read above was spent on a reading that did
                // not turn the thread: ask for more close readings
                // before spending another.
                self.back_off(ns, self.dense_after.get() + 1);
            }
        }
        self.last_reading.set(ns);
        self.after_reading(ns)
    }

    /// Adds the publishes interpolated since the last reading to the score
    /// (each [`SCORE_INTERPOLATED`], up to [`SCORE_MAX`]: capping once
    /// after adding them all gives what capping after each would, from a
    /// score at most the cap) and to the spell's count.
    #[inline(always)]
    fn settle_pending(&self) {
        let k = self.pending.replace(0);
        let score = i64::from(self.score.get()) + i64::from(SCORE_INTERPOLATED) * i64::from(k);
        self.score.set(score.min(i64::from(SCORE_MAX)) as i32);
        self.interpolated
            .set(self.interpolated.get().saturating_add(k));
    }

    /// Back to sparse. A dense spell that interpolated less than 1.5
    /// publishes per reading it took (the score's own rate) did not pay:
    /// the next one needs twice as many close readings in a row (up to
    /// [`DENSE_AFTER_MAX`]); one that did sets that back to
    /// [`DENSE_AFTER`]. Before an estimate exists nothing can be
    /// interpolated, and such a spell changes nothing.
    #[cold]
    fn turn_sparse(&self, ns: u64) {
        self.dense.set(false);
        self.close.set(0);
        if self.mult.get() == 0 {
            return;
        }
        if 2 * u64::from(self.interpolated.get()) < 3 * u64::from(self.spell_readings.get()) {
            self.back_off(ns, self.dense_after.get() * 2);
        } else {
            self.dense_after.set(DENSE_AFTER);
        }
    }

    /// Raises the close readings a sparse thread needs to turn dense to
    /// `need` (at most [`DENSE_AFTER_MAX`]), at reading `ns`; they halve
    /// back towards [`DENSE_AFTER`] once per [`SCALE_BASELINE_NS`] after they
    /// last grew (checked at sparse readings), so that a thread whose
    /// publishing changes is not kept sparse for good. A spent TSC read
    /// adds one (doubling there would make the need a multiple of a burst's
    /// length that halving lands back on, every ms, for good: a burst of 4
    /// would never turn dense again).
    #[cold]
    fn back_off(&self, ns: u64, need: u32) {
        let need = need.min(DENSE_AFTER_MAX);
        if need > self.dense_after.get() {
            self.dense_after.set(need);
            self.relaxed_ns.set(ns);
        }
    }

    /// Keeps this thread's times from stepping back a little (see the
    /// module docs) and returns the time.
    #[inline(always)]
    fn after_reading(&self, ns: u64) -> u64 {
        let ns = if ns < self.last.get() && self.last.get() - ns <= WINDOW_NS {
            self.last.get()
        } else {
            ns
        };
        self.last.set(ns);
        ns
    }

    /// A clock reading `ns` made between TSC reads `before` and `after`:
    /// anchors there if the pair is tight.
    #[cold]
    #[inline(never)]
    fn take_reading(&self, before: u64, after: u64, ns: u64) {
        self.last_reading.set(ns);
        let bracket = after.wrapping_sub(before);
        self.min_bracket.set(self.min_bracket.get().min(bracket));
        let tight = self.min_bracket.get().saturating_mul(2).saturating_add(64);
        if bracket <= tight.min(MAX_BRACKET_TICKS) {
            self.rejected.set(0);
            self.rejected_min.set(u64::MAX);
            self.reanchor(after, ns);
        } else {
            // Rejected. If every pair is rejected for a while, the tightest
            // one seen may have been a faster CPU's: expect this run's.
            self.rejected.set(self.rejected.get() + 1);
            self.rejected_min.set(self.rejected_min.get().min(bracket));
            if self.rejected.get() >= REJECTED_RESET {
                self.min_bracket.set(self.rejected_min.get());
                self.rejected.set(0);
                self.rejected_min.set(u64::MAX);
            }
        }
    }

    /// An accepted reading `ns` at TSC `tsc`: checks the estimate against
    /// it, anchors there, and measures the estimate.
    fn reanchor(&self, tsc: u64, ns: u64) {
        let agrees = self.mult.get() == 0 || self.predicted(tsc, ns);
        self.anchor_tsc.set(tsc);
        self.anchor_ns.set(ns);
        if !agrees {
            // The estimate, or the TSC, or the clock changed: measure
            // afresh, from the next accepted reading.
            self.mult.set(0);
            self.window_ticks.set(0);
            self.base_ns.set(0);
            return;
        }
        if self.base_ns.get() == 0 || ns < self.base_ns.get() || tsc <= self.base_tsc.get() {
            // The first reading, or the clock or the TSC went back (an NTP
            // step, a CPU whose TSC disagrees): measure from here.
            self.base_tsc.set(tsc);
            self.base_ns.set(ns);
            return;
        }
        let span_ns = ns - self.base_ns.get();
        // Measured over at least the baseline, and at most once per
        // baseline (a division; the prediction check watches the estimate
        // in between).
        if span_ns < SCALE_BASELINE_NS
            || (self.mult.get() != 0
                && ns.saturating_sub(self.estimated_ns.get()) < SCALE_BASELINE_NS)
        {
            return;
        }
        self.estimated_ns.set(ns);
        let ticks = tsc - self.base_tsc.get();
        let mult = ((u128::from(span_ns) << 32) / u128::from(ticks)).min(u128::from(u64::MAX));
        let mult = mult as u64;
        // From 1/8 ns (an 8 GHz TSC) to 1000 ns (1 MHz) per tick: a TSC
        // outside that is not one this estimate should trust.
        if ((1u64 << 32) / MAX_TICKS_PER_NS..=1000 << 32).contains(&mult) {
            self.mult.set(mult);
            self.window_ticks.set((WINDOW_NS << 32) / mult);
        } else {
            self.mult.set(0);
            self.window_ticks.set(0);
        }
        if span_ns >= SCALE_REBASE_NS {
            self.base_tsc.set(tsc);
            self.base_ns.set(ns);
        }
    }

    /// Makes the next prediction check pass whatever it compares (tests
    /// check that they can tell).
    #[cfg(test)]
    fn predictions_off_for_test(&self) {
        self.skip_prediction.set(true);
    }

    /// Whether reading `ns` at `tsc` agrees with the estimate's prediction
    /// from the anchor.
    fn predicted(&self, tsc: u64, ns: u64) -> bool {
        #[cfg(test)]
        if self.skip_prediction.take() {
            return true;
        }
        let Some(since) = tsc.checked_sub(self.anchor_tsc.get()) else {
            return false;
        };
        let advance = (u128::from(since) * u128::from(self.mult.get())) >> 32;
        let predicted = u128::from(self.anchor_ns.get()) + advance;
        let slack = u128::from(PREDICTION_SLACK_NS) + advance / 1000;
        u128::from(ns).abs_diff(predicted) <= slack
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A simulated host: a TSC at `ticks_per_ns` and a realtime clock
    /// running at `rate` (1.0 = exact; an NTP slew is 1 +- 500e-6) from
    /// `epoch`; `t` is true ns since the start.
    struct Host {
        ticks_per_ns: Cell<f64>,
        rate: f64,
        epoch: Cell<u64>,
        t: Cell<f64>,
        tsc_reads: Cell<u64>,
        clock_reads: Cell<u64>,
        /// ns a clock read takes before its reading.
        read_cost: Cell<f64>,
    }

    /// What a call saw: the time returned, and the realtime when the call
    /// began and when it returned.
    #[derive(Debug, Clone, Copy)]
    struct Call {
        ns: u64,
        began: u64,
        returned: u64,
        read_clock: bool,
    }

    impl Host {
        fn new(ticks_per_ns: f64, rate: f64) -> Self {
            Self {
                ticks_per_ns: Cell::new(ticks_per_ns),
                rate,
                epoch: Cell::new(1_750_000_000_000_000_000),
                t: Cell::new(0.0),
                tsc_reads: Cell::new(0),
                clock_reads: Cell::new(0),
                read_cost: Cell::new(8.0),
            }
        }
        fn advance(&self, ns: f64) {
            self.t.set(self.t.get() + ns);
        }
        fn tsc(&self) -> u64 {
            1_000_000 + (self.t.get() * self.ticks_per_ns.get()) as u64
        }
        fn realtime(&self) -> u64 {
            self.epoch.get() + (self.t.get() * self.rate) as u64
        }
        /// 2 ms of publishes 44 ns apart: the thread is dense and has an
        /// estimate.
        fn warm_up(&self, clock: &Interpolation) {
            for _ in 0..50_000 {
                self.call(clock, 0.0);
                self.advance(40.0);
            }
            assert!(clock.dense.get() && clock.mult.get() != 0);
        }

        /// One frame time; `stall` ns pass inside a clock read (between
        /// the TSC read before it and the reading itself: a preemption).
        fn call(&self, clock: &Interpolation, stall: f64) -> Call {
            self.call_stalled(clock, stall, 0.0)
        }

        /// As `call`, with `after` ns passing between the reading and
        /// the end of the clock read too.
        fn call_stalled(&self, clock: &Interpolation, stall: f64, after: f64) -> Call {
            let began = self.realtime();
            let clock_reads = self.clock_reads.get();
            let ns = clock.now(
                || {
                    self.tsc_reads.set(self.tsc_reads.get() + 1);
                    let t = self.tsc();
                    self.advance(4.0);
                    t
                },
                || {
                    self.clock_reads.set(self.clock_reads.get() + 1);
                    self.advance(stall + self.read_cost.get());
                    let ns = self.realtime();
                    self.advance(2.0 + after);
                    ns
                },
            );
            Call {
                ns,
                began,
                returned: self.realtime(),
                read_clock: self.clock_reads.get() != clock_reads,
            }
        }
    }

    /// How far `call`'s time lies outside the realtime span of the call:
    /// (ahead of its end, behind its start), in ns.
    fn outside(call: Call) -> (u64, u64) {
        (
            call.ns.saturating_sub(call.returned),
            call.began.saturating_sub(call.ns),
        )
    }

    #[test]
    fn a_dense_publisher_reads_the_clock_about_once_per_window_and_stays_within_a_few_ns() {
        for ticks_per_ns in [1.0, 2.246, 3.0, 4.7] {
            for rate in [1.0, 1.0 + 500e-6, 1.0 - 500e-6] {
                let host = Host::new(ticks_per_ns, rate);
                let clock = Interpolation::new();
                let (mut ahead, mut behind) = (0, 0);
                let n = 200_000u64;
                let mut reads_after_warmup = 0;
                for i in 0..n {
                    if i > n / 4 {
                        assert!(clock.dense.get(), "a dense thread went sparse");
                    }
                    let c = host.call(&clock, 0.0);
                    if i > n / 2 {
                        reads_after_warmup += u64::from(c.read_clock);
                        let (a, b) = outside(c);
                        ahead = ahead.max(a);
                        behind = behind.max(b);
                    }
                    host.advance(30.0);
                }
                assert!(clock.dense.get() && clock.mult.get() != 0);
                // 100,000 publishes 34 ns apart (3.4 ms): one reading per
                // 1 us window, about 29 publishes.
                assert!(
                    reads_after_warmup <= n / 2 / 25,
                    "{reads_after_warmup} readings of {}",
                    n / 2
                );
                // Behind by the 2 ns between the reading and the TSC read
                // after it (and a tick's rounding, and 500 ppm of 1 us).
                assert!(
                    ahead <= 1 && behind <= 5,
                    "off by +{ahead}/-{behind} ns ({ticks_per_ns} ticks/ns, rate {rate})"
                );
            }
        }
    }

    #[test]
    fn no_time_is_interpolated_before_a_scale_is_measured() {
        let host = Host::new(3.0, 1.0);
        let clock = Interpolation::new();
        for _ in 0..10_000 {
            assert!(host.call(&clock, 0.0).read_clock);
            host.advance(50.0);
        }
        assert_eq!(clock.mult.get(), 0, "0.6 ms: below the 1 ms baseline");
    }

    #[test]
    fn a_sparse_publisher_reads_no_tsc() {
        for gap in [1_500.0, 10_000.0, 1e6] {
            let host = Host::new(3.0, 1.0);
            let clock = Interpolation::new();
            // Dense first (an estimate is measured), then sparse.
            host.warm_up(&clock);
            for _ in 0..=SCORE_MAX / SCORE_READING {
                host.advance(gap);
                assert!(host.call(&clock, 0.0).read_clock);
            }
            assert!(!clock.dense.get(), "sparse once its score ran out");
            let tsc_reads = host.tsc_reads.get();
            for _ in 0..1_000 {
                host.advance(gap);
                let c = host.call(&clock, 0.0);
                assert!(c.read_clock);
                assert_eq!(c.ns, host.realtime() - 2, "the reading itself");
            }
            assert_eq!(host.tsc_reads.get(), tsc_reads, "no TSC read while sparse");
            // Publishes close together: dense again after DENSE_AFTER close
            // readings, and interpolated from the next window on.
            host.advance(gap);
            for _ in 0..=DENSE_AFTER {
                assert!(!clock.dense.get());
                host.call(&clock, 0.0);
                host.advance(100.0);
            }
            assert!(clock.dense.get());
            // The turning reading anchored: the next publish is interpolated.
            let c = host.call(&clock, 0.0);
            assert!(!c.read_clock, "interpolated");
            let (ahead, behind) = outside(c);
            assert!(ahead == 0 && behind <= 3, "{c:?}");
        }
    }

    #[test]
    fn stalls_inside_a_clock_read_never_put_a_time_outside_its_call_by_more_than_the_pair() {
        // Stalls of every size between the TSC read and the clock reading,
        // among dense publishes: a reading that came late is not anchored.
        let host = Host::new(2.246, 1.0);
        let clock = Interpolation::new();
        let (mut ahead, mut behind) = (0, 0);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..400_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let stall = if i % 97 == 0 {
                [100.0, 300.0, 900.0, 2_000.0, 50_000.0, 3e6][(x % 6) as usize]
            } else {
                0.0
            };
            // Before the reading, or after it (then the reading is old by
            // the time the TSC is read again).
            let c = if x & 64 == 0 {
                host.call_stalled(&clock, stall, 0.0)
            } else {
                host.call_stalled(&clock, 0.0, stall)
            };
            if i > 1_000 {
                let (a, b) = outside(c);
                ahead = ahead.max(a);
                behind = behind.max(b);
            }
            host.advance(30.0);
        }
        // An accepted pair is at most 2 * 14 + 64 ticks wide here (41 ns).
        assert!(ahead <= 1 && behind <= 45, "off by +{ahead}/-{behind} ns");
    }

    #[test]
    fn a_first_reading_that_came_late_is_not_measured_from() {
        for stall in [1_600.0, 6_500.0, 3e6] {
            let host = Host::new(1.0, 1.0);
            let clock = Interpolation::new();
            host.call(&clock, 0.0);
            host.advance(100.0);
            host.call(&clock, stall);
            let (mut ahead, mut behind) = (0, 0);
            for _ in 0..100_000 {
                let (a, b) = outside(host.call(&clock, 0.0));
                ahead = ahead.max(a);
                behind = behind.max(b);
                host.advance(40.0);
            }
            assert_ne!(clock.mult.get(), 0);
            assert!(
                ahead <= 1 && behind <= 3,
                "off by +{ahead}/-{behind} ns after a {stall} ns stall"
            );
        }
    }

    #[test]
    fn a_tsc_rate_change_is_caught_by_the_prediction() {
        // The TSC keeps counting but at another rate (a migration to a host
        // whose TSC runs differently): no jump for `checked_sub` to catch;
        // only the prediction notices.
        for check in [true, false] {
            let host = Host::new(3.0, 1.0);
            let clock = Interpolation::new();
            host.warm_up(&clock);
            // Continue the TSC from where it is, at half the rate, with the
            // clock running on as it did: move the simulation's origin so
            // that both readings stay where they are.
            let (t, tsc_now, real_now) = (host.t.get(), host.tsc(), host.realtime());
            host.ticks_per_ns.set(1.5);
            let t2 = (tsc_now - 1_000_000) as f64 / 1.5;
            host.t.set(t2);
            host.epoch.set(real_now - (t2 * host.rate) as u64);
            assert!(host.tsc().abs_diff(tsc_now) <= 1 && host.realtime().abs_diff(real_now) <= 1);
            assert!(t2 > t);
            let mut off = 0;
            for _ in 0..100_000 {
                if !check {
                    // A clock whose predictions always pass: every reading
                    // agrees with the old estimate.
                    clock.predictions_off_for_test();
                }
                let (ahead, behind) = outside(host.call(&clock, 0.0));
                if ahead > 100 || behind > 100 {
                    off += 1;
                }
                host.advance(40.0);
            }
            if check {
                assert!(off < 100, "{off} times off by more than 100 ns");
            } else {
                assert!(off > 10_000, "the test cannot tell: {off}");
            }
        }
    }

    #[test]
    fn a_tsc_outside_1_mhz_to_8_ghz_is_never_interpolated() {
        for ticks_per_ns in [10.0, 0.000_5] {
            let host = Host::new(ticks_per_ns, 1.0);
            let clock = Interpolation::new();
            for _ in 0..100_000 {
                assert!(host.call(&clock, 0.0).read_clock);
                host.advance(40.0);
            }
            assert_eq!(clock.mult.get(), 0);
        }
    }

    #[test]
    fn times_never_step_back_a_little_but_follow_a_clock_step() {
        let clock = Interpolation::new();
        let reading = |tsc: u64, ns: u64, clock: &Interpolation| {
            let mut t = [tsc, tsc].into_iter();
            clock.now(|| t.next().unwrap(), || ns)
        };
        // Readings 1 ns apart make the thread dense (the last, at TSC 1,000,
        // anchors); two readings with no estimate yet make it sparse again
        // (with no estimate, a spell that interpolated nothing changes
        // nothing: DENSE_AFTER close readings turn it dense again).
        for i in 0..=u64::from(DENSE_AFTER) {
            assert_eq!(reading(1_000, 10_000_000 + i, &clock), 10_000_000 + i);
        }
        assert!(clock.dense.get());
        reading(2_000, 10_000_004, &clock);
        reading(2_500, 10_000_005, &clock);
        assert!(!clock.dense.get());
        assert_eq!(clock.dense_after.get(), DENSE_AFTER);
        // Dense again 2 ms and 4M ticks later: 0.5 ns per tick.
        for i in 0..=u64::from(DENSE_AFTER) {
            assert!(!clock.dense.get());
            let ns = 12_000_003 + i - u64::from(DENSE_AFTER);
            assert_eq!(reading(4_001_000, ns, &clock), ns);
        }
        assert!(clock.dense.get());
        assert_eq!(clock.mult.get(), 1 << 31, "0.5 ns per tick");
        assert_eq!(clock.window_ticks.get(), 2_000);
        // Interpolated: 100 ticks later is 50 ns later.
        assert_eq!(clock.now(|| 4_001_100, || unreachable!()), 12_000_053);
        // More publishes through the window fill the score (readings
        // below take from it).
        for tick in (4_001_200..4_003_000).step_by(100) {
            let ns = 12_000_003 + (tick - 4_001_000) / 2;
            assert_eq!(clock.now(|| tick, || unreachable!()), ns);
        }
        // The window's last tick: 999 ns after the anchor.
        assert_eq!(clock.now(|| 4_002_999, || unreachable!()), 12_001_002);
        // Past the window, a reading 4 ns below the last time (within the
        // prediction's slack) is raised to it, and the estimate is kept.
        assert_eq!(reading(4_003_001, 12_000_998, &clock), 12_001_002);
        assert_ne!(clock.mult.get(), 0, "still interpolating");
        // It anchors (the estimate agreed): the times interpolated from it
        // are raised to the last time until they pass it.
        assert_eq!(clock.now(|| 4_003_005, || unreachable!()), 12_001_002);
        assert_eq!(clock.now(|| 4_003_020, || unreachable!()), 12_001_007);
        // Review of the lean fast path: a TSC a little behind (a thread
        // moved to another CPU) stepped a time back inside a window.
        assert_eq!(clock.now(|| 4_003_012, || unreachable!()), 12_001_007);
        // A wall-clock step back of a second passes through.
        assert_eq!(reading(4_007_100, 11_000_000, &clock), 11_000_000);
    }

    #[test]
    fn a_tsc_that_goes_back_reads_the_clock() {
        let host = Host::new(3.0, 1.0);
        let clock = Interpolation::new();
        host.warm_up(&clock);
        let mut read = false;
        let back = clock.anchor_tsc.get() - 10;
        clock.now(
            || back,
            || {
                read = true;
                host.realtime()
            },
        );
        assert!(read);
    }

    #[test]
    fn a_thread_whose_publishes_are_too_far_apart_for_interpolation_to_pay_reads_no_tsc() {
        // Every 600 ns (a dense thread would read the clock for every other
        // publish: dearer than plain reads), and 1.1 us apart with a close
        // pair now and then: never dense.
        for pattern in [&[600.0][..], &[1_100.0, 1_150.0, 1_200.0, 100.0, 1_150.0]] {
            let host = Host::new(3.0, 1.0);
            let clock = Interpolation::new();
            for i in 0..200_000 {
                assert!(host.call(&clock, 0.0).read_clock);
                host.advance(pattern[i % pattern.len()]);
            }
            assert!(!clock.dense.get());
            assert_eq!(host.tsc_reads.get(), 0, "{pattern:?}");
        }
    }

    #[test]
    fn a_dense_thread_that_slows_down_goes_sparse_within_a_few_readings() {
        let host = Host::new(3.0, 1.0);
        let clock = Interpolation::new();
        host.warm_up(&clock);
        let tsc_reads = host.tsc_reads.get();
        for _ in 0..100_000 {
            host.call(&clock, 0.0);
            host.advance(600.0);
        }
        assert!(!clock.dense.get());
        // A full score (30) drains by 1 per reading and interpolated
        // publish pair (3 TSC reads): at most 90 TSC reads.
        let spent = host.tsc_reads.get() - tsc_reads;
        assert!(spent <= 90, "{spent} TSC reads after slowing down");
    }

    /// Publishes in bursts of 4, 100 ns apart, the next burst 1.1 us after
    /// the last, with `gaps` isolated publishes 1.1 us apart between, for
    /// 20,000 bursts: TSC reads and clock readings per burst (with its
    /// isolated publishes), and whether the thread ends dense.
    fn bursts(gaps: usize) -> (f64, f64, bool) {
        let host = Host::new(3.0, 1.0);
        let clock = Interpolation::new();
        burst_cycles(&host, &clock, 4, gaps, 20_000)
    }

    fn burst_cycles(
        host: &Host,
        clock: &Interpolation,
        size: usize,
        gaps: usize,
        cycles: u64,
    ) -> (f64, f64, bool) {
        let (tsc_reads, clock_reads) = (host.tsc_reads.get(), host.clock_reads.get());
        for _ in 0..cycles {
            for i in 0..size + gaps {
                host.call(clock, 0.0);
                host.advance(if i + 1 < size { 100.0 } else { 1_100.0 });
            }
        }
        let per = |n: u64| n as f64 / cycles as f64;
        (
            per(host.tsc_reads.get() - tsc_reads),
            per(host.clock_reads.get() - clock_reads),
            clock.dense.get(),
        )
    }

    #[test]
    fn bursts_one_short_of_turning_dense_stop_paying_for_a_tsc_read() {
        // Bursts of 3: the reading after the burst's third would turn the
        // thread dense if it were close, so it is taken after a TSC read;
        // it never is close, and the thread stops taking that read.
        for (size, gaps) in [(3, 1), (3, 3), (6, 3)] {
            let host = Host::new(3.0, 1.0);
            let clock = Interpolation::new();
            burst_cycles(&host, &clock, 4, 0, 2_000); // an estimate first
            let (tsc, _, _) = burst_cycles(&host, &clock, size, gaps, 20_000);
            assert!(tsc <= 0.1, "{tsc} TSC reads per burst of {size} + {gaps}");
        }
    }

    #[test]
    fn short_dense_spells_that_read_more_than_they_interpolate_back_off() {
        // 8 close publishes then 4 isolated ones (a spell: the turning
        // reading, 4 interpolated, 4 readings), and a thread alternating
        // 500 and 600 ns: each dense spell interpolates a few publishes
        // but takes more readings; they must not repeat every cycle.
        let host = Host::new(3.0, 1.0);
        let clock = Interpolation::new();
        burst_cycles(&host, &clock, 4, 0, 2_000);
        let mut turns = 0;
        for _ in 0..20_000 {
            for i in 0..12 {
                let was = clock.dense.get();
                host.call(&clock, 0.0);
                host.advance(if i < 7 { 100.0 } else { 1_100.0 });
                turns += u32::from(was != clock.dense.get());
            }
        }
        assert!(turns <= 400, "{turns} turns in 20,000 bursts of 8 + 4");
        host.warm_up(&clock);
        let tsc_reads = host.tsc_reads.get();
        for i in 0..100_000 {
            host.call(&clock, 0.0);
            host.advance(if i % 2 == 0 { 500.0 } else { 600.0 });
        }
        let per = (host.tsc_reads.get() - tsc_reads) as f64 / 100_000.0;
        assert!(per <= 0.1, "{per} TSC reads per publish at 500/600 ns");
    }

    #[test]
    fn a_dense_spell_that_paid_sets_the_need_back_at_once() {
        let host = Host::new(3.0, 1.0);
        let clock = Interpolation::new();
        burst_cycles(&host, &clock, 4, 0, 2_000);
        burst_cycles(&host, &clock, 4, 3, 200);
        assert!(clock.dense_after.get() > DENSE_AFTER);
        // Back to back until dense, then isolated publishes until sparse
        // again, all within well under a ms (no halving on the way).
        while !clock.dense.get() {
            host.call(&clock, 0.0);
            host.advance(30.0);
        }
        for _ in 0..100 {
            host.call(&clock, 0.0);
            host.advance(30.0);
        }
        while clock.dense.get() {
            host.call(&clock, 0.0);
            host.advance(1_100.0);
        }
        assert_eq!(clock.dense_after.get(), DENSE_AFTER);
    }

    /// Bursts of 3 (a TSC read spent on the reading after each) doubled
    /// the need to 6; halving once per ms brought it back to exactly 6
    /// for bursts of 6 (5 close readings: the 6th, the next burst's first,
    /// is never close), whose spent read doubled it again: bursts of 6 one
    /// gap apart stayed sparse for good.
    #[test]
    fn regression_a_need_doubled_by_spent_reads_kept_bursts_of_its_length_sparse() {
        let host = Host::new(3.0, 1.0);
        let clock = Interpolation::new();
        burst_cycles(&host, &clock, 4, 0, 2_000); // an estimate first
        burst_cycles(&host, &clock, 3, 1, 2_000);
        burst_cycles(&host, &clock, 6, 0, 5_000);
        let (_, clock_reads, dense) = burst_cycles(&host, &clock, 6, 0, 5_000);
        assert!(dense);
        assert!(
            clock_reads <= 1.05,
            "{clock_reads} clock readings per burst of 6"
        );
        // At the largest need too: a spent read there must not hold off
        // its halving.
        clock.dense_after.set(DENSE_AFTER_MAX);
        clock.relaxed_ns.set(clock.last_reading.get());
        clock.dense.set(false);
        burst_cycles(&host, &clock, 16, 0, 2_000);
        let (_, clock_reads, dense) = burst_cycles(&host, &clock, 16, 0, 2_000);
        assert!(dense);
        // 16 publishes 100 ns apart span 1.5 us: two windows, two readings.
        assert!(
            clock_reads <= 2.05,
            "{clock_reads} clock readings per burst of 16"
        );
    }

    #[test]
    fn a_thread_kept_sparse_by_wasted_dense_spells_turns_dense_when_its_bursts_close_up() {
        let host = Host::new(3.0, 1.0);
        let clock = Interpolation::new();
        let (_, _, dense) = burst_cycles(&host, &clock, 4, 3, 5_000);
        assert!(!dense);
        assert!(clock.dense_after.get() > DENSE_AFTER);
        // Now bursts follow one another: within a few ms the need relaxes
        // and the thread interpolates again.
        burst_cycles(&host, &clock, 4, 0, 5_000);
        let (_, clock_reads, dense) = burst_cycles(&host, &clock, 4, 0, 5_000);
        assert!(dense);
        assert!(
            clock_reads <= 1.01,
            "{clock_reads} clock readings per 4 publishes"
        );
    }

    #[test]
    fn bursts_one_gap_apart_stay_dense_and_interpolate() {
        // A burst's first publish reads the clock (and anchors), its next
        // three are interpolated.
        let host = Host::new(3.0, 1.0);
        let clock = Interpolation::new();
        let (tsc, clock_reads, dense) = burst_cycles(&host, &clock, 4, 0, 20_000);
        assert!(dense);
        assert_eq!(clock.dense_after.get(), DENSE_AFTER, "spells that paid");
        // (The first ms, before an estimate, reads the clock for most.)
        assert!(
            clock_reads <= 1.15,
            "{clock_reads} clock readings per 4 publishes"
        );
        assert!(tsc <= 5.5, "{tsc} TSC reads per 4 publishes");
    }

    #[test]
    fn bursts_with_several_gaps_between_stop_turning_the_thread_dense() {
        // A dense spell that ends after the burst interpolated nothing:
        // the thread needs more close readings next time, which a burst of
        // 4 has not (until that need relaxes, once per ms): it stays
        // sparse and reads almost no TSC.
        for gaps in [1, 2, 3, 10] {
            let (tsc, clock_reads, dense) = bursts(gaps);
            assert!(!dense);
            assert!(tsc <= 0.2, "{tsc} TSC reads per burst of 4 + {gaps}");
            assert!((clock_reads - (4 + gaps) as f64).abs() < 0.01);
        }
    }

    #[test]
    fn a_dense_thread_whose_clock_reads_got_slower_interpolates_again() {
        // The tightest pair seen came from a faster CPU (or a lucky read):
        // every later pair is rejected until the expectation is measured
        // afresh; the thread must not stay on the slow path.
        for slower in [3.0, 30.0] {
            let host = Host::new(3.0, 1.0);
            let clock = Interpolation::new();
            host.warm_up(&clock);
            host.read_cost.set(8.0 * slower);
            let mut interpolated = 0;
            let n = 100_000;
            for i in 0..n {
                let c = host.call(&clock, 0.0);
                if i > n / 2 && !c.read_clock {
                    interpolated += 1;
                }
                let (ahead, behind) = outside(c);
                assert!(ahead <= 1 && behind as f64 <= 12.0 + 8.0 * slower, "{c:?}");
                host.advance(40.0);
            }
            assert!(
                interpolated > n / 2 * 9 / 10,
                "{interpolated} of {} interpolated with clock reads {slower}x slower",
                n / 2
            );
        }
    }

    #[test]
    fn a_clock_step_back_before_an_estimate_is_measured_from() {
        let host = Host::new(3.0, 1.0);
        let clock = Interpolation::new();
        for _ in 0..1_000 {
            host.call(&clock, 0.0);
            host.advance(40.0);
        }
        assert!(clock.mult.get() == 0 && clock.base_ns.get() != 0);
        // NTP steps the clock back a second: no overflow, the reading is
        // passed on, and an estimate is measured from after the step.
        host.epoch.set(host.epoch.get() - 1_000_000_000);
        let c = host.call(&clock, 0.0);
        assert!(c.ns <= c.returned && c.returned - c.ns <= 6, "{c:?}");
        host.warm_up(&clock);
        let (ahead, behind) = outside(host.call(&clock, 0.0));
        assert!(ahead <= 1 && behind <= 5);
    }

    #[test]
    fn interpolation_only_on_a_tsc_clocksource_and_unless_the_environment_says_realtime() {
        let realtime = Some(OsStr::new("realtime"));
        assert!(decide_from(None, Some("tsc\n")));
        assert!(decide_from(Some(OsStr::new("auto")), Some("tsc")));
        assert!(!decide_from(realtime, Some("tsc\n")));
        // Unknown values (refused by `prepare`) read the clock.
        assert!(!decide_from(Some(OsStr::new("vdso")), Some("tsc\n")));
        assert!(!decide_from(Some(OsStr::new("tsc")), Some("tsc\n")));
        assert!(!decide_from(None, Some("kvm-clock\n")));
        assert!(!decide_from(None, Some("hpet")));
        assert!(!decide_from(None, None));
    }

    /// `ZEROCAST_FRAME_CLOCK=vdso` (meaning "off") was taken for `auto`:
    /// a value the clock does not know is refused when a publisher is
    /// created, naming the variable and the value.
    #[test]
    fn regression_an_unknown_frame_clock_setting_was_taken_for_auto() {
        if std::env::var_os(FRAME_CLOCK_ENV).is_none_or(|v| v != "1") {
            // Alone in a child process with ZEROCAST_FRAME_CLOCK=1: the
            // setting is read once per process.
            crate::test_child::rerun_alone_with(
                "clock::tests::regression_an_unknown_frame_clock_setting_was_taken_for_auto",
                FRAME_CLOCK_ENV,
            );
            return;
        }
        let err = prepare().unwrap_err().to_string();
        assert!(err.contains("ZEROCAST_FRAME_CLOCK=1"), "{err}");
        assert!(!interpolating(), "an unknown setting reads the clock");
        let path = std::env::temp_dir().join(format!("zc-clock-env-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = std::sync::Arc::new(crate::Segment::create(&path, "t", 64, 24).unwrap());
        let made = crate::ShmPublisher::new(seg, &crate::PublisherOptions::default());
        std::fs::remove_file(&path).unwrap();
        let err = made
            .expect_err("a publisher under an unknown frame clock")
            .to_string();
        assert!(err.contains("ZEROCAST_FRAME_CLOCK=1"), "{err}");
    }

    #[test]
    fn frame_times_stay_between_clock_readings_on_this_host() {
        // Whatever this host's clocksource (interpolated or not), a frame
        // time lies between the clock readings around it, give or take a
        // window (a clock step during the run would break this: rare).
        for _ in 0..200_000 {
            let before = now_ns();
            let ns = frame_ns();
            let after = now_ns();
            assert!(
                ns + WINDOW_NS >= before && ns <= after + WINDOW_NS,
                "frame time {ns} outside [{before}, {after}] by more than {WINDOW_NS} ns"
            );
        }
    }
}
