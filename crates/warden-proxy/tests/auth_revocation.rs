//! Revocation reaches the gateway: a token whose id appears in the token service's revocation
//! feed is refused within one poll interval, even though the gateway had already verified and
//! cached it; other tokens keep working. With Redis pub/sub between a real authority and the
//! gateway, a revocation made at `/oauth2/revoke` is refused within a second, long before the
//! next poll.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warden_authority::clients::ClientSpec;
use warden_authority::AuthorityHandle;
use warden_config::{AuthorityConfig, SecretRef};
use warden_test_util::jwt::TestIssuer;
use warden_test_util::servers::JwksServer;
use warden_test_util::{base_toml, client, Gateway, Upstream};

async fn call(gw: &Gateway, token: &str) -> client::Answer {
    let req = Request::get("/x")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    client::send_h1(gw.addr("main"), req).await
}

#[tokio::test]
async fn a_token_revoked_in_the_feed_is_refused_within_the_poll_interval() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    // The feed server: a JSON document at /jwks (the test server serves any body there).
    let feed = JwksServer::start(json!({"revocations": [], "next": 0})).await;
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("feed.secret");
    std::fs::write(&secret, "feed-credential\n").unwrap();
    let gw = Gateway::start(&format!(
        r#"{}
[[auth.jwt]]
name = "t"
issuer = "{}"
audiences = ["api"]
algorithms = ["ES256"]
jwks_file = "{}"
[auth.revocation]
feed_url = "{}"
feed_token = "file:{}"
poll_interval = "200ms"
[[clusters]]
name = "c"
endpoints = ["{}"]
[[routes]]
name = "api"
cluster = "c"
path_prefix = "/"
[routes.auth]
accept = ["jwt"]
"#,
        base_toml(),
        iss.iss,
        iss.jwks_file().display(),
        feed.url(),
        secret.display(),
        up.url()
    ))
    .await;
    let claims = iss.claims("alice", "api", "");
    let jti = claims["jti"].as_str().unwrap().to_owned();
    let exp = claims["exp"].as_i64().unwrap();
    let revoked = iss.token(&claims);
    let other = iss.token(&iss.claims("bob", "api", ""));
    assert_eq!(call(&gw, &revoked).await.status, 200, "verified and cached");
    assert_eq!(call(&gw, &other).await.status, 200);
    assert!(
        feed.wait_for_fetches(1, Duration::from_secs(5)).await,
        "the gateway polls the feed"
    );

    feed.set_body(
        json!({"revocations": [{"jti": jti, "exp": exp, "seq": 1}], "next": 1}).to_string(),
    );
    let start = Instant::now();
    loop {
        let res = call(&gw, &revoked).await;
        if res.status == 401 {
            assert_eq!(res.json()["error"], "invalid_token");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a revoked token still works after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("revocation took effect after {:?}", start.elapsed());
    assert_eq!(
        call(&gw, &other).await.status,
        200,
        "other tokens keep working"
    );
    let text =
        String::from_utf8_lossy(&client::get(gw.admin(), "/metrics").await.body).into_owned();
    assert!(
        text.contains("warden_auth_denied_requests_total{route=\"api\",reason=\"revoked\"}"),
        "{text}"
    );
    assert!(feed
        .log()
        .iter()
        .all(|f| f.accept.as_deref() == Some("application/json")));

    // The feed failing, then answering again: one security event each, not one per poll.
    feed.set_status(503);
    let n = feed.fetches();
    assert!(feed.wait_for_fetches(n + 3, Duration::from_secs(5)).await);
    feed.set_status(200);
    let text = warden_test_util::authcfg::metrics_once(
        gw.admin(),
        "warden_security_events_total{event=\"revocation_feed.recovered\",reason=\"recovered\"}",
        1.0,
    )
    .await;
    assert!(
        text.contains(
            "warden_security_events_total{event=\"revocation_feed.failed\",reason=\"fetch_failed\"} 1\n"
        ),
        "{text}"
    );
}

// ---- a real authority: /oauth2/revoke to the gateway, through Redis or the feed ------------

const ISSUER: &str = "https://auth.test";
const FEED_TOKEN: &str = "feed-token-0123456789abcdef";

/// An authority on a free port, with a `client_secret_basic` client `svc` (returned secret),
/// a feed token in `dir/feed.secret`, and `redis` as its `(redis_url, redis_channel)`.
async fn authority(
    dir: &std::path::Path,
    redis: Option<(&str, &str)>,
) -> (AuthorityHandle, String) {
    authority_with(dir, redis, None).await
}

/// [`authority`], publishing to a Redis that wants `password`.
async fn authority_with(
    dir: &std::path::Path,
    redis: Option<(&str, &str)>,
    password: Option<&str>,
) -> (AuthorityHandle, String) {
    let kek = dir.join("authority.kek");
    std::fs::write(
        &kek,
        base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
    )
    .unwrap();
    std::fs::write(dir.join("feed.secret"), FEED_TOKEN).unwrap();
    let mut cfg = AuthorityConfig {
        enabled: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        key_encryption_key: Some(SecretRef::File(kek)),
        revocation_feed_token: Some(SecretRef::File(dir.join("feed.secret"))),
        issuer: ISSUER.into(),
        ..AuthorityConfig::default()
    };
    if let Some((url, channel)) = redis {
        cfg.redis_url = Some(url.into());
        cfg.redis_channel = channel.into();
    }
    if let Some(pw) = password {
        let f = dir.join("authority-redis.pw");
        std::fs::write(&f, format!("{pw}\n")).unwrap();
        cfg.redis_password = Some(SecretRef::File(f));
    }
    let h = warden_authority::start(&cfg)
        .await
        .expect("start authority");
    let spec: ClientSpec = serde_json::from_value(
        json!({"client_id": "svc", "scopes": ["read"], "audiences": ["api"]}),
    )
    .unwrap();
    let a = h.authority();
    let (_, secret) = a.registry().create(spec, "test", a.now()).await.unwrap();
    let secret = secret.expect("a secret").secret.to_string();
    (h, secret)
}

/// POSTs a form to the authority as `svc` (Basic; ids and secrets here are URL-safe).
async fn post_form(auth: SocketAddr, path: &str, body: String, secret: &str) -> client::Answer {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("svc:{secret}"));
    let req = Request::post(path)
        .header("host", "auth.test")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Basic {basic}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    client::send_h1(auth, req).await
}

