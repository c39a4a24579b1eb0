//! The config file's schema. Every field is documented here, and every default lives in
//! [`crate::defaults`]; `examples/gateway.toml` shows each option in use.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::defaults as d;
use crate::types::{ByteSize, Cidr, Dur, LimitKeys, RegexStr, SecretRef};

/// The whole config file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Limits and timeouts that protect every listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// How requests are forwarded: trusted proxies and request ids.
    #[serde(default)]
    pub forwarding: ForwardingConfig,
    /// Security headers added to every response (routes may override).
    #[serde(default)]
    pub security_headers: SecurityHeaders,
    /// The admin listener: metrics, health, config, reload.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The JSON access log.
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// The stream of security decisions (refused credentials, policy denials, rate limits,
    /// reloads).
    #[serde(default)]
    pub security_events: SecurityEventsConfig,
    /// OpenTelemetry: spans of requests, grants and vault calls, and the security events as
    /// logs, exported over OTLP.
    #[serde(default)]
    pub tracing: TracingConfig,
    /// Hot reload of this file.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Signed configuration: the keys whose signature a config (and every file it reads)
    /// must carry to be started or reloaded.
    #[serde(default)]
    pub config_signing: ConfigSigningConfig,
    /// Credentials the gateway verifies (JWT issuers, API keys, introspection, client
    /// certificates), policies, and internal tokens.
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
    /// The token service (OAuth 2.0 authorization server for services), with its own listener.
    #[serde(default)]
    pub authority: crate::authority::AuthorityConfig,
    /// Where the gateway accepts connections.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Groups of upstream endpoints that routes send traffic to.
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    /// The shared store for rate limits with `store = "redis"`.
    #[serde(default)]
    pub rate_limit_store: RateLimitStoreConfig,
    /// The client for `vault:` secret references (a Vault-compatible server).
    #[serde(default)]
    pub vault: VaultClientConfig,
    /// The sidecar role: this process gets a workload identity (an X.509-SVID) from the
    /// authority's CA and serves the mesh's `inbound` and `outbound` listeners with it.
    #[serde(default)]
    pub sidecar: Option<SidecarConfig>,
    /// Routes, matched as described in `docs/architecture.md` (host specificity, then file order).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// Limits and timeouts for every connection and request.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_bytes: ByteSize,
    /// Most header fields in one request; more gets 431.
    pub max_headers: usize,
    /// Longest request target (path and query); longer gets 414.
    pub max_uri_bytes: ByteSize,
    /// Largest request body; larger gets 413. Bodies are streamed, never buffered whole.
    pub max_body_bytes: ByteSize,
    /// Time a client has to send a complete request head; slower clients get 408.
    pub header_read_timeout: Dur,
    /// How long an idle keep-alive connection is kept open.
    pub idle_timeout: Dur,
    /// Time for a whole request: receiving it and getting the upstream's response head.
    pub request_timeout: Dur,
    /// Most open client connections across all listeners; past it, new ones get 503 and close.
    pub max_connections: usize,
    /// Most requests in flight across all listeners; past it, 503 at once.
    pub max_in_flight: usize,
    /// On SIGTERM, how long in-flight requests may take to finish before the process exits.
    pub drain_timeout: Dur,
    /// Allow `%2F` (encoded slash) in paths. Off by default: it lets a path hide a separator
    /// from route matching, so such requests get 400.
    pub allow_encoded_slash: bool,
    /// Data-plane threads: each serves the connections given to it from accept to close, with
    /// upstream connection pools of its own. 0: one per CPU. Read at start only.
    pub data_threads: usize,
}

/// How the gateway forwards requests.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardingConfig {
    /// Peers whose `X-Forwarded-*` headers are believed and extended. From anyone else,
    /// incoming `X-Forwarded-*` and `Forwarded` headers are replaced.
    pub trusted_proxies: Vec<Cidr>,
    /// Header carrying the request id: kept when the client sent a valid one, generated otherwise.
    pub request_id_header: crate::types::HeaderNameText,
    /// What happens to request headers whose names contain `_`, which many upstream stacks
    /// (CGI, PHP, WSGI, Rails, nginx with `underscores_in_headers`) read as `-`: `allow`
    /// forwards them, `drop` removes them, `reject` answers 400. Whatever this says, a name
    /// that reads as a Warden identity header (`x-warden-*`) or one of `auth.strip_headers`
    /// once `_` is read as `-` is always removed.
    pub headers_with_underscores: UnderscoreHeaders,
}

