//! Audit devices (`sys/audit`): Vault's `file` and `socket` devices, writing one JSON line per
//! request and one per response in Vault's format, beside the store's hash chain (`audit.rs`), which keeps
//! recording its own event per request.
//!
//! - Every string in the logged request and response data, every token and (unless
//!   `hmac_accessor = false`) every accessor is replaced by `hmac-sha256:<hex>`, the
//!   HMAC-SHA256 keyed with the device's salt (32 random bytes kept in the sealed store), so
//!   `sys/audit-hash/:path` reproduces it and nothing secret is in the file. `log_raw = true`
//!   is refused (a file with secrets in clear is what the device must never write).
//! - The table is one store record (`vault/sys/audit`), cached behind an `ArcSwap` like the
//!   mount tables; each device keeps its file open for appending. One `write` per line (the
//!   line is built first, then written under the device's mutex), no fsync per line (as Vault).
//!   A file that failed is reopened at the next line.
//! - Fail closed: when at least one device is enabled and none could write a request's line,
//!   the request is refused with 500 before it runs; when none could write its response line,
//!   the answer is replaced by 500.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use warden_store::Store;

use crate::api::{Operation, Result, VaultError, VaultRequest, VaultResponse};
use crate::token::TokenEntry;
use crate::{util, Vault};

const TABLE_KEY: &str = "vault/sys/audit";
/// Most devices enabled at once.
const MAX_DEVICES: usize = 16;
/// Longest device path, `file_path`, `prefix`.
const MAX_PATH_BYTES: usize = 128;
const MAX_FILE_PATH_BYTES: usize = 4096;
const MAX_PREFIX_BYTES: usize = 256;

/// A device as stored (the salt never leaves the store and this module).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct DeviceConfig {
    /// `file/` (ends in `/`).
    pub(crate) path: String,
    /// `file`.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) description: String,
    /// As given (strings), for `sys/audit`.
    pub(crate) options: BTreeMap<String, String>,
    pub(crate) local: bool,
    /// The HMAC key, hex.
    salt: String,
}

impl DeviceConfig {
    /// Vault's description in `sys/audit`.
    pub(crate) fn describe(&self) -> Value {
        json!({
            "type": self.kind,
            "description": self.description,
            "options": self.options,
            "local": self.local,
            "path": self.path,
        })
    }
}

enum Target {
    Stdout,
    Discard,
    File {
        path: PathBuf,
        mode: u32,
        file: Option<File>,
    },
    /// Vault's `socket` device.
    Socket(SocketTarget),
}

/// A socket device's peer: one line per `write`, connected when first needed and again after
/// a failure (one retry on a fresh connection per line, as Vault does).
struct SocketTarget {
    address: String,
    kind: SocketKind,
    timeout: std::time::Duration,
    conn: Option<SocketConn>,
}

impl SocketTarget {
    fn connect(&mut self) -> std::io::Result<&mut SocketConn> {
        self.conn = None;
        Ok(self
            .conn
            .insert(SocketConn::connect(&self.address, self.kind, self.timeout)?))
    }

    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        // A kept connection may have been closed by the collector: on failure, one more try
        // on a new connection before the line counts as not written.
        if let Some(c) = self.conn.as_mut() {
            if c.write_line(line).is_ok() {
                return Ok(());
            }
        }
        let r = self.connect()?.write_line(line);
        if r.is_err() {
            self.conn = None;
        }
        r
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SocketKind {
    Tcp,
    Udp,
    Unix,
}

enum SocketConn {
    Tcp(std::net::TcpStream),
    Udp(std::net::UdpSocket),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixStream),
}

