//! SQLite: one file in the data dir, the embedded default.
//!
//! - **One writer thread** owns the only writing connection. Writes are queued to it; it takes
//!   whatever is queued (up to [`MAX_BATCH`] jobs), runs each job inside its own `SAVEPOINT` of
//!   one `BEGIN IMMEDIATE` transaction, commits once, and only then answers every job. That is
//!   group commit: under load, one fsync covers many writes, and a job that fails (a
//!   `PutIfAbsent` conflict) is rolled back to its savepoint without touching the others.
//! - **Durability**: WAL with `synchronous = FULL`, so the WAL is fsynced at every commit and an
//!   acknowledged write survives power loss, not only a process crash (`NORMAL` would lose the
//!   last commits on power loss, which principle 5 does not allow).
//! - **Checkpoints** run on a thread of their own (`start_checkpointer`), not in the writer's
//!   commits; the writer checkpoints only if that thread falls far behind.
//! - **Reads** run on a small pool of `query_only` connections, separate from the writer's,
//!   so WAL lets them run while the writer commits: point reads (`get`) inline on the
//!   calling thread, scans on the blocking thread pool (see `ReaderPool::inline`).
//! - `BEGIN IMMEDIATE` takes SQLite's write lock before the audit head is read, so appends are
//!   serialised even with another process (say, a CLI) writing to the same file; `busy_timeout`
//!   makes the other wait instead of failing.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{now_ms, prefix_end, record_from_columns, seq_from_db, ListQuery, RawOp};
use crate::audit::{canonical_detail, record_hash, AuditCheckpoint, AuditRecord};
use crate::error::{Result, StoreError};
use crate::migrations::{self, Migration};
use crate::{AuditEvent, Durability};

/// Most jobs committed together.
const MAX_BATCH: usize = 256;
/// Jobs waiting for the writer before `write` waits for room.
const WRITE_QUEUE: usize = 1024;
/// Reads running at once (and idle reader connections kept).
const READERS: usize = 4;
/// How long a connection waits for another process's lock.
const BUSY_TIMEOUT_MS: u32 = 5000;
/// How often the checkpointer thread copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: std::time::Duration = crate::CHECKPOINT_INTERVAL;
/// WAL pages past which the writer checkpoints by itself, should the checkpointer fall
/// behind (SQLite's default is 1000, which puts a checkpoint into the commit path).
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_384;

type Output = Box<dyn Any + Send>;
type Work = Box<dyn FnOnce(&Connection) -> Result<Output> + Send>;

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<Output>>,
    /// Whether its batch must be fsynced before it is answered.
    durability: Durability,
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

pub(crate) struct SqliteBackend {
    writer: mpsc::Sender<Job>,
    /// Dropped with the backend, which stops the checkpointer thread.
    _checkpointer: std::sync::mpsc::Sender<()>,
    readers: Arc<ReaderPool>,
}

