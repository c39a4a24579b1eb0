//! The authority's storage: an encrypted key-value store with prefixes, transactions and a
//! shared, tamper-evident audit log — the layer the token service, the vault and the CA keep
//! their state in (the shape of Vault's storage barrier).
//!
//! # Model
//!
//! - **Keys** are UTF-8 paths (`tokens/clients/<id>`, `vault/kv/…`, `ca/issued/<serial>`), at
//!   most [`MAX_KEY_BYTES`] bytes, no NUL. Each component owns a top-level prefix. Keys are
//!   stored **in plain text** — prefix listing needs them — so a key must never contain a
//!   secret (use ids and names, not token values).
//! - **Values** are bytes, at most [`MAX_VALUE_BYTES`], sealed with AES-256-GCM under a data
//!   key (DEK) that the key-encryption key (KEK) wraps; the key path is authenticated with the
//!   value, so a value moved to another key does not open (see `seal.rs`).
//! - **Transactions**: [`Store::transact`] applies puts, deletes and put-if-absents all or
//!   nothing.
//! - **Audit log**: one hash-chained log for every component ([`Store::audit`],
//!   [`Store::verify_audit`]); it is *not* encrypted, so events must never hold secrets. Its
//!   oldest records can be pruned behind a MACed checkpoint ([`Store::prune_audit`]).
//! - **Durability**: a call that returned `Ok` is committed and survives a crash (SQLite:
//!   WAL + `synchronous = FULL`; PostgreSQL: its default synchronous commit). A call whose
//!   future is dropped may or may not have been applied.
//!
//! # Sealed and unsealed
//!
//! A store is *sealed* while it holds no KEK: [`Store::open_sealed`] opens the database (and
//! migrates it) without one, and every data operation then fails with
//! [`StoreError::Sealed`]. [`Store::unseal`] takes the KEK, checks it against the keyring (a
//! wrong key leaves the store sealed) and loads the data keys; [`Store::seal`] drops them
//! again (the raw key bytes are zeroized; see `seal.rs` for ring's expanded keys). A store is
//! *initialized* once its keyring has DEK 1: [`Store::initialize`] does that once, with the
//! seal's configuration (plain JSON the caller chooses, readable while sealed, so a sealed
//! authority can say how many key shares unseal it). [`Store::open`] is open, initialize if
//! new, unseal: the auto-unseal path, unchanged for configs with a KEK in `env:`/`file:`.
//!
//! # Backends
//!
//! `Store::open("…/warden.db")` uses SQLite (one file, created 0600); `Store::open("postgres://…")`
//! uses PostgreSQL (the tables go in the first schema of the connection's `search_path`, which
//! a URL can set with `?options=-csearch_path%3Dwarden`). Migrations run at open.
//!
//! Crates: `rusqlite` (bundled SQLite, `cache` feature only) and `tokio-postgres` with the
//! small `deadpool-postgres` pool, rather than `sqlx` (no macros: `runtime-tokio`, `sqlite`,
//! `postgres`, `migrate`). Measured on this 2-core machine with `cargo build --timings`
//! (deps at `opt-level = 1`, as in the workspace), counting only crates the workspace did not
//! already build: rusqlite + tokio-postgres + deadpool add 29 crates and ~115 unit-seconds,
//! of which a third is SQLite's C amalgamation; sqlx adds ~60 crates and ~250 unit-seconds
//! (`sqlx-postgres` alone ~60 s, plus the same amalgamation). The smaller stack also gives the
//! control this store wants: a dedicated SQLite writer thread with group commit (one fsync for
//! many writes, which the token service's audit volume needs), `BEGIN IMMEDIATE`, a savepoint
//! per job, explicit pragmas, and `UNNEST` batch appends on PostgreSQL.
//!
//! Active/standby: on PostgreSQL, authorities compete for a session-level advisory lock
//! ([`Store::try_lead`], `leader.rs`). Future work: TLS to PostgreSQL (`sslmode` other than `disable`/`prefer` is refused today
//! because no TLS connector is wired), and shipping the audit head to an external anchor.

mod audit;
mod backend;
pub mod cache;
mod error;
mod leader;
mod migrations;
mod seal;

