//! `vault:<mount>/<path>#<field>` secret references, resolved through a Vault-compatible
//! server's public HTTP API (Warden's authority, HashiCorp Vault, OpenBao).
//!
//! The config compiler's resolver is synchronous, so the secrets are fetched *before* a
//! config is compiled: [`VaultSecrets`] is the gateway's [`SecretSource`]; for every config
//! (at start and on each reload) it reads each referenced secret once and hands the compiler
//! a resolver that answers from that set (and from the environment and files for `env:` and
//! `file:`). A secret that cannot be read refuses the config, naming the field and the
//! reference, never a value: at start Warden does not start, on reload the running config
//! stays.
//!
//! KV engines are told apart as the Vault CLI does, through `sys/internal/ui/mounts/<path>`:
//! on a KV v2 mount `data/` is inserted after the mount (`secret/app` → `secret/data/app`),
//! a KV v1 mount (or a server without that endpoint) is read as is. [`watch`] then polls every
//! referenced secret each `poll_interval` (KV v2: the `metadata` `current_version`; KV v1: a
//! hash of the data; a leased secret: renewed at two thirds of its lease, re-read when it
//! cannot be) and, on a change, reloads the gateway exactly as SIGHUP does.
//!
//! The client authenticates with a token (`env:`/`file:`), renewed with `renew-self` at two
//! thirds of its TTL when renewable, and/or an AppRole login, used when there is no token, when
//! the token is refused or expires, and again before each login's token expires.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use warden_auth::http_client::HttpClient;
use warden_config::{
    Config, LocalSecrets, SecretError, SecretRef, SecretResolver, VaultClientConfig, VaultRef,
    Zeroizing,
};
use warden_proxy::{CompileError, Prepared, SecretSource};

/// The largest response read from the server.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why a call to the server failed. Never holds a secret: server messages are Vault's
/// `errors` (which name no values), transport errors name the address.
#[derive(Debug)]
pub(crate) enum VaultError {
    /// The server could not be reached or answered too slowly.
    Unreachable(String),
    /// The server answered with an error status.
    Status {
        /// The status.
        status: StatusCode,
        /// Vault's `errors`.
        errors: Vec<String>,
    },
    /// Anything else (a malformed answer, a missing field, no credentials).
    Other(String),
}

impl std::fmt::Display for VaultError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VaultError::Unreachable(at) => write!(f, "cannot reach the vault at {at}"),
            VaultError::Status { status, errors } if errors.is_empty() => {
                write!(f, "the vault answered {status}")
            }
            VaultError::Status { status, errors } => {
                write!(f, "the vault answered {status}: {}", errors.join("; "))
            }
            VaultError::Other(why) => f.write_str(why),
        }
    }
}

/// How a referenced secret is read, learnt once per path from the mount table.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Engine {
    /// KV v2 mounted at `mount` (with its trailing `/`).
    KvV2 { mount: String },
    /// KV v1, or any other engine: read at the path as written.
    Plain,
}

/// One secret as read: its data's fields and what tells a newer one apart.
struct Fetched {
    fields: serde_json::Map<String, Value>,
    version: Version,
    lease: Option<Lease>,
}

/// What the watcher compares.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Version {
    /// KV v2's version number.
    Kv2(u64),
    /// SHA-256 of the data (KV v1 and other engines: no versions).
    Digest([u8; 32]),
}

#[derive(Clone, Debug)]
struct Lease {
    id: String,
    renewable: bool,
    /// When to renew (or re-read): two thirds into the lease.
    renew_at: Instant,
}

/// The token in use, and when to renew it or log in again.
struct TokenState {
    token: Option<Zeroizing<String>>,
    /// From an AppRole login (so a new login replaces it when it runs out).
    from_login: bool,
    renewable: bool,
    renew_at: Option<Instant>,
}

/// A Vault API client for one `[vault]` section.
pub(crate) struct VaultClient {
    config: VaultClientConfig,
    base: String,
    http: HttpClient,
    token: Mutex<TokenState>,
    engines: Mutex<HashMap<String, Engine>>,
}

