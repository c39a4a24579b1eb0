//! The token service's state: settings, store, clients, keys, revocations, throttle. HTTP
//! handlers and the CLI both work through it.

use std::sync::Arc;

use serde_json::Value;
use warden_config::AuthorityConfig;
use warden_store::Store;
use warden_telemetry::SecurityEvents;

use crate::audit::{Audit, Issuance};
use crate::client_auth::ClientKeys;
use crate::clients::Registry;
use crate::clock::Clock;
use crate::error::Result;
use crate::keys::Keys;
use crate::revocation::{Revocations, Revoked};
use crate::settings::Settings;
use crate::throttle::Throttle;
use crate::token_cache::TokenCache;

/// The token service.
pub struct Authority {
    pub(crate) settings: Settings,
    pub(crate) store: Store,
    pub(crate) registry: Registry,
    pub(crate) keys: Arc<Keys>,
    pub(crate) audit: Audit,
    pub(crate) throttle: Throttle,
    pub(crate) revocations: Revocations,
    /// Tokens introspected before (see [`crate::token_cache`]).
    pub(crate) introspected: TokenCache,
    pub(crate) client_keys: ClientKeys,
    pub(crate) revoked_tx: tokio::sync::broadcast::Sender<Revoked>,
    /// Security events (failed client authentications, issued, exchanged and revoked
    /// tokens, refusals): the authority's stream, see [`crate::metrics::Metrics`].
    pub(crate) events: SecurityEvents,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Opens the token service on an open store: loads (or makes) the secret-hashing key and
    /// the signing keys. Its security decisions go to `events`.
    pub async fn open(
        config: &AuthorityConfig,
        store: Store,
        clock: Arc<dyn Clock>,
        events: SecurityEvents,
    ) -> Result<Arc<Authority>> {
        let settings = Settings::from_config(config)?;
        let audit = Audit::with_issuance(store.clone(), Issuance::from_config(&config.audit));
        let registry = Registry::open(store.clone(), audit.clone()).await?;
        let keys = Keys::open(store.clone(), audit.clone(), &settings, clock.now()).await?;
        Ok(Arc::new(Authority {
            throttle: Throttle::new(&settings),
            revocations: Revocations::new(store.clone()),
            introspected: TokenCache::default(),
            client_keys: ClientKeys::new(),
            revoked_tx: tokio::sync::broadcast::channel(1024).0,
            settings,
            store,
            registry,
            keys,
            audit,
            events,
            clock,
        }))
    }

    /// Now, by the authority's clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The client registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The compiled settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The published JWKS.
    pub fn jwks(&self) -> Value {
        self.keys.ring().jwks().clone()
    }

    /// The published signing keys, oldest first, for the admin console: kid, algorithm,
    /// when made and from when they sign, and whether each signs now. No key material.
    pub fn key_summary(&self) -> Vec<Value> {
        let now = self.now();
        let ring = self.keys.ring();
        let signing = ring.signer(now).map(|k| k.kid().to_owned());
        ring.keys()
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kid": k.key.kid(),
                    "alg": k.key.alg().name(),
                    "created": k.created,
                    "age_seconds": now - k.created,
                    "activates_at": k.activates_at,
                    "signing": signing.as_deref() == Some(k.key.kid()),
                })
            })
            .collect()
    }

    /// The `kid` that signs now.
    pub fn current_kid(&self) -> Option<String> {
        self.keys
            .ring()
            .signer(self.now())
            .map(|k| k.kid().to_owned())
    }

    /// Revocations made by this instance as they happen (after they are stored), for pushing
    /// to gateways (e.g. Redis pub/sub). A slow receiver misses entries (`Lagged`); the feed
    /// at `/oauth2/revocations` still has them, so a pusher is an accelerator, not the record.
    pub fn subscribe_revocations(&self) -> tokio::sync::broadcast::Receiver<Revoked> {
        self.revoked_tx.subscribe()
    }

    /// Periodic upkeep: key rotation, deletion of expired revocations and assertion ids, and
    /// audit retention (`authority.audit.max_age`, `max_records`: the oldest records are
    /// pruned behind a MACed checkpoint, see `warden_store::Store::prune_audit`).
    /// `start` runs it every [`crate::TICK`]; tests call it after moving their clock.
    pub async fn tick(&self) -> Result<()> {
        let now = self.now();
        self.keys.rotate(&self.settings, now).await?;
        self.revocations.cleanup(now).await?;
        let keep = self.settings.audit_retention;
        if keep != warden_store::AuditRetention::default() {
            let report = self
                .store
                .prune_audit(keep, now.saturating_mul(1000))
                .await?;
            if report.pruned > 0 {
                tracing::info!(
                    pruned = report.pruned,
                    checkpoint = report.checkpoint.map_or(0, |c| c.seq),
                    "audit retention: pruned the oldest records"
                );
            }
        }
        Ok(())
    }

    /// Writes the issuance counts gathered since the last flush (`authority.audit.issuance =
    /// "aggregated"`; a no-op otherwise). `start` runs it every `aggregate_interval` and at
    /// shutdown.
    pub async fn flush_issuance_audit(&self) {
        self.audit.flush_issuance(self.now()).await;
    }
}
