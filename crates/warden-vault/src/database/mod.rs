//! The database secrets engine (type `database`), PostgreSQL only
//! (`plugin_name = "postgresql-database-plugin"`).
//!
//! - `config/:name`: connection (`connection_url` with `{{username}}`/`{{password}}`,
//!   `username`, `password` — never read back —, `allowed_roles`, `verify_connection`
//!   (default true), `max_open_connections` (default 4, at most 64), `password_authentication`
//!   (`password`, or `scram-sha-256`: the verifier is computed here and sent instead of the
//!   password), `root_rotation_statements`); LIST, DELETE; `reset/:name` closes its pool;
//!   `rotate-root/:name` sets a new random root password in PostgreSQL and stores it.
//! - `roles/:name`: `db_name`, `creation_statements` (`{{name}}`, `{{username}}`,
//!   `{{password}}`, `{{expiration}}`), `revocation_statements` (default: revoke everything
//!   and drop the role, as Vault's plugin does), `renew_statements` (default
//!   `ALTER ROLE … VALID UNTIL`), `default_ttl`, `max_ttl`; LIST, READ, DELETE.
//! - `creds/:name`: a new login `v-<display>-<role>-<random>-<unix>` (at most 63 bytes) with a
//!   random 32-character password, created in one transaction with `VALID UNTIL` the lease's
//!   end, under a lease (see [`crate::lease`]). The lease is recorded first, so a crash between
//!   the two leaves a lease that expires and finds nothing to drop, never an untracked login.
//!
//! Data lives under the mount (`vault/logical/<uuid>/config/<name>`, `…/role/<name>`), sealed
//! by the store. Pools are cached per connection and dropped when it changes.

mod pg;

use std::collections::HashMap;
use std::sync::Mutex;

use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::api::{
    as_bool, as_duration, as_str, as_str_list, as_u64, field, Operation, Result, VaultError,
    VaultResponse,
};
use crate::lease::{LeaseEntry, NewLease};
use crate::mounts::MountEntry;
use crate::router::Ctx;
use crate::util;
use crate::Vault;

/// The one plugin there is.
const PLUGIN: &str = "postgresql-database-plugin";
/// Longest name of a connection or role.
const MAX_NAME: usize = 128;
/// Most statements in one list, and the longest statement list in bytes.
const MAX_STATEMENTS: usize = 64;
const MAX_STATEMENT_BYTES: usize = 64 * 1024;
/// Longest connection URL, username or password.
const MAX_URL: usize = 2048;
const MAX_CRED: usize = 512;
const MAX_CONNECTIONS: u64 = 64;
const DEFAULT_RENEW: &str = "ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';";
const DEFAULT_ROTATE: &str = "ALTER ROLE \"{{username}}\" WITH PASSWORD '{{password}}';";

/// A connection's configuration (as stored; the password never leaves but to PostgreSQL).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct DbConfig {
    connection_url: String,
    username: String,
    password: String,
    allowed_roles: Vec<String>,
    verify_connection: bool,
    max_open_connections: u64,
    max_idle_connections: u64,
    max_connection_lifetime: u64,
    password_authentication: String,
    root_rotation_statements: Vec<String>,
}

impl DbConfig {
    fn url(&self) -> String {
        pg::render_url(&self.connection_url, &self.username, &self.password)
    }

    fn allows(&self, role: &str) -> bool {
        self.allowed_roles.iter().any(|r| r == "*" || r == role)
    }

    /// How a new password goes into a statement.
    fn password_for_sql(&self, password: &str) -> String {
        if self.password_authentication == "scram-sha-256" {
            pg::scram_verifier(password)
        } else {
            password.to_owned()
        }
    }
}

/// A role (what a login looks like).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct DbRole {
    db_name: String,
    creation_statements: Vec<String>,
    revocation_statements: Vec<String>,
    renew_statements: Vec<String>,
    rollback_statements: Vec<String>,
    default_ttl: u64,
    max_ttl: u64,
}

/// The cached connection pools, by `<mount uuid>/<config name>`.
#[derive(Default)]
pub(crate) struct Pools(Mutex<HashMap<String, Pool>>);

