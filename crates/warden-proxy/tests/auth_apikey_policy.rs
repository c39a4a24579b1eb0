//! API keys and Cedar policies at the gateway, over real sockets: keys from the config and from
//! a key file (reloaded when it changes), every way a key can be wrong, and routes whose
//! decisions come from Cedar policies (reloaded with the config).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use warden_auth::apikey;
use warden_config::Timestamp;
use warden_test_util::authcfg::{cluster, q, route};
use warden_test_util::jwt::{now, TestIssuer};
use warden_test_util::{base_toml, client, Gateway, Upstream};

async fn call(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)]) -> client::Answer {
    client::request(gw.addr("main"), method, path, headers, Bytes::new()).await
}

fn key(owner: &str, expires: Option<i64>, revoked: bool) -> (String, warden_config::ApiKeyConfig) {
    let mut attrs = BTreeMap::new();
    attrs.insert("tier".to_owned(), "gold".to_owned());
    let (k, mut entry) = apikey::generate(
        owner,
        vec!["reports:read".into()],
        expires.map(Timestamp),
        attrs,
        now(),
    );
    entry.revoked = revoked;
    (k, entry)
}

#[tokio::test]
async fn api_keys_from_the_key_file_authenticate_and_every_bad_key_gets_401() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    let (good, good_e) = key("billing", None, false);
    let (expired, expired_e) = key("old-job", Some(now() - 10), false);
    let (revoked, revoked_e) = key("gone", None, true);
    std::fs::write(
        &file,
        apikey::write_key_file(&[good_e, expired_e, revoked_e]),
    )
    .unwrap();
    let gw = Gateway::start(&format!(
        "{}\n[auth.api_keys]\nfile = {}\n{}{}",
        base_toml(),
        q(&file),
        cluster("c", &up),
        route(
            "keyed",
            "/",
            "c",
            Some("accept = [\"api_key\"]\nscopes_all = [\"reports:read\"]\nclaims = [{ claim = \"tier\", equals = \"gold\" }]")
        ),
    ))
    .await;

    let res = call(&gw, "GET", "/r", &[("x-api-key", &good)]).await;
    assert_eq!(res.status, 200);
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.headers["x-warden-subject"], "billing");
    assert_eq!(seen.headers["x-warden-auth"], "api_key");
    assert_eq!(seen.headers["x-warden-scopes"], "reports:read");
    let res = call(
        &gw,
        "GET",
        "/r",
        &[("authorization", &format!("ApiKey {good}"))],
    )
    .await;
    assert_eq!(res.status, 200, "Authorization: ApiKey works too");

    let n = up.requests().len();
    let (id, _) = apikey::split_key(&good).unwrap();
    let wrong_secret = format!("wdn_{id}_{}", "A".repeat(40));
    for (what, k) in [
        ("expired", expired.as_str()),
        ("revoked", revoked.as_str()),
        ("wrong secret", wrong_secret.as_str()),
        (
            "unknown id",
            "wdn_zzzzzzzzzz_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ),
        ("malformed", "not-a-key"),
    ] {
        let res = call(&gw, "GET", "/r", &[("x-api-key", k)]).await;
        assert_eq!(res.status, 401, "{what}");
        assert_eq!(res.json()["error"], "invalid_token", "{what}");
        assert_eq!(
            res.header("www-authenticate"),
            Some("ApiKey realm=\"warden\", error=\"invalid_token\""),
            "{what}"
        );
    }
    let res = call(&gw, "GET", "/r", &[]).await;
    assert_eq!(res.status, 401);
    assert_eq!(
        res.header("www-authenticate"),
        Some("ApiKey realm=\"warden\"")
    );
    let res = call(
        &gw,
        "GET",
        "/r",
        &[
            ("x-api-key", &good),
            ("authorization", &format!("ApiKey {good}")),
        ],
    )
    .await;
    assert_eq!(res.status, 400, "a key in two places is ambiguous");
    assert_eq!(up.requests().len(), n, "no bad key reached the upstream");
}

#[tokio::test]
async fn revoking_a_key_in_the_watched_key_file_takes_effect_without_a_restart() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    let (k, mut entry) = key("billing", None, false);
    std::fs::write(&file, apikey::write_key_file(std::slice::from_ref(&entry))).unwrap();
    let config = format!(
        "{}\n[auth.api_keys]\nfile = {}\n{}{}",
        base_toml().replace("watch = false", "watch = true\npoll_interval = \"100ms\""),
        q(&file),
        cluster("c", &up),
        route("keyed", "/", "c", Some("accept = [\"api_key\"]")),
    );
    let gw = Gateway::start(&config).await;
    assert_eq!(
        call(&gw, "GET", "/r", &[("x-api-key", &k)]).await.status,
        200
    );
    entry.revoked = true;
    let tmp = dir.path().join("keys.toml.tmp");
    std::fs::write(&tmp, apikey::write_key_file(&[entry])).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = call(&gw, "GET", "/r", &[("x-api-key", &k)]).await.status;
        if status == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "revocation not picked up: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn policy_config(up: &Upstream, iss: &TestIssuer, policy_file: &std::path::Path) -> String {
    format!(
        r#"{}
[[auth.jwt]]
name = "t"
issuer = "{}"
audiences = ["api"]
algorithms = ["ES256"]
jwks_file = "{}"
[auth.policies]
files = [{}]
{}{}"#,
        base_toml(),
        iss.iss,
        iss.jwks_file().display(),
        q(policy_file),
        cluster("c", up),
        route(
            "reports",
            "/",
            "c",
            Some("accept = [\"jwt\"]\npolicy = true")
        ),
    )
}

