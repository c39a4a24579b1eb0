//! The admin console's API and the admin listener's token (issue 13): `admin.token` is
//! required on every admin route but the probes and the console's page; off loopback without
//! a token the data answers 403; every console response carries the strict CSP; the events
//! view returns what came after a number; the reload history keeps a refused reload with its
//! errors; the overview counts each route's requests, 5xx and 4xx.

use std::net::SocketAddr;

use serde_json::Value;
use warden_test_util::authcfg::{cluster, issuer, q, route, Keys};
use warden_test_util::jwt::TestIssuer;
use warden_test_util::{base_toml, client, Behaviour, Gateway, Upstream};

const TOKEN: &str = "console-admin-token-0123456789abcdef";

async fn get(admin: SocketAddr, path: &str, token: Option<&str>) -> client::Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    client::request(admin, "GET", path, &headers, "").await
}

async fn post(admin: SocketAddr, path: &str, token: Option<&str>) -> client::Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    client::request(admin, "POST", path, &headers, "").await
}

/// `base_toml()` with the admin listener on `address`, and `admin.token` from a file when
/// `token` is set.
fn admin_toml(dir: &std::path::Path, address: &str, token: Option<&str>) -> String {
    let mut admin = format!("[admin]\naddress = \"{address}\"\n");
    if let Some(t) = token {
        let path = dir.join("admin-token");
        std::fs::write(&path, format!("{t}\n")).unwrap();
        admin.push_str(&format!("token = \"file:{}\"\n", path.display()));
    }
    base_toml().replace("[admin]\naddress = \"127.0.0.1:0\"\n", &admin)
}

/// A public route `open` to `up`, a JWT route `api` (scope `read`, a rate limit, Cedar
/// policies) and a route `down` to a cluster nothing listens on.
fn routes(up: &Upstream, iss: &TestIssuer, dir: &std::path::Path) -> String {
    let policy = dir.join("policy.cedar");
    std::fs::write(
        &policy,
        "@id(\"readers\")\npermit (principal, action == Warden::Action::\"GET\", resource);\n",
    )
    .unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    [
        issuer(
            "test",
            &iss.iss,
            &["ES256"],
            Keys::JwksFile(&iss.jwks_file()),
            "",
        ),
        format!("[auth.policies]\nfiles = [{}]\n", q(&policy)),
        cluster("c", up),
        format!("[[clusters]]\nname = \"dead\"\nendpoints = [\"{dead_url}\"]\n"),
        route("open", "/open/", "c", None),
        route("down", "/down/", "dead", None),
        route(
            "api",
            "/api/",
            "c",
            Some("accept = [\"jwt\"]\nscopes_all = [\"read\"]\npolicy = true"),
        ),
        "[[routes.rate_limits]]\nkey = \"client_ip\"\nrequests = 100\nper = \"1m\"\nburst = 50\n"
            .into(),
    ]
    .join("\n")
}

/// A gateway with [`routes`] and its admin listener on `address` (with `token`).
struct Setup {
    up: Upstream,
    iss: TestIssuer,
    gw: Gateway,
    toml: String,
    _dir: tempfile::TempDir,
}