impl SocketConn {
    fn connect(
        address: &str,
        kind: SocketKind,
        timeout: std::time::Duration,
    ) -> std::io::Result<SocketConn> {
        use std::net::ToSocketAddrs as _;
        let resolve = || {
            address
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| std::io::Error::other(format!("{address} resolves to nothing")))
        };
        match kind {
            SocketKind::Tcp => {
                let s = std::net::TcpStream::connect_timeout(&resolve()?, timeout)?;
                s.set_write_timeout(Some(timeout))?;
                s.set_nodelay(true)?;
                Ok(SocketConn::Tcp(s))
            }
            SocketKind::Udp => {
                let to = resolve()?;
                let local = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let s = std::net::UdpSocket::bind(local)?;
                s.connect(to)?;
                s.set_write_timeout(Some(timeout))?;
                Ok(SocketConn::Udp(s))
            }
            #[cfg(unix)]
            SocketKind::Unix => {
                let s = std::os::unix::net::UnixStream::connect(address)?;
                s.set_write_timeout(Some(timeout))?;
                Ok(SocketConn::Unix(s))
            }
            #[cfg(not(unix))]
            SocketKind::Unix => Err(std::io::Error::other("unix sockets need a Unix system")),
        }
    }

    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            SocketConn::Tcp(s) => s.write_all(line),
            // One datagram per line; a line too long for a datagram fails, like Vault's.
            SocketConn::Udp(s) => s.send(line).map(|_| ()),
            #[cfg(unix)]
            SocketConn::Unix(s) => s.write_all(line),
        }
    }
}

impl Target {
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            Target::Discard => Ok(()),
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line)?;
                out.flush()
            }
            Target::File { path, mode, file } => {
                if file.is_none() {
                    *file = Some(open_append(path, *mode)?);
                }
                let f = file
                    .as_mut()
                    .ok_or_else(|| std::io::Error::other("not open"))?;
                let r = f.write_all(line);
                if r.is_err() {
                    // Reopen at the next line (the file may have been moved or fixed).
                    *file = None;
                }
                r
            }
            Target::Socket(t) => t.write_line(line),
        }
    }

    /// Opens the file or connects the socket now (enabling a device that cannot is refused).
    fn open(&mut self) -> std::io::Result<()> {
        match self {
            Target::File { path, mode, file } => {
                *file = Some(open_append(path, *mode)?);
            }
            Target::Socket(t) => {
                t.connect()?;
            }
            Target::Stdout | Target::Discard => {}
        }
        Ok(())
    }
}

fn open_append(path: &std::path::Path, mode: u32) -> std::io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        if mode != 0 {
            o.mode(mode);
        }
    }
    #[cfg(not(unix))]
    let _ = mode;
    o.open(path)
}

/// A live device.
pub(crate) struct Device {
    pub(crate) config: DeviceConfig,
    key: ring::hmac::Key,
    hmac_accessor: bool,
    prefix: String,
    target: Mutex<Target>,
}

impl Device {
    fn build(config: DeviceConfig) -> Result<Device> {
        let salt = util::unhex(&config.salt)
            .filter(|s| s.len() == 32)
            .ok_or_else(|| VaultError::Internal("an audit device's salt is malformed".into()))?;
        let opts = Options::parse(&config.kind, &config.options)?;
        let target = opts.target;
        Ok(Device {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salt),
            hmac_accessor: opts.hmac_accessor,
            prefix: opts.prefix,
            target: Mutex::new(target),
            config,
        })
    }

    /// Opens the file or connects the socket now (enabling a device that cannot is refused).
    fn open(&self) -> std::io::Result<()> {
        self.target
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .open()
    }

    /// `hmac-sha256:<hex>` of `s` with this device's salt (what `sys/audit-hash` answers).
    pub(crate) fn hash(&self, s: &str) -> String {
        let tag = ring::hmac::sign(&self.key, s.as_bytes());
        format!("hmac-sha256:{}", util::hex(tag.as_ref()))
    }

    fn hash_accessor(&self, s: &str) -> String {
        if self.hmac_accessor && !s.is_empty() {
            self.hash(s)
        } else {
            s.to_owned()
        }
    }

    /// Every string inside `v` hashed (numbers, booleans and the structure stay).
    fn hash_value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.hash(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.hash_value(x)).collect()),
            Value::Object(m) => Value::Object(self.hash_map(m)),
            other => other.clone(),
        }
    }

    fn hash_map(&self, m: &Map<String, Value>) -> Map<String, Value> {
        m.iter()
            .map(|(k, x)| (k.clone(), self.hash_value(x)))
            .collect()
    }

    /// Writes one line: the prefix, then `{"time":…,"type":…,<fields>}`, where each field's
    /// value is JSON already serialised (the request's parts are built once per device and
    /// reused by its response line).
    fn write_entry(&self, time: &str, kind: &str, fields: &[(&str, &[u8])]) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(
            self.prefix.len()
                + 64
                + fields
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 4)
                    .sum::<usize>(),
        );
        line.extend_from_slice(self.prefix.as_bytes());
        line.extend_from_slice(b"{\"time\":");
        serde_json::to_writer(&mut line, time)?;
        line.extend_from_slice(b",\"type\":");
        serde_json::to_writer(&mut line, kind)?;
        for (k, v) in fields {
            line.push(b',');
            serde_json::to_writer(&mut line, k)?;
            line.push(b':');
            line.extend_from_slice(v);
        }
        line.extend_from_slice(b"}\n");
        let mut t = self
            .target
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        t.write_line(&line)
    }
}

