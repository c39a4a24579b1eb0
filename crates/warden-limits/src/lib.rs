//! Traffic protection: a local, sharded, memory-bounded rate limiter using GCRA, and the
//! circuit-breaker state machine for upstream endpoints.
//!
//! The limiter is sans-IO: callers pass the current time, so tests drive it with exact
//! timestamps and the hot path reads the clock once per request.

pub mod breaker;
pub mod gcra;

pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use gcra::{Decision, Gcra, LocalLimiter};
