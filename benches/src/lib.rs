//! Shared pieces of the zerocast benchmarks.

pub mod durability;

use std::sync::OnceLock;

/// The cores this process may run on, read once before anything is pinned
/// (`core_affinity::get_core_ids` reads the calling thread's mask, which
/// shrinks to one core once that thread is pinned).
pub fn cores() -> &'static [core_affinity::CoreId] {
    static CORES: OnceLock<Vec<core_affinity::CoreId>> = OnceLock::new();
    CORES.get_or_init(|| {
        core_affinity::get_core_ids().expect("cannot read this process's CPU affinity")
    })
}

/// Pins the calling thread to the `index`-th available core (modulo the
/// count). Panics if pinning fails: an unpinned benchmark would silently
/// measure something else.
pub fn pin(index: usize) {
    let cores = cores();
    assert!(!cores.is_empty(), "no cores available to pin to");
    let core = cores[index % cores.len()];
    assert!(
        core_affinity::set_for_current(core),
        "failed to pin thread to core {core:?}"
    );
}
