//! Upstream clusters: endpoints with their health, breakers and load, a load-balancing policy,
//! a pooled HTTP client (HTTP/1.1 or HTTP/2, optionally TLS), active health checks, and the
//! protections a request meets on its way to an endpoint (see [`exchange`]):
//!
//! ```text
//! admission.rs  bulkhead (max_concurrent_requests) ─► adaptive concurrency limit
//! lb.rs         endpoint pick among the usable: healthy (health.rs) ∧ breaker allows (outlier.rs)
//! pool.rs       request slot on the endpoint (max_connections_per_endpoint, waits in turn)
//! conn.rs       a pooled connection, driven by the request's own task (hyper client::conn)
//! exchange.rs   try (per-try timeout) ─► classify ─► maybe retry (retry.rs: budget, back-off,
//!               another endpoint; replay.rs: the buffered body)
//! ```

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::HeaderName;
use warden_config::{parse_endpoint, ClusterConfig, Scheme, SecretResolver, UpstreamProtocol};
use warden_limits::Transition;
use warden_telemetry::metrics::{ClusterReason, EndpointLabel};
use warden_telemetry::Metrics;

use crate::error::{CompileError, Reject};

mod admission;
mod conn;
pub(crate) mod exchange;
mod health;
mod lb;
mod outlier;
mod pool;
mod replay;
mod retry;
mod status;

pub(crate) use admission::Admission;
pub(crate) use conn::{PooledBody, Upgraded};
pub(crate) use lb::Balancer;
pub(crate) use replay::UpstreamBody;

use admission::Load;
use conn::{Connector, EndpointPool};
use outlier::{EjectionCap, EndpointBreaker};
use pool::RequestSlots;
use retry::RetryPolicy;

/// One data-plane thread's way to a cluster: its connections to each endpoint (see [`conn`]),
/// and its request slots per endpoint (see [`pool`]).
struct ThreadPool {
    endpoints: Box<[Arc<EndpointPool>]>,
    slots: RequestSlots,
}