use std::sync::{Arc, RwLock};

use ring::rand::SystemRandom;

pub use audit::{AuditCheckpoint, AuditEvent, AuditRecord, GENESIS_HASH, MAX_EVENT_BYTES};
pub use error::{Result, StoreError};
pub use leader::{LeaderInfo, LeaderLock, LEADER_APPLICATION_NAME};

use backend::{Backend, ListQuery, RawOp};
use seal::{Kek, Keyring, OpenError};

/// Longest key (path), in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes (before sealing).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most operations in one [`Store::transact`].
pub const MAX_TRANSACTION_OPS: usize = 1024;
/// Most value bytes in one [`Store::transact`].
pub const MAX_TRANSACTION_BYTES: usize = 16 * 1024 * 1024;
/// Most records one [`Store::audit_since`] call returns; page with the last `seq`.
pub const MAX_AUDIT_PAGE: usize = 10_000;
/// Most records one prune transaction deletes: [`Store::prune_audit`] works in steps this
/// size so appends (which share SQLite's one writer) wait at most one step.
pub const AUDIT_PRUNE_STEP: usize = 5_000;

/// How much of the audit log [`Store::prune_audit`] keeps. Unset limits keep everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditRetention {
    /// Prune records older than this many milliseconds.
    pub max_age_ms: Option<i64>,
    /// Keep at most this many of the newest records (at least one is always kept).
    pub max_records: Option<u64>,
}

/// What [`Store::prune_audit`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Records deleted.
    pub pruned: u64,
    /// The checkpoint now in force (`None`: nothing was ever pruned).
    pub checkpoint: Option<AuditCheckpoint>,
}

/// One write in a [`Store::transact`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`, replacing any value.
    Put {
        /// The key (path).
        key: String,
        /// The plaintext value.
        value: Vec<u8>,
    },
    /// Remove `key` (no error if absent).
    Delete {
        /// The key (path).
        key: String,
    },
    /// Set `key` to `value` only if `key` is absent; otherwise the whole transaction fails
    /// with [`StoreError::Conflict`] and nothing is applied.
    PutIfAbsent {
        /// The key (path).
        key: String,
        /// The plaintext value.
        value: Vec<u8>,
    },
}

/// When a commit is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Once it is on disk (fsynced): survives a power loss.
    Synced,
    /// Once it is in the database's log (written, not yet fsynced): survives a crash of the
    /// process, not of the machine (see [`Store::audit_logged`]).
    Logged,
}

/// Longest a logged (not yet synced) SQLite commit waits for the checkpointer, which syncs
/// the log before it copies it into the database.
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// A handle on the store. Cheap to clone (an `Arc` inside); `Send + Sync`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    /// `None` while sealed.
    keys: RwLock<Option<Arc<Keys>>>,
    rng: SystemRandom,
    /// Sealed values read through [`Store::get_cached`] (what Vault's physical cache is,
    /// below the seal: nothing in it is plaintext).
    cache: cache::ReadCache<Arc<[u8]>>,
}

/// Most values [`Store::get_cached`] keeps; past it the cache starts over.
const CACHE_MAX_ENTRIES: usize = 16_384;
/// Largest value (sealed) it keeps.
const CACHE_MAX_VALUE: usize = 16 * 1024;

fn raw_key(op: &RawOp) -> &str {
    match op {
        RawOp::Put { key, .. } | RawOp::Delete { key } | RawOp::PutIfAbsent { key, .. } => key,
    }
}

/// What an unsealed store holds: the KEK and what it opens.
struct Keys {
    kek: Kek,
    /// MACs audit checkpoints (derived from the KEK, see `audit.rs`).
    checkpoint_key: ring::hmac::Key,
    keyring: RwLock<Arc<Keyring>>,
}

/// The seal configuration [`Store::open`] records on a new store (auto-unseal).
pub const AUTO_SEAL_CONFIG: &str = r#"{"type":"auto"}"#;