async fn fetch_token(auth: SocketAddr, secret: &str) -> String {
    let a = post_form(
        auth,
        "/oauth2/token",
        "grant_type=client_credentials".into(),
        secret,
    )
    .await;
    assert_eq!(a.status, 200, "token: {:?}", a.body);
    a.json()["access_token"].as_str().unwrap().to_owned()
}

/// A gateway trusting the authority's JWKS, with `revocation` added to its
/// `[auth.revocation]`, and its upstream.
async fn gateway(
    auth: &AuthorityHandle,
    dir: &std::path::Path,
    revocation: &str,
) -> (Gateway, Upstream) {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&format!(
        r#"{}
[[auth.jwt]]
name = "authority"
issuer = "{ISSUER}"
audiences = ["api"]
algorithms = ["ES256"]
jwks_url = "{url}/oauth2/jwks"
require_typ = "at+jwt"
[auth.revocation]
feed_url = "{url}/oauth2/revocations"
feed_token = "file:{}"
{revocation}
[[clusters]]
name = "c"
endpoints = ["{}"]
[[routes]]
name = "api"
cluster = "c"
path_prefix = "/"
[routes.auth]
accept = ["jwt:authority"]
"#,
        base_toml(),
        dir.join("feed.secret").display(),
        up.url(),
        url = auth.url(),
    ))
    .await;
    let start = Instant::now();
    while client::get(gw.admin(), "/readyz").await.status != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "gateway not ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (gw, up)
}