impl SqliteBackend {
    /// Opens (creating, 0600) the database file at `path` and migrates it.
    pub(crate) async fn open(path: &str) -> Result<SqliteBackend> {
        if path.is_empty() {
            return Err(StoreError::InvalidLocation(
                "the SQLite path is empty".into(),
            ));
        }
        let path = PathBuf::from(path);
        let (conn, path) = tokio::task::spawn_blocking(move || -> Result<_> {
            prepare_file(&path)?;
            let mut conn = connect(&path)?;
            let mode = enable_wal(&conn)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Backend(format!(
                    "sqlite: could not enable WAL (journal_mode is {mode})"
                )));
            }
            conn.execute_batch(&format!(
                "PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES};"
            ))?;
            migrate(&mut conn, migrations::SQLITE)?;
            Ok((conn, path))
        })
        .await
        .map_err(join_error)??;

        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("warden-store-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| {
                StoreError::Backend(format!("sqlite: cannot start the writer thread: {e}"))
            })?;
        let readers = Arc::new(ReaderPool {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(READERS),
        });
        Ok(SqliteBackend {
            writer: tx,
            _checkpointer: start_checkpointer(readers.path.clone())?,
            readers,
        })
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        // A point read by primary key: runs inline (see `ReaderPool::inline`).
        self.readers.inline(|c| {
            let mut st = c.prepare_cached("SELECT value FROM kv WHERE key = ?1")?;
            Ok(st.query_row([key], |r| r.get(0)).optional()?)
        })
    }

    pub(crate) async fn write(&self, ops: Vec<RawOp>) -> Result<Vec<bool>> {
        self.write_job(move |c| apply_ops(c, ops)).await
    }

    pub(crate) async fn replace_sealed(
        &self,
        key: String,
        expected: Vec<u8>,
        sealed: Vec<u8>,
    ) -> Result<bool> {
        self.write_job(move |c| {
            let mut st =
                c.prepare_cached("UPDATE kv SET value = ?3 WHERE key = ?1 AND value = ?2")?;
            Ok(st.execute(params![key, expected, sealed])? == 1)
        })
        .await
    }

    pub(crate) async fn list_keys(&self, q: ListQuery) -> Result<Vec<String>> {
        self.read(move |c| {
            use rusqlite::types::Value;
            let (lower_op, lower) = match q.start_after {
                Some(after) if after >= q.prefix => (">", after),
                _ => (">=", q.prefix.clone()),
            };
            let mut sql = format!("SELECT key FROM kv WHERE key {lower_op} ?");
            let mut args = vec![Value::Text(lower)];
            if let Some(end) = prefix_end(&q.prefix) {
                sql.push_str(" AND key < ?");
                args.push(Value::Text(end));
            }
            sql.push_str(" ORDER BY key");
            if let Some(limit) = q.limit {
                sql.push_str(" LIMIT ?");
                args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
            }
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(args), |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    pub(crate) async fn keyring_rows(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT id, wrapped FROM keyring ORDER BY id")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
            rows.map(|row| {
                let (id, wrapped) = row?;
                let id = u32::try_from(id)
                    .map_err(|_| StoreError::Corrupt(format!("keyring id {id} out of range")))?;
                Ok((id, wrapped))
            })
            .collect()
        })
        .await
    }

    pub(crate) async fn keyring_insert(&self, id: u32, wrapped: Vec<u8>) -> Result<bool> {
        self.write_job(move |c| {
            let mut st = c.prepare_cached(
                "INSERT INTO keyring (id, wrapped, created_ms) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING",
            )?;
            Ok(st.execute(params![i64::from(id), wrapped, now_ms()])? == 1)
        })
        .await
    }

    pub(crate) async fn keyring_newest(&self) -> Result<Option<(u32, i64)>> {
        self.read(|c| {
            let mut st =
                c.prepare_cached("SELECT id, created_ms FROM keyring ORDER BY id DESC LIMIT 1")?;
            let row = st
                .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                .optional()?;
            row.map(|(id, ms)| {
                let id = u32::try_from(id)
                    .map_err(|_| StoreError::Corrupt(format!("keyring id {id} out of range")))?;
                Ok((id, ms))
            })
            .transpose()
        })
        .await
    }

    pub(crate) async fn initialize(&self, wrapped: Vec<u8>, config: String) -> Result<bool> {
        self.write_job(move |c| {
            let now = now_ms();
            let mut st = c.prepare_cached(
                "INSERT INTO keyring (id, wrapped, created_ms) VALUES (1, ?1, ?2) ON CONFLICT (id) DO NOTHING",
            )?;
            if st.execute(params![wrapped, now])? != 1 {
                return Ok(false);
            }
            let mut st = c.prepare_cached(
                "INSERT INTO seal_config (id, config, created_ms) VALUES (1, ?1, ?2)",
            )?;
            st.execute(params![config, now])?;
            Ok(true)
        })
        .await
    }

    pub(crate) async fn seal_config(&self) -> Result<Option<String>> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT config FROM seal_config WHERE id = 1")?;
            Ok(st.query_row([], |r| r.get(0)).optional()?)
        })
        .await
    }

    pub(crate) async fn audit_append(
        &self,
        event: AuditEvent,
        durability: Durability,
    ) -> Result<u64> {
        self.queue_job(durability, move |c| append_audit(c, &event))
            .await
    }

    pub(crate) async fn write_audited(&self, ops: Vec<RawOp>, event: AuditEvent) -> Result<u64> {
        // One job, so one savepoint: a conflict rolls back the ops and the event together.
        self.write_job(move |c| {
            apply_ops(c, ops)?;
            append_audit(c, &event)
        })
        .await
    }

    pub(crate) async fn audit_since(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT seq, time_ms, component, action, actor, subject, outcome, detail, source, prev_hash, hash \
                 FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let mut rows = st.query(params![after, limit])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let detail: String = r.get(7)?;
                out.push(record_from_columns(
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    &detail,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                )?);
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn audit_head(&self) -> Result<(u64, String)> {
        self.read(|c| {
            let (seq, hash): (i64, String) =
                c.query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            Ok((seq_from_db(seq)?, hash))
        })
        .await
    }

    pub(crate) async fn audit_checkpoint(&self) -> Result<Option<AuditCheckpoint>> {
        self.read(|c| {
            let row = c
                .query_row(
                    "SELECT seq, hash, time_ms, pruned_ms, mac FROM audit_checkpoint WHERE id = 1",
                    [],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                        ))
                    },
                )
                .optional()?;
            row.map(|(seq, hash, time, pruned_at, mac)| {
                Ok(AuditCheckpoint {
                    seq: seq_from_db(seq)?,
                    hash,
                    time,
                    pruned_at,
                    mac,
                })
            })
            .transpose()
        })
        .await
    }

    pub(crate) async fn audit_prune(&self, expected_prev: u64, cp: AuditCheckpoint) -> Result<u64> {
        self.write_job(move |c| prune_audit(c, expected_prev, &cp))
            .await
    }

    /// Runs `f` on a reader connection, on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let _permit = self.readers.permits.acquire().await.map_err(|_| closed())?;
        let pool = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let out = f(&conn);
            pool.give_back(conn);
            out
        })
        .await
        .map_err(join_error)?
    }

    /// Queues `f` for the writer thread and waits until its batch has committed, synced.
    async fn write_job<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.queue_job(Durability::Synced, f).await
    }

    /// Queues `f` for the writer thread and waits until its batch has committed as
    /// `durability` asks (a batch is synced if any of its jobs asks for it).
    async fn queue_job<T, F>(&self, durability: Durability, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let work: Work = Box::new(move |c| f(c).map(|t| Box::new(t) as Output));
        self.writer
            .send(Job {
                work,
                reply,
                durability,
            })
            .await
            .map_err(|_| closed())?;
        let out = rx.await.map_err(|_| closed())??;
        out.downcast::<T>().map(|t| *t).map_err(|_| {
            StoreError::Backend("sqlite: the writer returned an unexpected type".into())
        })
    }
}

