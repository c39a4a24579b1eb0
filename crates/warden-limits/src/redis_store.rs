//! The shared rate-limit store on Redis: one multiplexed connection per store, GCRA in one
//! atomic server-side script, and the failure handling that keeps a request from ever waiting
//! on Redis longer than the store's timeout.
//!
//! # The script
//!
//! [`SCRIPT`] is the same GCRA as [`crate::gcra`], on Redis' clock: it reads `TIME` (so every
//! gateway shares one clock and gateway clock skew cannot matter), the key's TAT, grants as
//! many of the `want` tokens as fit under the tolerance (1 without leasing; up to the lease
//! size with it), stores the new TAT with `PX` set to when the bucket is full again (the key
//! then means nothing and may go), and returns `{granted, remaining, retry_after_µs,
//! reset_µs}`. Time is whole microseconds: a Redis-backed limit's emission interval is at least
//! 1 µs (at most 1,000,000 requests per second per key), which the compiler checks. It runs as
//! `EVALSHA`, falling back to `EVAL` on `NOSCRIPT` (after a Redis restart or `SCRIPT FLUSH`).
//! The client is [`crate::resp`]: one pipelined connection per store.
//!
//! # Failure handling
//!
//! Every call is bounded by the store's timeout (`tokio::time::timeout_at`), including the wait
//! for a first connection. The connection state is `Connecting` (at start: a request waits for
//! it, within its timeout), `Up`, or `Down`. A connection error (refused, reset, closed) or
//! three timeouts in a row mark it `Down`; while `Down`, requests fail at once without touching
//! the network, and a background task reconnects with back-off (50 ms doubling to 1 s), so a
//! returning Redis is used again within about a second. The store reports each change of
//! health once through its hook (the proxy logs a warning when an incident starts and an info
//! line when it ends, and keeps a gauge), never once per request.
//!
//! A call that timed out may still run when Redis gets to it (a hung Redis runs its backlog
//! when it wakes): such a request was decided by `on_store_failure` yet counted in Redis, so
//! after a stall the limit errs towards admitting less, never more.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::resp::{self, Closed, Connection, Endpoint, Value};

/// GCRA for one key; see the module doc. `KEYS[1]`: the key; `ARGV`: emission interval (µs),
/// tolerance (µs, burst × interval), tokens wanted.
pub const SCRIPT: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local fits = math.floor((tolerance - (tat - now)) / emission)
if fits < 1 then
  return {0, 0, tat + emission - now - tolerance, tat - now}
end
local n = math.min(fits, want)
local new_tat = tat + n * emission
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {n, math.floor((tolerance - (new_tat - now)) / emission), 0, new_tat - now}
"#;

/// Timeouts in a row that mark the connection down.
const TIMEOUTS_TO_DOWN: u32 = 3;
/// Back-off between reconnection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A background connection attempt (never on a request's path) may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often an idle connection is checked with `PING`, so the health gauge stays true.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// How to reach Redis.
#[derive(Clone)]
pub struct StoreConfig {
    /// `redis://host:port/db`. TLS (`rediss://`) is not supported yet.
    pub url: String,
    /// The password (`AUTH`), when Redis wants one.
    pub password: Option<String>,
    /// The most a rate-limit decision may wait for Redis.
    pub timeout: Duration,
    /// Prefix of every key written.
    pub key_prefix: String,
    /// Gateways sharing the store's limits: while Redis cannot answer, each limits alone at
    /// `1 / gateways` of each limit.
    pub gateways: u32,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "**REDACTED**"))
            .field("timeout", &self.timeout)
            .field("key_prefix", &self.key_prefix)
            .field("gateways", &self.gateways)
            .finish()
    }
}

/// A change in the store's health, reported once per change.
#[derive(Debug, Clone, Copy)]
pub enum StoreHealth<'a> {
    /// Redis answers (first connection, or recovery).
    Up,
    /// Redis does not answer; why (no key or credential is ever in it).
    Down(&'a str),
}

/// Called on each change of health; must not block.
pub type HealthHook = Box<dyn Fn(StoreHealth<'_>) + Send + Sync>;

/// Why a decision could not be had from Redis. The limit's `on_store_failure` decides what
/// the request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The connection is down (or not yet up): failed at once.
    Down,
    /// Redis did not answer within the timeout.
    Timeout,
    /// Redis answered with an error.
    Failed,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreError::Down => "rate-limit store unavailable",
            StoreError::Timeout => "rate-limit store timed out",
            StoreError::Failed => "rate-limit store answered with an error",
        })
    }
}

impl std::error::Error for StoreError {}

/// What the script answered, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Tokens granted (0: limited).
    pub granted: u64,
    /// Tokens left in the bucket after the grant.
    pub remaining: u64,
    /// When limited: time until one token fits.
    pub retry_after_us: u64,
    /// Time until the bucket is full again.
    pub reset_us: u64,
}

#[derive(Clone)]
enum Conn {
    Connecting,
    /// The connection and its generation (so a failure seen on an old connection cannot
    /// take down a newer one).
    Up(u64, Connection),
    Down,
}

