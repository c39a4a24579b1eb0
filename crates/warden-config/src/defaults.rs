//! Every default in one place.

use std::net::SocketAddr;

use crate::auth::*;
use crate::model::*;
use crate::types::{ByteSize, Dur};

pub(crate) fn yes() -> bool {
    true
}
pub(crate) fn client_auth_mode() -> ClientAuthMode {
    ClientAuthMode::Required
}
pub(crate) fn connect_timeout() -> Dur {
    Dur::secs(2)
}
pub(crate) fn response_timeout() -> Dur {
    Dur::secs(30)
}
/// Per endpoint and data-plane thread. 256 requests in flight already saturate a typical
/// upstream (more connections add queueing there, not throughput), and it keeps a burst's
/// connections well inside the default file-descriptor limits.
pub(crate) fn max_connections_per_endpoint() -> usize {
    256
}
/// As many as the cap: a burst's connections all stay for the next one (fewer would close
/// some after each burst and open them again at the next: churn).
pub(crate) fn pool_max_idle() -> usize {
    max_connections_per_endpoint()
}
pub(crate) fn pool_idle_timeout() -> Dur {
    Dur::secs(90)
}
pub(crate) fn health_path() -> String {
    "/healthz".into()
}
pub(crate) fn health_interval() -> Dur {
    Dur::secs(5)
}
pub(crate) fn health_timeout() -> Dur {
    Dur::secs(1)
}
pub(crate) fn health_healthy() -> u32 {
    2
}
pub(crate) fn health_unhealthy() -> u32 {
    3
}
pub(crate) fn cors_methods() -> Vec<crate::types::MethodName> {
    ["GET", "HEAD", "POST"]
        .map(crate::types::Parsed::new)
        .to_vec()
}
pub(crate) fn rate_limit_period() -> Dur {
    Dur::secs(1)
}
pub(crate) fn rate_limit_max_keys() -> usize {
    100_000
}
pub(crate) fn cors_max_age() -> Dur {
    Dur::secs(600)
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: ByteSize(16 * 1024),
            max_headers: 100,
            max_uri_bytes: ByteSize(8 * 1024),
            max_body_bytes: ByteSize(10 * 1024 * 1024),
            header_read_timeout: Dur::secs(10),
            idle_timeout: Dur::secs(60),
            request_timeout: Dur::secs(60),
            max_connections: 20_000,
            max_in_flight: 10_000,
            data_threads: 0,
            drain_timeout: Dur::secs(30),
            allow_encoded_slash: false,
        }
    }
}

impl Default for ForwardingConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            request_id_header: crate::types::Parsed::new("x-request-id"),
            headers_with_underscores: Default::default(),
        }
    }
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        Self {
            hsts: "max-age=31536000; includeSubDomains".into(),
            content_type_options: true,
            referrer_policy: "no-referrer".into(),
            frame_options: "DENY".into(),
            extra: Default::default(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 9901)),
            enabled: true,
            token: None,
        }
    }
}

impl Default for crate::model::TracingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "http://127.0.0.1:4318".into(),
            protocol: crate::model::OtlpProtocol::HttpProtobuf,
            ca_file: None,
            sampling_ratio: 0.01,
            service_name: "warden".into(),
            timeout: Dur::secs(10),
            max_queue_size: 2048,
            max_export_batch_size: 512,
            scheduled_delay: Dur::secs(5),
            record_subject: true,
            security_events: true,
        }
    }
}

impl Default for crate::model::SecurityEventsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "stdout".into(),
            max_lines_per_second: 10,
        }
    }
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "stdout".into(),
        }
    }
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            poll_interval: Dur::secs(2),
        }
    }
}

pub(crate) fn jwt_leeway() -> Dur {
    Dur::secs(30)
}
pub(crate) fn jwt_max_token_bytes() -> ByteSize {
    ByteSize(8 * 1024)
}
pub(crate) fn jwks_refresh_min() -> Dur {
    Dur::secs(60)
}
pub(crate) fn jwks_refresh_max() -> Dur {
    Dur::secs(3600)
}
pub(crate) fn jwks_unknown_kid_interval() -> Dur {
    Dur::secs(30)
}
pub(crate) fn jwks_max_bytes() -> ByteSize {
    ByteSize(256 * 1024)
}
pub(crate) fn jwks_timeout() -> Dur {
    Dur::secs(5)
}
pub(crate) fn introspection_timeout() -> Dur {
    Dur::secs(2)
}
pub(crate) fn introspection_cache_ttl() -> Dur {
    Dur::secs(300)
}
pub(crate) fn introspection_negative_ttl() -> Dur {
    Dur::secs(10)
}
pub(crate) fn introspection_cache_entries() -> usize {
    100_000
}

