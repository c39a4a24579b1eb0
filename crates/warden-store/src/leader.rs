//! Active/standby between authorities sharing one PostgreSQL store.
//!
//! One authority is *active*: it holds a session-level advisory lock
//! (`pg_try_advisory_lock`) on a connection of its own, outside the pool, and writes its
//! address to the `ha_leader` row. The others are *standbys*: they try the lock every second
//! and read the row to send clients to the active one.
//!
//! The lock dies with its session, so it is lost within seconds of the active's death:
//! - the process dies (`kill -9`, a crash): the kernel closes its socket, PostgreSQL ends the
//!   session and releases the lock at once;
//! - the host or the network dies: the session's server-side TCP keepalives
//!   (`tcp_keepalives_idle = 5`, `interval = 2`, `count = 3`, set on the lock's session) end
//!   it after about 11 s of silence.
//!
//! The holder checks its session every second ([`LeaderLock::check`], `SELECT 1` within
//! 3 s) and steps down when the check fails, so a partitioned active stops serving (after at
//! most ~4 s) before PostgreSQL hands the lock to another (after ~11 s): there is no window
//! with two actives that both believe it.
//!
//! SQLite has no such lock: a SQLite store belongs to one authority, and
//! [`Store::try_lead`](crate::Store::try_lead) refuses it.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, NoTls};

use crate::error::{Result, StoreError};

/// The first advisory-lock key of the active role ("WARD"); the second is a hash of the
/// store's schema, so deployments in different schemas of one database do not compete.
const LEADER_LOCK: i32 = 0x5741_5244;
/// How long a liveness check of the lock's session may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// The application name of the lock's session (in `pg_stat_activity`).
pub const LEADER_APPLICATION_NAME: &str = "warden-leader";

/// Who the active authority is, as it recorded itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The address clients use to reach it (`authority.ha.api_addr`).
    pub address: String,
    /// A random id of the holding process (so an authority can tell itself from another with
    /// the same address after a restart).
    pub holder: String,
    /// When it became active (Unix milliseconds).
    pub since_ms: i64,
}

/// The active role, held: dropping it ends the lock's session, which releases the lock.
pub struct LeaderLock {
    client: Client,
    conn: JoinHandle<()>,
    pid: i32,
}

impl std::fmt::Debug for LeaderLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderLock").finish_non_exhaustive()
    }
}

impl LeaderLock {
    /// The PostgreSQL backend process of the lock's session (`pg_stat_activity.pid`): ending
    /// it (`pg_terminate_backend`) takes the active role away from this authority.
    pub fn session_pid(&self) -> i32 {
        self.pid
    }

    /// Whether the lock's session is still alive (and so the lock still held).
    pub async fn check(&self) -> bool {
        if self.client.is_closed() || self.conn.is_finished() {
            return false;
        }
        matches!(
            tokio::time::timeout(CHECK_TIMEOUT, self.client.simple_query("SELECT 1")).await,
            Ok(Ok(_))
        )
    }
}

impl Drop for LeaderLock {
    fn drop(&mut self) {
        // Ends the session: PostgreSQL releases the lock.
        self.conn.abort();
    }
}

/// Tries to take the lock on a session of its own; on success records `address` and
/// `holder` as the active authority.
pub(crate) async fn try_lead(
    cfg: &Config,
    address: &str,
    holder: &str,
) -> Result<Option<LeaderLock>> {
    let mut cfg = cfg.clone();
    cfg.application_name(LEADER_APPLICATION_NAME);
    // Client side: notice a dead server.
    cfg.keepalives(true);
    cfg.keepalives_idle(Duration::from_secs(5));
    cfg.keepalives_interval(Duration::from_secs(2));
    cfg.keepalives_retries(3);
    let (client, connection) = cfg.connect(NoTls).await?;
    let conn = tokio::spawn(async move {
        // Ends when the session does (or when the lock is dropped and this task aborted).
        let _ = connection.await;
    });
    let mut lock = LeaderLock {
        client,
        conn,
        pid: 0,
    };
    // Server side: end this session (and free the lock) when this process goes silent.
    lock.client
        .batch_execute(
            "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
             SET tcp_keepalives_count = 3",
        )
        .await?;
    let row = lock
        .client
        .query_one(
            "SELECT pg_try_advisory_lock($1, hashtext(current_schema())), pg_backend_pid()",
            &[&LEADER_LOCK],
        )
        .await?;
    if !row.get::<_, bool>(0) {
        return Ok(None);
    }
    lock.pid = row.get(1);
    lock.client
        .execute(
            "INSERT INTO ha_leader (id, address, holder, since_ms) VALUES (1, $1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, \
             holder = EXCLUDED.holder, since_ms = EXCLUDED.since_ms",
            &[&address, &holder, &crate::backend::now_ms()],
        )
        .await?;
    Ok(Some(lock))
}

/// The recorded active authority, if any.
pub(crate) async fn leader(client: &Client) -> Result<Option<LeaderInfo>> {
    let row = client
        .query_opt(
            "SELECT address, holder, since_ms FROM ha_leader WHERE id = 1",
            &[],
        )
        .await?;
    Ok(row.map(|r| LeaderInfo {
        address: r.get(0),
        holder: r.get(1),
        since_ms: r.get(2),
    }))
}

pub(crate) fn sqlite_refused() -> StoreError {
    StoreError::InvalidLocation(
        "active/standby needs a PostgreSQL store (a SQLite store belongs to one authority)".into(),
    )
}
