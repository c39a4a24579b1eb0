//! The gateway's shared state: the current snapshot, metrics, access log, counters for the
//! global limits, and reload.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};
use warden_config::Config;
use warden_telemetry::metrics::Outcome;
use warden_telemetry::{AccessLog, Metrics, SecurityEvent, SecurityEvents};

use crate::snapshot::Snapshot;

/// What a secret source's [`SecretSource::prepare`] returns.
pub type Prepared<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<Arc<dyn warden_config::SecretResolver>, Vec<crate::CompileError>>,
            > + Send
            + 'a,
    >,
>;

/// Where the secrets of a config come from, when not only from `env:`/`file:`: called with
/// each config before it is compiled (at start and on every reload), it may fetch what the
/// config references (the `warden` binary fetches `vault:` references) and returns the
/// resolver the compiler reads them through. A failure refuses the config (at start: no
/// start; on reload: the running config stays), each problem named by its field path.
pub trait SecretSource: Send + Sync {
    /// The resolver for `config`'s secret references.
    fn prepare<'a>(&'a self, config: &'a Config) -> Prepared<'a>;
}

/// A check of a config file's bytes before they are parsed, at every reload (the `warden`
/// binary checks the config's signature against the keys of the config that runs). A
/// refusal keeps the running config and is a `config.reload` security event with its code.
pub trait ConfigGate: Send + Sync {
    /// Checks `bytes`, read once from `path`: `Err((code, message))` refuses them.
    fn check(&self, path: &Path, bytes: &[u8]) -> Result<(), (&'static str, String)>;
    /// `config` (from bytes that passed) now runs.
    fn applied(&self, config: &Config);
    /// Checks the parsed config before it is compiled: each `Err` entry is a problem
    /// (`field: reason`) that refuses the reload like a validation error.
    fn admit(&self, _config: &Config) -> Result<(), Vec<String>> {
        Ok(())
    }
    /// Whether the files the config reads may change only through a checked reload: then
    /// the listeners' certificate stores do not pick up rotated files by themselves.
    fn pins_files(&self) -> bool {
        false
    }
    /// Files besides the config whose change should trigger a reload (its signature).
    fn watched(&self, _config_path: &Path) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// Why a reload was refused. The running config stays in place.
#[derive(Debug, Clone, thiserror::Error)]
#[error("config not reloaded: {}", .errors.join("; "))]
pub struct ReloadError {
    /// Every problem found, each `path: reason`.
    pub errors: Vec<String>,
    /// The [`ConfigGate`]'s code, when it refused.
    pub refused_by_gate: Option<&'static str>,
}

impl ReloadError {
    fn new(errors: Vec<String>) -> Self {
        ReloadError {
            errors,
            refused_by_gate: None,
        }
    }
}

/// State shared by listeners, requests, the admin API and the reloader.
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    metrics: Arc<Metrics>,
    access_log: AccessLog,
    in_flight: AtomicUsize,
    connections: AtomicUsize,
    connections_idle: Notify,
    config_path: Option<PathBuf>,
    secret_source: Option<Arc<dyn SecretSource>>,
    config_gate: Option<Arc<dyn ConfigGate>>,
    reload_lock: tokio::sync::Mutex<()>,
    pub(crate) shutdown: watch::Sender<bool>,
    ready: AtomicBool,
    listener_shape: Vec<(String, std::net::SocketAddr, bool)>,
    tracer: warden_otel::Tracer,
    reloads: crate::reload_history::ReloadHistory,
}

impl Gateway {
    pub(crate) fn new(
        snapshot: Snapshot,
        metrics: Arc<Metrics>,
        access_log: AccessLog,
        config_path: Option<PathBuf>,
        secret_source: Option<Arc<dyn SecretSource>>,
        config_gate: Option<Arc<dyn ConfigGate>>,
    ) -> Self {
        let listener_shape = shape(snapshot.config());
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            access_log,
            in_flight: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            connections_idle: Notify::new(),
            config_path,
            secret_source,
            config_gate,
            reload_lock: tokio::sync::Mutex::new(()),
            shutdown: watch::channel(false).0,
            ready: AtomicBool::new(false),
            listener_shape,
            tracer: warden_otel::Tracer::default(),
            reloads: Default::default(),
        }
    }

