//! The metrics Warden exports on the admin listener, in the Prometheus text format.
//!
//! Label values are route, cluster, endpoint and listener names from the config, and status
//! codes: a bounded set, so a client cannot grow the registry.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels for per-route request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RouteStatus {
    /// Route name (or `-` when no route matched).
    pub route: Arc<String>,
    /// HTTP status sent.
    pub status: u16,
}

impl EncodeLabelSet for RouteStatus {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("route", self.route.as_str())].encode(encoder)?;
        [("status", self.status)].encode(encoder)
    }
}

/// Labels naming a route.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RouteLabel(pub Arc<String>);

impl EncodeLabelSet for RouteLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("route", self.0.as_str())].encode(encoder)
    }
}

/// Labels naming a listener.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ListenerLabel(pub Arc<String>);

impl EncodeLabelSet for ListenerLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("listener", self.0.as_str())].encode(encoder)
    }
}

/// Labels naming an upstream endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct EndpointLabel {
    /// Cluster name.
    pub cluster: Arc<String>,
    /// Endpoint `host:port`.
    pub endpoint: Arc<String>,
}

impl EncodeLabelSet for EndpointLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [
            ("cluster", self.cluster.as_str()),
            ("endpoint", self.endpoint.as_str()),
        ]
        .encode(encoder)
    }
}

/// Labels for rate-limit refusals: the route, what the limit counts by (never the key's
/// value) and, for a limit with tiers, the caller's tier (a configured name, or `default`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RouteLimitKey {
    /// Route name.
    pub route: Arc<String>,
    /// The key kinds: `client_ip`, `route`, `header`, `subject`, `api_key`, `claim`, or a
    /// combination of them joined with `+`.
    pub key: Arc<str>,
    /// The tier, for limits that have tiers; no `tier` label otherwise.
    pub tier: Option<Arc<str>>,
}

impl EncodeLabelSet for RouteLimitKey {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("route", self.route.as_str()), ("key", &*self.key)].encode(encoder)?;
        match &self.tier {
            Some(t) => [("tier", &**t)].encode(encoder),
            None => Ok(()),
        }
    }
}

/// Labels for authentication and authorization outcomes: the route and the reason (a fixed
/// word such as `expired` or `insufficient_scope`, never a credential).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RouteReason {
    /// Route name.
    pub route: Arc<String>,
    /// Why.
    pub reason: &'static str,
}

impl EncodeLabelSet for RouteReason {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("route", self.route.as_str()), ("reason", self.reason)].encode(encoder)
    }
}

/// A fixed reason or result word.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Reason(pub &'static str);

impl EncodeLabelSet for Reason {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("reason", self.0)].encode(encoder)
    }
}

/// Labels naming a cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ClusterLabel(pub Arc<String>);

impl EncodeLabelSet for ClusterLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("cluster", self.0.as_str())].encode(encoder)
    }
}

/// Labels for upstream retries: the cluster and what became of the retry (`attempted`,
/// `succeeded`, `budget_exhausted`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ClusterResult {
    /// Cluster name.
    pub cluster: Arc<String>,
    /// A fixed word.
    pub result: &'static str,
}

impl EncodeLabelSet for ClusterResult {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("cluster", self.cluster.as_str()), ("result", self.result)].encode(encoder)
    }
}

/// Labels for requests a cluster refused before any endpoint saw them: the cluster and why
/// (`bulkhead`, `adaptive`, `circuit_open`, `no_healthy`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ClusterReason {
    /// Cluster name.
    pub cluster: Arc<String>,
    /// A fixed word.
    pub reason: &'static str,
}

impl EncodeLabelSet for ClusterReason {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("cluster", self.cluster.as_str()), ("reason", self.reason)].encode(encoder)
    }
}

/// A reload outcome: `success` or `failure`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Outcome(pub &'static str);

