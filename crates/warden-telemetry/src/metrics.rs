//! The metrics Warden exports on the admin listener, in the Prometheus text format.
//!
//! Label values are route, cluster, endpoint and listener names from the config, and status
//! codes: a bounded set, so a client cannot grow the registry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
pub use prometheus_client::metrics::MetricType;
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

/// Labels for bytes carried one way on a route (`direction`: `to_upstream` or `to_client`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RouteDirection {
    /// Route name.
    pub route: Arc<String>,
    /// Which way.
    pub direction: &'static str,
}

impl EncodeLabelSet for RouteDirection {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("route", self.route.as_str())].encode(encoder)?;
        [("direction", self.direction)].encode(encoder)
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

/// Labels of a security event: its name and reason code (both from the code, bounded).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct EventReason {
    /// `authn.failure`, `authz.denied`, ….
    pub event: &'static str,
    /// The reason code.
    pub reason: &'static str,
}

impl EncodeLabelSet for EventReason {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("event", self.event), ("reason", self.reason)].encode(encoder)
    }
}

/// Labels of the telemetry exporter's counts: the signal (`spans`, `logs`) and, for drops,
/// why (`queue_full`, `export_failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct SignalReason {
    /// `spans` or `logs`.
    pub signal: &'static str,
    /// Empty for the exported count.
    pub reason: &'static str,
}

impl EncodeLabelSet for SignalReason {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        if self.reason.is_empty() {
            [("signal", self.signal)].encode(encoder)
        } else {
            [("signal", self.signal), ("reason", self.reason)].encode(encoder)
        }
    }
}

/// The OpenTelemetry exporter's counts (one exporter per process, shared by the gateway and
/// the authority; shown on the gateway's `/metrics`).
#[derive(Clone, Debug, Default)]
pub struct ExportCounters {
    /// Spans and log records the collector accepted.
    pub exported: Family<SignalReason, Counter>,
    /// Spans and log records lost: the queue was full (a slow or absent collector), or the
    /// export call failed or timed out.
    pub dropped: Family<SignalReason, Counter>,
}

/// Labels naming a listener.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ListenerLabel(pub Arc<String>);

/// Labels of a listener's info series: its name and its role.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ListenerRoleLabel {
    /// Listener name.
    pub listener: Arc<String>,
    /// Its role (`gateway`).
    pub role: &'static str,
}

impl EncodeLabelSet for ListenerRoleLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("listener", self.listener.as_str())].encode(encoder)?;
        [("role", self.role)].encode(encoder)
    }
}

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

/// What becomes of an upstream retry (`warden_upstream_retries_total{result}`).
pub const RETRY_RESULTS: &[&str] = &["attempted", "succeeded", "budget_exhausted"];

/// Why a cluster refuses a request at once (`warden_upstream_rejected_total{reason}`).
/// `connection_cap`: the request waited for a connection under `max_connections_per_endpoint`
/// until the route's timeout.
pub const CLUSTER_REJECT_REASONS: &[&str] = &[
    "bulkhead",
    "adaptive",
    "circuit_open",
    "no_healthy",
    "connection_cap",
];

