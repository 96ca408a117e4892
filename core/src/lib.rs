//! The `no_std` core of zerocast: frame layouts and the rings that carry them.
//!
//! - [`frame`]: the fixed frame header and the five message bodies, archived
//!   with rkyv 0.8, with validated and unchecked zero-copy access.
//! - [`broadcast`]: many producers, any number of independent consumers,
//!   overwriting, with per-slot seqlocks, exact `Lagged(n)` reporting, optional
//!   gating consumers and a way to declare a dead producer's slot lost.
//! - [`spsc`]: lossless bounded single-producer single-consumer queue.
//! - [`mpmc`]: lossless bounded multi-producer multi-consumer queue.
//!
//! Every ring is generic over its [`storage`]: heap (feature `alloc`), inline
//! (a `static`), or a raw region such as a shared-memory mapping.
//!
//! Needs 64-bit atomics: targets without `AtomicU64` are not supported.
#![no_std]
#![cfg_attr(
    not(test),
    warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)
)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod broadcast;
pub mod frame;
pub mod mpmc;
pub mod spsc;
pub mod storage;
mod sync;

pub use crossbeam_utils::CachePadded;
