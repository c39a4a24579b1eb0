//! KV version 2: versioned secrets with check-and-set, soft delete, undelete and destroy.
//!
//! Layout under the mount's `vault/logical/<uuid>/`:
//! - `config` → the engine's [`Config`] (`max_versions`, `cas_required`,
//!   `delete_version_after`);
//! - `m/<path>` → the secret's [`Meta`] (every kept version's times and flags, settings,
//!   `custom_metadata`);
//! - `v/<path>#<version>` → that version's data.
//!
//! A write puts the new version and the metadata (and deletes versions beyond
//! `max_versions`) in one store transaction, under the secret's stripe lock, so a
//! check-and-set never races and a crash never leaves a version the metadata does not know.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use warden_store::Op;

use super::{list_level, secret_path};
use crate::api::{as_bool, as_duration, as_u64, Operation, Result, VaultError, VaultResponse};
use crate::mounts::MountEntry;
use crate::router::Ctx;
use crate::util::rfc3339;

/// Versions kept when neither the secret nor the engine says (Vault's default).
const DEFAULT_MAX_VERSIONS: u64 = 10;
/// Most `custom_metadata` entries, and the longest key and value (Vault's limits).
const MAX_CUSTOM: usize = 64;
const MAX_CUSTOM_KEY: usize = 128;
const MAX_CUSTOM_VALUE: usize = 512;

/// The engine's settings (`<mount>/config`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Config {
    max_versions: u64,
    cas_required: bool,
    delete_version_after: u64,
}

/// One version's bookkeeping.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Version {
    created_time: i64,
    deletion_time: Option<i64>,
    destroyed: bool,
}

/// A secret's metadata.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Meta {
    created_time: i64,
    updated_time: i64,
    current_version: u64,
    max_versions: u64,
    cas_required: bool,
    delete_version_after: u64,
    custom_metadata: BTreeMap<String, String>,
    versions: BTreeMap<u64, Version>,
}

impl Meta {
    fn oldest_version(&self) -> u64 {
        self.versions.keys().next().copied().unwrap_or(0)
    }

    fn custom(&self) -> Value {
        if self.custom_metadata.is_empty() {
            Value::Null
        } else {
            json!(self.custom_metadata)
        }
    }

    fn version_json(&self, n: u64, v: &Version) -> Value {
        json!({
            "created_time": rfc3339(v.created_time),
            "custom_metadata": self.custom(),
            "deletion_time": v.deletion_time.map(rfc3339).unwrap_or_default(),
            "destroyed": v.destroyed,
            "version": n,
        })
    }

    fn to_json(&self) -> Value {
        let versions: Map<String, Value> = self
            .versions
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    json!({
                        "created_time": rfc3339(v.created_time),
                        "deletion_time": v.deletion_time.map(rfc3339).unwrap_or_default(),
                        "destroyed": v.destroyed,
                    }),
                )
            })
            .collect();
        json!({
            "cas_required": self.cas_required,
            "created_time": rfc3339(self.created_time),
            "current_version": self.current_version,
            "custom_metadata": self.custom(),
            "delete_version_after": go_duration(self.delete_version_after),
            "max_versions": self.max_versions,
            "oldest_version": self.oldest_version(),
            "updated_time": rfc3339(self.updated_time),
            "versions": versions,
        })
    }
}

/// The store keys of one mount.
struct Keys {
    base: String,
}

impl Keys {
    fn config(&self) -> String {
        format!("{}config", self.base)
    }
    fn meta_prefix(&self) -> String {
        format!("{}m/", self.base)
    }
    fn meta(&self, path: &str) -> String {
        format!("{}m/{path}", self.base)
    }
    fn version(&self, path: &str, n: u64) -> String {
        format!("{}v/{path}#{n}", self.base)
    }
}

