//! Leases: the lifetime of every dynamic secret the vault hands out (a database login today),
//! and the task that revokes them when they expire.
//!
//! A lease id is `<mount path><sub path>/<random>` (`database/creds/readonly/AbC…`). Layout
//! (under `vault/sys/expire/`, values sealed by the store like everything else):
//! - `id/<lease id>` → the [`LeaseEntry`]: times, TTLs, renewable, the accessor of the token
//!   that created it, and what its engine needs to revoke it;
//! - `at/<due, 20 digits>/<lease id>` → empty: when the expiry task next looks at the lease
//!   (its expiry, or its token's expiry if sooner, or a revocation retry). Keys sort by time,
//!   so the task pages from the start of this prefix and stops at the first future key;
//! - `token/<hmac(accessor)>/<lease id>` → empty: the leases a token created;
//! - `revoked-token/<hmac(accessor)>` → empty: written in the transaction that deletes a token
//!   that has leases, so its leases are revoked even if the process dies right after.
//!
//! The expiry task (one per open vault, spawned by [`crate::Vault::open`]) wakes every
//! second of real time, and at once when a token with leases is revoked. It reads the vault's
//! [`crate::Clock`], so a `ManualClock` moved forward is seen at the next wake; tests can also
//! call [`crate::Vault::run_lease_expiry`] to run what is due right away. The only in-memory
//! state is the earliest due time known (so an idle tick reads nothing); everything else is
//! paged from the store, so leases that expired while the process was down are revoked by the
//! first tick after it opens. The task holds the vault weakly and ends when the vault is
//! dropped (the authority drops it when it seals); while the store is sealed it does nothing.
//!
//! Revocation calls the engine's revoke hook. A failed revocation keeps the lease and is
//! retried with back-off (10 s doubling to an hour), as Vault does; the failure is logged with
//! the lease id and the error class, never a credential.

pub(crate) mod http;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;
use warden_store::{Op, Store};

use crate::api::{Result, VaultError};
use crate::util::{self, Clock};
use crate::Vault;

const ID_PREFIX: &str = "vault/sys/expire/id/";
const AT_PREFIX: &str = "vault/sys/expire/at/";
const TOKEN_PREFIX: &str = "vault/sys/expire/token/";
const REVOKED_TOKEN_PREFIX: &str = "vault/sys/expire/revoked-token/";
/// Keys read per page by the task and by prefix operations.
const PAGE: usize = 256;
/// Pages of due leases handled per tick (the rest waits for the next tick).
const PAGES_PER_TICK: usize = 8;
/// Longest lease id accepted (a store key holds it with a 20-byte prefix and more).
pub(crate) const MAX_LEASE_ID_BYTES: usize = 420;
/// Random characters at the end of a lease id.
const LEASE_RANDOM: usize = 24;
/// First retry delay of a failed revocation, and the longest.
const RETRY_FIRST: i64 = 10;
/// How often the expiry task removes expired tokens nobody presented again (Vault leaves this
/// to `auth/token/tidy`, run by hand or by cron).
const TIDY_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
const RETRY_MAX: i64 = 3600;
/// How often the expiry task wakes without being woken.
pub(crate) const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// One lease as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct LeaseEntry {
    /// `<mount path><sub path>/<random>`.
    pub(crate) lease_id: String,
    /// The engine type that revokes it (`database`).
    pub(crate) engine: String,
    /// The mount's uuid (where the engine's data lives).
    pub(crate) mount_uuid: String,
    /// Unix seconds it was issued.
    pub(crate) issue_time: i64,
    /// Unix seconds it expires.
    pub(crate) expire_time: i64,
    /// Unix seconds of the last renewal.
    pub(crate) last_renewal: Option<i64>,
    /// The TTL it was issued with (a renewal without `increment` uses it), seconds.
    pub(crate) ttl: u64,
    /// Longest life from `issue_time`, seconds.
    pub(crate) max_ttl: u64,
    /// Whether `sys/leases/renew` may extend it.
    pub(crate) renewable: bool,
    /// The accessor of the token that created it.
    pub(crate) accessor: String,
    /// The keyed hash of that accessor (the `token/` index key).
    pub(crate) accessor_hash: String,
    /// When the task next looks at it (the `at/` key).
    pub(crate) due: i64,
    /// Failed revocations so far.
    pub(crate) attempts: u32,
    /// What the engine needs to revoke or renew it (sealed by the store; may name a login,
    /// never holds a password).
    pub(crate) internal: Value,
}

