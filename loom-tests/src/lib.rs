//! loom models of the zerocast rings live in `tests/`; this crate has no code.
