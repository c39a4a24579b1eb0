//! The token store: Vault service tokens (`hvs.…`), their accessors, parents and children.
//!
//! Tokens are never stored: each is kept under the HMAC-SHA256 of its value, keyed with a
//! random key that lives in the sealed store (`vault/token/hmac-key`), so a copy of the
//! database (whose keys are plain text) holds nothing that authenticates. Accessors are kept
//! the same way (an accessor can revoke its token).
//!
//! Layout (under `vault/token/`):
//! - `id/<hmac(token)>` → the [`TokenEntry`] (JSON, sealed by the store);
//! - `accessor/<hmac(accessor)>` → the token's hash;
//! - `parent/<parent hash>/<child hash>` → empty: the children to revoke with a parent;
//! - `roles/<name>` → a token role.
//!
//! Expiry: a token's expiry never passes its parent's (it is capped at creation and at
//! renewal), so an expired parent's children have expired too and no parent walk is needed
//! on the hot path. An expired token is refused and removed (with its children) when seen,
//! and [`TokenStore::tidy`] (`auth/token/tidy`, and the expiry task every hour) removes those
//! never seen again, so an expired wrapping token's cubbyhole does not outlive it.
//! `num_uses`: every authenticated request spends one use; the request that spends the last
//! one is served and the token is revoked.

pub(crate) mod http;
pub(crate) mod roles;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use warden_store::{Op, Store};

use crate::api::{Result, VaultError};
use crate::util::{self, Clock};

const HMAC_KEY: &str = "vault/token/hmac-key";
const ID_PREFIX: &str = "vault/token/id/";
const ACCESSOR_PREFIX: &str = "vault/token/accessor/";
const PARENT_PREFIX: &str = "vault/token/parent/";

/// Vault's system default and maximum token TTL: 768 hours (32 days).
pub(crate) const DEFAULT_TTL: u64 = 768 * 3600;
/// Longest token accepted in a request or as a chosen root token id, in bytes.
pub(crate) const MAX_TOKEN_BYTES: usize = 256;
/// Most entries in a token's `meta`, and the longest key or value.
const MAX_META: usize = 64;
const MAX_META_BYTES: usize = 512;

/// A token as stored. Holds no secret: the token itself is only its hash.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TokenEntry {
    /// HMAC of the token (hex): its store key.
    pub hash: String,
    /// The accessor (reference that can look up and revoke, not use, the token).
    pub accessor: String,
    /// Policies (sorted, deduplicated).
    pub policies: Vec<String>,
    /// The parent's hash; `None` for an orphan.
    pub parent: Option<String>,
    /// The path that created it (`auth/token/create`, `auth/token/root`, …).
    pub path: String,
    /// Metadata given at creation.
    pub meta: BTreeMap<String, String>,
    /// `token-<display_name>`, or `root`.
    pub display_name: String,
    /// Uses left; 0 = unlimited.
    pub num_uses: u64,
    /// Unix seconds of creation.
    pub creation_time: i64,
    /// TTL at creation, seconds (0 = none).
    pub creation_ttl: u64,
    /// Unix seconds of expiry; `None` = never.
    pub expire_time: Option<i64>,
    /// Hard limit from creation, seconds (0 = none).
    pub explicit_max_ttl: u64,
    /// Hard limit as an instant (creation + explicit max, capped by the parent's expiry).
    pub max_expire_time: Option<i64>,
    /// Period, seconds (0 = not periodic).
    pub period: u64,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// The token role it was created from, if any.
    pub role: Option<String>,
    /// Set (not stored) when this request spent the token's last use.
    #[serde(skip)]
    pub spent: bool,
}