/// What to do with a request header whose name contains `_` (`forwarding.headers_with_underscores`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnderscoreHeaders {
    /// Forward it (names that collide with stripped headers are still removed).
    #[default]
    Allow,
    /// Remove it before forwarding.
    Drop,
    /// Refuse the request with 400.
    Reject,
}

/// Security headers for responses. Each is added unless the upstream set it already.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityHeaders {
    /// `Strict-Transport-Security` value, sent on TLS listeners only; empty to disable.
    pub hsts: String,
    /// Send `X-Content-Type-Options: nosniff`.
    pub content_type_options: bool,
    /// `Referrer-Policy` value; empty to disable.
    pub referrer_policy: String,
    /// `X-Frame-Options` value; empty to disable.
    pub frame_options: String,
    /// Further headers to add, name to value.
    pub extra: BTreeMap<String, String>,
}

/// The admin listener.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener. Keep it on loopback or a private network: it can reload
    /// the config.
    pub address: SocketAddr,
    /// Set to false to run without an admin listener.
    pub enabled: bool,
    /// Bearer token for the admin listener and its console: `env:NAME` or `file:PATH`, at
    /// least 16 bytes. When set, every admin route but `/healthz`, `/readyz`, the internal
    /// tokens' JWKS and the console's static files needs `Authorization: Bearer <token>`.
    /// Unset: on loopback, no token is asked; on any other address, `/config`, `/upstreams`,
    /// `/reload` and the console's data answer 403 until one is set.
    pub token: Option<SecretRef>,
}

/// The access log: one JSON line per request.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// Write the access log.
    pub enabled: bool,
    /// `stdout`, or a file path to append to.
    pub path: String,
}

/// The security-event stream: one JSON line per security decision, with a stable `event`
/// name and `reason` code (counted in `warden_security_events_total` whatever this says).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityEventsConfig {
    /// Write the stream.
    pub enabled: bool,
    /// `stdout`, or a file path to append to.
    pub path: String,
    /// Lines written per second for each event and reason; the rest are counted and the
    /// next line written for that event and reason says how many were suppressed.
    pub max_lines_per_second: u32,
}

/// OpenTelemetry tracing: a server span for each gateway, sidecar and authority request (with
/// child spans for authentication, authorization, rate limiting and the upstream call),
/// sampled by a parent-based ratio sampler and exported over OTLP in batches from a bounded
/// queue: a slow or absent collector costs dropped spans (counted), never a request's time.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Export spans (and, with `security_events`, logs) to the collector at `endpoint`.
    pub enabled: bool,
    /// The collector's base URL: `http://` or `https://`, without a path for gRPC; for
    /// `http/protobuf`, `/v1/traces` and `/v1/logs` are appended.
    pub endpoint: String,
    /// `http/protobuf` (port 4318 by convention) or `grpc` (4317).
    pub protocol: OtlpProtocol,
    /// PEM file of the CAs that sign an `https://` collector's certificate.
    pub ca_file: Option<PathBuf>,
    /// The share of new traces sampled (0 to 1). A request that carries a `traceparent`
    /// follows its caller's decision.
    pub sampling_ratio: f64,
    /// `service.name` of the spans and logs.
    pub service_name: String,
    /// Time allowed for one export call.
    pub timeout: Dur,
    /// Spans (and, separately, log records) held for export; beyond it new ones are dropped
    /// and counted.
    pub max_queue_size: usize,
    /// Spans or records sent in one export call.
    pub max_export_batch_size: usize,
    /// The longest a finished span waits before its batch is sent.
    pub scheduled_delay: Dur,
    /// Record the authenticated caller's subject on spans (`enduser.id`).
    pub record_subject: bool,
    /// Also send the security events as OTLP log records, joined to their traces.
    pub security_events: bool,
}

/// The OTLP transport.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP POST.
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// gRPC.
    #[serde(rename = "grpc")]
    Grpc,
}

