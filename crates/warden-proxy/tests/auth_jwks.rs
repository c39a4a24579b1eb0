//! JWT issuers whose keys come from a `jwks_url`, over real sockets: the gateway starts without
//! waiting for the key set and is not ready until it has one; rotated keys are fetched when a
//! token names them; floods of unknown `kid`s cost a handful of fetches; an unreachable,
//! failing or oversized JWKS keeps the last good keys; `Cache-Control: max-age` sets the
//! refresh schedule within the configured bounds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use warden_test_util::authcfg::{metrics, metrics_once, series};
use warden_test_util::jwt::TestIssuer;
use warden_test_util::servers::JwksServer;
use warden_test_util::{base_toml, client, Gateway, Upstream};

const ISS: &str = "https://issuer.test";

/// A gateway config with one `jwks_url` issuer (`extra` goes into its table) and a route that
/// accepts its tokens.
fn config(up: &Upstream, jwks: &JwksServer, extra: &str) -> String {
    format!(
        r#"{}
[[auth.jwt]]
name = "idp"
issuer = "{ISS}"
audiences = ["api"]
algorithms = ["ES256"]
jwks_url = "{}"
{extra}

[[clusters]]
name = "c"
endpoints = ["{}"]

[[routes]]
name = "api"
cluster = "c"
path_prefix = "/"
[routes.auth]
accept = ["jwt:idp"]
"#,
        base_toml(),
        jwks.url(),
        up.url()
    )
}

async fn call(gw: &Gateway, token: &str) -> client::Answer {
    let req = Request::get("/things")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    client::send_h1(gw.addr("main"), req).await
}

/// A fresh token (its own `jti`, so the verified-token cache cannot answer for it).
fn token(iss: &TestIssuer) -> String {
    iss.token(&iss.claims("alice", "api", "read"))
}

async fn readyz(gw: &Gateway) -> u16 {
    client::get(gw.admin(), "/readyz").await.status
}