pub(super) async fn handle(ctx: &Ctx<'_>, mount: &MountEntry, rest: &str) -> Result<VaultResponse> {
    let keys = Keys {
        base: mount.data_prefix(),
    };
    let (section, path) = rest.split_once('/').unwrap_or((rest, ""));
    let op = ctx.req.op;
    match (section, op) {
        ("config", _) if path.is_empty() => config(ctx, &keys).await,
        ("data", Operation::Read) => {
            ctx.require_op()?;
            read(ctx, &keys, secret_path(path)?).await
        }
        ("data", Operation::Write) => write(ctx, &keys, secret_path(path)?, false).await,
        ("data", Operation::Patch) => {
            ctx.require_op()?;
            write(ctx, &keys, secret_path(path)?, true).await
        }
        ("data", Operation::Delete) => {
            ctx.require_op()?;
            let path = secret_path(path)?;
            change_versions(ctx, &keys, path, None, VersionChange::Delete).await
        }
        ("metadata", Operation::List) => {
            ctx.require_op()?;
            list_level(ctx.vault, &keys.meta_prefix(), path).await
        }
        ("metadata", Operation::Read) => {
            ctx.require_op()?;
            let m = load_meta(ctx, &keys, secret_path(path)?)
                .await?
                .ok_or(VaultError::NotFound)?;
            Ok(VaultResponse::data(m.to_json()))
        }
        ("metadata", Operation::Write | Operation::Patch) => {
            write_metadata(ctx, &keys, secret_path(path)?).await
        }
        ("metadata", Operation::Delete) => {
            ctx.require_op()?;
            delete_all(ctx, &keys, secret_path(path)?).await
        }
        ("delete" | "undelete" | "destroy", Operation::Write) => {
            ctx.require(&ctx.req.path, crate::policy::Caps::UPDATE)?;
            let path = secret_path(path)?;
            let versions = versions_param(ctx)?;
            let change = match section {
                "delete" => VersionChange::Delete,
                "undelete" => VersionChange::Undelete,
                _ => VersionChange::Destroy,
            };
            change_versions(ctx, &keys, path, Some(versions), change).await
        }
        ("data" | "delete" | "undelete" | "destroy", _) => {
            ctx.require_op()?;
            Err(VaultError::MethodNotAllowed)
        }
        _ => {
            ctx.require_op()?;
            Err(VaultError::NoHandler(ctx.req.path.clone()))
        }
    }
}

async fn load_config(ctx: &Ctx<'_>, keys: &Keys) -> Result<Config> {
    match ctx.vault.inner.store.get_cached(&keys.config()).await? {
        None => Ok(Config::default()),
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| VaultError::Internal(format!("kv config unreadable: {e}"))),
    }
}

async fn load_meta(ctx: &Ctx<'_>, keys: &Keys, path: &str) -> Result<Option<Meta>> {
    match ctx.vault.inner.store.get_cached(&keys.meta(path)).await? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| VaultError::Internal(format!("kv metadata unreadable: {e}"))),
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| VaultError::Internal(e.to_string()))
}

async fn config(ctx: &Ctx<'_>, keys: &Keys) -> Result<VaultResponse> {
    ctx.require_op()?;
    match ctx.req.op {
        Operation::Read => {
            let c = load_config(ctx, keys).await?;
            Ok(VaultResponse::data(json!({
                "max_versions": c.max_versions,
                "cas_required": c.cas_required,
                "delete_version_after": go_duration(c.delete_version_after),
            })))
        }
        Operation::Write => {
            let mut c = load_config(ctx, keys).await?;
            let b = &ctx.req.body;
            if let Some(v) = crate::api::field(b, "max_versions") {
                c.max_versions = as_u64(v, "max_versions")?;
            }
            if let Some(v) = crate::api::field(b, "cas_required") {
                c.cas_required = as_bool(v, "cas_required")?;
            }
            if let Some(v) = crate::api::field(b, "delete_version_after") {
                c.delete_version_after = as_duration(v, "delete_version_after")?;
            }
            ctx.vault
                .inner
                .store
                .put(&keys.config(), &encode(&c)?)
                .await?;
            Ok(VaultResponse::no_content())
        }
        _ => Err(VaultError::MethodNotAllowed),
    }
}