/// Signed configuration (`warden config sign`): with trusted keys, `serve` refuses to start on,
/// and a reload refuses to apply, a config that is unsigned, signed by a key not trusted here
/// (or expired, or revoked), or whose files changed since it was signed. A reload is checked
/// against the keys of the config that runs, not those of the new one.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigSigningConfig {
    /// Public keys (PEM, Ed25519 or ECDSA P-256) that may sign this config.
    pub trusted_keys: Vec<TrustedKeyConfig>,
    /// Key ids (RFC 7638 thumbprints, as `warden config key-id` prints them) no longer
    /// trusted, whatever `trusted_keys` says.
    pub revoked_keys: Vec<String>,
    /// Require a signature even with no trusted key listed here (the keys then come from
    /// `serve --trusted-config-key`).
    pub require: bool,
}

/// One key that may sign configs.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyConfig {
    /// The public key file (PEM `PUBLIC KEY`).
    pub key: PathBuf,
    /// Signatures by this key are refused after this time (RFC 3339).
    #[serde(default)]
    pub not_after: Option<crate::types::Timestamp>,
}

/// Hot reload.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Reload when the config file (or a certificate or key it names) changes on disk.
    pub watch: bool,
    /// How often the files are checked.
    pub poll_interval: Dur,
}

/// One listener.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// A name, used in metrics and logs.
    pub name: String,
    /// Address and port to bind.
    pub address: SocketAddr,
    /// Accept HTTP/2: by ALPN on TLS, by prior knowledge (h2c) on plain listeners.
    #[serde(default = "d::yes")]
    pub http2: bool,
    /// TLS for this listener; plain HTTP when absent.
    #[serde(default)]
    pub tls: Option<TlsListenerConfig>,
    /// What the listener is for: `gateway` (the edge, the default), or with `[sidecar]`:
    /// `inbound` (mTLS with the workload's SVID; peers must present an SVID of the trust
    /// bundle, and routes authorize them by SPIFFE ID with `client_cert` authentication) or
    /// `outbound` (plain HTTP on a loopback address, for the local service's calls out).
    #[serde(default)]
    pub role: ListenerRole,
    /// The routes this listener serves, by name, matched in file order as usual. Empty (the
    /// default): every route. A request on this listener for a route not named here is a 404.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}

/// What a listener is for.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerRole {
    /// The API gateway at the edge.
    #[default]
    Gateway,
    /// The sidecar's mTLS listener for peers in the mesh.
    Inbound,
    /// The sidecar's loopback listener for the local service's outgoing calls.
    Outbound,
}

impl ListenerRole {
    /// The name used in config, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerRole::Gateway => "gateway",
            ListenerRole::Inbound => "inbound",
            ListenerRole::Outbound => "outbound",
        }
    }
}

/// `[sidecar]`: where the workload identity comes from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// The authority whose CA issues the SVID: `https://host:port` (or `http://` on
    /// loopback, for development).
    pub authority: String,
    /// PEM file with the CA certificate(s) of the authority's listener (for `https://`).
    #[serde(default)]
    pub authority_ca: Option<PathBuf>,
    /// The trust domain the SVID belongs to.
    pub trust_domain: String,
    /// The one-time join token for the first SVID: `env:NAME` or `file:PATH`.
    pub join_token: SecretRef,
    /// Time allowed for each call to the authority.
    #[serde(default = "d::sidecar_timeout")]
    pub timeout: Dur,
    /// Serve the SPIFFE Workload API on this Unix socket (mode 0600, its directory made
    /// 0700): the local workload's SPIFFE libraries get the SVID, its key and the bundles
    /// from it. Unset: no Workload API.
    #[serde(default)]
    pub workload_api_socket: Option<PathBuf>,
    /// Keep the SVID, its key and the bundle in this directory (0700, files 0600), so a
    /// restarted sidecar renews its stored SVID instead of needing a new join token, and
    /// serves with it while the authority is unreachable. Unset: in memory only.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
}

/// TLS on a listener.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// Certificates; chosen by SNI. The first one is used when no `server_names` match.
    pub certificates: Vec<CertificateConfig>,
    /// Verify client certificates.
    #[serde(default)]
    pub client_auth: Option<ClientAuthConfig>,
}

/// A certificate chain and its key.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM file with the certificate chain, leaf first. Reloaded when it changes.
    pub cert: PathBuf,
    /// The private key (PEM): `file:PATH` or `env:NAME`. Reloaded when the file changes.
    pub key: SecretRef,
    /// SNI names this certificate serves (`*.example.com` allowed). Empty: the names in the
    /// certificate's subjectAltName.
    #[serde(default)]
    pub server_names: Vec<String>,
}

