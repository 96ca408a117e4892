//! The zerocast runtime: the synthetic feed, the demo, and the pieces of the
//! `zerocast` program.

// zenoh's `Query: Send` (declaring the bridge's queryable) takes the trait
// solver past the default depth of 128 on nightly: a warning today that
// rustc says becomes an error (rust-lang/rust#159228).
#![recursion_limit = "256"]

pub mod batch;
#[cfg(feature = "bridge")]
pub mod bridge;
pub mod bridge_records;
pub mod checkpoint_segment;
pub mod demo;
pub mod feed;
pub mod gateway;
pub mod health;
pub mod http;
pub mod print;
pub mod progress;
pub mod recorder;
pub mod reliable;
pub mod resume;
pub mod signal;
pub mod stat;
pub mod wal;