/// Nanoseconds on a monotonic clock, for breakers and the adaptive limit.
pub(crate) fn now_nanos() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(START.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One endpoint's live state.
pub(crate) struct EndpointState {
    /// Position in the cluster's endpoint list.
    index: usize,
    /// `host:port`, for logs and metrics.
    pub(crate) label: Arc<String>,
    /// URI authority for requests.
    pub(crate) authority: Authority,
    healthy: AtomicBool,
    in_flight: AtomicUsize,
    metric: EndpointLabel,
    /// Outlier detection; `None` when the cluster has none.
    breaker: Option<EndpointBreaker>,
}

impl EndpointState {
    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// The endpoint's metric labels.
    pub(crate) fn metric(&self) -> &EndpointLabel {
        &self.metric
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether a request may be sent here now: healthy, and not ejected (or ejected with its
    /// time up and a half-open trial slot free). Does not take the slot.
    pub(crate) fn usable(&self, now: u64) -> bool {
        self.is_healthy() && self.breaker.as_ref().is_none_or(|b| b.available(now))
    }

    fn set_healthy(&self, healthy: bool, metrics: &Metrics) {
        self.healthy.store(healthy, Ordering::Release);
        metrics
            .endpoint_healthy
            .get_or_create(&self.metric)
            .set(i64::from(healthy));
    }
}

/// A request's hold on an endpoint: counts it in the endpoint's in-flight requests (for
/// least-request), carries the cluster admission slot and the endpoint request slot (the
/// connection cap, see [`pool`]) to the end of the response, and gives back a half-open trial
/// slot if the exchange ends without an outcome.
pub(crate) struct EndpointGuard {
    endpoint: Arc<EndpointState>,
    recorded: bool,
    admission: Option<Admission>,
    connection: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl EndpointGuard {
    pub(crate) fn endpoint(&self) -> &Arc<EndpointState> {
        &self.endpoint
    }

    /// Keeps the cluster admission slot until this guard is dropped (the response is done).
    pub(crate) fn hold(&mut self, admission: Admission) {
        self.admission = Some(admission);
    }

    /// Gives back the cluster admission slot and the endpoint request slot, keeping the
    /// endpoint counted as busy: for an upgraded connection, which is load on its endpoint
    /// for as long as it is open but holds no pooled connection or request slot.
    pub(crate) fn release_slots(&mut self) {
        self.admission = None;
        self.connection = None;
    }
}

impl Drop for EndpointGuard {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.recorded {
            if let Some(b) = &self.endpoint.breaker {
                b.abandoned();
            }
        }
    }
}

/// A running cluster.
pub(crate) struct Cluster {
    pub(crate) name: Arc<String>,
    pub(crate) config: ClusterConfig,
    pub(crate) endpoints: Vec<Arc<EndpointState>>,
    pub(crate) scheme: http::uri::Scheme,
    pub(crate) version: http::Version,
    /// One connection pool per data-plane worker, plus one for the main runtime (health
    /// checks): a connection is driven by the requests of the thread that opened it, so
    /// sharing pools across workers would bring back cross-thread wake-ups.
    pools: Box<[ThreadPool]>,
    pub(crate) response_timeout: Duration,
    pub(crate) hash_header: Option<HeaderName>,
    balancer: Balancer,
    health_started: AtomicBool,
    metrics: Arc<Metrics>,
    /// Fingerprint of the TLS files (CA, client certificate and key) as read when built.
    tls_files: Option<u64>,
    /// Requests and retries in flight, and the concurrency limits.
    load: Arc<Load>,
    /// How many endpoints outlier detection may eject at once.
    cap: Arc<EjectionCap>,
    retry: Option<RetryPolicy>,
}

impl Cluster {
    /// The connections to endpoint `index` of the thread this runs on.
    pub(crate) fn connections(&self, index: usize) -> &Arc<EndpointPool> {
        &self.thread_pool().endpoints[index]
    }

    fn thread_pool(&self) -> &ThreadPool {
        &self.pools[crate::workers::slot().min(self.pools.len() - 1)]
    }

    /// Takes a request slot on the guard's endpoint for this thread (HTTP/1.1 clusters),
    /// waiting in turn until `deadline`; it is held until the guard is dropped. Past the
    /// deadline: 503 `upstream_busy`, counted as `connection_cap`.
    async fn take_connection_slot(
        &self,
        guard: &mut EndpointGuard,
        deadline: tokio::time::Instant,
    ) -> Result<(), Reject> {
        guard.connection = None;
        match self
            .thread_pool()
            .slots
            .acquire(guard.endpoint.index, deadline)
            .await
        {
            Ok(slot) => {
                guard.connection = slot;
                Ok(())
            }
            Err(()) => {
                self.count_rejected("connection_cap");
                tracing::debug!(cluster = %self.name, endpoint = %guard.endpoint.label, cap = self.config.max_connections_per_endpoint, "no upstream connection freed up before the route's deadline");
                Err(Reject::UpstreamBusy)
            }
        }
    }

    /// Builds a cluster from config (no IO yet).
    pub(crate) fn build(
        c: &ClusterConfig,
        path: &str,
        metrics: Arc<Metrics>,
        secrets: &dyn SecretResolver,
        identity: Option<&crate::Identity>,
    ) -> Result<Self, CompileError> {
        let name = Arc::new(c.name.clone());
        let cap = Arc::new(EjectionCap::new(
            c.endpoints.len(),
            c.outlier_detection
                .as_ref()
                .map_or(0, |o| o.max_ejected_percent),
        ));
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
            // Its health and ejection series are created when the snapshot is installed
            // (`series::sync`), so a reload that fails after building it leaves none.
            let breaker = c.outlier_detection.as_ref().map(EndpointBreaker::new);
            endpoints.push(Arc::new(EndpointState {
                index: i,
                label,
                authority,
                healthy: AtomicBool::new(true),
                in_flight: AtomicUsize::new(0),
                metric,
                breaker,
            }));
        }
        // Before the client reads the files: a change in between makes the next reload rebuild.
        let tls_files = tls_fingerprint(c, secrets);
        let connector = Arc::new(build_connector(
            c,
            path,
            scheme,
            metrics.clone(),
            secrets,
            identity,
        )?);
        let pools = (0..=crate::workers::count())
            .map(|_| ThreadPool {
                endpoints: endpoints
                    .iter()
                    .map(|e| {
                        Arc::new(EndpointPool::new(
                            e.authority.clone(),
                            e.metric.clone(),
                            connector.clone(),
                        ))
                    })
                    .collect(),
                slots: RequestSlots::new(
                    endpoints.len(),
                    c.max_connections_per_endpoint,
                    c.protocol == UpstreamProtocol::Http1,
                ),
            })
            .collect();
        let balancer = Balancer::new(c.load_balancer, &endpoints);
        let load = Arc::new(Load::new(c));
        if let Some(limit) = load.adaptive_limit() {
            metrics
                .upstream_concurrency_limit
                .get_or_create(&warden_telemetry::metrics::ClusterLabel(name.clone()))
                .set(limit as i64);
        }
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
            pools,
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
            load,
            cap,
            retry: c.retries.as_ref().map(RetryPolicy::new),
        })
    }

    /// Whether a reload may keep this cluster for `c`: same config, and its TLS files unchanged
    /// on disk (a rotated CA or client certificate needs a new client). A kept cluster keeps
    /// its pools, health, breakers and adaptive limit.
    pub(crate) fn reusable_for(&self, c: &ClusterConfig, secrets: &dyn SecretResolver) -> bool {
        self.config == *c && self.tls_files == tls_fingerprint(c, secrets)
    }

    /// Admits a request to the cluster (bulkhead, then adaptive limit), or refuses it at once.
    pub(crate) fn admit(&self) -> Result<Admission, Reject> {
        self.load.admit().map_err(|reason| {
            self.count_rejected(reason);
            Reject::UpstreamBusy
        })
    }

    fn count_rejected(&self, reason: &'static str) {
        self.metrics
            .upstream_rejected
            .get_or_create(&ClusterReason {
                cluster: self.name.clone(),
                reason,
            })
            .inc();
    }

    /// Picks an endpoint for a request among those usable now, leaving out `exclude` (indices
    /// already tried), and takes its slot (a half-open trial, if it is one).
    fn pick_excluding(
        &self,
        hash_value: Option<&[u8]>,
        exclude: &[usize],
    ) -> Option<EndpointGuard> {
        let now = now_nanos();
        let mut lost: Vec<usize> = Vec::new();
        // A half-open endpoint may run out of trial slots between the pick and the acquire;
        // then pick again without it (at most once per endpoint).
        for _ in 0..=self.endpoints.len() {
            let usable = |i: usize| {
                !exclude.contains(&i) && !lost.contains(&i) && self.endpoints[i].usable(now)
            };
            let idx = self.balancer.pick(&self.endpoints, hash_value, &usable)?;
            let ep = &self.endpoints[idx];
            if ep.breaker.as_ref().is_none_or(|b| b.try_acquire(now)) {
                ep.in_flight.fetch_add(1, Ordering::Relaxed);
                return Some(EndpointGuard {
                    endpoint: ep.clone(),
                    recorded: false,
                    admission: None,
                    connection: None,
                });
            }
            lost.push(idx);
        }
        None
    }

    /// Picks an endpoint for a first try; when none is usable, the refusal: `CircuitOpen`
    /// (with the seconds until the first ejection ends) when outlier detection holds healthy
    /// endpoints back, `NoHealthyUpstream` otherwise.
    pub(crate) fn pick(&self, hash_value: Option<&[u8]>) -> Result<EndpointGuard, Reject> {
        if let Some(g) = self.pick_excluding(hash_value, &[]) {
            return Ok(g);
        }
        let now = now_nanos();
        let held_back: Vec<Option<u64>> = self
            .endpoints
            .iter()
            .filter(|e| e.is_healthy())
            .filter_map(|e| e.breaker.as_ref())
            .filter(|b| !b.available(now))
            .map(|b| b.open_until())
            .collect();
        if held_back.is_empty() {
            self.count_rejected("no_healthy");
            return Err(Reject::NoHealthyUpstream);
        }
        self.count_rejected("circuit_open");
        let wait = held_back
            .iter()
            .flatten()
            .map(|until| until.saturating_sub(now))
            .min()
            .unwrap_or(0);
        Err(Reject::CircuitOpen(wait.div_ceil(1_000_000_000).max(1)))
    }

    /// Picks another endpoint for a retry: one not tried yet when there is one, else any.
    fn pick_retry(&self, hash_value: Option<&[u8]>, tried: &[usize]) -> Option<EndpointGuard> {
        self.pick_excluding(hash_value, tried)
            .or_else(|| self.pick_excluding(hash_value, &[]))
    }

    /// Counts a failed upstream exchange (connect error or timeout).
    pub(crate) fn record_error(&self, ep: &EndpointState) {
        self.metrics.upstream_errors.get_or_create(&ep.metric).inc();
    }

    /// A breaker opening (an endpoint ejected) or closing again, on the security-event
    /// stream: a flapping dependency, or one being pushed over, shows next to the refusals.
    fn breaker_event(
        &self,
        event: &'static str,
        reason: &'static str,
        endpoint: &str,
        seconds: Option<f64>,
    ) {
        self.metrics
            .security_events()
            .emit(&warden_telemetry::SecurityEvent {
                event,
                reason,
                detail: Some(serde_json::json!({
                    "cluster": &*self.name,
                    "endpoint": endpoint,
                    "ejected_for_seconds": seconds,
                })),
                ..Default::default()
            });
    }

    /// Tells the endpoint's breaker how the exchange went (a 5xx, connection error, reset or
    /// timeout is a failure) and updates the ejection metrics.
    fn record(&self, guard: &mut EndpointGuard, ok: bool) {
        guard.recorded = true;
        let ep = &guard.endpoint;
        let Some(b) = &ep.breaker else { return };
        let now = now_nanos();
        let t = if ok {
            b.success(now, &self.cap)
        } else {
            b.failure(now, &self.cap)
        };
        match t {
            Transition::Ejected { until, from_closed } => {
                let secs = Duration::from_nanos(until.saturating_sub(now)).as_secs_f64();
                tracing::warn!(cluster = %self.name, endpoint = %ep.label, seconds = secs, retrial = !from_closed, "endpoint ejected");
                self.metrics
                    .endpoint_ejected
                    .get_or_create(&ep.metric)
                    .set(1);
                self.metrics
                    .upstream_ejections
                    .get_or_create(&ep.metric)
                    .inc();
                self.breaker_event(
                    "upstream.ejected",
                    if from_closed {
                        "outlier_detection"
                    } else {
                        "half_open_trial_failed"
                    },
                    &ep.label,
                    Some(secs),
                );
            }
            Transition::Recovered => {
                tracing::info!(cluster = %self.name, endpoint = %ep.label, "endpoint back after half-open trials");
                self.metrics
                    .endpoint_ejected
                    .get_or_create(&ep.metric)
                    .set(0);
                self.breaker_event(
                    "upstream.restored",
                    "half_open_trials_passed",
                    &ep.label,
                    None,
                );
            }
            Transition::Refused => {
                tracing::debug!(cluster = %self.name, endpoint = %ep.label, "ejection due but max_ejected_percent reached");
            }
            Transition::Unchanged => {}
        }
    }

    /// Starts active health checks once per cluster (a reused cluster keeps its running ones).
    pub(crate) fn start_health_checks(self: &Arc<Self>) {
        if self.config.health_check.is_some() && !self.health_started.swap(true, Ordering::AcqRel) {
            health::spawn(self);
        }
    }
}

