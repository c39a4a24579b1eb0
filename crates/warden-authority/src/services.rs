//! The authority's services and its seal: what runs while it is unsealed.
//!
//! The authority is one listener and one store. The store opens *sealed* (no key); while it
//! is, no service exists: the token service cannot sign without its keys and the vault
//! cannot read a secret, so both answer 503 (see `http::compose`). Unsealing (at start with
//! an `auto` seal, or through the vault's `sys/unseal` with key shares) builds the services
//! on the unsealed store, [`Live`], and starts their timers; sealing stops the timers, drops
//! the services (and with them every decrypted key they hold) and seals the store.
//! Transitions are serialised, so a seal racing an unseal leaves one consistent state.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warden_config::AuthorityConfig;
use warden_store::Store;

use crate::clock::Clock;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::{publisher, Authority, TICK};
use warden_vault::seal::Unsealer;
use warden_vault::{Vault, VaultError, VaultOptions};

/// The services of an unsealed authority.
pub struct Live {
    /// The token service.
    pub authority: Arc<Authority>,
    /// Its routes (OAuth, discovery, admin).
    pub(crate) token_router: Router,
    /// The vault.
    pub vault: Vault,
    /// Its routes (below `/v1`).
    pub(crate) vault_router: Router,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

/// The authority's state across seal and unseal.
pub struct Services {
    config: AuthorityConfig,
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    unsealer: Unsealer,
    live: ArcSwapOption<Live>,
    transition: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("sealed", &self.live.load().is_none())
            .finish_non_exhaustive()
    }
}

impl Services {
    /// The services over `store`, none running yet (see [`Services::start`]).
    pub fn new(config: &AuthorityConfig, store: Store, clock: Arc<dyn Clock>) -> Arc<Services> {
        Arc::new(Services {
            config: config.clone(),
            clock,
            metrics: Arc::new(Metrics::new()),
            unsealer: Unsealer::new(store.clone(), config.seal.mode),
            store,
            live: ArcSwapOption::empty(),
            transition: tokio::sync::Mutex::new(()),
        })
    }

    /// The store (sealed or not).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The config the services are built from.
    pub fn config(&self) -> &AuthorityConfig {
        &self.config
    }

    /// The unseal process (key shares given so far).
    pub fn unsealer(&self) -> &Unsealer {
        &self.unsealer
    }

    /// The authority's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The running services, or `None` while sealed.
    pub fn live(&self) -> Option<Arc<Live>> {
        self.live.load_full()
    }

    /// Whether the services are down (the store is sealed, or was unsealed a moment ago and
    /// the services are not built yet).
    pub fn is_sealed(&self) -> bool {
        self.live.load().is_none()
    }

    /// Builds the services on the unsealed store and starts their timers. A no-op when they
    /// run already. On failure the store is sealed again (a half-started authority would
    /// answer as unsealed without its services).
    pub async fn start(&self) -> Result<()> {
        let _t = self.transition.lock().await;
        if self.live.load().is_some() {
            return Ok(());
        }
        match self.build().await {
            Ok(live) => {
                self.live.store(Some(Arc::new(live)));
                tracing::info!("authority unsealed: services started");
                Ok(())
            }
            Err(e) => {
                self.store.seal();
                Err(e)
            }
        }
    }

    async fn build(&self) -> Result<Live> {
        let authority =
            Authority::open(&self.config, self.store.clone(), self.clock.clone()).await?;
        let vault = Vault::open(self.store.clone(), VaultOptions::default())
            .await
            .map_err(|e| crate::AuthorityError::Config(format!("the vault did not open: {e}")))?;
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        // Before the services answer, so that no revocation is made before the publisher
        // listens.
        tasks.extend(publisher::spawn(&self.config, &authority, rx.clone())?);
        if let Some(every) = authority.audit.aggregate_interval() {
            let flusher = authority.clone();
            let mut rx_flush = rx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let stop = tokio::select! {
                        _ = tokio::time::sleep(every) => false,
                        _ = rx_flush.wait_for(|s| *s) => true,
                    };
                    // At seal and shutdown too: the counts since the last flush are not lost.
                    flusher.flush_issuance_audit().await;
                    if stop {
                        return;
                    }
                }
            }));
        }
        let upkeep = authority.clone();
        let mut rx_tick = rx;
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(TICK) => {}
                    _ = rx_tick.wait_for(|s| *s) => return,
                }
                if let Err(e) = upkeep.tick().await {
                    tracing::error!(error = %e, "authority upkeep failed; retrying at the next tick");
                }
            }
        }));
        Ok(Live {
            token_router: crate::http::router(authority.clone()),
            vault_router: vault.router(),
            vault,
            authority,
            stop,
            tasks: Mutex::new(tasks),
        })
    }

    /// Stops the services (their timers finish, the issuance counts are flushed), drops
    /// them, and seals the store. A no-op when sealed.
    pub async fn seal(&self) {
        let _t = self.transition.lock().await;
        if let Some(live) = self.live.swap(None) {
            live.stop().await;
            tracing::info!("authority sealed: services stopped");
        }
        self.store.seal();
    }

    /// Stops the services for shutdown, leaving the store as it is.
    pub(crate) async fn shutdown(&self) {
        let _t = self.transition.lock().await;
        if let Some(live) = self.live.swap(None) {
            live.stop().await;
        }
    }

    /// Sets the state gauges and renders the metrics.
    pub async fn render_metrics(&self) -> String {
        let now = self.clock.now();
        let (mut key_age, mut term, mut dek_age) = (0, 0, 0);
        if let Some(live) = self.live() {
            let ring = live.authority.keys.ring();
            if let Some(k) = ring.keys().iter().rev().find(|k| k.activates_at <= now) {
                key_age = now - k.activates_at.max(k.created);
            }
            if let Ok(s) = self.store.key_status().await {
                term = i64::from(s.term);
                dek_age = now - s.install_time_ms / 1000;
            }
        }
        self.metrics
            .set_state(self.is_sealed(), key_age, term, dek_age);
        self.metrics.encode()
    }
}

impl Live {
    async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), t).await;
        }
    }
}

impl Services {
    /// A new root token (after `sys/init`).
    pub(crate) async fn create_root_token(&self) -> Result<zeroize::Zeroizing<String>, VaultError> {
        let live = self.live().ok_or(VaultError::Sealed)?;
        live.vault
            .create_root_token(None)
            .await
            .map(zeroize::Zeroizing::new)
    }

    /// Checks that the request's Vault token (`X-Vault-Token` or `Authorization: Bearer`)
    /// holds `cap` on `path` (and `sudo` where Vault wants it: `sys/seal`, `sys/rotate`).
    pub(crate) async fn require(
        &self,
        headers: &axum::http::HeaderMap,
        path: &str,
        cap: warden_vault::Caps,
    ) -> Result<(), VaultError> {
        let live = self.live().ok_or(VaultError::Sealed)?;
        let token = warden_vault::api::token_from(headers);
        live.vault
            .authorize(token.as_deref(), path, cap)
            .await
            .map(|_| ())
    }
}
