//! An authority with a CA (`example.org`) on a real socket, its admin API, and agent options.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use serde_json::{json, Value};
use warden_agent::{AgentOptions, AuthorityClient};
use warden_config::{AuthorityConfig, CaConfig, SecretRef};
use warden_identity::TrustDomain;
use warden_store::Store;
use zeroize::Zeroizing;

pub const ADMIN: &str = "admin-token-0123456789abcdef";

/// Starts an authority with `[authority.ca] trust_domain = "example.org"` and an admin token;
/// returns it with its config.
pub async fn authority(
    dir: &std::path::Path,
) -> (warden_authority::AuthorityHandle, AuthorityConfig) {
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
    let handle = warden_authority::start_with(&cfg, store, Arc::new(warden_authority::SystemClock))
        .await
        .unwrap();
    (handle, cfg)
}

/// A POST to the admin API that must succeed; its JSON answer.
pub async fn admin(addr: SocketAddr, path: &str, body: Value) -> Value {
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

/// Registers `spiffe_id`; returns its entry id and a join token for it.
pub async fn register(addr: SocketAddr, spiffe_id: &str) -> (String, String) {
    let entry = admin(addr, "/admin/workloads", json!({ "spiffe_id": spiffe_id })).await;
    let id = entry["id"].as_str().unwrap().to_owned();
    let token = admin(
        addr,
        &format!("/admin/workloads/{id}/join-token"),
        json!({}),
    )
    .await;
    (id, token["token"].as_str().unwrap().to_owned())
}

/// Agent options for the authority at `addr` with `token`.
pub fn options(addr: SocketAddr, token: &str) -> AgentOptions {
    AgentOptions {
        authority: AuthorityClient::new(&format!("http://{addr}"), None, Duration::from_secs(5))
            .unwrap(),
        trust_domain: TrustDomain::new("example.org").unwrap(),
        join_token: Zeroizing::new(token.to_owned()),
        renew_at: 0.5,
        state_dir: None,
    }
}