/// Revokes a token the gateway has verified and cached, at `/oauth2/revoke`, and measures
/// how long until the gateway refuses it (from the authority's answer); fails past `limit`.
/// Another token keeps working.
async fn revoke_and_measure(
    auth: &AuthorityHandle,
    gw: &Gateway,
    secret: &str,
    limit: Duration,
) -> Duration {
    let token = fetch_token(auth.addr(), secret).await;
    let other = fetch_token(auth.addr(), secret).await;
    assert_eq!(call(gw, &token).await.status, 200, "verified");
    assert_eq!(call(gw, &token).await.status, 200, "from the cache");
    assert_eq!(call(gw, &other).await.status, 200);
    let a = post_form(
        auth.addr(),
        "/oauth2/revoke",
        format!("token={token}"),
        secret,
    )
    .await;
    assert_eq!(a.status, 200, "revoke: {:?}", a.body);
    let start = Instant::now();
    loop {
        let res = call(gw, &token).await;
        if res.status == 401 {
            assert_eq!(res.json()["error"], "invalid_token");
            break;
        }
        assert_eq!(res.status, 200);
        assert!(
            start.elapsed() < limit,
            "a revoked token still works after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    assert_eq!(
        call(gw, &other).await.status,
        200,
        "other tokens keep working"
    );
    took
}

/// Subscribers of `channel` on the Redis at `url` (`PUBSUB NUMSUB`).
/// The shared test Redis and a revocation channel no other test uses, or `None` (skipped).
fn redis_channel(test: &str) -> Option<(String, String)> {
    let redis = warden_test_util::redis::test_url(test)?;
    let channel = format!(
        "{}revocations",
        warden_test_util::redis::unique_prefix(test)
    );
    Some((redis, channel))
}

/// Waits (bounded) until a gateway has subscribed to `channel`.
async fn wait_subscribed(redis: &str, password: Option<&str>, channel: &str) {
    let start = Instant::now();
    while subscribers_with(redis, password, channel).await < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the gateway never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Subscribers of `channel` (`PUBSUB NUMSUB`), authenticating with `password` when given.
async fn subscribers_with(url: &str, password: Option<&str>, channel: &str) -> i64 {
    let host = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .expect("connect to Redis");
    if let Some(pw) = password {
        let cmd = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{pw}\r\n", pw.len());
        s.write_all(cmd.as_bytes()).await.unwrap();
        let mut ok = [0u8; 5];
        s.read_exact(&mut ok).await.unwrap();
        assert_eq!(&ok, b"+OK\r\n", "AUTH");
    }
    let cmd = format!(
        "*3\r\n$6\r\nPUBSUB\r\n$6\r\nNUMSUB\r\n${}\r\n{channel}\r\n",
        channel.len()
    );
    s.write_all(cmd.as_bytes()).await.unwrap();
    // `*2 $len channel :n`: the count is the last line.
    let mut buf = Vec::new();
    while !(buf.ends_with(b"\r\n") && buf.iter().filter(|b| **b == b'\n').count() >= 4) {
        let mut chunk = [0u8; 256];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "Redis closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let last = text.trim_end().rsplit("\r\n").next().unwrap();
    last.trim_start_matches(':').parse().expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_pushed_through_redis_is_refused_within_a_second() {
    let test = "a_revocation_pushed_through_redis_is_refused_within_a_second";
    let Some((redis, channel)) = redis_channel(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (auth, secret) = authority(dir.path(), Some((&redis, &channel))).await;
    // The feed is polled once at start and then only every 30 s: only Redis can be in time.
    let (gw, _up) = gateway(
        &auth,
        dir.path(),
        &format!("poll_interval = \"30s\"\nredis_url = \"{redis}\"\nredis_channel = \"{channel}\"\nsigned_by = \"authority\""),
    )
    .await;
    wait_subscribed(&redis, None, &channel).await;
    let took = revoke_and_measure(&auth, &gw, &secret, Duration::from_secs(1)).await;
    println!("revocation latency through Redis pub/sub: {took:?}");
    // A second one, now that the authority's connection to Redis is open.
    let again = revoke_and_measure(&auth, &gw, &secret, Duration::from_secs(1)).await;
    println!("revocation latency through Redis pub/sub (connection open): {again:?}");
    auth.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_feed_alone_refuses_a_revocation_within_its_poll_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (auth, secret) = authority(dir.path(), None).await;
    let (gw, _up) = gateway(&auth, dir.path(), "poll_interval = \"1s\"").await;
    let took = revoke_and_measure(&auth, &gw, &secret, Duration::from_secs(5)).await;
    println!("revocation latency through the feed (poll_interval 1s): {took:?}");
    auth.shutdown().await;
}

/// A Redis that wants a password: the authority and the gateway each send theirs, and a
/// gateway with a wrong one never subscribes but still refuses the token through the feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_travel_through_a_password_protected_redis() {
    let test = "revocations_travel_through_a_password_protected_redis";
    let Some(server) =
        warden_test_util::redis::RedisServer::start_with_password(test, "s3cret pw").await
    else {
        return;
    };
    let redis = server.url();
    let channel = "warden:revocations";
    let dir = tempfile::tempdir().unwrap();
    let (auth, secret) =
        authority_with(dir.path(), Some((&redis, channel)), Some("s3cret pw")).await;
    std::fs::write(dir.path().join("gw-redis.pw"), "s3cret pw\n").unwrap();
    std::fs::write(dir.path().join("wrong-redis.pw"), "not it\n").unwrap();
    let revocation = |pw: &str, poll: &str| {
        format!(
            "poll_interval = \"{poll}\"\nredis_url = \"{redis}\"\nredis_channel = \"{channel}\"\nredis_password = \"file:{}\"\nsigned_by = \"authority\"",
            dir.path().join(pw).display()
        )
    };
    let (gw, _up) = gateway(&auth, dir.path(), &revocation("gw-redis.pw", "30s")).await;
    let (wrong, _up2) = gateway(&auth, dir.path(), &revocation("wrong-redis.pw", "1s")).await;
    wait_subscribed(&redis, Some("s3cret pw"), channel).await;
    // The feed is polled every 30 s: only the password-protected channel can be in time.
    let took = revoke_and_measure(&auth, &gw, &secret, Duration::from_secs(1)).await;
    println!("revocation latency through password-protected Redis: {took:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        subscribers_with(&redis, Some("s3cret pw"), channel).await,
        1,
        "the gateway with the wrong password is not subscribed"
    );
    let took = revoke_and_measure(&auth, &wrong, &secret, Duration::from_secs(5)).await;
    println!("revocation latency through the feed beside a refused Redis: {took:?}");
    auth.shutdown().await;
}

// ---- the channel is signed: publishing to it is not enough to revoke ----------------------

/// `PUBLISH channel payload` on the Redis at `url`, as anyone who can reach it could.
async fn publish(url: &str, channel: &str, payload: &[u8]) {
    let host = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .expect("connect to Redis");
    let mut cmd = format!(
        "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{channel}\r\n${}\r\n",
        channel.len(),
        payload.len()
    )
    .into_bytes();
    cmd.extend_from_slice(payload);
    cmd.extend_from_slice(b"\r\n");
    s.write_all(&cmd).await.unwrap();
    let mut reply = [0u8; 64];
    let n = s.read(&mut reply).await.unwrap();
    assert!(reply[..n].starts_with(b":"), "PUBLISH: {:?}", &reply[..n]);
}

/// The claims of a compact JWS (unverified: the test made it).
fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// `warden_revocation_messages_dropped_total{reason}` on the gateway.
async fn dropped(gw: &Gateway, reason: &str) -> u64 {
    let text =
        String::from_utf8_lossy(&client::get(gw.admin(), "/metrics").await.body).into_owned();
    let series = format!("warden_revocation_messages_dropped_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Waits (bounded) until `reason` has counted `n` dropped messages.
async fn wait_dropped(gw: &Gateway, reason: &str, n: u64) {
    let start = Instant::now();
    while dropped(gw, reason).await < n {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{n} message(s) never counted as dropped ({reason})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A forged revocation (the old unsigned JSON, or a JWS under the authority's `kid` signed by
/// another key) published straight to the channel revokes nothing and is counted; what the
/// authority publishes still revokes within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_revocation_published_to_the_channel_revokes_nothing() {
    let test = "a_forged_revocation_published_to_the_channel_revokes_nothing";
    let Some((redis, channel)) = redis_channel(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (auth, secret) = authority(dir.path(), Some((&redis, &channel))).await;
    let (gw, _up) = gateway(
        &auth,
        dir.path(),
        &format!(
            "poll_interval = \"30s\"\nredis_url = \"{redis}\"\nredis_channel = \"{channel}\"\n\
             signed_by = \"authority\""
        ),
    )
    .await;
    wait_subscribed(&redis, None, &channel).await;
    let token = fetch_token(auth.addr(), &secret).await;
    assert_eq!(call(&gw, &token).await.status, 200, "verified and cached");
    let c = claims_of(&token);
    let (jti, exp) = (c["jti"].as_str().unwrap(), c["exp"].as_i64().unwrap());
    let now = warden_test_util::jwt::now();

    let unsigned = json!({"jti": jti, "exp": exp, "seq": 1}).to_string();
    publish(&redis, &channel, unsigned.as_bytes()).await;
    wait_dropped(&gw, "unsigned", 1).await;
    assert_eq!(
        call(&gw, &token).await.status,
        200,
        "an unsigned message revokes nothing"
    );

    let kid = kid_of(&token);
    let intruder = warden_test_util::jwt::TestIssuer::new(ISSUER);
    let forged = intruder.token_with_header(
        &json!({"alg": "ES256", "kid": kid, "typ": warden_auth::revocation::message::TYP}),
        &json!({"jti": jti, "exp": exp, "seq": 1, "iat": now}),
    );
    publish(&redis, &channel, forged.as_bytes()).await;
    wait_dropped(&gw, "bad_signature", 1).await;
    let own_kid = warden_auth::revocation::message::sign(&intruder.key, jti, exp, 1, now);
    publish(&redis, &channel, own_kid.as_bytes()).await;
    wait_dropped(&gw, "unknown_key", 1).await;
    assert_eq!(
        call(&gw, &token).await.status,
        200,
        "a forged signature revokes nothing"
    );

    // The authority's own message still gets through, within a second.
    let took = revoke_and_measure(&auth, &gw, &secret, Duration::from_secs(1)).await;
    println!("signed revocation latency through Redis pub/sub: {took:?}");
    assert_eq!(dropped(&gw, "unsigned").await, 1);
    // Each forgery is a security event too.
    let text =
        String::from_utf8_lossy(&client::get(gw.admin(), "/metrics").await.body).into_owned();
    for reason in ["unsigned", "bad_signature", "unknown_key"] {
        let series = format!(
            "warden_security_events_total{{event=\"revocation.message_dropped\",reason=\"{reason}\"}} 1"
        );
        assert!(text.contains(&series), "{series}: {text}");
    }
    auth.shutdown().await;
}

/// The `kid` in a compact JWS's header.
fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let h: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    h["kid"].as_str().unwrap().to_owned()
}

/// A message signed by the right key but with an `iat` beyond `max_message_age` is dropped as
/// stale (a captured message cannot be replayed much later); the same one signed now revokes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_signed_revocation_is_dropped() {
    let test = "a_stale_signed_revocation_is_dropped";
    let Some((redis, channel)) = redis_channel(test) else {
        return;
    };
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let feed = JwksServer::start(json!({"revocations": [], "next": 0})).await;
    let gw = Gateway::start(&format!(
        r#"{}
[[auth.jwt]]
name = "t"
issuer = "{}"
audiences = ["api"]
algorithms = ["ES256"]
jwks_file = "{}"
[auth.revocation]
feed_url = "{}"
poll_interval = "30s"
redis_url = "{redis}"
redis_channel = "{channel}"
signed_by = "t"
max_message_age = "30s"
[[clusters]]
name = "c"
endpoints = ["{}"]
[[routes]]
name = "api"
cluster = "c"
path_prefix = "/"
[routes.auth]
accept = ["jwt"]
"#,
        base_toml(),
        iss.iss,
        iss.jwks_file().display(),
        feed.url(),
        up.url()
    ))
    .await;
    wait_subscribed(&redis, None, &channel).await;
    let claims = iss.claims("alice", "api", "");
    let (jti, exp) = (
        claims["jti"].as_str().unwrap().to_owned(),
        claims["exp"].as_i64().unwrap(),
    );
    let token = iss.token(&claims);
    assert_eq!(call(&gw, &token).await.status, 200);
    let now = warden_test_util::jwt::now();
    let sign = |iat| warden_auth::revocation::message::sign(&iss.key, &jti, exp, 1, iat);
    publish(&redis, &channel, sign(now - 120).as_bytes()).await;
    publish(&redis, &channel, sign(now + 120).as_bytes()).await;
    wait_dropped(&gw, "stale", 2).await;
    assert_eq!(
        call(&gw, &token).await.status,
        200,
        "stale messages revoke nothing"
    );
    publish(&redis, &channel, sign(now).as_bytes()).await;
    let start = Instant::now();
    while call(&gw, &token).await.status != 401 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a fresh signed message did not revoke"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