impl Pools {
    fn get_or_create(&self, key: &str, cfg: &DbConfig) -> Result<Pool> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = m.get(key) {
            return Ok(p.clone());
        }
        let p = pg::pool(&cfg.url(), cfg.max_open_connections.max(1) as usize)?;
        m.insert(key.to_owned(), p.clone());
        Ok(p)
    }

    fn drop_one(&self, key: &str) {
        let p = self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        if let Some(p) = p {
            p.close();
        }
    }

    /// Closes every pool of a mount (it is being disabled).
    pub(crate) fn drop_mount(&self, uuid: &str) {
        let prefix = format!("{uuid}/");
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|k, p| {
            if k.starts_with(&prefix) {
                p.close();
                false
            } else {
                true
            }
        });
    }
}

pub(crate) async fn handle(ctx: &Ctx<'_>, mount: &MountEntry, rest: &str) -> Result<VaultResponse> {
    let (head, name) = match rest.split_once('/') {
        Some((h, n)) => (h, n),
        None => (rest, ""),
    };
    let r = match head {
        "config" => config(ctx, mount, name).await,
        "roles" => roles(ctx, mount, name).await,
        "creds" => creds(ctx, mount, name).await,
        "reset" => reset(ctx, mount, name).await,
        "rotate-root" => rotate_root(ctx, mount, name).await,
        _ => {
            ctx.require_op()?;
            Err(VaultError::NoHandler(ctx.req.path.clone()))
        }
    }?;
    Ok(r.with_mount_type("database"))
}

fn check_name(name: &str, what: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(VaultError::BadRequest(format!(
            "invalid {what} name {name:?}: use 1 to {MAX_NAME} of a-z A-Z 0-9 - _ ."
        )));
    }
    Ok(())
}

fn config_key(mount: &MountEntry, name: &str) -> String {
    format!("{}config/{name}", mount.data_prefix())
}

fn role_key(mount: &MountEntry, name: &str) -> String {
    format!("{}role/{name}", mount.data_prefix())
}

fn pool_key(uuid: &str, name: &str) -> String {
    format!("{uuid}/{name}")
}

async fn load<T: serde::de::DeserializeOwned>(vault: &Vault, key: &str) -> Result<Option<T>> {
    match vault.inner.store.get(key).await? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| VaultError::Internal(format!("database record unreadable: {e}"))),
    }
}

async fn save<T: Serialize>(vault: &Vault, key: &str, value: &T) -> Result<()> {
    let b = serde_json::to_vec(value).map_err(|e| VaultError::Internal(e.to_string()))?;
    vault.inner.store.put(key, &b).await?;
    Ok(())
}

/// Names one level under `prefix` (config or role names), 404 when none.
async fn list_names(vault: &Vault, prefix: &str) -> Result<VaultResponse> {
    let keys: Vec<String> = vault
        .inner
        .store
        .list_page(prefix, None, 10_000)
        .await?
        .into_iter()
        .filter_map(|k| k.strip_prefix(prefix).map(str::to_owned))
        .collect();
    if keys.is_empty() {
        return Err(VaultError::NotFound);
    }
    Ok(VaultResponse::data(json!({ "keys": keys })))
}

fn statements(body: &Map<String, Value>, name: &str) -> Result<Option<Vec<String>>> {
    let Some(v) = field(body, name) else {
        return Ok(None);
    };
    // A string is one entry (split on `;` when run), as Vault's clients send it.
    let list = match v {
        Value::String(s) => vec![s.clone()],
        other => as_str_list(other, name)?,
    };
    let list: Vec<String> = list.into_iter().filter(|s| !s.trim().is_empty()).collect();
    if list.len() > MAX_STATEMENTS
        || list.iter().map(String::len).sum::<usize>() > MAX_STATEMENT_BYTES
    {
        return Err(VaultError::BadRequest(format!(
            "{name}: at most {MAX_STATEMENTS} statements of {MAX_STATEMENT_BYTES} bytes in all"
        )));
    }
    Ok(Some(list))
}