impl VaultClient {
    /// A client for `config` (which validation checked: an address, and a token or AppRole).
    pub(crate) fn new(config: &VaultClientConfig) -> Result<VaultClient, String> {
        let address = config
            .address
            .as_deref()
            .ok_or("vault.address: not set")?
            .trim_end_matches('/')
            .to_owned();
        let http = HttpClient::new(config.ca_file.as_deref(), config.timeout.0)
            .map_err(|e| format!("vault.ca_file: {e}"))?;
        let token = match &config.token {
            Some(t) => Some(t.read_line().map_err(|e| format!("vault.token: {e}"))?),
            None => None,
        };
        Ok(VaultClient {
            config: config.clone(),
            base: address,
            http,
            token: Mutex::new(TokenState {
                token,
                from_login: false,
                renewable: false,
                renew_at: None,
            }),
            engines: Mutex::new(HashMap::new()),
        })
    }

    /// One API call with `token` (or none), parsed as JSON (`Null` for an empty body).
    async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, VaultError> {
        let url = format!("{}/v1/{path}", self.base);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header("x-vault-request", "true");
        if let Some(t) = token {
            let mut v = http::HeaderValue::from_str(t)
                .map_err(|_| VaultError::Other("the vault token is not a valid header".into()))?;
            v.set_sensitive(true);
            req = req.header("x-vault-token", v);
        }
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|_| VaultError::Other(format!("`{url}` is not a valid URL")))?;
        let (status, _, body) = self
            .http
            .send(req, self.config.timeout.0, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| VaultError::Unreachable(format!("{} ({e})", self.base)))?;
        let v: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };
        if !status.is_success() {
            let errors = v["errors"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter_map(Value::as_str)
                        .take(4)
                        .map(|s| s.chars().take(300).collect())
                        .collect()
                })
                .unwrap_or_default();
            return Err(VaultError::Status { status, errors });
        }
        Ok(v)
    }

    /// An authenticated call: renews the token or logs in when due, and on a 403 with an
    /// AppRole configured logs in once and tries again.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, VaultError> {
        let token = self.current_token().await?;
        match self
            .raw(method.clone(), path, Some(token.as_str()), body)
            .await
        {
            Err(VaultError::Status { status, .. })
                if status == StatusCode::FORBIDDEN && self.config.approle.is_some() =>
            {
                let token = self.login_if_unchanged(&token).await?;
                self.raw(method, path, Some(token.as_str()), body).await
            }
            other => other,
        }
    }

    /// The token to use now, after a renewal or login if one is due.
    async fn current_token(&self) -> Result<Zeroizing<String>, VaultError> {
        let mut st = self.token.lock().await;
        let due = st.renew_at.is_some_and(|t| Instant::now() >= t);
        if let (Some(t), false) = (&st.token, due) {
            return Ok(t.clone());
        }
        if due && st.renewable {
            if let Some(t) = st.token.clone() {
                match self
                    .raw(Method::PUT, "auth/token/renew-self", Some(t.as_str()), None)
                    .await
                {
                    Ok(v) => {
                        let ttl = v["auth"]["lease_duration"].as_u64().unwrap_or(0);
                        st.renew_at = renew_at(ttl);
                        tracing::debug!(ttl, "vault token renewed");
                        return Ok(t);
                    }
                    Err(e) => tracing::warn!(error = %e, "vault token renewal failed"),
                }
            }
        }
        if self.config.approle.is_some() {
            return self.login(&mut st).await;
        }
        // A token that is not renewable (or could not be renewed) and no way to log in: keep
        // using it; the server says when it is no longer valid.
        st.renew_at = None;
        st.token
            .clone()
            .ok_or_else(|| VaultError::Other("no vault token and no approle".into()))
    }

    async fn login_if_unchanged(
        &self,
        refused: &Zeroizing<String>,
    ) -> Result<Zeroizing<String>, VaultError> {
        let mut st = self.token.lock().await;
        match &st.token {
            // Another call already logged in since this one's token was refused.
            Some(t) if !warden_crypto::ct_eq(t.as_bytes(), refused.as_bytes()) => Ok(t.clone()),
            _ => self.login(&mut st).await,
        }
    }

    /// AppRole login (`auth/<mount>/login`), with the role and secret ids read now (their
    /// files may have been replaced).
    async fn login(&self, st: &mut TokenState) -> Result<Zeroizing<String>, VaultError> {
        let Some(role) = &self.config.approle else {
            return Err(VaultError::Other("no approle configured".into()));
        };
        let role_id = role
            .role_id
            .read_line()
            .map_err(|e| VaultError::Other(format!("vault.approle.role_id: {e}")))?;
        let secret_id = role
            .secret_id
            .read_line()
            .map_err(|e| VaultError::Other(format!("vault.approle.secret_id: {e}")))?;
        let body = json!({ "role_id": role_id.as_str(), "secret_id": secret_id.as_str() });
        let v = self
            .raw(
                Method::PUT,
                &format!("auth/{}/login", role.mount),
                None,
                Some(&body),
            )
            .await
            .map_err(|e| VaultError::Other(format!("AppRole login failed: {e}")))?;
        let Some(token) = v["auth"]["client_token"].as_str() else {
            return Err(VaultError::Other(
                "AppRole login gave no client_token".into(),
            ));
        };
        let token = Zeroizing::new(token.to_owned());
        let ttl = v["auth"]["lease_duration"].as_u64().unwrap_or(0);
        st.token = Some(token.clone());
        st.from_login = true;
        st.renewable = v["auth"]["renewable"].as_bool().unwrap_or(false);
        st.renew_at = renew_at(ttl);
        tracing::info!(ttl, "logged in to the vault with AppRole");
        Ok(token)
    }

    /// Looks the token up once, to learn its TTL (and so when to renew it).
    async fn learn_token(&self) -> Result<(), VaultError> {
        let mut st = self.token.lock().await;
        let Some(t) = st.token.clone() else {
            self.login(&mut st).await?;
            return Ok(());
        };
        if st.from_login {
            return Ok(());
        }
        match self
            .raw(
                Method::GET,
                "auth/token/lookup-self",
                Some(t.as_str()),
                None,
            )
            .await
        {
            Ok(v) => {
                st.renewable = v["data"]["renewable"].as_bool().unwrap_or(false);
                st.renew_at = renew_at(v["data"]["ttl"].as_u64().unwrap_or(0));
                Ok(())
            }
            Err(VaultError::Status { status, .. })
                if status == StatusCode::FORBIDDEN && self.config.approle.is_some() =>
            {
                self.login(&mut st).await.map(drop)
            }
            Err(e) => Err(e),
        }
    }

    /// How `path` is read: KV v2 or as is, from the server's mount table (cached).
    async fn engine(&self, path: &str) -> Result<Engine, VaultError> {
        if let Some(e) = self.engines.lock().await.get(path) {
            return Ok(e.clone());
        }
        let engine = match self
            .call(Method::GET, &format!("sys/internal/ui/mounts/{path}"), None)
            .await
        {
            Ok(v) => {
                let data = &v["data"];
                let version = match &data["options"]["version"] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                let kv = matches!(data["type"].as_str(), Some("kv"));
                match (kv && version == "2", data["path"].as_str()) {
                    (true, Some(mount)) if !mount.is_empty() => Engine::KvV2 {
                        mount: format!("{}/", mount.trim_end_matches('/')),
                    },
                    _ => Engine::Plain,
                }
            }
            // A server without the endpoint (as old Vaults): read as written, as the CLI does.
            Err(VaultError::Status { status, .. }) if status == StatusCode::NOT_FOUND => {
                Engine::Plain
            }
            Err(e) => return Err(e),
        };
        self.engines
            .lock()
            .await
            .insert(path.to_owned(), engine.clone());
        Ok(engine)
    }

    /// Reads the secret at `path` (as written in the reference).
    async fn read(&self, path: &str) -> Result<Fetched, VaultError> {
        let engine = self.engine(path).await?;
        let api_path = match &engine {
            Engine::KvV2 { mount } => kv2_path(mount, "data", path)?,
            Engine::Plain => path.to_owned(),
        };
        let v = self
            .call(Method::GET, &api_path, None)
            .await
            .map_err(|e| match e {
                VaultError::Status { status, errors }
                    if status == StatusCode::NOT_FOUND && errors.is_empty() =>
                {
                    VaultError::Other("no such secret (404)".into())
                }
                e => e,
            })?;
        let data = match &engine {
            Engine::KvV2 { .. } => &v["data"]["data"],
            Engine::Plain => &v["data"],
        };
        let Value::Object(fields) = data else {
            return Err(VaultError::Other(
                "the secret has no data (deleted or destroyed?)".into(),
            ));
        };
        let version = match &engine {
            Engine::KvV2 { .. } => {
                Version::Kv2(v["data"]["metadata"]["version"].as_u64().unwrap_or(0))
            }
            Engine::Plain => Version::Digest(warden_crypto::jws::sha256(
                Zeroizing::new(data.to_string()).as_bytes(),
            )),
        };
        let lease = match v["lease_id"].as_str() {
            Some(id) if !id.is_empty() => Some(Lease {
                id: id.to_owned(),
                renewable: v["renewable"].as_bool().unwrap_or(false),
                renew_at: renew_at(v["lease_duration"].as_u64().unwrap_or(0))
                    .unwrap_or_else(Instant::now),
            }),
            _ => None,
        };
        Ok(Fetched {
            fields: fields.clone(),
            version,
            lease,
        })
    }

    /// The current version of the secret at `path`, as cheaply as the engine allows (KV v2:
    /// its metadata; otherwise a read).
    async fn version(&self, path: &str) -> Result<Version, VaultError> {
        match self.engine(path).await? {
            Engine::KvV2 { mount } => {
                let v = self
                    .call(Method::GET, &kv2_path(&mount, "metadata", path)?, None)
                    .await?;
                Ok(Version::Kv2(
                    v["data"]["current_version"].as_u64().unwrap_or(0),
                ))
            }
            Engine::Plain => Ok(self.read(path).await?.version),
        }
    }

    /// Renews a lease (`sys/leases/renew`); the new renewal time, or `None` when it cannot be.
    async fn renew_lease(&self, lease: &Lease) -> Option<Instant> {
        if !lease.renewable {
            return None;
        }
        let v = self
            .call(
                Method::PUT,
                "sys/leases/renew",
                Some(&json!({ "lease_id": lease.id })),
            )
            .await
            .ok()?;
        renew_at(v["lease_duration"].as_u64().unwrap_or(0))
    }
}