/// The options of Vault's `file` and `socket` devices.
struct Options {
    target: Target,
    hmac_accessor: bool,
    prefix: String,
}

/// Longest `address` of a socket device.
const MAX_ADDRESS_BYTES: usize = 512;
/// Longest `write_timeout` of a socket device (a stuck collector holds requests this long).
const MAX_WRITE_TIMEOUT: u64 = 60;

impl Options {
    fn parse(kind: &str, o: &BTreeMap<String, String>) -> Result<Options> {
        let bad = |m: String| VaultError::BadRequest(m);
        const COMMON: &[&str] = &["log_raw", "hmac_accessor", "format", "prefix"];
        let own: &[&str] = match kind {
            "file" => &["file_path", "path", "mode"],
            "socket" => &["address", "socket_type", "write_timeout"],
            _ => {
                return Err(bad(format!(
                    "unknown audit device type {kind:?} (\"file\" and \"socket\" are supported)"
                )))
            }
        };
        for k in o.keys() {
            if !COMMON.contains(&k.as_str()) && !own.contains(&k.as_str()) {
                return Err(bad(format!(
                    "unknown option {k:?} (the {kind} device takes {}, {})",
                    own.join(", "),
                    COMMON.join(", ")
                )));
            }
        }
        let flag = |name: &str, default: bool| -> Result<bool> {
            match o.get(name).map(String::as_str) {
                None => Ok(default),
                Some("true" | "1") => Ok(true),
                Some("false" | "0" | "") => Ok(false),
                Some(_) => Err(VaultError::bad_param(name, "a boolean")),
            }
        };
        if flag("log_raw", false)? {
            return Err(bad(
                "log_raw = true is not supported: an audit device never holds secrets in clear \
                 (compare values with sys/audit-hash)"
                    .into(),
            ));
        }
        match o.get("format").map(String::as_str) {
            None | Some("json" | "") => {}
            Some(f) => {
                return Err(bad(format!(
                    "format {f:?} is not supported (only \"json\")"
                )))
            }
        }
        let prefix = o.get("prefix").cloned().unwrap_or_default();
        if prefix.len() > MAX_PREFIX_BYTES || prefix.contains(['\n', '\r']) {
            return Err(bad(format!(
                "prefix: at most {MAX_PREFIX_BYTES} bytes, on one line"
            )));
        }
        let target = if kind == "file" {
            file_target(o)?
        } else {
            socket_target(o)?
        };
        Ok(Options {
            target,
            hmac_accessor: flag("hmac_accessor", true)?,
            prefix,
        })
    }
}

