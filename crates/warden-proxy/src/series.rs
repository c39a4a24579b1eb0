//! Keeps `/metrics` in step with the running config, at start and after each reload:
//!
//! - the series of routes, clusters and endpoints a reload removed are removed (a gauge such as
//!   `warden_upstream_endpoint_healthy` would otherwise report a gone endpoint for ever);
//! - every endpoint's health (and, with outlier detection, ejection) gauge is created here
//!   rather than when a cluster is built, so a reload that fails leaves no series behind;
//! - the counters whose label sets are known and bounded are created at 0 (refusal reasons;
//!   per cluster, its refusal reasons and retry results; per endpoint, errors and ejections;
//!   per rate limit, its refusals), so dashboards show 0 rather than "no data" and the first
//!   event is an increase. Statuses are not invented: `warden_requests_total` grows by what
//!   is answered;
//! - `warden_rate_limit_store_up` is exported only while a Redis store is configured;
//! - `warden_listener_info{listener, role}` names each listener's role.
//!
//! A request still in flight on the old snapshot may recreate a removed route's series once;
//! it goes at the next reload that does not have the route either.

use std::collections::HashSet;
use std::sync::Arc;

use warden_telemetry::metrics::{
    ClusterReason, ClusterResult, EndpointLabel, Reason, CLUSTER_REJECT_REASONS, RETRY_RESULTS,
};
use warden_telemetry::Metrics;

use crate::snapshot::Snapshot;

/// Reasons of `warden_rejected_requests_total` counted outside [`crate::refusal`].
const HANDLER_REASONS: &[&str] = &["connection_limit", "in_flight_limit", "ambiguous_framing"];

/// Brings the registry in line with `new`; `old` is the snapshot it replaces, if any.
pub(crate) fn sync(metrics: &Metrics, old: Option<&Snapshot>, new: &Snapshot) {
    if let Some(old) = old {
        forget_removed(metrics, old, new);
    }
    metrics.set_rate_limit_store(new.rate_limit_store.is_some());
    // A reload can change a listener's role (never its name): rebuilt, not patched.
    metrics.listener_info.clear();
    for l in &new.config.listeners {
        metrics
            .listener_info
            .get_or_create(&warden_telemetry::metrics::ListenerRoleLabel {
                listener: Arc::new(l.name.clone()),
                role: l.role.as_str(),
            })
            .set(1);
    }
    for reason in HANDLER_REASONS.iter().chain(crate::refusal::REASONS) {
        let _ = metrics.rejected.get_or_create(&Reason(reason));
    }
    for cluster in new.clusters.values() {
        for reason in CLUSTER_REJECT_REASONS {
            let _ = metrics.upstream_rejected.get_or_create(&ClusterReason {
                cluster: cluster.name.clone(),
                reason,
            });
        }
        if cluster.config.retries.is_some() {
            for result in RETRY_RESULTS {
                let _ = metrics.upstream_retries.get_or_create(&ClusterResult {
                    cluster: cluster.name.clone(),
                    result,
                });
            }
        }
        for ep in &cluster.endpoints {
            // A kept cluster's endpoints keep their state; a new one's start healthy.
            metrics
                .endpoint_healthy
                .get_or_create(ep.metric())
                .set(i64::from(ep.is_healthy()));
            let _ = metrics.upstream_errors.get_or_create(ep.metric());
            let _ = metrics
                .upstream_connections_opened
                .get_or_create(ep.metric());
            let _ = metrics
                .upstream_connections_closed
                .get_or_create(ep.metric());
            if cluster.config.outlier_detection.is_some() {
                let _ = metrics.endpoint_ejected.get_or_create(ep.metric());
                let _ = metrics.upstream_ejections.get_or_create(ep.metric());
            }
        }
    }
    for route in new.router.routes() {
        for limit in route.chain.rate_limits() {
            let buckets = std::iter::once(&limit.base).chain(limit.tiers.iter().map(|(_, b)| b));
            for bucket in buckets {
                let _ =
                    metrics.rate_limited_counter(&route.name, &limit.label, bucket.tier.as_ref());
            }
        }
    }
}

/// Removes the series of what `old` had and `new` has not.
fn forget_removed(metrics: &Metrics, old: &Snapshot, new: &Snapshot) {
    for route in old.router.routes() {
        match new.router.by_name(&route.name) {
            None => metrics.forget_route(&route.name),
            Some(kept) => {
                // Limits (or tiers) the route no longer has.
                let live: HashSet<(&str, Option<&str>)> = kept
                    .chain
                    .rate_limits()
                    .iter()
                    .flat_map(|l| {
                        std::iter::once(&l.base)
                            .chain(l.tiers.iter().map(|(_, b)| b))
                            .map(|b| (&*l.label, b.tier.as_deref()))
                    })
                    .collect();
                metrics.forget_rate_limits(&route.name, |key, tier| live.contains(&(key, tier)));
            }
        }
    }
    for (name, cluster) in &old.clusters {
        if !new.clusters.contains_key(name) {
            metrics.forget_cluster(&cluster.name);
        }
    }
    let live: HashSet<&EndpointLabel> = new
        .clusters
        .values()
        .flat_map(|c| c.endpoints.iter().map(|e| e.metric()))
        .collect();
    for cluster in old.clusters.values() {
        for ep in &cluster.endpoints {
            if !live.contains(ep.metric()) {
                metrics.forget_endpoint(ep.metric());
            }
        }
    }
}
