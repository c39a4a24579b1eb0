//! PostgreSQL: the shared store for an authority that scales out or fails over.
//!
//! `tokio-postgres` with a `deadpool-postgres` pool (16 connections, statements prepared once
//! per connection). Durability is PostgreSQL's: `COMMIT` returns after the WAL is flushed
//! (`synchronous_commit = on`, the default; an operator who turns it off trades that away).
//! Audit appends lock the head row (`SELECT … FOR UPDATE`) inside their transaction, which
//! serialises them across every process sharing the database. Because that lock is held for a
//! whole transaction, appends go through one task per `Store` that takes every queued event
//! and appends them together (one `UNNEST` insert, one commit): group commit, as the SQLite
//! writer does, instead of one locked transaction per event (measured: ~600 appends/s one by
//! one at 32 callers, several thousand batched). The task runs on the runtime that opened
//! the store, like the pool's connection tasks. Migrations run under a
//! transaction-scoped advisory lock, so authorities starting together migrate once.
//!
//! Tables live in the first schema of the connection's `search_path`: the URL can choose one
//! with `options=-csearch_path%3D<schema>` (the tests use a fresh schema per run).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Config, GenericClient, NoTls};

use super::{now_ms, prefix_end, record_from_columns, seq_from_db, ListQuery, RawOp};
use crate::audit::{canonical_detail, record_hash, AuditCheckpoint, AuditRecord};
use crate::error::{Result, StoreError};
use crate::migrations::{self, Migration};
use crate::{AuditEvent, Durability};

const POOL_SIZE: usize = 16;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_WAIT: Duration = Duration::from_secs(10);
/// Most audit events appended in one transaction.
const MAX_AUDIT_BATCH: usize = 512;
/// Events waiting for the appender before `audit_append` waits for room.
const AUDIT_QUEUE: usize = 4096;
/// `pg_advisory_xact_lock` key for migrations ("WARDEN" + 1).
const MIGRATION_LOCK: i64 = 0x5741_5244_454E_0001;
/// `pg_advisory_xact_lock` key for audit pruning ("WARDEN" + 2): one pruner at a time.
const PRUNE_LOCK: i64 = 0x5741_5244_454E_0002;

const SQL_GET: &str = "SELECT value FROM kv WHERE key = $1";
const SQL_PUT: &str =
    "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";
const SQL_PUT_IF_ABSENT: &str =
    "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";
const SQL_DELETE: &str = "DELETE FROM kv WHERE key = $1";
/// Many puts on distinct keys in one statement (a repeated key would be an error).
const SQL_PUT_MANY: &str =
    "INSERT INTO kv (key, value) SELECT * FROM UNNEST($1::TEXT[], $2::BYTEA[]) \
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";
const SQL_DELETE_MANY: &str = "DELETE FROM kv WHERE key = ANY($1::TEXT[])";
const SQL_AUDIT_HEAD_LOCK: &str = "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE";
const SQL_AUDIT_INSERT: &str = "INSERT INTO audit_log \
    (seq, time_ms, component, action, actor, subject, outcome, detail, source, prev_hash, hash) \
    SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], \
    $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[])";
const SQL_AUDIT_HEAD_SET: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1";

pub(crate) struct PgBackend {
    pool: Pool,
    audit: mpsc::Sender<AuditJob>,
    /// The connection settings, for the leader lock's own session (boxed: the enum of
    /// backends stays small).
    cfg: Box<Config>,
}

struct AuditJob {
    /// Writes committed with the event, all or nothing (empty for a plain append).
    ops: Vec<RawOp>,
    event: AuditEvent,
    reply: oneshot::Sender<Result<u64>>,
    /// Whether its batch's commit must be flushed before it is answered.
    durability: Durability,
}

/// The three write statements, prepared on one connection.
struct WriteStatements {
    put: tokio_postgres::Statement,
    put_if_absent: tokio_postgres::Statement,
    delete: tokio_postgres::Statement,
}