const HEALTH_UNKNOWN: u8 = 0;
const HEALTH_UP: u8 = 1;
const HEALTH_DOWN: u8 = 2;

struct Shared {
    /// With the password, if any.
    endpoint: Endpoint,
    timeout: Duration,
    key_prefix: String,
    gateways: u32,
    /// The script's SHA-1, hex, for `EVALSHA`.
    script_sha: String,
    conn: watch::Sender<Conn>,
    generation: AtomicU64,
    timeouts_in_a_row: AtomicU32,
    health: AtomicU8,
    on_health: HealthHook,
    /// Wakes the connector: the connection broke, or the store is gone.
    kick: Arc<Notify>,
    started: AtomicBool,
    /// A digest of everything that makes this store (password included), to reuse it across
    /// reloads only when nothing changed.
    fingerprint: [u8; 32],
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The connector holds only a weak reference; wake it so it sees the store is gone.
        self.kick.notify_one();
    }
}

/// A shared Redis store: one per config snapshot (carried over reloads that leave
/// `[rate_limit_store]` unchanged), used by every Redis-backed limit.
pub struct RedisStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("timeout", &self.shared.timeout)
            .field("key_prefix", &self.shared.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `config`. Nothing connects until [`RedisStore::start`] or the first
    /// request, so building one (as `warden check` does) needs no Redis.
    pub fn new(config: &StoreConfig, on_health: HealthHook) -> Result<Self, String> {
        // `warden-config` has refused a bad URL with its path already; this is the backstop.
        let endpoint = resp::Endpoint::parse(&config.url)
            .map_err(|e| e.to_string())?
            .with_password(config.password.clone());
        let (conn, _) = watch::channel(Conn::Connecting);
        Ok(Self {
            shared: Arc::new(Shared {
                endpoint,
                timeout: config.timeout,
                key_prefix: config.key_prefix.clone(),
                gateways: config.gateways.max(1),
                script_sha: hex(ring::digest::digest(
                    &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                    SCRIPT.as_bytes(),
                )
                .as_ref()),
                conn,
                generation: AtomicU64::new(0),
                timeouts_in_a_row: AtomicU32::new(0),
                health: AtomicU8::new(HEALTH_UNKNOWN),
                on_health,
                kick: Arc::new(Notify::new()),
                started: AtomicBool::new(false),
                fingerprint: fingerprint(config),
            }),
        })
    }

    /// True when this store was built from exactly `config` (so a reload may keep it).
    pub fn is_for(&self, config: &StoreConfig) -> bool {
        self.shared.fingerprint == fingerprint(config)
    }

    /// The prefix of every key.
    pub fn key_prefix(&self) -> &str {
        &self.shared.key_prefix
    }

    /// The most a decision waits for Redis.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// Gateways sharing the store's limits (at least 1).
    pub fn gateways(&self) -> u32 {
        self.shared.gateways
    }

    /// Starts connecting in the background (idempotent). Needs a tokio runtime; without one
    /// it does nothing and the first request starts it.
    pub fn start(&self) {
        if self.shared.started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.shared.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.shared);
        let kick = self.shared.kick.clone();
        rt.spawn(connector(weak, kick));
    }

    /// True while the connection is up.
    pub fn is_up(&self) -> bool {
        matches!(*self.shared.conn.borrow(), Conn::Up(..))
    }

    /// Runs the GCRA script on `key` (the full Redis key), asking for up to `want` tokens,
    /// within the store's timeout.
    pub async fn gcra(
        &self,
        key: &str,
        emission_us: u64,
        tolerance_us: u64,
        want: u32,
    ) -> Result<Grant, StoreError> {
        self.start();
        let s = &self.shared;
        let deadline = Instant::now() + s.timeout;
        let current = s.conn.borrow().clone();
        let (generation, conn) = match current {
            Conn::Up(g, c) => (g, c),
            Conn::Down => return Err(StoreError::Down),
            Conn::Connecting => {
                let mut rx = s.conn.subscribe();
                let ready = match tokio::time::timeout_at(
                    deadline,
                    rx.wait_for(|c| !matches!(c, Conn::Connecting)),
                )
                .await
                {
                    Ok(Ok(state)) => state.clone(),
                    _ => return Err(StoreError::Down),
                };
                match ready {
                    Conn::Up(g, c) => (g, c),
                    _ => return Err(StoreError::Down),
                }
            }
        };
        let (emission, tolerance, want) = (
            emission_us.to_string(),
            tolerance_us.to_string(),
            want.to_string(),
        );
        let call = async {
            let mut cmd: [&[u8]; 7] = [
                b"EVALSHA",
                s.script_sha.as_bytes(),
                b"1",
                key.as_bytes(),
                emission.as_bytes(),
                tolerance.as_bytes(),
                want.as_bytes(),
            ];
            match conn.call(&cmd).await? {
                Value::Error(e) if e.starts_with("NOSCRIPT") => {
                    cmd[0] = b"EVAL";
                    cmd[1] = SCRIPT.as_bytes();
                    conn.call(&cmd).await
                }
                v => Ok(v),
            }
        };
        let answer = tokio::time::timeout_at(deadline, call).await;
        match answer {
            Ok(Ok(Value::Array(v))) if v.len() == 4 => {
                s.timeouts_in_a_row.store(0, Ordering::Relaxed);
                s.report(StoreHealth::Up);
                let u = |v: &Value| match v {
                    Value::Int(i) => u64::try_from(*i).unwrap_or(0),
                    _ => 0,
                };
                Ok(Grant {
                    granted: u(&v[0]),
                    remaining: u(&v[1]),
                    retry_after_us: u(&v[2]),
                    reset_us: u(&v[3]),
                })
            }
            Ok(Ok(_)) => {
                // An error reply (or a shape the script never returns): the connection is
                // fine, this decision is not.
                s.report(StoreHealth::Down("error reply"));
                Err(StoreError::Failed)
            }
            Ok(Err(Closed)) => {
                s.report(StoreHealth::Down("connection closed"));
                s.mark_down(generation);
                Err(StoreError::Down)
            }
            Err(_) => {
                s.report(StoreHealth::Down("timed out"));
                if s.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= TIMEOUTS_TO_DOWN {
                    s.mark_down(generation);
                }
                Err(StoreError::Timeout)
            }
        }
    }
}

