//! The mount tables: secrets engines (`sys/mounts`) and auth methods (`sys/auth`).
//!
//! Each table is one store record (`vault/sys/mounts`, `vault/sys/auth`), so enabling and
//! disabling are single writes, and is cached in memory behind an `ArcSwap` (the hot path's
//! mount lookup reads no store). An engine's data lives under `vault/logical/<uuid>/`, so a
//! disabled engine's data is deleted by prefix and a new engine at the same path starts empty.
//!
//! Engines: `kv` (`options.version` `"1"`, the default as in Vault, or `"2"`), `kv-v2`
//! (= kv version 2), `generic` (= kv version 1), `transit` and `database`. Other types
//! (`pki`, …) are refused with a clear 400 until they exist. Auth methods: `token` is always
//! there and cannot be disabled; others are refused until they exist.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use warden_store::Store;

use crate::api::{Result, VaultError};
use crate::token::DEFAULT_TTL;

const MOUNTS_KEY: &str = "vault/sys/mounts";
const AUTH_KEY: &str = "vault/sys/auth";
/// Most secrets engines (or auth methods) in one table.
const MAX_MOUNTS: usize = 256;
/// Prefixes no engine may take.
const RESERVED: &[&str] = &["sys/", "auth/", "cubbyhole/", "identity/", "v1/"];

/// One mounted engine or auth method.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MountEntry {
    /// The path, ending in `/`.
    pub path: String,
    /// `kv`, `token`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Free text.
    pub description: String,
    /// Where its data lives (`vault/logical/<uuid>/`).
    pub uuid: String,
    /// `kv_1234abcd`.
    pub accessor: String,
    /// Engine options (`version`).
    pub options: BTreeMap<String, String>,
    /// Default lease TTL, seconds (0 = the system's).
    pub default_lease_ttl: u64,
    /// Maximum lease TTL, seconds (0 = the system's).
    pub max_lease_ttl: u64,
    /// Unix seconds it was enabled.
    pub created: i64,
}

impl MountEntry {
    /// KV version (1 or 2); 0 for other engines.
    pub fn kv_version(&self) -> u8 {
        if self.kind != "kv" {
            return 0;
        }
        match self.options.get("version").map(String::as_str) {
            Some("2") => 2,
            _ => 1,
        }
    }

    /// The store prefix of its data.
    pub(crate) fn data_prefix(&self) -> String {
        format!("vault/logical/{}/", self.uuid)
    }

    /// Vault's description of a mount (the values of `sys/mounts` and `sys/auth`).
    pub(crate) fn describe(&self) -> Value {
        json!({
            "type": self.kind,
            "description": self.description,
            "accessor": self.accessor,
            "uuid": self.uuid,
            "config": {
                "default_lease_ttl": self.default_lease_ttl,
                "max_lease_ttl": self.max_lease_ttl,
                "force_no_cache": false,
            },
            "options": if self.options.is_empty() { Value::Null } else { json!(self.options) },
            "local": false,
            "seal_wrap": false,
            "external_entropy_access": false,
            "plugin_version": "",
            "running_plugin_version": "",
            "running_sha256": "",
            "deprecation_status": if self.kind == "kv" { json!("supported") } else { Value::Null },
        })
    }

    /// The effective default lease TTL.
    pub(crate) fn lease_ttl(&self) -> u64 {
        if self.default_lease_ttl > 0 {
            self.default_lease_ttl
        } else {
            DEFAULT_TTL
        }
    }
}

/// What to enable.
pub(crate) struct MountSpec {
    /// The type (`kv`, `kv-v2`, …).
    pub(crate) kind: String,
    /// Free text.
    pub(crate) description: String,
    /// Engine options.
    pub(crate) options: BTreeMap<String, String>,
    /// Default and maximum lease TTL, seconds (0 = the system's).
    pub(crate) ttls: (u64, u64),
}

/// Which table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    /// Secrets engines.
    Secrets,
    /// Auth methods.
    Auth,
}

/// Both tables, cached.
pub(crate) struct Mounts {
    store: Store,
    secrets: ArcSwap<Vec<MountEntry>>,
    auth: ArcSwap<Vec<MountEntry>>,
    /// Serialises table changes in this process (read-modify-write of one record).
    write: tokio::sync::Mutex<()>,
}

