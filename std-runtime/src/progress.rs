//! A status line on stderr for long work (`replay`, `follow` catching up,
//! `pub` of many frames), shown only when stderr is a terminal: piped or
//! redirected, the program writes nothing of it. On a terminal that has no
//! escape codes (`TERM=dumb`) it is redrawn with carriage returns and
//! spaces only.
//!
//! Also the program's answer to "may log lines on stderr be coloured":
//! [`stderr_colour`] (a terminal, not `TERM=dumb`, no `NO_COLOR`; see
//! <https://no-color.org>).

use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Whether a terminal described by `term` (the `TERM` variable) takes
/// escape codes: every one but `dumb` (and unset counts as able).
fn escapes_allowed(is_terminal: bool, term: Option<&OsStr>) -> bool {
    is_terminal && term.is_none_or(|t| t != "dumb")
}

/// Whether colour may be used: escape codes allowed and `no_color` (the
/// `NO_COLOR` variable) unset or empty.
fn colour_allowed(is_terminal: bool, term: Option<&OsStr>, no_color: Option<&OsStr>) -> bool {
    escapes_allowed(is_terminal, term) && no_color.is_none_or(OsStr::is_empty)
}

/// Whether log lines on stderr may be coloured: a terminal that takes
/// escape codes, and `NO_COLOR` unset or empty.
pub fn stderr_colour() -> bool {
    colour_allowed(
        std::io::stderr().is_terminal(),
        std::env::var_os("TERM").as_deref(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// How often the line is redrawn.
const EVERY: Duration = Duration::from_millis(200);
/// Calls to [`Progress::update`] between two looks at the clock.
const CALLS_PER_CLOCK: u32 = 256;

/// One status line, redrawn in place (`\r`) at most every 200 ms and
/// erased when done (or dropped).
#[derive(Debug)]
pub struct Progress {
    on: bool,
    /// No escape codes (`TERM=dumb`): redraw by `\r` and spaces.
    plain: bool,
    /// Characters of the line last drawn (what a plain redraw covers).
    drawn: usize,
    label: &'static str,
    start: Instant,
    next: Instant,
    calls: u32,
    shown: bool,
}

impl Progress {
    /// A status line labelled `label`: on when stderr is a terminal.
    pub fn new(label: &'static str) -> Self {
        Self::with(label, std::io::stderr().is_terminal())
    }

    /// A status line that is shown only if `on`.
    pub fn with(label: &'static str, on: bool) -> Self {
        let now = Instant::now();
        Self {
            on,
            plain: std::env::var_os("TERM").is_some_and(|t| t == "dumb"),
            drawn: 0,
            label,
            start: now,
            next: now,
            calls: 0,
            shown: false,
        }
    }

    /// Whether the line is shown at all.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Redraws the line with `text()` (given the seconds since the start)
    /// if it is on and due; cheap enough to call for every frame.
    pub fn update(&mut self, text: impl FnOnce(f64) -> String) {
        if !self.on {
            return;
        }
        self.calls += 1;
        if self.shown && self.calls < CALLS_PER_CLOCK {
            return;
        }
        self.calls = 0;
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + EVERY;
        let line = format!(
            "{}: {}",
            self.label,
            text(now.duration_since(self.start).as_secs_f64())
        );
        let mut err = std::io::stderr().lock();
        // A status line: a failed write is not worth stopping for.
        let _ = if self.plain {
            // Spaces cover what is left of a longer line before.
            let width = line.chars().count();
            let pad = self.drawn.saturating_sub(width);
            self.drawn = width;
            write!(err, "\r{line}{:pad$}", "")
        } else {
            write!(err, "\r\x1b[K{line}")
        };
        let _ = err.flush();
        self.shown = true;
    }

    /// Erases the line (before a summary is printed in its place).
    pub fn clear(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = if self.plain {
                write!(err, "\r{:w$}\r", "", w = self.drawn)
            } else {
                write!(err, "\r\x1b[K")
            };
            let _ = err.flush();
            self.shown = false;
            self.drawn = 0;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review finding (issue 10): the status line and the log's colours
    /// ignored TERM=dumb and NO_COLOR.
    #[test]
    fn regression_escapes_and_colour_follow_term_and_no_color() {
        let s = |v: &'static str| Some(OsStr::new(v));
        assert!(escapes_allowed(true, s("xterm-256color")));
        assert!(escapes_allowed(true, None));
        assert!(!escapes_allowed(true, s("dumb")));
        assert!(!escapes_allowed(false, s("xterm")));
        assert!(colour_allowed(true, s("xterm"), None));
        assert!(colour_allowed(true, s("xterm"), s("")));
        assert!(!colour_allowed(true, s("xterm"), s("1")));
        assert!(!colour_allowed(true, s("dumb"), None));
        assert!(!colour_allowed(false, s("xterm"), None));
    }

    #[test]
    fn off_never_calls_the_text() {
        let mut p = Progress::with("test", false);
        for _ in 0..1000 {
            p.update(|_| unreachable!("a status line that is off is never built"));
        }
        assert!(!p.shown);
    }

    #[test]
    fn on_shows_the_first_update_at_once() {
        let mut p = Progress::with("test", true);
        let mut built = 0;
        p.update(|_| {
            built += 1;
            String::new()
        });
        // Due again only after EVERY: the next calls do not build it.
        for _ in 0..10 {
            p.update(|_| {
                built += 1;
                String::new()
            });
        }
        assert_eq!(built, 1);
        assert!(p.shown);
        p.clear();
        assert!(!p.shown);
    }
}