/// `file_path` (or `path`): an absolute path, `stdout` or `discard`; `mode`.
fn file_target(o: &BTreeMap<String, String>) -> Result<Target> {
    let bad = |m: String| VaultError::BadRequest(m);
    let file_path = o
        .get("file_path")
        .or_else(|| o.get("path"))
        .cloned()
        .ok_or_else(|| bad("file_path is required".into()))?;
    if file_path.is_empty() || file_path.len() > MAX_FILE_PATH_BYTES || file_path.contains('\0') {
        return Err(bad(format!(
            "file_path: 1 to {MAX_FILE_PATH_BYTES} bytes without NUL"
        )));
    }
    let mode = match o.get("mode") {
        None => 0o600,
        Some(m) => u32::from_str_radix(m, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| VaultError::bad_param("mode", "an octal file mode like \"0600\""))?,
    };
    Ok(match file_path.as_str() {
        "stdout" => Target::Stdout,
        "discard" => Target::Discard,
        p if p.starts_with('/') => Target::File {
            path: PathBuf::from(p),
            mode,
            file: None,
        },
        _ => {
            return Err(bad(
                "file_path must be absolute, or \"stdout\" or \"discard\"".into(),
            ))
        }
    })
}

/// `address` (`host:port`, or a path for `unix`), `socket_type` (`tcp`, `udp`, `unix`;
/// default `tcp`), `write_timeout` (default 2 s, as Vault).
fn socket_target(o: &BTreeMap<String, String>) -> Result<Target> {
    let address = o
        .get("address")
        .cloned()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| VaultError::BadRequest("address is required".into()))?;
    if address.len() > MAX_ADDRESS_BYTES || address.contains(['\0', '\n', '\r']) {
        return Err(VaultError::BadRequest(format!(
            "address: at most {MAX_ADDRESS_BYTES} bytes, one line"
        )));
    }
    let kind = match o.get("socket_type").map(String::as_str) {
        None | Some("" | "tcp") => SocketKind::Tcp,
        Some("udp") => SocketKind::Udp,
        Some("unix") => SocketKind::Unix,
        Some(t) => {
            return Err(VaultError::BadRequest(format!(
                "socket_type {t:?} is not supported (tcp, udp or unix)"
            )))
        }
    };
    let timeout = match o.get("write_timeout") {
        None => 2,
        Some(v) => crate::api::parse_duration(v)
            .filter(|t| (1..=MAX_WRITE_TIMEOUT).contains(t))
            .ok_or_else(|| {
                VaultError::bad_param(
                    "write_timeout",
                    &format!("a duration from 1s to {MAX_WRITE_TIMEOUT}s"),
                )
            })?,
    };
    Ok(Target::Socket(SocketTarget {
        address,
        kind,
        timeout: std::time::Duration::from_secs(timeout),
        conn: None,
    }))
}

/// What the devices recorded of a request: the devices (its response goes to the same
/// ones, so enabling or disabling a device never splits a request from its response), and
/// for each the `auth` and `request` objects it wrote, which its response line repeats.
pub(crate) struct Seen {
    devices: Arc<Vec<Arc<Device>>>,
    parts: Vec<Parts>,
}

/// One device's `auth` and `request` objects of a request, serialised.
struct Parts {
    auth: Vec<u8>,
    request: Vec<u8>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("devices", &self.devices.len())
            .finish_non_exhaustive()
    }
}

/// The device table, cached.
pub(crate) struct AuditDevices {
    store: Store,
    table: ArcSwap<Vec<Arc<Device>>>,
    /// Serialises table changes in this process.
    write: tokio::sync::Mutex<()>,
}