impl TokenEntry {
    /// Whether it carries the `root` policy.
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }

    /// Seconds left (0 if none or no expiry).
    pub fn ttl_left(&self, now: i64) -> i64 {
        self.expire_time.map_or(0, |e| (e - now).max(0))
    }

    /// Vault's lookup `data`. `id` is the token itself where the caller presented it.
    pub fn lookup_data(&self, id: &str, now: i64) -> Value {
        let mut d = json!({
            "accessor": self.accessor,
            "creation_time": self.creation_time,
            "creation_ttl": self.creation_ttl,
            "display_name": self.display_name,
            "entity_id": "",
            "expire_time": self.expire_time.map(util::rfc3339),
            "explicit_max_ttl": self.explicit_max_ttl,
            "id": id,
            "issue_time": util::rfc3339(self.creation_time),
            "meta": if self.meta.is_empty() { Value::Null } else { json!(self.meta) },
            "num_uses": self.num_uses,
            "orphan": self.parent.is_none(),
            "path": self.path,
            "policies": self.policies,
            "renewable": self.renewable,
            "ttl": self.ttl_left(now),
            "type": "service",
        });
        if self.period > 0 {
            d["period"] = json!(self.period);
        }
        if let Some(r) = &self.role {
            d["role"] = json!(r);
        }
        d
    }

    /// Vault's `auth` block for a token just created or renewed.
    pub fn auth_block(&self, client_token: &str, now: i64) -> Value {
        let token_policies: Vec<&String> = self.policies.iter().collect();
        json!({
            "client_token": client_token,
            "accessor": self.accessor,
            "policies": self.policies,
            "token_policies": token_policies,
            "identity_policies": null,
            "metadata": if self.meta.is_empty() { Value::Null } else { json!(self.meta) },
            "lease_duration": self.ttl_left(now),
            "renewable": self.renewable,
            "entity_id": "",
            "token_type": "service",
            "orphan": self.parent.is_none(),
            "mfa_requirement": null,
            "num_uses": self.num_uses,
        })
    }
}

/// What a new token should be; checked against the caller by [`http`].
#[derive(Clone, Debug, Default)]
pub(crate) struct NewToken {
    /// A chosen token value (root only), else random.
    pub id: Option<String>,
    /// Policies (already checked).
    pub policies: Vec<String>,
    /// Parent's entry; `None` = orphan.
    pub parent: Option<TokenEntry>,
    /// Creating path.
    pub path: String,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// Display name (without the `token-` prefix).
    pub display_name: String,
    /// Uses (0 = unlimited).
    pub num_uses: u64,
    /// TTL seconds; `None` = default (or none for a root-policy token).
    pub ttl: Option<u64>,
    /// Hard maximum TTL (0 = none).
    pub explicit_max_ttl: u64,
    /// Period (0 = none).
    pub period: u64,
    /// Renewable.
    pub renewable: bool,
    /// Role.
    pub role: Option<String>,
}

/// The token store.
pub(crate) struct TokenStore {
    store: Store,
    clock: Arc<dyn Clock>,
    key: ring::hmac::Key,
    /// Serialises `num_uses` spending (read-modify-write) within this process.
    uses: Mutex<()>,
    /// Wakes the lease expiry task when a token that created leases is deleted.
    pub(crate) lease_wake: Arc<tokio::sync::Notify>,
    /// Decoded records of tokens in use (see [`EntryCache`]).
    cache: EntryCache,
}

/// Most token records kept decoded; past it the cache starts over.
const CACHE_MAX: usize = 65_536;

/// The decoded records of tokens in use, so a request does not read, decrypt and parse its
/// token's record every time. Only this process writes token records while it serves (the
/// store has one writer: the process, or with HA the active authority, whose vault is opened
/// anew when it becomes active), and every write in this module forgets what it changed. A
/// token with `num_uses` is never cached (each request changes it). See
/// [`warden_store::cache::ReadCache`] for the race with writes.
type EntryCache = warden_store::cache::ReadCache<TokenEntry>;

