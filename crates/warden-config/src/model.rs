//! The config file's schema. Every field is documented here, and every default lives in
//! [`crate::defaults`]; `examples/gateway.toml` shows each option in use.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::defaults as d;
use crate::types::{ByteSize, Cidr, Dur, RegexStr, SecretRef};

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
    /// Hot reload of this file.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Credentials the gateway verifies (JWT issuers, API keys, introspection, client
    /// certificates), policies, and internal tokens.
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
    /// Where the gateway accepts connections.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Groups of upstream endpoints that routes send traffic to.
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
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
}

/// How the gateway forwards requests.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardingConfig {
    /// Peers whose `X-Forwarded-*` headers are believed and extended. From anyone else,
    /// incoming `X-Forwarded-*` and `Forwarded` headers are replaced.
    pub trusted_proxies: Vec<Cidr>,
    /// Header carrying the request id: kept when the client sent a valid one, generated otherwise.
    pub request_id_header: String,
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
    /// Idle pooled connections kept per endpoint.
    #[serde(default = "d::pool_max_idle")]
    pub pool_max_idle: usize,
    /// How long a pooled connection may stay idle.
    #[serde(default = "d::pool_idle_timeout")]
    pub pool_idle_timeout: Dur,
    /// TLS to the endpoints (needed for `https://`).
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// Active health checking.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
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
    pub methods: Vec<String>,
    /// Header conditions; all must hold.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    /// Replace the matched `path_prefix` with this before forwarding.
    #[serde(default)]
    pub rewrite_prefix: Option<String>,
    /// Override of `server.request_timeout` for this route.
    #[serde(default)]
    pub timeout: Option<Dur>,
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
}

/// A rate limit on a route (GCRA: `requests` per `per`, with `burst` at once).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// What the limit counts by: `client_ip`, `route` (all callers together), `subject` (the
    /// authenticated caller), `api_key` (the API key id), `claim:NAME` (a token claim, e.g.
    /// `claim:client_id`), or
    /// `header:NAME` (the header's value; requests without it share one bucket).
    pub key: String,
    /// Requests allowed per `per`.
    pub requests: u64,
    /// The period the requests are counted over.
    #[serde(default = "d::rate_limit_period")]
    pub per: Dur,
    /// Requests allowed at once; default: `requests`.
    #[serde(default)]
    pub burst: Option<u64>,
    /// Most distinct keys this limit holds in memory (idle keys are dropped first).
    #[serde(default = "d::rate_limit_max_keys")]
    pub max_keys: usize,
}

/// A header condition.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
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
    pub allowed_methods: Vec<String>,
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
