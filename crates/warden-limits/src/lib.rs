//! Traffic protection: a local, sharded, memory-bounded rate limiter using GCRA, the same GCRA
//! kept in Redis for limits shared by a fleet of gateways, the circuit-breaker state machine
//! for upstream endpoints, retry budgets with back-off, and an adaptive (gradient) concurrency
//! limit.
//!
//! The local limiter, the breaker, the retry budget and the adaptive limit are sans-IO:
//! callers pass the current time (and the random draw for back-off), so tests drive them with
//! exact timestamps and the hot path reads the clock once per request. The Redis store reads Redis'
//! clock, so every gateway sharing a limit uses one clock.

pub mod adaptive;
pub mod breaker;
pub mod gcra;
pub mod redis_limiter;
pub mod redis_store;
mod resp;
pub mod retry;

pub use adaptive::{Gradient, GradientConfig};
pub use breaker::{Breaker, BreakerConfig, BreakerState, Transition};
pub use gcra::{Decision, Gcra, LocalLimiter};
pub use redis_limiter::RedisLimiter;
pub use redis_store::{HealthHook, RedisStore, StoreConfig, StoreError, StoreHealth};
pub use retry::{Backoff, RetryBudget};
