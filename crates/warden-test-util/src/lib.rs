//! Shared helpers for Warden's tests. Everything binds `127.0.0.1:0`; nothing uses a fixed port.
//!
//! - [`Upstream`]: an HTTP/1.1 + HTTP/2 server that records every request it receives and
//!   answers as told (status, delay, echo).
//! - [`Gateway`]: a gateway started from TOML text, with its config file in a temp dir so
//!   reload tests can rewrite it.
//! - [`raw`]: send raw bytes over TCP and read what comes back, for framing tests.
//! - [`Pki`]: a per-test CA with server and client certificates written to files.
//! - [`client`]: HTTP clients (h1, h2c, TLS) built on hyper.
//! - [`jwt`]: test issuers that sign tokens, good and deliberately broken.

#![allow(unreachable_pub)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub mod authcfg;
pub mod client;
pub mod files;
pub mod flaky;
pub mod interop;
pub mod jwt;
pub mod raw;
pub mod redis;
pub mod rotation;
pub mod servers;

/// One request as an upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path and query as received.
    pub uri: String,
    /// HTTP version.
    pub version: http::Version,
    /// Headers (names lower-case; repeated headers joined with `, `).
    pub headers: BTreeMap<String, String>,
    /// Body bytes.
    pub body: Bytes,
}

/// How an [`Upstream`] answers.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Status to send.
    pub status: u16,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Body; when `None`, a JSON description of the request (like the dev echo service).
    pub body: Option<String>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            status: 200,
            delay: Duration::ZERO,
            headers: Vec::new(),
            body: None,
        }
    }
}

/// A recording upstream server (HTTP/1.1 and h2c).
pub struct Upstream {
    addr: SocketAddr,
    name: String,
    log: Arc<Mutex<Vec<Recorded>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    health_status: Arc<AtomicU16>,
    health_checks: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Starts an upstream named `name` (it reports its name in `x-upstream`).
    pub async fn start(name: &str) -> Self {
        Self::start_on(
            name,
            TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind upstream"),
        )
        .await
    }

    /// Starts an upstream on a given listener (to restart on the same port).
    pub async fn start_on(name: &str, listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("local addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(Behaviour::default()));
        let health_status = Arc::new(AtomicU16::new(200));
        let health_checks = Arc::new(AtomicU64::new(0));
        let state = (
            name.to_owned(),
            log.clone(),
            behaviour.clone(),
            health_status.clone(),
            health_checks.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(req, state.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            name: name.to_owned(),
            log,
            behaviour,
            health_status,
            health_checks,
            task,
        }
    }

    /// Address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests received so far (health checks to `/healthz` excluded).
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// Forgets recorded requests.
    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }

    /// Changes how it answers.
    pub fn set(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }

    /// Status `/healthz` answers with.
    pub fn set_health(&self, status: u16) {
        self.health_status.store(status, Ordering::SeqCst);
    }

    /// Health checks received.
    pub fn health_checks(&self) -> u64 {
        self.health_checks.load(Ordering::SeqCst)
    }

    /// Stops accepting (existing connections are dropped with the task).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type State = (
    String,
    Arc<Mutex<Vec<Recorded>>>,
    Arc<Mutex<Behaviour>>,
    Arc<AtomicU16>,
    Arc<AtomicU64>,
);

async fn answer(
    req: Request<Incoming>,
    (name, log, behaviour, health, checks): State,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/healthz" {
        checks.fetch_add(1, Ordering::SeqCst);
        let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
        *res.status_mut() = http::StatusCode::from_u16(health.load(Ordering::SeqCst))
            .unwrap_or(http::StatusCode::OK);
        return Ok(res);
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut headers = BTreeMap::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers
            .entry(k.as_str().to_owned())
            .and_modify(|e: &mut String| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let rec = Recorded {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        version: parts.version,
        headers,
        body,
    };
    log.lock().unwrap().push(rec.clone());
    let b = behaviour.lock().unwrap().clone();
    if !b.delay.is_zero() {
        tokio::time::sleep(b.delay).await;
    }
    let body = b.body.clone().unwrap_or_else(|| {
        serde_json::json!({
            "upstream": name,
            "method": rec.method,
            "uri": rec.uri,
            "headers": rec.headers,
            "body_bytes": rec.body.len(),
        })
        .to_string()
    });
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = http::StatusCode::from_u16(b.status).unwrap_or(http::StatusCode::OK);
    res.headers_mut()
        .insert("x-upstream", http::HeaderValue::from_str(&name).unwrap());
    for (k, v) in &b.headers {
        res.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    Ok(res)
}

/// A gateway started from TOML, with its config file kept in a temp dir.
pub struct Gateway {
    /// The running gateway.
    pub handle: warden_proxy::GatewayHandle,
    dir: tempfile::TempDir,
}

impl Gateway {
    /// Writes `toml` to a file and starts a gateway from it. Panics with every config error.
    pub async fn start(toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("warden.toml");
        std::fs::write(&path, toml).expect("write config");
        let config =
            warden_config::load(&path).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let handle = warden_proxy::start(config, Some(path))
            .await
            .unwrap_or_else(|e| panic!("gateway failed to start: {e}"));
        Self { handle, dir }
    }

    /// The temp dir holding the config (tests may put certificates here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("warden.toml")
    }

    /// Address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.handle
            .listener_addr(name)
            .unwrap_or_else(|| panic!("no listener {name}"))
    }

    /// `http://addr` of listener `name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}", self.addr(name))
    }