fn bounded_str(body: &Map<String, Value>, name: &str, max: usize) -> Result<Option<String>> {
    let Some(v) = field(body, name) else {
        return Ok(None);
    };
    let s = as_str(v, name)?;
    if s.len() > max || s.contains('\0') {
        return Err(VaultError::BadRequest(format!(
            "invalid value for {name:?}: at most {max} bytes, no NUL"
        )));
    }
    Ok(Some(s.to_owned()))
}

async fn config(ctx: &Ctx<'_>, mount: &MountEntry, name: &str) -> Result<VaultResponse> {
    let vault = ctx.vault;
    if name.is_empty() {
        if ctx.req.op != Operation::List {
            return Err(VaultError::MethodNotAllowed);
        }
        ctx.require_op()?;
        return list_names(vault, &format!("{}config/", mount.data_prefix())).await;
    }
    check_name(name, "connection")?;
    let key = config_key(mount, name);
    match ctx.req.op {
        Operation::Read => {
            ctx.require_op()?;
            let c: DbConfig = load(vault, &key).await?.ok_or(VaultError::NotFound)?;
            Ok(VaultResponse::data(json!({
                "plugin_name": PLUGIN,
                "plugin_version": "",
                "connection_details": {
                    "connection_url": c.connection_url,
                    "username": c.username,
                    "max_open_connections": c.max_open_connections,
                    "max_idle_connections": c.max_idle_connections,
                    "max_connection_lifetime": format!("{}s", c.max_connection_lifetime),
                    "password_authentication": c.password_authentication,
                },
                "allowed_roles": c.allowed_roles,
                "root_credentials_rotate_statements": c.root_rotation_statements,
                "password_policy": "",
                "verify_connection": c.verify_connection,
            })))
        }
        Operation::Write => {
            ctx.require_write(|| async { Ok(vault.inner.store.get(&key).await?.is_some()) })
                .await?;
            let existing: Option<DbConfig> = load(vault, &key).await?;
            let c = config_from_body(&ctx.req.body, existing)?;
            if c.verify_connection {
                verify(&c).await?;
            }
            save(vault, &key, &c).await?;
            vault.inner.db.drop_one(&pool_key(&mount.uuid, name));
            Ok(VaultResponse::no_content())
        }
        Operation::Delete => {
            ctx.require_op()?;
            vault.inner.store.delete(&key).await?;
            vault.inner.db.drop_one(&pool_key(&mount.uuid, name));
            Ok(VaultResponse::no_content())
        }
        Operation::List | Operation::Patch => Err(VaultError::MethodNotAllowed),
    }
}

