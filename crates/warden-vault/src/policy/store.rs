//! Stored policies (`vault/policy/acl/<name>`) with an in-memory cache of parsed policies and
//! of the ACLs made from sets of them, so the hot path parses nothing: a token's ACL is one
//! map lookup. Every write or delete through this process clears the ACL cache.
//!
//! Other authorities sharing a PostgreSQL database do not see this process's cache
//! invalidations; that is acceptable while only one authority is active (issue 10's HA work
//! adds a reload on leadership change).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use warden_store::Store;

use super::{Acl, Policy, DEFAULT_POLICY};
use crate::api::{Result, VaultError};

const PREFIX: &str = "vault/policy/acl/";
/// Longest policy name, in bytes.
const MAX_NAME_BYTES: usize = 128;

#[derive(Serialize, Deserialize)]
struct Stored {
    name: String,
    policy: String,
}

/// The policy store.
pub(crate) struct PolicyStore {
    store: Store,
    parsed: RwLock<HashMap<String, Arc<Policy>>>,
    acls: RwLock<HashMap<Vec<String>, Arc<Acl>>>,
}

impl PolicyStore {
    /// Opens it, writing the `default` policy on a new store.
    pub(crate) async fn open(store: Store) -> Result<PolicyStore> {
        let s = PolicyStore {
            store,
            parsed: RwLock::new(HashMap::new()),
            acls: RwLock::new(HashMap::new()),
        };
        let default = serde_json::to_vec(&Stored {
            name: "default".into(),
            policy: DEFAULT_POLICY.into(),
        })
        .map_err(|e| VaultError::Internal(e.to_string()))?;
        s.store
            .put_if_absent(&format!("{PREFIX}default"), &default)
            .await?;
        Ok(s)
    }

    /// Normalises and checks a policy name (Vault lower-cases names).
    pub(crate) fn check_name(name: &str) -> Result<String> {
        let n = name.trim().to_ascii_lowercase();
        if n.is_empty()
            || n.len() > MAX_NAME_BYTES
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
        {
            return Err(VaultError::BadRequest(format!(
                "invalid policy name {name:?}: use 1 to {MAX_NAME_BYTES} of a-z 0-9 - _ . @"
            )));
        }
        Ok(n)
    }

    /// The policy named `name`, if stored (`root` is built in and has no text).
    pub(crate) async fn get(&self, name: &str) -> Result<Option<Arc<Policy>>> {
        if let Some(p) = self.read_parsed().get(name) {
            return Ok(Some(Arc::clone(p)));
        }
        let Some(bytes) = self.store.get(&format!("{PREFIX}{name}")).await? else {
            return Ok(None);
        };
        let stored: Stored = serde_json::from_slice(&bytes)
            .map_err(|e| VaultError::Internal(format!("policy {name:?} unreadable: {e}")))?;
        let p = Policy::parse(name, &stored.policy)
            .map_err(|e| VaultError::Internal(format!("stored policy {name:?}: {e}")))?;
        let p = Arc::new(p);
        self.parsed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), Arc::clone(&p));
        Ok(Some(p))
    }

    /// Parses and stores a policy.
    pub(crate) async fn put(&self, name: &str, text: &str) -> Result<()> {
        if name == "root" {
            return Err(VaultError::BadRequest(
                "cannot update the \"root\" policy".into(),
            ));
        }
        let parsed =
            Policy::parse(name, text).map_err(|e| VaultError::BadRequest(e.to_string()))?;
        let bytes = serde_json::to_vec(&Stored {
            name: name.to_owned(),
            policy: text.to_owned(),
        })
        .map_err(|e| VaultError::Internal(e.to_string()))?;
        self.store.put(&format!("{PREFIX}{name}"), &bytes).await?;
        self.parsed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), Arc::new(parsed));
        self.clear_acls();
        Ok(())
    }

    /// Deletes a policy (`root` and `default` cannot be deleted).
    pub(crate) async fn delete(&self, name: &str) -> Result<()> {
        if name == "root" || name == "default" {
            return Err(VaultError::BadRequest(format!(
                "cannot delete the {name:?} policy"
            )));
        }
        self.store.delete(&format!("{PREFIX}{name}")).await?;
        self.parsed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.clear_acls();
        Ok(())
    }

    /// Every policy's name, sorted, with `root`.
    pub(crate) async fn list(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .store
            .list(PREFIX)
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(PREFIX).map(str::to_owned))
            .collect();
        names.push("root".into());
        names.sort();
        Ok(names)
    }

    /// The ACL of a set of policy names (unknown names grant nothing).
    pub(crate) async fn acl(&self, names: &[String]) -> Result<Arc<Acl>> {
        if let Some(a) = self
            .acls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(names)
        {
            return Ok(Arc::clone(a));
        }
        let root = names.iter().any(|n| n == "root");
        let mut policies = Vec::with_capacity(names.len());
        for n in names {
            if let Some(p) = self.get(n).await? {
                policies.push(p);
            }
        }
        let acl = Arc::new(Acl::new(root, policies.iter().map(|p| p.as_ref())));
        let mut cache = self.acls.write().unwrap_or_else(|e| e.into_inner());
        // Bounded: distinct policy sets are few; if not, start over rather than grow.
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(names.to_vec(), Arc::clone(&acl));
        Ok(acl)
    }

    fn read_parsed(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Policy>>> {
        self.parsed.read().unwrap_or_else(|e| e.into_inner())
    }

    fn clear_acls(&self) {
        self.acls.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
