//! Pushes each revocation to Redis pub/sub as it happens (`redis_url`, `redis_channel`), so
//! gateways subscribed to the channel refuse the token at once instead of at their next feed
//! poll.
//!
//! Each message is signed with the key that signs tokens now
//! ([`warden_auth::revocation::message`]), so a gateway applies only what this authority
//! published, checked against the JWKS it already trusts for tokens; whoever else can
//! `PUBLISH` to the channel revokes nothing.
//!
//! Best effort by design: the feed (`/oauth2/revocations`) is the record. A revocation is
//! stored, answered and only then handed to this task (through
//! [`crate::Authority::subscribe_revocations`]), so Redis never delays or fails it. While
//! Redis is unreachable, entries are dropped (gateways get them from the feed), reconnection
//! is tried at most once per back-off step, and the outage is logged once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use warden_auth::revocation::pubsub::{Connection, Endpoint};
use warden_config::AuthorityConfig;

use crate::error::{AuthorityError, Result};
use crate::revocation::Revoked;
use crate::Authority;

/// Time allowed to connect, and for each `PUBLISH` to be answered.
const TIMEOUT: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Starts the publisher when `redis_url` is set. It ends when `stop` turns true.
pub(crate) fn spawn(
    config: &AuthorityConfig,
    authority: &Arc<Authority>,
    stop: watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    let password = match &config.redis_password {
        Some(p) => Some(
            p.read_line()
                .map_err(|e| AuthorityError::Config(format!("authority.redis_password: {e}")))?
                .to_string(),
        ),
        None => None,
    };
    let ep = Endpoint::parse(url)
        .map_err(|e| AuthorityError::Config(format!("authority.redis_url: {e}")))?
        .with_password(password);
    // Subscribed before the listener starts, so no revocation slips past.
    let rx = authority.subscribe_revocations();
    let publisher = Publisher {
        authority: authority.clone(),
        ep,
        channel: config.redis_channel.clone(),
        conn: None,
        retry_at: None,
        backoff: BACKOFF_MIN,
    };
    Ok(Some(tokio::spawn(publisher.run(rx, stop))))
}

struct Publisher {
    /// For the key that signs now, and the time (`iat`).
    authority: Arc<Authority>,
    ep: Endpoint,
    channel: String,
    conn: Option<Connection>,
    /// Set during an outage: no connection is tried before it.
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Publisher {
    async fn run(mut self, mut rx: broadcast::Receiver<Revoked>, mut stop: watch::Receiver<bool>) {
        loop {
            let entry = tokio::select! {
                r = rx.recv() => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            match entry {
                Ok(r) => self.publish(&r).await,
                Err(RecvError::Lagged(n)) => tracing::warn!(
                    skipped = n,
                    "revocation publisher fell behind; gateways get those from the feed"
                ),
                Err(RecvError::Closed) => return,
            }
        }
    }

    async fn publish(&mut self, r: &Revoked) {
        let now = self.authority.now();
        let payload = match self.authority.keys.ring().signer(now) {
            Some(key) => {
                warden_auth::revocation::message::sign(key, &r.jti, r.exp, r.seq, now).into_bytes()
            }
            None => {
                // Never after start-up (a key signs from 0); gateways get it from the feed.
                tracing::error!(seq = r.seq, "no key signs now; revocation not published");
                return;
            }
        };
        // A kept connection may have died since its last use (a Redis restart): one more try
        // on a fresh one before calling it an outage.
        let channel = self.channel.clone();
        let tries = if self.conn.is_some() { 2 } else { 1 };
        for i in 1..=tries {
            let Some(conn) = self.connection().await else {
                return;
            };
            let error = match tokio::time::timeout(TIMEOUT, conn.publish(&channel, &payload)).await
            {
                Ok(Ok(receivers)) => {
                    self.recovered();
                    tracing::debug!(seq = r.seq, receivers, "revocation published");
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer within 1s".to_owned(),
            };
            if i < tries {
                self.conn = None;
            } else {
                self.failed(&error);
            }
        }
    }

    /// The open connection, or a new one unless an outage says to wait.
    async fn connection(&mut self) -> Option<&mut Connection> {
        if self.conn.is_none() {
            if self.retry_at.is_some_and(|at| Instant::now() < at) {
                return None; // dropped: the feed has it
            }
            match tokio::time::timeout(TIMEOUT, Connection::connect(&self.ep)).await {
                Ok(Ok(c)) => self.conn = Some(c),
                Ok(Err(e)) => self.failed(&e.to_string()),
                Err(_) => self.failed("no answer within 1s"),
            }
        }
        self.conn.as_mut()
    }

    fn failed(&mut self, error: &str) {
        self.conn = None;
        if self.retry_at.is_none() {
            tracing::warn!(redis = %self.ep, channel = %self.channel, error,
                "cannot publish revocations to Redis; gateways still get them from the feed");
        } else {
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
        self.retry_at = Some(Instant::now() + self.backoff);
    }

    fn recovered(&mut self) {
        if self.retry_at.take().is_some() {
            tracing::info!(redis = %self.ep, channel = %self.channel,
                "publishing revocations to Redis again");
        }
        self.backoff = BACKOFF_MIN;
    }
}
