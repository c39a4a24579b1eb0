//! The JWKS fetcher: one background task per `jwks_url` issuer keeps its [`KeySet`] fresh.
//!
//! - It fetches at once on start, but start-up never waits for it: the set is not ready (and
//!   `/readyz` says so) until the first fetch succeeds.
//! - After a success it fetches again when the response's `Cache-Control: max-age` says,
//!   clamped to `[jwks_refresh_min, jwks_refresh_max]` (5 minutes, clamped the same way, when
//!   the header is missing or invalid).
//! - A failure (connect error, timeout, a status other than 200, a body over `jwks_max_bytes`,
//!   not a JWK set, or a set without one usable key) keeps the last good set and retries with
//!   backoff: 1 s, doubling up to `jwks_refresh_min`, plus a little jitter. An outage is logged
//!   once when it starts and once when it ends, not on every retry.
//! - A token with an unknown `kid` wakes it early ([`KeySet::refetch_for_unknown_kid`], which
//!   rate-limits wake-ups); whatever wakes it, it never fetches more than once a second. A
//!   `jwks_timeout` under a second can therefore make a waiting request give up before the
//!   fetch it asked for, when the previous fetch was less than a second ago.
//!
//! The task never keeps the key set alive: it holds it weakly while fetching, and waiting for a
//! wake-up (which needs the set) holds it for at most a second at a time. It ends when the set
//! is gone, or when the [`Fetcher`] is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, USER_AGENT};
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::Full;
use rand::Rng;
use serde_json::Value;
use tokio::time::Instant;
use warden_config::JwtIssuerConfig;
use warden_crypto::jws::Jwk;

use crate::http_client::{FetchError, HttpClient};
use crate::keys::KeySet;

/// Refresh interval when the response has no usable `Cache-Control: max-age`.
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// The fetcher never starts two fetches closer together than this.
const MIN_GAP: Duration = Duration::from_secs(1);
/// First retry delay after a failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest the task holds the key set while waiting.
const HOLD_SLICE: Duration = Duration::from_secs(1);

/// Stops the fetcher when dropped.
#[derive(Debug)]
pub struct Fetcher(tokio::task::AbortHandle);

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why one fetch failed (the last good set is kept).
#[derive(Debug, thiserror::Error)]
enum FetchFailure {
    #[error(transparent)]
    Http(#[from] FetchError),
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("not a JWK set: {0}")]
    NotJwks(String),
    #[error("the set holds no usable key")]
    NoKeys,
}

impl FetchFailure {
    /// The stable reason code of a `jwks.fetch_failed` event.
    fn code(&self) -> &'static str {
        match self {
            FetchFailure::Http(_) => "unreachable",
            FetchFailure::Status(_) => "bad_status",
            FetchFailure::NotJwks(_) => "not_jwks",
            FetchFailure::NoKeys => "no_usable_key",
        }
    }
}

/// What a fetch needs, parsed from the issuer's config once.
struct Source {
    issuer: String,
    uri: Uri,
    client: HttpClient,
    timeout: Duration,
    max_bytes: usize,
    refresh_min: Duration,
    refresh_max: Duration,
    /// Told when fetching starts failing and when it recovers.
    on_event: crate::events::EventHook,
}

/// Outage tracking and backoff (sans-IO; the caller passes the time).
#[derive(Debug)]
struct Health {
    backoff: Duration,
    max_backoff: Duration,
    /// Failures in a row, and when the first of them happened.
    outage: Option<(u32, Instant)>,
}

/// Starts fetching `cfg.jwks_url` into `keys` in the background. `Ok(None)` for an issuer
/// without `jwks_url`, or when there is no Tokio runtime to run it on (`warden check`); an
/// error for a URL or CA bundle that cannot be used.
pub fn spawn(
    cfg: &JwtIssuerConfig,
    keys: &Arc<KeySet>,
    on_event: crate::events::EventHook,
) -> Result<Option<Fetcher>, String> {
    let Some(url) = cfg.jwks_url.as_deref() else {
        return Ok(None);
    };
    let uri = endpoint_uri(url)?;
    let client = HttpClient::new(cfg.jwks_ca.as_deref(), cfg.jwks_timeout.0)?;
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return Ok(None);
    };
    let source = Source {
        issuer: cfg.name.clone(),
        uri,
        client,
        timeout: cfg.jwks_timeout.0,
        max_bytes: usize::try_from(cfg.jwks_max_bytes.0).unwrap_or(usize::MAX),
        refresh_min: cfg.jwks_refresh_min.0,
        refresh_max: cfg.jwks_refresh_max.0.max(cfg.jwks_refresh_min.0),
        on_event,
    };
    let task = runtime.spawn(run(source, Arc::downgrade(keys)));
    Ok(Some(Fetcher(task.abort_handle())))
}