impl PgBackend {
    /// Connects to `url` and migrates the schema.
    pub(crate) async fn open(url: &str) -> Result<PgBackend> {
        // tokio-postgres' parse errors name the offending option, never the password.
        let mut cfg: Config = url
            .parse()
            .map_err(|e| StoreError::InvalidLocation(format!("postgres URL: {e}")))?;
        if !matches!(cfg.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) {
            return Err(StoreError::InvalidLocation(
                "postgres URL: sslmode=require is not supported yet (no TLS connector is wired); \
                 use a local socket or a trusted network"
                    .into(),
            ));
        }
        // The password is not written in the URL (config validation refuses one there); it
        // comes from PGPASSWORD, as libpq and psql take it.
        if cfg.get_password().is_none() {
            if let Some(pw) = std::env::var_os("PGPASSWORD") {
                use std::os::unix::ffi::OsStrExt as _;
                cfg.password(pw.as_bytes());
            }
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_TIMEOUT);
        }
        if cfg.get_application_name().is_none() {
            cfg.application_name("warden");
        }
        let mgr = Manager::from_config(
            cfg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))?;
        let mut client = pool.get().await?;
        migrate(&mut client, migrations::POSTGRES).await?;
        let (audit, rx) = mpsc::channel(AUDIT_QUEUE);
        tokio::spawn(audit_appender(pool.clone(), rx));
        Ok(PgBackend {
            pool,
            audit,
            cfg: Box::new(cfg),
        })
    }

    pub(crate) async fn try_lead(
        &self,
        address: &str,
        holder: &str,
    ) -> Result<Option<crate::leader::LeaderLock>> {
        crate::leader::try_lead(&self.cfg, address, holder).await
    }

    pub(crate) async fn leader(&self) -> Result<Option<crate::leader::LeaderInfo>> {
        let client = self.pool.get().await?;
        crate::leader::leader(&client).await
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let client = self.pool.get().await?;
        let st = client.prepare_cached(SQL_GET).await?;
        Ok(client.query_opt(&st, &[&key]).await?.map(|row| row.get(0)))
    }

    pub(crate) async fn write(&self, ops: Vec<RawOp>) -> Result<Vec<bool>> {
        let mut client = self.pool.get().await?;
        let st = WriteStatements {
            put: client.prepare_cached(SQL_PUT).await?,
            put_if_absent: client.prepare_cached(SQL_PUT_IF_ABSENT).await?,
            delete: client.prepare_cached(SQL_DELETE).await?,
        };
        if ops.len() == 1 {
            // One statement is atomic on its own: skip BEGIN/COMMIT round trips.
            let c: &tokio_postgres::Client = &client;
            return apply_ops(c, &st, ops).await;
        }
        let tx = client.transaction().await?;
        // On error `tx` is dropped unfinished, which rolls it back.
        let changed = apply_ops(&*tx, &st, ops).await?;
        tx.commit().await?;
        Ok(changed)
    }

    pub(crate) async fn replace_sealed(
        &self,
        key: String,
        expected: Vec<u8>,
        sealed: Vec<u8>,
    ) -> Result<bool> {
        let client = self.pool.get().await?;
        let st = client
            .prepare_cached("UPDATE kv SET value = $3 WHERE key = $1 AND value = $2")
            .await?;
        Ok(client.execute(&st, &[&key, &expected, &sealed]).await? == 1)
    }

    pub(crate) async fn list_keys(&self, q: ListQuery) -> Result<Vec<String>> {
        let (lower_op, lower) = match q.start_after {
            Some(after) if after >= q.prefix => (">", after),
            _ => (">=", q.prefix.clone()),
        };
        let mut sql = format!("SELECT key FROM kv WHERE key {lower_op} $1");
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(lower)];
        if let Some(end) = prefix_end(&q.prefix) {
            args.push(Box::new(end));
            sql.push_str(&format!(" AND key < ${}", args.len()));
        }
        sql.push_str(" ORDER BY key");
        if let Some(limit) = q.limit {
            args.push(Box::new(i64::try_from(limit).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" LIMIT ${}", args.len()));
        }
        let client = self.pool.get().await?;
        let st = client.prepare_cached(&sql).await?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            args.iter().map(|a| &**a as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&st, &refs).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(crate) async fn keyring_rows(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        let client = self.pool.get().await?;
        let st = client
            .prepare_cached("SELECT id, wrapped FROM keyring ORDER BY id")
            .await?;
        client
            .query(&st, &[])
            .await?
            .iter()
            .map(|r| {
                let id: i64 = r.get(0);
                let id = u32::try_from(id)
                    .map_err(|_| StoreError::Corrupt(format!("keyring id {id} out of range")))?;
                Ok((id, r.get(1)))
            })
            .collect()
    }

    pub(crate) async fn keyring_insert(&self, id: u32, wrapped: Vec<u8>) -> Result<bool> {
        let client = self.pool.get().await?;
        let st = client
            .prepare_cached(
                "INSERT INTO keyring (id, wrapped, created_ms) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
            )
            .await?;
        Ok(client
            .execute(&st, &[&i64::from(id), &wrapped, &now_ms()])
            .await?
            == 1)
    }

    pub(crate) async fn keyring_newest(&self) -> Result<Option<(u32, i64)>> {
        let client = self.pool.get().await?;
        let st = client
            .prepare_cached("SELECT id, created_ms FROM keyring ORDER BY id DESC LIMIT 1")
            .await?;
        client
            .query_opt(&st, &[])
            .await?
            .map(|r| {
                let id: i64 = r.get(0);
                let id = u32::try_from(id)
                    .map_err(|_| StoreError::Corrupt(format!("keyring id {id} out of range")))?;
                Ok((id, r.get(1)))
            })
            .transpose()
    }

    pub(crate) async fn initialize(&self, wrapped: Vec<u8>, config: String) -> Result<bool> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let now = now_ms();
        let added = tx
            .execute(
                "INSERT INTO keyring (id, wrapped, created_ms) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
                &[&wrapped, &now],
            )
            .await?;
        if added != 1 {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO seal_config (id, config, created_ms) VALUES (1, $1, $2)",
            &[&config, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(crate) async fn seal_config(&self) -> Result<Option<String>> {
        let client = self.pool.get().await?;
        let st = client
            .prepare_cached("SELECT config FROM seal_config WHERE id = 1")
            .await?;
        Ok(client.query_opt(&st, &[]).await?.map(|r| r.get(0)))
    }

    pub(crate) async fn audit_append(
        &self,
        event: AuditEvent,
        durability: Durability,
    ) -> Result<u64> {
        let (reply, rx) = oneshot::channel();
        self.audit
            .send(AuditJob {
                ops: Vec::new(),
                event,
                reply,
                durability,
            })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Goes through the appender with its event: the ops run in the appender's batch
    /// transaction (in a savepoint of their own), so the change and its event commit together
    /// and share the batch's one commit with every other queued append.
    pub(crate) async fn write_audited(&self, ops: Vec<RawOp>, event: AuditEvent) -> Result<u64> {
        let (reply, rx) = oneshot::channel();
        self.audit
            .send(AuditJob {
                ops,
                event,
                reply,
                durability: Durability::Synced,
            })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    pub(crate) async fn audit_since(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.pool.get().await?;
        let st = client
            .prepare_cached(
                "SELECT seq, time_ms, component, action, actor, subject, outcome, detail, source, prev_hash, hash \
                 FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .await?;
        client
            .query(&st, &[&after, &limit])
            .await?
            .iter()
            .map(|r| {
                let detail: &str = r.get(7);
                record_from_columns(
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                    detail,
                    r.get(8),
                    r.get(9),
                    r.get(10),
                )
            })
            .collect()
    }

    pub(crate) async fn audit_checkpoint(&self) -> Result<Option<AuditCheckpoint>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT seq, hash, time_ms, pruned_ms, mac FROM audit_checkpoint WHERE id = 1",
                &[],
            )
            .await?;
        row.map(|r| {
            Ok(AuditCheckpoint {
                seq: seq_from_db(r.get(0))?,
                hash: r.get(1),
                time: r.get(2),
                pruned_at: r.get(3),
                mac: r.get(4),
            })
        })
        .transpose()
    }

    pub(crate) async fn audit_prune(&self, expected_prev: u64, cp: AuditCheckpoint) -> Result<u64> {
        let seq = i64::try_from(cp.seq)
            .map_err(|_| StoreError::Corrupt(format!("audit seq {} out of range", cp.seq)))?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.query("SELECT pg_advisory_xact_lock($1)", &[&PRUNE_LOCK])
            .await?;
        let current: i64 = tx
            .query_one(
                "SELECT COALESCE((SELECT seq FROM audit_checkpoint WHERE id = 1), 0)::BIGINT",
                &[],
            )
            .await?
            .get(0);
        if seq_from_db(current)? != expected_prev {
            return Err(StoreError::Conflict);
        }
        let hash: Option<String> = tx
            .query_opt("SELECT hash FROM audit_log WHERE seq = $1", &[&seq])
            .await?
            .map(|r| r.get(0));
        if hash.as_deref() != Some(cp.hash.as_str()) {
            return Err(StoreError::Corrupt(format!(
                "audit record {} changed while it was being pruned",
                cp.seq
            )));
        }
        tx.execute(
            "INSERT INTO audit_checkpoint (id, seq, hash, time_ms, pruned_ms, mac) \
             VALUES (1, $1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, \
             hash = EXCLUDED.hash, time_ms = EXCLUDED.time_ms, pruned_ms = EXCLUDED.pruned_ms, \
             mac = EXCLUDED.mac",
            &[&seq, &cp.hash, &cp.time, &cp.pruned_at, &cp.mac],
        )
        .await?;
        let deleted = tx
            .execute("DELETE FROM audit_log WHERE seq <= $1", &[&seq])
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    pub(crate) async fn audit_head(&self) -> Result<(u64, String)> {
        let client = self.pool.get().await?;
        let row = client
            .query_one("SELECT seq, hash FROM audit_head WHERE id = 1", &[])
            .await?;
        Ok((seq_from_db(row.get(0))?, row.get(1)))
    }
}

/// Appends queued events in batches until every `Store` handle is gone.
async fn audit_appender(pool: Pool, mut rx: mpsc::Receiver<AuditJob>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_AUDIT_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut outcome: Vec<Option<StoreError>> = Vec::with_capacity(batch.len());
        match append_batch(&pool, &mut batch, &mut outcome).await {
            Ok(first_seq) => {
                let mut seq = first_seq;
                for (job, failed) in batch.into_iter().zip(outcome) {
                    let answer = match failed {
                        // Its ops were rolled back to its savepoint; its event was not appended.
                        Some(e) => Err(e),
                        None => {
                            seq += 1;
                            Ok(seq - 1)
                        }
                    };
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = batch.len(), "store: audit append failed");
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Appends `batch` in one transaction under the head lock; returns the first seq. A job with
/// ops (taken from it) runs them first in a savepoint of its own: one that fails is rolled back to it, its
/// error put in `failed` at its index, and its event left out; the others go on. (`failed`
/// gets one entry per job; the seqs are given in order to the jobs with no error.)
async fn append_batch(
    pool: &Pool,
    batch: &mut [AuditJob],
    failed: &mut Vec<Option<StoreError>>,
) -> Result<u64> {
    let mut client = pool.get().await?;
    let lock_head = client.prepare_cached(SQL_AUDIT_HEAD_LOCK).await?;
    let insert = client.prepare_cached(SQL_AUDIT_INSERT).await?;
    let set_head = client.prepare_cached(SQL_AUDIT_HEAD_SET).await?;
    let writes = if batch.iter().any(|j| !j.ops.is_empty()) {
        Some(WriteStatements {
            put: client.prepare_cached(SQL_PUT).await?,
            put_if_absent: client.prepare_cached(SQL_PUT_IF_ABSENT).await?,
            delete: client.prepare_cached(SQL_DELETE).await?,
        })
    } else {
        None
    };
    let tx = client.transaction().await?;
    if batch.iter().all(|j| j.durability == Durability::Logged) {
        // Only reads' events: committed without waiting for the WAL flush (see
        // `Store::audit_logged`); any other job keeps the server's `synchronous_commit`.
        tx.batch_execute("SET LOCAL synchronous_commit TO off")
            .await?;
    }
    failed.clear();
    failed.resize_with(batch.len(), || None);
    // Jobs that cannot fail on their own (no `PutIfAbsent`) and touch keys no earlier job of
    // the batch touched are applied together: one upsert and one delete for all of them, two
    // round trips per batch. The others run after them, in order, each in its own savepoint.
    // (A key seen twice sends the later job down the savepoint path, which runs after the
    // bulk statements, so every key's writes still apply in queue order.)
    let mut seen = std::collections::HashSet::new();
    let (mut put_keys, mut put_values, mut del_keys) = (Vec::new(), Vec::new(), Vec::new());
    let mut one_by_one = Vec::new();
    for (i, job) in batch.iter_mut().enumerate() {
        if job.ops.is_empty() {
            continue;
        }
        let mut own = std::collections::HashSet::new();
        let bulk = job.ops.iter().all(|op| match op {
            RawOp::PutIfAbsent { .. } => false,
            RawOp::Put { key, .. } | RawOp::Delete { key } => {
                !seen.contains(key.as_str()) && own.insert(key.as_str())
            }
        });
        for op in &job.ops {
            let (RawOp::Put { key, .. } | RawOp::Delete { key } | RawOp::PutIfAbsent { key, .. }) =
                op;
            seen.insert(key.clone());
        }
        if !bulk {
            one_by_one.push(i);
            continue;
        }
        // No `PutIfAbsent` here (checked above), so every op is a put or a delete.
        for op in std::mem::take(&mut job.ops) {
            match op {
                RawOp::Put { key, sealed } => {
                    put_keys.push(key);
                    put_values.push(sealed);
                }
                RawOp::Delete { key } => del_keys.push(key),
                // Excluded by the check above: such a job takes the savepoint path.
                RawOp::PutIfAbsent { .. } => {}
            }
        }
    }
    if !put_keys.is_empty() {
        let st = tx.prepare_cached(SQL_PUT_MANY).await?;
        tx.execute(&st, &[&put_keys, &put_values]).await?;
    }
    if !del_keys.is_empty() {
        let st = tx.prepare_cached(SQL_DELETE_MANY).await?;
        tx.execute(&st, &[&del_keys]).await?;
    }
    for i in one_by_one {
        let (Some(st), job) = (&writes, &mut batch[i]) else {
            continue;
        };
        tx.batch_execute("SAVEPOINT job").await?;
        match apply_ops(&*tx, st, std::mem::take(&mut job.ops)).await {
            Ok(_) => {
                tx.batch_execute("RELEASE SAVEPOINT job").await?;
            }
            Err(e) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")
                    .await?;
                failed[i] = Some(e);
            }
        }
    }
    // The head is locked last, so other processes' appends wait only for the inserts.
    let head = tx.query_one(&lock_head, &[]).await?;
    let (mut seq, mut prev_hash): (i64, String) = (head.get(0), head.get(1));
    let first = seq + 1;
    let time = now_ms();
    let n = batch.len();
    let mut cols = AuditColumns::with_capacity(n);
    let kept = batch.iter().zip(failed.iter()).filter(|(_, f)| f.is_none());
    for (AuditJob { event: e, .. }, _) in kept {
        seq += 1;
        let hash = record_hash(&prev_hash, seq_from_db(seq)?, time, e)?;
        cols.seq.push(seq);
        cols.time.push(time);
        cols.component.push(e.component.clone());
        cols.action.push(e.action.clone());
        cols.actor.push(e.actor.clone());
        cols.subject.push(e.subject.clone());
        cols.outcome.push(e.outcome.clone());
        cols.detail.push(canonical_detail(&e.detail));
        cols.source.push(e.source.clone());
        cols.prev_hash
            .push(std::mem::replace(&mut prev_hash, hash.clone()));
        cols.hash.push(hash);
    }
    tx.execute(
        &insert,
        &[
            &cols.seq,
            &cols.time,
            &cols.component,
            &cols.action,
            &cols.actor,
            &cols.subject,
            &cols.outcome,
            &cols.detail,
            &cols.source,
            &cols.prev_hash,
            &cols.hash,
        ],
    )
    .await?;
    tx.execute(&set_head, &[&seq, &prev_hash]).await?;
    tx.commit().await?;
    seq_from_db(first)
}

/// A batch of audit records, column by column, for one `UNNEST` insert.
struct AuditColumns {
    seq: Vec<i64>,
    time: Vec<i64>,
    component: Vec<String>,
    action: Vec<String>,
    actor: Vec<String>,
    subject: Vec<Option<String>>,
    outcome: Vec<String>,
    detail: Vec<String>,
    source: Vec<Option<String>>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
}

impl AuditColumns {
    fn with_capacity(n: usize) -> Self {
        AuditColumns {
            seq: Vec::with_capacity(n),
            time: Vec::with_capacity(n),
            component: Vec::with_capacity(n),
            action: Vec::with_capacity(n),
            actor: Vec::with_capacity(n),
            subject: Vec::with_capacity(n),
            outcome: Vec::with_capacity(n),
            detail: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            prev_hash: Vec::with_capacity(n),
            hash: Vec::with_capacity(n),
        }
    }
}

fn closed() -> StoreError {
    StoreError::Backend("postgres: the store is closed (or its runtime has shut down)".into())
}

async fn apply_ops<C: GenericClient>(
    c: &C,
    st: &WriteStatements,
    ops: Vec<RawOp>,
) -> Result<Vec<bool>> {
    let mut changed = Vec::with_capacity(ops.len());
    for op in ops {
        changed.push(match op {
            RawOp::Put { key, sealed } => {
                c.execute(&st.put, &[&key, &sealed]).await?;
                true
            }
            RawOp::PutIfAbsent { key, sealed } => {
                if c.execute(&st.put_if_absent, &[&key, &sealed]).await? == 0 {
                    return Err(StoreError::Conflict);
                }
                true
            }
            RawOp::Delete { key } => c.execute(&st.delete, &[&key]).await? > 0,
        });
    }
    Ok(changed)
}

/// Applies missing migrations in one transaction, under an advisory lock.
async fn migrate(client: &mut Object, list: &[Migration]) -> Result<()> {
    let encoding: String = client.query_one("SHOW server_encoding", &[]).await?.get(0);
    if encoding != "UTF8" {
        return Err(StoreError::Backend(format!(
            "postgres: the database encoding is {encoding}; the store needs UTF8"
        )));
    }
    let tx = client.transaction().await?;
    tx.query("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (\
            version BIGINT NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)",
    )
    .await?;
    let found: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version",
            &[],
        )
        .await?
        .get(0);
    let supported = migrations::latest(list);
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for m in list.iter().filter(|m| m.version > found) {
        tx.batch_execute(m.sql).await.map_err(|e| {
            StoreError::Backend(format!(
                "migration {} ({}) failed: {}",
                m.version,
                m.name,
                StoreError::from(e)
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_version (version, name, applied_ms) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &now_ms()],
        )
        .await?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "store: applied PostgreSQL migration"
        );
    }
    tx.commit().await?;
    Ok(())
}