impl Default for OutlierDetectionConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.0,
            window: Dur::secs(10),
            min_requests: 20,
            base_ejection: Dur::secs(30),
            max_ejection: Dur::secs(300),
            half_open_requests: 1,
            max_ejected_percent: 50,
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 2,
            methods: ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]
                .map(crate::types::Parsed::new)
                .to_vec(),
            statuses: vec![502, 503, 504],
            // UNAVAILABLE: the server did not process the call.
            grpc_statuses: vec![14],
            per_try_timeout: Dur::secs(5),
            backoff_base: Dur::millis(25),
            backoff_max: Dur::millis(250),
            budget_percent: 20,
            min_retries_in_flight: 3,
            buffer_body_bytes: ByteSize(64 * 1024),
        }
    }
}

impl Default for AdaptiveConcurrencyConfig {
    fn default() -> Self {
        Self {
            initial_limit: 20,
            min_limit: 5,
            max_limit: 1000,
            tolerance: 1.5,
        }
    }
}

impl Default for RateLimitStoreConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            password: None,
            timeout: Dur::millis(10),
            key_prefix: "warden:rl:".into(),
            gateways: 1,
        }
    }
}

impl Default for ApiKeysConfig {
    fn default() -> Self {
        Self {
            header: "x-api-key".into(),
            file: None,
            keys: Vec::new(),
        }
    }
}

impl Default for ClientCertConfig {
    fn default() -> Self {
        Self {
            identity: vec![CertIdentitySource::Spiffe],
            trust_domains: Vec::new(),
        }
    }
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
        }
    }
}

/// The Redis pub/sub channel revocations are pushed on (authority and gateway alike).
pub(crate) fn revocation_channel() -> String {
    "warden:revocations".into()
}

impl Default for RevocationConfig {
    fn default() -> Self {
        Self {
            feed_url: None,
            feed_token: None,
            poll_interval: Dur::secs(2),
            ca: None,
            redis_url: None,
            redis_password: None,
            redis_channel: revocation_channel(),
            signed_by: None,
            max_message_age: Dur::secs(60),
        }
    }
}

impl Default for InternalTokenConfig {
    fn default() -> Self {
        Self {
            issuer: "warden-gateway".into(),
            lifetime: Dur::secs(60),
            signing_key: None,
        }
    }
}

impl Default for crate::authority::AuthorityConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 8200)),
            tls: None,
            header_read_timeout: Dur::secs(10),
            idle_timeout: Dur::secs(60),
            data_dir: "/var/lib/warden".into(),
            storage: None,
            key_encryption_key: None,
            issuer: "http://127.0.0.1:8200".into(),
            token_lifetime: Dur::secs(300),
            max_token_lifetime: Dur::secs(3600),
            signing_alg: "ES256".into(),
            key_rotation: Dur::secs(86_400),
            key_publish_ahead: Dur::secs(900),
            jwks_max_age: Dur::secs(300),
            admin_token: None,
            revocation_feed_token: None,
            assertion_max_lifetime: Dur::secs(3600),
            failed_auth: Default::default(),
            redis_url: None,
            redis_password: None,
            redis_channel: revocation_channel(),
            audit: Default::default(),
            seal: Default::default(),
            ha: Default::default(),
            ca: None,
        }
    }
}

impl Default for crate::authority::AuthorityAuditConfig {
    fn default() -> Self {
        Self {
            max_age: None,
            max_records: None,
            issuance: crate::authority::IssuanceAudit::Every,
            sample_every: 100,
            aggregate_interval: Dur::secs(60),
            head_interval: Dur::secs(60),
        }
    }
}

impl Default for crate::authority::FailedAuthConfig {
    fn default() -> Self {
        Self {
            per_client: 10,
            per_address: 30,
            period: Dur::secs(60),
            max_keys: 100_000,
        }
    }
}

impl Default for crate::authority::SealConfig {
    fn default() -> Self {
        Self {
            mode: crate::authority::SealMode::Auto,
        }
    }
}

pub(crate) fn vault_approle_mount() -> String {
    "approle".into()
}

impl Default for VaultClientConfig {
    fn default() -> Self {
        Self {
            address: None,
            token: None,
            approle: None,
            ca_file: None,
            poll_interval: Dur::secs(30),
            timeout: Dur::secs(5),
        }
    }
}

/// Time allowed for each call from the sidecar to the authority.
pub(crate) fn sidecar_timeout() -> Dur {
    Dur::secs(10)
}

pub(crate) fn websocket_idle_timeout() -> Dur {
    Dur::secs(300)
}

pub(crate) fn websocket_max_lifetime() -> Dur {
    Dur::secs(24 * 3600)
}

pub(crate) fn websocket_max_connections() -> usize {
    10_000
}

pub(crate) fn websocket_policy_close_code() -> u16 {
    1008
}

pub(crate) fn websocket_going_away_close_code() -> u16 {
    1001
}

pub(crate) fn stream_idle_timeout() -> Dur {
    Dur::secs(300)
}
