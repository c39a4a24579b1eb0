//! Warden's data plane: listeners, TLS, the HTTP server and client, routing, upstream pools,
//! forwarding, the admin API and its web console, and hot reload.
//!
//! [`start`] compiles a validated config into a [`Snapshot`], binds every listener and returns
//! a [`GatewayHandle`] to reload, inspect and drain the running gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use warden_config::Config;
use warden_telemetry::{AccessLog, Metrics, RecentEvents};

pub mod admin;
pub mod admin_auth;
mod body;
mod conn_io;
mod console;
mod cors;
mod error;
pub mod filters;
mod gateway;
mod grpc;
pub mod h1_inspect;
mod handler;
mod headers;
mod in_memory;
pub mod normalize;
mod pipeline;
mod refusal;
pub mod reload_history;
mod router;
mod series;
mod server;
mod snapshot;
mod tls;
mod trace;
mod upstream;
mod websocket;
mod workers;

pub use body::BodyError;
pub use console::{StatusFuture, StatusSource, CSP as CONSOLE_CSP};
pub use error::{CompileError, Reject};
pub use gateway::{ConfigGate, Gateway, Prepared, ReloadError, SecretSource};
pub use in_memory::InMemory;
pub use snapshot::Snapshot;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config does not compile (certificates, keys).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Compile(Vec<CompileError>),
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({name}): {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data-plane threads could not be started.
    #[error("{0}")]
    Threads(String),
    /// `admin.token` could not be read.
    #[error("admin.token: {0}")]
    AdminToken(String),
    /// The access log could not be opened.
    #[error("cannot open access log `{path}`: {source}")]
    AccessLog {
        /// Path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Checks that a config compiles (certificates load, keys match) without binding anything.
pub fn check(config: Config) -> Result<(), Vec<CompileError>> {
    check_with(config, Arc::new(warden_config::LocalSecrets))
}

/// A sidecar config is checked against an identity not issued yet: its TLS configs build
/// without asking the authority for anything.
fn unissued(config: &Config) -> Option<Identity> {
    let td = config.sidecar.as_ref()?.trust_domain.as_str();
    let td = warden_identity::TrustDomain::new(td).ok()?;
    Some(warden_identity::tls::Unissued::new(td))
}

/// [`check`], reading secret references through `secrets`.
pub fn check_with(
    config: Config,
    secrets: Arc<dyn warden_config::SecretResolver>,
) -> Result<(), Vec<CompileError>> {
    let metrics = Arc::new(Metrics::new());
    let identity = unissued(&config);
    Snapshot::compile_with(
        config,
        None,
        &metrics,
        Arc::from(Vec::new()),
        secrets,
        identity,
    )
    .map(|_| ())
}

/// A running gateway.
pub struct GatewayHandle {
    gw: Arc<Gateway>,
    listeners: Vec<(String, SocketAddr)>,
    admin: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A sidecar's workload identity as the data plane reads it (its SVID and trust bundle).
pub type Identity = Arc<dyn warden_identity::tls::WorkloadIdentity>;

/// Starts the gateway: compiles the config, binds listeners (port 0 picks a free port, see
/// [`GatewayHandle::listener_addr`]), starts the admin listener and the file watcher.
pub async fn start(
    config: Config,
    config_path: Option<PathBuf>,
) -> Result<GatewayHandle, StartError> {
    Builder::new(config).config_path(config_path).start().await
}

/// [`start`], with the source of the config's secrets (kept for every reload): the config is
/// compiled only after `secrets` has prepared them.
pub async fn start_with_secrets(
    config: Config,
    config_path: Option<PathBuf>,
    secrets: Option<Arc<dyn SecretSource>>,
) -> Result<GatewayHandle, StartError> {
    let mut b = Builder::new(config).config_path(config_path);
    if let Some(s) = secrets {
        b = b.secrets(s);
    }
    b.start().await
}

/// Builds the data plane for the roles its listeners name: `gateway` listeners need nothing
/// more; a sidecar's `inbound` listeners and mesh clusters (`spiffe_ids`) need its
/// [`Identity`]. One process can serve any mix of them.
pub struct Builder {
    config: Config,
    config_path: Option<PathBuf>,
    secrets: Option<Arc<dyn SecretSource>>,
    identity: Option<Identity>,
    security_log: Option<AccessLog>,
    config_gate: Option<Arc<dyn ConfigGate>>,
    tracer: warden_otel::Tracer,
    status_source: Option<Arc<dyn StatusSource>>,
    recent_events: Option<Arc<RecentEvents>>,
}

impl Builder {
    /// A data plane for `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            config_path: None,
            secrets: None,
            identity: None,
            security_log: None,
            config_gate: None,
            tracer: warden_otel::Tracer::default(),
            status_source: None,
            recent_events: None,
        }
    }

    /// The file the config came from: reloads read it again, and it is watched when
    /// `reload.watch` is on.
    pub fn config_path(mut self, path: Option<PathBuf>) -> Self {
        self.config_path = path;
        self
    }

    /// Where secret references are read from (kept for every reload).
    pub fn secrets(mut self, secrets: Arc<dyn SecretSource>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// The sidecar's workload identity (kept for every reload).
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Where security events go when `[security_events]` is on, instead of a writer of
    /// its own for `security_events.path` (one writer shared with the authority in one
    /// process, so that their lines never interleave).
    pub fn security_log(mut self, out: AccessLog) -> Self {
        self.security_log = Some(out);
        self
    }

    /// What every reload's config file must pass before it is parsed (a signature check).
    pub fn config_gate(mut self, gate: Arc<dyn ConfigGate>) -> Self {
        self.config_gate = Some(gate);
        self
    }

    /// The process's OpenTelemetry tracer (started from `[tracing]` by whoever runs the
    /// process, shared with the authority): requests' spans go to it, and so do the security
    /// events when it sends them as logs. Its export counts show on the admin `/metrics`.
    pub fn tracer(mut self, tracer: warden_otel::Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// What the console's Authority page shows (the authority in the same process).
    pub fn status_source(mut self, source: Arc<dyn StatusSource>) -> Self {
        self.status_source = Some(source);
        self
    }

    /// The ring the console's Events page reads, when it is shared with other event streams
    /// of the process (the authority's); a ring of its own otherwise.
    pub fn recent_events(mut self, ring: Arc<RecentEvents>) -> Self {
        self.recent_events = Some(ring);
        self
    }

    /// Compiles the config, binds every listener and starts serving.
    pub async fn start(self) -> Result<GatewayHandle, StartError> {
        start_parts(self).await
    }
}

async fn start_parts(b: Builder) -> Result<GatewayHandle, StartError> {
    let Builder {
        config,
        config_path,
        secrets,
        identity,
        security_log,
        config_gate,
        tracer,
        status_source,
        recent_events,
    } = b;
    let metrics = Arc::new(Metrics::with_export_counters(tracer.counters()));
    if let Some(sink) = tracer.event_sink() {
        metrics.security_events().send_to(sink);
    }
    let access_log = if config.access_log.enabled {
        AccessLog::open(&config.access_log.path, metrics.access_log_dropped.clone()).map_err(
            |source| StartError::AccessLog {
                path: config.access_log.path.clone(),
                source,
            },
        )?
    } else {
        AccessLog::disabled()
    };
    // Before the snapshot: clusters build one upstream client per data-plane thread.
    workers::init(config.server.data_threads).map_err(StartError::Threads)?;
    let resolver: Arc<dyn warden_config::SecretResolver> = match &secrets {
        Some(source) => source.prepare(&config).await.map_err(StartError::Compile)?,
        None => Arc::new(warden_config::LocalSecrets),
    };
    let admin_token = match &config.admin.token {
        Some(t) => Some(resolver.resolve_line(t).map_err(StartError::AdminToken)?),
        None => None,
    };
    let snapshot = Snapshot::compile_with(
        config,
        None,
        &metrics,
        Arc::from(Vec::new()),
        resolver,
        identity,
    )
    .map_err(StartError::Compile)?;
    series::sync(&metrics, None, &snapshot);
    let config = snapshot.config.clone();
    let mut bound = Vec::new();
    for l in &config.listeners {
        let listener = tokio::net::TcpListener::bind(l.address)
            .await
            .map_err(|source| StartError::Bind {
                name: l.name.clone(),
                addr: l.address,
                source,
            })?;
        bound.push((l.name.clone(), listener));
    }
    let admin_listener = if config.admin.enabled {
        Some(
            tokio::net::TcpListener::bind(config.admin.address)
                .await
                .map_err(|source| StartError::Bind {
                    name: "admin".into(),
                    addr: config.admin.address,
                    source,
                })?,
        )
    } else {
        None
    };
    snapshot.start_background(!config_gate.as_ref().is_some_and(|g| g.pins_files()));
    if config.security_events.enabled {
        let out = match security_log {
            Some(out) => out,
            None => AccessLog::open(
                &config.security_events.path,
                metrics.security_events_suppressed.clone(),
            )
            .map_err(|source| StartError::AccessLog {
                path: config.security_events.path.clone(),
                source,
            })?,
        };
        metrics
            .security_events()
            .write_to(out, config.security_events.max_lines_per_second);
    }
    let config_hash = config_path
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .map(|bytes| hex(&warden_crypto::jws::sha256(&bytes)));
    if let Some(h) = &config_hash {
        metrics.set_config_hash(h);
    }
    let recent = recent_events.unwrap_or_default();
    if config.admin.enabled {
        metrics.security_events().record_to(recent.clone());
    }
    let gw = Arc::new(
        Gateway::new(
            snapshot,
            metrics,
            access_log,
            config_path,
            secrets,
            config_gate,
        )
        .with_tracer(tracer),
    );
    gw.reload_history().record("started", config_hash, &[]);
    let mut tasks = Vec::new();
    let mut listeners = Vec::new();
    for (name, listener) in bound {
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            name: name.clone(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        listeners.push((name.clone(), addr));
        tasks.push(tokio::spawn(server::accept_loop(
            listener,
            Arc::new(name),
            gw.clone(),
        )));
    }
    let mut admin = None;
    if let Some(listener) = admin_listener {
        admin = listener.local_addr().ok();
        let access = Arc::new(admin_auth::AdminAccess::new(
            config.admin.address,
            admin_token.as_ref().map(|t| t.as_bytes()),
        ));
        let console = console::Console::new(gw.clone(), recent, status_source, access.clone());
        tasks.push(tokio::spawn(console::sample(console.clone())));
        let app = admin::router(gw.clone(), access, console);
        let mut shutdown = gw.shutdown.subscribe();
        tasks.push(tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "admin listener failed");
            }
        }));
    }
    if config.reload.watch && gw.config_path().is_some() {
        tasks.push(tokio::spawn(watch_files(
            gw.clone(),
            config.reload.poll_interval.0,
        )));
    }
    gw.set_ready();
    Ok(GatewayHandle {
        gw,
        listeners,
        admin,
        tasks,
    })
}