async fn setup(address: &str, token: Option<&str>) -> Setup {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let dir = tempfile::tempdir().unwrap();
    let toml = admin_toml(dir.path(), address, token) + &routes(&up, &iss, dir.path());
    let gw = Gateway::start(&toml).await;
    Setup {
        up,
        iss,
        gw,
        toml,
        _dir: dir,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    warden_crypto::jws::sha256(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn assert_console_headers(a: &client::Answer, what: &str) {
    assert_eq!(
        a.header("content-security-policy"),
        Some(warden_proxy::CONSOLE_CSP),
        "{what}"
    );
    assert_eq!(
        a.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(a.header("x-frame-options"), Some("DENY"), "{what}");
}

#[tokio::test]
async fn with_a_token_every_admin_route_but_the_probes_and_the_page_needs_it() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let dir = tempfile::tempdir().unwrap();
    let toml = admin_toml(dir.path(), "127.0.0.1:0", Some(TOKEN)) + &routes(&up, &iss, dir.path());
    let gw = Gateway::start(&toml).await;
    let admin = gw.admin();

    // Open to all: the probes, the internal tokens' public keys, the page and its files, and
    // the session check the page starts with.
    for path in [
        "/healthz",
        "/readyz",
        "/.well-known/jwks.json",
        "/console/",
        "/console/console.js",
        "/console/console.css",
        "/console/icon.svg",
    ] {
        assert_eq!(get(admin, path, None).await.status, 200, "{path}");
    }
    let page = get(admin, "/console/", None).await;
    assert_console_headers(&page, "the page");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        html.contains("<script src=\"/console/console.js\" defer></script>"),
        "{html}"
    );
    assert!(!html.contains("style="), "no inline style: {html}");
    let redirect = get(admin, "/console", None).await;
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.header("location"), Some("/console/"));
    let session = get(admin, "/console/api/session", None).await;
    assert_eq!(session.status, 200);
    assert_eq!(session.json()["token_required"], true);
    assert_eq!(session.json()["authorized"], false);

    // Everything else: 401 without the token or with a wrong one (same length or not), with
    // the console's headers on the console's refusals.
    let wrong_same_length: String = TOKEN.chars().rev().collect();
    for path in [
        "/config",
        "/upstreams",
        "/metrics",
        "/console/api/overview",
        "/console/api/events",
        "/console/api/config",
        "/console/api/routes",
        "/console/api/authority",
    ] {
        for token in [None, Some("nope"), Some(wrong_same_length.as_str())] {
            let a = get(admin, path, token).await;
            assert_eq!(a.status, 401, "{path} with {token:?}");
            assert_eq!(
                a.header("www-authenticate"),
                Some("Bearer realm=\"warden-admin\"")
            );
            assert!(a.json()["message"]
                .as_str()
                .unwrap()
                .contains("admin.token"));
        }
        let a = get(admin, path, Some(TOKEN)).await;
        assert_eq!(a.status, 200, "{path} with the token: {:?}", a.body);
    }
    let refused = get(admin, "/console/api/overview", None).await;
    assert_console_headers(&refused, "a refusal under /console");
    assert_eq!(post(admin, "/reload", None).await.status, 401);
    assert_eq!(post(admin, "/reload", Some(TOKEN)).await.status, 200);
    // The scheme is case-insensitive, as RFC 9110 says.
    let lower = client::request(
        admin,
        "GET",
        "/config",
        &[("authorization", &format!("bearer {TOKEN}"))],
        "",
    )
    .await;
    assert_eq!(lower.status, 200);
    let session = get(admin, "/console/api/session", Some(TOKEN)).await;
    assert_eq!(session.json()["authorized"], true);

    // The API's answers: JSON, never cached, under the CSP; GET only.
    let a = get(admin, "/console/api/overview", Some(TOKEN)).await;
    assert_console_headers(&a, "the API");
    assert_eq!(a.header("cache-control"), Some("no-store"));
    assert_eq!(a.json()["gateway"]["token_required"], true);
    assert_eq!(
        post(admin, "/console/api/overview", Some(TOKEN))
            .await
            .status,
        405
    );
    // The token never shows in the config dump: only its reference.
    let config = get(admin, "/console/api/config", Some(TOKEN)).await;
    let text = String::from_utf8_lossy(&config.body);
    assert!(!text.contains(TOKEN), "{text}");
    assert!(text.contains("file:"), "{text}");
}

#[tokio::test]
async fn off_loopback_without_a_token_the_data_is_forbidden_and_probes_and_scrapes_stay_open() {
    let s = setup("0.0.0.0:0", None).await;
    let gw = &s.gw;
    let admin: SocketAddr = format!("127.0.0.1:{}", gw.admin().port()).parse().unwrap();

    for path in [
        "/config",
        "/upstreams",
        "/console/api/overview",
        "/console/api/events",
        "/console/api/routes",
        "/console/api/config",
    ] {
        let a = get(admin, path, None).await;
        assert_eq!(a.status, 403, "{path}");
        let msg = a.json()["message"].as_str().unwrap().to_owned();
        assert!(msg.contains("set `admin.token`"), "{msg}");
        assert!(a.header("www-authenticate").is_none());
    }
    assert_eq!(post(admin, "/reload", None).await.status, 403);
    for path in ["/metrics", "/healthz", "/readyz", "/console/"] {
        assert_eq!(get(admin, path, None).await.status, 200, "{path}");
    }
    let session = get(admin, "/console/api/session", None).await.json();
    assert_eq!(session["forbidden"], true, "{session}");
    assert!(session["message"].as_str().unwrap().contains("admin.token"));
}

#[tokio::test]
async fn events_after_a_number_are_the_newer_ones_without_credentials_and_bad_numbers_are_refused()
{
    let s = setup("127.0.0.1:0", None).await;
    let iss = &s.iss;
    let gw = &s.gw;
    let admin = gw.admin();
    let main = gw.addr("main");

    let empty = get(admin, "/console/api/events", None).await.json();
    assert_eq!(empty["events"], serde_json::json!([]));
    assert_eq!(empty["last"], 0);
    // Three refusals: no token, a bad one, a token without the scope.
    let bad = "eyJhbGciOiJFUzI1NiJ9.bm90LWEtdG9rZW4.c2ln";
    let no_scope = iss.token(&iss.claims("alice", "api", "write"));
    assert_eq!(get(main, "/api/x", None).await.status, 401);
    assert_eq!(get(main, "/api/x", Some(bad)).await.status, 401);
    assert_eq!(get(main, "/api/x", Some(&no_scope)).await.status, 403);

    let all = get(admin, "/console/api/events?after=0", None).await;
    assert_eq!(all.status, 200);
    let all = all.json();
    let events = all["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{all}");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(events[0]["event"], "authn.failure");
    assert_eq!(events[0]["reason"], "missing_credential");
    assert_eq!(events[0]["route"], "api");
    assert_eq!(events[0]["status"], 401);
    assert_eq!(events[2]["event"], "authz.denied");
    assert_eq!(events[2]["subject"], "alice");
    assert_eq!(all["last"], 3);
    let text = all.to_string();
    assert!(
        !text.contains(bad) && !text.contains(&no_scope),
        "a credential in the events"
    );

    let newer = get(admin, "/console/api/events?after=2", None).await.json();
    assert_eq!(newer["events"].as_array().unwrap().len(), 1);
    assert_eq!(newer["events"][0]["seq"], 3);
    let page = get(admin, "/console/api/events?after=0&limit=2", None)
        .await
        .json();
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(page["more"], true);
    let none = get(admin, "/console/api/events?after=3", None).await.json();
    assert_eq!(none["events"], serde_json::json!([]));
    for bad_after in ["abc", "-1", "1.5", "18446744073709551616", "%00"] {
        let a = get(
            admin,
            &format!("/console/api/events?after={bad_after}"),
            None,
        )
        .await;
        assert_eq!(a.status, 400, "after={bad_after}");
    }
}

#[tokio::test]
async fn the_reload_history_keeps_a_refused_reload_with_its_errors_and_the_files_hash() {
    let s = setup("127.0.0.1:0", None).await;
    let gw = &s.gw;
    let toml = &s.toml;
    let admin = gw.admin();

    let broken = format!("{toml}\n{}", route("lost", "/lost/", "nosuch", None));
    gw.rewrite(&broken);
    let r = post(admin, "/reload", None).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    let hash = sha256_hex(broken.as_bytes());

    let c = get(admin, "/console/api/config", None).await.json();
    let reloads = c["reloads"].as_array().unwrap();
    assert_eq!(reloads.len(), 2, "{c}");
    assert_eq!(reloads[0]["outcome"], "refused");
    assert_eq!(reloads[0]["config_sha256"], hash.as_str());
    let errors = reloads[0]["errors"].to_string();
    assert!(errors.contains("routes[3].cluster"), "{errors}");
    assert_eq!(reloads[1]["outcome"], "started");
    assert_eq!(
        reloads[1]["config_sha256"],
        sha256_hex(toml.as_bytes()).as_str()
    );
    // The running config is still the first one.
    let routes: Vec<&str> = c["config"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(routes, ["open", "down", "api"]);
    // The refusal is also a live event.
    let events = get(admin, "/console/api/events", None).await.json();
    let reload = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "config.reload")
        .cloned()
        .unwrap_or_else(|| panic!("no config.reload in {events}"));
    assert_eq!(reload["reason"], "refused");
    assert_eq!(reload["detail"]["config_sha256"], hash.as_str());

    // Fixed: accepted, newest first.
    gw.rewrite(toml);
    assert_eq!(post(admin, "/reload", None).await.status, 200);
    let c = get(admin, "/console/api/config", None).await.json();
    assert_eq!(c["reloads"][0]["outcome"], "accepted");
    assert_eq!(c["reloads"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn the_overview_counts_each_routes_requests_server_errors_and_refusals() {
    let s = setup("127.0.0.1:0", None).await;
    let up = &s.up;
    let gw = &s.gw;
    let admin = gw.admin();
    let main = gw.addr("main");
    for _ in 0..5 {
        assert_eq!(client::get(main, "/open/x").await.status, 200);
    }
    up.set(Behaviour {
        status: 503,
        ..Default::default()
    });
    assert_eq!(client::get(main, "/open/x").await.status, 503);
    for _ in 0..2 {
        assert!(client::get(main, "/down/x").await.status >= 500);
    }
    for _ in 0..3 {
        assert_eq!(client::get(main, "/api/x").await.status, 401);
    }

    let o = get(admin, "/console/api/overview", None).await.json();
    let route = |name: &str| -> Value {
        o["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {o}"))
    };
    let open = route("open")["last_minute"].clone();
    assert_eq!(open["requests"], 6, "{o}");
    assert_eq!(open["server_errors"], 1);
    assert!((open["error_ratio"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-9);
    assert!(open["p99_ms"].as_f64().is_some_and(|p| p > 0.0), "{open}");
    let down = route("down")["last_minute"].clone();
    assert_eq!(down["server_errors"], 2);
    assert_eq!(down["error_ratio"], 1.0);
    let api = route("api")["last_minute"].clone();
    assert_eq!(api["client_errors"], 3);
    assert_eq!(api["server_errors"], 0);
    assert_eq!(o["bucket_seconds"], 10);
    assert_eq!(o["window_seconds"], 600);
    assert_eq!(o["gateway"]["ready"], true);
}

#[tokio::test]
async fn the_routes_view_shows_match_auth_policies_limits_and_cluster() {
    let s = setup("127.0.0.1:0", None).await;
    let gw = &s.gw;
    let r = get(gw.admin(), "/console/api/routes", None).await.json();
    let api = r["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "api")
        .cloned()
        .unwrap();
    assert_eq!(api["match"]["path_prefix"], "/api/", "{api}");
    assert_eq!(api["listeners"], serde_json::json!(["main"]));
    assert_eq!(api["auth"]["accept"], serde_json::json!(["jwt"]));
    assert_eq!(api["auth"]["scopes_all"], serde_json::json!(["read"]));
    assert_eq!(api["auth"]["policy"], true);
    assert_eq!(api["rate_limits"][0]["requests"], 100);
    assert_eq!(api["cluster"], "c");
    let open = &r["routes"][0];
    assert_eq!(open["auth"], "none");
    assert_eq!(
        r["policies"],
        serde_json::json!([{"id": "readers", "effect": "permit"}])
    );
    let authority = get(gw.admin(), "/console/api/authority", None).await.json();
    assert_eq!(authority, serde_json::json!({"enabled": false}));
}