/// Client-certificate verification.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthConfig {
    /// PEM bundle of CAs that client certificates must chain to.
    pub ca: PathBuf,
    /// `required`: the handshake fails without a valid certificate. `optional`: a certificate,
    /// when sent, must be valid; routes decide what to do without one.
    #[serde(default = "d::client_auth_mode")]
    pub mode: ClientAuthMode,
}

/// Whether a client certificate is required.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    /// A valid certificate is needed to connect.
    Required,
    /// A certificate is checked when sent.
    Optional,
}

/// A group of upstream endpoints.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Name routes refer to.
    pub name: String,
    /// Endpoints as URLs: `http://host:port` or `https://host:port` (one scheme per cluster).
    pub endpoints: Vec<String>,
    /// How an endpoint is chosen for each request.
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    /// For `consistent_hash`: the request header whose value picks the endpoint.
    #[serde(default)]
    pub hash_header: Option<String>,
    /// HTTP version spoken to the endpoints.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Time allowed to connect (and finish TLS) to an endpoint; past it, 504.
    #[serde(default = "d::connect_timeout")]
    pub connect_timeout: Dur,
    /// Time allowed for the endpoint's response head once the request is sent; past it, 504.
    #[serde(default = "d::response_timeout")]
    pub response_timeout: Dur,
    /// Most connections open to one endpoint from one data-plane thread (HTTP/1.1 only: an
    /// `http2` cluster multiplexes its requests on one connection). A request that would need
    /// another waits, first come first served, for one to free up; a wait that outlasts the
    /// route's timeout gets 503 `upstream_busy`.
    #[serde(default = "d::max_connections_per_endpoint")]
    pub max_connections_per_endpoint: usize,
    /// Idle pooled connections kept per endpoint (per data-plane thread); no more than
    /// `max_connections_per_endpoint` can be open anyway. The default equals the default cap,
    /// so the connections a burst opened are kept for the next.
    #[serde(default = "d::pool_max_idle")]
    pub pool_max_idle: usize,
    /// How long a pooled connection may stay idle.
    #[serde(default = "d::pool_idle_timeout")]
    pub pool_idle_timeout: Dur,
    /// TLS to the endpoints (needed for `https://`).
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// Mesh endpoints (with `[sidecar]`): the connection presents this workload's SVID and
    /// accepts only an endpoint whose SVID is one of these SPIFFE IDs. Endpoints must be
    /// `https://`; `tls` must be unset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spiffe_ids: Vec<String>,
    /// Active health checking.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Passive health: eject endpoints that fail (circuit breaking).
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetectionConfig>,
    /// Retries of failed requests.
    #[serde(default)]
    pub retries: Option<RetryConfig>,
    /// Most requests in flight to this cluster at once (a bulkhead); past it, 503 at once.
    /// 0: no limit.
    #[serde(default)]
    pub max_concurrent_requests: usize,
    /// A concurrency limit that adapts to latency (gradient); used under
    /// `max_concurrent_requests` when both are set.
    #[serde(default)]
    pub adaptive_concurrency: Option<AdaptiveConcurrencyConfig>,
}

/// Outlier detection: an endpoint that fails is ejected for a while, then probed.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetectionConfig {
    /// Failures in a row (5xx answers, connection errors, timeouts) that eject an endpoint.
    pub consecutive_failures: u32,
    /// Share of failed requests over `window` (0.0 to 1.0) that ejects an endpoint; 0 turns
    /// the rate check off.
    pub failure_rate: f64,
    /// The sliding window the failure rate is measured over.
    pub window: Dur,
    /// Fewest requests in the window before the failure rate counts.
    pub min_requests: u32,
    /// First ejection time; it doubles with each ejection in a row.
    pub base_ejection: Dur,
    /// Longest ejection time.
    pub max_ejection: Dur,
    /// Trial requests let through to an ejected endpoint once its time is up; that many
    /// successes bring it back.
    pub half_open_requests: u32,
    /// Most endpoints of the cluster ejected at once, in percent (at least one is always
    /// allowed to be ejected).
    pub max_ejected_percent: u32,
}