impl Shared {
    /// Reports a change of health, once per change.
    fn report(&self, h: StoreHealth<'_>) {
        let v = match h {
            StoreHealth::Up => HEALTH_UP,
            StoreHealth::Down(_) => HEALTH_DOWN,
        };
        if self.health.load(Ordering::Relaxed) != v && self.health.swap(v, Ordering::AcqRel) != v {
            (self.on_health)(h);
        }
    }

    /// Marks connection `generation` down (if it is still the current one) and wakes the
    /// connector.
    fn mark_down(&self, generation: u64) {
        let changed = self.conn.send_if_modified(|c| match c {
            Conn::Up(g, _) if *g == generation => {
                *c = Conn::Down;
                true
            }
            _ => false,
        });
        if changed {
            self.kick.notify_one();
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// Keeps the store connected: connects, and after a failure reconnects with back-off. Holds
/// only a weak reference, so it ends when the store is dropped.
async fn connector(weak: Weak<Shared>, kick: Arc<Notify>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let Some(s) = weak.upgrade() else { return };
        match connect(&s).await {
            Ok(conn) => {
                backoff = MIN_BACKOFF;
                let generation = s.generation.fetch_add(1, Ordering::Relaxed) + 1;
                s.timeouts_in_a_row.store(0, Ordering::Relaxed);
                s.conn.send_replace(Conn::Up(generation, conn));
                s.report(StoreHealth::Up);
                drop(s);
                watch_health(&weak, &kick).await;
            }
            Err(why) => {
                s.conn.send_replace(Conn::Down);
                s.report(StoreHealth::Down(why));
                drop(s);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Waits while the connection is up: until a request marks it down, a periodic `PING` fails,
/// or the store is dropped.
async fn watch_health(weak: &Weak<Shared>, kick: &Notify) {
    loop {
        let kicked = tokio::time::timeout(HEALTH_INTERVAL, kick.notified()).await;
        let Some(s) = weak.upgrade() else { return };
        let current = s.conn.borrow().clone();
        let Conn::Up(generation, conn) = current else {
            return;
        };
        if kicked.is_ok() {
            // Woken, yet still up: a spurious wake-up (an old connection's failure).
            continue;
        }
        let ping = tokio::time::timeout(CONNECT_TIMEOUT, conn.call(&[b"PING"])).await;
        if !matches!(ping, Ok(Ok(Value::Simple(_)))) {
            s.report(StoreHealth::Down("health check failed"));
            s.mark_down(generation);
            return;
        }
    }
}

/// One connection attempt, with the script loaded so the first `EVALSHA` finds it.
async fn connect(s: &Shared) -> Result<Connection, &'static str> {
    let attempt = async {
        let conn = Connection::connect(&s.endpoint).await?;
        match conn.call(&[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()]).await {
            Ok(Value::Bulk(sha)) if sha == s.script_sha.as_bytes() => Ok(conn),
            Ok(_) => Err("cannot load the rate-limit script"),
            Err(Closed) => Err("connection closed"),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or(Err("connect timed out"))
}

fn fingerprint(c: &StoreConfig) -> [u8; 32] {
    let mut d = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        c.url.as_bytes(),
        c.password.as_deref().unwrap_or("\0none").as_bytes(),
        c.key_prefix.as_bytes(),
        &c.timeout.as_nanos().to_le_bytes(),
        &c.gateways.to_le_bytes(),
    ] {
        d.update(&(part.len() as u64).to_le_bytes());
        d.update(part);
    }
    let mut out = [0; 32];
    out.copy_from_slice(d.finish().as_ref());
    out
}
