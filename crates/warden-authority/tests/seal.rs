//! One seal for the whole authority, over real sockets: an authority configured with key
//! shares starts sealed (vault and token service answer 503), is initialized once through
//! `sys/init`, unsealed with any threshold of its shares through `sys/unseal` (progress,
//! reset, a wrong share, `migrate` refused), reports itself through `sys/seal-status`,
//! `sys/health` and `sys/leader`, and serves its metrics at `/metrics`.

use crate::common;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use serde_json::{json, Value};
use warden_authority::{AuthorityHandle, ManualClock};
use warden_config::{AuthorityConfig, SealMode};
use warden_store::Store;
use warden_test_util::client::{self, Answer};

use common::{Backend, Harness};

async fn vault(
    h: &AuthorityHandle,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("/v1/{path}"))
        .header("host", "localhost");
    if let Some(t) = token {
        req = req.header("x-vault-token", t);
    }
    let body = body.map_or_else(Bytes::new, |v| Bytes::from(v.to_string()));
    client::send_h1(h.addr(), req.body(Full::new(body)).unwrap()).await
}

async fn status(h: &AuthorityHandle) -> Value {
    let a = vault(h, "GET", "sys/seal-status", None, None).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.json()
}

fn errors(a: &Answer) -> Vec<String> {
    a.json()["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array: {:?}", a.body))
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect()
}

/// An authority with `seal.mode = "shares"` on a fresh store, started sealed.
async fn sealed_authority(
    backend: Backend,
) -> (AuthorityHandle, AuthorityConfig, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.seal.mode = SealMode::Shares;
    let location = common::fresh_location(backend, dir.path()).await;
    let h = start(&cfg, &location).await;
    (h, cfg, location, dir)
}

async fn start(cfg: &AuthorityConfig, location: &str) -> AuthorityHandle {
    let store = Store::open_sealed(location).await.unwrap();
    let clock = Arc::new(ManualClock::new(warden_test_util::jwt::now()));
    warden_authority::start_with(cfg, store, clock)
        .await
        .expect("start a sealed authority")
}

async fn assert_everything_sealed(h: &AuthorityHandle) {
    // The token service cannot sign without its keys.
    let t = client::send_h1(
        h.addr(),
        common::form_request(
            "/oauth2/token",
            &[("grant_type", "client_credentials")],
            Some(("c", "s")),
        ),
    )
    .await;
    common::assert_error(&t, 503, "temporarily_unavailable");
    let jwks = client::get(h.addr(), "/oauth2/jwks").await;
    assert_eq!(jwks.status, 503);
    let adm = common::admin_call(
        h.addr(),
        "GET",
        "/admin/clients",
        None,
        Some(common::ADMIN_TOKEN),
    )
    .await;
    assert_eq!(adm.status, 503, "the admin API is sealed too");
    // The vault leaks nothing: every path is the same 503.
    for (m, p) in [
        ("GET", "secret/data/app"),
        ("GET", "sys/mounts"),
        ("LIST", "secret/metadata/"),
        ("GET", "sys/leader"),
        ("GET", "sys/key-status"),
        ("PUT", "sys/rotate"),
        ("PUT", "sys/seal"),
        ("GET", "no/such/mount"),
        ("POST", "auth/token/create"),
    ] {
        let a = vault(h, m, p, Some("hvs.whatever"), None).await;
        assert_eq!(a.status, 503, "{m} {p}");
        assert_eq!(errors(&a), ["Vault is sealed"], "{m} {p}");
    }
}