impl AuditDevices {
    /// Loads the table. A device whose file cannot be opened now stays enabled and keeps
    /// trying at each line (so requests fail closed until it can write or is disabled).
    pub(crate) async fn open(store: Store) -> Result<AuditDevices> {
        let configs = load(&store).await?;
        let mut devices = Vec::with_capacity(configs.len());
        for c in configs {
            let d = Device::build(c)?;
            if let Err(e) = d.open() {
                tracing::error!(device = %d.config.path, error = %e, "vault: audit device cannot open its file");
            }
            devices.push(Arc::new(d));
        }
        Ok(AuditDevices {
            store,
            table: ArcSwap::from_pointee(devices),
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// The enabled devices.
    pub(crate) fn list(&self) -> Vec<DeviceConfig> {
        self.table.load().iter().map(|d| d.config.clone()).collect()
    }

    /// The device at `path` (with or without its trailing `/`).
    pub(crate) fn get(&self, path: &str) -> Option<Arc<Device>> {
        let p = normalize(path).ok()?;
        self.table
            .load()
            .iter()
            .find(|d| d.config.path == p)
            .cloned()
    }

    /// Enables a device: checks the options, opens the file, stores the table.
    pub(crate) async fn enable(
        &self,
        path: &str,
        kind: &str,
        description: String,
        options: BTreeMap<String, String>,
        local: bool,
    ) -> Result<()> {
        let path = normalize(path)?;
        if description.len() > 1024 {
            return Err(VaultError::BadRequest(
                "description: at most 1024 bytes".into(),
            ));
        }
        let mut salt = [0u8; 32];
        util::fill_random(&mut salt);
        let config = DeviceConfig {
            path: path.clone(),
            kind: kind.to_owned(),
            description,
            options,
            local,
            salt: util::hex(&salt),
        };
        let device = Device::build(config)?;
        let _guard = self.write.lock().await;
        let current = self.table.load_full();
        if current.iter().any(|d| d.config.path == path) {
            return Err(VaultError::BadRequest(format!(
                "path already in use: {path}"
            )));
        }
        if current.len() >= MAX_DEVICES {
            return Err(VaultError::BadRequest(format!(
                "at most {MAX_DEVICES} audit devices"
            )));
        }
        device.open().map_err(|e| {
            let what = if kind == "socket" {
                "cannot connect to the audit socket"
            } else {
                "cannot open the audit file"
            };
            VaultError::BadRequest(format!("{what}: {e}"))
        })?;
        let mut next: Vec<Arc<Device>> = current.iter().cloned().collect();
        next.push(Arc::new(device));
        save(&self.store, &next).await?;
        self.table.store(Arc::new(next));
        Ok(())
    }

    /// Disables the device at `path`; `false` if there was none.
    pub(crate) async fn disable(&self, path: &str) -> Result<bool> {
        let path = normalize(path)?;
        let _guard = self.write.lock().await;
        let current = self.table.load_full();
        if !current.iter().any(|d| d.config.path == path) {
            return Ok(false);
        }
        let next: Vec<Arc<Device>> = current
            .iter()
            .filter(|d| d.config.path != path)
            .cloned()
            .collect();
        save(&self.store, &next).await?;
        self.table.store(Arc::new(next));
        Ok(true)
    }

    /// Writes one entry to every device of `table` (`write` is given the device and its
    /// index; entries are built per device, as hashes differ). Fails only when devices are
    /// enabled and none could write it.
    fn log(
        table: &[Arc<Device>],
        write: impl Fn(usize, &Device) -> std::io::Result<()>,
    ) -> Result<()> {
        if table.is_empty() {
            return Ok(());
        }
        let mut written = 0;
        for (i, d) in table.iter().enumerate() {
            match write(i, d) {
                Ok(()) => written += 1,
                Err(e) => {
                    tracing::error!(device = %d.config.path, error = %e, "vault: audit device failed to write");
                }
            }
        }
        if written == 0 {
            return Err(VaultError::Internal(
                "no audit device could record the request".into(),
            ));
        }
        Ok(())
    }
}

/// `file` → `file/`; 1 to 128 bytes of `a-z A-Z 0-9 - _ . /`, no empty segment.
fn normalize(path: &str) -> Result<String> {
    let p = path.trim_matches('/');
    if p.is_empty()
        || p.len() > MAX_PATH_BYTES
        || p.contains("//")
        || !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        || p.split('/').any(|s| s == "." || s == "..")
    {
        return Err(VaultError::BadRequest(format!(
            "invalid audit device path {path:?}: 1 to {MAX_PATH_BYTES} of a-z A-Z 0-9 - _ . /"
        )));
    }
    Ok(format!("{p}/"))
}

async fn load(store: &Store) -> Result<Vec<DeviceConfig>> {
    match store.get(TABLE_KEY).await? {
        None => Ok(Vec::new()),
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| VaultError::Internal(format!("audit device table unreadable: {e}"))),
    }
}

async fn save(store: &Store, devices: &[Arc<Device>]) -> Result<()> {
    let configs: Vec<&DeviceConfig> = devices.iter().map(|d| &d.config).collect();
    let bytes = serde_json::to_vec(&configs).map_err(|e| VaultError::Internal(e.to_string()))?;
    store.put(TABLE_KEY, &bytes).await?;
    Ok(())
}

/// Now, as RFC 3339 with nanoseconds (wall time, as Vault stamps audit entries).
fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = util::rfc3339(d.as_secs() as i64);
    format!("{}.{:09}Z", s.trim_end_matches('Z'), d.subsec_nanos())
}

fn op_name(op: Operation) -> &'static str {
    match op {
        Operation::Read => "read",
        Operation::List => "list",
        Operation::Write => "update",
        Operation::Patch => "patch",
        Operation::Delete => "delete",
    }
}