/// Whether version `v` reads as deleted at `now`.
fn is_deleted(v: &Version, now: i64) -> bool {
    v.destroyed || v.deletion_time.is_some_and(|t| t <= now)
}

async fn read(ctx: &Ctx<'_>, keys: &Keys, path: &str) -> Result<VaultResponse> {
    let asked = match ctx.req.query.get("version") {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| VaultError::bad_param("version", "a non-negative integer"))?,
    };
    let meta = load_meta(ctx, keys, path)
        .await?
        .ok_or(VaultError::NotFound)?;
    let n = if asked == 0 {
        meta.current_version
    } else {
        asked
    };
    let v = meta.versions.get(&n).ok_or(VaultError::NotFound)?;
    if is_deleted(v, ctx.vault.now()) {
        return Err(VaultError::NotFoundWithData(json!({
            "data": null,
            "metadata": meta.version_json(n, v),
        })));
    }
    let bytes = ctx
        .vault
        .inner
        .store
        .get_cached(&keys.version(path, n))
        .await?
        .ok_or(VaultError::NotFound)?;
    let data: Value = serde_json::from_slice(&bytes)
        .map_err(|e| VaultError::Internal(format!("kv version unreadable: {e}")))?;
    Ok(VaultResponse::data(json!({
        "data": data,
        "metadata": meta.version_json(n, v),
    })))
}

/// `data/` write (or, with `patch`, a JSON merge patch onto the current version).
async fn write(ctx: &Ctx<'_>, keys: &Keys, path: &str, patch: bool) -> Result<VaultResponse> {
    let store = &ctx.vault.inner.store;
    if !patch {
        ctx.require_write(|| async { Ok(store.get_cached(&keys.meta(path)).await?.is_some()) })
            .await?;
    }
    let body = &ctx.req.body;
    let data = match crate::api::field(body, "data") {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::Null) | None => {
            return Err(VaultError::BadRequest("no data provided".into()));
        }
        Some(_) => return Err(VaultError::bad_param("data", "a JSON object")),
    };
    let cas = match crate::api::field(body, "options") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => crate::api::field(o, "cas")
            .map(|v| as_u64(v, "options.cas"))
            .transpose()?,
        Some(_) => return Err(VaultError::bad_param("options", "a JSON object")),
    };
    let _guard = ctx.vault.inner.kv_locks.lock(&keys.base, path).await;
    let now = ctx.vault.now();
    let config = load_config(ctx, keys).await?;
    let mut meta = match load_meta(ctx, keys, path).await? {
        Some(m) => m,
        None if patch => return Err(VaultError::NotFound),
        None => Meta {
            created_time: now,
            ..Default::default()
        },
    };
    if (meta.cas_required || config.cas_required) && cas.is_none() {
        return Err(VaultError::BadRequest(
            "check-and-set parameter required for this call".into(),
        ));
    }
    if let Some(c) = cas {
        if c != meta.current_version {
            return Err(VaultError::BadRequest(
                "check-and-set parameter did not match the current version".into(),
            ));
        }
    }
    let new_data = if patch {
        let cur = meta
            .versions
            .get(&meta.current_version)
            .ok_or(VaultError::NotFound)?;
        if is_deleted(cur, now) {
            return Err(VaultError::NotFound);
        }
        let bytes = store
            .get_cached(&keys.version(path, meta.current_version))
            .await?
            .ok_or(VaultError::NotFound)?;
        let mut current: Value = serde_json::from_slice(&bytes)
            .map_err(|e| VaultError::Internal(format!("kv version unreadable: {e}")))?;
        merge_patch(&mut current, &Value::Object(data));
        current
    } else {
        Value::Object(data)
    };
    let n = meta.current_version + 1;
    let dva = if meta.delete_version_after > 0 {
        meta.delete_version_after
    } else {
        config.delete_version_after
    };
    meta.versions.insert(
        n,
        Version {
            created_time: now,
            deletion_time: (dva > 0).then(|| now + dva as i64),
            destroyed: false,
        },
    );
    meta.current_version = n;
    meta.updated_time = now;
    let mut ops = vec![Op::Put {
        key: keys.version(path, n),
        value: encode(&new_data)?,
    }];
    ops.extend(prune(&mut meta, &config, keys, path));
    ops.push(Op::Put {
        key: keys.meta(path),
        value: encode(&meta)?,
    });
    let v = &meta.versions[&n];
    let response = VaultResponse::data(meta.version_json(n, v));
    // The write and the request's audit event: one transaction, one commit.
    ctx.transact_audited(ops, response.status().as_u16())
        .await?;
    Ok(response)
}