/// A fingerprint of the contents of a cluster's TLS files (and its client key, wherever the
/// resolver reads it from); `None` without TLS.
fn tls_fingerprint(c: &ClusterConfig, secrets: &dyn SecretResolver) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let t = c.tls.as_ref()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(&t.ca).ok().hash(&mut h);
    t.client_cert
        .as_ref()
        .map(|p| std::fs::read(p).ok())
        .hash(&mut h);
    // Hashed in place: the key bytes are never copied out of their zeroizing buffer.
    if let Some(Ok(key)) = t.client_key.as_ref().map(|k| secrets.resolve(k)) {
        key.as_slice().hash(&mut h);
    }
    Some(h.finish())
}

/// How the cluster's connections are opened: TLS for `https://` endpoints (the cluster's CA
/// and client certificate, the sidecar's SVID for mesh endpoints, or no trusted roots
/// without a `[tls]` section), timeouts, protocol and idle limits.
fn build_connector(
    c: &ClusterConfig,
    path: &str,
    scheme: Scheme,
    metrics: Arc<Metrics>,
    secrets: &dyn SecretResolver,
    identity: Option<&crate::Identity>,
) -> Result<Connector, CompileError> {
    // Built (and so checked) whenever configured, used for `https://` endpoints.
    let config = match &c.tls {
        _ if !c.spiffe_ids.is_empty() => {
            crate::tls::mesh_client_config(identity, &c.spiffe_ids, &format!("{path}.spiffe_ids"))?
        }
        Some(t) => crate::tls::client_config(t, &format!("{path}.tls"), secrets)?,
        None => rustls::ClientConfig::builder_with_provider(warden_crypto::provider())
            .with_protocol_versions(warden_crypto::TLS_VERSIONS)
            .map_err(|e| CompileError::new(path, e.to_string()))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    let name = match c.tls.as_ref().and_then(|t| t.server_name.clone()) {
        Some(name) => Some(rustls::pki_types::ServerName::try_from(name).map_err(|_| {
            CompileError::new(format!("{path}.tls.server_name"), "not a valid server name")
        })?),
        None => None,
    };
    let tls = (scheme == Scheme::Https).then_some((config, name));
    Ok(Connector::new(
        tls,
        c.connect_timeout.0,
        c.protocol == UpstreamProtocol::Http2,
        metrics,
        c.pool_max_idle.min(c.max_connections_per_endpoint),
        c.pool_idle_timeout.0,
    ))
}