impl Vault {
    /// The type of what serves `path` (`system`, `token`, `approle`, `kv`, …).
    fn mount_type_of(&self, path: &str) -> String {
        if path == "sys" || path.starts_with("sys/") {
            return "system".into();
        }
        if let Some(rest) = path.strip_prefix("auth/") {
            if rest == "token" || rest.starts_with("token/") {
                return "token".into();
            }
            return self
                .inner
                .mounts
                .find_auth(rest)
                .map(|(m, _)| m.kind)
                .unwrap_or_default();
        }
        self.inner
            .mounts
            .find(path)
            .map(|(m, _)| m.kind)
            .unwrap_or_default()
    }

    fn audit_auth(d: &Device, req: &VaultRequest, auth: Option<&TokenEntry>) -> Value {
        let Some(e) = auth else {
            return json!({});
        };
        json!({
            "client_token": req.token.as_deref().map(|t| d.hash(t)).unwrap_or_default(),
            "accessor": d.hash_accessor(&e.accessor),
            "display_name": e.display_name,
            "policies": e.policies,
            "token_policies": e.policies,
            "metadata": if e.meta.is_empty() { Value::Null } else { json!(e.meta) },
            "entity_id": "",
            "token_type": "service",
            "token_ttl": e.creation_ttl,
            "token_issue_time": util::rfc3339(e.creation_time),
        })
    }

