//! Warden's authority: one listener and one sealed store for its services — the OAuth 2.0
//! token service and the vault (Vault's HTTP API at `/v1`) — plus its Prometheus metrics.
//!
//! - Services ([`services`], [`app`]): the store opens sealed or (auto seal) unsealed; while
//!   sealed no service exists and both answer 503; unsealing builds them, sealing drops them.
//!
//! The token service:
//!
//! - Clients ([`clients`]): ids, scopes, audiences, grant types, authentication method,
//!   several secrets (stored as keyed hashes) for rotation without downtime.
//! - Grants ([`grants`]): `client_credentials` and RFC 8693 token exchange, at `/oauth2/token`,
//!   with `client_secret_basic`, `client_secret_post`, `private_key_jwt` and `tls_client_auth`
//!   ([`client_auth`]).
//! - Tokens ([`tokens`]): RFC 9068 JWT access tokens signed by keys that rotate on a schedule
//!   ([`keys`]), published at `/oauth2/jwks`; introspection (RFC 7662), revocation (RFC 7009)
//!   and a revocation feed for gateways ([`revocation`]); RFC 8414 metadata.
//! - Every issuance, exchange, revocation, client change and failed authentication goes to
//!   the store's audit log ([`audit`]); failed authentications are throttled ([`throttle`]).
//!
//! State lives in `warden-store` (SQLite or PostgreSQL, sealed under the configured
//! key-encryption key). [`start`] binds the listener and runs the upkeep timer; the CLI works
//! on the same state through [`Authority`] without a listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use warden_config::AuthorityConfig;
use warden_store::Store;

pub mod app;
pub mod audit;
pub mod audit_head;
mod authority;
pub mod client_auth;
pub mod clients;
pub mod clock;
mod error;
mod federation;
pub mod form;
pub mod grants;
pub mod http;
pub mod keys;
pub mod metrics;
mod publisher;
pub mod revocation;
pub mod server;
pub mod services;
pub mod settings;
pub mod status;
pub mod throttle;
pub mod token_cache;
pub mod tokens;
mod traced;
mod vault;

pub use authority::Authority;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{AuthorityError, ErrorCode, OAuthError, Refusal, Result};
pub use services::{Live, Services};
pub use settings::Settings;

/// How often the upkeep (key rotation, clean-up of expired revocations) runs.
pub const TICK: Duration = Duration::from_secs(30);

/// A running authority.
pub struct AuthorityHandle {
    services: Arc<Services>,
    addr: SocketAddr,
    tls: bool,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for AuthorityHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Opens the configured store (`storage`, or `<data_dir>/authority.db`): with the configured
/// key-encryption key (`seal.mode = "auto"`), unsealed; with key shares, sealed.
pub async fn open_store(config: &AuthorityConfig) -> Result<Store> {
    let location = settings::storage_location(config);
    if !location.contains("://") {
        if let Some(dir) = std::path::Path::new(&location).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    AuthorityError::Config(format!("cannot create `{}`: {e}", dir.display()))
                })?;
            }
        }
    }
    if config.seal.mode == warden_config::SealMode::Shares {
        return Ok(Store::open_sealed(&location).await?);
    }
    let kek = settings::read_kek(config)?;
    Ok(Store::open(&location, &kek).await?)
}

/// Starts the authority from its config: opens the store; when it is unsealed (auto seal),
/// starts the services (loads keys and clients, starts the upkeep timer); binds `listen` (TLS
/// when `tls` is set).
pub async fn start(config: &AuthorityConfig) -> Result<AuthorityHandle> {
    start_with_events(config, None).await
}

/// [`start`], writing the authority's security events (`[security_events]`) to `events` with
/// its lines-per-second limit from the first one on (the keys made at a first start, say).
pub async fn start_with_events(
    config: &AuthorityConfig,
    events: Option<(warden_telemetry::AccessLog, u32)>,
) -> Result<AuthorityHandle> {
    start_with_telemetry(config, events, warden_otel::Tracer::default(), false).await
}

/// [`start_with_events`], with the process's OpenTelemetry tracer: a span for each request
/// the authority serves, and its security events as logs when `[tracing]` asks for them.
/// With `pin_files` (a signed config is enforced), the listener's certificate files are read
/// once and not watched: they change with a restart on a config whose signature covers them.
pub async fn start_with_telemetry(
    config: &AuthorityConfig,
    events: Option<(warden_telemetry::AccessLog, u32)>,
    tracer: warden_otel::Tracer,
    pin_files: bool,
) -> Result<AuthorityHandle> {
    let store = open_store(config).await?;
    let services = Services::new(config, store, Arc::new(SystemClock));
    services.set_tracer(tracer);
    if let Some((out, per_second)) = events {
        services
            .metrics()
            .security_events()
            .write_to(out, per_second);
    }
    launch(config, services, !pin_files).await
}

/// [`start`] on a given store (sealed or not) and clock (tests, and embedding in `warden dev`).
pub async fn start_with(
    config: &AuthorityConfig,
    store: Store,
    clock: Arc<dyn Clock>,
) -> Result<AuthorityHandle> {
    launch(config, Services::new(config, store, clock), true).await
}

async fn launch(
    config: &AuthorityConfig,
    services: Arc<Services>,
    watch_certs: bool,
) -> Result<AuthorityHandle> {
    if !services.store().is_sealed() {
        services.start().await?;
    }
    let listen_err = |e: std::io::Error| AuthorityError::Listen {
        addr: config.listen,
        reason: e.to_string(),
    };
    let tcp = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(listen_err)?;
    let (shutdown, rx) = watch::channel(false);
    let app = app::router(services.clone());
    let mut tasks = Vec::new();
    let addr = tcp.local_addr().map_err(listen_err)?;
    let (listener, tls) = match &config.tls {
        Some(t) => {
            let (cfg, certs) = server::tls_config(t)?;
            // Rotated certificate files are swapped in while the listener runs; the watcher
            // ends with the store, which the listener's config holds.
            if watch_certs {
                certs.watch(warden_crypto::tls::WATCH_INTERVAL);
            }
            (server::Listener::Tls(tcp, cfg), true)
        }
        None => (server::Listener::Plain(tcp), false),
    };
    let timeouts = server::Timeouts {
        header: config.header_read_timeout.0,
        idle: config.idle_timeout.0,
    };
    tasks.extend(services.spawn_ha(rx.clone()));
    tasks.push(tokio::spawn(server::serve(listener, app, timeouts, rx)));
    tracing::info!(%addr, tls, issuer = %config.issuer, sealed = services.is_sealed(), ha = services.ha_enabled(), "authority listening");
    Ok(AuthorityHandle {
        services,
        addr,
        tls,
        shutdown,
        tasks,
    })
}

impl AuthorityHandle {
    /// The bound address (port 0 in the config picks a free one).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr` or `https://addr`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The certificate authority, when `[authority.ca]` is set and the authority is unsealed.
    pub fn ca(&self) -> Option<Arc<warden_ca::Ca>> {
        self.services.live().and_then(|live| live.ca.clone())
    }

    /// The token service (clients, keys, upkeep), for embedding and tests.
    ///
    /// # Panics
    /// While the authority is sealed (use [`AuthorityHandle::services`] to check).
    pub fn authority(&self) -> Arc<Authority> {
        match self.services.live() {
            Some(live) => live.authority.clone(),
            None => panic!("the authority is sealed: it has no token service"),
        }
    }

    /// The services and the seal.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Stops accepting, lets requests in flight finish (up to 10 s), and stops the timers.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        self.services.shutdown().await;
    }
}