impl TokenStore {
    /// Loads (or creates) the HMAC key.
    pub(crate) async fn open(store: Store, clock: Arc<dyn Clock>) -> Result<TokenStore> {
        let mut fresh = [0u8; 32];
        util::fill_random(&mut fresh);
        // Two processes opening a new store at once: one insert wins, both read it back.
        store.put_if_absent(HMAC_KEY, &fresh).await?;
        let key = store
            .get(HMAC_KEY)
            .await?
            .ok_or_else(|| VaultError::Internal("the token HMAC key vanished".into()))?;
        if key.len() != 32 {
            return Err(VaultError::Internal(
                "the token HMAC key is malformed".into(),
            ));
        }
        Ok(TokenStore {
            store,
            clock,
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            uses: Mutex::new(()),
            lease_wake: Arc::new(tokio::sync::Notify::new()),
            cache: EntryCache::new(CACHE_MAX),
        })
    }

    pub(crate) fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The keyed hash of a token or accessor (hex), domain-separated.
    pub(crate) fn hash(&self, domain: &str, value: &str) -> String {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(domain.as_bytes());
        ctx.update(&[0]);
        ctx.update(value.as_bytes());
        util::hex(ctx.sign().as_ref())
    }

    /// Creates the root token (policy `root`, no expiry, orphan) — `sys/init` and `warden
    /// dev`. `id` chooses its value (dev's `--root-token`); if a token with that value exists
    /// already and is a root token, it is kept and returned.
    pub(crate) async fn create_root(&self, id: Option<&str>) -> Result<String> {
        if let Some(id) = id {
            check_token_syntax(id)?;
            if let Some(e) = self.get_by_hash(&self.hash("token", id)).await? {
                if e.is_root() {
                    return Ok(id.to_owned());
                }
                return Err(VaultError::BadRequest(
                    "a token with that id exists and is not a root token".into(),
                ));
            }
        }
        let (token, _) = self
            .create(NewToken {
                id: id.map(str::to_owned),
                policies: vec!["root".into()],
                path: "auth/token/root".into(),
                display_name: "root".into(),
                renewable: false,
                ..Default::default()
            })
            .await?;
        Ok(token)
    }