/// `<mount><kind>/<rest>` for a KV v2 path written as `<mount><rest>`.
fn kv2_path(mount: &str, kind: &str, path: &str) -> Result<String, VaultError> {
    let rest = format!("{path}/")
        .strip_prefix(mount)
        .map(|r| r.trim_end_matches('/').to_owned())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            VaultError::Other(format!(
                "`{path}` names the mount `{mount}`, not a secret in it"
            ))
        })?;
    Ok(format!("{mount}{kind}/{rest}"))
}

/// Two thirds into a TTL of `ttl` seconds; `None` for no TTL.
fn renew_at(ttl: u64) -> Option<Instant> {
    (ttl > 0).then(|| Instant::now() + Duration::from_secs(ttl) * 2 / 3)
}

/// The values of one config's `vault:` references, and `env:`/`file:` read as usual.
struct Resolved {
    values: HashMap<VaultRef, Zeroizing<Vec<u8>>>,
}

impl SecretResolver for Resolved {
    fn resolve(&self, secret: &SecretRef) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        match secret.vault() {
            Some(v) => self.values.get(v).cloned().ok_or_else(|| {
                SecretError::Unresolved(v.to_string(), "not fetched from the vault".into())
            }),
            None => LocalSecrets.resolve(secret),
        }
    }
}

