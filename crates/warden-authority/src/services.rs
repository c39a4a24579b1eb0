//! The authority's services and its seal: what runs while it is unsealed.
//!
//! The authority is one listener and one store. The store opens *sealed* (no key); while it
//! is, no service exists: the token service cannot sign without its keys and the vault
//! cannot read a secret, so both answer 503 (see `http::compose`). Unsealing (at start with
//! an `auto` seal, or through the vault's `sys/unseal` with key shares) builds the services
//! on the unsealed store, [`Live`], and starts their timers; sealing stops the timers, drops
//! the services (and with them every decrypted key they hold) and seals the store.
//! Transitions are serialised, so a seal racing an unseal leaves one consistent state.
//!
//! With `[authority.ha]` (PostgreSQL only), unsealing is not enough: the services run only on
//! the *active* authority, the one holding the store's leader lock (`warden-store`'s
//! `leader.rs`). The others are *standbys*: unsealed, with no services, answering
//! `sys/health` with 429 and redirecting every other request to the active one (see
//! `app.rs`). A task tries the lock every second while unsealed ([`Services::ha_step`]); the
//! active one checks its lock every second and, if it is lost (its database session died),
//! stops its services at once and becomes a standby. A standby that gets the lock builds the
//! services from the database, as an unseal does, so it serves exactly what the old active
//! one had committed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warden_config::AuthorityConfig;
use warden_store::{LeaderInfo, LeaderLock, Store};

use crate::audit_head::HeadSigner;
use crate::clock::Clock;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::{publisher, Authority, TICK};
use warden_telemetry::{SecurityEvent, SecurityEvents};
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
    /// The certificate authority, with `[authority.ca]` (its routes are in `token_router`).
    pub ca: Option<Arc<warden_ca::Ca>>,
    /// Signs and keeps the audit chain's head (`GET /audit/v1/head`).
    pub audit_head: Arc<HeadSigner>,
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
    ha: Option<Ha>,
    tracer: std::sync::OnceLock<warden_otel::Tracer>,
}

/// How often a standby tries the leader lock, and the active one checks it.
pub const HA_INTERVAL: Duration = Duration::from_secs(1);

/// Active/standby state (`[authority.ha]`).
struct Ha {
    /// This authority's `api_addr`.
    address: String,
    /// A random id of this process, recorded with the lock.
    holder: String,
    /// The lock, while active.
    lock: tokio::sync::Mutex<Option<LeaderLock>>,
    /// The active authority as last read from the store.
    leader: ArcSwapOption<LeaderInfo>,
    /// Wakes the HA task (after an unseal).
    wake: tokio::sync::Notify,
}