impl LeaseEntry {
    /// Vault's `sys/leases/lookup` data.
    pub(crate) fn lookup_data(&self, now: i64) -> Value {
        json!({
            "id": self.lease_id,
            "issue_time": util::rfc3339(self.issue_time),
            "expire_time": util::rfc3339(self.expire_time),
            "last_renewal": self.last_renewal.map(util::rfc3339),
            "renewable": self.renewable,
            "ttl": (self.expire_time - now).max(0),
        })
    }

    /// The absolute limit of its life.
    fn max_expire(&self) -> i64 {
        self.issue_time.saturating_add(self.max_ttl as i64)
    }
}

/// What an engine asks for when it issues a secret.
pub(crate) struct NewLease<'a> {
    /// `<mount path><sub path>` (the lease id without its random tail).
    pub(crate) prefix: String,
    /// Engine type.
    pub(crate) engine: &'a str,
    /// Mount uuid.
    pub(crate) mount_uuid: &'a str,
    /// TTL, seconds (already capped by `max_ttl`).
    pub(crate) ttl: u64,
    /// Maximum TTL, seconds.
    pub(crate) max_ttl: u64,
    /// Renewable.
    pub(crate) renewable: bool,
    /// The creating token's accessor and its keyed hash; its expiry (if any).
    pub(crate) accessor: &'a str,
    pub(crate) accessor_hash: String,
    pub(crate) token_expire: Option<i64>,
    /// Engine data for revocation.
    pub(crate) internal: Value,
}

/// The lease manager.
pub(crate) struct Leases {
    store: Store,
    clock: Arc<dyn Clock>,
    /// The earliest `at/` time known; `i64::MIN` = unknown (read the store at the next tick).
    next_due: AtomicI64,
    /// Wakes the expiry task (a token with leases was revoked, a lease is due sooner).
    pub(crate) wake: Arc<Notify>,
    /// Serialises renew, revoke and expiry of one lease in this process.
    locks: crate::kv::Locks,
    /// One expiry run at a time (the task and `run_lease_expiry`).
    run: tokio::sync::Mutex<()>,
}

impl Leases {
    pub(crate) fn new(store: Store, clock: Arc<dyn Clock>, wake: Arc<Notify>) -> Leases {
        Leases {
            store,
            clock,
            next_due: AtomicI64::new(i64::MIN),
            wake,
            locks: crate::kv::Locks::new(),
            run: tokio::sync::Mutex::new(()),
        }
    }

    fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Records a new lease (before the engine creates the secret, so a crash in between
    /// leaves a lease that expires and cleans up rather than a secret nobody tracks).
    pub(crate) async fn create(&self, new: NewLease<'_>) -> Result<LeaseEntry> {
        let now = self.now();
        let lease_id = format!("{}/{}", new.prefix, util::random_base62(LEASE_RANDOM));
        if lease_id.len() > MAX_LEASE_ID_BYTES {
            return Err(VaultError::BadRequest(format!(
                "the lease id would be longer than {MAX_LEASE_ID_BYTES} bytes: use a shorter path"
            )));
        }
        let expire_time = now + new.ttl as i64;
        let due = new.token_expire.map_or(expire_time, |t| t.min(expire_time));
        let entry = LeaseEntry {
            lease_id,
            engine: new.engine.to_owned(),
            mount_uuid: new.mount_uuid.to_owned(),
            issue_time: now,
            expire_time,
            last_renewal: None,
            ttl: new.ttl,
            max_ttl: new.max_ttl,
            renewable: new.renewable,
            accessor: new.accessor.to_owned(),
            accessor_hash: new.accessor_hash,
            due,
            attempts: 0,
            internal: new.internal,
        };
        let ops = vec![
            Op::PutIfAbsent {
                key: id_key(&entry.lease_id),
                value: encode(&entry)?,
            },
            Op::Put {
                key: at_key(due, &entry.lease_id),
                value: Vec::new(),
            },
            Op::Put {
                key: token_key(&entry.accessor_hash, &entry.lease_id),
                value: Vec::new(),
            },
        ];
        self.store.transact(ops).await?;
        self.lower_next_due(due);
        Ok(entry)
    }

    fn lower_next_due(&self, due: i64) {
        let prev = self.next_due.fetch_min(due, Ordering::SeqCst);
        if due < prev {
            self.wake.notify_one();
        }
    }

    /// The lease, if it exists.
    pub(crate) async fn get(&self, lease_id: &str) -> Result<Option<LeaseEntry>> {
        check_lease_id(lease_id)?;
        match self.store.get(&id_key(lease_id)).await? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| VaultError::Internal(format!("lease record unreadable: {e}"))),
        }
    }

    /// Moves a lease's `at/` key (and saves the entry) in one transaction.
    async fn reschedule(&self, entry: &mut LeaseEntry, due: i64) -> Result<()> {
        let old = at_key(entry.due, &entry.lease_id);
        entry.due = due;
        self.store
            .transact(vec![
                Op::Delete { key: old },
                Op::Put {
                    key: id_key(&entry.lease_id),
                    value: encode(entry)?,
                },
                Op::Put {
                    key: at_key(due, &entry.lease_id),
                    value: Vec::new(),
                },
            ])
            .await?;
        self.lower_next_due(due);
        Ok(())
    }

    /// Removes a lease's records (after its engine revoked it, or by force).
    async fn forget(&self, entry: &LeaseEntry) -> Result<()> {
        self.store
            .transact(vec![
                Op::Delete {
                    key: id_key(&entry.lease_id),
                },
                Op::Delete {
                    key: at_key(entry.due, &entry.lease_id),
                },
                Op::Delete {
                    key: token_key(&entry.accessor_hash, &entry.lease_id),
                },
            ])
            .await?;
        Ok(())
    }

    /// Renews: a new expiry `increment` (else the lease's TTL) from now, never past its
    /// maximum TTL; the engine extends the secret first. A lease that cannot be renewed or
    /// does not exist is 400, as in Vault.
    pub(crate) async fn renew(
        &self,
        vault: &Vault,
        lease_id: &str,
        increment: Option<u64>,
    ) -> Result<LeaseEntry> {
        check_lease_id(lease_id)?;
        let _g = self.locks.lock("lease", lease_id).await;
        let now = self.now();
        let mut entry = self
            .get(lease_id)
            .await?
            .filter(|e| e.expire_time > now)
            .ok_or_else(|| VaultError::BadRequest("lease not found".into()))?;
        if !entry.renewable {
            return Err(VaultError::BadRequest("lease is not renewable".into()));
        }
        let ttl = increment.filter(|i| *i > 0).unwrap_or(entry.ttl);
        let expire = now
            .saturating_add(ttl.min(crate::token::DEFAULT_TTL * 1000) as i64)
            .min(entry.max_expire());
        if expire <= now {
            return Err(VaultError::BadRequest(
                "lease is at its maximum TTL and cannot be renewed".into(),
            ));
        }
        engine_renew(vault, &entry, expire).await?;
        // A token check scheduled before the old expiry stays (if still ahead); otherwise
        // the next look is the new expiry.
        let due = if entry.due > now && entry.due < entry.expire_time {
            entry.due.min(expire)
        } else {
            expire
        };
        entry.expire_time = expire;
        entry.last_renewal = Some(now);
        self.reschedule(&mut entry, due).await?;
        Ok(entry)
    }

    /// Revokes one lease now: the engine's revoke hook, then the records. An unknown lease
    /// succeeds (as in Vault). A failed revocation keeps the lease, schedules a retry and
    /// answers 500.
    pub(crate) async fn revoke(&self, vault: &Vault, lease_id: &str) -> Result<()> {
        check_lease_id(lease_id)?;
        let _g = self.locks.lock("lease", lease_id).await;
        let Some(entry) = self.get(lease_id).await? else {
            return Ok(());
        };
        self.revoke_locked(vault, entry).await
    }

    async fn revoke_locked(&self, vault: &Vault, mut entry: LeaseEntry) -> Result<()> {
        match engine_revoke(vault, &entry).await {
            Ok(()) => self.forget(&entry).await,
            Err(e) => {
                entry.attempts = entry.attempts.saturating_add(1);
                let delay = RETRY_FIRST
                    .saturating_mul(1i64 << entry.attempts.saturating_sub(1).min(20))
                    .min(RETRY_MAX);
                tracing::warn!(
                    lease_id = %entry.lease_id,
                    attempts = entry.attempts,
                    retry_in_secs = delay,
                    error = %e,
                    "vault: lease revocation failed; the lease stays and is retried"
                );
                let due = self.now() + delay;
                self.reschedule(&mut entry, due).await?;
                Err(e)
            }
        }
    }

    /// Revokes every lease whose id starts with `prefix` (`database/creds/ro/`), page by
    /// page. With `force`, the records go even where the engine fails (`revoke-force`).
    /// Returns the first engine error after trying them all.
    pub(crate) async fn revoke_prefix(
        &self,
        vault: &Vault,
        prefix: &str,
        force: bool,
    ) -> Result<()> {
        if prefix.len() > MAX_LEASE_ID_BYTES || prefix.contains('\0') {
            return Err(VaultError::BadRequest("invalid lease prefix".into()));
        }
        let full = format!("{ID_PREFIX}{prefix}");
        let mut after: Option<String> = None;
        let mut first_err = None;
        loop {
            let page = self.store.list_page(&full, after.as_deref(), PAGE).await?;
            let n = page.len();
            for key in &page {
                let Some(id) = key.strip_prefix(ID_PREFIX) else {
                    continue;
                };
                let _g = self.locks.lock("lease", id).await;
                let Some(entry) = self.get(id).await? else {
                    continue;
                };
                if force {
                    if let Err(e) = engine_revoke(vault, &entry).await {
                        tracing::warn!(lease_id = %id, error = %e, "vault: revoke-force: the engine failed; the lease is forgotten anyway");
                    }
                    self.forget(&entry).await?;
                } else if let Err(e) = self.revoke_locked(vault, entry).await {
                    first_err.get_or_insert(e);
                }
            }
            if n < PAGE {
                break;
            }
            after = page.last().cloned();
        }
        first_err.map_or(Ok(()), Err)
    }

    /// One level of lease ids under `prefix` (`sys/leases/lookup/:prefix`): ids and `folder/`.
    pub(crate) async fn list_level(&self, prefix: &str) -> Result<Vec<String>> {
        if prefix.len() > MAX_LEASE_ID_BYTES || prefix.contains('\0') {
            return Err(VaultError::BadRequest("invalid lease prefix".into()));
        }
        let base = format!("{ID_PREFIX}{prefix}");
        let mut keys = std::collections::BTreeSet::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list_page(&base, after.as_deref(), 1000).await?;
            let n = page.len();
            for k in &page {
                let rest = &k[base.len()..];
                match rest.split_once('/') {
                    Some((dir, _)) => keys.insert(format!("{dir}/")),
                    None => keys.insert(rest.to_owned()),
                };
            }
            if keys.len() > 100_000 {
                return Err(VaultError::BadRequest(
                    "too many leases under that prefix: list a longer one".into(),
                ));
            }
            if n < 1000 {
                break;
            }
            after = page.last().cloned();
        }
        Ok(keys.into_iter().collect())
    }

    /// Runs what is due: the leases of revoked tokens, then expired leases (and leases whose
    /// token has expired). Returns how many leases were revoked.
    pub(crate) async fn run_due(&self, vault: &Vault) -> Result<usize> {
        let _run = self.run.lock().await;
        let mut revoked = self.run_revoked_tokens(vault).await?;
        let now = self.now();
        if now < self.next_due.load(Ordering::SeqCst) {
            return Ok(revoked);
        }
        // Nothing is known to be due before the first key we find; reset before reading so
        // a lease created meanwhile lowers it again.
        self.next_due.store(i64::MAX, Ordering::SeqCst);
        let mut drained = false;
        for _ in 0..PAGES_PER_TICK {
            let page = self.store.list_page(AT_PREFIX, None, PAGE).await?;
            let mut handled = 0;
            let mut future = None;
            for key in &page {
                let Some((due, id)) = parse_at(key) else {
                    // Not ours to understand: drop it so it cannot block the queue.
                    self.store.delete(key).await?;
                    continue;
                };
                if due > now {
                    future = Some(due);
                    break;
                }
                handled += 1;
                // A failed revocation is logged and rescheduled by `revoke_locked`.
                if let Ok(true) = self.expire_one(vault, id, due, now).await {
                    revoked += 1;
                }
            }
            if let Some(f) = future {
                self.lower_next_due(f);
                drained = true;
                break;
            }
            if handled < PAGE {
                drained = true;
                break;
            }
        }
        if !drained {
            // More is due than one run handles: look again at the next tick.
            self.next_due.store(i64::MIN, Ordering::SeqCst);
        }
        Ok(revoked)
    }

    /// Looks at one due lease: revoke it if expired or its token is gone, else reschedule.
    async fn expire_one(&self, vault: &Vault, id: &str, due: i64, now: i64) -> Result<bool> {
        let _g = self.locks.lock("lease", id).await;
        let entry = match self.store.get(&id_key(id)).await? {
            Some(b) => serde_json::from_slice::<LeaseEntry>(&b)
                .map_err(|e| VaultError::Internal(format!("lease record unreadable: {e}")))?,
            None => {
                self.store.delete(&at_key(due, id)).await?;
                return Ok(false);
            }
        };
        if entry.due != due {
            // A stale key (renewed meanwhile by another process).
            self.store.delete(&at_key(due, id)).await?;
            return Ok(false);
        }
        let expired = entry.expire_time <= now;
        let token = if expired {
            None
        } else {
            vault.inner.tokens.by_accessor(&entry.accessor).await?
        };
        if expired || token.is_none() {
            self.revoke_locked(vault, entry).await?;
            return Ok(true);
        }
        let mut entry = entry;
        let next = token
            .and_then(|t| t.expire_time)
            .map_or(entry.expire_time, |t| t.min(entry.expire_time))
            .max(now + 1);
        self.reschedule(&mut entry, next).await?;
        Ok(false)
    }

    /// Revokes the leases of tokens deleted since the last run (their markers).
    async fn run_revoked_tokens(&self, vault: &Vault) -> Result<usize> {
        let mut revoked = 0;
        let markers = self.store.list_page(REVOKED_TOKEN_PREFIX, None, 64).await?;
        for marker in markers {
            let Some(hash) = marker.strip_prefix(REVOKED_TOKEN_PREFIX) else {
                continue;
            };
            let prefix = format!("{TOKEN_PREFIX}{hash}/");
            let page = self.store.list_page(&prefix, None, PAGE).await?;
            let full = page.len() == PAGE;
            let mut failed = false;
            for key in &page {
                let id = &key[prefix.len()..];
                let _g = self.locks.lock("lease", id).await;
                match self.get(id).await? {
                    Some(entry) => match self.revoke_locked(vault, entry).await {
                        Ok(()) => revoked += 1,
                        Err(_) => failed = true,
                    },
                    None => {
                        self.store.delete(key).await?;
                    }
                }
            }
            if !full && !failed {
                self.store.delete(&marker).await?;
            }
        }
        Ok(revoked)
    }
}