/// Drops the oldest versions beyond the limit; returns the deletes of their data.
fn prune(meta: &mut Meta, config: &Config, keys: &Keys, path: &str) -> Vec<Op> {
    let max = [meta.max_versions, config.max_versions]
        .into_iter()
        .find(|m| *m > 0)
        .unwrap_or(DEFAULT_MAX_VERSIONS);
    let mut ops = Vec::new();
    while meta.versions.len() as u64 > max {
        let Some(oldest) = meta.versions.keys().next().copied() else {
            break;
        };
        meta.versions.remove(&oldest);
        ops.push(Op::Delete {
            key: keys.version(path, oldest),
        });
    }
    ops
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

async fn write_metadata(ctx: &Ctx<'_>, keys: &Keys, path: &str) -> Result<VaultResponse> {
    let store = &ctx.vault.inner.store;
    let patch = ctx.req.op == Operation::Patch;
    if patch {
        ctx.require_op()?;
    } else {
        ctx.require_write(|| async { Ok(store.get_cached(&keys.meta(path)).await?.is_some()) })
            .await?;
    }
    let b = &ctx.req.body;
    let max_versions = crate::api::field(b, "max_versions")
        .map(|v| as_u64(v, "max_versions"))
        .transpose()?;
    let cas_required = crate::api::field(b, "cas_required")
        .map(|v| as_bool(v, "cas_required"))
        .transpose()?;
    let dva = crate::api::field(b, "delete_version_after")
        .map(|v| as_duration(v, "delete_version_after"))
        .transpose()?;
    let custom = match crate::api::field(b, "custom_metadata") {
        None => None,
        Some(Value::Null) => Some(BTreeMap::new()),
        Some(Value::Object(m)) => Some(custom_metadata(m)?),
        Some(_) => {
            return Err(VaultError::bad_param(
                "custom_metadata",
                "an object of strings",
            ))
        }
    };
    let _guard = ctx.vault.inner.kv_locks.lock(&keys.base, path).await;
    let now = ctx.vault.now();
    let config = load_config(ctx, keys).await?;
    let mut meta = match load_meta(ctx, keys, path).await? {
        Some(m) => m,
        None if patch => return Err(VaultError::NotFound),
        None => Meta {
            created_time: now,
            ..Default::default()
        },
    };
    if let Some(m) = max_versions {
        meta.max_versions = m;
    }
    if let Some(c) = cas_required {
        meta.cas_required = c;
    }
    if let Some(d) = dva {
        meta.delete_version_after = d;
    }
    if let Some(c) = custom {
        if patch {
            meta.custom_metadata.extend(c);
        } else {
            meta.custom_metadata = c;
        }
    }
    meta.updated_time = now;
    let mut ops = prune(&mut meta, &config, keys, path);
    ops.push(Op::Put {
        key: keys.meta(path),
        value: encode(&meta)?,
    });
    store.transact(ops).await?;
    Ok(VaultResponse::no_content())
}

fn custom_metadata(m: &Map<String, Value>) -> Result<BTreeMap<String, String>> {
    if m.len() > MAX_CUSTOM {
        return Err(VaultError::BadRequest(format!(
            "custom_metadata: at most {MAX_CUSTOM} keys"
        )));
    }
    m.iter()
        .map(|(k, v)| {
            let s = v
                .as_str()
                .ok_or_else(|| VaultError::bad_param("custom_metadata", "an object of strings"))?;
            if k.len() > MAX_CUSTOM_KEY || s.len() > MAX_CUSTOM_VALUE {
                return Err(VaultError::BadRequest(format!(
                    "custom_metadata: keys are at most {MAX_CUSTOM_KEY} bytes and values at \
                     most {MAX_CUSTOM_VALUE}"
                )));
            }
            Ok((k.clone(), s.to_owned()))
        })
        .collect()
}

async fn delete_all(ctx: &Ctx<'_>, keys: &Keys, path: &str) -> Result<VaultResponse> {
    let _guard = ctx.vault.inner.kv_locks.lock(&keys.base, path).await;
    let Some(meta) = load_meta(ctx, keys, path).await? else {
        return Ok(VaultResponse::no_content());
    };
    let mut ops: Vec<Op> = meta
        .versions
        .keys()
        .map(|n| Op::Delete {
            key: keys.version(path, *n),
        })
        .collect();
    ops.push(Op::Delete {
        key: keys.meta(path),
    });
    ctx.vault.inner.store.transact(ops).await?;
    Ok(VaultResponse::no_content())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum VersionChange {
    Delete,
    Undelete,
    Destroy,
}

fn versions_param(ctx: &Ctx<'_>) -> Result<Vec<u64>> {
    let v = crate::api::field(&ctx.req.body, "versions")
        .ok_or_else(|| VaultError::BadRequest("no version number provided".into()))?;
    let list: Vec<u64> = match v {
        Value::Array(items) => items
            .iter()
            .map(|i| as_u64(i, "versions"))
            .collect::<Result<_>>()?,
        other => vec![as_u64(other, "versions")?],
    };
    if list.is_empty() {
        return Err(VaultError::BadRequest("no version number provided".into()));
    }
    if list.len() > 1000 {
        return Err(VaultError::BadRequest(
            "at most 1000 versions at once".into(),
        ));
    }
    Ok(list)
}

/// Soft-deletes, undeletes or destroys versions (`None`: the current version).
async fn change_versions(
    ctx: &Ctx<'_>,
    keys: &Keys,
    path: &str,
    versions: Option<Vec<u64>>,
    change: VersionChange,
) -> Result<VaultResponse> {
    let _guard = ctx.vault.inner.kv_locks.lock(&keys.base, path).await;
    let Some(mut meta) = load_meta(ctx, keys, path).await? else {
        return Ok(VaultResponse::no_content());
    };
    let now = ctx.vault.now();
    let versions = versions.unwrap_or_else(|| vec![meta.current_version]);
    let mut ops = Vec::new();
    for n in versions {
        let Some(v) = meta.versions.get_mut(&n) else {
            continue;
        };
        match change {
            VersionChange::Delete => {
                if v.deletion_time.is_none_or(|t| t > now) && !v.destroyed {
                    v.deletion_time = Some(now);
                }
            }
            VersionChange::Undelete => {
                if !v.destroyed {
                    v.deletion_time = None;
                }
            }
            VersionChange::Destroy => {
                v.destroyed = true;
                ops.push(Op::Delete {
                    key: keys.version(path, n),
                });
            }
        }
    }
    meta.updated_time = now;
    ops.push(Op::Put {
        key: keys.meta(path),
        value: encode(&meta)?,
    });
    ctx.vault.inner.store.transact(ops).await?;
    Ok(VaultResponse::no_content())
}

/// Seconds as a Go duration string (`0s`, `1h0m0s`), as Vault prints them.
fn go_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(90), "1m30s");
        assert_eq!(go_duration(3600), "1h0m0s");
    }
}