/// A series of a per-route family, remembered when first created: prometheus-client's
/// families cannot be listed, and a reload must remove every series of a route that is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RouteSeries {
    Status(u16),
    Denied(&'static str),
    Allowed(&'static str),
    Limited(Arc<str>, Option<Arc<str>>),
    Duration,
}

/// A gauge exported only while it is switched on (a registered metric is always exported).
#[derive(Debug)]
struct Switched {
    name: &'static str,
    help: &'static str,
    on: Arc<AtomicBool>,
    gauge: Gauge,
}

impl Collector for Switched {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        if !self.on.load(Ordering::Acquire) {
            return Ok(());
        }
        let metric =
            encoder.encode_descriptor(self.name, self.help, None, self.gauge.metric_type())?;
        self.gauge.encode(metric)
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every route and status counted in `requests` so far (`-`: requests that matched no
/// route), so that the console's sampler reads the counters without walking the registry.
pub(crate) fn route_statuses(m: &Metrics) -> Vec<(Arc<String>, u16)> {
    let seen = m.route_series.lock().unwrap_or_else(|p| p.into_inner());
    seen.iter()
        .filter_map(|(route, s)| match s {
            RouteSeries::Status(status) => Some((route.clone(), *status)),
            _ => None,
        })
        .collect()
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// Every family registered, with its type (see [`Metrics::series_names`]).
    families: Vec<(String, MetricType)>,
    /// Requests answered, by route and status.
    pub requests: Family<RouteStatus, Counter>,
    /// Time from request head to response head, by route.
    pub request_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    /// Requests (and connections) refused before routing, by reason: connection_limit,
    /// in_flight_limit, ambiguous_framing, and the refusals made below the handler
    /// (header_too_large, header_read_timeout, malformed_request, h2_protocol_error,
    /// tls_handshake_failed, …).
    pub rejected: Family<Reason, Counter>,
    /// Requests in flight.
    pub in_flight: Gauge,
    /// Open client connections, by listener.
    pub open_connections: Family<ListenerLabel, Gauge>,
    /// Client connections accepted, by listener.
    pub connections: Family<ListenerLabel, Counter>,
    /// One series per listener, always 1, carrying its role: join on `listener` to break the
    /// per-listener series down by role without changing their labels.
    pub listener_info: Family<ListenerRoleLabel, Gauge>,
    /// Upstream endpoint health (1 healthy, 0 not).
    pub endpoint_healthy: Family<EndpointLabel, Gauge>,
    /// Upstream requests that failed (connect error, timeout), by endpoint.
    pub upstream_errors: Family<EndpointLabel, Counter>,
    /// Upstream endpoints ejected by outlier detection (1 from ejection until a half-open
    /// trial brings it back, 0 otherwise).
    pub endpoint_ejected: Family<EndpointLabel, Gauge>,
    /// Ejections by outlier detection (including re-ejections after a failed trial).
    pub upstream_ejections: Family<EndpointLabel, Counter>,
    /// Upstream connections opened (TCP connected), by endpoint.
    pub upstream_connections_opened: Family<EndpointLabel, Counter>,
    /// Upstream connections closed (by either side), by endpoint. Opened minus closed is what
    /// is open; both growing under steady load is connection churn.
    pub upstream_connections_closed: Family<EndpointLabel, Counter>,
    /// Upstream retries, by cluster and result.
    pub upstream_retries: Family<ClusterResult, Counter>,
    /// Requests a cluster refused at once (bulkhead, adaptive limit, every endpoint ejected).
    pub upstream_rejected: Family<ClusterReason, Counter>,
    /// The adaptive concurrency limit, by cluster.
    pub upstream_concurrency_limit: Family<ClusterLabel, Gauge>,
    /// Config reloads, by result.
    pub reloads: Family<Outcome, Counter>,
    /// Listener certificates swapped in from changed files (`success`), or changed files
    /// that did not load, the old certificates kept (`failure`).
    pub tls_certificate_reloads: Family<Outcome, Counter>,
    /// When the first certificate a TLS listener serves expires (notAfter, Unix seconds), by
    /// listener; set when the certificates load and each time they are swapped.
    pub tls_certificate_expiry: Family<ListenerLabel, Gauge>,
    /// 1 when the last reload attempt succeeded, 0 when it failed.
    pub config_last_reload_ok: Gauge,
    /// `config_info{sha256}`: 1 for the running config (see [`Metrics::set_config_hash`]).
    config_info: Family<Vec<(&'static str, String)>, Gauge>,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: Counter,
    /// Idle HTTP/1 connections whose buffers were released while they wait.
    pub idle_releases: Counter,
    /// Upgraded (WebSocket) connections open, by route.
    pub websocket_open: Family<RouteLabel, Gauge>,
    /// WebSocket upgrades completed (101 from the upstream, tunnel open), by route.
    pub websocket_upgrades: Family<RouteLabel, Counter>,
    /// Upgraded connections closed, by route and why (`client_closed`, `upstream_closed`,
    /// `idle_timeout`, `max_lifetime`, `drain`, `revoked`, `error`).
    pub websocket_closed: Family<RouteReason, Counter>,
    /// Bytes carried by upgraded connections, by route and direction, counted when each
    /// connection ends.
    pub websocket_bytes: Family<RouteDirection, Counter>,
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
    /// 1 while the Redis rate-limit store answers, 0 while it does not. Exported only while a
    /// store is configured ([`Metrics::set_rate_limit_store`]): a gateway without Redis has no
    /// such series, so an `== 0` alert does not fire on it.
    pub rate_limit_store_up: Gauge,
    rate_limit_store_shown: Arc<AtomicBool>,
    /// A sidecar's SVID: when it expires (Unix seconds; 0 while it has none). Exported only
    /// by sidecars ([`Metrics::set_sidecar`]).
    pub sidecar_svid_expiry: Gauge,
    /// 1 while renewing the sidecar's SVID fails (the authority unreachable or refusing),
    /// 0 otherwise. Exported only by sidecars.
    pub sidecar_svid_renewal_failing: Gauge,
    sidecar_shown: Arc<AtomicBool>,
    /// Series created per route (see [`RouteSeries`]).
    route_series: Mutex<Vec<(Arc<String>, RouteSeries)>>,
    /// Messages on the Redis revocation channel that were not applied, by reason (`unsigned`,
    /// `bad_signature`, `unknown_key`, `malformed`, `stale`).
    pub revocation_messages_dropped: Family<Reason, Counter>,
    /// Security decisions, by event and reason (see [`crate::security`]).
    pub security_events: Family<EventReason, Counter>,
    /// Security-event lines left out by the per-event rate (each still counted above).
    pub security_events_suppressed: Counter,
    /// The security-event stream, counting into the two families above.
    security: crate::security::SecurityEvents,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered under the `warden_` prefix.
    pub fn new() -> Self {
        Self::with_export_counters(ExportCounters::default())
    }

    /// The same, showing `export` as `warden_tracing_exported_total` and
    /// `warden_tracing_dropped_total`.
    pub fn with_export_counters(export: ExportCounters) -> Self {
        for signal in ["spans", "logs"] {
            let _ = export
                .exported
                .get_or_create(&SignalReason { signal, reason: "" });
            for reason in ["queue_full", "export_failed"] {
                let _ = export
                    .dropped
                    .get_or_create(&SignalReason { signal, reason });
            }
        }
        let mut registry = Registry::with_prefix("warden");
        let mut families = Vec::new();
        let requests = Family::<RouteStatus, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        let request_duration =
            Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        register(
            &mut registry,
            &mut families,
            "request_duration_seconds",
            "Time from request head to response head, by route",
            request_duration.clone(),
        );
        let rejected = Family::<Reason, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "rejected_requests",
            "Requests and connections refused before routing, by reason",
            rejected.clone(),
        );
        let in_flight = Gauge::default();
        register(
            &mut registry,
            &mut families,
            "in_flight_requests",
            "Requests in flight",
            in_flight.clone(),
        );
        let open_connections = Family::<ListenerLabel, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "open_connections",
            "Open client connections, by listener",
            open_connections.clone(),
        );
        let listener_info = Family::<ListenerRoleLabel, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "listener_info",
            "Each listener by name and role (always 1)",
            listener_info.clone(),
        );
        let connections = Family::<ListenerLabel, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "connections",
            "Client connections accepted, by listener",
            connections.clone(),
        );
        let endpoint_healthy = Family::<EndpointLabel, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "upstream_endpoint_healthy",
            "Upstream endpoint health: 1 healthy, 0 unhealthy",
            endpoint_healthy.clone(),
        );
        let upstream_errors = Family::<EndpointLabel, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "upstream_errors",
            "Upstream requests that failed to connect or timed out, by endpoint",
            upstream_errors.clone(),
        );
        let endpoint_ejected = Family::<EndpointLabel, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "upstream_endpoint_ejected",
            "Upstream endpoint ejected by outlier detection: 1 ejected (or half-open), 0 not",
            endpoint_ejected.clone(),
        );
        let upstream_ejections = Family::<EndpointLabel, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "upstream_ejections",
            "Upstream endpoint ejections by outlier detection, by endpoint",
            upstream_ejections.clone(),
        );
        let upstream_connections_opened = Family::<EndpointLabel, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "upstream_connections_opened",
            "Upstream connections opened, by endpoint",
            upstream_connections_opened.clone(),
        );
        let upstream_connections_closed = Family::<EndpointLabel, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "upstream_connections_closed",
            "Upstream connections closed, by endpoint",
            upstream_connections_closed.clone(),
        );
        let upstream_retries = Family::<ClusterResult, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "upstream_retries",
            "Upstream retries, by cluster and result (attempted, succeeded, budget_exhausted)",
            upstream_retries.clone(),
        );
        let upstream_rejected = Family::<ClusterReason, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "upstream_rejected",
            "Requests a cluster refused, by reason (bulkhead, adaptive, circuit_open, no_healthy, connection_cap)",
            upstream_rejected.clone(),
        );
        let upstream_concurrency_limit = Family::<ClusterLabel, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "upstream_concurrency_limit",
            "Adaptive concurrency limit, by cluster",
            upstream_concurrency_limit.clone(),
        );
        let reloads = Family::<Outcome, Counter>::default();
        // Both series exist from the start (at 0), so the first failure is an increase.
        let _ = reloads.get_or_create(&Outcome("success"));
        let _ = reloads.get_or_create(&Outcome("failure"));
        register(
            &mut registry,
            &mut families,
            "config_reloads",
            "Config reloads, by result",
            reloads.clone(),
        );
        let tls_certificate_reloads = Family::<Outcome, Counter>::default();
        let _ = tls_certificate_reloads.get_or_create(&Outcome("success"));
        let _ = tls_certificate_reloads.get_or_create(&Outcome("failure"));
        register(
            &mut registry,
            &mut families,
            "tls_certificate_reloads",
            "Listener certificate files swapped in (success) or refused, the old kept (failure)",
            tls_certificate_reloads.clone(),
        );
        let tls_certificate_expiry = Family::<ListenerLabel, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "tls_certificate_expiry_timestamp_seconds",
            "When the first certificate a TLS listener serves expires, Unix seconds, by listener",
            tls_certificate_expiry.clone(),
        );
        let config_last_reload_ok = Gauge::default();
        config_last_reload_ok.set(1);
        register(
            &mut registry,
            &mut families,
            "config_last_reload_success",
            "1 when the last config reload succeeded, 0 when it failed",
            config_last_reload_ok.clone(),
        );
        let config_info = Family::<Vec<(&'static str, String)>, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "config_info",
            "1 for the config this process runs, labelled with its file's SHA-256 (compare across \
             a fleet to see which gateways run which config)",
            config_info.clone(),
        );
        let access_log_dropped = Counter::default();
        register(
            &mut registry,
            &mut families,
            "access_log_dropped",
            "Access-log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let idle_releases = Counter::default();
        register(
            &mut registry,
            &mut families,
            "idle_connection_releases",
            "Idle HTTP/1 connections whose buffers were released while they wait",
            idle_releases.clone(),
        );
        let websocket_open = Family::<RouteLabel, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "websocket_connections_open",
            "Upgraded WebSocket connections open, by route",
            websocket_open.clone(),
        );
        let websocket_upgrades = Family::<RouteLabel, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "websocket_upgrades",
            "WebSocket upgrades completed (the upstream switched protocols), by route",
            websocket_upgrades.clone(),
        );
        let websocket_closed = Family::<RouteReason, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "websocket_closed",
            "Upgraded WebSocket connections closed, by route and reason",
            websocket_closed.clone(),
        );
        let websocket_bytes = Family::<RouteDirection, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "websocket_bytes",
            "Bytes carried by upgraded WebSocket connections, by route and direction, counted when each ends",
            websocket_bytes.clone(),
        );
        let rate_limited = Family::<RouteLimitKey, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "rate_limited_requests",
            "Requests refused by a rate limit, by route and what the limit counts by",
            rate_limited.clone(),
        );
        let auth_denied = Family::<RouteReason, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "auth_denied_requests",
            "Requests refused by authentication or authorization, by route and reason",
            auth_denied.clone(),
        );
        let auth_allowed = Family::<RouteReason, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "auth_allowed_requests",
            "Requests authenticated and authorized, by route and credential type",
            auth_allowed.clone(),
        );
        let rate_limit_store_errors = Family::<Outcome, Counter>::default();
        let _ = rate_limit_store_errors.get_or_create(&Outcome("local"));
        let _ = rate_limit_store_errors.get_or_create(&Outcome("open"));
        let _ = rate_limit_store_errors.get_or_create(&Outcome("closed"));
        register(
            &mut registry,
            &mut families,
            "rate_limit_store_errors",
            "Rate-limit decisions the Redis store could not make, by what the limit did instead (local: this gateway's share decided, open: allowed, closed: refused)",
            rate_limit_store_errors.clone(),
        );
        let rate_limit_store_up = Gauge::default();
        let rate_limit_store_shown = Arc::new(AtomicBool::new(false));
        families.push(("rate_limit_store_up".to_owned(), MetricType::Gauge));
        registry.register_collector(Box::new(Switched {
            name: "rate_limit_store_up",
            help: "1 while the Redis rate-limit store answers, 0 while it does not (only where a store is configured)",
            on: rate_limit_store_shown.clone(),
            gauge: rate_limit_store_up.clone(),
        }));
        let sidecar_svid_expiry = Gauge::default();
        let sidecar_svid_renewal_failing = Gauge::default();
        let sidecar_shown = Arc::new(AtomicBool::new(false));
        families.push((
            "sidecar_svid_expiry_timestamp_seconds".to_owned(),
            MetricType::Gauge,
        ));
        registry.register_collector(Box::new(Switched {
            name: "sidecar_svid_expiry_timestamp_seconds",
            help: "When the sidecar's X.509-SVID expires, Unix seconds (0: none)",
            on: sidecar_shown.clone(),
            gauge: sidecar_svid_expiry.clone(),
        }));
        families.push(("sidecar_svid_renewal_failing".to_owned(), MetricType::Gauge));
        registry.register_collector(Box::new(Switched {
            name: "sidecar_svid_renewal_failing",
            help: "1 while renewing the sidecar's X.509-SVID fails (authority unreachable or refusing)",
            on: sidecar_shown.clone(),
            gauge: sidecar_svid_renewal_failing.clone(),
        }));
        let revocation_messages_dropped = Family::<Reason, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "revocation_messages_dropped",
            "Messages on the Redis revocation channel not applied, by reason (unsigned, bad_signature, unknown_key, malformed, stale)",
            revocation_messages_dropped.clone(),
        );
        register(
            &mut registry,
            &mut families,
            "tracing_exported",
            "Spans and log records the OpenTelemetry collector accepted, by signal",
            export.exported,
        );
        register(
            &mut registry,
            &mut families,
            "tracing_dropped",
            "Spans and log records lost on the way to the OpenTelemetry collector, by signal and reason (queue_full: the collector is slow or down; export_failed: it refused or timed out)",
            export.dropped,
        );
        let security_events = Family::<EventReason, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "security_events",
            "Security decisions (refused credentials, policy denials, rate limits, reloads), by event and reason",
            security_events.clone(),
        );
        let security_events_suppressed = Counter::default();
        register(
            &mut registry,
            &mut families,
            "security_events_suppressed",
            "Security-event lines left out by the per-event rate limit (the events are still counted)",
            security_events_suppressed.clone(),
        );
        let security = crate::security::SecurityEvents::new(
            security_events.clone(),
            security_events_suppressed.clone(),
        );
        Self {
            registry,
            families,
            security,
            security_events,
            security_events_suppressed,
            requests,
            request_duration,
            rejected,
            in_flight,
            open_connections,
            connections,
            listener_info,
            endpoint_healthy,
            upstream_errors,
            upstream_connections_opened,
            upstream_connections_closed,
            endpoint_ejected,
            upstream_ejections,
            upstream_retries,
            upstream_rejected,
            upstream_concurrency_limit,
            reloads,
            tls_certificate_reloads,
            tls_certificate_expiry,
            config_last_reload_ok,
            config_info,
            access_log_dropped,
            idle_releases,
            websocket_open,
            websocket_upgrades,
            websocket_closed,
            websocket_bytes,
            rate_limited,
            auth_denied,
            auth_allowed,
            rate_limit_store_errors,
            rate_limit_store_up,
            sidecar_svid_expiry,
            sidecar_svid_renewal_failing,
            sidecar_shown,
            rate_limit_store_shown,
            route_series: Mutex::new(Vec::new()),
            revocation_messages_dropped,
        }
    }

    /// Exports `warden_rate_limit_store_up` only while a Redis store is configured. Switching
    /// it off resets it to 0, so a store configured later shows 0 until it answers.
    pub fn set_rate_limit_store(&self, configured: bool) {
        if !configured {
            self.rate_limit_store_up.set(0);
        }
        self.rate_limit_store_shown
            .store(configured, Ordering::Release);
    }

    /// Exports the sidecar's SVID gauges (only a process with a workload identity has them).
    pub fn set_sidecar(&self, on: bool) {
        self.sidecar_shown.store(on, Ordering::Release);
    }

    fn remember(&self, route: &Arc<String>, series: RouteSeries) {
        let mut seen = self.route_series.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.iter().any(|(r, s)| r == route && *s == series) {
            seen.push((route.clone(), series));
        }
    }

    /// Counts a request answered on `route` (`-` when none matched) with `status`.
    pub fn count_request(&self, route: &Arc<String>, status: u16) {
        let labels = RouteStatus {
            route: route.clone(),
            status,
        };
        // The hit path is one read-locked lookup, as `get_or_create`'s; only a new series
        // takes the lock to be remembered.
        if let Some(c) = self.requests.get(&labels) {
            c.inc();
            return;
        }
        self.requests.get_or_create(&labels).inc();
        self.remember(route, RouteSeries::Status(status));
    }

    /// Observes the time to the response head of a request on `route`.
    pub fn observe_request_duration(&self, route: &Arc<String>, seconds: f64) {
        let labels = RouteLabel(route.clone());
        if let Some(h) = self.request_duration.get(&labels) {
            h.observe(seconds);
            return;
        }
        self.request_duration
            .get_or_create(&labels)
            .observe(seconds);
        self.remember(route, RouteSeries::Duration);
    }

    /// Counts a request refused by authentication or authorization.
    pub fn count_auth_denied(&self, route: &Arc<String>, reason: &'static str) {
        self.route_counter(
            &self.auth_denied,
            route,
            reason,
            RouteSeries::Denied(reason),
        )
        .inc();
    }

    /// Counts a request authenticated by `method`.
    pub fn count_auth_allowed(&self, route: &Arc<String>, method: &'static str) {
        self.route_counter(
            &self.auth_allowed,
            route,
            method,
            RouteSeries::Allowed(method),
        )
        .inc();
    }

    fn route_counter(
        &self,
        family: &Family<RouteReason, Counter>,
        route: &Arc<String>,
        reason: &'static str,
        series: RouteSeries,
    ) -> Counter {
        let labels = RouteReason {
            route: route.clone(),
            reason,
        };
        if let Some(c) = family.get(&labels) {
            return c.clone();
        }
        let c = family.get_or_create_owned(&labels);
        self.remember(route, series);
        c
    }

    /// The counter of requests refused by a route's limit that counts by `key` (and `tier`),
    /// created at 0 if new.
    pub fn rate_limited_counter(
        &self,
        route: &Arc<String>,
        key: &Arc<str>,
        tier: Option<&Arc<str>>,
    ) -> Counter {
        let labels = RouteLimitKey {
            route: route.clone(),
            key: key.clone(),
            tier: tier.cloned(),
        };
        if let Some(c) = self.rate_limited.get(&labels) {
            return c.clone();
        }
        let c = self.rate_limited.get_or_create_owned(&labels);
        self.remember(route, RouteSeries::Limited(key.clone(), tier.cloned()));
        c
    }

    /// Removes every series of a route a reload removed.
    pub fn forget_route(&self, route: &str) {
        self.forget_where(route, |_| true);
    }

    /// Removes the series of a kept route's rate limits that `keep(key, tier)` refuses (a
    /// limit or a tier a reload removed).
    pub fn forget_rate_limits(&self, route: &str, keep: impl Fn(&str, Option<&str>) -> bool) {
        self.forget_where(route, |s| match s {
            RouteSeries::Limited(key, tier) => !keep(key, tier.as_deref()),
            _ => false,
        });
    }

    fn forget_where(&self, route: &str, gone: impl Fn(&RouteSeries) -> bool) {
        let mut seen = self.route_series.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|(r, series)| {
            if r.as_str() != route || !gone(series) {
                return true;
            }
            match series {
                RouteSeries::Status(status) => {
                    self.requests.remove(&RouteStatus {
                        route: r.clone(),
                        status: *status,
                    });
                }
                RouteSeries::Duration => {
                    self.request_duration.remove(&RouteLabel(r.clone()));
                }
                RouteSeries::Denied(reason) => {
                    self.auth_denied.remove(&RouteReason {
                        route: r.clone(),
                        reason,
                    });
                }
                RouteSeries::Allowed(reason) => {
                    self.auth_allowed.remove(&RouteReason {
                        route: r.clone(),
                        reason,
                    });
                }
                RouteSeries::Limited(key, tier) => {
                    self.rate_limited.remove(&RouteLimitKey {
                        route: r.clone(),
                        key: key.clone(),
                        tier: tier.clone(),
                    });
                }
            }
            false
        });
    }

    /// Removes every series of a cluster a reload removed (retries, refusals, adaptive limit).
    pub fn forget_cluster(&self, cluster: &Arc<String>) {
        for result in RETRY_RESULTS {
            self.upstream_retries.remove(&ClusterResult {
                cluster: cluster.clone(),
                result,
            });
        }
        for reason in CLUSTER_REJECT_REASONS {
            self.upstream_rejected.remove(&ClusterReason {
                cluster: cluster.clone(),
                reason,
            });
        }
        self.upstream_concurrency_limit
            .remove(&ClusterLabel(cluster.clone()));
    }

    /// Removes every series of an endpoint a reload removed (health, errors, ejections).
    pub fn forget_endpoint(&self, endpoint: &EndpointLabel) {
        self.endpoint_healthy.remove(endpoint);
        self.upstream_errors.remove(endpoint);
        self.endpoint_ejected.remove(endpoint);
        self.upstream_ejections.remove(endpoint);
        self.upstream_connections_opened.remove(endpoint);
        self.upstream_connections_closed.remove(endpoint);
    }

    /// The running config's SHA-256 (hex): `config_info{sha256}` is 1 for it alone.
    pub fn set_config_hash(&self, sha256: &str) {
        self.config_info.clear();
        self.config_info
            .get_or_create(&vec![("sha256", sha256.to_owned())])
            .set(1);
    }

    /// The security-event stream (counted here; written once
    /// [`crate::SecurityEvents::write_to`] is called).
    pub fn security_events(&self) -> &crate::security::SecurityEvents {
        &self.security
    }

    /// Every series name this registry can write, whether or not it holds a series yet
    /// (families without one are left out of the text): for checking what dashboards and
    /// alerting rules query.
    pub fn series_names(&self) -> Vec<String> {
        series_names("warden", &self.families)
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

/// Registers `metric` as `name` in `registry`, and records its name and type in `families`.
pub fn register(
    registry: &mut Registry,
    families: &mut Vec<(String, MetricType)>,
    name: &str,
    help: &str,
    metric: impl prometheus_client::registry::Metric,
) {
    families.push((name.to_owned(), metric.metric_type()));
    registry.register(name, help, metric);
}

/// The series names families registered under `prefix` write, in the classic text format:
/// a counter as `_total`, a histogram as `_bucket`, `_sum` and `_count`.
pub fn series_names(prefix: &str, families: &[(String, MetricType)]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, kind) in families {
        let base = format!("{prefix}_{name}");
        match kind {
            MetricType::Counter => out.push(format!("{base}_total")),
            MetricType::Histogram => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.push(format!("{base}{suffix}"));
                }
            }
            MetricType::Info => out.push(format!("{base}_info")),
            _ => out.push(base),
        }
    }
    out
}

