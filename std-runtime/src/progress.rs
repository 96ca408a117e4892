//! A status line on stderr for long work (`replay`, `follow` catching up,
//! `pub` of many frames), shown only when stderr is a terminal: piped or
//! redirected, the program writes nothing of it.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the line is redrawn.
const EVERY: Duration = Duration::from_millis(200);
/// Calls to [`Progress::update`] between two looks at the clock.
const CALLS_PER_CLOCK: u32 = 256;

/// One status line, redrawn in place (`\r`) at most every 200 ms and
/// erased when done (or dropped).
#[derive(Debug)]
pub struct Progress {
    on: bool,
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
        let line = text(now.duration_since(self.start).as_secs_f64());
        let mut err = std::io::stderr().lock();
        // A status line: a failed write is not worth stopping for.
        let _ = write!(err, "\r\x1b[K{}: {line}", self.label);
        let _ = err.flush();
        self.shown = true;
    }

    /// Erases the line (before a summary is printed in its place).
    pub fn clear(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.shown = false;
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