/// What an authority is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sealed (or unsealed a moment ago, its services not built yet): only the seal
    /// endpoints answer.
    Sealed,
    /// Unsealed, another authority is active: requests are sent there.
    Standby,
    /// Serving.
    Active,
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
            tracer: std::sync::OnceLock::new(),
            ha: config.ha.enabled.then(|| Ha {
                address: config
                    .ha
                    .api_addr
                    .clone()
                    .unwrap_or_default()
                    .trim_end_matches('/')
                    .to_owned(),
                holder: {
                    let mut b = [0u8; 8];
                    rand::fill(&mut b[..]);
                    b.iter().map(|x| format!("{x:02x}")).collect()
                },
                lock: tokio::sync::Mutex::new(None),
                leader: ArcSwapOption::empty(),
                wake: tokio::sync::Notify::new(),
            }),
        })
    }

    /// What this authority is doing now.
    pub fn role(&self) -> Role {
        if self.live.load().is_some() {
            Role::Active
        } else if self.ha.is_some() && !self.store.is_sealed() {
            Role::Standby
        } else {
            Role::Sealed
        }
    }

    /// Now, by the authority's clock (Unix seconds).
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Whether active/standby is on.
    pub fn ha_enabled(&self) -> bool {
        self.ha.is_some()
    }

    /// The active authority as last seen (with HA): `(its address, whether it is this one,
    /// since when, Unix ms)`.
    pub fn leader(&self) -> Option<(String, bool, i64)> {
        let ha = self.ha.as_ref()?;
        if self.live.load().is_some() {
            let since = ha.leader.load().as_ref().map_or(0, |l| l.since_ms);
            return Some((ha.address.clone(), true, since));
        }
        let l = ha.leader.load_full()?;
        // The row still names this process: it was active and no other has taken over yet.
        if l.holder == ha.holder {
            return None;
        }
        Some((l.address.clone(), false, l.since_ms))
    }

    /// One round of active/standby: a standby tries the lock and, if it gets it, starts the
    /// services; the active one checks its lock and steps down if it is gone; a sealed one
    /// lets go of it. Then re-reads who is active. Run every [`HA_INTERVAL`] by the task
    /// [`Services::spawn_ha`] starts, and at once after an unseal.
    pub async fn ha_step(&self) {
        let Some(ha) = &self.ha else { return };
        {
            let _t = self.transition.lock().await;
            let mut lock = ha.lock.lock().await;
            if self.store.is_sealed() {
                *lock = None;
            } else if let Some(held) = lock.as_ref() {
                if !held.check().await {
                    tracing::error!(
                        "the leader lock's database session is gone: stepping down to standby"
                    );
                    if let Some(live) = self.live.swap(None) {
                        live.stop().await;
                    }
                    *lock = None;
                }
            } else {
                match self.store.try_lead(&ha.address, &ha.holder).await {
                    Ok(Some(held)) => match self.build().await {
                        Ok(live) => {
                            self.live.store(Some(Arc::new(live)));
                            *lock = Some(held);
                            tracing::info!(address = %ha.address, "this authority is now the active one");
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "took the leader lock but the services did not start; letting it go");
                        }
                    },
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "could not try the leader lock"),
                }
            }
        }
        match self.store.leader().await {
            Ok(l) => ha.leader.store(l.map(Arc::new)),
            Err(e) => tracing::warn!(error = %e, "could not read the active authority"),
        }
    }

    /// Starts the active/standby task (a no-op without HA); it ends when `stop` turns true,
    /// letting go of the lock.
    pub(crate) fn spawn_ha(
        self: &Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) -> Option<JoinHandle<()>> {
        self.ha.as_ref()?;
        let s = self.clone();
        Some(tokio::spawn(async move {
            loop {
                s.ha_step().await;
                let Some(ha) = &s.ha else { return };
                tokio::select! {
                    _ = tokio::time::sleep(HA_INTERVAL) => {}
                    _ = ha.wake.notified() => {}
                    _ = stop.wait_for(|v| *v) => break,
                }
            }
            s.shutdown().await;
        }))
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

    /// Sends the authority's spans, and its security events as logs when asked, through
    /// `tracer` (the process's). Once.
    pub fn set_tracer(&self, tracer: warden_otel::Tracer) {
        if let Some(sink) = tracer.event_sink() {
            self.metrics.security_events().send_to(sink);
        }
        let _ = self.tracer.set(tracer);
    }

    /// The tracer (recording nothing unless one was set).
    pub fn tracer(&self) -> &warden_otel::Tracer {
        static OFF: std::sync::OnceLock<warden_otel::Tracer> = std::sync::OnceLock::new();
        self.tracer
            .get()
            .unwrap_or_else(|| OFF.get_or_init(warden_otel::Tracer::default))
    }

    /// The running services, or `None` while sealed.
    pub fn live(&self) -> Option<Arc<Live>> {
        self.live.load_full()
    }

    /// Whether the authority is sealed (see [`Role::Sealed`]); a standby is not.
    pub fn is_sealed(&self) -> bool {
        self.role() == Role::Sealed
    }

    /// Builds the services on the unsealed store and starts their timers. A no-op when they
    /// run already. On failure the store is sealed again (a half-started authority would
    /// answer as unsealed without its services).
    /// With HA, becoming active is the HA task's business: this runs one round of it now
    /// (this authority may stay a standby).
    pub async fn start(&self) -> Result<()> {
        if self.ha.is_some() {
            self.ha_step().await;
            return Ok(());
        }
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
        let authority = Authority::open(
            &self.config,
            self.store.clone(),
            self.clock.clone(),
            self.metrics.security_events().clone(),
        )
        .await?;
        let vault = Vault::open(self.store.clone(), VaultOptions::default())
            .await
            .map_err(|e| crate::AuthorityError::Config(format!("the vault did not open: {e}")))?;
        let ca = match &self.config.ca {
            None => None,
            Some(c) => {
                let settings = c.settings().map_err(|(field, why)| {
                    crate::AuthorityError::Config(format!("{field}: {why}"))
                })?;
                Some(
                    warden_ca::Ca::open(self.store.clone(), settings, self.clock.now())
                        .await
                        .map_err(|e| {
                            crate::AuthorityError::Config(format!("the CA did not open: {e}"))
                        })?,
                )
            }
        };
        if let Some(ca) = &ca {
            ca.set_jwt_authorities(jwt_authorities(&authority));
        }
        let audit_head = Arc::new(
            HeadSigner::open(&self.store, &authority.settings().issuer, self.clock.now()).await?,
        );
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        // Before the services answer, so that no revocation is made before the publisher
        // listens.
        tasks.extend(publisher::spawn(&self.config, &authority, rx.clone())?);
        if let (Some(c), Some(ca)) = (&self.config.ca, &ca) {
            tasks.extend(crate::federation::spawn(c, ca, self.clock.clone(), rx.clone()).await?);
        }
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
        tasks.push(spawn_head_signer(
            audit_head.clone(),
            self.metrics.security_events().clone(),
            self.store.clone(),
            self.clock.clone(),
            self.config.audit.head_interval.0,
            rx.clone(),
        ));
        let upkeep = authority.clone();
        let upkeep_ca = ca.clone();
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
                if let Some(ca) = &upkeep_ca {
                    ca.set_jwt_authorities(jwt_authorities(&upkeep));
                    if let Err(e) = ca.tick(upkeep.now()).await {
                        tracing::error!(error = %e, "CA key rotation failed; retrying at the next tick");
                    }
                }
            }
        }));
        Ok(Live {
            token_router: crate::http::router(authority.clone(), ca.clone()),
            ca,
            audit_head,
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
        if let Some(ha) = &self.ha {
            // A sealed authority is not active: another may take over.
            ha.lock.lock().await.take();
        }
    }

    /// Stops the services for shutdown, leaving the store as it is.
    pub(crate) async fn shutdown(&self) {
        let _t = self.transition.lock().await;
        if let Some(live) = self.live.swap(None) {
            live.stop().await;
        }
        if let Some(ha) = &self.ha {
            ha.lock.lock().await.take();
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
            let fetched: Vec<(String, i64)> = live
                .ca
                .iter()
                .flat_map(|ca| {
                    ca.federated_bundles()
                        .iter()
                        .map(|(td, f)| (td.to_string(), f.fetched_at))
                        .collect::<Vec<_>>()
                })
                .collect();
            self.metrics.set_federation(&fetched);
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

/// The token service's published keys, as the trust bundle's JWT authorities (JWT-SVIDs are
/// signed with them).
fn jwt_authorities(authority: &Authority) -> Vec<serde_json::Value> {
    authority
        .jwks()
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Signs the audit chain's head at once and then every `every`, and publishes each head that
/// moved in the log and the security-event stream (`audit.head`, with the JWS: the log
/// pipeline keeps them, see `audit_head.rs`).
fn spawn_head_signer(
    signer: Arc<HeadSigner>,
    events: SecurityEvents,
    store: Store,
    clock: Arc<dyn Clock>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            match signer.sign(&store, clock.now()).await {
                Ok(h) if last != Some(h.seq) => {
                    last = Some(h.seq);
                    tracing::info!(
                        event = "audit.head",
                        seq = h.seq,
                        hash = %h.hash,
                        head = %h.head,
                        "audit head signed"
                    );
                    events.emit(&SecurityEvent {
                        event: "audit.head",
                        reason: "signed",
                        detail: Some(serde_json::json!({
                            "seq": h.seq,
                            "hash": h.hash,
                            "head": h.head,
                        })),
                        ..Default::default()
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot sign the audit head; retrying at the next interval")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}
