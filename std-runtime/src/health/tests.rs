//! Unit tests of the monitor.
