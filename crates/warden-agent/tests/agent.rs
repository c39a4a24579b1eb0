//! The identity agent against a real authority over HTTP: the first SVID from a join token,
//! renewal with a new key (seen by subscribers), the bundle, a revoked workload's renewal
//! refused, a used token and an unreachable authority refused at start.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use serde_json::{json, Value};
use warden_agent::{Agent, AgentError, AgentOptions, AuthorityClient, Health};
use warden_config::{AuthorityConfig, CaConfig, SecretRef};
use warden_identity::TrustDomain;
use warden_store::Store;
use zeroize::Zeroizing;

const ADMIN: &str = "admin-token-0123456789abcdef";

async fn authority(dir: &std::path::Path) -> warden_authority::AuthorityHandle {
    let admin = dir.join("admin");
    std::fs::write(&admin, ADMIN).unwrap();
    let cfg = AuthorityConfig {
        enabled: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_token: Some(SecretRef::File(admin)),
        ca: Some(CaConfig {
            trust_domain: "example.org".into(),
            ..CaConfig::default()
        }),
        ..AuthorityConfig::default()
    };
    let store = Store::open(dir.join("a.db").to_str().unwrap(), &[1u8; 32])
        .await
        .unwrap();
    warden_authority::start_with(&cfg, store, Arc::new(warden_authority::SystemClock))
        .await
        .unwrap()
}

async fn admin(addr: std::net::SocketAddr, path: &str, body: Value) -> Value {
    let req = Request::post(path)
        .header("host", "a")
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let a = warden_test_util::client::send_h1(addr, req).await;
    assert!(a.status < 300, "{path}: {} {:?}", a.status, a.body);
    a.json()
}

fn options(addr: std::net::SocketAddr, token: &str) -> AgentOptions {
    AgentOptions {
        authority: AuthorityClient::new(&format!("http://{addr}"), None, Duration::from_secs(5))
            .unwrap(),
        trust_domain: TrustDomain::new("example.org").unwrap(),
        join_token: Zeroizing::new(token.to_owned()),
        renew_at: 0.5,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_joins_renews_and_stops_renewing_once_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let auth = authority(dir.path()).await;
    let addr = auth.addr();
    let entry = admin(
        addr,
        "/admin/workloads",
        json!({"spiffe_id": "spiffe://example.org/web"}),
    )
    .await;
    let id = entry["id"].as_str().unwrap();
    let token = admin(
        addr,
        &format!("/admin/workloads/{id}/join-token"),
        json!({}),
    )
    .await;
    let token = token["token"].as_str().unwrap();

    let agent = Agent::start(options(addr, token)).await.unwrap();
    let first = agent.current();
    assert_eq!(first.id.as_str(), "spiffe://example.org/web");
    assert_eq!(first.chain.len(), 2);
    assert_eq!(agent.health(), Health::Fresh);
    assert!(first.not_after - first.not_before >= 3600);
    assert_eq!(agent.bundle_document()["keys"][0]["use"], "x509-svid");

    // The token is used up: a second agent with it does not start.
    let again = Agent::start(options(addr, token)).await.unwrap_err();
    assert!(
        matches!(&again, AgentError::Refused { code, .. } if code == "invalid_token"),
        "{again}"
    );

    // Renewal: a new certificate and key, pushed to subscribers.
    let mut rx = agent.subscribe();
    agent.renew().await.unwrap();
    assert!(rx.has_changed().unwrap());
    let second = rx.borrow_and_update().clone();
    assert_ne!(second.chain[0], first.chain[0]);
    assert_ne!(second.private_key_der(), first.private_key_der());
    agent.refresh_bundle().await.unwrap();

    // Revoked: renewal is refused, the current SVID stays.
    admin(addr, &format!("/admin/workloads/{id}/revoke"), json!({})).await;
    let e = agent.renew().await.unwrap_err();
    assert!(
        matches!(&e, AgentError::Refused { code, .. } if code == "revoked"),
        "{e}"
    );
    assert_eq!(agent.current().chain[0], second.chain[0]);

    // No authority at all.
    let dead = warden_test_util::flaky::dead_endpoint().await;
    let e = Agent::start(options(dead, "wjt_x")).await.unwrap_err();
    assert!(matches!(e, AgentError::Unreachable(_)), "{e}");
    // A bad URL is a clear local error.
    assert!(AuthorityClient::new("ftp://x", None, Duration::from_secs(1)).is_err());
    assert!(AuthorityClient::new("https://x:1", None, Duration::from_secs(1)).is_err());
}