    fn audit_request_body(
        &self,
        d: &Device,
        req: &VaultRequest,
        auth: Option<&TokenEntry>,
        mount_type: &str,
    ) -> Value {
        let data = if !req.body.is_empty() {
            Value::Object(d.hash_map(&req.body))
        } else if !req.query.is_empty() {
            let q: Map<String, Value> = req
                .query
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(d.hash(v))))
                .collect();
            Value::Object(q)
        } else {
            Value::Null
        };
        json!({
            "id": req.id,
            "operation": op_name(req.op),
            "mount_type": mount_type,
            "client_token": req.token.as_deref().map(|t| d.hash(t)).unwrap_or_default(),
            "client_token_accessor": auth.map(|e| d.hash_accessor(&e.accessor)).unwrap_or_default(),
            "namespace": { "id": "root" },
            "path": req.path,
            "data": data,
            "remote_address": req.peer.map(|p| p.to_string()).unwrap_or_default(),
            "wrap_ttl": req.wrap_ttl.unwrap_or(0),
        })
    }

    /// The `auth` and `request` objects `d` writes for `req`.
    fn parts(
        &self,
        d: &Device,
        req: &VaultRequest,
        auth: Option<&TokenEntry>,
        mount_type: &str,
    ) -> Parts {
        let to_vec = |v: &Value| serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec());
        Parts {
            auth: to_vec(&Self::audit_auth(d, req, auth)),
            request: to_vec(&self.audit_request_body(d, req, auth, mount_type)),
        }
    }

    /// Logs a request to the audit devices before it runs (fail closed: `Err` when devices
    /// are enabled and none could write). `auth` is the authenticated token, if any.
    pub(crate) fn audit_devices_request(
        &self,
        req: &VaultRequest,
        auth: Option<&TokenEntry>,
    ) -> Result<()> {
        let table = self.inner.audit_devices.table.load_full();
        if table.is_empty() {
            let _ = req.audit_seen.set(Seen {
                devices: table,
                parts: Vec::new(),
            });
            return Ok(());
        }
        let mount_type = self.mount_type_of(&req.path);
        let time = now_rfc3339();
        let parts: Vec<Parts> = table
            .iter()
            .map(|d| self.parts(d, req, auth, &mount_type))
            .collect();
        let r = AuditDevices::log(&table, |i, d| {
            let p = &parts[i];
            d.write_entry(
                &time,
                "request",
                &[("auth", &p.auth), ("request", &p.request)],
            )
        });
        let _ = req.audit_seen.set(Seen {
            devices: table,
            parts,
        });
        r
    }

    /// Logs a request's answer to the audit devices (fail closed, as for the request).
    pub(crate) fn audit_devices_response(
        &self,
        req: &VaultRequest,
        result: &Result<VaultResponse>,
    ) -> Result<()> {
        let seen = req.audit_seen.get();
        let current;
        let table: &[Arc<Device>] = match seen {
            Some(s) => &s.devices,
            None => {
                current = self.inner.audit_devices.table.load_full();
                &current
            }
        };
        if table.is_empty() {
            return Ok(());
        }
        let mount_type = self.mount_type_of(&req.path);
        // A request refused before its request line (say, a bad token) has no parts yet.
        let own: Vec<Parts>;
        let parts: &[Parts] = match seen {
            Some(s) if s.parts.len() == table.len() => &s.parts,
            _ => {
                own = table
                    .iter()
                    .map(|d| self.parts(d, req, None, &mount_type))
                    .collect();
                &own
            }
        };
        let time = now_rfc3339();
        let error = match result {
            Ok(_) => String::new(),
            Err(e) => e.messages().join("; "),
        };
        let error = serde_json::to_vec(&error).unwrap_or_else(|_| b"\"\"".to_vec());
        AuditDevices::log(table, |i, d| {
            let response = match result {
                Ok(r) => audit_response(d, &mount_type, r),
                Err(_) => {
                    let mut m = Map::new();
                    m.insert("mount_type".into(), json!(mount_type));
                    m
                }
            };
            let response = serde_json::to_vec(&response)?;
            let p = &parts[i];
            d.write_entry(
                &time,
                "response",
                &[
                    ("auth", &p.auth),
                    ("request", &p.request),
                    ("response", &response),
                    ("error", &error),
                ],
            )
        })
    }
}

/// The `response` object `d` writes for an answer: its `data` with every string hashed, its
/// `warnings`, and the tokens and accessors of `auth` and `wrap_info` hashed. Read from the
/// answer's fields (or, for an unwrapped answer, its stored envelope) without building the
/// envelope.
fn audit_response(d: &Device, mount_type: &str, r: &VaultResponse) -> Map<String, Value> {
    let mut response = Map::new();
    response.insert("mount_type".into(), json!(mount_type));
    let warnings;
    let (data, warns, auth, wrap) = match &r.raw {
        Some(raw) => (
            raw.get("data"),
            raw.get("warnings"),
            raw.get("auth"),
            raw.get("wrap_info"),
        ),
        None => {
            warnings = (!r.warnings.is_empty()).then(|| json!(r.warnings));
            (
                r.data.as_ref(),
                warnings.as_ref(),
                r.auth.as_ref(),
                r.wrap_info.as_ref(),
            )
        }
    };
    if let Some(v) = data.filter(|v| !v.is_null()) {
        response.insert("data".into(), d.hash_value(v));
    }
    if let Some(v) = warns.filter(|v| !v.is_null()) {
        response.insert("warnings".into(), v.clone());
    }
    if let Some(Value::Object(a)) = auth {
        let mut a = a.clone();
        hash_field(&mut a, "client_token", |s| d.hash(s));
        hash_field(&mut a, "accessor", |s| d.hash_accessor(s));
        response.insert("auth".into(), Value::Object(a));
    }
    if let Some(Value::Object(w)) = wrap {
        let mut w = w.clone();
        hash_field(&mut w, "token", |s| d.hash(s));
        hash_field(&mut w, "accessor", |s| d.hash_accessor(s));
        hash_field(&mut w, "wrapped_accessor", |s| d.hash_accessor(s));
        response.insert("wrap_info".into(), Value::Object(w));
    }
    response
}

