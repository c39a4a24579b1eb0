//! Revocations reach the gateway two ways, and both evict from the verified-token cache, which
//! then refuses the token until it expires:
//!
//! - The feed, polled: the record. `GET <feed_url>?after=<seq>` with
//!   `Authorization: Bearer <feed_token>` answers
//!   `{"revocations": [{"jti": "...", "exp": 1700000000, "seq": 7}], "next": 7}`. The first
//!   poll asks from 0 and so learns every revocation whose token has not yet expired; later
//!   polls ask only for what is newer than the last `next`.
//! - Redis pub/sub (`redis_url`), pushed by the token service as each revocation happens: the
//!   same entries, applied within a round trip instead of a poll interval. Messages sent while
//!   the subscriber is disconnected are lost, so on every re-subscription the feed is polled at
//!   once rather than at its next interval. Each message is signed by the token service and
//!   checked with the keys of the issuer named by `signed_by` ([`message`]): whoever can
//!   publish to the channel cannot revoke tokens. Dropped messages are counted through a
//!   [`DropHook`] and logged at most once a minute.
//!
//! Both run as tasks that hold the cache weakly and end with the [`Poller`].

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION};
use http::{HeaderValue, Request};
use http_body_util::Full;
use serde::Deserialize;
use tokio::sync::Notify;
use warden_config::RevocationConfig;

use crate::cache::TokenCache;
use crate::http_client::HttpClient;
use crate::jwt::Issuer;

pub mod message;
pub mod pubsub;

pub use message::Dropped;

/// Called for each message dropped from the revocation channel (the proxy counts them by
/// reason); must not block.
pub type DropHook = Arc<dyn Fn(Dropped) + Send + Sync>;

