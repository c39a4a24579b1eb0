//! Route authorization rules over real sockets: scopes (all/any), claim conditions (equals,
//! one_of, glob, dotted paths), subject globs and allowed methods; public routes still strip
//! identity headers; denials and successes are counted per route and reason; the access log
//! says why a request was refused and never holds the credential.

use bytes::Bytes;
use serde_json::{json, Value};
use warden_test_util::authcfg::{self, bearer, cluster, issuer, route, Keys};
use warden_test_util::jwt::TestIssuer;
use warden_test_util::{base_toml, client, Gateway, Upstream};

const ISS: &str = "https://issuer.test";

/// Routes, each with one rule (or none), all to cluster `c`.
const ROUTES: &[(&str, &str, Option<&str>)] = &[
    ("all", "/all/", Some("scopes_all = [\"read\", \"write\"]")),
    (
        "all-admin",
        "/all-admin/",
        Some("scopes_all = [\"read\", \"admin\"]"),
    ),
    ("any", "/any/", Some("scopes_any = [\"admin\", \"write\"]")),
    (
        "any-none",
        "/any-none/",
        Some("scopes_any = [\"admin\", \"root\"]"),
    ),
    (
        "both",
        "/both/",
        Some("scopes_all = [\"read\"]\nscopes_any = [\"admin\", \"ops\"]"),
    ),
    (
        "claim-eq",
        "/claim-eq/",
        Some("claims = [{ claim = \"tenant\", equals = \"acme\" }]"),
    ),
    (
        "claim-one-of",
        "/claim-one-of/",
        Some("claims = [{ claim = \"tenant\", one_of = [\"globex\", \"acme\"] }]"),
    ),
    (
        "claim-glob",
        "/claim-glob/",
        Some("claims = [{ claim = \"email\", glob = \"*@acme.test\" }]"),
    ),
    (
        "claim-nested",
        "/claim-nested/",
        Some("claims = [{ claim = \"org.id\", equals = \"7\" }]"),
    ),
    (
        "claim-array",
        "/claim-array/",
        Some("claims = [{ claim = \"groups\", equals = \"ops\" }]"),
    ),
    (
        "claim-two",
        "/claim-two/",
        Some(
            "claims = [{ claim = \"tenant\", equals = \"acme\" }, \
             { claim = \"email_verified\", equals = \"true\" }]",
        ),
    ),
    (
        "subjects",
        "/subjects/",
        Some("subjects = [\"svc-*\", \"alice\"]"),
    ),
    (
        "methods",
        "/methods/",
        Some("allow_methods = [\"GET\", \"HEAD\"]"),
    ),
    ("public", "/public/", None),
];

fn config(up: &Upstream, iss: &TestIssuer, auth_section: &str) -> String {
    let jwks = iss.jwks_file();
    let mut toml = format!(
        "{}\n{auth_section}\n{}\n{}",
        base_toml(),
        issuer("main", &iss.iss, &["ES256"], Keys::JwksFile(&jwks), ""),
        cluster("c", up)
    );
    for (name, prefix, rule) in ROUTES {
        let rules = rule.map(|r| format!("accept = [\"jwt\"]\n{r}"));
        toml.push_str(&route(name, prefix, "c", rules.as_deref()));
    }
    toml
}

/// Alice: scopes `read write`, tenant acme, an acme address, org 7, groups dev and ops.
fn alice(iss: &TestIssuer) -> Value {
    let mut c = iss.claims("alice", "api", "read write");
    c["tenant"] = json!("acme");
    c["email"] = json!("alice@acme.test");
    c["email_verified"] = json!(true);
    c["org"] = json!({"id": 7});
    c["groups"] = json!(["dev", "ops"]);
    c
}

/// Mallory: scope `read`, near misses on every claim.
fn mallory(iss: &TestIssuer) -> Value {
    let mut c = iss.claims("mallory", "api", "read");
    c["tenant"] = json!("acme-evil");
    c["email"] = json!("mallory@acme.test.evil.test");
    c["email_verified"] = json!("yes");
    c["org"] = json!({"id": "7x"});
    c["groups"] = json!(["dev", "opsx"]);
    c
}

async fn send(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)]) -> client::Answer {
    client::request(gw.addr("main"), method, path, headers, Bytes::new()).await
}

/// One request and what it must get: 200, or a status, error code and reason.
struct Case {
    method: &'static str,
    path: &'static str,
    who: &'static str,
    status: u16,
    code: &'static str,
    reason: &'static str,
}

const fn ok(path: &'static str, who: &'static str) -> Case {
    Case {
        method: "GET",
        path,
        who,
        status: 200,
        code: "",
        reason: "jwt",
    }
}