impl ReaderPool {
    /// Runs `f` on a reader connection on the calling thread. For point reads by primary
    /// key only: in WAL mode a reader never waits for the writer, and a lookup in the page
    /// cache takes microseconds, less than handing it to the blocking pool and waking the
    /// task again (measured: at 32 concurrent vault reads the hand-offs' thread wake-ups were
    /// a third of the process's CPU time). A read that must go to disk blocks this thread
    /// for that long; scans (`list_keys`, audit pages) stay on the blocking pool.
    fn inline<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.take()?;
        let out = f(&conn);
        self.give_back(conn);
        out
    }

    fn take(&self) -> Result<Connection> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(c) => Ok(c),
            None => {
                let c = connect(&self.path)?;
                c.execute_batch("PRAGMA query_only = ON;")?;
                Ok(c)
            }
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Blocking-pool readers plus inline ones (one per runtime worker, a few at most).
        if idle.len() < 2 * READERS {
            idle.push(conn);
        }
    }
}

/// Creates the parent directory (0700) and the file (0600) if missing, so the database
/// is never readable by others, not even for a moment. SQLite gives the -wal and -shm files
/// the database file's permissions.
fn prepare_file(path: &Path) -> Result<()> {
    use std::fs::{DirBuilder, OpenOptions};
    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

    let io = |what: &str, e: std::io::Error| {
        StoreError::Backend(format!("sqlite: {what} {}: {e}", path.display()))
    };
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        let mut b = DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        b.mode(0o700);
        b.create(parent)
            .map_err(|e| io("cannot create the directory of", e))?;
    }
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    o.mode(0o600);
    match o.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(meta) = std::fs::metadata(path) {
                    if meta.permissions().mode() & 0o077 != 0 {
                        tracing::warn!(path = %path.display(), "the store's database file is readable by other users; chmod 600 it");
                    }
                }
            }
            Ok(())
        }
        Err(e) => Err(io("cannot create", e)),
    }
}

