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
///
/// `parent` is the pid the parent gave the child (in its environment):
/// a parent that died before the child even started is then seen too (the
/// child's parent is no longer that pid), and the child stops at once.
/// Without it, the parent is taken to be the one the child has now.
pub fn leave_interrupt_to_parent(parent: Option<u32>) {
    // SAFETY: setting SIGINT's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    // SAFETY: getppid has no preconditions and cannot fail.
    let parent = parent.map_or_else(|| unsafe { libc::getppid() }, |p| p as libc::pid_t);
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
    // The parent may have died before the prctl: then nobody will stop us.
    // SAFETY: as above.
    if unsafe { libc::getppid() } != parent {
        STOP.store(true, Ordering::Relaxed); // Relaxed: see `on_signal`.
    }
}