/// Parses an endpoint URL the auth layer calls: absolute, `http` or `https`.
pub(crate) fn endpoint_uri(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(format!(
            "`{url}` must be an absolute http:// or https:// URL"
        )),
    }
}

async fn run(source: Source, keys: Weak<KeySet>) {
    let mut health = Health::new(source.refresh_min);
    let mut last_attempt: Option<Instant> = None;
    loop {
        if let Some(last) = last_attempt {
            tokio::time::sleep_until(last + MIN_GAP).await;
        }
        last_attempt = Some(Instant::now());
        let result = source.fetch().await;
        let Some(set) = keys.upgrade() else {
            return;
        };
        let next = record(&source, &mut health, &set, result);
        set.fetch_done();
        drop(set);
        if !wait(&keys, Instant::now() + next).await {
            return;
        }
    }
}

/// Installs a fetched set or logs the failure; returns how long to wait before the next fetch.
fn record(
    source: &Source,
    health: &mut Health,
    set: &KeySet,
    result: Result<(Vec<Jwk>, Duration), FetchFailure>,
) -> Duration {
    let issuer = &source.issuer;
    match result {
        Ok((jwks, refresh)) => {
            let keys = jwks.len();
            set.install(jwks);
            match health.succeeded(Instant::now()) {
                Some((failures, outage)) => {
                    tracing::info!(
                        %issuer,
                        keys,
                        failures,
                        outage_secs = outage.as_secs(),
                        "JWKS fetch recovered"
                    );
                    (source.on_event)(crate::events::SourceEvent {
                        event: "jwks.fetch_recovered",
                        reason: "recovered",
                        source: issuer,
                    });
                }
                None => tracing::debug!(%issuer, keys, "JWKS fetched"),
            }
            refresh
        }
        Err(error) => {
            let (backoff, first) = health.failed(Instant::now());
            if first {
                (source.on_event)(crate::events::SourceEvent {
                    event: "jwks.fetch_failed",
                    reason: error.code(),
                    source: issuer,
                });
            }
            if first && set.is_ready() {
                tracing::warn!(
                    %issuer,
                    %error,
                    "JWKS fetch failed; keeping the last key set and retrying with backoff"
                );
            } else if first {
                tracing::warn!(
                    %issuer,
                    %error,
                    "JWKS fetch failed; this issuer's tokens are refused until one succeeds"
                );
            } else {
                tracing::debug!(%issuer, %error, "JWKS fetch failed again");
            }
            backoff + jitter(backoff)
        }
    }
}

/// Waits until `deadline` or a wake-up; false once the key set is gone.
async fn wait(keys: &Weak<KeySet>, deadline: Instant) -> bool {
    loop {
        let Some(set) = keys.upgrade() else {
            return false;
        };
        // A wake-up that arrives between slices is kept by `Notify` as a permit.
        let slice_end = deadline.min(Instant::now() + HOLD_SLICE);
        tokio::select! {
            () = set.wake.notified() => return true,
            () = tokio::time::sleep_until(slice_end) => {
                if slice_end >= deadline {
                    return true;
                }
            }
        }
    }
}

impl Source {
    /// One GET of the key set; the keys and when to fetch again.
    async fn fetch(&self) -> Result<(Vec<Jwk>, Duration), FetchFailure> {
        let req = Request::get(self.uri.clone())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, "warden")
            .body(Full::new(Bytes::new()))
            .map_err(|e| FetchError::Request(e.to_string()))?;
        let (status, headers, body) = self.client.send(req, self.timeout, self.max_bytes).await?;
        if status != StatusCode::OK {
            return Err(FetchFailure::Status(status));
        }
        let doc: Value =
            serde_json::from_slice(&body).map_err(|e| FetchFailure::NotJwks(e.to_string()))?;
        let (keys, skipped) =
            Jwk::set_from_json(&doc).map_err(|e| FetchFailure::NotJwks(e.to_string()))?;
        for (index, error) in &skipped {
            tracing::debug!(issuer = %self.issuer, index, %error, "JWKS key skipped");
        }
        if keys.is_empty() {
            return Err(FetchFailure::NoKeys);
        }
        Ok((
            keys,
            refresh_after(&headers, self.refresh_min, self.refresh_max),
        ))
    }
}

