//! WebSockets through the gateway with the `websockets` library from PyPI, unmodified, as
//! both the client and the upstream server (scripts/interop/test_websockets.py, driven line by
//! line from here): authentication at the upgrade, messages of every size both ways, a reload
//! while a socket is open, a revoked token closing its socket with 1008 on both sides, and the
//! route's idle timeout closing a quiet socket with 1001. The access log and the metrics say
//! how each socket ended.

use serde_json::{json, Value};
use warden_test_util::authcfg::{access_log_toml, metrics_once, series, wait_for_lines};
use warden_test_util::interop::Script;
use warden_test_util::jwt::TestIssuer;
use warden_test_util::servers::JwksServer;
use warden_test_util::{base_toml, Gateway};

fn config(base: &str, iss: &TestIssuer, feed: &str, upstream: u16, extra: &str) -> String {
    format!(
        r#"{base}
[[auth.jwt]]
name = "t"
issuer = "{iss}"
audiences = ["api"]
algorithms = ["ES256"]
jwks_file = "{jwks}"
[auth.revocation]
feed_url = "{feed}"
poll_interval = "200ms"
[[clusters]]
name = "echo"
endpoints = ["http://127.0.0.1:{upstream}"]
[[routes]]
name = "ws"
cluster = "echo"
path_prefix = "/ws/"
[routes.auth]
accept = ["jwt"]
[routes.websocket]
idle_timeout = "30s"
[[routes]]
name = "idle"
auth = "none"
cluster = "echo"
path_prefix = "/idle/"
[routes.websocket]
idle_timeout = "1s"
{extra}
"#,
        iss = iss.iss,
        jwks = iss.jwks_file().display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_client_and_server_talk_through_the_gateway_with_auth_reload_revocation_and_idle_timeout(
) {
    let mut script = Script::start("test_websockets.py").await;
    let port: u16 = script.expect("upstream ").await.parse().unwrap();
    let iss = TestIssuer::new("https://issuer.test");
    let feed = JwksServer::start(json!({"revocations": [], "next": 0})).await;
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("access.log");
    let base = access_log_toml(&base_toml(), &log);
    let feed_url = feed.url();
    let gw = Gateway::start(&config(&base, &iss, &feed_url, port, "")).await;
    let claims = iss.claims("alice", "api", "");
    let token = iss.token(&claims);
    script
        .send(&format!("gateway ws://{} {token}", gw.addr("main")))
        .await;
    assert_eq!(script.line().await, "open");
    // A reload that changes the routes: the open socket keeps the config it started with.
    let extra = "[[routes]]\nname = \"later\"\nauth = \"none\"\ncluster = \"echo\"\npath_exact = \"/later\"\n";
    gw.rewrite(&config(&base, &iss, &feed_url, port, extra));
    gw.handle.reload().await.expect("the reload applies");
    script.send("reloaded").await;
    assert_eq!(script.line().await, "still-open");

    feed.set_body(
        json!({"revocations": [{"jti": claims["jti"], "exp": claims["exp"], "seq": 1}], "next": 1})
            .to_string(),
    );
    script.send("revoked").await;
    let results: Value = serde_json::from_str(&script.expect("done ").await).unwrap();
    println!("{results:#}");

    assert_eq!(results["unauthenticated"], 401, "{results}");
    assert_eq!(results["echo"], "ok");
    assert!(
        results["extensions"]
            .as_str()
            .is_some_and(|e| e.contains("permessage-deflate")),
        "extensions are negotiated end to end: {results}"
    );
    assert_eq!(results["revoked"], 1008, "{results}");
    assert_eq!(results["revoked_reason"], "credential revoked");
    assert_eq!(results["idle"], 1001, "{results}");
    let idle_after = results["idle_after_s"].as_f64().unwrap();
    assert!(
        (0.9..5.0).contains(&idle_after),
        "closed after {idle_after} s"
    );
    let upstream_closes = results["upstream_closes"].to_string();
    for expected in [r#"["/ws/feed",1008]"#, r#"["/idle/x",1001]"#] {
        assert!(
            upstream_closes.contains(expected),
            "the upstream got the close frame too: {upstream_closes}"
        );
    }

    // The tunnel counts its end once both sides are closed, a moment after the client saw it.
    let text = metrics_once(
        gw.admin(),
        "warden_websocket_connections_open{route=\"idle\"}",
        0.0,
    )
    .await;
    for (route, reason) in [
        ("ws", "revoked"),
        ("ws", "client_closed"),
        ("idle", "idle_timeout"),
    ] {
        assert_eq!(
            series(
                &text,
                &format!("warden_websocket_closed_total{{route=\"{route}\",reason=\"{reason}\"}}")
            ),
            Some(1.0),
            "{route} {reason}: {text}"
        );
    }
    assert_eq!(
        series(&text, "warden_websocket_upgrades_total{route=\"ws\"}"),
        Some(2.0),
        "{text}"
    );
    for route in ["ws", "idle"] {
        assert_eq!(
            series(
                &text,
                &format!("warden_websocket_connections_open{{route=\"{route}\"}}")
            ),
            Some(0.0),
            "{text}"
        );
    }
    let to_upstream = series(
        &text,
        "warden_websocket_bytes_total{route=\"ws\",direction=\"to_upstream\"}",
    )
    .unwrap();
    assert!(to_upstream > 10_000.0, "{to_upstream}");

    // One access-log line per socket, written when it ended, with how it ended.
    let lines = wait_for_lines(&log, 4).await;
    let records: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let closed: Vec<(&str, u64, &str)> = records
        .iter()
        .filter_map(|r| {
            Some((
                r["route"].as_str()?,
                r["status"].as_u64()?,
                r["closed"].as_str()?,
            ))
        })
        .collect();
    for expected in [
        ("ws", 101, "client_closed"),
        ("ws", 101, "revoked"),
        ("idle", 101, "idle_timeout"),
    ] {
        assert!(closed.contains(&expected), "{expected:?} in {lines}");
    }
    assert!(
        records.iter().any(|r| r["route"] == "ws"
            && r["status"] == 401
            && r["reason"] == "missing_credential"),
        "{lines}"
    );
    script.finish().await;
}