/// At most one warning about dropped messages per this long.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Time allowed to connect to Redis and subscribe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A subscription quiet this long is asked for a `PING`; quiet twice running, it is dead.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Reconnection back-off: from the first, doubling up to the last, with jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Stops the feed poller and the Redis subscriber when dropped.
pub struct Poller {
    tasks: Vec<tokio::task::AbortHandle>,
    /// The issuer whose keys sign channel messages; replaced when a reload rebuilds it (keys
    /// from files are read again) while the subscription carries on.
    signer: Option<Arc<ArcSwap<Issuer>>>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

impl Poller {
    /// Checks channel messages with `issuer` from now on.
    pub fn set_signer(&self, issuer: Arc<Issuer>) {
        if let Some(s) = &self.signer {
            s.store(issuer);
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Deserialize)]
struct Feed {
    revocations: Vec<Entry>,
    next: u64,
}

#[derive(Deserialize)]
struct Entry {
    jti: String,
    exp: i64,
}

const MAX_FEED_BYTES: usize = 8 * 1024 * 1024;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// SHA-256 over the secrets the revocation client would use (feed token, Redis password),
/// read through `secrets`: equal fingerprints let a reload keep the running poller.
pub(crate) fn secrets_fingerprint(
    cfg: &RevocationConfig,
    secrets: &dyn warden_config::SecretResolver,
) -> Result<[u8; 32], String> {
    let mut all = zeroize::Zeroizing::new(Vec::new());
    for (name, r) in [
        ("feed_token", &cfg.feed_token),
        ("redis_password", &cfg.redis_password),
    ] {
        if let Some(r) = r {
            let v = secrets.resolve(r).map_err(|e| format!("{name}: {e}"))?;
            all.extend_from_slice(&(v.len() as u64).to_be_bytes());
            all.extend_from_slice(&v);
        } else {
            all.extend_from_slice(&u64::MAX.to_be_bytes());
        }
    }
    Ok(warden_crypto::jws::sha256(&all))
}

/// Starts polling the feed and, with `redis_url`, the Redis subscriber, into `cache`; `None`
/// with neither, or outside a runtime. `signer` is the issuer `signed_by` names (required
/// with `redis_url`); `on_drop` counts the channel's dropped messages.
pub fn spawn(
    cfg: &RevocationConfig,
    cache: &Arc<TokenCache>,
    signer: Option<Arc<Issuer>>,
    on_drop: DropHook,
    on_event: crate::events::EventHook,
    secrets: &dyn warden_config::SecretResolver,
) -> Result<Option<Poller>, String> {
    let redis = match &cfg.redis_url {
        Some(u) => {
            let Some(signer) = signer else {
                return Err(
                    "signed_by: required with redis_url (unsigned messages are refused)".into(),
                );
            };
            let password = match &cfg.redis_password {
                Some(p) => Some(
                    secrets
                        .resolve_line(p)
                        .map_err(|e| format!("redis_password: {e}"))?
                        .to_string(),
                ),
                None => None,
            };
            let ep = pubsub::Endpoint::parse(u)
                .map_err(|e| format!("redis_url: {e}"))?
                .with_password(password);
            Some((ep, Arc::new(ArcSwap::new(signer))))
        }
        None => None,
    };
    let feed = match cfg.feed_url.clone() {
        Some(url) => Some((
            url,
            HttpClient::new(cfg.ca.as_deref(), Duration::from_secs(2))?,
        )),
        None => None,
    };
    if feed.is_none() && redis.is_none() {
        return Ok(None);
    }
    let auth = match &cfg.feed_token {
        Some(t) => {
            let v = secrets.resolve(t).map_err(|e| format!("feed_token: {e}"))?;
            let token = String::from_utf8_lossy(&v).trim().to_owned();
            let mut h = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "feed_token is not a valid header value".to_string())?;
            h.set_sensitive(true);
            Some(h)
        }
        None => None,
    };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return Ok(None);
    };
    let resync = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    let signer = redis.as_ref().map(|(_, s)| s.clone());
    if let Some((url, client)) = feed {
        let weak = Arc::downgrade(cache);
        let poll = run(
            url,
            auth,
            client,
            cfg.poll_interval.0,
            weak,
            resync.clone(),
            on_event,
        );
        tasks.push(rt.spawn(poll).abort_handle());
    }
    if let Some((ep, signer)) = redis {
        let check = Check {
            signer,
            max_age: i64::try_from(cfg.max_message_age.0.as_secs()).unwrap_or(i64::MAX),
            on_drop,
            log: DropLog::default(),
        };
        let weak = Arc::downgrade(cache);
        let listen = subscriber(ep, cfg.redis_channel.clone(), weak, resync, check);
        tasks.push(rt.spawn(listen).abort_handle());
    }
    Ok(Some(Poller { tasks, signer }))
}

/// How the subscriber checks messages, and what it does with those it drops.
struct Check {
    signer: Arc<ArcSwap<Issuer>>,
    max_age: i64,
    on_drop: DropHook,
    log: DropLog,
}

impl Check {
    async fn verify(&mut self, payload: &[u8]) -> Option<message::Revocation> {
        let issuer = self.signer.load_full();
        match message::verify(payload, &issuer, now(), self.max_age).await {
            Ok(r) => Some(r),
            Err(why) => {
                (self.on_drop)(why);
                self.log.dropped(why, &issuer.name);
                None
            }
        }
    }
}

/// Warns about dropped messages at most once per [`DROP_LOG_INTERVAL`] (a flood of forged
/// messages must not flood the log), saying how many were dropped since the last warning.
#[derive(Default)]
struct DropLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl DropLog {
    fn dropped(&mut self, why: Dropped, signer: &str) {
        self.unlogged += 1;
        if self.last.is_some_and(|t| t.elapsed() < DROP_LOG_INTERVAL) {
            return;
        }
        tracing::warn!(
            reason = why.reason(),
            dropped = self.unlogged,
            signer,
            "revocation message dropped: not signed by the token service as expected \
             (see warden_revocation_messages_dropped_total)"
        );
        self.last = Some(Instant::now());
        self.unlogged = 0;
    }
}