/// What the watcher knows of a secret.
#[derive(Clone)]
struct Seen {
    version: Version,
    lease: Option<Lease>,
}

/// The gateway's source of `vault:` secrets: a client for the current `[vault]` section,
/// and the version of every secret the last prepared config was built from.
pub(crate) struct VaultSecrets {
    client: Mutex<Option<(VaultClientConfig, Arc<VaultClient>)>>,
    seen: Mutex<BTreeMap<String, Seen>>,
}

impl VaultSecrets {
    pub(crate) fn new() -> Arc<VaultSecrets> {
        Arc::new(VaultSecrets {
            client: Mutex::new(None),
            seen: Mutex::new(BTreeMap::new()),
        })
    }

    /// The client for `config`'s `[vault]` section (kept while the section is unchanged, so
    /// its token and login are kept).
    async fn client_for(&self, config: &VaultClientConfig) -> Result<Arc<VaultClient>, String> {
        let mut slot = self.client.lock().await;
        if let Some((c, client)) = slot.as_ref() {
            if c == config {
                return Ok(client.clone());
            }
        }
        let client = Arc::new(VaultClient::new(config)?);
        client
            .learn_token()
            .await
            .map_err(|e| format!("vault: {e}"))?;
        *slot = Some((config.clone(), client.clone()));
        Ok(client)
    }