const fn forbidden(path: &'static str, who: &'static str, reason: &'static str) -> Case {
    Case {
        method: "GET",
        path,
        who,
        status: 403,
        code: "forbidden",
        reason,
    }
}

const fn scope(path: &'static str, who: &'static str) -> Case {
    Case {
        method: "GET",
        path,
        who,
        status: 403,
        code: "insufficient_scope",
        reason: "insufficient_scope",
    }
}

fn route_of(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|(_, prefix, _)| path.starts_with(prefix))
        .map(|(name, _, _)| *name)
        .unwrap_or_else(|| panic!("no route for {path}"))
}

#[tokio::test]
async fn route_rules_allow_and_refuse_and_every_decision_is_counted() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new(ISS);
    let gw = Gateway::start(&config(&up, &iss, "")).await;
    let mut svc = iss.claims("svc-billing", "api", "read");
    svc["scp"] = json!(["ops"]);
    svc.as_object_mut().unwrap().remove("scope");
    let tokens = [
        ("alice", iss.token(&alice(&iss))),
        ("mallory", iss.token(&mallory(&iss))),
        ("svc", iss.token(&svc)),
        ("svc-scp", {
            // `scp` as an array stands in for `scope`.
            let mut c = iss.claims("svc-ops", "api", "");
            c.as_object_mut().unwrap().remove("scope");
            c["scp"] = json!(["read", "ops"]);
            iss.token(&c)
        }),
    ];
    let token = |who: &str| &tokens.iter().find(|(w, _)| *w == who).unwrap().1;

    let cases = [
        ok("/all/x", "alice"),
        scope("/all/x", "mallory"),
        scope("/all-admin/x", "alice"),
        ok("/any/x", "alice"),
        scope("/any/x", "mallory"),
        scope("/any-none/x", "alice"),
        ok("/both/x", "svc-scp"),
        scope("/both/x", "alice"),
        ok("/claim-eq/x", "alice"),
        forbidden("/claim-eq/x", "mallory", "claim_mismatch"),
        forbidden("/claim-eq/x", "svc", "claim_mismatch"),
        ok("/claim-one-of/x", "alice"),
        forbidden("/claim-one-of/x", "mallory", "claim_mismatch"),
        ok("/claim-glob/x", "alice"),
        forbidden("/claim-glob/x", "mallory", "claim_mismatch"),
        ok("/claim-nested/x", "alice"),
        forbidden("/claim-nested/x", "mallory", "claim_mismatch"),
        ok("/claim-array/x", "alice"),
        forbidden("/claim-array/x", "mallory", "claim_mismatch"),
        ok("/claim-two/x", "alice"),
        forbidden("/claim-two/x", "mallory", "claim_mismatch"),
        ok("/subjects/x", "svc"),
        ok("/subjects/x", "alice"),
        forbidden("/subjects/x", "mallory", "subject_not_allowed"),
        ok("/methods/x", "alice"),
        Case {
            method: "HEAD",
            ..ok("/methods/x", "alice")
        },
        Case {
            method: "POST",
            ..forbidden("/methods/x", "alice", "method_not_allowed")
        },
        Case {
            method: "DELETE",
            ..forbidden("/methods/x", "alice", "method_not_allowed")
        },
    ];
    for c in &cases {
        let what = format!("{} {} as {}", c.method, c.path, c.who);
        let seen = up.requests().len();
        let res = send(
            &gw,
            c.method,
            c.path,
            &[("authorization", &bearer(token(c.who)))],
        )
        .await;
        assert_eq!(
            res.status,
            c.status,
            "{what}: {}",
            String::from_utf8_lossy(&res.body)
        );
        if c.status == 200 {
            let got = up.requests();
            assert_eq!(got.len(), seen + 1, "{what}: not forwarded");
            assert_eq!(got[seen].method, c.method, "{what}");
            continue;
        }
        if c.method != "HEAD" {
            assert_eq!(res.json()["error"], c.code, "{what}");
        }
        assert_eq!(up.requests().len(), seen, "{what}: the upstream saw it");
        let challenge = res.header("www-authenticate");
        if c.code == "insufficient_scope" {
            let (_, _, rule) = ROUTES
                .iter()
                .find(|(n, _, _)| *n == route_of(c.path))
                .unwrap();
            // The scopes the route names, scopes_all then scopes_any, in config order.
            let scopes: Vec<&str> = rule.unwrap().split('"').skip(1).step_by(2).collect();
            assert_eq!(
                challenge,
                Some(
                    format!(
                        "Bearer realm=\"warden\", error=\"insufficient_scope\", scope=\"{}\"",
                        scopes.join(" ")
                    )
                    .as_str()
                ),
                "{what}"
            );
        } else {
            assert_eq!(
                challenge, None,
                "{what}: a 403 forbidden carries no challenge"
            );
        }
    }

    // Every decision is counted once, by route and reason.
    let text = authcfg::metrics(gw.admin()).await;
    for (name, _, _) in ROUTES.iter().filter(|(_, _, r)| r.is_some()) {
        let mut want_allowed = 0.0;
        let mut want_denied: Vec<(&str, f64)> = Vec::new();
        for c in cases.iter().filter(|c| route_of(c.path) == *name) {
            if c.status == 200 {
                want_allowed += 1.0;
            } else {
                match want_denied.iter_mut().find(|(r, _)| *r == c.reason) {
                    Some((_, n)) => *n += 1.0,
                    None => want_denied.push((c.reason, 1.0)),
                }
            }
        }
        assert_eq!(
            authcfg::allowed(&text, name, "jwt"),
            want_allowed,
            "allowed count for route {name}:\n{text}"
        );
        for (reason, n) in want_denied {
            assert_eq!(
                authcfg::denied(&text, name, reason),
                n,
                "denied count for route {name}, reason {reason}:\n{text}"
            );
        }
    }
    let denied_total: f64 = text
        .lines()
        .filter(|l| l.starts_with("warden_auth_denied_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let refused = cases.iter().filter(|c| c.status != 200).count() as f64;
    assert_eq!(denied_total, refused, "{text}");
}

#[tokio::test]
async fn missing_and_invalid_tokens_are_counted_by_reason() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new(ISS);
    let gw = Gateway::start(&config(&up, &iss, "")).await;
    let mut expired = alice(&iss);
    expired["exp"] = json!(warden_test_util::jwt::now() - 3600);
    let expired = iss.token(&expired);
    let a = send(&gw, "GET", "/all/x", &[]).await;
    let b = send(
        &gw,
        "GET",
        "/all/x",
        &[("authorization", &bearer(&expired))],
    )
    .await;
    let c = send(&gw, "GET", "/any/x", &[("authorization", "Bearer x.y.z")]).await;
    assert_eq!((a.status, b.status, c.status), (401, 401, 401));
    let text = authcfg::metrics(gw.admin()).await;
    assert_eq!(
        authcfg::denied(&text, "all", "missing_credential"),
        1.0,
        "{text}"
    );
    assert_eq!(authcfg::denied(&text, "all", "expired"), 1.0, "{text}");
    assert_eq!(
        authcfg::denied(&text, "any", "malformed_token"),
        1.0,
        "{text}"
    );
    assert_eq!(authcfg::allowed(&text, "all", "jwt"), 0.0, "{text}");
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn identity_headers_from_clients_are_stripped_on_public_and_protected_routes() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new(ISS);
    let auth = "[auth]\nstrip_headers = [\"x-user-id\", \"x-remote-user\"]\n";
    let gw = Gateway::start(&config(&up, &iss, auth)).await;
    let token = iss.token(&alice(&iss));
    let spoofed = [
        ("x-warden-subject", "root"),
        ("x-warden-scopes", "admin"),
        ("x-warden-auth", "client_cert"),
        ("x-warden-client-id", "trusted"),
        ("X-Warden-Anything", "spoof"),
        ("x-user-id", "0"),
        ("x-remote-user", "root"),
        ("x-keep", "kept"),
    ];

    // Public route, no token.
    let res = send(&gw, "GET", "/public/a", &spoofed).await;
    assert_eq!(res.status, 200);
    // Public route with a valid token: still no identity is added, and the token is passed on.
    let mut with_token = spoofed.to_vec();
    let auth_value = bearer(&token);
    with_token.push(("authorization", &auth_value));
    let res = send(&gw, "GET", "/public/b", &with_token).await;
    assert_eq!(res.status, 200);
    // Protected route: the gateway's own identity headers replace the spoofed ones.
    let res = send(&gw, "GET", "/all/c", &with_token).await;
    assert_eq!(res.status, 200);

    let seen = up.requests();
    assert_eq!(seen.len(), 3);
    for r in &seen[..2] {
        let leaked: Vec<&String> = r
            .headers
            .keys()
            .filter(|k| k.starts_with("x-warden-") || *k == "x-user-id" || *k == "x-remote-user")
            .collect();
        assert!(
            leaked.is_empty(),
            "{}: spoofed headers reached the upstream: {leaked:?}",
            r.uri
        );
        assert_eq!(r.headers["x-keep"], "kept", "{}", r.uri);
    }
    assert_eq!(seen[1].headers["authorization"], auth_value);
    let p = &seen[2];
    assert_eq!(p.headers["x-warden-subject"], "alice");
    assert_eq!(p.headers["x-warden-scopes"], "read write");
    assert_eq!(p.headers["x-warden-auth"], "jwt");
    assert!(
        !p.headers.contains_key("x-warden-client-id"),
        "{:?}",
        p.headers
    );
    assert!(
        !p.headers.contains_key("x-warden-anything"),
        "{:?}",
        p.headers
    );
    assert!(!p.headers.contains_key("x-user-id"), "{:?}", p.headers);
    assert!(!p.headers.contains_key("x-remote-user"), "{:?}", p.headers);
    assert_eq!(p.headers["x-keep"], "kept");

    // Public requests are not counted as authenticated, nor as denied.
    let text = authcfg::metrics(gw.admin()).await;
    assert_eq!(authcfg::allowed(&text, "public", "jwt"), 0.0, "{text}");
    assert_eq!(authcfg::allowed(&text, "all", "jwt"), 1.0, "{text}");
    assert!(
        !text.contains("warden_auth_denied_requests_total{route=\"public\""),
        "{text}"
    );
}