/// The `token/` index prefix of a token's leases (by the keyed hash of its accessor).
pub(crate) fn token_prefix(accessor_hash: &str) -> String {
    format!("{TOKEN_PREFIX}{accessor_hash}/")
}

/// The marker that a token with leases was deleted.
pub(crate) fn revoked_token_key(accessor_hash: &str) -> String {
    format!("{REVOKED_TOKEN_PREFIX}{accessor_hash}")
}

fn id_key(lease_id: &str) -> String {
    format!("{ID_PREFIX}{lease_id}")
}

fn at_key(due: i64, lease_id: &str) -> String {
    format!("{AT_PREFIX}{:020}/{lease_id}", due.max(0))
}

fn token_key(accessor_hash: &str, lease_id: &str) -> String {
    format!("{TOKEN_PREFIX}{accessor_hash}/{lease_id}")
}

fn parse_at(key: &str) -> Option<(i64, &str)> {
    let rest = key.strip_prefix(AT_PREFIX)?;
    let (due, id) = rest.split_once('/')?;
    Some((due.parse().ok()?, id))
}

fn encode(entry: &LeaseEntry) -> Result<Vec<u8>> {
    serde_json::to_vec(entry).map_err(|e| VaultError::Internal(e.to_string()))
}

/// A lease id as a client sends it: non-empty, bounded, no NUL, no `.`/`..` or empty segment.
pub(crate) fn check_lease_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > MAX_LEASE_ID_BYTES
        || id.contains('\0')
        || id.split('/').any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(VaultError::BadRequest("invalid lease id".into()));
    }
    Ok(())
}