async fn run(
    url: String,
    auth: Option<HeaderValue>,
    client: HttpClient,
    interval: Duration,
    cache: Weak<TokenCache>,
    resync: Arc<Notify>,
    on_event: crate::events::EventHook,
) {
    let mut after = 0u64;
    let mut failing = false;
    loop {
        let sep = if url.contains('?') { '&' } else { '?' };
        let mut req =
            Request::get(format!("{url}{sep}after={after}")).header(ACCEPT, "application/json");
        if let Some(a) = &auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let result = match req.body(Full::new(Bytes::new())) {
            Ok(req) => client
                .send(req, interval.max(Duration::from_secs(2)), MAX_FEED_BYTES)
                .await
                .map_err(|e| e.to_string())
                .and_then(|(status, _, body)| {
                    if status.is_success() {
                        serde_json::from_slice::<Feed>(&body)
                            .map_err(|e| format!("not a revocation feed: {e}"))
                    } else {
                        Err(format!("status {status}"))
                    }
                }),
            Err(e) => Err(e.to_string()),
        };
        let Some(cache) = cache.upgrade() else { return };
        match result {
            Ok(feed) => {
                let now = now();
                for e in &feed.revocations {
                    cache.revoke(&e.jti, e.exp, now);
                }
                if failing {
                    tracing::info!(feed = %url, "revocation feed reachable again");
                    on_event(crate::events::SourceEvent {
                        event: "revocation_feed.recovered",
                        reason: "recovered",
                        source: &url,
                    });
                    failing = false;
                }
                if !feed.revocations.is_empty() {
                    tracing::debug!(count = feed.revocations.len(), "revocations applied");
                }
                after = after.max(feed.next);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(feed = %url, error = %e, "revocation feed failed; retrying");
                    on_event(crate::events::SourceEvent {
                        event: "revocation_feed.failed",
                        reason: "fetch_failed",
                        source: &url,
                    });
                    failing = true;
                }
            }
        }
        drop(cache);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = resync.notified() => {}
        }
    }
}

/// Keeps a subscription to the revocation channel, reconnecting with back-off; each message
/// is applied to the cache as it arrives. One warning per outage.
async fn subscriber(
    ep: pubsub::Endpoint,
    channel: String,
    cache: Weak<TokenCache>,
    resync: Arc<Notify>,
    mut check: Check,
) {
    let mut backoff = BACKOFF_MIN;
    let mut failing = false;
    loop {
        let mut subscribed = || {
            backoff = BACKOFF_MIN;
            if failing {
                tracing::info!(redis = %ep, %channel, "revocation channel subscribed again");
                failing = false;
                // What was published meanwhile is lost: the feed has it.
                resync.notify_one();
            }
        };
        let Err(e) = listen(&ep, &channel, &cache, &mut check, &mut subscribed).await else {
            return; // the cache is gone: the gateway dropped this auth config
        };
        if !failing {
            tracing::warn!(redis = %ep, %channel, error = %e,
                "revocation channel lost; reconnecting (the feed still applies revocations)");
            failing = true;
        }
        let jitter = rand::random_range(0..=backoff.as_millis() as u64 / 2);
        tokio::time::sleep(backoff / 2 + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One subscription, until it fails (`Err`) or the cache is dropped (`Ok`).
async fn listen(
    ep: &pubsub::Endpoint,
    channel: &str,
    cache: &Weak<TokenCache>,
    check: &mut Check,
    subscribed: &mut impl FnMut(),
) -> Result<(), String> {
    let connect = async {
        pubsub::Connection::connect(ep)
            .await?
            .subscribe(channel)
            .await
    };
    let mut sub = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("no answer within 2s".into()),
    };
    subscribed();
    let mut pinged = false;
    loop {
        let payload = match tokio::time::timeout(KEEPALIVE, sub.next()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) if pinged => return Err("no answer to PING".into()),
            Err(_) => {
                pinged = true;
                sub.ping().await.map_err(|e| e.to_string())?;
                continue;
            }
        };
        pinged = false;
        let Some(payload) = payload else { continue };
        let Some(r) = check.verify(&payload).await else {
            continue;
        };
        let Some(cache) = cache.upgrade() else {
            return Ok(());
        };
        let evicted = cache.revoke(&r.jti, r.exp, now());
        tracing::debug!(evicted, "revocation applied from the channel");
    }
}