/// Rewrites OpenMetrics text as Prometheus 0.0.4 text. The two differ, for what
/// `prometheus-client` registries emit, only in counter family names (`# TYPE x counter` with
/// samples `x_total` becomes `# TYPE x_total counter`) and in the `# UNIT`/`# EOF` lines. Used
/// for the gateway's registry and the authority's.
pub fn to_prometheus_text(open_metrics: &str) -> String {
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
    fn the_store_gauge_is_exported_only_while_a_store_is_configured() {
        let m = Metrics::new();
        assert!(!m.encode_prometheus().contains("rate_limit_store_up"));
        m.set_rate_limit_store(true);
        m.rate_limit_store_up.set(1);
        let text = m.encode_prometheus();
        assert!(
            text.contains("# TYPE warden_rate_limit_store_up gauge"),
            "{text}"
        );
        assert!(text.contains("\nwarden_rate_limit_store_up 1\n"), "{text}");
        m.set_rate_limit_store(false);
        assert!(!m.encode_prometheus().contains("rate_limit_store_up"));
    }

    #[test]
    fn forgetting_a_route_removes_every_series_it_had_and_only_those() {
        let m = Metrics::new();
        let (gone, kept) = (Arc::new("gone".to_string()), Arc::new("kept".to_string()));
        for r in [&gone, &kept] {
            m.count_request(r, 200);
            m.count_request(r, 503);
            m.observe_request_duration(r, 0.01);
            m.count_auth_denied(r, "expired");
            m.count_auth_allowed(r, "jwt");
            m.rate_limited_counter(r, &Arc::from("client_ip"), None)
                .inc();
        }
        m.forget_route("gone");
        let text = m.encode();
        assert!(!text.contains("route=\"gone\""), "{text}");
        for family in [
            "warden_requests_total",
            "warden_request_duration_seconds_count",
            "warden_auth_denied_requests_total",
            "warden_auth_allowed_requests_total",
            "warden_rate_limited_requests_total",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(family) && l.contains("route=\"kept\"")),
                "{family} of the kept route missing:\n{text}"
            );
        }
        // A kept route's removed limit goes; its other series stay.
        m.forget_rate_limits("kept", |_, _| false);
        let text = m.encode();
        assert!(
            !text.contains("warden_rate_limited_requests_total{"),
            "{text}"
        );
        assert!(text.contains("warden_requests_total{route=\"kept\",status=\"503\"} 1"));
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