async fn init_unseal_with_shares(backend: Backend) {
    let (h, cfg, location, _dir) = sealed_authority(backend).await;
    let st = status(&h).await;
    assert_eq!(st["type"], "shamir");
    assert_eq!(st["initialized"], false);
    assert_eq!(st["sealed"], true);
    let health = vault(&h, "GET", "sys/health", None, None).await;
    assert_eq!(health.status, 501, "uninitialized");
    assert_eq!(
        vault(&h, "GET", "sys/health?uninitcode=299", None, None)
            .await
            .status,
        299
    );
    assert_eq!(
        vault(&h, "GET", "sys/init", None, None).await.json()["initialized"],
        false
    );
    let early = vault(&h, "PUT", "sys/unseal", None, Some(json!({"key": "00"}))).await;
    assert_eq!(early.status, 400);
    assert_everything_sealed(&h).await;

    // Bad parameters change nothing.
    for bad in [
        json!({"secret_shares": 3, "secret_threshold": 4}),
        json!({"secret_shares": 3, "secret_threshold": 1}),
        json!({"secret_shares": "five"}),
        json!({"secret_shares": 3, "secret_threshold": 2, "pgp_keys": ["x"]}),
    ] {
        let a = vault(&h, "PUT", "sys/init", None, Some(bad.clone())).await;
        assert_eq!(a.status, 400, "{bad}: {:?}", a.body);
    }
    assert_eq!(status(&h).await["initialized"], false);

    // Defaults 5/3.
    let init = vault(&h, "PUT", "sys/init", None, Some(json!({}))).await;
    assert_eq!(init.status, 200, "{:?}", init.body);
    let v = init.json();
    let keys: Vec<String> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let b64: Vec<String> = v["keys_base64"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 5);
    assert_eq!(b64.len(), 5);
    assert!(keys.iter().all(|k| k.len() == 66), "33-byte shares in hex");
    let root = v["root_token"].as_str().unwrap().to_owned();
    assert!(root.starts_with("hvs."), "{root}");

    // Initialized, unsealed, only once.
    let st = status(&h).await;
    assert_eq!(
        (
            st["initialized"].clone(),
            st["sealed"].clone(),
            st["t"].clone(),
            st["n"].clone()
        ),
        (json!(true), json!(false), json!(3), json!(5))
    );
    let again = vault(
        &h,
        "PUT",
        "sys/init",
        None,
        Some(json!({"secret_shares": 1, "secret_threshold": 1})),
    )
    .await;
    assert_eq!(again.status, 400);
    assert_eq!(errors(&again), ["Vault is already initialized"]);
    assert_eq!(vault(&h, "GET", "sys/health", None, None).await.status, 200);
    let leader = vault(&h, "GET", "sys/leader", None, None).await;
    assert_eq!(leader.status, 200);
    assert_eq!(leader.json()["ha_enabled"], false);
    // The token service runs.
    let jwks = client::get(h.addr(), "/oauth2/jwks").await;
    assert_eq!(jwks.status, 200);

    // Restart: sealed again, and the shares unseal it.
    h.shutdown().await;
    let h = start(&cfg, &location).await;
    let st = status(&h).await;
    assert_eq!(
        (
            st["initialized"].clone(),
            st["sealed"].clone(),
            st["progress"].clone()
        ),
        (json!(true), json!(true), json!(0))
    );
    assert_eq!(vault(&h, "GET", "sys/health", None, None).await.status, 503);
    assert_eq!(
        vault(&h, "GET", "sys/health?sealedcode=200", None, None)
            .await
            .status,
        200
    );
    assert_everything_sealed(&h).await;

    // Progress, then reset.
    let a = vault(&h, "PUT", "sys/unseal", None, Some(json!({"key": keys[0]}))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["progress"], 1);
    assert_eq!(a.json()["sealed"], true);
    let nonce = a.json()["nonce"].as_str().unwrap().to_owned();
    assert!(!nonce.is_empty());
    let dup = vault(&h, "PUT", "sys/unseal", None, Some(json!({"key": keys[0]}))).await;
    assert_eq!(dup.status, 400, "the same share twice");
    assert_eq!(status(&h).await["progress"], 1);
    let r = vault(&h, "PUT", "sys/unseal", None, Some(json!({"reset": true}))).await;
    assert_eq!(r.json()["progress"], 0);
    // Malformed and migrate are refused without progress.
    for bad in [
        json!({"key": "not hex or base64!"}),
        json!({"key": "abcd"}),
        json!({}),
        json!({"key": keys[0], "migrate": true}),
    ] {
        let a = vault(&h, "PUT", "sys/unseal", None, Some(bad.clone())).await;
        assert_eq!(a.status, 400, "{bad}");
        assert_eq!(status(&h).await["progress"], 0, "{bad}");
    }
    let m = vault(
        &h,
        "PUT",
        "sys/unseal",
        None,
        Some(json!({"key": keys[0], "migrate": true})),
    )
    .await;
    assert!(
        errors(&m)[0].contains("migration is not supported"),
        "{:?}",
        m.body
    );

    // A wrong share among the threshold: still sealed, progress reset.
    let mut wrong = hex_decode(&keys[1]);
    wrong[0] ^= 1;
    vault(&h, "PUT", "sys/unseal", None, Some(json!({"key": keys[0]}))).await;
    vault(
        &h,
        "PUT",
        "sys/unseal",
        None,
        Some(json!({"key": hex(&wrong)})),
    )
    .await;
    let w = vault(&h, "PUT", "sys/unseal", None, Some(json!({"key": keys[2]}))).await;
    assert_eq!(w.status, 400, "{:?}", w.body);
    assert!(errors(&w)[0].contains("do not unseal"), "{:?}", w.body);
    let st = status(&h).await;
    assert_eq!(
        (st["sealed"].clone(), st["progress"].clone()),
        (json!(true), json!(0))
    );
    assert_everything_sealed(&h).await;

    // Any three, hex or base64, unseal.
    vault(&h, "PUT", "sys/unseal", None, Some(json!({"key": b64[4]}))).await;
    vault(&h, "PUT", "sys/unseal", None, Some(json!({"key": keys[1]}))).await;
    let done = vault(&h, "PUT", "sys/unseal", None, Some(json!({"key": keys[3]}))).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.json()["sealed"], false);
    assert_eq!(vault(&h, "GET", "sys/health", None, None).await.status, 200);
    assert_eq!(client::get(h.addr(), "/oauth2/jwks").await.status, 200);

    // Rotate and key-status need the root token.
    assert_eq!(vault(&h, "PUT", "sys/rotate", None, None).await.status, 403);
    assert_eq!(
        vault(&h, "GET", "sys/key-status", Some("hvs.wrong"), None)
            .await
            .status,
        403
    );
    let ks = vault(&h, "GET", "sys/key-status", Some(&root), None).await;
    assert_eq!(ks.status, 200, "{:?}", ks.body);
    assert_eq!(ks.json()["data"]["term"], 1);
    assert_eq!(
        vault(&h, "PUT", "sys/rotate", Some(&root), None)
            .await
            .status,
        204
    );
    let ks = vault(&h, "GET", "sys/key-status", Some(&root), None).await;
    assert_eq!(ks.json()["data"]["term"], 2);
    assert_eq!(ks.json()["term"], 2);
    assert!(ks.json()["data"]["install_time"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    // Seal needs the root token; then everything is sealed again.
    assert_eq!(vault(&h, "PUT", "sys/seal", None, None).await.status, 403);
    assert_eq!(status(&h).await["sealed"], false);
    assert_eq!(
        vault(&h, "PUT", "sys/seal", Some(&root), None).await.status,
        204
    );
    assert_eq!(status(&h).await["sealed"], true);
    assert_everything_sealed(&h).await;
    h.shutdown().await;
}
both_backends!(init_unseal_with_shares);

async fn auto_seal_starts_unsealed_and_stays_sealed_once_sealed(backend: Backend) {
    let h = Harness::start(backend).await;
    let st = status(&h.handle).await;
    assert_eq!(st["type"], "auto");
    assert_eq!(
        (st["initialized"].clone(), st["sealed"].clone()),
        (json!(true), json!(false))
    );
    let init = vault(&h.handle, "PUT", "sys/init", None, Some(json!({}))).await;
    assert_eq!(init.status, 400);
    assert_eq!(errors(&init), ["Vault is already initialized"]);
    let un = vault(
        &h.handle,
        "PUT",
        "sys/unseal",
        None,
        Some(json!({"key": "00"})),
    )
    .await;
    assert_eq!(un.status, 200, "unsealed already: the status");
    h.handle.services().seal().await;
    assert_everything_sealed(&h.handle).await;
    let un = vault(
        &h.handle,
        "PUT",
        "sys/unseal",
        None,
        Some(json!({"key": "00"})),
    )
    .await;
    assert_eq!(un.status, 400);
    assert!(
        errors(&un)[0].contains("unseals automatically"),
        "{:?}",
        un.body
    );
}
both_backends!(auto_seal_starts_unsealed_and_stays_sealed_once_sealed);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_and_count_grants_failures_and_seal() {
    let h = Harness::start(Backend::Sqlite).await;
    let secret = h.basic_client("svc", &["read"], &["api"]).await;
    let ok = h.token("svc", &secret, &[]).await;
    assert_eq!(ok.status, 200);
    let bad = h.token("svc", "wrong", &[]).await;
    assert_eq!(bad.status, 401);
    vault(&h.handle, "GET", "sys/seal-status", None, None).await;
    // Prometheus asks for OpenMetrics; curl and promtool get the classic text format.
    let om = client::send_h1(
        h.addr(),
        Request::builder()
            .uri("/metrics")
            .header("host", "localhost")
            .header("accept", "application/openmetrics-text; version=1.0.0")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert!(om
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let om_text = String::from_utf8(om.body.to_vec()).unwrap();
    assert!(om_text.ends_with("# EOF\n"));
    assert!(om_text.contains("# TYPE warden_authority_token_grants counter"));
    let m = client::get(h.addr(), "/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    assert!(
        text.contains("# TYPE warden_authority_token_grants_total counter"),
        "counter families carry _total in the classic format:\n{text}"
    );
    assert!(!text.contains("# EOF"));
    for line in [
        "warden_authority_token_grants_total{grant_type=\"client_credentials\"} 1",
        "warden_authority_token_failures_total{endpoint=\"token\",reason=\"invalid_client\"} 1",
        "warden_authority_sealed 0",
        "warden_authority_data_key_term 1",
        "warden_authority_vault_requests_total{mount=\"sys\",status=\"200\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    h.handle.services().seal().await;
    let text = String::from_utf8(client::get(h.addr(), "/metrics").await.body.to_vec()).unwrap();
    assert!(
        text.lines().any(|l| l == "warden_authority_sealed 1"),
        "{text}"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}