#[tokio::test]
async fn cedar_policies_decide_over_scopes_claims_methods_and_addresses() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.cedar");
    std::fs::write(
        &policies,
        r#"
@id("readers")
permit (principal, action == Warden::Action::"GET", resource == Warden::Route::"reports")
when { principal.scopes.contains("reports:read") };

@id("acme-writers")
permit (principal, action == Warden::Action::"POST", resource)
when { principal.hasTag("tenant") && principal.getTag("tenant") == "acme"
       && context.path like "/reports/*" };

@id("no-loopback-for-mallory")
forbid (principal == Warden::Principal::"mallory", action, resource)
when { context.client_ip.isInRange(ip("127.0.0.0/8")) };
"#,
    )
    .unwrap();
    let events = dir.path().join("events.jsonl");
    let gw = Gateway::start(&format!(
        "{}\n[security_events]\npath = {}\n",
        policy_config(&up, &iss, &policies),
        q(&events)
    ))
    .await;
    let tok = |sub: &str, scope: &str, tenant: &str| {
        let mut c = iss.claims(sub, "api", scope);
        c["tenant"] = tenant.into();
        format!("Bearer {}", iss.token(&c))
    };
    let cases = [
        (
            "reader GET",
            "GET",
            "/reports/1",
            tok("alice", "reports:read", "x"),
            200,
        ),
        (
            "no scope GET",
            "GET",
            "/reports/1",
            tok("bob", "other", "x"),
            403,
        ),
        (
            "reader POST, other tenant",
            "POST",
            "/reports/1",
            tok("alice", "reports:read", "x"),
            403,
        ),
        (
            "acme POST under /reports/",
            "POST",
            "/reports/1",
            tok("carol", "", "acme"),
            200,
        ),
        (
            "acme POST elsewhere",
            "POST",
            "/other",
            tok("carol", "", "acme"),
            403,
        ),
        (
            "forbid overrides permit",
            "GET",
            "/reports/1",
            tok("mallory", "reports:read", "acme"),
            403,
        ),
    ];
    for (what, method, path, token, want) in &cases {
        let res = call(&gw, method, path, &[("authorization", token)]).await;
        assert_eq!(res.status, *want, "{what}");
        if *want == 403 {
            assert_eq!(res.json()["error"], "forbidden", "{what}");
        }
    }
    assert_eq!(
        up.requests().len(),
        2,
        "only the two permitted requests got through"
    );
    let text =
        String::from_utf8_lossy(&client::get(gw.admin(), "/metrics").await.body).into_owned();
    assert!(
        text.contains(
            "warden_auth_denied_requests_total{route=\"reports\",reason=\"policy_denied\"} 4"
        ),
        "{text}"
    );
    // Each denial's security event names the policy that decided, or that none permitted.
    let lines: Vec<serde_json::Value> = warden_test_util::authcfg::wait_for_lines(&events, 4)
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l["event"] == "authz.denied")
        .map(|l| {
            (
                l["subject"].as_str().unwrap(),
                l["detail"]["policy"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by,
        [
            ("bob", "no policy permits"),
            ("alice", "no policy permits"),
            ("carol", "no policy permits"),
            ("mallory", "forbidden by no-loopback-for-mallory"),
        ],
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_policy_change_reloads_and_an_invalid_policy_keeps_the_running_one() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.cedar");
    std::fs::write(&policies, "permit (principal, action, resource);\n").unwrap();
    let gw = Gateway::start(&policy_config(&up, &iss, &policies)).await;
    let token = format!("Bearer {}", iss.token(&iss.claims("alice", "api", "")));
    let reload = || async {
        let req = Request::post("/reload")
            .header("host", "admin")
            .body(Full::new(Bytes::new()))
            .unwrap();
        client::send_h1(gw.admin(), req).await
    };
    assert_eq!(
        call(&gw, "GET", "/x", &[("authorization", &token)])
            .await
            .status,
        200
    );

    // A policy naming an attribute the schema does not have is refused at load.
    std::fs::write(
        &policies,
        "permit (principal, action, resource) when { principal.nosuch == \"x\" };\n",
    )
    .unwrap();
    let res = reload().await;
    assert_ne!(res.status, 200, "an invalid policy must fail the reload");
    let body = String::from_utf8_lossy(&res.body).into_owned();
    assert!(
        body.contains("policies.cedar") && body.contains("nosuch"),
        "{body}"
    );
    assert_eq!(
        call(&gw, "GET", "/x", &[("authorization", &token)])
            .await
            .status,
        200,
        "the running policies stay in place"
    );

    std::fs::write(&policies, "forbid (principal, action, resource);\n").unwrap();
    assert_eq!(reload().await.status, 200);
    assert_eq!(
        call(&gw, "GET", "/x", &[("authorization", &token)])
            .await
            .status,
        403
    );
}