fn hash_field(m: &mut Map<String, Value>, key: &str, f: impl Fn(&str) -> String) {
    if let Some(Value::String(s)) = m.get(key) {
        if !s.is_empty() {
            let h = f(s);
            m.insert(key.into(), Value::String(h));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn options_refuse_raw_logging_and_unknown_formats() {
        assert!(Options::parse("file", &opts(&[("file_path", "/tmp/a.log")])).is_ok());
        assert!(Options::parse(
            "file",
            &opts(&[("file_path", "/tmp/a.log"), ("log_raw", "true")])
        )
        .is_err());
        assert!(Options::parse(
            "file",
            &opts(&[("file_path", "/tmp/a.log"), ("format", "jsonx")])
        )
        .is_err());
        assert!(Options::parse("file", &opts(&[("file_path", "relative.log")])).is_err());
        assert!(Options::parse("file", &opts(&[("file_path", "/tmp/a"), ("bogus", "1")])).is_err());
        assert!(Options::parse("file", &opts(&[])).is_err());
        let o = Options::parse(
            "file",
            &opts(&[("file_path", "stdout"), ("hmac_accessor", "false")]),
        )
        .unwrap();
        assert!(!o.hmac_accessor);
    }

    #[test]
    fn socket_options_are_checked() {
        let ok = |pairs: &[(&str, &str)]| Options::parse("socket", &opts(pairs)).is_ok();
        assert!(ok(&[("address", "127.0.0.1:9090")]));
        assert!(ok(&[("address", "127.0.0.1:9090"), ("socket_type", "udp")]));
        assert!(ok(&[
            ("address", "/run/audit.sock"),
            ("socket_type", "unix")
        ]));
        assert!(ok(&[
            ("address", "127.0.0.1:9090"),
            ("write_timeout", "5s")
        ]));
        assert!(!ok(&[]), "address is required");
        assert!(!ok(&[("address", "a:1"), ("socket_type", "sctp")]));
        assert!(!ok(&[("address", "a:1"), ("write_timeout", "0s")]));
        assert!(!ok(&[("address", "a:1"), ("write_timeout", "10m")]));
        assert!(
            !ok(&[("address", "a:1"), ("file_path", "/tmp/x")]),
            "a file option"
        );
        assert!(!ok(&[("address", "a:1"), ("log_raw", "true")]));
        assert!(Options::parse("syslog", &opts(&[])).is_err());
    }

    #[test]
    fn paths_normalise_and_refuse_traversal() {
        assert_eq!(normalize("file").unwrap(), "file/");
        assert_eq!(normalize("/a/b/").unwrap(), "a/b/");
        assert!(normalize("a/../b").is_err());
        assert!(normalize("").is_err());
        assert!(normalize("a b").is_err());
    }

    #[test]
    fn hashing_replaces_every_string_and_keeps_the_rest() {
        let d = Device::build(DeviceConfig {
            path: "t/".into(),
            kind: "file".into(),
            description: String::new(),
            options: opts(&[("file_path", "discard")]),
            local: false,
            salt: "11".repeat(32),
        })
        .unwrap();
        let v = d.hash_value(&json!({ "a": "s3cret", "n": 3, "l": ["x", true] }));
        assert_eq!(v["a"], json!(d.hash("s3cret")));
        assert_eq!(v["n"], 3);
        assert_eq!(v["l"][1], true);
        assert!(v["l"][0].as_str().unwrap().starts_with("hmac-sha256:"));
        assert!(!v.to_string().contains("s3cret"));
    }
}
