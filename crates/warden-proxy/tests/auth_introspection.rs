//! Opaque tokens checked by RFC 7662 introspection, over real sockets: active tokens reach the
//! upstream with the identity the endpoint vouched for; inactive, expired and wrong-audience
//! tokens get 401; an endpoint that is down, hanging, failing or refusing the gateway's
//! credentials gets 503 (fail closed) without the upstream being called; verdicts are cached
//! (active ones, and inactive ones for `negative_ttl`), failures never.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::json;
use warden_test_util::jwt::now;
use warden_test_util::servers::IntrospectionServer;
use warden_test_util::{base_toml, client, Gateway, Upstream};

/// The gateway's client secret: form-encoding and the file's trailing newline both matter.
const SECRET: &str = "s3cret:p@ss word";
const TIMEOUT: Duration = Duration::from_millis(300);

struct Setup {
    gw: Gateway,
    up: Upstream,
    idp: IntrospectionServer,
    _dir: tempfile::TempDir,
}

/// A gateway whose route accepts `introspection:idp`; the endpoint expects `server_secret`.
/// `extra` goes into the `[[auth.introspection]]` table.
async fn setup(server_secret: &str, extra: &str) -> Setup {
    let idp = IntrospectionServer::start("gateway", server_secret).await;
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client_secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let toml = format!(
        r#"{}
[[auth.introspection]]
name = "idp"
url = "{}"
client_id = "gateway"
client_secret = "file:{}"
timeout = "{}ms"
negative_ttl = "2s"
{extra}

[[clusters]]
name = "c"
endpoints = ["{}"]

[[routes]]
name = "api"
cluster = "c"
path_prefix = "/"
[routes.auth]
accept = ["introspection:idp"]
"#,
        base_toml(),
        idp.url(),
        secret.display(),
        TIMEOUT.as_millis(),
        up.url()
    );
    let gw = Gateway::start(&toml).await;
    Setup {
        gw,
        up,
        idp,
        _dir: dir,
    }
}

async fn call(gw: &Gateway, token: &str) -> client::Answer {
    let req = Request::get("/things")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    client::send_h1(gw.addr("main"), req).await
}

fn assert_invalid_token(res: &client::Answer) {
    assert_eq!(res.status, 401, "{:?}", res.body);
    assert_eq!(res.json()["error"], "invalid_token");
    assert_eq!(
        res.header("www-authenticate"),
        Some("Bearer realm=\"warden\", error=\"invalid_token\"")
    );
}

fn assert_unavailable(res: &client::Answer) {
    assert_eq!(res.status, 503, "{:?}", res.body);
    assert_eq!(res.json()["error"], "auth_unavailable");
}

#[tokio::test]
async fn an_active_token_reaches_the_upstream_with_the_introspected_identity() {
    let s = setup(SECRET, "").await;
    // Characters a bearer token may hold that form-encoding must escape.
    let token = "op+aque/al~ice.1==";
    s.idp.set(
        token,
        json!({
            "active": true, "sub": "alice", "scope": "read write", "client_id": "app",
            "exp": now() + 300, "iss": "https://as.test",
        }),
    );
    let res = call(&s.gw, token).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    let seen = &s.up.requests()[0];
    assert_eq!(seen.headers["x-warden-subject"], "alice");
    assert_eq!(seen.headers["x-warden-auth"], "introspection");
    assert_eq!(seen.headers["x-warden-scopes"], "read write");
    assert_eq!(seen.headers["x-warden-client-id"], "app");

    let calls = s.idp.requests();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c.method, "POST");
    assert!(c.authorized, "Basic credentials refused");
    assert_eq!(
        c.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(c.accept.as_deref(), Some("application/json"));
    assert_eq!(
        c.form,
        [
            ("token".to_owned(), token.to_owned()),
            ("token_type_hint".to_owned(), "access_token".to_owned())
        ]
    );
}

#[tokio::test]
async fn inactive_unknown_and_expired_tokens_get_401_invalid_token() {
    let s = setup(SECRET, "").await;
    s.idp
        .set("revoked", json!({"active": false, "sub": "alice"}));
    s.idp.set(
        "expired",
        json!({"active": true, "sub": "alice", "exp": now() - 10}),
    );
    s.idp.set("nobody", json!({"active": true}));
    for token in ["revoked", "never-issued", "expired", "nobody"] {
        assert_invalid_token(&call(&s.gw, token).await);
    }
    assert_eq!(s.idp.calls(), 4);
    assert!(s.up.requests().is_empty());
}