/// A new or updated connection from a request body (updates keep what is not given).
fn config_from_body(body: &Map<String, Value>, existing: Option<DbConfig>) -> Result<DbConfig> {
    let creating = existing.is_none();
    let mut c = existing.unwrap_or(DbConfig {
        verify_connection: true,
        max_open_connections: 4,
        password_authentication: "password".into(),
        ..Default::default()
    });
    match field(body, "plugin_name")
        .map(|v| as_str(v, "plugin_name"))
        .transpose()?
    {
        Some(PLUGIN) => {}
        None if !creating => {}
        None => {
            return Err(VaultError::BadRequest(
                "missing required parameter \"plugin_name\"".into(),
            ))
        }
        Some(other) => {
            return Err(VaultError::BadRequest(format!(
                "unsupported plugin_name {other:?}: Warden's vault has only {PLUGIN:?}"
            )))
        }
    }
    for refused in ["password_policy", "username_template", "plugin_version"] {
        if let Some(v) = field(body, refused) {
            if !as_str(v, refused)?.is_empty() {
                return Err(VaultError::BadRequest(format!(
                    "{refused} is not supported by Warden's vault"
                )));
            }
        }
    }
    if let Some(u) = bounded_str(body, "connection_url", MAX_URL)? {
        c.connection_url = u;
    }
    if c.connection_url.trim().is_empty() {
        return Err(VaultError::BadRequest(
            "missing required parameter \"connection_url\"".into(),
        ));
    }
    if let Some(u) = bounded_str(body, "username", MAX_CRED)? {
        c.username = u;
    }
    if let Some(p) = bounded_str(body, "password", MAX_CRED)? {
        c.password = p;
    }
    if let Some(v) = field(body, "allowed_roles") {
        c.allowed_roles = as_str_list(v, "allowed_roles")?;
        if c.allowed_roles.len() > 1024 {
            return Err(VaultError::BadRequest(
                "allowed_roles: at most 1024 names".into(),
            ));
        }
    }
    if let Some(v) = field(body, "verify_connection") {
        c.verify_connection = as_bool(v, "verify_connection")?;
    }
    if let Some(v) = field(body, "max_open_connections") {
        let n = as_u64(v, "max_open_connections")?;
        if n == 0 || n > MAX_CONNECTIONS {
            return Err(VaultError::BadRequest(format!(
                "max_open_connections must be 1 to {MAX_CONNECTIONS}"
            )));
        }
        c.max_open_connections = n;
    }
    if let Some(v) = field(body, "max_idle_connections") {
        c.max_idle_connections = as_u64(v, "max_idle_connections")?;
    }
    if let Some(v) = field(body, "max_connection_lifetime") {
        c.max_connection_lifetime = as_duration(v, "max_connection_lifetime")?;
    }
    if let Some(v) = field(body, "password_authentication") {
        let p = as_str(v, "password_authentication")?;
        if p != "password" && p != "scram-sha-256" {
            return Err(VaultError::BadRequest(format!(
                "invalid password_authentication {p:?}: expected \"password\" or \"scram-sha-256\""
            )));
        }
        p.clone_into(&mut c.password_authentication);
    }
    if let Some(s) = statements(body, "root_rotation_statements")? {
        c.root_rotation_statements = s;
    }
    // Parse now, so a malformed URL is refused before anything is stored.
    pg::check_url(&c.url())?;
    Ok(c)
}

/// Connects once with `c` and runs `SELECT 1`.
async fn verify(c: &DbConfig) -> Result<()> {
    let p = pg::pool(&c.url(), 1)?;
    let r = async {
        let client = p.get().await.map_err(|e| pg::describe_pool(&e))?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| pg::describe(&e))?;
        Ok::<(), String>(())
    }
    .await;
    p.close();
    r.map_err(|e| {
        VaultError::BadRequest(format!(
            "error creating database object: error verifying connection: {e}"
        ))
    })
}

async fn roles(ctx: &Ctx<'_>, mount: &MountEntry, name: &str) -> Result<VaultResponse> {
    let vault = ctx.vault;
    if name.is_empty() {
        if ctx.req.op != Operation::List {
            return Err(VaultError::MethodNotAllowed);
        }
        ctx.require_op()?;
        return list_names(vault, &format!("{}role/", mount.data_prefix())).await;
    }
    check_name(name, "role")?;
    let key = role_key(mount, name);
    match ctx.req.op {
        Operation::Read => {
            ctx.require_op()?;
            let r: DbRole = load(vault, &key).await?.ok_or(VaultError::NotFound)?;
            Ok(VaultResponse::data(json!({
                "db_name": r.db_name,
                "creation_statements": r.creation_statements,
                "revocation_statements": r.revocation_statements,
                "renew_statements": r.renew_statements,
                "rollback_statements": r.rollback_statements,
                "default_ttl": r.default_ttl,
                "max_ttl": r.max_ttl,
                "credential_type": "password",
                "credential_config": {},
            })))
        }
        Operation::Write => {
            ctx.require_write(|| async { Ok(vault.inner.store.get(&key).await?.is_some()) })
                .await?;
            let existing: Option<DbRole> = load(vault, &key).await?;
            let r = role_from_body(&ctx.req.body, existing)?;
            save(vault, &key, &r).await?;
            Ok(VaultResponse::no_content())
        }
        Operation::Delete => {
            ctx.require_op()?;
            vault.inner.store.delete(&key).await?;
            Ok(VaultResponse::no_content())
        }
        Operation::List | Operation::Patch => Err(VaultError::MethodNotAllowed),
    }
}