/// Opens a connection to an existing file (no URI parsing, no create).
fn connect(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_millis(u64::from(BUSY_TIMEOUT_MS)))?;
    conn.execute_batch("PRAGMA trusted_schema = OFF;")?;
    Ok(conn)
}

/// Switches the file to WAL, returning the journal mode SQLite reports. On a new file that
/// other processes (or handles) are opening at the same moment, the switch can answer
/// `SQLITE_BUSY` at once, without waiting in the busy handler (SQLite does that rather than
/// risk a deadlock between two connections upgrading their locks), so it is retried within the
/// busy timeout.
fn enable_wal(conn: &Connection) -> Result<String> {
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(u64::from(BUSY_TIMEOUT_MS));
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return Ok(other?),
        }
    }
}

/// Applies missing migrations in one immediate transaction.
fn migrate(conn: &mut Connection, list: &[Migration]) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (\
            version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_ms INTEGER NOT NULL)",
    )?;
    let found: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    let supported = migrations::latest(list);
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for m in list.iter().filter(|m| m.version > found) {
        tx.execute_batch(m.sql).map_err(|e| {
            StoreError::Backend(format!(
                "sqlite: migration {} ({}) failed: {e}",
                m.version, m.name
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_version (version, name, applied_ms) VALUES (?1, ?2, ?3)",
            params![m.version, m.name, now_ms()],
        )?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "store: applied SQLite migration"
        );
    }
    tx.commit()?;
    Ok(())
}

fn apply_ops(c: &Connection, ops: Vec<RawOp>) -> Result<Vec<bool>> {
    let mut changed = Vec::with_capacity(ops.len());
    for op in ops {
        changed.push(match op {
            RawOp::Put { key, sealed } => {
                let mut st = c.prepare_cached(
                    "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?;
                st.execute(params![key, sealed])?;
                true
            }
            RawOp::PutIfAbsent { key, sealed } => {
                let mut st =
                    c.prepare_cached("INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING")?;
                if st.execute(params![key, sealed])? == 0 {
                    return Err(StoreError::Conflict);
                }
                true
            }
            RawOp::Delete { key } => {
                let mut st = c.prepare_cached("DELETE FROM kv WHERE key = ?1")?;
                st.execute([key])? > 0
            }
        });
    }
    Ok(changed)
}

fn append_audit(c: &Connection, event: &AuditEvent) -> Result<u64> {
    let (last, prev_hash): (i64, String) = c
        .prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let seq = last + 1;
    let time = now_ms();
    let hash = record_hash(&prev_hash, seq_from_db(seq)?, time, event)?;
    c.prepare_cached(
        "INSERT INTO audit_log (seq, time_ms, component, action, actor, subject, outcome, detail, source, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        seq,
        time,
        event.component,
        event.action,
        event.actor,
        event.subject,
        event.outcome,
        canonical_detail(&event.detail),
        event.source,
        prev_hash,
        hash
    ])?;
    c.prepare_cached("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1")?
        .execute(params![seq, hash])?;
    seq_from_db(seq)
}

/// See `Backend::audit_prune`. Runs in the writer's transaction, so appends wait for it;
/// callers keep each prune to a few thousand records.
fn prune_audit(c: &Connection, expected_prev: u64, cp: &AuditCheckpoint) -> Result<u64> {
    let current: i64 = c.query_row(
        "SELECT COALESCE((SELECT seq FROM audit_checkpoint WHERE id = 1), 0)",
        [],
        |r| r.get(0),
    )?;
    if seq_from_db(current)? != expected_prev {
        return Err(StoreError::Conflict);
    }
    let seq = i64::try_from(cp.seq)
        .map_err(|_| StoreError::Corrupt(format!("audit seq {} out of range", cp.seq)))?;
    let hash: Option<String> = c
        .query_row("SELECT hash FROM audit_log WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })
        .optional()?;
    if hash.as_deref() != Some(cp.hash.as_str()) {
        return Err(StoreError::Corrupt(format!(
            "audit record {} changed while it was being pruned",
            cp.seq
        )));
    }
    c.prepare_cached(
        "INSERT INTO audit_checkpoint (id, seq, hash, time_ms, pruned_ms, mac) \
         VALUES (1, ?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, \
         hash = excluded.hash, time_ms = excluded.time_ms, pruned_ms = excluded.pruned_ms, \
         mac = excluded.mac",
    )?
    .execute(params![seq, cp.hash, cp.time, cp.pruned_at, cp.mac])?;
    let deleted = c
        .prepare_cached("DELETE FROM audit_log WHERE seq <= ?1")?
        .execute([seq])?;
    Ok(deleted as u64)
}

/// Starts the checkpointer: a thread with its own connection that runs a `PASSIVE` checkpoint
/// every [`CHECKPOINT_EVERY`], so copying the WAL into the database file (and, with
/// `synchronous = FULL`, fsyncing that file) happens beside the writer's commits instead of
/// inside one of them, where it would stall every write and audit append queued behind it.
/// Durability is unchanged: a commit is durable once its WAL frames are fsynced, before the
/// writer answers; a checkpoint only moves frames that are already durable, and a crash in
/// the middle of one is recovered from the WAL. It stops when the returned sender is dropped.
fn start_checkpointer(path: PathBuf) -> Result<std::sync::mpsc::Sender<()>> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("warden-store-ckpt".into())
        .spawn(move || {
            let conn = match connect(&path) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "store: no checkpointer; the writer checkpoints");
                    return;
                }
            };
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(CHECKPOINT_EVERY)
            {
                if let Err(e) =
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
                {
                    tracing::warn!(error = %e, "store: WAL checkpoint failed");
                }
            }
        })
        .map_err(|e| {
            StoreError::Backend(format!("sqlite: cannot start the checkpointer thread: {e}"))
        })?;
    Ok(tx)
}

