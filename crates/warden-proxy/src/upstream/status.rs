//! What the admin listener's `GET /upstreams` shows of a cluster: per endpoint its health,
//! breaker state and load; per cluster its requests in flight and concurrency limits.

use serde_json::{json, Value};
use warden_limits::BreakerState;

use super::{now_nanos, Cluster};

impl Cluster {
    /// The cluster's live state as JSON.
    pub(crate) fn status(&self) -> Value {
        let now = now_nanos();
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .map(|ep| {
                let view = ep.breaker.as_ref().map(|b| b.view());
                let breaker = match view.as_ref().map(|v| v.state) {
                    None | Some(BreakerState::Closed) => json!({"state": "closed"}),
                    Some(BreakerState::Open { until }) => json!({
                        "state": "open",
                        "seconds_left": until.saturating_sub(now) as f64 / 1e9,
                    }),
                    Some(BreakerState::HalfOpen) => json!({"state": "half_open"}),
                };
                json!({
                    "endpoint": ep.label.as_str(),
                    "healthy": ep.is_healthy(),
                    "available": ep.usable(now),
                    "breaker": breaker,
                    "ejections_in_a_row": view.map_or(0, |v| v.ejections_in_a_row),
                    "in_flight": ep.in_flight(),
                })
            })
            .collect();
        json!({
            "name": self.name.as_str(),
            "in_flight": self.load.in_flight(),
            "retries_in_flight": self.load.retries(),
            "max_concurrent_requests": (self.config.max_concurrent_requests > 0)
                .then_some(self.config.max_concurrent_requests),
            "concurrency_limit": self.load.adaptive_limit(),
            "outlier_detection": self.config.outlier_detection.is_some(),
            "ejected": self.cap.ejected(),
            "max_ejected": self.cap.max(),
            "endpoints": endpoints,
        })
    }
}