impl Health {
    fn new(refresh_min: Duration) -> Health {
        Health {
            backoff: FIRST_BACKOFF,
            max_backoff: refresh_min,
            outage: None,
        }
    }

    /// Records a failure: how long to wait before retrying (without jitter), and whether it
    /// starts an outage.
    fn failed(&mut self, now: Instant) -> (Duration, bool) {
        let base = self.backoff.min(self.max_backoff);
        self.backoff = (self.backoff * 2).min(self.max_backoff);
        let first = match &mut self.outage {
            Some((n, _)) => {
                *n += 1;
                false
            }
            None => {
                self.outage = Some((1, now));
                true
            }
        };
        (base, first)
    }

    /// Records a success: the failures and length of the outage it ends, if any.
    fn succeeded(&mut self, now: Instant) -> Option<(u32, Duration)> {
        self.backoff = FIRST_BACKOFF;
        self.outage
            .take()
            .map(|(n, since)| (n, now.saturating_duration_since(since)))
    }
}

/// Up to a tenth of `base`, so a fleet of gateways does not retry in step.
fn jitter(base: Duration) -> Duration {
    let max = u64::try_from(base.as_millis() / 10).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=max))
}

/// When to fetch again after a success: `Cache-Control: max-age` clamped to `[min, max]`;
/// `no-cache`/`no-store` count as 0; missing, invalid or repeated `max-age` gives 5 minutes,
/// clamped the same way.
pub(crate) fn refresh_after(headers: &HeaderMap, min: Duration, max: Duration) -> Duration {
    max_age(headers)
        .unwrap_or(DEFAULT_REFRESH)
        .clamp(min, max.max(min))
}

fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(CACHE_CONTROL) {
        for directive in value.to_str().ok()?.split(',') {
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim())),
                None => (directive.trim(), None),
            };
            if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age") {
                // RFC 9111 §4.2.1: a directive given twice is invalid.
                if found.is_some() {
                    return None;
                }
                let digits = arg?.trim_matches('"');
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                found = Some(digits.parse::<u64>().unwrap_or(u64::MAX));
            }
        }
    }
    found.map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use http::HeaderValue;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use warden_config::types::{ByteSize, Dur};
    use warden_crypto::jws::{Alg, SigningKey};

    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    const MAX: Duration = Duration::from_secs(3600);

    fn cc(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn max_age_within_bounds_is_used() {
        assert_eq!(
            refresh_after(&cc(&["public, max-age=600"]), MIN, MAX),
            Duration::from_secs(600)
        );
        assert_eq!(
            refresh_after(&cc(&["MAX-AGE=\"120\""]), MIN, MAX),
            Duration::from_secs(120)
        );
        assert_eq!(
            refresh_after(&cc(&["public", "max-age=90"]), MIN, MAX),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn max_age_is_clamped_to_the_bounds() {
        assert_eq!(refresh_after(&cc(&["max-age=5"]), MIN, MAX), MIN);
        assert_eq!(refresh_after(&cc(&["max-age=0"]), MIN, MAX), MIN);
        assert_eq!(refresh_after(&cc(&["max-age=86400"]), MIN, MAX), MAX);
        assert_eq!(
            refresh_after(&cc(&["max-age=99999999999999999999999"]), MIN, MAX),
            MAX
        );
        assert_eq!(refresh_after(&cc(&["no-cache"]), MIN, MAX), MIN);
        assert_eq!(
            refresh_after(&cc(&["max-age=600, no-store"]), MIN, MAX),
            MIN
        );
    }

    #[test]
    fn missing_or_invalid_max_age_means_five_minutes_within_bounds() {
        let five = Duration::from_secs(300);
        assert_eq!(refresh_after(&HeaderMap::new(), MIN, MAX), five);
        assert_eq!(refresh_after(&cc(&["public"]), MIN, MAX), five);
        assert_eq!(refresh_after(&cc(&["max-age=abc"]), MIN, MAX), five);
        assert_eq!(refresh_after(&cc(&["max-age=-5"]), MIN, MAX), five);
        assert_eq!(refresh_after(&cc(&["max-age"]), MIN, MAX), five);
        assert_eq!(refresh_after(&cc(&["max-age="]), MIN, MAX), five);
        assert_eq!(
            refresh_after(&cc(&["max-age=60", "max-age=600"]), MIN, MAX),
            five
        );
        let (lo, hi) = (Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(refresh_after(&HeaderMap::new(), lo, hi), hi);
        let (lo, hi) = (Duration::from_secs(600), Duration::from_secs(900));
        assert_eq!(refresh_after(&cc(&["max-age=x"]), lo, hi), lo);
    }

    #[test]
    fn backoff_doubles_to_the_minimum_refresh_and_resets_on_success() {
        let mut h = Health::new(Duration::from_secs(10));
        let t = Instant::now();
        let mut waits = Vec::new();
        let mut firsts = Vec::new();
        for _ in 0..6 {
            let (w, first) = h.failed(t);
            waits.push(w.as_secs());
            firsts.push(first);
        }
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert_eq!(firsts, [true, false, false, false, false, false]);
        let (n, took) = h.succeeded(t + Duration::from_secs(35)).unwrap();
        assert_eq!((n, took), (6, Duration::from_secs(35)));
        assert!(h.succeeded(t).is_none());
        assert_eq!(h.failed(t), (Duration::from_secs(1), true));
    }

    #[test]
    fn jitter_is_at_most_a_tenth() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_secs(10)) <= Duration::from_secs(1));
        }
        assert_eq!(jitter(Duration::from_millis(5)), Duration::ZERO);
    }

    #[test]
    fn endpoint_urls_must_be_absolute_http_or_https() {
        assert!(endpoint_uri("https://idp.example/jwks").is_ok());
        assert!(endpoint_uri("http://127.0.0.1:8080/jwks").is_ok());
        assert!(endpoint_uri("/jwks").is_err());
        assert!(endpoint_uri("ftp://idp.example/jwks").is_err());
        assert!(endpoint_uri("not a url").is_err());
    }

    fn config(url: Option<String>) -> JwtIssuerConfig {
        JwtIssuerConfig {
            name: "idp".into(),
            issuer: "https://idp.test".into(),
            audiences: vec!["api".into()],
            algorithms: vec!["ES256".into()],
            jwks_url: url,
            jwks_file: None,
            public_key_file: None,
            hmac_secret: None,
            leeway: Dur::secs(30),
            max_token_bytes: ByteSize(8192),
            require_typ: None,
            jwks_ca: None,
            jwks_refresh_min: Dur::secs(1),
            jwks_refresh_max: Dur::secs(3600),
            jwks_unknown_kid_interval: Dur::secs(30),
            jwks_max_bytes: ByteSize(4096),
            jwks_timeout: Dur(Duration::from_secs(2)),
        }
    }

    #[test]
    fn no_url_or_no_runtime_spawns_nothing() {
        let keys = KeySet::remote(Duration::from_secs(30), Duration::from_secs(2));
        assert!(spawn(&config(None), &keys, crate::events::ignore())
            .unwrap()
            .is_none());
        let cfg = config(Some("http://127.0.0.1:9/jwks".into()));
        assert!(spawn(&cfg, &keys, crate::events::ignore())
            .unwrap()
            .is_none());
        assert!(!keys.is_ready());
        assert!(spawn(
            &config(Some("jwks.json".into())),
            &keys,
            crate::events::ignore()
        )
        .is_err());
    }

    /// A one-response-per-connection HTTP server answering with whatever `reply` holds.
    struct Canned {
        url: String,
        reply: Arc<Mutex<String>>,
        hits: Arc<AtomicUsize>,
    }

    impl Canned {
        async fn start(reply: String) -> Canned {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/jwks", listener.local_addr().unwrap());
            let reply = Arc::new(Mutex::new(reply));
            let hits = Arc::new(AtomicUsize::new(0));
            let (r, h) = (reply.clone(), hits.clone());
            tokio::spawn(async move {
                while let Ok((mut s, _)) = listener.accept().await {
                    let (r, h) = (r.clone(), h.clone());
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 1024];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        h.fetch_add(1, Ordering::SeqCst);
                        let text = r.lock().unwrap().clone();
                        let _ = s.write_all(text.as_bytes()).await;
                    });
                }
            });
            Canned { url, reply, hits }
        }

        fn set(&self, reply: String) {
            *self.reply.lock().unwrap() = reply;
        }
    }

    fn response(status: &str, extra: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
            body.len()
        )
    }

    fn jwks_body() -> String {
        let key = SigningKey::generate(Alg::ES256).unwrap();
        serde_json::json!({ "keys": [key.public_jwk(), {"kty": "oct", "k": "c2VjcmV0"}] })
            .to_string()
    }

    fn source(url: &str) -> Source {
        let cfg = config(Some(url.into()));
        Source {
            issuer: cfg.name,
            uri: endpoint_uri(url).unwrap(),
            client: HttpClient::new(None, Duration::from_secs(2)).unwrap(),
            timeout: Duration::from_secs(2),
            max_bytes: 4096,
            refresh_min: Duration::from_secs(1),
            refresh_max: Duration::from_secs(3600),
            on_event: crate::events::ignore(),
        }
    }

    #[tokio::test]
    async fn a_fetch_keeps_usable_keys_and_reads_max_age() {
        let server = Canned::start(response(
            "200 OK",
            "cache-control: max-age=120\r\n",
            &jwks_body(),
        ))
        .await;
        let (keys, refresh) = source(&server.url).fetch().await.unwrap();
        assert_eq!(keys.len(), 1, "the symmetric key is skipped");
        assert_eq!(refresh, Duration::from_secs(120));
    }

    #[tokio::test]
    async fn bad_answers_are_failures() {
        let server = Canned::start(response("503 Service Unavailable", "", "")).await;
        let src = source(&server.url);
        assert!(matches!(
            src.fetch().await,
            Err(FetchFailure::Status(StatusCode::SERVICE_UNAVAILABLE))
        ));
        server.set(response("200 OK", "", "<html>"));
        assert!(matches!(src.fetch().await, Err(FetchFailure::NotJwks(_))));
        server.set(response("200 OK", "", r#"{"nokeys": []}"#));
        assert!(matches!(src.fetch().await, Err(FetchFailure::NotJwks(_))));
        server.set(response(
            "200 OK",
            "",
            r#"{"keys": [{"kty": "oct", "k": "AA"}]}"#,
        ));
        assert!(matches!(src.fetch().await, Err(FetchFailure::NoKeys)));
        let big = format!(r#"{{"keys": [], "pad": "{}"}}"#, "x".repeat(5000));
        server.set(response("200 OK", "", &big));
        assert!(matches!(
            src.fetch().await,
            Err(FetchFailure::Http(FetchError::TooLarge(4096)))
        ));
    }

    #[tokio::test]
    async fn the_fetcher_fills_the_set_and_stops_when_the_set_is_gone() {
        let server = Canned::start(response("200 OK", "", &jwks_body())).await;
        let keys = KeySet::remote(Duration::from_secs(30), Duration::from_secs(2));
        let fetcher = spawn(
            &config(Some(server.url.clone())),
            &keys,
            crate::events::ignore(),
        )
        .unwrap()
        .expect("a runtime is running");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !keys.is_ready() {
            assert!(Instant::now() < deadline, "no key set installed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(keys.current().len(), 1);
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
        drop(keys);
        while !fetcher.0.is_finished() {
            assert!(Instant::now() < deadline, "the task outlived its key set");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_wake_up_fetches_again_but_not_within_a_second() {
        let server = Canned::start(response("200 OK", "", &jwks_body())).await;
        let keys = KeySet::remote(Duration::from_millis(1), Duration::from_secs(3));
        let _fetcher = spawn(
            &config(Some(server.url.clone())),
            &keys,
            crate::events::ignore(),
        )
        .unwrap();
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        while !keys.is_ready() {
            assert!(Instant::now() < deadline, "no key set installed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(keys.refetch_for_unknown_kid().await);
        assert_eq!(server.hits.load(Ordering::SeqCst), 2);
        assert!(start.elapsed() >= MIN_GAP);
    }
}
