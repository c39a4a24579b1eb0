//! Upstream clusters: endpoints with their health and load, a load-balancing policy, a pooled
//! HTTP client (HTTP/1.1 or HTTP/2, optionally TLS), and active health checks.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::HeaderName;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use warden_config::{parse_endpoint, ClusterConfig, Scheme, UpstreamProtocol};
use warden_telemetry::metrics::EndpointLabel;
use warden_telemetry::Metrics;

use crate::body::RequestBody;
use crate::error::CompileError;

mod health;
mod lb;

pub(crate) use lb::Balancer;

/// The HTTP client used for upstream requests.
pub(crate) type UpstreamClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

/// One endpoint's live state.
pub(crate) struct EndpointState {
    /// `host:port`, for logs and metrics.
    pub(crate) label: Arc<String>,
    /// URI authority for requests.
    pub(crate) authority: Authority,
    healthy: AtomicBool,
    in_flight: AtomicUsize,
    metric: EndpointLabel,
}

impl EndpointState {
    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn set_healthy(&self, healthy: bool, metrics: &Metrics) {
        self.healthy.store(healthy, Ordering::Release);
        metrics
            .endpoint_healthy
            .get_or_create(&self.metric)
            .set(i64::from(healthy));
    }
}

/// Counts a request against an endpoint while it is in flight (for least-request).
pub(crate) struct EndpointGuard(Arc<EndpointState>);

impl EndpointGuard {
    pub(crate) fn endpoint(&self) -> &Arc<EndpointState> {
        &self.0
    }
}

impl Drop for EndpointGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running cluster.
pub(crate) struct Cluster {
    pub(crate) name: Arc<String>,
    pub(crate) config: ClusterConfig,
    pub(crate) endpoints: Vec<Arc<EndpointState>>,
    pub(crate) scheme: http::uri::Scheme,
    pub(crate) version: http::Version,
    pub(crate) client: UpstreamClient,
    pub(crate) response_timeout: Duration,
    pub(crate) hash_header: Option<HeaderName>,
    balancer: Balancer,
    health_started: AtomicBool,
    metrics: Arc<Metrics>,
    /// Fingerprint of the TLS files (CA, client certificate and key) as read when built.
    tls_files: Option<u64>,
}

impl Cluster {
    /// Builds a cluster from config (no IO yet).
    pub(crate) fn build(
        c: &ClusterConfig,
        path: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Self, CompileError> {
        let name = Arc::new(c.name.clone());
        let mut endpoints = Vec::with_capacity(c.endpoints.len());
        let mut scheme = Scheme::Http;
        for (i, raw) in c.endpoints.iter().enumerate() {
            let ep = parse_endpoint(raw)
                .map_err(|e| CompileError::new(format!("{path}.endpoints[{i}]"), e))?;
            scheme = ep.scheme;
            let authority: Authority = ep.authority().parse().map_err(|_| {
                CompileError::new(format!("{path}.endpoints[{i}]"), "not a valid authority")
            })?;
            let label = Arc::new(ep.authority());
            let metric = EndpointLabel {
                cluster: name.clone(),
                endpoint: label.clone(),
            };
            metrics.endpoint_healthy.get_or_create(&metric).set(1);
            endpoints.push(Arc::new(EndpointState {
                label,
                authority,
                healthy: AtomicBool::new(true),
                in_flight: AtomicUsize::new(0),
                metric,
            }));
        }
        // Before the client reads the files: a change in between makes the next reload rebuild.
        let tls_files = tls_fingerprint(c);
        let client = build_client(c, path)?;
        let balancer = Balancer::new(c.load_balancer, &endpoints);
        Ok(Self {
            name,
            config: c.clone(),
            scheme: if scheme == Scheme::Https {
                http::uri::Scheme::HTTPS
            } else {
                http::uri::Scheme::HTTP
            },
            version: match c.protocol {
                UpstreamProtocol::Http1 => http::Version::HTTP_11,
                UpstreamProtocol::Http2 => http::Version::HTTP_2,
            },
            client,
            response_timeout: c.response_timeout.0,
            hash_header: c
                .hash_header
                .as_deref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            endpoints,
            balancer,
            health_started: AtomicBool::new(false),
            metrics,
            tls_files,
        })
    }

    /// Whether a reload may keep this cluster for `c`: same config, and its TLS files unchanged
    /// on disk (a rotated CA or client certificate needs a new client).
    pub(crate) fn reusable_for(&self, c: &ClusterConfig) -> bool {
        self.config == *c && self.tls_files == tls_fingerprint(c)
    }

    /// Picks an endpoint for a request; `None` when no endpoint is healthy.
    pub(crate) fn pick(&self, hash_value: Option<&[u8]>) -> Option<EndpointGuard> {
        let idx = self.balancer.pick(&self.endpoints, hash_value)?;
        let ep = self.endpoints[idx].clone();
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(EndpointGuard(ep))
    }

    /// Counts a failed upstream exchange (connect error or timeout).
    pub(crate) fn record_error(&self, ep: &EndpointState) {
        self.metrics.upstream_errors.get_or_create(&ep.metric).inc();
    }

    /// Starts active health checks once per cluster (a reused cluster keeps its running ones).
    pub(crate) fn start_health_checks(self: &Arc<Self>) {
        if self.config.health_check.is_some() && !self.health_started.swap(true, Ordering::AcqRel) {
            health::spawn(self);
        }
    }
}

/// A fingerprint of the contents of a cluster's TLS files; `None` without TLS.
fn tls_fingerprint(c: &ClusterConfig) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let t = c.tls.as_ref()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(&t.ca).ok().hash(&mut h);
    t.client_cert
        .as_ref()
        .map(|p| std::fs::read(p).ok())
        .hash(&mut h);
    // Hashed in place: the key bytes are never copied out of their zeroizing buffer.
    if let Some(Ok(key)) = t.client_key.as_ref().map(|k| k.read()) {
        key.as_slice().hash(&mut h);
    }
    Some(h.finish())
}

fn build_client(c: &ClusterConfig, path: &str) -> Result<UpstreamClient, CompileError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(c.connect_timeout.0));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let tls = match &c.tls {
        Some(t) => crate::tls::client_config(t, &format!("{path}.tls"))?,
        None => rustls::ClientConfig::builder_with_provider(warden_crypto::provider())
            .with_protocol_versions(warden_crypto::TLS_VERSIONS)
            .map_err(|e| CompileError::new(path, e.to_string()))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match c.tls.as_ref().and_then(|t| t.server_name.clone()) {
        Some(name) => {
            let server_name = rustls::pki_types::ServerName::try_from(name).map_err(|_| {
                CompileError::new(format!("{path}.tls.server_name"), "not a valid server name")
            })?;
            builder
                .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(server_name))
        }
        None => builder,
    };
    let connector = match c.protocol {
        UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(http),
        UpstreamProtocol::Http2 => builder.enable_http2().wrap_connector(http),
    };
    let mut b = Client::builder(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(c.pool_max_idle)
        .pool_idle_timeout(c.pool_idle_timeout.0)
        .set_host(false);
    if c.protocol == UpstreamProtocol::Http2 {
        b.http2_only(true);
    }
    Ok(b.build(connector))
}
