//! JWT authentication at the gateway over real sockets: valid tokens pass with the identity
//! added for the upstream; missing and invalid ones get 401 with RFC 6750 challenges; scopes
//! and claims give 403; spoofed identity headers never reach the upstream.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use warden_test_util::jwt::TestIssuer;
use warden_test_util::{base_toml, client, Gateway, Upstream};

fn config(up: &Upstream, iss: &TestIssuer, rules: &str) -> String {
    format!(
        r#"{}
[[auth.jwt]]
name = "test"
issuer = "{}"
audiences = ["api"]
algorithms = ["ES256"]
jwks_file = "{}"

[[clusters]]
name = "c"
endpoints = ["{}"]

[[routes]]
name = "api"
cluster = "c"
path_prefix = "/"
[routes.auth]
accept = ["jwt"]
{rules}
"#,
        base_toml(),
        iss.iss,
        iss.jwks_file().display(),
        up.url()
    )
}

async fn call(gw: &Gateway, headers: &[(&str, &str)]) -> client::Answer {
    let mut b = Request::get("/things").header("host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    client::send_h1(gw.addr("main"), b.body(Full::new(Bytes::new())).unwrap()).await
}

#[tokio::test]
async fn a_valid_token_reaches_the_upstream_with_the_identity_and_without_spoofed_headers() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let gw = Gateway::start(&config(&up, &iss, "")).await;
    let token = iss.token(&iss.claims("alice", "api", "read write"));
    let res = call(
        &gw,
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-warden-subject", "root"),
            ("x-warden-anything", "spoof"),
        ],
    )
    .await;
    assert_eq!(res.status, 200);
    let seen = &up.requests()[0];
    assert_eq!(seen.headers["x-warden-subject"], "alice");
    assert_eq!(seen.headers["x-warden-scopes"], "read write");
    assert_eq!(seen.headers["x-warden-auth"], "jwt");
    assert!(!seen.headers.contains_key("x-warden-anything"));
    assert_eq!(seen.headers["authorization"], format!("Bearer {token}"));
}

#[tokio::test]
async fn no_token_gets_401_with_a_bearer_challenge_and_the_upstream_sees_nothing() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let gw = Gateway::start(&config(&up, &iss, "")).await;
    let res = call(&gw, &[]).await;
    assert_eq!(res.status, 401);
    assert_eq!(
        res.header("www-authenticate"),
        Some("Bearer realm=\"warden\"")
    );
    assert_eq!(res.json()["error"], "unauthorized");
    let bad = call(&gw, &[("authorization", "Bearer a.b.c")]).await;
    assert_eq!(bad.status, 401);
    assert_eq!(
        bad.header("www-authenticate"),
        Some("Bearer realm=\"warden\", error=\"invalid_token\"")
    );
    assert_eq!(bad.json()["error"], "invalid_token");
    assert!(up.requests().is_empty());
    let metrics = client::get(gw.admin(), "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(
            "warden_auth_denied_requests_total{route=\"api\",reason=\"malformed_token\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_scope_gets_403_insufficient_scope() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let gw = Gateway::start(&config(&up, &iss, "scopes_all = [\"admin\"]")).await;
    let token = iss.token(&iss.claims("alice", "api", "read"));
    let res = call(&gw, &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(res.status, 403);
    assert_eq!(res.json()["error"], "insufficient_scope");
    assert_eq!(
        res.header("www-authenticate"),
        Some("Bearer realm=\"warden\", error=\"insufficient_scope\", scope=\"admin\"")
    );
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn a_signed_token_with_control_characters_in_identity_claims_is_refused() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let gw = Gateway::start(&config(&up, &iss, "")).await;
    let mut cases = Vec::new();
    for sub in [
        "admin\r\nx-warden-subject: root",
        "admin\n",
        "admin\0",
        "a\u{7f}",
    ] {
        cases.push(iss.claims(sub, "api", "read"));
    }
    let mut c = iss.claims("alice", "api", "read");
    c["client_id"] = "svc\r\nx: y".into();
    cases.push(c);
    cases.push(iss.claims("alice", "api", "read\r\nadmin"));
    cases.push(iss.claims("alice", "api", "read\nadmin"));
    for claims in &cases {
        let token = iss.token(claims);
        let res = call(&gw, &[("authorization", &format!("Bearer {token}"))]).await;
        assert_eq!(res.status, 401, "{claims}");
        assert_eq!(res.json()["error"], "invalid_token", "{claims}");
        // Refused again from the verified-token cache, not only on first sight.
        let again = call(&gw, &[("authorization", &format!("Bearer {token}"))]).await;
        assert_eq!(again.status, 401, "{claims}");
    }
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    let metrics = client::get(gw.admin(), "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    let want = format!(
        "warden_auth_denied_requests_total{{route=\"api\",reason=\"invalid_claim\"}} {}",
        cases.len() * 2
    );
    assert!(text.contains(&want), "{want} not in:\n{text}");
    // The same claims without control characters pass.
    let token = iss.token(&iss.claims("alice", "api", "read admin"));
    let res = call(&gw, &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(res.status, 200);
    assert_eq!(up.requests()[0].headers["x-warden-scopes"], "read admin");
}