fn role_from_body(body: &Map<String, Value>, existing: Option<DbRole>) -> Result<DbRole> {
    let mut r = existing.unwrap_or_default();
    if let Some(d) = bounded_str(body, "db_name", MAX_NAME)? {
        r.db_name = d;
    }
    if r.db_name.is_empty() {
        return Err(VaultError::BadRequest(
            "missing required parameter \"db_name\"".into(),
        ));
    }
    check_name(&r.db_name, "connection")?;
    if let Some(s) = statements(body, "creation_statements")? {
        r.creation_statements = s;
    }
    if r.creation_statements.is_empty() {
        return Err(VaultError::BadRequest(
            "missing required parameter \"creation_statements\"".into(),
        ));
    }
    if let Some(s) = statements(body, "revocation_statements")? {
        r.revocation_statements = s;
    }
    if let Some(s) = statements(body, "renew_statements")? {
        r.renew_statements = s;
    }
    if let Some(s) = statements(body, "rollback_statements")? {
        r.rollback_statements = s;
    }
    if let Some(v) = field(body, "default_ttl") {
        r.default_ttl = as_duration(v, "default_ttl")?;
    }
    if let Some(v) = field(body, "max_ttl") {
        r.max_ttl = as_duration(v, "max_ttl")?;
    }
    if r.max_ttl > 0 && r.default_ttl > r.max_ttl {
        return Err(VaultError::BadRequest(
            "default_ttl cannot be greater than max_ttl".into(),
        ));
    }
    if let Some(v) = field(body, "credential_type") {
        if as_str(v, "credential_type")? != "password" {
            return Err(VaultError::BadRequest(
                "credential_type: only \"password\" is supported".into(),
            ));
        }
    }
    Ok(r)
}

/// `v-<display 8>-<role 8>-<random 20>-<unix>`, at most 63 bytes (PostgreSQL's limit).
fn new_username(display: &str, role: &str, now: i64) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(8)
            .collect()
    };
    let mut u = format!(
        "v-{}-{}-{}-{now}",
        clean(display),
        clean(role),
        util::random_base62(20)
    );
    u.truncate(63);
    u
}

async fn creds(ctx: &Ctx<'_>, mount: &MountEntry, name: &str) -> Result<VaultResponse> {
    let vault = ctx.vault;
    if ctx.req.op != Operation::Read {
        ctx.require_op()?;
        return Err(VaultError::MethodNotAllowed);
    }
    ctx.require_op()?;
    check_name(name, "role")?;
    let role: DbRole = load(vault, &role_key(mount, name))
        .await?
        .ok_or_else(|| VaultError::BadRequest(format!("unknown role: {name}")))?;
    let cfg: DbConfig = load(vault, &config_key(mount, &role.db_name))
        .await?
        .ok_or_else(|| {
            VaultError::BadRequest(format!("no database connection {:?}", role.db_name))
        })?;
    if !cfg.allows(name) {
        return Err(VaultError::BadRequest(format!(
            "{name:?} is not an allowed role"
        )));
    }
    let system = crate::token::DEFAULT_TTL;
    let mount_max = if mount.max_lease_ttl > 0 {
        mount.max_lease_ttl
    } else {
        system
    };
    let max_ttl = if role.max_ttl > 0 {
        role.max_ttl.min(mount_max)
    } else {
        mount_max
    };
    let ttl = if role.default_ttl > 0 {
        role.default_ttl
    } else {
        mount.lease_ttl()
    }
    .min(max_ttl);
    let now = vault.now();
    let username = new_username(&ctx.token.display_name, name, now);
    let password = util::random_base62(32);
    let lease = vault
        .inner
        .leases
        .create(NewLease {
            prefix: format!("{}creds/{name}", mount.path),
            engine: "database",
            mount_uuid: &mount.uuid,
            ttl,
            max_ttl,
            renewable: true,
            accessor: &ctx.token.accessor,
            accessor_hash: vault.inner.tokens.hash("accessor", &ctx.token.accessor),
            token_expire: ctx.token.expire_time,
            internal: json!({
                "db_name": role.db_name,
                "role": name,
                "username": username,
                "revocation_statements": role.revocation_statements,
                "renew_statements": role.renew_statements,
            }),
        })
        .await?;
    let expiration = pg::expiration(lease.expire_time);
    let pw_sql = cfg.password_for_sql(&password);
    let queries: Vec<String> = pg::split(&role.creation_statements)
        .iter()
        .map(|q| {
            pg::render(
                q,
                &[
                    ("name", &username),
                    ("username", &username),
                    ("password", &pw_sql),
                    ("expiration", &expiration),
                ],
            )
        })
        .collect();
    let created = match vault
        .inner
        .db
        .get_or_create(&pool_key(&mount.uuid, &role.db_name), &cfg)
    {
        Ok(pool) => exec(&pool, &queries).await,
        Err(e) => Err(e),
    };
    if let Err(e) = created {
        // Nothing was created (one transaction): forget the lease.
        if let Err(e2) = vault.inner.leases.revoke(vault, &lease.lease_id).await {
            tracing::warn!(lease_id = %lease.lease_id, error = %e2, "vault: cleaning up a failed creds lease");
        }
        return Err(e);
    }
    Ok(VaultResponse {
        data: Some(json!({ "username": username, "password": password })),
        lease_id: lease.lease_id,
        renewable: true,
        lease_duration: ttl,
        ..Default::default()
    })
}

