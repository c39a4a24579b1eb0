//! The authority's security events (issue 13): a `warden serve` process with the authority,
//! its vault and CA writes one line per security decision to the `[security_events]` file it
//! shares with the gateway, with `"component": "authority"`, a stable event and reason, and
//! counts each in `warden_authority_security_events_total`: failed and throttled client
//! authentications, issued, exchanged, refused and revoked tokens, refused introspections,
//! the vault's denials and refused logins, the CA's refusals, and the signed audit heads.
//! No line holds a secret, a token or a password that went by.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use warden_test_util::authcfg::series;
use warden_test_util::client::{self, Answer};

use crate::common::{free_port, send, serve, wait_port};

const ADMIN: &str = "events-admin-token-0123456789abcdef";

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// POSTs `form` to the token service as `id` with `secret` (client_secret_basic).
async fn oauth(addr: SocketAddr, path: &str, id: &str, secret: &str, form: &str) -> Answer {
    let auth = basic(id, secret);
    send(addr, "POST", path, &[FORM, ("authorization", &auth)], form).await
}

async fn admin(addr: SocketAddr, path: &str, body: Value) -> Value {
    let auth = format!("Bearer {ADMIN}");
    let a = send(
        addr,
        "POST",
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        &body.to_string(),
    )
    .await;
    assert!(a.status < 300, "{path}: {} {:?}", a.status, a.body);
    a.json()
}

async fn vault(addr: SocketAddr, method: &str, path: &str, token: &str, body: Value) -> Answer {
    send(
        addr,
        method,
        &format!("/v1/{path}"),
        &[("x-vault-token", token)],
        &body.to_string(),
    )
    .await
}