/// The data-key term [`Store::key_status`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyStatus {
    /// The id of the data-encryption key new writes use (1, 2, …; each rotation adds one).
    pub term: u32,
    /// When that key was added, Unix milliseconds.
    pub install_time_ms: i64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store, running migrations and loading (or, on a new store, creating) the
    /// keyring.
    ///
    /// `location`: a filesystem path for SQLite (the file is created 0600 if missing, and its
    /// directory 0700), or a `postgres://…` / `postgresql://…` URL.
    /// `kek`: the 32-byte key-encryption key (from `env:`/`file:` in config; the caller reads
    /// it, and should zeroize its copy). A KEK that does not open the keyring is refused with
    /// `StoreError::Crypto("the key-encryption key does not open this store's keyring")`.
    pub async fn open(location: &str, kek: &[u8]) -> Result<Store> {
        // Checked before connecting, as before sealed stores existed.
        Kek::new(kek)?;
        let store = Store::open_sealed(location).await?;
        match store.initialize(kek, AUTO_SEAL_CONFIG).await {
            // Another process initialized it first: unseal with what it made.
            Ok(()) | Err(StoreError::AlreadyInitialized) => {}
            Err(e) => return Err(e),
        }
        store.unseal(kek).await?;
        Ok(store)
    }

    /// Opens the store *sealed*: connects and migrates, loads no key. Every data operation
    /// fails with [`StoreError::Sealed`] until [`Store::unseal`] (or, on a new store,
    /// [`Store::initialize`]).
    pub async fn open_sealed(location: &str) -> Result<Store> {
        let backend =
            if location.starts_with("postgres://") || location.starts_with("postgresql://") {
                Backend::Postgres(backend::postgres::PgBackend::open(location).await?)
            } else if location.contains("://") {
                return Err(StoreError::InvalidLocation(
                    "expected a file path (SQLite) or a postgres:// URL".into(),
                ));
            } else {
                Backend::Sqlite(backend::sqlite::SqliteBackend::open(location).await?)
            };
        Ok(Store {
            inner: Arc::new(Inner {
                backend,
                keys: RwLock::new(None),
                rng: SystemRandom::new(),
                cache: cache::ReadCache::new(CACHE_MAX_ENTRIES),
            }),
        })
    }

    /// Tries to become the active authority among those sharing this PostgreSQL store (see
    /// `leader.rs`): `Some(lock)` when this process now holds the active role (and is recorded
    /// as `address`, `holder`), `None` when another holds it. Works sealed. A SQLite store is
    /// refused with [`StoreError::InvalidLocation`].
    pub async fn try_lead(&self, address: &str, holder: &str) -> Result<Option<LeaderLock>> {
        match &self.inner.backend {
            Backend::Postgres(b) => b.try_lead(address, holder).await,
            Backend::Sqlite(_) => Err(leader::sqlite_refused()),
        }
    }

    /// The active authority as it last recorded itself ([`Store::try_lead`]); `None` when
    /// none ever was, and always on SQLite. Works sealed.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>> {
        match &self.inner.backend {
            Backend::Postgres(b) => b.leader().await,
            Backend::Sqlite(_) => Ok(None),
        }
    }

    /// Whether the store is in a database several authorities can share (PostgreSQL), and so
    /// can hold the active/standby lock.
    pub fn supports_ha(&self) -> bool {
        matches!(self.inner.backend, Backend::Postgres(_))
    }

    /// Whether the store holds no KEK (see the module docs).
    pub fn is_sealed(&self) -> bool {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// Whether the store was initialized (its keyring has a data key). Works sealed.
    pub async fn is_initialized(&self) -> Result<bool> {
        Ok(self.inner.backend.keyring_newest().await?.is_some())
    }

    /// The seal configuration recorded by [`Store::initialize`]; works sealed. `None` before
    /// initialization, and on stores initialized before the configuration was recorded
    /// (which were auto-unsealed).
    pub async fn seal_config(&self) -> Result<Option<String>> {
        self.inner.backend.seal_config().await
    }

    /// Initializes a new store under `kek`: makes DEK 1 and records `seal_config` (plain JSON,
    /// not secret), both at once, and leaves the store unsealed. Of concurrent callers exactly
    /// one succeeds; the others, and any later call, get [`StoreError::AlreadyInitialized`]
    /// and change nothing.
    pub async fn initialize(&self, kek: &[u8], seal_config: &str) -> Result<()> {
        let k = Kek::new(kek)?;
        let wrapped = k.new_wrapped_dek(&self.inner.rng, 1)?;
        if !self
            .inner
            .backend
            .initialize(wrapped, seal_config.to_owned())
            .await?
        {
            return Err(StoreError::AlreadyInitialized);
        }
        self.unseal(kek).await
    }

    /// Unseals with `kek`: opens every data key with it. A KEK that does not open the keyring
    /// is refused with `StoreError::Crypto` and the store stays sealed; an uninitialized store
    /// gives [`StoreError::NotInitialized`]. Unsealing an unsealed store checks the key again
    /// and keeps it.
    pub async fn unseal(&self, kek: &[u8]) -> Result<()> {
        let checkpoint_key = audit::checkpoint_key(kek);
        let kek = Kek::new(kek)?;
        let rows = self.inner.backend.keyring_rows().await?;
        if rows.is_empty() {
            return Err(StoreError::NotInitialized);
        }
        let keyring = Keyring::open(&kek, &rows)?;
        *self.inner.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Keys {
            kek,
            checkpoint_key,
            keyring: RwLock::new(Arc::new(keyring)),
        }));
        Ok(())
    }

    /// Seals: drops the KEK and the data keys. Operations already running finish with the
    /// keys they took; every later one fails with [`StoreError::Sealed`].
    pub fn seal(&self) {
        self.inner
            .keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.inner.cache.clear();
    }

    /// The data-key term new writes use and when it was added.
    pub async fn key_status(&self) -> Result<KeyStatus> {
        self.keys()?;
        let (term, install_time_ms) = self
            .inner
            .backend
            .keyring_newest()
            .await?
            .ok_or_else(|| StoreError::Corrupt("the keyring is empty".into()))?;
        Ok(KeyStatus {
            term,
            install_time_ms,
        })
    }

    /// The value at `key`, or `None`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        self.keys()?;
        match self.inner.backend.get(key).await? {
            None => Ok(None),
            Some(sealed) => self.open_value(key, &sealed).await.map(Some),
        }
    }

    /// The value at `key`, like [`Store::get`], kept (sealed) in memory after the first read
    /// so later reads do not reach the database. Only for keys that no other process writes
    /// while this one reads them: a write through any handle of this store is seen at once,
    /// a write by another process is not until [`Store::clear_cache`]. (The vault's KV
    /// engine: with HA only the active authority writes, and it clears the cache when it
    /// becomes active.)
    pub async fn get_cached(&self, key: &str) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        self.keys()?;
        if let Some(sealed) = self.inner.cache.get(key) {
            return self.open_value(key, &sealed).await.map(Some);
        }
        let generation = self.inner.cache.generation();
        match self.inner.backend.get(key).await? {
            None => Ok(None),
            Some(sealed) => {
                if sealed.len() <= CACHE_MAX_VALUE {
                    self.inner
                        .cache
                        .insert(generation, key, Arc::from(sealed.as_slice()));
                }
                self.open_value(key, &sealed).await.map(Some)
            }
        }
    }

    /// Forgets every value [`Store::get_cached`] kept (when another process may have
    /// written: say, on becoming the active authority).
    pub fn clear_cache(&self) {
        self.inner.cache.clear();
    }

    /// Applies `raw` in one transaction, then forgets the cached values of its keys (even
    /// on an error: the commit's outcome may be unknown).
    async fn write_raw(&self, raw: Vec<RawOp>) -> Result<Vec<bool>> {
        let keys: Vec<String> = raw.iter().map(|op| raw_key(op).to_owned()).collect();
        let r = self.inner.backend.write(raw).await;
        self.inner.cache.forget(keys.iter().map(String::as_str));
        r
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        let sealed = self.seal_value(key, value)?;
        self.write_raw(vec![RawOp::Put {
            key: key.to_owned(),
            sealed,
        }])
        .await?;
        Ok(())
    }

    /// Sets `key` to `value` if `key` is absent. Returns `false` (and changes nothing) if it
    /// existed. Of concurrent callers on one key, exactly one gets `true`.
    pub async fn put_if_absent(&self, key: &str, value: &[u8]) -> Result<bool> {
        let sealed = self.seal_value(key, value)?;
        match self
            .write_raw(vec![RawOp::PutIfAbsent {
                key: key.to_owned(),
                sealed,
            }])
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes `key`. Returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.keys()?;
        let changed = self
            .write_raw(vec![RawOp::Delete {
                key: key.to_owned(),
            }])
            .await?;
        Ok(changed.first().copied().unwrap_or(false))
    }

    /// Every key that starts with `prefix`, sorted by UTF-8 bytes. `prefix` is a plain string
    /// prefix: `"a/b"` matches `a/b`, `a/b/c` and `a/bc`; end it with `/` for one level of a
    /// path. Returns every match: for large prefixes use [`Store::list_page`].
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        check_prefix(prefix)?;
        self.keys()?;
        let q = ListQuery {
            prefix: prefix.to_owned(),
            start_after: None,
            limit: None,
        };
        self.inner.backend.list_keys(q).await
    }

    /// Up to `limit` keys that start with `prefix` and sort after `start_after` (if given),
    /// sorted; pass the last key returned to get the next page.
    pub async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        check_prefix(prefix)?;
        self.keys()?;
        let q = ListQuery {
            prefix: prefix.to_owned(),
            start_after: start_after.map(str::to_owned),
            limit: Some(limit),
        };
        self.inner.backend.list_keys(q).await
    }

    /// Applies `ops` in order, all or nothing. A `PutIfAbsent` on a present key fails the
    /// whole transaction with [`StoreError::Conflict`]; nothing of it is applied.
    pub async fn transact(&self, ops: Vec<Op>) -> Result<()> {
        self.keys()?;
        if ops.is_empty() {
            return Ok(());
        }
        let raw = self.seal_ops(ops)?;
        self.write_raw(raw).await?;
        Ok(())
    }

    /// Applies `ops` (as [`Store::transact`]) and appends `event` to the audit log in the
    /// same transaction: both are committed, or neither. Returns the event's sequence
    /// number. A component that records each change with an event (the vault audits every
    /// request) pays one commit, not two, and a crash between the change and its event
    /// cannot happen. A `PutIfAbsent` conflict fails the whole call with
    /// [`StoreError::Conflict`]; then nothing is applied and no event is appended.
    pub async fn transact_audited(&self, ops: Vec<Op>, event: &AuditEvent) -> Result<u64> {
        self.keys()?;
        audit::canonical_event(event, &mut String::new())?;
        let raw = self.seal_ops(ops)?;
        let keys: Vec<String> = raw.iter().map(|op| raw_key(op).to_owned()).collect();
        let r = self.inner.backend.write_audited(raw, event.clone()).await;
        self.inner.cache.forget(keys.iter().map(String::as_str));
        r
    }

    /// Checks `ops` against the limits and seals their values.
    fn seal_ops(&self, ops: Vec<Op>) -> Result<Vec<RawOp>> {
        if ops.len() > MAX_TRANSACTION_OPS {
            return Err(StoreError::TooLarge(format!(
                "a transaction has {} operations, more than {MAX_TRANSACTION_OPS}",
                ops.len()
            )));
        }
        let total: usize = ops
            .iter()
            .map(|op| match op {
                Op::Put { value, .. } | Op::PutIfAbsent { value, .. } => value.len(),
                Op::Delete { .. } => 0,
            })
            .sum();
        if total > MAX_TRANSACTION_BYTES {
            return Err(StoreError::TooLarge(format!(
                "a transaction writes {total} value bytes, more than {MAX_TRANSACTION_BYTES}"
            )));
        }
        let mut raw = Vec::with_capacity(ops.len());
        for op in ops {
            raw.push(match op {
                Op::Put { key, value } => RawOp::Put {
                    sealed: self.seal_value(&key, &value)?,
                    key,
                },
                Op::PutIfAbsent { key, value } => RawOp::PutIfAbsent {
                    sealed: self.seal_value(&key, &value)?,
                    key,
                },
                Op::Delete { key } => {
                    check_key(&key)?;
                    RawOp::Delete { key }
                }
            });
        }
        Ok(raw)
    }

    /// Appends `event` to the audit log; returns its sequence number. Appends are serialised,
    /// so the chain has no gaps or forks. The event must hold no secret (the log is plain text).
    pub async fn audit(&self, event: &AuditEvent) -> Result<u64> {
        self.append_audit(event, Durability::Synced).await
    }

    /// Appends `event` like [`Store::audit`], answering once it is committed to the
    /// database's log but before that log is flushed to disk: it survives a crash of this
    /// process (SQLite's WAL is written before the answer; PostgreSQL has the commit), not a
    /// power loss or an operating-system crash in the next moments (SQLite: until the next
    /// synced commit or checkpoint, at most [`CHECKPOINT_INTERVAL`]; PostgreSQL: its
    /// `wal_writer_delay`, three times over at worst). What Vault's file audit device gives,
    /// which writes each line without an fsync. For the events of requests that change
    /// nothing (reads), where waiting for the disk would cap throughput at the disk's flush
    /// rate; a change and its event go through [`Store::transact_audited`], always synced. The
    /// chain stays whole either way: a lost tail is a shorter chain, never a broken one.
    pub async fn audit_logged(&self, event: &AuditEvent) -> Result<u64> {
        self.append_audit(event, Durability::Logged).await
    }

    async fn append_audit(&self, event: &AuditEvent, durability: Durability) -> Result<u64> {
        self.keys()?;
        audit::canonical_event(event, &mut String::new())?;
        self.inner
            .backend
            .audit_append(event.clone(), durability)
            .await
    }

    /// Up to `limit` records (at most [`MAX_AUDIT_PAGE`]) with `seq > after_seq`, in order.
    pub async fn audit_since(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        self.keys()?;
        self.inner
            .backend
            .audit_since(after_seq, limit.min(MAX_AUDIT_PAGE))
            .await
    }

    /// Checks the whole audit chain, record by record, and its head: from the genesis hash,
    /// or, once records were pruned, from the retention checkpoint after checking its MAC.
    /// `Ok(seq)` of the last record (the number of records ever appended) if intact;
    /// `Err(Corrupt)` naming the first record that was altered or is missing, or the
    /// checkpoint if it does not authenticate, otherwise. Records appended while it runs are
    /// not checked (it verifies up to the head it read first); run it apart from pruning.
    pub async fn verify_audit(&self) -> Result<u64> {
        const PAGE: usize = 1000;
        self.keys()?;
        let (head_seq, head_hash) = self.inner.backend.audit_head().await?;
        let mut verifier = match self.audit_checkpoint().await? {
            Some(cp) if cp.seq > head_seq => {
                return Err(StoreError::Corrupt(format!(
                    "the audit checkpoint is at record {} but the log's head at {head_seq}",
                    cp.seq
                )))
            }
            Some(cp) => audit::ChainVerifier::resume(cp.seq, &cp.hash),
            None => audit::ChainVerifier::new(),
        };
        'pages: while verifier.count() < head_seq {
            let page = self
                .inner
                .backend
                .audit_since(verifier.count(), PAGE)
                .await?;
            if page.is_empty() {
                break;
            }
            for rec in &page {
                if rec.seq > head_seq {
                    break 'pages;
                }
                verifier.check(rec)?;
            }
        }
        verifier.finish(head_seq, &head_hash)
    }

    /// The audit log's head: the seq and hash of its newest record (`0` and
    /// [`GENESIS_HASH`] while it is empty).
    pub async fn audit_head(&self) -> Result<(u64, String)> {
        self.keys()?;
        self.inner.backend.audit_head().await
    }

    /// Whether the log still holds a head recorded earlier (a signed head, see
    /// `warden-authority`'s `audit_head`): the record at `seq` has `hash`. `Ok(true)` if so;
    /// `Ok(false)` if it cannot tell because that record was pruned (retention deleted it
    /// and the checkpoint is past it); `Err(Corrupt)` if the log now ends before `seq` (newer
    /// records were deleted) or that record's hash differs (the log was rewritten). Verify
    /// the chain itself with [`Store::verify_audit`].
    pub async fn audit_holds_head(&self, seq: u64, hash: &str) -> Result<bool> {
        self.keys()?;
        let (head_seq, _) = self.inner.backend.audit_head().await?;
        if head_seq < seq {
            return Err(StoreError::Corrupt(format!(
                "the log ends at record {head_seq}, but a signed head names record {seq}: \
                 the newest {} records were deleted",
                seq - head_seq
            )));
        }
        let found = if seq == 0 {
            Some(GENESIS_HASH.to_owned())
        } else {
            match self.audit_checkpoint().await? {
                Some(cp) if cp.seq == seq => Some(cp.hash),
                Some(cp) if cp.seq > seq => return Ok(false),
                _ => self
                    .inner
                    .backend
                    .audit_since(seq - 1, 1)
                    .await?
                    .into_iter()
                    .find(|r| r.seq == seq)
                    .map(|r| r.hash),
            }
        };
        match found {
            Some(h) if h == hash => Ok(true),
            Some(h) => Err(StoreError::Corrupt(format!(
                "record {seq} has hash {h}, but a signed head says {hash}: the log was rewritten"
            ))),
            None => Err(StoreError::Corrupt(format!(
                "record {seq}, named by a signed head, is missing"
            ))),
        }
    }

    /// The audit retention checkpoint, after checking its MAC (`Err(Corrupt)` if it does not
    /// authenticate); `None` if nothing was ever pruned.
    pub async fn audit_checkpoint(&self) -> Result<Option<AuditCheckpoint>> {
        let keys = self.keys()?;
        match self.inner.backend.audit_checkpoint().await? {
            None => Ok(None),
            Some(cp) if cp.authentic(&keys.checkpoint_key) => Ok(Some(cp)),
            Some(cp) => Err(StoreError::Corrupt(format!(
                "the audit checkpoint (records up to {} pruned) does not authenticate: it was \
                 altered, or not written with this store's key",
                cp.seq
            ))),
        }
    }

    /// Deletes the oldest audit records that `keep` no longer keeps (older than its age, or
    /// beyond its count), behind a new MACed checkpoint, so [`Store::verify_audit`] still
    /// verifies what remains. Only a prefix is pruned: it stops at the first record to keep.
    /// The records are verified before they go (a damaged chain is refused, not pruned), in
    /// steps of [`AUDIT_PRUNE_STEP`], each its own transaction. `now_ms`: Unix milliseconds.
    pub async fn prune_audit(&self, keep: AuditRetention, now_ms: i64) -> Result<PruneReport> {
        let keys = self.keys()?;
        let (head_seq, _) = self.inner.backend.audit_head().await?;
        let by_count = keep
            .max_records
            .map_or(0, |n| head_seq.saturating_sub(n.max(1)));
        let cutoff = keep.max_age_ms.map(|a| now_ms.saturating_sub(a));
        let mut checkpoint = self.audit_checkpoint().await?;
        let mut verifier = match &checkpoint {
            Some(cp) => audit::ChainVerifier::resume(cp.seq, &cp.hash),
            None => audit::ChainVerifier::new(),
        };
        let mut pruned = 0;
        loop {
            let prev = verifier.count();
            let page = self
                .inner
                .backend
                .audit_since(prev, AUDIT_PRUNE_STEP)
                .await?;
            let mut last = None;
            for rec in &page {
                let expired = cutoff.is_some_and(|c| rec.time < c);
                if rec.seq > head_seq || !(rec.seq <= by_count || expired) {
                    break;
                }
                verifier.check(rec)?;
                last = Some(rec);
            }
            let Some(last) = last else { break };
            let cp = AuditCheckpoint::new(
                &keys.checkpoint_key,
                last.seq,
                &last.hash,
                last.time,
                now_ms,
            );
            pruned += self.inner.backend.audit_prune(prev, cp.clone()).await?;
            let whole_page = last.seq == page.last().map_or(0, |r| r.seq);
            checkpoint = Some(cp);
            if !(whole_page && page.len() == AUDIT_PRUNE_STEP) {
                break;
            }
        }
        Ok(PruneReport { pruned, checkpoint })
    }

    /// Adds a new data-encryption key, wrapped by the KEK, and seals new writes with it. Old
    /// values stay readable under their own DEK; [`Store::reseal`] moves them to the new one.
    /// Other processes sharing the database start using it at their next open, or when they
    /// first read a value sealed with it.
    pub async fn rotate_data_key(&self) -> Result<()> {
        let keys = self.keys()?;
        for _ in 0..8 {
            let rows = self.inner.backend.keyring_rows().await?;
            let next = rows
                .iter()
                .map(|(id, _)| *id)
                .max()
                .unwrap_or(0)
                .checked_add(1)
                .ok_or_else(|| StoreError::Crypto("the keyring has no ids left".into()))?;
            let wrapped = keys.kek.new_wrapped_dek(&self.inner.rng, next)?;
            if self.inner.backend.keyring_insert(next, wrapped).await? {
                self.reload_keyring().await?;
                tracing::info!(dek = next, "store: new data-encryption key");
                return Ok(());
            }
            // Another process rotated at the same moment: take the next id.
        }
        Err(StoreError::Backend(
            "could not add a data-encryption key (contention)".into(),
        ))
    }

    /// Re-seals every value under `prefix` that is not sealed with the active DEK, so an old
    /// DEK can eventually be retired. Values written concurrently are left as they are (they
    /// were sealed with the active DEK anyway). Returns how many values were re-sealed.
    pub async fn reseal(&self, prefix: &str) -> Result<u64> {
        check_prefix(prefix)?;
        self.keys()?;
        let mut count = 0;
        let mut after: Option<String> = None;
        loop {
            let keys = self.list_page(prefix, after.as_deref(), 500).await?;
            let Some(last) = keys.last().cloned() else {
                return Ok(count);
            };
            for key in keys {
                let Some(sealed) = self.inner.backend.get(&key).await? else {
                    continue;
                };
                let active = self.keyring()?.active_id();
                if seal::dek_id(&sealed) == Some(active) {
                    continue;
                }
                let plain = zeroize::Zeroizing::new(self.open_value(&key, &sealed).await?);
                let resealed = self.seal_value(&key, &plain)?;
                self.inner.cache.forget([key.as_str()]);
                let replaced = self
                    .inner
                    .backend
                    .replace_sealed(key.clone(), sealed, resealed)
                    .await;
                self.inner.cache.forget([key.as_str()]);
                if replaced? {
                    count += 1;
                }
            }
            after = Some(last);
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// The keys, or `Sealed`.
    fn keys(&self) -> Result<Arc<Keys>> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(StoreError::Sealed)
    }

    fn keyring(&self) -> Result<Arc<Keyring>> {
        let keys = self.keys()?;
        let ring = Arc::clone(&keys.keyring.read().unwrap_or_else(|p| p.into_inner()));
        Ok(ring)
    }

    fn seal_value(&self, key: &str, value: &[u8]) -> Result<Vec<u8>> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::TooLarge(format!(
                "the value for {key:?} is {} bytes, more than {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        self.keyring()?.seal(&self.inner.rng, key, value)
    }

    async fn open_value(&self, key: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        match self.keyring()?.open_value(key, sealed) {
            Ok(v) => return Ok(v),
            Err(OpenError::Corrupt(e)) => return Err(e),
            Err(OpenError::UnknownDek(_)) => {}
        }
        // Sealed with a DEK added (by another process) after we loaded the keyring.
        self.reload_keyring().await?;
        match self.keyring()?.open_value(key, sealed) {
            Ok(v) => Ok(v),
            Err(OpenError::Corrupt(e)) => Err(e),
            Err(OpenError::UnknownDek(id)) => Err(StoreError::Corrupt(format!(
                "the value at {key:?} names data-encryption key {id}, which the keyring does not hold"
            ))),
        }
    }

    async fn reload_keyring(&self) -> Result<()> {
        let keys = self.keys()?;
        let rows = self.inner.backend.keyring_rows().await?;
        let ring = Keyring::open(&keys.kek, &rows)?;
        *keys.keyring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
        Ok(())
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey("the key is empty".into()));
    }
    check_prefix(key)
}

fn check_prefix(key: &str) -> Result<()> {
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::InvalidKey(format!(
            "the key is {} bytes, more than {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if key.contains('\0') {
        return Err(StoreError::InvalidKey("the key contains NUL".into()));
    }
    Ok(())
}
