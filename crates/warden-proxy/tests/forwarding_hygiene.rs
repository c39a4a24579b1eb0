//! What reaches an upstream from a hostile client, over real sockets: identity headers spelt
//! with underscores (which CGI, PHP, WSGI, Rails and nginx read as dashes),
//! `forwarding.headers_with_underscores`, HTTP/1.0 requests without `Host`, and `TRACE`.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use warden_test_util::jwt::TestIssuer;
use warden_test_util::{base_toml, client, raw, Gateway, Upstream};

fn config(up: &Upstream, iss: &TestIssuer, extra: &str) -> String {
    format!(
        r#"{}
{extra}
[auth]
strip_headers = ["x-user-id"]

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
name = "traced"
auth = "none"
cluster = "c"
path_prefix = "/traced/"
allow_trace = true

[[routes]]
name = "public"
auth = "none"
cluster = "c"
path_prefix = "/public/"

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
        up.url()
    )
}

/// A raw HTTP/1.1 request with the header lines exactly as written (case and `_` kept).
fn raw_get(path: &str, lines: &[&str]) -> Vec<u8> {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for l in lines {
        r.push_str(l);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

const SPOOFS: &[&str] = &[
    "x_warden_subject: admin",
    "X_Warden_Scopes: admin",
    "x-warden_auth: jwt",
    "X-WARDEN_CLIENT-ID: root-client",
    "x_warden_anything: spoof",
    "x_user_id: 0",
    "X_User-Id: 0",
];

fn assert_no_spoof(headers: &std::collections::BTreeMap<String, String>) {
    for name in headers.keys() {
        let folded = name.replace('_', "-").to_ascii_lowercase();
        assert!(
            !(folded.starts_with("x-warden-") && name.contains('_')) && folded != "x-user-id",
            "{name} reached the upstream: {headers:?}"
        );
    }
}

#[tokio::test]
async fn identity_headers_spelt_with_underscores_never_reach_the_upstream() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let gw = Gateway::start(&config(&up, &iss, "")).await;

    // A public route: no identity of its own, and none forged through underscores.
    let out = raw::exchange(
        gw.addr("main"),
        &raw_get("/public/x", SPOOFS),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(raw::statuses(&out), [200], "{out}");
    let seen = &up.requests()[0].headers;
    assert_no_spoof(seen);
    assert!(!seen.contains_key("x-warden-subject"), "{seen:?}");
    // Underscores are allowed by default for everything else.
    up.clear();
    let out = raw::exchange(
        gw.addr("main"),
        &raw_get("/public/x", &["x_custom_thing: kept"]),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(raw::statuses(&out), [200], "{out}");
    assert_eq!(up.requests()[0].headers["x_custom_thing"], "kept");

    // An authenticated route: the upstream sees the verified subject and nothing else.
    up.clear();
    let token = iss.token(&iss.claims("alice", "api", "read"));
    let auth = format!("Authorization: Bearer {token}");
    let mut lines = SPOOFS.to_vec();
    lines.push(&auth);
    let out = raw::exchange(
        gw.addr("main"),
        &raw_get("/api/x", &lines),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(raw::statuses(&out), [200], "{out}");
    let seen = &up.requests()[0].headers;
    assert_no_spoof(seen);
    assert_eq!(seen["x-warden-subject"], "alice");
    assert_eq!(seen["x-warden-scopes"], "read");
    assert_eq!(seen["x-warden-auth"], "jwt");
}

#[tokio::test]
async fn headers_with_underscores_can_be_dropped_or_refused() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let gw = Gateway::start(&config(
        &up,
        &iss,
        "[forwarding]\nheaders_with_underscores = \"drop\"",
    ))
    .await;
    let out = raw::exchange(
        gw.addr("main"),
        &raw_get(
            "/public/x",
            &["x_custom_thing: gone", "x-custom-thing: kept"],
        ),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(raw::statuses(&out), [200], "{out}");
    let seen = &up.requests()[0].headers;
    assert!(!seen.contains_key("x_custom_thing"), "{seen:?}");
    assert_eq!(seen["x-custom-thing"], "kept");

    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(
        &up,
        &iss,
        "[forwarding]\nheaders_with_underscores = \"reject\"",
    ))
    .await;
    let out = raw::exchange(
        gw.addr("main"),
        &raw_get("/public/x", &["x_custom_thing: no"]),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(raw::statuses(&out), [400], "{out}");
    assert!(out.contains("header name with underscore"), "{out}");
    assert!(up.requests().is_empty());
    let ok = client::get(gw.addr("main"), "/public/x").await;
    assert_eq!(ok.status, 200, "requests without underscores still pass");
}

#[tokio::test]
async fn an_http10_request_without_host_reaches_the_upstream_with_its_authority() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let gw = Gateway::start(&config(&up, &iss, "")).await;
    let out = raw::exchange(
        gw.addr("main"),
        b"GET /public/old HTTP/1.0\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
        "{out}"
    );
    let seen = &up.requests()[0];
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(
        seen.headers.get("host").map(String::as_str),
        Some(up.addr().to_string().as_str()),
        "{:?}",
        seen.headers
    );
    assert!(
        !seen.headers.contains_key("x-forwarded-host"),
        "an empty X-Forwarded-Host was sent: {:?}",
        seen.headers
    );
    // A client's own Host is still what the upstream gets.
    up.clear();
    let out = raw::exchange(
        gw.addr("main"),
        b"GET /public/old HTTP/1.0\r\nHost: shop.example\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(out.contains(" 200 "), "{out}");
    let seen = &up.requests()[0].headers;
    assert_eq!(seen["host"], "shop.example");
    assert_eq!(seen["x-forwarded-host"], "shop.example");
}

#[tokio::test]
async fn trace_and_track_get_405_unless_the_route_allows_them() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let gw = Gateway::start(&config(&up, &iss, "")).await;
    for method in ["TRACE", "TRACK"] {
        let req = Request::builder()
            .method(method)
            .uri("/public/x")
            .header("host", "localhost")
            .header("cookie", "session=secret")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = client::send_h1(gw.addr("main"), req).await;
        assert_eq!(res.status, 405, "{method}");
        assert_eq!(res.json()["error"], "method_not_allowed");
        let allow = res.header("allow").unwrap_or_default();
        assert!(allow.contains("GET") && !allow.contains("TRACE"), "{allow}");
    }
    // Over HTTP/2 too.
    let req = Request::builder()
        .method("TRACE")
        .uri(format!(
            "http://localhost:{}/public/x",
            gw.addr("main").port()
        ))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client::send_h2c(gw.addr("main"), req).await.status, 405);
    assert!(up.requests().is_empty(), "TRACE reached the upstream");

    let req = Request::builder()
        .method("TRACE")
        .uri("/traced/x")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client::send_h1(gw.addr("main"), req).await.status, 200);
    assert_eq!(up.requests()[0].method, "TRACE");
}
