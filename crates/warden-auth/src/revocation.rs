//! The revocation feed: the gateway polls the token service for revoked token ids and evicts
//! them from the verified-token cache, which then refuses them until they expire.
//!
//! Feed format (`GET <feed_url>?after=<seq>`, `Authorization: Bearer <feed_token>`):
//! `{"revocations": [{"jti": "...", "exp": 1700000000, "seq": 7}], "next": 7}`. The first
//! poll asks from 0 and so learns every revocation whose token has not yet expired; later
//! polls ask only for what is newer than the last `next`.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION};
use http::{HeaderValue, Request};
use http_body_util::Full;
use serde::Deserialize;
use warden_config::RevocationConfig;

use crate::cache::TokenCache;
use crate::http_client::HttpClient;

/// Stops the poller when dropped.
#[derive(Debug)]
pub struct Poller(tokio::task::AbortHandle);

impl Drop for Poller {
    fn drop(&mut self) {
        self.0.abort();
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

/// Starts polling the feed into `cache`; `None` without a feed or outside a runtime.
pub fn spawn(cfg: &RevocationConfig, cache: &Arc<TokenCache>) -> Result<Option<Poller>, String> {
    let Some(url) = cfg.feed_url.clone() else {
        return Ok(None);
    };
    let client = HttpClient::new(cfg.ca.as_deref(), Duration::from_secs(2))?;
    let auth = match &cfg.feed_token {
        Some(t) => {
            let v = t.read().map_err(|e| e.to_string())?;
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
    let interval = cfg.poll_interval.0;
    let weak = Arc::downgrade(cache);
    let task = rt.spawn(run(url, auth, client, interval, weak));
    Ok(Some(Poller(task.abort_handle())))
}

async fn run(
    url: String,
    auth: Option<HeaderValue>,
    client: HttpClient,
    interval: Duration,
    cache: Weak<TokenCache>,
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
                    failing = true;
                }
            }
        }
        drop(cache);
        tokio::time::sleep(interval).await;
    }
}
