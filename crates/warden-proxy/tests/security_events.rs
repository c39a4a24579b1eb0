//! The security-event stream (issue 13): each refusal the gateway makes is one JSON line with
//! a stable `event` and `reason` and counts in `warden_security_events_total`; a flood of
//! identical refusals is written at the configured rate with a count of what was left out;
//! a config reload, accepted or refused, is an event with the file's SHA-256.

use std::path::Path;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use warden_test_util::authcfg::{cluster, issuer, metrics, q, route, series, wait_for_lines, Keys};
use warden_test_util::jwt::TestIssuer;
use warden_test_util::{base_toml, client, Gateway, Upstream};

fn config(up: &Upstream, iss: &TestIssuer, events: &Path, per_second: u32) -> String {
    let jwks = iss.jwks_file();
    [
        base_toml(),
        format!(
            "[security_events]\npath = {}\nmax_lines_per_second = {per_second}\n",
            q(events)
        ),
        issuer("test", &iss.iss, &["ES256"], Keys::JwksFile(&jwks), ""),
        cluster("c", up),
        route(
            "admin",
            "/admin",
            "c",
            Some("accept = [\"jwt\"]\nscopes_all = [\"admin\"]"),
        ),
        route("api", "/", "c", Some("accept = [\"jwt\"]")),
        "[[routes.rate_limits]]\nkey = \"client_ip\"\nrequests = 3\nper = \"1m\"\nburst = 3\n"
            .into(),
    ]
    .join("\n")
}

async fn call(gw: &Gateway, path: &str, token: Option<&str>) -> u16 {
    let mut b = Request::get(path).header("host", "localhost");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    client::send_h1(gw.addr("main"), b.body(Full::new(Bytes::new())).unwrap())
        .await
        .status
}

async fn lines(path: &Path, n: usize) -> Vec<Value> {
    wait_for_lines(path, n)
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn count(text: &str, event: &str, reason: &str) -> f64 {
    series(
        text,
        &format!("warden_security_events_total{{event=\"{event}\",reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn each_refusal_is_an_event_with_a_stable_name_and_reason_and_a_count() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let gw = Gateway::start(&config(&up, &iss, &events, 10)).await;
    let good = iss.token(&iss.claims("alice", "api", "read"));
    let mut expired_claims = iss.claims("alice", "api", "read");
    expired_claims["exp"] = serde_json::json!(1_000_000);
    let expired = iss.token(&expired_claims);
    let other = TestIssuer::new("https://issuer.test");
    let unknown_key = other.token(&iss.claims("mallory", "api", "admin"));
    // Another key's signature under this issuer's key id.
    let forged = other.token_with_header(&iss.header(), &iss.claims("mallory", "api", "admin"));

    assert_eq!(call(&gw, "/x", None).await, 401);
    assert_eq!(call(&gw, "/x", Some(&expired)).await, 401);
    assert_eq!(call(&gw, "/x", Some(&unknown_key)).await, 401);
    assert_eq!(call(&gw, "/x", Some(&forged)).await, 401);
    assert_eq!(call(&gw, "/admin/x", Some(&good)).await, 403);
    for _ in 0..3 {
        assert_eq!(call(&gw, "/x", Some(&good)).await, 200);
    }
    assert_eq!(call(&gw, "/x", Some(&good)).await, 429);

    let got = lines(&events, 6).await;
    let pairs: Vec<(String, String)> = got
        .iter()
        .map(|l| {
            (
                l["event"].as_str().unwrap().to_owned(),
                l["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let pair = |e: &str, r: &str| (e.to_owned(), r.to_owned());
    assert_eq!(
        pairs,
        [
            pair("authn.failure", "missing_credential"),
            pair("authn.failure", "expired"),
            pair("authn.failure", "unknown_kid"),
            pair("authn.failure", "bad_signature"),
            pair("authz.denied", "insufficient_scope"),
            pair("ratelimit.refused", "over_limit"),
        ]
    );
    // What each line says about the request, and never the credential.
    let denied = &got[4];
    assert_eq!(denied["route"], "admin");
    assert_eq!(denied["method"], "GET");
    assert_eq!(denied["status"], 403);
    assert_eq!(denied["client"], "127.0.0.1");
    assert_eq!(
        denied["subject"], "alice",
        "the policy refused someone: {denied}"
    );
    assert!(denied["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(got[5]["detail"]["key"], "client_ip", "{}", got[5]);
    assert!(got[0].get("subject").is_none(), "{}", got[0]);
    let text = std::fs::read_to_string(&events).unwrap();
    for secret in [&good, &expired, &unknown_key, &forged] {
        assert!(!text.contains(secret.as_str()), "a token in the stream");
    }

    let m = metrics(gw.admin()).await;
    assert_eq!(count(&m, "authn.failure", "missing_credential"), 1.0, "{m}");
    assert_eq!(count(&m, "authn.failure", "expired"), 1.0, "{m}");
    assert_eq!(count(&m, "authz.denied", "insufficient_scope"), 1.0, "{m}");
    assert_eq!(count(&m, "ratelimit.refused", "over_limit"), 1.0, "{m}");
}

#[tokio::test]
async fn a_flood_of_bad_tokens_is_counted_whole_and_written_at_the_rate() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let gw = Gateway::start(&config(&up, &iss, &events, 5)).await;
    let flood = 200;
    for _ in 0..flood {
        assert_eq!(call(&gw, "/x", Some("not.a.token")).await, 401);
    }
    let m = metrics(gw.admin()).await;
    let counted: f64 = m
        .lines()
        .filter(|l| l.starts_with("warden_security_events_total{event=\"authn.failure\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted, flood as f64, "{m}");
    let suppressed = series(&m, "warden_security_events_suppressed_total").unwrap();
    // 200 requests take well under the seconds it would take to write them all at 5 a second.
    let written = wait_for_lines(&events, 5).await.lines().count();
    assert!(written < 40, "{written} lines for {flood} refusals");
    assert_eq!(written as f64 + suppressed, flood as f64, "{m}");
    // After a quiet second, the next refusal's line says how many were left out.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(call(&gw, "/x", Some("not.a.token")).await, 401);
    let last: Value = serde_json::from_str(
        wait_for_lines(&events, written + 1)
            .await
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["suppressed"], suppressed, "{last}");
}

#[tokio::test]
async fn reloads_accepted_and_refused_are_events_with_the_configs_hash() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let toml = config(&up, &iss, &events, 10);
    let gw = Gateway::start(&toml).await;
    gw.rewrite(&format!("{toml}\n# a comment changes the hash\n"));
    let sha = |p: &Path| {
        let out = std::process::Command::new("sha256sum")
            .arg(p)
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    let accepted = sha(&gw.config_path());
    gw.handle.reload().await.expect("reload");
    gw.rewrite(&toml.replace("requests = 3", "requests = 0"));
    let refused = sha(&gw.config_path());
    assert!(gw.handle.reload().await.is_err());
    let got = lines(&events, 2).await;
    assert_eq!(got[0]["event"], "config.reload");
    assert_eq!(got[0]["reason"], "accepted");
    assert_eq!(got[0]["detail"]["config_sha256"], accepted.as_str());
    assert_eq!(got[1]["reason"], "refused");
    assert_eq!(got[1]["detail"]["config_sha256"], refused.as_str());
    assert!(
        got[1]["detail"]["errors"].as_u64().unwrap() >= 1,
        "{}",
        got[1]
    );
    let m = metrics(gw.admin()).await;
    assert_eq!(count(&m, "config.reload", "accepted"), 1.0);
    assert_eq!(count(&m, "config.reload", "refused"), 1.0);
}
