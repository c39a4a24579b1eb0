//! The identity agent against a real authority over HTTP: the first SVID from a join token,
//! renewal with a new key (seen by subscribers), the bundle, a revoked workload's renewal
//! refused, a used token and an unreachable authority refused at start.

use crate::common;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_takes_up_its_stored_svid_even_while_the_authority_is_down() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (auth, _) = authority(dir.path()).await;
    let addr = auth.addr();
    let (id, token) = register(addr, "spiffe://example.org/restart").await;
    let state = dir.path().join("state");
    let with_state = |addr, token: &str| {
        let mut o = options(addr, token);
        o.state_dir = Some(state.clone());
        o
    };

    let first = Agent::start(with_state(addr, &token)).await.unwrap();
    let leaf = first.current().chain[0].clone();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("svid.key")), 0o600);
    assert_eq!(mode(&state.join("svid.pem")), 0o600);
    drop(first);

    // Restarted: the join token is used up, the stored SVID is renewed with its own key.
    let second = Agent::start(with_state(addr, &token)).await.unwrap();
    assert_eq!(second.current().id.as_str(), "spiffe://example.org/restart");
    assert_ne!(second.current().chain[0], leaf);
    assert_eq!(second.health(), Health::Fresh);
    let renewed = second.current().chain[0].clone();
    drop(second);

    // Restarted while the authority cannot be reached: it serves with the stored SVID and
    // says renewal is failing.
    let dead = warden_test_util::flaky::dead_endpoint().await;
    let third = Agent::start(with_state(dead, "")).await.unwrap();
    assert_eq!(third.current().chain[0], renewed);
    assert!(
        matches!(third.health(), Health::Stale { .. }),
        "{:?}",
        third.health()
    );
    assert!(warden_identity::tls::WorkloadIdentity::certified_key(&*third).is_some());
    drop(third);

    // Revoked: the stored SVID is refused at the restart, and with no usable join token the
    // agent does not start, saying why.
    admin(addr, &format!("/admin/workloads/{id}/revoke"), json!({})).await;
    let e = Agent::start(with_state(addr, "")).await.unwrap_err();
    assert!(
        matches!(&e, AgentError::Refused { code, .. } if code == "revoked"),
        "{e}"
    );

    // A state directory other users can read is refused: it holds a private key.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = Agent::start(with_state(addr, &token)).await.unwrap_err();
    assert!(e.to_string().contains("open to other users"), "{e}");
}
