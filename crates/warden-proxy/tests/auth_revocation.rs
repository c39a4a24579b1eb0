//! Revocation reaches the gateway: a token whose id appears in the token service's revocation
//! feed is refused within one poll interval, even though the gateway had already verified and
//! cached it; other tokens keep working.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::json;
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
}