#[tokio::test]
async fn an_unreachable_or_failing_endpoint_fails_closed_with_503() {
    let s = setup(SECRET, "").await;
    s.idp.set("t", json!({"active": true, "sub": "alice"}));
    s.idp.set_status(500);
    assert_unavailable(&call(&s.gw, "t").await);
    assert_unavailable(&call(&s.gw, "t").await);
    assert_eq!(s.idp.calls(), 2, "failures are not cached");
    s.idp.stop().await;
    assert_unavailable(&call(&s.gw, "t").await);
    assert!(s.up.requests().is_empty());
}

#[tokio::test]
async fn a_hanging_endpoint_gets_503_within_the_timeout() {
    let s = setup(SECRET, "").await;
    s.idp.set("t", json!({"active": true, "sub": "alice"}));
    s.idp.set_hang(true);
    let started = Instant::now();
    let res = call(&s.gw, "t").await;
    let took = started.elapsed();
    assert_unavailable(&res);
    assert!(
        took >= TIMEOUT,
        "answered after {took:?}, before the timeout"
    );
    assert!(
        took < TIMEOUT + Duration::from_millis(1500),
        "answered after {took:?}"
    );
    assert_eq!(s.idp.calls(), 1);
    assert!(s.up.requests().is_empty());
}

#[tokio::test]
async fn an_active_result_is_cached() {
    let s = setup(SECRET, "").await;
    s.idp.set(
        "t",
        json!({"active": true, "sub": "alice", "exp": now() + 300}),
    );
    assert_eq!(call(&s.gw, "t").await.status, 200);
    // Even with the endpoint failing, the cached verdict answers.
    s.idp.set_status(500);
    let res = call(&s.gw, "t").await;
    assert_eq!(res.status, 200);
    assert_eq!(s.idp.calls(), 1);
    assert_eq!(s.up.requests().len(), 2);
    assert_eq!(s.up.requests()[1].headers["x-warden-subject"], "alice");
}

#[tokio::test]
async fn an_inactive_result_is_cached_for_the_negative_ttl() {
    let s = setup(SECRET, "").await;
    let started = Instant::now();
    assert_invalid_token(&call(&s.gw, "soon").await);
    assert_invalid_token(&call(&s.gw, "soon").await);
    assert_eq!(s.idp.calls(), 1);
    // The endpoint changes its mind; the gateway asks again once `negative_ttl` (2s) is over.
    s.idp.set("soon", json!({"active": true, "sub": "alice"}));
    let deadline = started + Duration::from_secs(6);
    loop {
        let res = call(&s.gw, "soon").await;
        if res.status == 200 {
            break;
        }
        assert_invalid_token(&res);
        assert!(Instant::now() < deadline, "still refused from the cache");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Whole-second clock: a 2s TTL holds for more than 1s.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(s.idp.calls(), 2);
}

#[tokio::test]
async fn a_wrong_client_secret_gets_503() {
    let s = setup("not-what-the-gateway-has", "").await;
    s.idp.set("t", json!({"active": true, "sub": "alice"}));
    assert_unavailable(&call(&s.gw, "t").await);
    assert_unavailable(&call(&s.gw, "t").await);
    let calls = s.idp.requests();
    assert_eq!(calls.len(), 2, "refusals of the gateway are not cached");
    assert!(calls.iter().all(|c| !c.authorized));
    assert!(s.up.requests().is_empty());
    // With the right secret, the same token works.
    s.idp.set_client_secret(SECRET);
    assert_eq!(call(&s.gw, "t").await.status, 200);
}

#[tokio::test]
async fn an_audience_mismatch_gets_401() {
    let s = setup(SECRET, r#"audiences = ["api"]"#).await;
    s.idp.set(
        "other",
        json!({"active": true, "sub": "a", "aud": "billing"}),
    );
    s.idp.set("none", json!({"active": true, "sub": "a"}));
    s.idp.set(
        "ours",
        json!({"active": true, "sub": "a", "aud": ["billing", "api"]}),
    );
    assert_invalid_token(&call(&s.gw, "other").await);
    assert_invalid_token(&call(&s.gw, "none").await);
    assert_eq!(call(&s.gw, "ours").await.status, 200);
    assert_eq!(s.up.requests().len(), 1);
}