/// Reloads when the config file or a file it names changes (polling: works on every
/// filesystem, including the atomic renames that config-management tools do).
async fn watch_files(gw: Arc<Gateway>, every: Duration) {
    let mut shutdown = gw.shutdown.subscribe();
    let mut seen = gw.watched_files();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let now = gw.watched_files();
        if now != seen {
            tracing::info!("config or certificate files changed; reloading");
            let _ = gw.reload().await;
            // Stamps from before the attempt: a file that changes while the reload runs (a key
            // landing just after its certificate) is seen at the next poll. A failed reload is
            // not retried until the files change again.
            seen = now;
        }
    }
}

impl GatewayHandle {
    /// The shared gateway state.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gw
    }

    /// The bound address of a listener, by name.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Every listener's name and bound address.
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Reloads the config file.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        self.gw.reload().await
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish (connections close
    /// after their current request) until `server.drain_timeout`, then return.
    pub async fn shutdown(self) {
        let deadline = self.gw.snapshot().limits.drain_timeout;
        let _ = self.gw.shutdown.send(true);
        let drained = tokio::time::timeout(deadline, self.gw.connections_drained()).await;
        if drained.is_err() {
            tracing::warn!(
                open = self.gw.open_connections(),
                "drain deadline reached; closing remaining connections"
            );
        }
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Lower-case hex.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