/// The writer thread: drains the queue in batches, one transaction (and one fsync) per batch.
fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Job>) {
    // `open` left the connection at `synchronous = FULL`.
    let mut synced = true;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A batch of logged appends only (reads' audit events) commits without an fsync of
        // the WAL (`NORMAL`); any other job in it makes the whole batch synced (`FULL`). In WAL
        // mode the setting only decides whether a commit fsyncs: the next synced commit, or the
        // checkpointer, syncs whatever came before it.
        let want = batch.iter().any(|j| j.durability == Durability::Synced);
        if want != synced {
            let pragma = if want {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            if let Err(e) = conn.execute_batch(pragma) {
                fail_all(
                    batch.into_iter().map(|j| j.reply),
                    &format!("sqlite: cannot set the commit mode: {e}"),
                );
                continue;
            }
            synced = want;
        }
        run_batch(&conn, batch);
    }
    // Every `Store` clone is gone: the connection closes here, checkpointing the WAL.
}

fn run_batch(conn: &Connection, batch: Vec<Job>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        fail_all(
            batch.into_iter().map(|j| j.reply),
            &StoreError::from(e).to_string(),
        );
        return;
    }
    let mut done = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    for job in jobs.by_ref() {
        match run_in_savepoint(conn, job.work) {
            Ok(out) => done.push((job.reply, out)),
            Err(e) => {
                // The savepoint machinery itself failed: the transaction's state is unknown,
                // so none of the batch may commit.
                let _ = conn.execute_batch("ROLLBACK");
                let msg = format!("sqlite: write batch aborted: {e}");
                let replies = done
                    .into_iter()
                    .map(|(r, _)| r)
                    .chain(std::iter::once(job.reply));
                fail_all(replies.chain(jobs.map(|j| j.reply)), &msg);
                return;
            }
        }
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        fail_all(
            done.into_iter().map(|(r, _)| r),
            &format!("sqlite: commit failed: {e}"),
        );
        return;
    }
    for (reply, out) in done {
        // The caller may have gone (cancelled); its write is committed all the same.
        let _ = reply.send(out);
    }
}

fn fail_all(replies: impl Iterator<Item = oneshot::Sender<Result<Output>>>, msg: &str) {
    tracing::error!(error = %msg, "store: a write batch was not committed");
    for reply in replies {
        let _ = reply.send(Err(StoreError::Backend(msg.to_owned())));
    }
}

/// Runs one job in its own savepoint. The outer error is the savepoint itself failing; the
/// inner one is the job's own (its changes rolled back, the rest of the batch unaffected).
fn run_in_savepoint(conn: &Connection, work: Work) -> rusqlite::Result<Result<Output>> {
    conn.execute_batch("SAVEPOINT job")?;
    // A panicking job must not take the writer thread (and every later write) down with it.
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
        .unwrap_or_else(|_| Err(StoreError::Backend("sqlite: a write job panicked".into())));
    if out.is_err() {
        conn.execute_batch("ROLLBACK TO job")?;
    }
    conn.execute_batch("RELEASE job")?;
    Ok(out)
}