    /// Fetches every `vault:` reference of `config`; the resolver, or every problem with its
    /// field path.
    pub(crate) async fn fetch(
        &self,
        config: &Config,
    ) -> Result<Arc<dyn SecretResolver>, Vec<CompileError>> {
        let refs: Vec<(String, VaultRef)> = warden_config::vault::secret_refs(config)
            .into_iter()
            .filter_map(|(path, r)| r.vault().map(|v| (path, v.clone())))
            .collect();
        if refs.is_empty() {
            self.seen.lock().await.clear();
            return Ok(Arc::new(Resolved {
                values: HashMap::new(),
            }));
        }
        let client = self.client_for(&config.vault).await.map_err(|reason| {
            vec![CompileError {
                path: "vault".into(),
                reason,
            }]
        })?;
        let mut by_path: BTreeMap<&str, Result<Fetched, VaultError>> = BTreeMap::new();
        for (_, r) in &refs {
            if !by_path.contains_key(r.path.as_str()) {
                let got = client.read(&r.path).await;
                by_path.insert(&r.path, got);
            }
        }
        let mut values = HashMap::new();
        let mut errors = Vec::new();
        for (field_path, r) in &refs {
            let value = match &by_path[r.path.as_str()] {
                Ok(f) => match f.fields.get(&r.field) {
                    Some(Value::String(s)) => Ok(Zeroizing::new(s.clone().into_bytes())),
                    Some(_) => Err(format!("field `{}` is not a string", r.field)),
                    None => Err(format!("the secret has no field `{}`", r.field)),
                },
                Err(e) => Err(e.to_string()),
            };
            match value {
                Ok(v) => {
                    values.insert(r.clone(), v);
                }
                Err(why) => errors.push(CompileError {
                    path: field_path.clone(),
                    reason: format!("`{r}`: {why}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut seen = self.seen.lock().await;
        seen.clear();
        for (path, f) in by_path {
            if let Ok(f) = f {
                seen.insert(
                    path.to_owned(),
                    Seen {
                        version: f.version,
                        lease: f.lease,
                    },
                );
            }
        }
        Ok(Arc::new(Resolved { values }))
    }

    /// One watch round: which watched secrets changed (or whose lease ran out). Errors are
    /// logged and the secret is tried again next round.
    async fn changed(&self) -> Vec<String> {
        let client = match self.client.lock().await.as_ref() {
            Some((_, c)) => c.clone(),
            None => return Vec::new(),
        };
        let watched: Vec<(String, Seen)> = self
            .seen
            .lock()
            .await
            .iter()
            .map(|(p, s)| (p.clone(), s.clone()))
            .collect();
        let mut changed = Vec::new();
        for (path, seen) in watched {
            if let Some(lease) = &seen.lease {
                if Instant::now() < lease.renew_at {
                    continue;
                }
                match client.renew_lease(lease).await {
                    Some(next) => {
                        if let Some(s) = self.seen.lock().await.get_mut(&path) {
                            if let Some(l) = s.lease.as_mut() {
                                l.renew_at = next;
                            }
                        }
                    }
                    None => changed.push(path),
                }
                continue;
            }
            match client.version(&path).await {
                Ok(v) if v != seen.version => changed.push(path),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(secret = %path, error = %e, "cannot check a vault secret for changes")
                }
            }
        }
        changed
    }
}

impl SecretSource for VaultSecrets {
    fn prepare<'a>(&'a self, config: &'a Config) -> Prepared<'a> {
        Box::pin(self.fetch(config))
    }
}

/// Polls the secrets of the running config every `vault.poll_interval` and reloads the
/// gateway when one changed (as SIGHUP does: a reload that fails keeps the running config,
/// and is not retried until a secret changes again).
pub(crate) async fn watch(source: Arc<VaultSecrets>, gateway: Arc<warden_proxy::Gateway>) {
    loop {
        let every = gateway.snapshot().config().vault.poll_interval.0;
        tokio::time::sleep(every).await;
        let changed = source.changed().await;
        if !changed.is_empty() {
            tracing::info!(secrets = ?changed, "vault secrets changed; reloading");
            let _ = gateway.reload().await;
        }
    }
}

#[cfg(test)]
mod tests;
