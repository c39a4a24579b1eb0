//! The KV secrets engine, versions 1 ([`v1`]) and 2 ([`v2`]).
//!
//! Writes to one secret are serialised in this process by a striped lock (64 stripes keyed
//! by mount and path), so a check-and-set and the version bump it guards are one step;
//! different secrets proceed in parallel (and share SQLite's group commit).

mod v1;
mod v2;

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

use serde_json::json;
use tokio::sync::{Mutex, MutexGuard};

use crate::api::{Result, VaultError, VaultResponse};
use crate::mounts::MountEntry;
use crate::router::Ctx;
use crate::Vault;

const STRIPES: usize = 64;
/// Most keys one LIST answers; more is refused rather than answered partly.
const MAX_LIST_KEYS: usize = 100_000;

/// The striped write locks.
pub(crate) struct Locks(Vec<Mutex<()>>);

impl Locks {
    pub(crate) fn new() -> Locks {
        Locks((0..STRIPES).map(|_| Mutex::new(())).collect())
    }

    pub(crate) async fn lock(&self, mount: &str, path: &str) -> MutexGuard<'_, ()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (mount, path).hash(&mut h);
        self.0[(h.finish() as usize) % STRIPES].lock().await
    }
}

pub(crate) async fn handle(ctx: &Ctx<'_>, mount: &MountEntry, rest: &str) -> Result<VaultResponse> {
    let r = match mount.kv_version() {
        2 => v2::handle(ctx, mount, rest).await,
        _ => v1::handle(ctx, mount, rest).await,
    }?;
    Ok(r.with_mount_type("kv"))
}

/// One level of keys below `folder` (`a`, `b/`), from the store keys under `prefix`.
/// 404 if there are none, as in Vault.
pub(crate) async fn list_level(vault: &Vault, prefix: &str, folder: &str) -> Result<VaultResponse> {
    let base = if folder.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix}{folder}/")
    };
    let mut keys = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = vault
            .inner
            .store
            .list_page(&base, after.as_deref(), 1000)
            .await?;
        let Some(last) = page.last().cloned() else {
            break;
        };
        for k in &page {
            let rest = &k[base.len()..];
            let rest = rest.split('#').next().unwrap_or(rest);
            match rest.split_once('/') {
                Some((dir, _)) => keys.insert(format!("{dir}/")),
                None => keys.insert(rest.to_owned()),
            };
        }
        if keys.len() > MAX_LIST_KEYS {
            return Err(VaultError::BadRequest(format!(
                "more than {MAX_LIST_KEYS} keys under this path; list a deeper path"
            )));
        }
        after = Some(last);
    }
    if keys.is_empty() {
        return Err(VaultError::NotFound);
    }
    Ok(VaultResponse::data(json!({ "keys": keys })))
}

/// A secret's path below the mount: non-empty.
pub(crate) fn secret_path(p: &str) -> Result<&str> {
    if p.is_empty() {
        return Err(VaultError::BadRequest("missing secret path".into()));
    }
    Ok(p)
}