impl EncodeLabelSet for Outcome {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("result", self.0)].encode(encoder)
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route and status.
    pub requests: Family<RouteStatus, Counter>,
    /// Time from request head to response head, by route.
    pub request_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    /// Requests refused before routing, by reason (connection_limit, in_flight_limit, bad_path, …).
    pub rejected: Family<Reason, Counter>,
    /// Requests in flight.
    pub in_flight: Gauge,
    /// Open client connections, by listener.
    pub open_connections: Family<ListenerLabel, Gauge>,
    /// Client connections accepted, by listener.
    pub connections: Family<ListenerLabel, Counter>,
    /// Upstream endpoint health (1 healthy, 0 not).
    pub endpoint_healthy: Family<EndpointLabel, Gauge>,
    /// Upstream requests that failed (connect error, timeout), by endpoint.
    pub upstream_errors: Family<EndpointLabel, Counter>,
    /// Upstream endpoints ejected by outlier detection (1 from ejection until a half-open
    /// trial brings it back, 0 otherwise).
    pub endpoint_ejected: Family<EndpointLabel, Gauge>,
    /// Ejections by outlier detection (including re-ejections after a failed trial).
    pub upstream_ejections: Family<EndpointLabel, Counter>,
    /// Upstream retries, by cluster and result.
    pub upstream_retries: Family<ClusterResult, Counter>,
    /// Requests a cluster refused at once (bulkhead, adaptive limit, every endpoint ejected).
    pub upstream_rejected: Family<ClusterReason, Counter>,
    /// The adaptive concurrency limit, by cluster.
    pub upstream_concurrency_limit: Family<ClusterLabel, Gauge>,
    /// Config reloads, by result.
    pub reloads: Family<Outcome, Counter>,
    /// 1 when the last reload attempt succeeded, 0 when it failed.
    pub config_last_reload_ok: Gauge,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: Counter,
    /// Idle HTTP/1 connections whose buffers were released while they wait.
    pub idle_releases: Counter,
    /// Requests refused by a rate limit, by route and key kind.
    pub rate_limited: Family<RouteLimitKey, Counter>,
    /// Requests refused by authentication or authorization, by route and reason.
    pub auth_denied: Family<RouteReason, Counter>,
    /// Requests authenticated, by route and method (`jwt`, `api_key`, ...).
    pub auth_allowed: Family<RouteReason, Counter>,
    /// Rate-limit decisions Redis could not make (down, timed out, error), by what the limit
    /// did instead: `local` (decided by this gateway's share), `open` (allowed: `unlimited`)
    /// or `closed` (refused).
    pub rate_limit_store_errors: Family<Outcome, Counter>,
    /// 1 while the Redis rate-limit store answers, 0 while it does not (or none is used).
    pub rate_limit_store_up: Gauge,
    /// Messages on the Redis revocation channel that were not applied, by reason (`unsigned`,
    /// `bad_signature`, `unknown_key`, `malformed`, `stale`).
    pub revocation_messages_dropped: Family<Reason, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered under the `warden_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("warden");
        let requests = Family::<RouteStatus, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        let request_duration =
            Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by route",
            request_duration.clone(),
        );
        let rejected = Family::<Reason, Counter>::default();
        registry.register(
            "rejected_requests",
            "Requests refused before routing, by reason",
            rejected.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Requests in flight",
            in_flight.clone(),
        );
        let open_connections = Family::<ListenerLabel, Gauge>::default();
        registry.register(
            "open_connections",
            "Open client connections, by listener",
            open_connections.clone(),
        );
        let connections = Family::<ListenerLabel, Counter>::default();
        registry.register(
            "connections",
            "Client connections accepted, by listener",
            connections.clone(),
        );
        let endpoint_healthy = Family::<EndpointLabel, Gauge>::default();
        registry.register(
            "upstream_endpoint_healthy",
            "Upstream endpoint health: 1 healthy, 0 unhealthy",
            endpoint_healthy.clone(),
        );
        let upstream_errors = Family::<EndpointLabel, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream requests that failed to connect or timed out, by endpoint",
            upstream_errors.clone(),
        );
        let endpoint_ejected = Family::<EndpointLabel, Gauge>::default();
        registry.register(
            "upstream_endpoint_ejected",
            "Upstream endpoint ejected by outlier detection: 1 ejected (or half-open), 0 not",
            endpoint_ejected.clone(),
        );
        let upstream_ejections = Family::<EndpointLabel, Counter>::default();
        registry.register(
            "upstream_ejections",
            "Upstream endpoint ejections by outlier detection, by endpoint",
            upstream_ejections.clone(),
        );
        let upstream_retries = Family::<ClusterResult, Counter>::default();
        registry.register(
            "upstream_retries",
            "Upstream retries, by cluster and result (attempted, succeeded, budget_exhausted)",
            upstream_retries.clone(),
        );
        let upstream_rejected = Family::<ClusterReason, Counter>::default();
        registry.register(
            "upstream_rejected",
            "Requests a cluster refused at once, by reason (bulkhead, adaptive, circuit_open, no_healthy)",
            upstream_rejected.clone(),
        );
        let upstream_concurrency_limit = Family::<ClusterLabel, Gauge>::default();
        registry.register(
            "upstream_concurrency_limit",
            "Adaptive concurrency limit, by cluster",
            upstream_concurrency_limit.clone(),
        );
        let reloads = Family::<Outcome, Counter>::default();
        // Both series exist from the start (at 0), so the first failure is an increase.
        let _ = reloads.get_or_create(&Outcome("success"));
        let _ = reloads.get_or_create(&Outcome("failure"));
        registry.register(
            "config_reloads",
            "Config reloads, by result",
            reloads.clone(),
        );
        let config_last_reload_ok = Gauge::default();
        config_last_reload_ok.set(1);
        registry.register(
            "config_last_reload_success",
            "1 when the last config reload succeeded, 0 when it failed",
            config_last_reload_ok.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access-log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let idle_releases = Counter::default();
        registry.register(
            "idle_connection_releases",
            "Idle HTTP/1 connections whose buffers were released while they wait",
            idle_releases.clone(),
        );
        let rate_limited = Family::<RouteLimitKey, Counter>::default();
        registry.register(
            "rate_limited_requests",
            "Requests refused by a rate limit, by route and what the limit counts by",
            rate_limited.clone(),
        );
        let auth_denied = Family::<RouteReason, Counter>::default();
        registry.register(
            "auth_denied_requests",
            "Requests refused by authentication or authorization, by route and reason",
            auth_denied.clone(),
        );
        let auth_allowed = Family::<RouteReason, Counter>::default();
        registry.register(
            "auth_allowed_requests",
            "Requests authenticated and authorized, by route and credential type",
            auth_allowed.clone(),
        );
        let rate_limit_store_errors = Family::<Outcome, Counter>::default();
        let _ = rate_limit_store_errors.get_or_create(&Outcome("local"));
        let _ = rate_limit_store_errors.get_or_create(&Outcome("open"));
        let _ = rate_limit_store_errors.get_or_create(&Outcome("closed"));
        registry.register(
            "rate_limit_store_errors",
            "Rate-limit decisions the Redis store could not make, by what the limit did instead (local: this gateway's share decided, open: allowed, closed: refused)",
            rate_limit_store_errors.clone(),
        );
        let rate_limit_store_up = Gauge::default();
        registry.register(
            "rate_limit_store_up",
            "1 while the Redis rate-limit store answers, 0 while it does not or none is used",
            rate_limit_store_up.clone(),
        );
        let revocation_messages_dropped = Family::<Reason, Counter>::default();
        registry.register(
            "revocation_messages_dropped",
            "Messages on the Redis revocation channel not applied, by reason (unsigned, bad_signature, unknown_key, malformed, stale)",
            revocation_messages_dropped.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            rejected,
            in_flight,
            open_connections,
            connections,
            endpoint_healthy,
            upstream_errors,
            endpoint_ejected,
            upstream_ejections,
            upstream_retries,
            upstream_rejected,
            upstream_concurrency_limit,
            reloads,
            config_last_reload_ok,
            access_log_dropped,
            idle_releases,
            rate_limited,
            auth_denied,
            auth_allowed,
            rate_limit_store_errors,
            rate_limit_store_up,
            revocation_messages_dropped,
        }
    }

    /// The registry in the classic Prometheus text format (0.0.4), which every scraper and
    /// `promtool` read: counter families are named with their `_total` suffix, and the
    /// OpenMetrics-only `# UNIT` and `# EOF` lines are left out.
    pub fn encode_prometheus(&self) -> String {
        to_prometheus_text(&self.encode())
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Rewrites OpenMetrics text as Prometheus 0.0.4 text. The two differ, for what this registry
/// emits, only in counter family names (`# TYPE x counter` with samples `x_total` becomes
/// `# TYPE x_total counter`) and in the `# UNIT`/`# EOF` lines.
fn to_prometheus_text(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    let lines: Vec<&str> = open_metrics.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.starts_with("# EOF") || line.starts_with("# UNIT") {
            i += 1;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // A family: HELP, then TYPE (and maybe UNIT), then samples.
            let name = rest.split(' ').next().unwrap_or("");
            let is_counter = lines
                .get(i + 1)
                .is_some_and(|t| *t == format!("# TYPE {name} counter"));
            if is_counter && !name.ends_with("_total") {
                let help = &rest[name.len()..];
                out.push_str(&format!(
                    "# HELP {name}_total{help}\n# TYPE {name}_total counter\n"
                ));
                i += 2;
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry with one 200 on `route`, taking `seconds`.
    fn with_one_request(route: &str, seconds: f64) -> Metrics {
        let m = Metrics::new();
        let route = Arc::new(route.to_string());
        m.requests
            .get_or_create(&RouteStatus {
                route: route.clone(),
                status: 200,
            })
            .inc();
        m.request_duration
            .get_or_create(&RouteLabel(route))
            .observe(seconds);
        m
    }

    #[test]
    fn prometheus_text_names_counter_families_with_total() {
        let text = with_one_request("r", 0.1).encode_prometheus();
        assert!(
            text.contains("# HELP warden_requests_total Requests answered"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE warden_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE warden_in_flight_requests gauge"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE warden_request_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    #[test]
    fn encodes_requests_by_route_and_status() {
        let text = with_one_request("public", 0.002).encode();
        assert!(
            text.contains("warden_requests_total{route=\"public\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "warden_request_duration_seconds_bucket{le=\"0.004\",route=\"public\"} 1"
            ) || text.contains(
                "warden_request_duration_seconds_bucket{route=\"public\",le=\"0.004\"} 1"
            ),
            "{text}"
        );
    }
}
