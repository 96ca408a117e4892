//! A child process that runs until killed, killed and reaped on every path
//! out of a test, a failed assertion (a panic) included (one copy, included
//! by the tests that spawn such children).
//!
//! Without it a failed assertion between the spawn and the test's own
//! SIGTERM orphans the child: it keeps running after the test, a SIGSTOPped
//! one stays stopped, and one holding the test's stdout or stderr keeps that
//! pipe open for whatever reads it.

use std::ops::{Deref, DerefMut};
use std::process::{Child, Output};

/// Owns a `Child` and, on drop, SIGKILLs it (which ends a stopped process
/// too) and reaps it, ignoring errors. Derefs to the `Child`, so signals,
/// `id()`, `try_wait()` and its pipes are used as before; taken out with
/// `into_inner` (or `wait_with_output`) it is no longer killed.
pub struct ChildGuard(Option<Child>);

#[allow(dead_code)] // each test file uses a part of it
impl ChildGuard {
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    /// The child, no longer killed on drop.
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("the child is present until taken")
    }

    /// `Child::wait_with_output` (the child leaves the guard).
    pub fn wait_with_output(self) -> std::io::Result<Output> {
        self.into_inner().wait_with_output()
    }
}

impl From<Child> for ChildGuard {
    fn from(child: Child) -> Self {
        Self::new(child)
    }
}

impl Deref for ChildGuard {
    type Target = Child;

    fn deref(&self) -> &Child {
        self.0.as_ref().expect("the child is present until taken")
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("the child is present until taken")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // A child already reaped (waited for through the guard) is not
            // signalled again: `kill` then returns without sending.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
