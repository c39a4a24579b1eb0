//! Admission to a cluster: requests in flight to it are counted, and refused at once when the
//! bulkhead (`max_concurrent_requests`) or the adaptive concurrency limit is full, so a slow
//! upstream holds at most that many of the gateway's requests instead of all of them.
//!
//! A request is counted from admission until its response body is done (the slot travels in
//! the [`super::EndpointGuard`]). The adaptive limit learns from each try's time to the
//! response head.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use warden_config::ClusterConfig;
use warden_limits::{Gradient, GradientConfig, RetryBudget};

/// How long the adaptive limit remembers the best latency it saw.
const RTT_WINDOW: Duration = Duration::from_secs(10);

/// A cluster's load: requests and retries in flight, and its concurrency limits.
pub(crate) struct Load {
    in_flight: AtomicUsize,
    retries: AtomicUsize,
    /// The bulkhead; 0: none.
    max: usize,
    adaptive: Option<Mutex<Gradient>>,
    /// The adaptive limit as last computed, read without the lock on admission.
    adaptive_limit: AtomicUsize,
}

/// A request's slot in its cluster, released on drop.
pub(crate) struct Admission(Arc<Load>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A retry's slot in the retry budget, released on drop.
pub(crate) struct RetryToken(Arc<Load>);

impl Drop for RetryToken {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Load {
    pub(crate) fn new(c: &ClusterConfig) -> Self {
        let adaptive = c.adaptive_concurrency.as_ref().map(|a| {
            Gradient::new(GradientConfig {
                initial_limit: a.initial_limit,
                min_limit: a.min_limit,
                max_limit: a.max_limit,
                tolerance: a.tolerance,
                rtt_window: RTT_WINDOW,
            })
        });
        Self {
            in_flight: AtomicUsize::new(0),
            retries: AtomicUsize::new(0),
            max: c.max_concurrent_requests,
            adaptive_limit: AtomicUsize::new(adaptive.as_ref().map_or(usize::MAX, Gradient::limit)),
            adaptive: adaptive.map(Mutex::new),
        }
    }

    /// Counts a request in, or refuses it with the reason (`bulkhead`, `adaptive`).
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Admission, &'static str> {
        // Count first, then check: concurrent requests cannot all slip under the limit.
        let n = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = Admission(self.clone());
        if self.max > 0 && n > self.max {
            return Err("bulkhead");
        }
        if n > self.adaptive_limit.load(Ordering::Acquire) {
            return Err("adaptive");
        }
        Ok(slot)
    }

    /// Requests in flight to the cluster.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Retries in flight to the cluster.
    pub(crate) fn retries(&self) -> usize {
        self.retries.load(Ordering::Acquire)
    }

    /// Takes a slot in the retry budget, if it has room.
    pub(crate) fn try_retry(self: &Arc<Self>, budget: &RetryBudget) -> Option<RetryToken> {
        budget
            .try_acquire(self.in_flight(), &self.retries)
            .then(|| RetryToken(self.clone()))
    }

    /// The adaptive limit, when the cluster has one.
    pub(crate) fn adaptive_limit(&self) -> Option<usize> {
        self.adaptive
            .as_ref()
            .map(|_| self.adaptive_limit.load(Ordering::Acquire))
    }

    /// Feeds one try's latency to the adaptive limit; returns the new limit, if there is one.
    pub(crate) fn sample(&self, now: u64, rtt: Duration) -> Option<usize> {
        let g = self.adaptive.as_ref()?;
        let limit =
            g.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .on_sample(now, rtt, self.in_flight());
        self.adaptive_limit.store(limit, Ordering::Release);
        Some(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(extra: serde_json::Value) -> ClusterConfig {
        let mut c = serde_json::json!({"name": "c", "endpoints": ["http://127.0.0.1:1"]});
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        serde_json::from_value(c).expect("cluster config")
    }

    #[test]
    fn the_bulkhead_admits_exactly_its_size_and_frees_slots_on_drop() {
        let load = Arc::new(Load::new(&cluster(
            serde_json::json!({"max_concurrent_requests": 2}),
        )));
        let a = load.admit().expect("first");
        let b = load.admit().expect("second");
        assert_eq!(load.admit().err(), Some("bulkhead"));
        assert_eq!(load.in_flight(), 2, "the refused one is not counted");
        drop(a);
        let _c = load.admit().expect("room again");
        drop(b);
        assert_eq!(load.in_flight(), 1);
    }

    #[test]
    fn no_bulkhead_admits_everything() {
        let load = Arc::new(Load::new(&cluster(serde_json::json!({}))));
        let slots: Vec<_> = (0..1000).map(|_| load.admit().expect("admitted")).collect();
        assert_eq!(load.in_flight(), 1000);
        assert_eq!(load.adaptive_limit(), None);
        drop(slots);
    }

    #[test]
    fn the_adaptive_limit_refuses_past_it_and_follows_latency() {
        let load = Arc::new(Load::new(&cluster(serde_json::json!({
            "adaptive_concurrency": {"initial_limit": 2, "min_limit": 1, "max_limit": 10}
        }))));
        let a = load.admit().expect("1");
        let b = load.admit().expect("2");
        assert_eq!(load.admit().err(), Some("adaptive"));
        // Fast answers with the limit in use: it grows.
        let mut now = 0;
        for _ in 0..50 {
            now += 1_000_000;
            load.sample(now, Duration::from_millis(5));
        }
        assert!(load.adaptive_limit().unwrap_or(0) > 2);
        let _c = load.admit().expect("room under the grown limit");
        drop((a, b));
    }

    #[test]
    fn retry_tokens_respect_the_budget() {
        let load = Arc::new(Load::new(&cluster(serde_json::json!({}))));
        let budget = RetryBudget::new(50, 1);
        let _reqs: Vec<_> = (0..4).map(|_| load.admit().expect("admitted")).collect();
        let t1 = load.try_retry(&budget).expect("1 of 2");
        let _t2 = load.try_retry(&budget).expect("2 of 2");
        assert!(load.try_retry(&budget).is_none());
        drop(t1);
        assert_eq!(load.retries(), 1);
        assert!(load.try_retry(&budget).is_some());
    }
}