/// The event lines written so far.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// Waits for the first line with `event` and `reason`.
async fn event(path: &Path, event: &str, reason: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = lines(path)
            .into_iter()
            .find(|l| l["event"] == event && l["reason"] == reason)
        {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no {event}/{reason} in:\n{}",
            std::fs::read_to_string(path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_authority_s_security_decisions_are_events_with_reasons_and_counters_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let events_file = d.join("events.jsonl");
    crate::common::write_secret(d.join("admin"), ADMIN);
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let toml = format!(
        "[admin]\nenabled = false\n[access_log]\nenabled = false\n[reload]\nwatch = false\n\
         [[listeners]]\nname = \"unused\"\naddress = \"127.0.0.1:{gw}\"\n\
         [security_events]\npath = \"{events}\"\nmax_lines_per_second = 100\n\
         [authority]\nenabled = true\nlisten = \"{addr}\"\ndata_dir = \"{d}\"\n\
         storage = \"{d}/authority.db\"\nadmin_token = \"file:{d}/admin\"\n\
         issuer = \"http://{addr}\"\nseal = {{ mode = \"shares\" }}\n\
         failed_auth = {{ per_client = 3, per_address = 1000 }}\n\
         [authority.audit]\nhead_interval = \"1s\"\n\
         [authority.ca]\ntrust_domain = \"example.org\"\n",
        gw = free_port(),
        events = events_file.display(),
        d = d.display(),
    );
    let mut p = serve(d, "authority", &toml);
    wait_port(&mut p, port, d, "authority").await;
    let init = vault(
        addr,
        "PUT",
        "sys/init",
        "",
        json!({"secret_shares": 1, "secret_threshold": 1}),
    )
    .await;
    assert_eq!(init.status, 200, "{:?}", init.body);
    let root = init.json()["root_token"].as_str().unwrap().to_owned();

    // Clients: one that may exchange tokens for "orders", one that may not introspect.
    let billing = admin(
        addr,
        "/admin/clients",
        json!({"client_id": "billing", "audiences": ["api"], "scopes": ["read"],
               "grant_types": ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"],
               "exchange_audiences": ["orders"]}),
    )
    .await;
    let secret = billing["client_secret"].as_str().unwrap().to_owned();

    // Failed client authentications, by reason; the wrong secret never appears.
    let wrong = "wrong-secret-never-logged-7f3a";
    let a = oauth(
        addr,
        "/oauth2/token",
        "billing",
        wrong,
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(a.status, 401);
    let e = event(&events_file, "client_auth.failure", "bad_secret").await;
    assert_eq!(e["component"], "authority", "{e}");
    assert_eq!(e["client"], "127.0.0.1", "{e}");
    assert_eq!(e["detail"]["client_id"], "billing", "{e}");
    let a = oauth(
        addr,
        "/oauth2/token",
        "nobody",
        wrong,
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(a.status, 401);
    event(&events_file, "client_auth.failure", "unknown_client").await;

    // An issued token; a refused scope; an exchange; a revocation.
    let a = oauth(
        addr,
        "/oauth2/token",
        "billing",
        &secret,
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let token = a.json()["access_token"].as_str().unwrap().to_owned();
    let e = event(&events_file, "token.issued", "client_credentials").await;
    assert_eq!(e["subject"], "billing", "{e}");
    assert_eq!(e["detail"]["aud"], json!(["api"]), "{e}");
    assert!(e["detail"]["jti"].is_string(), "{e}");
    let a = oauth(
        addr,
        "/oauth2/token",
        "billing",
        &secret,
        "grant_type=client_credentials&scope=admin",
    )
    .await;
    assert_eq!(a.status, 400);
    let e = event(&events_file, "token.refused", "invalid_scope").await;
    assert_eq!(e["detail"]["endpoint"], "token", "{e}");
    let a = oauth(
        addr,
        "/oauth2/token",
        "billing",
        &secret,
        &format!(
            "grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token={token}\
             &subject_token_type=urn:ietf:params:oauth:token-type:access_token&audience=orders"
        ),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let exchanged = a.json()["access_token"].as_str().unwrap().to_owned();
    let e = event(&events_file, "token.exchanged", "delegation").await;
    assert_eq!(e["detail"]["aud"], json!(["orders"]), "{e}");
    let a = oauth(
        addr,
        "/oauth2/introspect",
        "billing",
        &secret,
        &format!("token={token}"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["active"], false, "billing may not introspect");
    event(&events_file, "introspection.refused", "not_permitted").await;
    let a = oauth(
        addr,
        "/oauth2/revoke",
        "billing",
        &secret,
        &format!("token={token}"),
    )
    .await;
    assert_eq!(a.status, 200);
    let e = event(&events_file, "token.revoked", "revoked").await;
    assert_eq!(e["subject"], "billing", "{e}");

    // The vault: a token it does not know, a refused login.
    let a = vault(
        addr,
        "GET",
        "secret/data/payments",
        "hvs.not-a-token",
        json!({}),
    )
    .await;
    assert_eq!(a.status, 403);
    let e = event(&events_file, "vault.denied", "permission_denied").await;
    assert_eq!(e["detail"]["path"], "/v1/secret/data/payments", "{e}");
    assert_eq!(e["method"], "GET", "{e}");
    let a = vault(
        addr,
        "POST",
        "sys/auth/approle",
        &root,
        json!({"type": "approle"}),
    )
    .await;
    assert!(a.status < 300, "{:?}", a.body);
    let a = vault(
        addr,
        "POST",
        "auth/approle/login",
        "",
        json!({"role_id": "nobody", "secret_id": wrong}),
    )
    .await;
    assert_eq!(a.status, 400);
    event(&events_file, "vault.login_failed", "invalid_credentials").await;

    // The CA: an unknown join token.
    let csr = base64::engine::general_purpose::STANDARD.encode(b"not looked at before the token");
    let a = send(
        addr,
        "POST",
        "/ca/v1/svid",
        &[("content-type", "application/json")],
        &json!({"join_token": "jt-that-was-never-issued", "csr": csr}).to_string(),
    )
    .await;
    assert_eq!(a.status, 403, "{:?}", a.body);
    let e = event(&events_file, "ca.refused", "invalid_token").await;
    assert_eq!(e["status"], 403, "{e}");

    // A client id guessed at too often is throttled, and the refusals unseen are events too.
    for _ in 0..6 {
        let a = oauth(
            addr,
            "/oauth2/token",
            "mallory",
            wrong,
            "grant_type=client_credentials",
        )
        .await;
        assert!(matches!(a.status, 401 | 429), "{}", a.status);
    }
    let e = event(&events_file, "client_auth.throttled", "too_many_failures").await;
    assert_eq!(e["status"], 429, "{e}");
    assert_eq!(e["detail"]["client_id"], "mallory", "{e}");

    // The audit chain's head, signed and published in the stream.
    let e = event(&events_file, "audit.head", "signed").await;
    assert!(e["detail"]["seq"].as_u64().is_some_and(|s| s > 0), "{e}");
    assert_eq!(
        e["detail"]["head"].as_str().unwrap().split('.').count(),
        3,
        "a compact JWS: {e}"
    );

    // Each is counted on the authority's /metrics.
    let m = client::get(addr, "/metrics").await;
    let m = String::from_utf8_lossy(&m.body).into_owned();
    for (event, reason, at_least) in [
        ("client_auth.failure", "bad_secret", 1.0),
        ("client_auth.failure", "unknown_client", 1.0),
        ("token.issued", "client_credentials", 1.0),
        ("token.refused", "invalid_scope", 1.0),
        ("token.exchanged", "delegation", 1.0),
        ("introspection.refused", "not_permitted", 1.0),
        ("token.revoked", "revoked", 1.0),
        ("vault.denied", "permission_denied", 1.0),
        ("vault.login_failed", "invalid_credentials", 1.0),
        ("ca.refused", "invalid_token", 1.0),
        ("audit.head", "signed", 1.0),
        ("client_auth.throttled", "too_many_failures", 2.0),
    ] {
        let name = format!(
            "warden_authority_security_events_total{{event=\"{event}\",reason=\"{reason}\"}}"
        );
        let v = series(&m, &name).unwrap_or_else(|| panic!("{name} missing:\n{m}"));
        assert!(v >= at_least, "{name} = {v}");
    }

    // Nothing secret went into the stream.
    let text = std::fs::read_to_string(&events_file).unwrap();
    for secret in [&secret, wrong, &token, &exchanged, &root, ADMIN] {
        assert!(!text.contains(secret), "a secret in the events:\n{text}");
    }
    assert!(lines(&events_file)
        .iter()
        .all(|l| l["component"] == "authority" && l["time"].is_string()));
}