fn line_for<'a>(lines: &'a [Value], res: &client::Answer, text: &str) -> &'a Value {
    let id = res.header("x-request-id").expect("x-request-id");
    lines
        .iter()
        .find(|l| l["request_id"] == id)
        .unwrap_or_else(|| panic!("no access-log line for request {id}: {text}"))
}

#[tokio::test]
async fn the_access_log_says_why_a_request_was_refused_and_never_holds_the_token() {
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new(ISS);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let toml = authcfg::access_log_toml(&config(&up, &iss, ""), &log);
    let gw = Gateway::start(&toml).await;

    let good = iss.token(&alice(&iss));
    let weak = iss.token(&mallory(&iss));
    let mut forged_claims = alice(&iss);
    forged_claims["sub"] = json!("admin");
    let forged = {
        let mut p = good.split('.');
        let (h, _, s) = (p.next().unwrap(), p.next(), p.next().unwrap());
        format!(
            "{h}.{}.{s}",
            warden_crypto::jws::b64url(forged_claims.to_string().as_bytes())
        )
    };
    let claim = send(
        &gw,
        "GET",
        "/claim-eq/x",
        &[("authorization", &bearer(&weak))],
    )
    .await;
    let scope = send(
        &gw,
        "GET",
        "/all-admin/x",
        &[("authorization", &bearer(&good))],
    )
    .await;
    let bad_sig = send(&gw, "GET", "/all/x", &[("authorization", &bearer(&forged))]).await;
    let in_query = send(&gw, "GET", &format!("/all/x?access_token={good}"), &[]).await;
    let method = send(
        &gw,
        "POST",
        "/methods/x",
        &[("authorization", &bearer(&good))],
    )
    .await;
    let allowed = send(&gw, "GET", "/all/x", &[("authorization", &bearer(&good))]).await;
    let statuses = [
        claim.status,
        scope.status,
        bad_sig.status,
        in_query.status,
        method.status,
        allowed.status,
    ];
    assert_eq!(statuses, [403, 403, 401, 401, 403, 200]);

    let text = authcfg::wait_for_lines(&log, 6).await;
    for t in [&good, &weak, &forged] {
        for (i, part) in t.split('.').enumerate() {
            assert!(
                !text.contains(part),
                "part {i} of a token is in the access log: {text}"
            );
        }
    }
    assert!(
        !text.contains("access_token"),
        "query string logged: {text}"
    );
    assert!(!text.to_ascii_lowercase().contains("bearer"), "{text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for (res, route, status, reason) in [
        (&claim, "claim-eq", 403, "claim_mismatch"),
        (&scope, "all-admin", 403, "insufficient_scope"),
        (&bad_sig, "all", 401, "bad_signature"),
        (&in_query, "all", 401, "missing_credential"),
        (&method, "methods", 403, "method_not_allowed"),
    ] {
        let l = line_for(&lines, res, &text);
        assert_eq!(l["status"], status, "{l}");
        assert_eq!(l["route"], route, "{l}");
        assert_eq!(l["reason"], reason, "{l}");
        assert_eq!(l["upstream"], "-", "{l}");
    }
    let l = line_for(&lines, &allowed, &text);
    assert_eq!(l["status"], 200, "{l}");
    assert!(
        l["reason"].is_null(),
        "an allowed request has no refusal reason: {l}"
    );
    assert_eq!(up.requests().len(), 1);
    assert_eq!(up.requests()[0].uri, "/all/x");
}