fn closed() -> StoreError {
    StoreError::Backend("sqlite: the store is closed".into())
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Backend(format!("sqlite: a blocking task failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writer_uses_wal_with_full_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let b = SqliteBackend::open(path.to_str().unwrap()).await.unwrap();
        let (mode, sync): (String, i64) = b
            .write_job(|c| {
                let mode = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                let sync = c.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
                Ok((mode, sync))
            })
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous = FULL");
    }

    /// A logged append commits without the WAL fsync, and the next synced job is synced again:
    /// the commit mode asked for by the batch, never left over from the one before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn logged_appends_commit_unsynced_and_synced_jobs_stay_synced() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(dir.path().join("l.db").to_str().unwrap())
            .await
            .unwrap();
        let event = || AuditEvent {
            component: "vault".into(),
            action: "vault.read".into(),
            actor: "a".into(),
            subject: Some("secret/data/x".into()),
            outcome: "success".into(),
            detail: serde_json::json!({ "status": 200 }),
            source: None,
        };
        let mode = |d: Durability| {
            b.queue_job(d, |c| {
                Ok(c.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))?)
            })
        };
        assert_eq!(
            b.audit_append(event(), Durability::Logged).await.unwrap(),
            1
        );
        assert_eq!(mode(Durability::Logged).await.unwrap(), 1, "NORMAL");
        assert_eq!(mode(Durability::Synced).await.unwrap(), 2, "FULL again");
        assert_eq!(
            b.audit_append(event(), Durability::Synced).await.unwrap(),
            2
        );
        // Many at once, mixed: every one appended, in one chain.
        let jobs = (0..40).map(|i| {
            let d = if i % 7 == 0 {
                Durability::Synced
            } else {
                Durability::Logged
            };
            b.audit_append(event(), d)
        });
        let mut seqs: Vec<u64> = futures_util::future::join_all(jobs)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (3..43).collect::<Vec<_>>());
        assert_eq!(b.audit_head().await.unwrap().0, 42);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpointer_moves_committed_frames_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let b = SqliteBackend::open(path.to_str().unwrap()).await.unwrap();
        let autocheckpoint: i64 = b
            .write_job(|c| Ok(c.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(autocheckpoint, i64::from(WRITER_AUTOCHECKPOINT_PAGES));
        let before = std::fs::metadata(&path).unwrap().len();
        for i in 0..50 {
            let ops = (0..10)
                .map(|j| RawOp::Put {
                    key: format!("k/{i}/{j}"),
                    sealed: vec![7; 2000],
                })
                .collect();
            b.write(ops).await.unwrap();
        }
        // ~1 MB committed to the WAL, far below the writer's own threshold: only the
        // checkpointer can have copied it into the database file.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() < before + 900_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file did not grow: no checkpoint ran"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_job_does_not_undo_its_batch_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(dir.path().join("b.db").to_str().unwrap())
            .await
            .unwrap();
        let put = |k: &str| RawOp::Put {
            key: k.into(),
            sealed: vec![1],
        };
        let jobs = (0..50).map(|i| {
            let ops = if i % 5 == 0 {
                // Writes, then fails: its own write must roll back.
                vec![
                    put(&format!("bad/{i}")),
                    RawOp::PutIfAbsent {
                        key: "shared".into(),
                        sealed: vec![2],
                    },
                ]
            } else {
                vec![put(&format!("good/{i}"))]
            };
            b.write(ops)
        });
        b.write(vec![put("shared")]).await.unwrap();
        // Polled together, so the writer sees them as one queue.
        let results = futures_util::future::join_all(jobs).await;
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(r.is_ok(), i % 5 != 0, "job {i}: {r:?}");
        }
        let keys = |p: &str| {
            b.list_keys(ListQuery {
                prefix: p.into(),
                start_after: None,
                limit: None,
            })
        };
        assert!(keys("bad/").await.unwrap().is_empty());
        assert_eq!(keys("good/").await.unwrap().len(), 40);
    }
}
