//! Traffic protection. For now: a local, sharded, memory-bounded rate limiter using GCRA.
//!
//! The limiter is sans-IO: callers pass the current time, so tests drive it with exact
//! timestamps and the hot path reads the clock once per request.

pub mod gcra;

pub use gcra::{Decision, Gcra, LocalLimiter};