async fn wait_ready(gw: &Gateway, within: Duration) {
    let deadline = Instant::now() + within;
    while readyz(gw).await != 200 {
        assert!(Instant::now() < deadline, "not ready after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn jwks_of(issuers: &[&TestIssuer]) -> Value {
    json!({ "keys": issuers.iter().map(|i| i.key.public_jwk()).collect::<Vec<_>>() })
}

#[tokio::test]
async fn readyz_is_not_ready_until_the_jwks_is_loaded() {
    let iss = TestIssuer::new(ISS);
    let jwks = JwksServer::start(iss.jwks()).await;
    jwks.set_status(503);
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(&up, &jwks, r#"jwks_refresh_min = "1s""#)).await;
    // Two failed attempts (the first at start, one retry after backoff): still not ready.
    assert!(jwks.wait_for_fetches(2, Duration::from_secs(10)).await);
    assert_eq!(readyz(&gw).await, 503);
    jwks.set_status(200);
    wait_ready(&gw, Duration::from_secs(10)).await;
    let res = call(&gw, &token(&iss)).await;
    assert_eq!(res.status, 200);
    assert_eq!(up.requests()[0].headers["x-warden-subject"], "alice");
}

#[tokio::test]
async fn start_up_does_not_wait_for_a_slow_jwks_server() {
    let iss = TestIssuer::new(ISS);
    let jwks = JwksServer::start(iss.jwks()).await;
    let delay = Duration::from_secs(4);
    jwks.set_delay(delay);
    let up = Upstream::start("u").await;
    let started = Instant::now();
    let gw = Gateway::start(&config(&up, &jwks, r#"jwks_timeout = "10s""#)).await;
    assert!(
        started.elapsed() < delay - Duration::from_secs(1),
        "start-up took {:?}",
        started.elapsed()
    );
    assert!(jwks.wait_for_fetches(1, Duration::from_secs(5)).await);
    assert_eq!(readyz(&gw).await, 503);
    wait_ready(&gw, Duration::from_secs(15)).await;
    assert!(started.elapsed() >= delay);
    assert_eq!(call(&gw, &token(&iss)).await.status, 200);
}

#[tokio::test]
async fn tokens_verify_with_keys_fetched_from_the_jwks_url() {
    let iss = TestIssuer::new(ISS);
    let jwks = JwksServer::start(iss.jwks()).await;
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(&up, &jwks, "")).await;
    wait_ready(&gw, Duration::from_secs(10)).await;
    let res = call(&gw, &token(&iss)).await;
    assert_eq!(res.status, 200);
    let seen = &up.requests()[0];
    assert_eq!(seen.headers["x-warden-subject"], "alice");
    assert_eq!(seen.headers["x-warden-auth"], "jwt");
    // A token signed by another key under the same `iss` and `kid` is refused.
    let forger = TestIssuer::new(ISS);
    let forged = forger.token_with_header(&iss.header(), &iss.claims("mallory", "api", "read"));
    let res = call(&gw, &forged).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.json()["error"], "invalid_token");
    assert_eq!(up.requests().len(), 1);
    let log = jwks.log();
    assert_eq!(log.len(), 1, "one fetch at start, none since");
    assert_eq!(log[0].accept.as_deref(), Some("application/json"));
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_when_a_token_with_its_kid_arrives() {
    let old = TestIssuer::new(ISS);
    let jwks = JwksServer::start(old.jwks()).await;
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(&up, &jwks, "")).await;
    wait_ready(&gw, Duration::from_secs(10)).await;
    assert_eq!(call(&gw, &token(&old)).await.status, 200);
    assert_eq!(jwks.fetches(), 1);

    let new = TestIssuer::new(ISS);
    assert_ne!(new.kid(), old.kid());
    jwks.set_jwks(jwks_of(&[&old, &new]));
    let res = call(&gw, &token(&new)).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    assert_eq!(jwks.fetches(), 2, "one re-fetch for the new kid");
    // Both keys now work, with no further fetch.
    assert_eq!(call(&gw, &token(&new)).await.status, 200);
    assert_eq!(call(&gw, &token(&old)).await.status, 200);
    assert_eq!(jwks.fetches(), 2);
    assert_eq!(up.requests().len(), 4);
}

#[tokio::test]
async fn two_hundred_tokens_with_unknown_kids_cause_at_most_a_handful_of_fetches() {
    let iss = TestIssuer::new(ISS);
    let jwks = JwksServer::start(iss.jwks()).await;
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(&up, &jwks, "")).await;
    wait_ready(&gw, Duration::from_secs(10)).await;
    let addr = gw.addr("main");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let mut header = iss.header();
        header["kid"] = json!(format!("made-up-{i}"));
        let t = iss.token_with_header(&header, &iss.claims("alice", "api", "read"));
        tasks.spawn(async move {
            let req = Request::get("/things")
                .header("host", "localhost")
                .header("authorization", format!("Bearer {t}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            client::send_h1(addr, req).await
        });
    }
    let mut answers = 0;
    while let Some(res) = tasks.join_next().await {
        let res = res.expect("request task");
        assert_eq!(res.status, 401);
        assert_eq!(res.json()["error"], "invalid_token");
        answers += 1;
    }
    assert_eq!(answers, 200);
    // Give a late, wrongly triggered fetch the chance to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fetches = jwks.fetches();
    assert!(fetches <= 3, "{fetches} fetches");
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn the_jwks_server_going_down_leaves_valid_tokens_working() {
    let iss = TestIssuer::new(ISS);
    let jwks = JwksServer::start(iss.jwks()).await;
    jwks.set_cache_control(Some("max-age=1"));
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(&up, &jwks, r#"jwks_refresh_min = "1s""#)).await;
    wait_ready(&gw, Duration::from_secs(10)).await;
    assert_eq!(call(&gw, &token(&iss)).await.status, 200);

    // Failing: two refreshes answered 503.
    jwks.set_status(503);
    let n = jwks.fetches();
    assert!(jwks.wait_for_fetches(n + 2, Duration::from_secs(10)).await);
    for _ in 0..3 {
        assert_eq!(call(&gw, &token(&iss)).await.status, 200);
    }
    // Gone: connections refused for a while.
    jwks.stop().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for _ in 0..3 {
        assert_eq!(call(&gw, &token(&iss)).await.status, 200);
    }
    assert_eq!(readyz(&gw).await, 200, "a gateway with keys stays ready");
    assert_eq!(up.requests().len(), 7);
    // One security event for the outage (its first failure), not one per retry.
    let events = |m: &str, event: &str, reason: &str| {
        series(
            m,
            &format!("warden_security_events_total{{event=\"{event}\",reason=\"{reason}\"}}"),
        )
    };
    let m = metrics(gw.admin()).await;
    assert_eq!(
        events(&m, "jwks.fetch_failed", "bad_status"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(events(&m, "jwks.fetch_failed", "unreachable"), None, "{m}");

    // Back: refreshes resume.
    jwks.set_status(200);
    let n = jwks.fetches();
    jwks.restart().await;
    assert!(jwks.wait_for_fetches(n + 1, Duration::from_secs(10)).await);
    assert_eq!(call(&gw, &token(&iss)).await.status, 200);
    let m = metrics_once(
        gw.admin(),
        "warden_security_events_total{event=\"jwks.fetch_recovered\",reason=\"recovered\"}",
        1.0,
    )
    .await;
    assert_eq!(
        events(&m, "jwks.fetch_failed", "bad_status"),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn cache_control_max_age_is_honoured_within_bounds() {
    let iss = TestIssuer::new(ISS);
    let jwks = JwksServer::start(iss.jwks()).await;
    jwks.set_cache_control(Some("max-age=2"));
    let up = Upstream::start("u").await;
    let bounds = r#"
jwks_refresh_min = "1s"
jwks_refresh_max = "3s""#;
    let _gw = Gateway::start(&config(&up, &jwks, bounds)).await;
    // Within bounds: every 2 s.
    assert!(jwks.wait_for_fetches(2, Duration::from_secs(10)).await);
    // Below the minimum: every 1 s, not faster.
    jwks.set_cache_control(Some("max-age=0"));
    let n = jwks.fetches();
    assert!(jwks.wait_for_fetches(n + 3, Duration::from_secs(15)).await);
    // Above the maximum: every 3 s, not in ten minutes.
    jwks.set_cache_control(Some("max-age=600"));
    let n = jwks.fetches();
    assert!(jwks.wait_for_fetches(n + 2, Duration::from_secs(15)).await);

    // Each gap follows the header the earlier fetch was answered with.
    let log = jwks.log();
    let mut seen = Vec::new();
    for pair in log.windows(2) {
        let max_age: u64 = pair[0]
            .cache_control
            .as_deref()
            .and_then(|c| c.strip_prefix("max-age="))
            .and_then(|s| s.parse().ok())
            .expect("max-age");
        let want = Duration::from_secs(max_age.clamp(1, 3));
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap + Duration::from_millis(50) >= want,
            "refetched after {gap:?}, before {want:?} (max-age={max_age})"
        );
        assert!(
            gap <= want + Duration::from_secs(2),
            "refetched after {gap:?}, long after {want:?} (max-age={max_age})"
        );
        seen.push(want.as_secs());
    }
    for want in [1, 2, 3] {
        assert!(seen.contains(&want), "no gap of {want}s in {seen:?}");
    }
}

#[tokio::test]
async fn an_oversized_jwks_is_refused_and_the_old_keys_kept() {
    let old = TestIssuer::new(ISS);
    let jwks = JwksServer::start(old.jwks()).await;
    jwks.set_cache_control(Some("max-age=1"));
    let up = Upstream::start("u").await;
    let limits = r#"
jwks_refresh_min = "1s"
jwks_max_bytes = "1KiB""#;
    let gw = Gateway::start(&config(&up, &jwks, limits)).await;
    wait_ready(&gw, Duration::from_secs(10)).await;
    assert_eq!(call(&gw, &token(&old)).await.status, 200);

    let new = TestIssuer::new(ISS);
    let mut big = jwks_of(&[&old, &new]);
    big["padding"] = json!("x".repeat(2048));
    assert!(big.to_string().len() > 1024);
    jwks.set_jwks(big);
    let n = jwks.fetches();
    assert!(jwks.wait_for_fetches(n + 2, Duration::from_secs(10)).await);
    assert_eq!(call(&gw, &token(&old)).await.status, 200, "old keys kept");
    let res = call(&gw, &token(&new)).await;
    assert_eq!(res.status, 401, "the oversized set was not installed");
    assert_eq!(readyz(&gw).await, 200);

    // The same keys in a set within the limit are taken at the next refresh.
    jwks.set_jwks(jwks_of(&[&old, &new]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&gw, &token(&new)).await.status != 200 {
        assert!(Instant::now() < deadline, "the new key was never installed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up.requests().len(), 3);
}