    /// Admin address.
    pub fn admin(&self) -> SocketAddr {
        self.handle.admin_addr().expect("admin listener enabled")
    }

    /// Rewrites the config file (the caller then reloads, or waits for the watcher).
    pub fn rewrite(&self, toml: &str) {
        // Write then rename, as config tools do, so a reader never sees half a file.
        let tmp = self.dir.path().join("warden.toml.tmp");
        std::fs::write(&tmp, toml).expect("write config");
        std::fs::rename(&tmp, self.config_path()).expect("rename config");
    }
}

/// Standard TOML for tests: one plain listener `main` on a free port, admin on a free port,
/// access log off, file watching off. Append clusters and routes.
pub fn base_toml() -> String {
    r#"
[admin]
address = "127.0.0.1:0"
[access_log]
enabled = false
[reload]
watch = false
[[listeners]]
name = "main"
address = "127.0.0.1:0"
"#
    .to_owned()
}

/// A per-test PKI: a CA, and certificates written as PEM files into a temp dir.
pub struct Pki {
    /// The CA.
    pub ca: warden_crypto::DevCa,
    dir: tempfile::TempDir,
}

impl Pki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        Self {
            ca: warden_crypto::DevCa::new(name).expect("dev CA"),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Writes the CA certificate; returns its path.
    pub fn ca_file(&self) -> PathBuf {
        let p = self.dir.path().join("ca.pem");
        std::fs::write(&p, self.ca.cert_pem()).expect("write ca");
        p
    }

    /// Issues a server certificate for `names`; returns (cert path, key path).
    pub fn server(&self, file_stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let c = self.ca.server_cert(names).expect("server cert");
        self.write(file_stem, &c)
    }

    /// Issues a client certificate; returns (cert path, key path).
    pub fn client(&self, file_stem: &str, names: &[&str], uris: &[&str]) -> (PathBuf, PathBuf) {
        let c = self.ca.client_cert(names, uris).expect("client cert");
        self.write(file_stem, &c)
    }

    fn write(&self, stem: &str, c: &warden_crypto::IssuedCert) -> (PathBuf, PathBuf) {
        let cert = self.dir.path().join(format!("{stem}.pem"));
        let key = self.dir.path().join(format!("{stem}.key"));
        std::fs::write(&cert, &c.cert_pem).expect("write cert");
        std::fs::write(&key, &c.key_pem).expect("write key");
        // Owner-only, as a deployment keeps keys (`warden serve` refuses others-readable ones).
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod key");
        (cert, key)
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