/// Retries.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries after the first try (0: none).
    pub attempts: u32,
    /// Methods that may be retried; non-idempotent methods are left out by default.
    pub methods: Vec<crate::types::MethodName>,
    /// Upstream statuses that are retried (connection failures, resets and per-try timeouts
    /// always are).
    pub statuses: Vec<u16>,
    /// gRPC statuses retried, when a gRPC call's answer carries one in its head (a
    /// trailers-only answer). gRPC calls are retried whatever `methods` says, on these only.
    pub grpc_statuses: Vec<u16>,
    /// Time allowed for each try.
    pub per_try_timeout: Dur,
    /// First back-off; it doubles with each retry, with full jitter.
    pub backoff_base: Dur,
    /// Longest back-off.
    pub backoff_max: Dur,
    /// Retries may be at most this percentage of the requests in flight to the cluster, so
    /// retries cannot amplify an outage.
    pub budget_percent: u32,
    /// Retries always allowed in flight regardless of the budget (for low traffic).
    pub min_retries_in_flight: u32,
    /// Request bodies up to this size are kept so they can be sent again; a request whose
    /// body is larger (or streamed past it) is never retried.
    pub buffer_body_bytes: ByteSize,
}

/// A latency-driven concurrency limit (gradient, after Netflix's concurrency-limits).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConcurrencyConfig {
    /// The limit it starts at.
    pub initial_limit: usize,
    /// It never goes below this.
    pub min_limit: usize,
    /// It never goes above this.
    pub max_limit: usize,
    /// Latency growth over the best recent latency tolerated before the limit shrinks
    /// (1.5: 50 % slower).
    pub tolerance: f64,
}

/// Where rate-limit counters are kept when a limit says `store = "redis"`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitStoreConfig {
    /// Redis URL (`redis://host[:port][/db]`; `rediss://` is refused until TLS to Redis is
    /// supported). No password here: use `password`.
    pub redis_url: Option<String>,
    /// Redis password (`env:NAME` or `file:PATH`).
    pub password: Option<SecretRef>,
    /// Time a rate-limit decision may wait for Redis; past it, the limit's `on_store_failure`
    /// decides.
    pub timeout: Dur,
    /// Prefix of every key Warden writes.
    pub key_prefix: String,
    /// How many gateways share these limits. While Redis cannot answer, each gateway keeps
    /// limiting alone at `1 / gateways` of each limit (`on_store_failure = "local"`), so the
    /// fleet stays near the limit; at 1, each gateway may admit a whole limit alone.
    pub gateways: u32,
}

/// Load-balancing policy.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancer {
    /// Each healthy endpoint in turn.
    #[default]
    RoundRobin,
    /// Two random healthy endpoints; the one with fewer requests in flight wins.
    LeastRequest,
    /// A hash ring on the `hash_header` value: the same value goes to the same endpoint while
    /// it is healthy.
    ConsistentHash,
}

/// HTTP version to upstream endpoints.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 (prior knowledge on `http://`, ALPN `h2` on `https://`).
    Http2,
}

/// TLS to upstream endpoints.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM bundle of CAs the endpoints' certificates must chain to.
    pub ca: PathBuf,
    /// Name to send in SNI and verify in the certificate; default: each endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Client certificate presented to the endpoints (mTLS).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Key for `client_cert`: `file:PATH` or `env:NAME`.
    #[serde(default)]
    pub client_key: Option<SecretRef>,
}

/// Active HTTP health checks.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path requested with GET.
    #[serde(default = "d::health_path")]
    pub path: String,
    /// Time between checks of one endpoint.
    #[serde(default = "d::health_interval")]
    pub interval: Dur,
    /// Time a check may take.
    #[serde(default = "d::health_timeout")]
    pub timeout: Dur,
    /// Consecutive successes that bring an endpoint back.
    #[serde(default = "d::health_healthy")]
    pub healthy_threshold: u32,
    /// Consecutive failures that take an endpoint out.
    #[serde(default = "d::health_unhealthy")]
    pub unhealthy_threshold: u32,
    /// Statuses counted as healthy; default any 2xx.
    #[serde(default)]
    pub expected_statuses: Vec<u16>,
    /// Check with the gRPC health protocol instead (`grpc.health.v1.Health/Check` for this
    /// service, `""` for the server as a whole): healthy when it answers `SERVING`. HTTP/2
    /// clusters only; `path` and `expected_statuses` are then not used.
    #[serde(default)]
    pub grpc_service: Option<String>,
}