fn pg_internal(e: tokio_postgres::Error) -> VaultError {
    VaultError::Internal(format!("database: {}", pg::describe(&e)))
}

async fn reset(ctx: &Ctx<'_>, mount: &MountEntry, name: &str) -> Result<VaultResponse> {
    if ctx.req.op != Operation::Write {
        return Err(VaultError::MethodNotAllowed);
    }
    ctx.require_op()?;
    check_name(name, "connection")?;
    let _: DbConfig = load(ctx.vault, &config_key(mount, name))
        .await?
        .ok_or(VaultError::NotFound)?;
    ctx.vault.inner.db.drop_one(&pool_key(&mount.uuid, name));
    Ok(VaultResponse::no_content())
}

async fn rotate_root(ctx: &Ctx<'_>, mount: &MountEntry, name: &str) -> Result<VaultResponse> {
    if ctx.req.op != Operation::Write {
        return Err(VaultError::MethodNotAllowed);
    }
    ctx.require_op()?;
    check_name(name, "connection")?;
    let vault = ctx.vault;
    let key = config_key(mount, name);
    let _g = vault.inner.kv_locks.lock(&mount.uuid, &key).await;
    let mut cfg: DbConfig = load(vault, &key).await?.ok_or(VaultError::NotFound)?;
    if cfg.username.is_empty() {
        return Err(VaultError::BadRequest(
            "unable to rotate root credentials: no username in the configuration".into(),
        ));
    }
    let new_pw = util::random_base62(32);
    let stmts = if cfg.root_rotation_statements.is_empty() {
        vec![DEFAULT_ROTATE.to_owned()]
    } else {
        cfg.root_rotation_statements.clone()
    };
    let pw_sql = cfg.password_for_sql(&new_pw);
    let queries: Vec<String> = pg::split(&stmts)
        .iter()
        .map(|q| {
            pg::render(
                q,
                &[
                    ("name", &cfg.username),
                    ("username", &cfg.username),
                    ("password", &pw_sql),
                ],
            )
        })
        .collect();
    let pk = pool_key(&mount.uuid, name);
    let pool = vault.inner.db.get_or_create(&pk, &cfg)?;
    exec(&pool, &queries).await?;
    cfg.password = new_pw;
    save(vault, &key, &cfg).await?;
    vault.inner.db.drop_one(&pk);
    Ok(VaultResponse::no_content())
}

