//! A cluster's retry policy, parsed once from its `[retries]` config: which methods and
//! statuses are retried, the per-try timeout, back-off, budget and body buffer.

use std::time::Duration;

use http::Method;
use warden_config::RetryConfig;
use warden_limits::{Backoff, RetryBudget};

/// What may be retried, and how.
pub(crate) struct RetryPolicy {
    /// Retries after the first try.
    pub(crate) attempts: u32,
    methods: Vec<Method>,
    statuses: Vec<u16>,
    grpc_statuses: Vec<u16>,
    pub(crate) per_try_timeout: Duration,
    backoff: Backoff,
    pub(crate) budget: RetryBudget,
    /// Largest request body kept for re-sending.
    pub(crate) buffer_body_bytes: u64,
}

impl RetryPolicy {
    pub(crate) fn new(c: &RetryConfig) -> Self {
        Self {
            attempts: c.attempts,
            // Typed when the config was read; validation refuses a name that is not a method.
            methods: c
                .methods
                .iter()
                .filter_map(|m| m.value().cloned())
                .collect(),
            statuses: c.statuses.clone(),
            grpc_statuses: c.grpc_statuses.clone(),
            per_try_timeout: c.per_try_timeout.0,
            backoff: Backoff::new(c.backoff_base.0, c.backoff_max.0),
            budget: RetryBudget::new(c.budget_percent, c.min_retries_in_flight),
            buffer_body_bytes: c.buffer_body_bytes.0,
        }
    }

    /// Whether requests with this method may be retried at all.
    pub(crate) fn retries_method(&self, m: &Method) -> bool {
        self.attempts > 0 && self.methods.contains(m)
    }

    /// Whether an upstream answer with this status is retried.
    pub(crate) fn retries_status(&self, status: u16) -> bool {
        self.statuses.contains(&status)
    }

    /// Whether gRPC calls may be retried at all (they are, whatever their method, when some
    /// gRPC status is listed).
    pub(crate) fn retries_grpc(&self) -> bool {
        self.attempts > 0 && !self.grpc_statuses.is_empty()
    }

    /// Whether a gRPC answer is retried: its HTTP status is listed, or the `grpc-status` in
    /// its head (a trailers-only answer) is.
    pub(crate) fn retries_grpc_answer(&self, status: u16, headers: &http::HeaderMap) -> bool {
        self.retries_status(status)
            || crate::grpc::head_status(headers).is_some_and(|s| self.grpc_statuses.contains(&s))
    }

    /// The jittered wait before retry `retry` (0 for the first).
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        self.backoff.delay(retry, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_retry_idempotent_methods_and_gateway_statuses_only() {
        let p = RetryPolicy::new(&RetryConfig::default());
        assert!(p.retries_method(&Method::GET));
        assert!(p.retries_method(&Method::PUT));
        assert!(!p.retries_method(&Method::POST));
        assert!(!p.retries_method(&Method::PATCH));
        assert!(p.retries_status(503));
        assert!(!p.retries_status(500));
        for n in 0..5 {
            assert!(p.backoff(n) <= Duration::from_millis(250));
        }
    }

    #[test]
    fn grpc_calls_are_retried_on_unavailable_only_by_default() {
        let p = RetryPolicy::new(&RetryConfig::default());
        assert!(p.retries_grpc());
        let with = |code: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-status", http::HeaderValue::from_str(code).unwrap());
            h
        };
        assert!(p.retries_grpc_answer(200, &with("14")));
        assert!(!p.retries_grpc_answer(200, &with("13")), "INTERNAL");
        assert!(!p.retries_grpc_answer(200, &with("4")), "DEADLINE_EXCEEDED");
        assert!(!p.retries_grpc_answer(200, &http::HeaderMap::new()));
        assert!(p.retries_grpc_answer(503, &http::HeaderMap::new()));
        let none = RetryPolicy::new(&RetryConfig {
            grpc_statuses: vec![],
            ..RetryConfig::default()
        });
        assert!(!none.retries_grpc());
    }

    #[test]
    fn zero_attempts_retries_nothing() {
        let p = RetryPolicy::new(&RetryConfig {
            attempts: 0,
            ..RetryConfig::default()
        });
        assert!(!p.retries_method(&Method::GET));
    }
}