    /// The last config loads, for the admin console.
    pub fn reload_history(&self) -> &crate::reload_history::ReloadHistory {
        &self.reloads
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Sets the tracer requests' spans go to.
    pub(crate) fn with_tracer(mut self, tracer: warden_otel::Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// The process's tracer (recording nothing unless `[tracing]` is on).
    pub fn tracer(&self) -> &warden_otel::Tracer {
        &self.tracer
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The access log (for flushing it at shutdown).
    pub fn access_log(&self) -> &AccessLog {
        &self.access_log
    }

    /// The security-event stream (the metrics registry's).
    pub fn security_events(&self) -> &SecurityEvents {
        self.metrics.security_events()
    }

    /// True once listeners are bound and the config is loaded, until shutdown begins.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && !*self.shutdown.borrow()
            && self.snapshot().auth.ready()
    }

    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// The config file this gateway reloads from.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    pub(crate) fn enter(self: &Arc<Self>) -> InFlightGuard {
        let n = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics.in_flight.inc();
        InFlightGuard {
            gw: self.clone(),
            n,
        }
    }

    /// Counts a new connection; `None` when the global limit is reached.
    pub(crate) fn open_connection(self: &Arc<Self>, max: usize) -> Option<ConnectionGuard> {
        let n = self.connections.fetch_add(1, Ordering::AcqRel) + 1;
        let guard = ConnectionGuard(self.clone());
        (n <= max).then_some(guard)
    }

    /// Open client connections.
    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    pub(crate) async fn connections_drained(&self) {
        loop {
            let notified = self.connections_idle.notified();
            if self.open_connections() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Reloads the config file: parse, validate, compile, then swap. On any error the running
    /// config stays and the error is logged and counted.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let result = self.try_reload().await;
        // The file's hash names the config that was applied or refused.
        let hash = match &self.config_path {
            Some(p) => std::fs::read(p)
                .ok()
                .map(|b| crate::hex(&warden_crypto::jws::sha256(&b))),
            None => None,
        };
        let outcome = match &result {
            Ok(()) => "accepted",
            Err(ReloadError {
                refused_by_gate: Some(_),
                ..
            }) => "signature_refused",
            Err(_) => "refused",
        };
        let errors = result.as_ref().err().map_or(&[][..], |e| &e.errors[..]);
        self.reloads.record(outcome, hash.clone(), errors);
        self.security_events().emit(&SecurityEvent {
            event: "config.reload",
            reason: outcome,
            detail: Some(serde_json::json!({
                "config_sha256": hash,
                "errors": result.as_ref().err().map(|e| e.errors.len()),
                "signature": result.as_ref().err().and_then(|e| e.refused_by_gate),
            })),
            ..Default::default()
        });
        match &result {
            Ok(()) => {
                if let Some(h) = &hash {
                    self.metrics.set_config_hash(h);
                }
                self.metrics
                    .reloads
                    .get_or_create(&Outcome("success"))
                    .inc();
                self.metrics.config_last_reload_ok.set(1);
                tracing::info!("config reloaded");
            }
            Err(e) => {
                self.metrics
                    .reloads
                    .get_or_create(&Outcome("failure"))
                    .inc();
                self.metrics.config_last_reload_ok.set(0);
                tracing::error!(errors = ?e.errors, "config reload failed; the running config stays");
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<(), ReloadError> {
        let Some(path) = self.config_path.clone() else {
            return Err(ReloadError::new(vec![
                "this gateway was not started from a config file".into(),
            ]));
        };
        let gate = self.config_gate.clone();
        // Read once: the bytes checked are the bytes parsed.
        let config = tokio::task::spawn_blocking(move || -> Result<Config, ReloadError> {
            let bytes = std::fs::read(&path).map_err(|e| {
                ReloadError::new(vec![format!(
                    "{}: cannot read config file: {e}",
                    path.display()
                )])
            })?;
            if let Some(gate) = &gate {
                gate.check(&path, &bytes)
                    .map_err(|(code, message)| ReloadError {
                        errors: vec![message],
                        refused_by_gate: Some(code),
                    })?;
            }
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| ReloadError::new(vec![format!("{}: not UTF-8", path.display())]))?;
            let config = warden_config::parse(text).map_err(|errs| {
                ReloadError::new(errs.0.iter().map(ToString::to_string).collect())
            })?;
            if let Some(gate) = &gate {
                gate.admit(&config).map_err(ReloadError::new)?;
            }
            Ok(config)
        })
        .await
        .map_err(|e| ReloadError::new(vec![format!("reload task failed: {e}")]))??;
        if shape(&config) != self.listener_shape {
            return Err(ReloadError::new(vec![
                "listeners: adding, removing, renaming or moving a listener (or switching TLS on or off) needs a restart".into(),
            ]));
        }
        let old = self.snapshot();
        let metrics = self.metrics.clone();
        let failed = |errs: Vec<crate::CompileError>| {
            ReloadError::new(errs.iter().map(ToString::to_string).collect())
        };
        let snapshot = match &self.secret_source {
            Some(source) => {
                let secrets = source.prepare(&config).await.map_err(failed)?;
                let extensions = old.extensions.clone();
                let identity = old.identity.clone();
                Snapshot::compile_with(config, Some(&old), &metrics, extensions, secrets, identity)
            }
            None => Snapshot::compile(config, Some(&old), &metrics),
        }
        .map_err(failed)?;
        snapshot.start_background(!self.config_gate.as_ref().is_some_and(|g| g.pins_files()));
        if let Some(gate) = &self.config_gate {
            gate.applied(snapshot.config());
        }
        let snapshot = Arc::new(snapshot);
        self.snapshot.store(snapshot.clone());
        crate::series::sync(&self.metrics, Some(&old), &snapshot);
        Ok(())
    }

    /// Modification stamps of the config file and every file it names, for change watching.
    pub(crate) fn watched_files(&self) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
        let mut paths: Vec<PathBuf> = self.config_path.iter().cloned().collect();
        if let (Some(gate), Some(p)) = (&self.config_gate, &self.config_path) {
            paths.extend(gate.watched(p));
        }
        let snap = self.snapshot();
        for l in &snap.config().listeners {
            if let Some(t) = &l.tls {
                for c in &t.certificates {
                    paths.push(c.cert.clone());
                    paths.extend(c.key.path().map(Path::to_path_buf));
                }
                if let Some(ca) = &t.client_auth {
                    paths.push(ca.ca.clone());
                }
            }
        }
        paths.extend(snap.auth.watched_files());
        for c in &snap.config().clusters {
            if let Some(t) = &c.tls {
                paths.push(t.ca.clone());
                paths.extend(t.client_cert.clone());
                paths.extend(
                    t.client_key
                        .as_ref()
                        .and_then(|k| k.path().map(Path::to_path_buf)),
                );
            }
        }
        paths
            .into_iter()
            .map(|p| {
                let stamp = std::fs::metadata(&p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())));
                (p, stamp)
            })
            .collect()
    }
}

fn shape(c: &Config) -> Vec<(String, std::net::SocketAddr, bool)> {
    c.listeners
        .iter()
        .map(|l| {
            let tls = l.tls.is_some() || l.role == warden_config::ListenerRole::Inbound;
            (l.name.clone(), l.address, tls)
        })
        .collect()
}

/// One request counted in flight.
pub(crate) struct InFlightGuard {
    gw: Arc<Gateway>,
    n: usize,
}

impl InFlightGuard {
    pub(crate) fn over_limit(&self, max: usize) -> bool {
        self.n > max
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.gw.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.gw.metrics.in_flight.dec();
    }
}

/// One client connection counted against the global limit.
pub(crate) struct ConnectionGuard(Arc<Gateway>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.connections_idle.notify_waiters();
        }
    }
}