/// The config and pool a lease's connection uses.
async fn lease_pool(vault: &Vault, lease: &LeaseEntry) -> Result<(Pool, String)> {
    let db = lease.internal["db_name"].as_str().unwrap_or("");
    let username = lease.internal["username"]
        .as_str()
        .ok_or_else(|| VaultError::Internal("lease without a username".into()))?
        .to_owned();
    let key = format!("vault/logical/{}/config/{db}", lease.mount_uuid);
    let cfg: DbConfig = load(vault, &key).await?.ok_or_else(|| {
        VaultError::Internal(format!("the database connection {db:?} of a lease is gone"))
    })?;
    let pool = vault
        .inner
        .db
        .get_or_create(&pool_key(&lease.mount_uuid, db), &cfg)?;
    Ok((pool, username))
}

fn lease_statements(lease: &LeaseEntry, field: &str) -> Vec<String> {
    lease.internal[field]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The lease's revoke hook: runs the role's revocation statements (or the default: revoke
/// everything, drop the role) in one transaction. A login that does not exist is done.
pub(crate) async fn revoke_lease(vault: &Vault, lease: &LeaseEntry) -> Result<()> {
    let (pool, username) = lease_pool(vault, lease).await?;
    let custom = lease_statements(lease, "revocation_statements");
    let custom: Vec<String> = pg::split(&custom)
        .iter()
        .map(|q| pg::render(q, &[("name", &username), ("username", &username)]))
        .collect();
    retry(|| {
        let (pool, username, custom) = (&pool, &username, &custom);
        async move {
            let mut client = pool.get().await.map_err(TxError::Pool)?;
            let tx = client.transaction().await?;
            let exists = tx
                .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[username])
                .await?
                .is_some();
            if !exists {
                return Ok(());
            }
            if custom.is_empty() {
                pg::default_revoke(&tx, username).await?;
            } else {
                for q in custom {
                    tx.batch_execute(q).await?;
                }
            }
            tx.commit().await?;
            Ok(())
        }
    })
    .await
}

/// The lease's renew hook: `VALID UNTIL` the new expiry (or the role's renew statements).
pub(crate) async fn renew_lease(vault: &Vault, lease: &LeaseEntry, expire: i64) -> Result<()> {
    let (pool, username) = lease_pool(vault, lease).await?;
    let mut stmts = lease_statements(lease, "renew_statements");
    if stmts.is_empty() {
        stmts = vec![DEFAULT_RENEW.to_owned()];
    }
    let exp = pg::expiration(expire);
    let queries: Vec<String> = pg::split(&stmts)
        .iter()
        .map(|q| {
            pg::render(
                q,
                &[
                    ("name", &username),
                    ("username", &username),
                    ("expiration", &exp),
                ],
            )
        })
        .collect();
    exec(&pool, &queries).await
}

/// Why one attempt at a transaction failed.
enum TxError {
    Pool(deadpool_postgres::PoolError),
    Pg(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        TxError::Pg(e)
    }
}

/// Attempts of one transaction when PostgreSQL reports a conflict with a concurrent one
/// (`tuple concurrently updated` from concurrent GRANT/REVOKE on one object, a
/// serialization failure, a deadlock).
const ATTEMPTS: u32 = 5;

/// Runs `attempt` until it succeeds, fails for a reason other than a conflict, or has been
/// tried [`ATTEMPTS`] times.
async fn retry<F, Fut>(mut attempt: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), TxError>>,
{
    let mut n = 0;
    loop {
        n += 1;
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(TxError::Pg(e)) if n < ATTEMPTS && pg::conflict(&e) => {
                tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(n))).await;
            }
            Err(TxError::Pg(e)) => return Err(pg_internal(e)),
            Err(TxError::Pool(e)) => {
                return Err(VaultError::Internal(format!(
                    "database: {}",
                    pg::describe_pool(&e)
                )))
            }
        }
    }
}

/// Runs `queries` in one transaction (retried on conflicts).
async fn exec(pool: &Pool, queries: &[String]) -> Result<()> {
    retry(|| async move {
        let mut client = pool.get().await.map_err(TxError::Pool)?;
        let tx = client.transaction().await?;
        for q in queries {
            tx.batch_execute(q).await?;
        }
        tx.commit().await?;
        Ok(())
    })
    .await
}