/// One route.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name, used in metrics and logs.
    pub name: String,
    /// Who may call this route. Required: there is no default, so a route cannot be public by
    /// accident. `none` makes it public.
    pub auth: Option<crate::auth::RouteAuth>,
    /// Cluster that serves the route.
    pub cluster: String,
    /// Hosts (`api.example.com`, `*.example.com`); empty matches any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Match this exact (normalised) path.
    #[serde(default)]
    pub path_exact: Option<String>,
    /// Match paths starting with this prefix.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Match paths this regex matches (anchor it with `^…$`).
    #[serde(default)]
    pub path_regex: Option<RegexStr>,
    /// Methods allowed to match; empty matches any.
    #[serde(default)]
    pub methods: Vec<crate::types::MethodName>,
    /// Forward `TRACE` (and `TRACK`) requests. Off by default: they echo the request back,
    /// headers and cookies included (cross-site tracing), so they get 405.
    #[serde(default)]
    pub allow_trace: bool,
    /// Header conditions; all must hold.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    /// Replace the matched `path_prefix` with this before forwarding.
    #[serde(default)]
    pub rewrite_prefix: Option<String>,
    /// Override of `server.request_timeout` for this route.
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Once the response head is in, the longest the response body may go without a byte
    /// from the upstream; past it the response is cut off. A stream (server-sent events, a
    /// long download) may last any time while it keeps moving.
    #[serde(default = "d::stream_idle_timeout")]
    pub stream_idle_timeout: Dur,
    /// Only these client networks may use the route (empty: all).
    #[serde(default)]
    pub allow_cidrs: Vec<Cidr>,
    /// These client networks are refused (checked before `allow_cidrs`).
    #[serde(default)]
    pub deny_cidrs: Vec<Cidr>,
    /// CORS for browser callers; preflights are answered at the gateway.
    #[serde(default)]
    pub cors: Option<CorsConfig>,
    /// Override of the global security headers.
    #[serde(default)]
    pub security_headers: Option<SecurityHeaders>,
    /// Rate limits; a request must pass every one (429 otherwise). They are checked in order,
    /// and a limit that passed counts the request even when a later one refuses it.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitConfig>,
    /// WebSocket upgrades on this route (`Upgrade: websocket`). Without this section the
    /// route refuses them with 403.
    #[serde(default)]
    pub websocket: Option<WebSocketConfig>,
}

/// How a route carries WebSockets: the upgrade request goes through the route's filters like
/// any request, then the two connections are spliced until one side closes or a limit below
/// ends it with a close frame.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Close an upgraded connection when no byte has gone either way for this long.
    #[serde(default = "d::websocket_idle_timeout")]
    pub idle_timeout: Dur,
    /// Close an upgraded connection this long after the upgrade, however busy.
    #[serde(default = "d::websocket_max_lifetime")]
    pub max_lifetime: Dur,
    /// Upgraded connections open at once on this route (per process); an upgrade beyond
    /// gets 503.
    #[serde(default = "d::websocket_max_connections")]
    pub max_connections: usize,
    /// Close the connection when the token it was opened with is revoked.
    #[serde(default = "d::yes")]
    pub close_on_revocation: bool,
    /// The close code sent to both sides when the token is revoked (policy violation).
    #[serde(default = "d::websocket_policy_close_code")]
    pub policy_close_code: u16,
    /// The close code sent to both sides on a drain, the idle timeout or the maximum
    /// lifetime (going away).
    #[serde(default = "d::websocket_going_away_close_code")]
    pub going_away_close_code: u16,
}

/// A rate limit on a route (GCRA: `requests` per `per`, with `burst` at once).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// What the limit counts by: `client_ip`, `route` (all callers together), `subject` (the
    /// authenticated caller), `api_key` (the API key id), `claim:NAME` (a token claim, e.g.
    /// `claim:client_id`), or
    /// `header:NAME` (the header's value; requests without it share one bucket). A list of
    /// these counts each combination of values separately (`["subject", "header:x-tenant"]`).
    pub key: LimitKeys,
    /// Requests allowed per `per`.
    pub requests: u64,
    /// The period the requests are counted over.
    #[serde(default = "d::rate_limit_period")]
    pub per: Dur,
    /// Requests allowed at once; default: `requests`.
    #[serde(default)]
    pub burst: Option<u64>,
    /// Most distinct keys this limit holds in memory (idle keys are dropped first); each tier
    /// holds as many again.
    #[serde(default = "d::rate_limit_max_keys")]
    pub max_keys: usize,
    /// Where the counters live: `local` (this process) or `redis` (shared by every gateway
    /// using the same `[rate_limit_store]`).
    #[serde(default)]
    pub store: LimitStore,
    /// With `store = "redis"`: what happens when Redis cannot answer within its timeout —
    /// `local` keeps limiting in this gateway at its share of the limit
    /// (`rate_limit_store.gateways`), `closed` refuses with 429, `unlimited` lets every
    /// request through.
    #[serde(default)]
    pub on_store_failure: StoreFailure,
    /// With `store = "redis"`: tokens taken from Redis at once and spent locally, so most
    /// requests need no round trip (0: one round trip per request). Each gateway may overshoot
    /// the limit by at most this many requests per key.
    #[serde(default)]
    pub lease: u32,
    /// Claim (dotted path) whose value names the caller's tier; for API keys, the attribute of
    /// that name. A caller whose value names one of `tiers` gets that tier's limit, counted in
    /// buckets of its own; anyone else (no value, an unknown one, or no identity) gets this
    /// limit's own `requests`/`per`/`burst`.
    #[serde(default)]
    pub tier_claim: Option<String>,
    /// Limits per tier, by tier name (the claim's value).
    #[serde(default)]
    pub tiers: BTreeMap<String, RateLimitTier>,
}

