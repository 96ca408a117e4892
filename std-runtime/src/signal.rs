//! Ctrl-C and SIGTERM set a flag that long-running commands poll.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Relaxed: a flag polled by the main loops; no data is published with it.
    STOP.store(true, Ordering::Relaxed);
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Whether a stop was requested.
pub fn stopped() -> bool {
    // Relaxed: see `on_signal`.
    STOP.load(Ordering::Relaxed)
}

/// For a child process that its parent stops (the demo's subscribers):
/// SIGINT is ignored, so that a Ctrl-C in a terminal, which reaches the
/// whole foreground process group, leaves the stopping to the parent (which
/// then collects every child's final report); and SIGTERM comes when the
/// parent dies, so no child outlives it.
pub fn leave_interrupt_to_parent() {
    // SAFETY: setting SIGINT's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    // SAFETY: getppid has no preconditions and cannot fail.
    let parent = unsafe { libc::getppid() };
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
    // The parent may have died before the prctl: then nobody will stop us.
    // SAFETY: as above.
    if unsafe { libc::getppid() } != parent {
        STOP.store(true, Ordering::Relaxed); // Relaxed: see `on_signal`.
    }
}