async fn engine_revoke(vault: &Vault, entry: &LeaseEntry) -> Result<()> {
    match entry.engine.as_str() {
        "database" => crate::database::revoke_lease(vault, entry).await,
        other => Err(VaultError::Internal(format!(
            "no engine {other:?} to revoke a lease with"
        ))),
    }
}

async fn engine_renew(vault: &Vault, entry: &LeaseEntry, expire: i64) -> Result<()> {
    match entry.engine.as_str() {
        "database" => crate::database::renew_lease(vault, entry, expire).await,
        other => Err(VaultError::Internal(format!(
            "no engine {other:?} to renew a lease with"
        ))),
    }
}

/// The expiry task: runs [`Leases::run_due`] every [`TICK`] and when woken, until the vault
/// is dropped. Holds the vault weakly.
pub(crate) fn spawn_task(
    vault: std::sync::Weak<crate::Inner>,
    wake: Arc<Notify>,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    tokio::spawn(async move {
        // The first tick after opening tidies (tokens may have expired while it was down).
        let mut last_tidy: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                r = stop.changed() => {
                    if r.is_err() {
                        break;
                    }
                }
                () = tokio::time::sleep(TICK) => {}
                () = wake.notified() => {}
            }
            let Some(inner) = vault.upgrade() else {
                break;
            };
            let v = Vault { inner };
            if v.inner.store.is_sealed() {
                continue;
            }
            if let Err(e) = v.inner.leases.run_due(&v).await {
                tracing::warn!(error = %e, "vault: lease expiry run failed; retrying at the next tick");
            }
            if last_tidy.is_none_or(|t| t.elapsed() >= TIDY_EVERY) {
                last_tidy = Some(std::time::Instant::now());
                match v.inner.tokens.tidy().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "vault: removed expired tokens"),
                    Err(e) => {
                        tracing::warn!(error = %e, "vault: token tidy failed; retrying in an hour")
                    }
                }
            }
        }
    });
}