/// The limit a tier of callers gets instead of the limit's own.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitTier {
    /// Requests allowed per `per`.
    pub requests: u64,
    /// The period; default: the limit's own `per`.
    #[serde(default)]
    pub per: Option<Dur>,
    /// Requests allowed at once; default: `requests`.
    #[serde(default)]
    pub burst: Option<u64>,
}

/// Where a limit's counters live.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LimitStore {
    /// In this process.
    #[default]
    Local,
    /// In Redis, shared across gateways.
    Redis,
}

/// What a Redis-backed limit does when Redis fails.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StoreFailure {
    /// Keep limiting in this process, at this gateway's share of the limit, aligned with what
    /// Redis last said about the key. `open`, the earlier name, reads as this: failing open
    /// never means unlimited.
    #[default]
    #[serde(alias = "open")]
    Local,
    /// Refuse it (429).
    Closed,
    /// Allow every request while Redis cannot answer (the limit does not apply).
    Unlimited,
}

/// A header condition.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: crate::types::HeaderNameText,
    /// The value must equal this.
    #[serde(default)]
    pub exact: Option<String>,
    /// The value must match this regex.
    #[serde(default)]
    pub regex: Option<RegexStr>,
    /// `true`: the header must be present; `false`: absent. Default: present.
    #[serde(default = "d::yes")]
    pub present: bool,
}

/// CORS policy for a route.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed (`https://app.example.com`), or `*`.
    pub allowed_origins: Vec<String>,
    /// Methods allowed in actual requests.
    #[serde(default = "d::cors_methods")]
    pub allowed_methods: Vec<crate::types::MethodName>,
    /// Request headers allowed.
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Response headers exposed to scripts.
    #[serde(default)]
    pub exposed_headers: Vec<String>,
    /// Allow credentials (cookies, auth headers). Not allowed with origin `*`.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight.
    #[serde(default = "d::cors_max_age")]
    pub max_age: Dur,
}

/// The client that resolves `vault:<mount>/<path>#<field>` secret references through a
/// Vault-compatible server's HTTP API (Warden's authority, HashiCorp Vault, OpenBao).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VaultClientConfig {
    /// The server (`https://vault.internal:8200`); unset: no client, and a `vault:` reference
    /// is an error.
    pub address: Option<String>,
    /// A token to authenticate with (`env:` or `file:` only). With `approle` too, the token is
    /// used first and AppRole logs in when the token is refused or expires.
    pub token: Option<SecretRef>,
    /// AppRole login (`auth/<mount>/login`), for a token that renews itself by logging in again.
    pub approle: Option<VaultAppRoleConfig>,
    /// PEM bundle of CAs for an `https://` address; unset: the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// How often each referenced secret is checked for a new version (KV v2 metadata) or
    /// re-read (KV v1); a change reloads the config.
    pub poll_interval: Dur,
    /// Time allowed for one call to the server.
    pub timeout: Dur,
}

/// An AppRole login for the vault client.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VaultAppRoleConfig {
    /// The role id (`env:` or `file:`).
    pub role_id: SecretRef,
    /// The secret id (`env:` or `file:`).
    pub secret_id: SecretRef,
    /// Where the AppRole method is enabled (`auth/<mount>`).
    #[serde(default = "d::vault_approle_mount")]
    pub mount: String,
}