impl Mounts {
    pub(crate) async fn open(store: Store) -> Result<Mounts> {
        let secrets = load(&store, MOUNTS_KEY).await?;
        let mut auth = load(&store, AUTH_KEY).await?;
        if !auth.iter().any(|m| m.path == "token/") {
            auth.push(MountEntry {
                path: "token/".into(),
                kind: "token".into(),
                description: "token based credentials".into(),
                uuid: "token".into(),
                accessor: "auth_token_00000000".into(),
                options: BTreeMap::new(),
                default_lease_ttl: 0,
                max_lease_ttl: 0,
                created: 0,
            });
        }
        Ok(Mounts {
            store,
            secrets: ArcSwap::from_pointee(secrets),
            auth: ArcSwap::from_pointee(auth),
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// The secrets engine serving `path`, and the rest of the path below it (longest mount
    /// prefix wins).
    pub(crate) fn find(&self, path: &str) -> Option<(MountEntry, String)> {
        Self::find_in(&self.secrets.load(), path)
    }

    /// The auth method serving `path` (below `auth/`), and the rest of the path.
    pub(crate) fn find_auth(&self, path: &str) -> Option<(MountEntry, String)> {
        Self::find_in(&self.auth.load(), path)
    }

    fn find_in(entries: &[MountEntry], path: &str) -> Option<(MountEntry, String)> {
        let with_slash = format!("{path}/");
        entries
            .iter()
            .filter(|m| with_slash.starts_with(&m.path))
            .max_by_key(|m| m.path.len())
            .map(|m| {
                let rest = with_slash[m.path.len()..].trim_end_matches('/').to_owned();
                (m.clone(), rest)
            })
    }

    /// A table's entries.
    pub(crate) fn list(&self, table: Table) -> Arc<Vec<MountEntry>> {
        match table {
            Table::Secrets => self.secrets.load_full(),
            Table::Auth => self.auth.load_full(),
        }
    }

    /// Enables `spec.kind` at `path` in `table`.
    pub(crate) async fn enable(
        &self,
        table: Table,
        path: &str,
        spec: MountSpec,
        now: i64,
    ) -> Result<()> {
        let path = normalize_mount_path(path)?;
        let (kind, options) = check_kind(table, &spec.kind, spec.options)?;
        let description = spec.description;
        let ttls = spec.ttls;
        let _g = self.write.lock().await;
        let mut entries = (*self.list(table)).clone();
        if let Some(m) = entries
            .iter()
            .find(|m| m.path.starts_with(&path) || path.starts_with(&m.path))
        {
            return Err(VaultError::BadRequest(format!(
                "path is already in use at {}",
                m.path
            )));
        }
        if entries.len() >= MAX_MOUNTS {
            return Err(VaultError::BadRequest(format!(
                "at most {MAX_MOUNTS} mounts are allowed"
            )));
        }
        let uuid = crate::api::uuid_v4();
        let accessor = format!("{kind}_{}", &uuid[..8]);
        entries.push(MountEntry {
            path,
            kind,
            description,
            uuid,
            accessor,
            options,
            default_lease_ttl: ttls.0,
            max_lease_ttl: ttls.1,
            created: now,
        });
        self.save(table, entries).await
    }

    /// Enables a secrets engine unless one of the same type is at `path` already.
    pub(crate) async fn enable_if_absent(
        &self,
        path: &str,
        kind: &str,
        options: BTreeMap<String, String>,
        now: i64,
    ) -> Result<()> {
        let p = normalize_mount_path(path)?;
        if let Some(m) = self.list(Table::Secrets).iter().find(|m| m.path == p) {
            if m.kind == kind || (kind == "kv-v2" && m.kv_version() == 2) {
                return Ok(());
            }
        }
        let spec = MountSpec {
            kind: kind.to_owned(),
            description: String::new(),
            options,
            ttls: (0, 0),
        };
        self.enable(Table::Secrets, path, spec, now).await
    }

    /// Disables the mount at `path` and deletes its data. Disabling what is not mounted
    /// succeeds, as in Vault.
    pub(crate) async fn disable(&self, table: Table, path: &str) -> Result<()> {
        let path = normalize_mount_path(path)?;
        if table == Table::Auth && path == "token/" {
            return Err(VaultError::BadRequest(
                "token auth method cannot be disabled".into(),
            ));
        }
        let _g = self.write.lock().await;
        let mut entries = (*self.list(table)).clone();
        let Some(i) = entries.iter().position(|m| m.path == path) else {
            return Ok(());
        };
        let gone = entries.remove(i);
        self.save(table, entries).await?;
        // The table no longer points at the data: delete it in bounded steps.
        let prefix = gone.data_prefix();
        loop {
            let keys = self.store.list_page(&prefix, None, 500).await?;
            if keys.is_empty() {
                break;
            }
            let ops = keys
                .into_iter()
                .map(|key| warden_store::Op::Delete { key })
                .collect();
            self.store.transact(ops).await?;
        }
        Ok(())
    }

    /// Tunes a mount: TTLs, description, options (a KV version change is refused).
    pub(crate) async fn tune(
        &self,
        table: Table,
        path: &str,
        change: impl FnOnce(&mut MountEntry) -> Result<()>,
    ) -> Result<()> {
        let path = normalize_mount_path(path)?;
        let _g = self.write.lock().await;
        let mut entries = (*self.list(table)).clone();
        let Some(m) = entries.iter_mut().find(|m| m.path == path) else {
            return Err(VaultError::BadRequest(format!(
                "cannot tune {path:?}: no mount at that path"
            )));
        };
        change(m)?;
        self.save(table, entries).await
    }

    async fn save(&self, table: Table, entries: Vec<MountEntry>) -> Result<()> {
        let key = match table {
            Table::Secrets => MOUNTS_KEY,
            Table::Auth => AUTH_KEY,
        };
        let stored: Vec<&MountEntry> = entries.iter().filter(|m| m.kind != "token").collect();
        let bytes = serde_json::to_vec(&stored).map_err(|e| VaultError::Internal(e.to_string()))?;
        self.store.put(key, &bytes).await?;
        match table {
            Table::Secrets => self.secrets.store(Arc::new(entries)),
            Table::Auth => self.auth.store(Arc::new(entries)),
        }
        Ok(())
    }
}

async fn load(store: &Store, key: &str) -> Result<Vec<MountEntry>> {
    match store.get(key).await? {
        None => Ok(Vec::new()),
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| VaultError::Internal(format!("mount table {key:?} unreadable: {e}"))),
    }
}

/// `secret` → `secret/`; refuses empty, reserved and odd paths.
pub(crate) fn normalize_mount_path(path: &str) -> Result<String> {
    let p = path.trim_matches('/');
    if p.is_empty()
        || p.len() > 128
        || !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        || p.split('/').any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(VaultError::BadRequest(format!(
            "invalid mount path {path:?}: use segments of a-z A-Z 0-9 - _ ."
        )));
    }
    let p = format!("{p}/");
    if RESERVED.iter().any(|r| p.starts_with(r)) {
        return Err(VaultError::BadRequest(format!(
            "cannot mount at {p:?}: the path is reserved"
        )));
    }
    Ok(p)
}

fn check_kind(
    table: Table,
    kind: &str,
    mut options: BTreeMap<String, String>,
) -> Result<(String, BTreeMap<String, String>)> {
    match (table, kind) {
        (Table::Secrets, "kv" | "generic") => {
            let v = options.get("version").map(String::as_str).unwrap_or("1");
            if v != "1" && v != "2" {
                return Err(VaultError::BadRequest(format!(
                    "invalid kv version {v:?}: expected \"1\" or \"2\""
                )));
            }
            options.insert("version".into(), v.into());
            Ok(("kv".into(), options))
        }
        (Table::Secrets, "kv-v2") => {
            options.insert("version".into(), "2".into());
            Ok(("kv".into(), options))
        }
        (Table::Secrets, "database") => Ok(("database".into(), options)),
        (Table::Secrets, "transit") => Ok(("transit".into(), options)),
        (Table::Secrets, other) => Err(VaultError::BadRequest(format!(
            "secrets engine type {other:?} is not available in Warden's vault yet (kv and \
             transit are)"
        ))),
        (Table::Auth, "approle") => Ok(("approle".into(), options)),
        (Table::Auth, "token") => Err(VaultError::BadRequest(
            "the token auth method is always enabled at auth/token/".into(),
        )),
        (Table::Auth, other) => Err(VaultError::BadRequest(format!(
            "auth method type {other:?} is not available in Warden's vault yet"
        ))),
    }
}
