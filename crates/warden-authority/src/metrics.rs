//! The authority's Prometheus metrics, served at `GET /metrics` on its listener.
//!
//! One registry for the whole authority, made once at start and kept across seal and unseal
//! (the services are rebuilt, their counters are not reset). Each service counts its own
//! requests: the token service by what its handlers tag on their responses (the grant type on
//! a success, the RFC 6749 error code on a refusal), the vault by mount and status. Label
//! values are fixed names, status codes and at most [`MAX_MOUNT_LABELS`] mount names, so no
//! client can grow the registry. Gauges that describe state (seal, key ages) are set when
//! the metrics are read.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use warden_telemetry::metrics::{register, series_names, EventReason, MetricType};
use warden_telemetry::SecurityEvents;

/// Distinct vault mount labels kept; requests to further mounts count as `other`.
pub const MAX_MOUNT_LABELS: usize = 64;

type Labels = Vec<(&'static str, String)>;

/// A grant type the token service issued a token for (a response extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantTag(pub &'static str);

/// The authority's metrics.
pub struct Metrics {
    registry: Registry,
    families: Vec<(String, MetricType)>,
    grants: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    introspections: Family<Labels, Counter>,
    revocations: Counter,
    signing_key_age: Gauge,
    sealed: Gauge,
    data_key_term: Gauge,
    data_key_age: Gauge,
    vault_requests: Family<Labels, Counter>,
    federated_fetched: Family<Labels, Gauge>,
    mounts: Mutex<HashSet<String>>,
    security: SecurityEvents,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("warden_authority");
        let mut families = Vec::new();
        let m = Metrics {
            grants: Family::default(),
            failures: Family::default(),
            introspections: Family::default(),
            revocations: Counter::default(),
            signing_key_age: Gauge::default(),
            sealed: Gauge::default(),
            data_key_term: Gauge::default(),
            data_key_age: Gauge::default(),
            vault_requests: Family::default(),
            federated_fetched: Family::default(),
            mounts: Mutex::new(HashSet::new()),
            security: SecurityEvents::new(Family::default(), Counter::default()),
            registry: Registry::default(),
            families: Vec::new(),
        };
        register(
            &mut registry,
            &mut families,
            "token_grants",
            "Access tokens issued, by grant type",
            m.grants.clone(),
        );
        register(
            &mut registry,
            &mut families,
            "token_failures",
            "Token service requests refused, by endpoint and RFC 6749 error code",
            m.failures.clone(),
        );
        register(
            &mut registry,
            &mut families,
            "introspections",
            "Introspection requests answered, by result (active, inactive)",
            m.introspections.clone(),
        );
        register(
            &mut registry,
            &mut families,
            "revocations",
            "Tokens revoked through /oauth2/revoke",
            m.revocations.clone(),
        );
        register(
            &mut registry,
            &mut families,
            "signing_key_age_seconds",
            "Age of the key that signs tokens now (0 while sealed)",
            m.signing_key_age.clone(),
        );
        register(
            &mut registry,
            &mut families,
            "sealed",
            "1 while the authority is sealed, 0 when unsealed",
            m.sealed.clone(),
        );
        register(
            &mut registry,
            &mut families,
            "data_key_term",
            "The store's data-encryption key term (sys/key-status; 0 while sealed)",
            m.data_key_term.clone(),
        );
        register(
            &mut registry,
            &mut families,
            "data_key_age_seconds",
            "Age of the data-encryption key new writes use (0 while sealed)",
            m.data_key_age.clone(),
        );
        register(
            &mut registry,
            &mut families,
            "vault_requests",
            "Vault API requests, by mount (first path segment; `sys`, `auth`, ...) and status",
            m.vault_requests.clone(),
        );
        register(
            &mut registry,
            &mut families,
            "ca_federated_bundle_fetched_timestamp_seconds",
            "When each federated trust domain's bundle was last fetched and accepted (Unix \
             seconds; alert when it falls behind the bundle's refresh hint)",
            m.federated_fetched.clone(),
        );
        let security_events = Family::<EventReason, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "security_events",
            "Security decisions of the token service, vault and CA (failed client \
             authentications, issued, exchanged and revoked tokens, refusals), by event and reason",
            security_events.clone(),
        );
        let suppressed = Counter::default();
        register(
            &mut registry,
            &mut families,
            "security_events_suppressed",
            "Security-event lines left out by the per-event rate limit (the events are still counted)",
            suppressed.clone(),
        );
        Metrics {
            registry,
            families,
            security: SecurityEvents::new(security_events, suppressed).component("authority"),
            ..m
        }
    }

    /// The authority's security-event stream (counted in
    /// `warden_authority_security_events_total`; written once [`SecurityEvents::write_to`]
    /// is given a writer, by `warden serve` from `[security_events]`).
    pub fn security_events(&self) -> &SecurityEvents {
        &self.security
    }

    /// Counts one token service response on `endpoint` (`token`, `introspect`, `revoke`).
    pub(crate) fn token_response(
        &self,
        endpoint: &'static str,
        status: u16,
        grant: Option<GrantTag>,
        error: Option<crate::ErrorCode>,
    ) {
        if let Some(code) = error {
            self.failures
                .get_or_create(&vec![
                    ("endpoint", endpoint.to_owned()),
                    ("reason", code.as_str().to_owned()),
                ])
                .inc();
            return;
        }
        if !(200..300).contains(&status) {
            return;
        }
        match endpoint {
            "token" => {
                if let Some(GrantTag(g)) = grant {
                    self.grants
                        .get_or_create(&vec![("grant_type", g.to_owned())])
                        .inc();
                }
            }
            "introspect" => {
                self.introspections
                    .get_or_create(&vec![("result", "answered".to_owned())])
                    .inc();
            }
            "revoke" => {
                self.revocations.inc();
            }
            _ => {}
        }
    }

    /// Counts one vault response for the mount named by the first segment of `path` (below
    /// `/v1/`).
    pub fn vault_response(&self, path: &str, status: u16) {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let mount = {
            let mut known = self.mounts.lock().unwrap_or_else(|p| p.into_inner());
            if known.contains(first) {
                first.to_owned()
            } else if known.len() < MAX_MOUNT_LABELS && status != 404 && !first.is_empty() {
                known.insert(first.to_owned());
                first.to_owned()
            } else {
                "other".to_owned()
            }
        };
        self.vault_requests
            .get_or_create(&vec![("mount", mount), ("status", status.to_string())])
            .inc();
    }

    /// Sets the state gauges (called before each scrape).
    pub(crate) fn set_state(&self, sealed: bool, signing_key_age: i64, term: i64, dek_age: i64) {
        self.sealed.set(i64::from(sealed));
        self.signing_key_age.set(signing_key_age.max(0));
        self.data_key_term.set(term);
        self.data_key_age.set(dek_age.max(0));
    }

    /// Sets the federated bundles' fetch times (trust domain, Unix seconds): the configured
    /// trust domains, so the label set is bounded by the config.
    pub(crate) fn set_federation(&self, fetched: &[(String, i64)]) {
        self.federated_fetched.clear();
        for (td, at) in fetched {
            self.federated_fetched
                .get_or_create(&vec![("trust_domain", td.clone())])
                .set(*at);
        }
    }

    /// Every series name this registry can write, whether or not it holds a series yet.
    pub fn series_names(&self) -> Vec<String> {
        series_names("warden_authority", &self.families)
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
