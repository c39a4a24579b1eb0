//! The identity agent against a real authority over HTTP: the first SVID from a join token,
//! renewal with a new key (seen by subscribers), the bundle, a revoked workload's renewal
//! refused, a used token and an unreachable authority refused at start.

mod common;

use std::time::Duration;

use common::{admin, authority, options, register};
use serde_json::json;
use warden_agent::{Agent, AgentError, AuthorityClient, Health};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_joins_renews_and_stops_renewing_once_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let (auth, _) = authority(dir.path()).await;
    let addr = auth.addr();
    let (id, token) = register(addr, "spiffe://example.org/web").await;
    let token = token.as_str();

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