    /// Stores a new token; returns its value and entry.
    pub(crate) async fn create(&self, new: NewToken) -> Result<(String, TokenEntry)> {
        let now = self.now();
        if new.meta.len() > MAX_META
            || new
                .meta
                .iter()
                .any(|(k, v)| k.len() > MAX_META_BYTES || v.len() > MAX_META_BYTES)
        {
            return Err(VaultError::BadRequest(format!(
                "meta: at most {MAX_META} entries of at most {MAX_META_BYTES} bytes each"
            )));
        }
        let token = match new.id {
            Some(id) => {
                check_token_syntax(&id)?;
                id
            }
            None => format!("hvs.{}", util::random_base62(40)),
        };
        let accessor = util::random_base62(24);
        let is_root = new.policies.iter().any(|p| p == "root");
        // TTL: the period for periodic tokens; else asked or default, capped by the system
        // maximum; a root-policy token asked for none has none.
        let mut ttl = if new.period > 0 {
            Some(new.period)
        } else {
            match new.ttl {
                Some(0) | None if is_root => None,
                Some(0) | None => Some(DEFAULT_TTL),
                Some(t) => Some(t.min(DEFAULT_TTL)),
            }
        };
        if new.explicit_max_ttl > 0 {
            ttl = Some(ttl.map_or(new.explicit_max_ttl, |t| t.min(new.explicit_max_ttl)));
        }
        let mut expire = ttl.map(|t| now + t as i64);
        let mut max_expire = (new.explicit_max_ttl > 0).then(|| now + new.explicit_max_ttl as i64);
        if let Some(p) = &new.parent {
            if let Some(pe) = p.expire_time {
                expire = Some(expire.map_or(pe, |e| e.min(pe)));
                max_expire = Some(max_expire.map_or(pe, |m| m.min(pe)));
            }
        }
        let display_name = if new.display_name == "root" {
            "root".to_owned()
        } else if new.display_name.is_empty() {
            "token".to_owned()
        } else {
            format!("token-{}", new.display_name)
        };
        let hash = self.hash("token", &token);
        let entry = TokenEntry {
            hash: hash.clone(),
            accessor: accessor.clone(),
            policies: new.policies,
            parent: new.parent.as_ref().map(|p| p.hash.clone()),
            path: new.path,
            meta: new.meta,
            display_name,
            num_uses: new.num_uses,
            creation_time: now,
            creation_ttl: expire.map_or(0, |e| (e - now).max(0) as u64),
            expire_time: expire,
            explicit_max_ttl: new.explicit_max_ttl,
            max_expire_time: max_expire,
            period: new.period,
            renewable: new.renewable,
            role: new.role,
            spent: false,
        };
        let mut ops = vec![
            Op::PutIfAbsent {
                key: format!("{ID_PREFIX}{hash}"),
                value: encode(&entry)?,
            },
            Op::PutIfAbsent {
                key: format!("{ACCESSOR_PREFIX}{}", self.hash("accessor", &accessor)),
                value: hash.as_bytes().to_vec(),
            },
        ];
        if let Some(p) = &entry.parent {
            ops.push(Op::Put {
                key: format!("{PARENT_PREFIX}{p}/{hash}"),
                value: Vec::new(),
            });
        }
        match self.store.transact(ops).await {
            Ok(()) => Ok((token, entry)),
            Err(warden_store::StoreError::Conflict) => Err(VaultError::BadRequest(
                "a token with that id already exists".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The live entry for a presented token, spending one use if it is use-limited.
    /// Unknown, expired and malformed tokens are all `PermissionDenied`.
    /// A wrapping token (policy `response-wrapping`) is refused without spending its use: it
    /// serves only `sys/wrapping/unwrap`, which spends it with [`TokenStore::spend_wrapping`].
    pub(crate) async fn authenticate(&self, token: Option<&str>) -> Result<TokenEntry> {
        self.authenticate_as(token, false).await
    }

    /// Spends a wrapping token's one use (revoking it, with its cubbyhole); of concurrent
    /// callers, one succeeds.
    pub(crate) async fn spend_wrapping(&self, token: &str) -> Result<TokenEntry> {
        self.authenticate_as(Some(token), true).await
    }

    async fn authenticate_as(&self, token: Option<&str>, wrapping: bool) -> Result<TokenEntry> {
        let token = token.ok_or(VaultError::PermissionDenied)?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(VaultError::PermissionDenied);
        }
        let hash = self.hash("token", token);
        let entry = self
            .live(&hash)
            .await?
            .ok_or(VaultError::PermissionDenied)?;
        if (entry.policies == [crate::wrapping::WRAP_POLICY]) != wrapping {
            return Err(VaultError::PermissionDenied);
        }
        if entry.num_uses == 0 {
            return Ok(entry);
        }
        let _guard = self.uses.lock().await;
        // Read again under the lock: another request may have spent the last use.
        let mut entry = self
            .live(&hash)
            .await?
            .ok_or(VaultError::PermissionDenied)?;
        if entry.num_uses == 1 {
            self.revoke_tree(&hash).await?;
            entry.num_uses = 0;
            // Served, but gone: it may not create children.
            entry.spent = true;
            return Ok(entry);
        }
        entry.num_uses -= 1;
        self.put_entry(&entry).await?;
        Ok(entry)
    }

    /// The entry under `hash` if it exists and has not expired; an expired one is removed.
    pub(crate) async fn live(&self, hash: &str) -> Result<Option<TokenEntry>> {
        let Some(entry) = self.get_by_hash(hash).await? else {
            return Ok(None);
        };
        if entry.expire_time.is_some_and(|e| e <= self.now()) {
            self.revoke_tree(hash).await?;
            return Ok(None);
        }
        Ok(Some(entry))
    }

    pub(crate) async fn get_by_hash(&self, hash: &str) -> Result<Option<TokenEntry>> {
        if let Some(e) = self.cache.get(hash) {
            return Ok(Some(e));
        }
        let generation = self.cache.generation();
        match self.store.get(&format!("{ID_PREFIX}{hash}")).await? {
            None => Ok(None),
            Some(bytes) => {
                let e: TokenEntry = serde_json::from_slice(&bytes)
                    .map_err(|e| VaultError::Internal(format!("token record unreadable: {e}")))?;
                if e.hash == hash && e.num_uses == 0 {
                    self.cache.insert(generation, hash, e.clone());
                }
                Ok(Some(e))
            }
        }
    }

    /// The live entry for an accessor.
    pub(crate) async fn by_accessor(&self, accessor: &str) -> Result<Option<TokenEntry>> {
        if accessor.len() > MAX_TOKEN_BYTES {
            return Ok(None);
        }
        let key = format!("{ACCESSOR_PREFIX}{}", self.hash("accessor", accessor));
        let Some(hash) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let hash = String::from_utf8(hash)
            .map_err(|_| VaultError::Internal("accessor record unreadable".into()))?;
        self.live(&hash).await
    }

    pub(crate) async fn put_entry(&self, entry: &TokenEntry) -> Result<()> {
        let r = self
            .store
            .put(&format!("{ID_PREFIX}{}", entry.hash), &encode(entry)?)
            .await;
        // Even on an error: the write may have landed.
        self.cache.forget([entry.hash.as_str()]);
        r?;
        Ok(())
    }

    /// Renews: a new TTL from now (asked `increment`, else the creation TTL; the period for
    /// periodic tokens), never past the explicit maximum or the parent's expiry.
    pub(crate) async fn renew(
        &self,
        mut entry: TokenEntry,
        increment: Option<u64>,
    ) -> Result<TokenEntry> {
        if !entry.renewable {
            return Err(VaultError::BadRequest("token is not renewable".into()));
        }
        let Some(_) = entry.expire_time else {
            // No expiry: nothing to renew (Vault answers with the same auth block).
            return Ok(entry);
        };
        let now = self.now();
        let ttl = if entry.period > 0 {
            entry.period
        } else {
            increment
                .filter(|i| *i > 0)
                .unwrap_or(entry.creation_ttl)
                .min(DEFAULT_TTL)
        };
        let mut expire = now + ttl as i64;
        if let Some(m) = entry.max_expire_time {
            expire = expire.min(m);
        }
        if let Some(p) = &entry.parent {
            if let Some(pe) = self.get_by_hash(p).await?.and_then(|p| p.expire_time) {
                expire = expire.min(pe);
            }
        }
        entry.expire_time = Some(expire);
        self.put_entry(&entry).await?;
        Ok(entry)
    }

    /// Revokes a token and, recursively, its children.
    pub(crate) async fn revoke_tree(&self, hash: &str) -> Result<()> {
        // Gather the tree breadth-first, then delete leaves first in bounded transactions, so
        // an interruption never leaves a child without the parent that would revoke it.
        let mut order = vec![hash.to_owned()];
        let mut i = 0;
        while i < order.len() {
            let prefix = format!("{PARENT_PREFIX}{}/", order[i]);
            for key in self.store.list(&prefix).await? {
                if let Some(child) = key.strip_prefix(&prefix) {
                    order.push(child.to_owned());
                }
            }
            i += 1;
        }
        for chunk in order.rchunks(200) {
            let mut ops = Vec::with_capacity(chunk.len() * 3);
            for h in chunk.iter().rev() {
                ops.extend(self.delete_ops(h).await?);
            }
            let r = self.store.transact(ops).await;
            self.cache.forget(chunk.iter().map(String::as_str));
            r?;
        }
        self.lease_wake.notify_one();
        Ok(())
    }

    /// Removes every expired token, with its children, accessor and (for a wrapping token)
    /// its cubbyhole. Returns how many expired tokens were found. Pages through the store, so
    /// it holds at most one page of keys at a time.
    pub(crate) async fn tidy(&self) -> Result<usize> {
        const TIDY_PAGE: usize = 500;
        let now = self.now();
        let mut after: Option<String> = None;
        let mut removed = 0;
        loop {
            let page = self
                .store
                .list_page(ID_PREFIX, after.as_deref(), TIDY_PAGE)
                .await?;
            for key in &page {
                let Some(hash) = key.strip_prefix(ID_PREFIX) else {
                    continue;
                };
                // Read past the cache (a sweep would fill it with every token); an
                // unreadable record is left for an operator to see, not deleted.
                let entry = self
                    .store
                    .get(key)
                    .await?
                    .and_then(|b| serde_json::from_slice::<TokenEntry>(&b).ok());
                if let Some(e) = entry {
                    if e.expire_time.is_some_and(|t| t <= now) {
                        self.revoke_tree(hash).await?;
                        removed += 1;
                    }
                }
            }
            if page.len() < TIDY_PAGE {
                return Ok(removed);
            }
            after = page.last().cloned();
        }
    }

    /// Revokes a token but not its children, which become orphans.
    pub(crate) async fn revoke_orphan(&self, hash: &str) -> Result<()> {
        let prefix = format!("{PARENT_PREFIX}{hash}/");
        for key in self.store.list(&prefix).await? {
            let Some(child) = key.strip_prefix(&prefix) else {
                continue;
            };
            if let Some(mut c) = self.get_by_hash(child).await? {
                c.parent = None;
                let r = self
                    .store
                    .transact(vec![
                        Op::Put {
                            key: format!("{ID_PREFIX}{child}"),
                            value: encode(&c)?,
                        },
                        Op::Delete { key: key.clone() },
                    ])
                    .await;
                self.cache.forget([child]);
                r?;
            }
        }
        let ops = self.delete_ops(hash).await?;
        let r = self.store.transact(ops).await;
        self.cache.forget([hash]);
        r?;
        self.lease_wake.notify_one();
        Ok(())
    }

    async fn delete_ops(&self, hash: &str) -> Result<Vec<Op>> {
        let mut ops = vec![Op::Delete {
            key: format!("{ID_PREFIX}{hash}"),
        }];
        if let Some(e) = self.get_by_hash(hash).await? {
            ops.push(Op::Delete {
                key: format!("{ACCESSOR_PREFIX}{}", self.hash("accessor", &e.accessor)),
            });
            if let Some(p) = &e.parent {
                ops.push(Op::Delete {
                    key: format!("{PARENT_PREFIX}{p}/{hash}"),
                });
            }
            // A wrapping token's cubbyhole goes with it.
            if e.policies == [crate::wrapping::WRAP_POLICY] {
                ops.push(Op::Delete {
                    key: crate::wrapping::record_key(hash),
                });
            }
            // Its leases are revoked by the lease task: mark it in the same transaction, so
            // a crash right after still revokes them.
            let acc = self.hash("accessor", &e.accessor);
            let leases = crate::lease::token_prefix(&acc);
            if !self.store.list_page(&leases, None, 1).await?.is_empty() {
                ops.push(Op::Put {
                    key: crate::lease::revoked_token_key(&acc),
                    value: Vec::new(),
                });
            }
        }
        Ok(ops)
    }

    /// Every live token's accessor (for `auth/token/accessors`).
    pub(crate) async fn accessors(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for key in self.store.list(ID_PREFIX).await? {
            if let Some(h) = key.strip_prefix(ID_PREFIX) {
                if let Some(e) = self.live(h).await? {
                    out.push(e.accessor);
                }
            }
        }
        Ok(out)
    }
}

fn encode(entry: &TokenEntry) -> Result<Vec<u8>> {
    serde_json::to_vec(entry).map_err(|e| VaultError::Internal(e.to_string()))
}

/// A chosen token value: printable ASCII without spaces, 1..=[`MAX_TOKEN_BYTES`] bytes.
fn check_token_syntax(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_TOKEN_BYTES || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(VaultError::BadRequest(format!(
            "a token id must be 1 to {MAX_TOKEN_BYTES} printable ASCII characters without spaces"
        )));
    }
    Ok(())
}
