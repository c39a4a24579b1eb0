//! The CA service on a real store: join, renew, revoke, rotation, and the audit trail.

use std::sync::Arc;

use rcgen::{CertificateParams, KeyPair, SigningKey as _};
use rustls_pki_types::CertificateDer;
use warden_ca::{Ca, CaServiceError, CaSettings, RENEW_CONTEXT};
use warden_identity::bundle::Bundle;
use warden_identity::{svid, TrustDomain};
use warden_store::Store;

const T0: i64 = 1_800_000_000;
const WEB: &str = "spiffe://example.org/ns/prod/sa/web";

async fn store(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path().join("ca.db").to_str().unwrap(), &[7u8; 32])
        .await
        .unwrap()
}

fn settings() -> CaSettings {
    CaSettings::new(TrustDomain::new("example.org").unwrap())
}

/// A fresh key and its CSR (no SAN: the CA fills in the registered ID).
fn key_and_csr() -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec();
    (key, csr)
}

fn proof(key: &KeyPair, csr: &[u8]) -> Vec<u8> {
    let mut msg = RENEW_CONTEXT.to_vec();
    msg.extend_from_slice(csr);
    key.sign(&msg).unwrap()
}

fn code(e: &CaServiceError) -> &'static str {
    e.status().1
}

async fn actions(store: &Store) -> Vec<(String, String)> {
    store
        .audit_since(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event.component == "ca")
        .map(|r| (r.event.action, r.event.outcome))
        .collect()
}

fn roots(ca: &Ca) -> Vec<CertificateDer<'static>> {
    ca.roots().into_iter().map(CertificateDer::from).collect()
}

fn chain(der: &[Vec<u8>]) -> Vec<CertificateDer<'static>> {
    der.iter().cloned().map(CertificateDer::from).collect()
}

#[tokio::test]
async fn a_workload_joins_once_then_renews_with_its_svid_and_every_step_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let ca = Ca::open(store.clone(), settings(), T0).await.unwrap();
    let entry = ca.register(WEB, None, T0, "admin", None).await.unwrap();
    let again = ca.register(WEB, None, T0, "admin", None).await.unwrap_err();
    assert_eq!(code(&again), "conflict");
    let token = ca
        .join_token(&entry.id, None, T0, "admin", None)
        .await
        .unwrap();
    assert!(token.token.starts_with("wjt_"));
    assert_eq!(token.expires_at, T0 + 600);

    let (key, csr) = key_and_csr();
    let first = ca
        .issue_with_join_token(&token.token, &csr, T0 + 1, Some("127.0.0.1"))
        .await
        .unwrap();
    assert_eq!(first.spiffe_id.as_str(), WEB);
    assert_eq!(first.not_after, T0 + 1 + 3600);
    assert_eq!(
        svid::verify(
            &chain(&first.chain),
            &ca.settings().trust_domain,
            &roots(&ca),
            T0 + 2,
            true
        )
        .unwrap()
        .as_str(),
        WEB
    );
    // The token is used up.
    let reused = ca
        .issue_with_join_token(&token.token, &csr, T0 + 2, None)
        .await
        .unwrap_err();
    assert_eq!(code(&reused), "invalid_token");

    // Renewal: a new key, proved by the current one.
    let (key2, csr2) = key_and_csr();
    let renewed = ca
        .renew(&first.chain, &csr2, &proof(&key, &csr2), T0 + 1800, None)
        .await
        .unwrap();
    assert_eq!(renewed.spiffe_id.as_str(), WEB);
    assert_ne!(renewed.serial, first.serial);
    // A proof by another key (one the caller made up) is refused.
    let (_, csr3) = key_and_csr();
    let forged = ca
        .renew(&first.chain, &csr3, &proof(&key2, &csr3), T0 + 1800, None)
        .await
        .unwrap_err();
    assert_eq!(code(&forged), "invalid_proof");
    // An expired SVID cannot renew.
    let late = ca
        .renew(&first.chain, &csr3, &proof(&key, &csr3), T0 + 3700, None)
        .await
        .unwrap_err();
    assert_eq!(code(&late), "invalid_svid");
    assert!(late.to_string().contains("Expired"), "{late}");

    let trail = actions(&store).await;
    let has = |a: &str, o: &str| trail.iter().any(|(x, y)| x == a && y == o);
    assert!(has("workload.register", "success"));
    assert!(has("join_token.create", "success"));
    assert!(has("svid.issue", "success"));
    assert!(has("svid.issue", "failure"), "the reused token is audited");
    assert!(has("svid.renew", "success"));
    assert_eq!(
        trail
            .iter()
            .filter(|(a, o)| a == "svid.renew" && o == "failure")
            .count(),
        2
    );
    store.verify_audit().await.unwrap();
}

#[tokio::test]
async fn a_revoked_workload_can_neither_join_nor_renew_and_reregistering_does_not_revive_old_svids()
{
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let ca = Ca::open(store.clone(), settings(), T0).await.unwrap();
    let entry = ca.register(WEB, None, T0, "admin", None).await.unwrap();
    let t1 = ca
        .join_token(&entry.id, None, T0, "admin", None)
        .await
        .unwrap();
    let t2 = ca
        .join_token(WEB, Some(60), T0, "admin", None)
        .await
        .unwrap();
    let (key, csr) = key_and_csr();
    let svid = ca
        .issue_with_join_token(&t1.token, &csr, T0, None)
        .await
        .unwrap();

    let revoked = ca.revoke(&entry.id, T0 + 10, "admin", None).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(T0 + 10));
    assert_eq!(
        code(
            &ca.join_token(&entry.id, None, T0 + 11, "admin", None)
                .await
                .unwrap_err()
        ),
        "revoked"
    );
    // A token made before the revocation no longer works.
    assert_eq!(
        code(
            &ca.issue_with_join_token(&t2.token, &csr, T0 + 11, None)
                .await
                .unwrap_err()
        ),
        "revoked"
    );
    let (_, csr2) = key_and_csr();
    let e = ca
        .renew(&svid.chain, &csr2, &proof(&key, &csr2), T0 + 12, None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "revoked");

    // Registered again: a fresh start, which the old SVID does not share.
    ca.register(WEB, None, T0 + 100, "admin", None)
        .await
        .unwrap();
    let e = ca
        .renew(&svid.chain, &csr2, &proof(&key, &csr2), T0 + 101, None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "revoked");
    assert!(e.to_string().contains("predates"), "{e}");
    assert!(ca.list().await.unwrap().iter().all(|e| !e.is_revoked()));
}

#[tokio::test]
async fn join_tokens_expire_and_one_token_wins_once_under_concurrent_use() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let ca = Ca::open(store.clone(), settings(), T0).await.unwrap();
    ca.register(WEB, Some(120), T0, "admin", None)
        .await
        .unwrap();
    let short = ca
        .join_token(WEB, Some(5), T0, "admin", None)
        .await
        .unwrap();
    let unused = ca
        .join_token(WEB, Some(5), T0, "admin", None)
        .await
        .unwrap();
    let (_, csr) = key_and_csr();
    let e = ca
        .issue_with_join_token(&short.token, &csr, T0 + 5, None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "invalid_token");
    assert!(e.to_string().contains("expired"));
    assert_eq!(
        code(
            &ca.join_token(WEB, Some(0), T0, "admin", None)
                .await
                .unwrap_err()
        ),
        "invalid_request"
    );
    // A token never presented is swept once expired (the one presented late is gone too).
    assert_eq!(store.list("ca/join/").await.unwrap().len(), 1);
    ca.tick(T0 + 6).await.unwrap();
    assert!(store.list("ca/join/").await.unwrap().is_empty());
    let e = ca
        .issue_with_join_token(&unused.token, &csr, T0 + 6, None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "invalid_token");

    let token = ca.join_token(WEB, None, T0, "admin", None).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (ca, token, csr) = (Arc::clone(&ca), token.token.clone(), csr.clone());
        tasks.push(tokio::spawn(async move {
            ca.issue_with_join_token(&token, &csr, T0 + 1, None).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(svid) => {
                won += 1;
                assert_eq!(
                    svid.not_after,
                    T0 + 1 + 120,
                    "the registration's own lifetime"
                );
            }
            Err(e) => assert_eq!(code(&e), "invalid_token"),
        }
    }
    assert_eq!(won, 1);
    // Bad registrations.
    for (id, want) in [
        ("spiffe://other.org/web", "outside this CA's trust domain"),
        ("spiffe://example.org", "must have a path"),
        ("spiffe://example.org/a/../b", "`..` segment"),
    ] {
        let e = ca.register(id, None, T0, "admin", None).await.unwrap_err();
        assert!(e.to_string().contains(want), "{id}: {e}");
    }
    let e = ca
        .register("spiffe://example.org/x", Some(10), T0, "admin", None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("svid_ttl"), "{e}");
}

#[tokio::test]
async fn the_root_rotates_with_both_roots_in_the_bundle_while_it_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let mut s = settings();
    s.svid_ttl = 60;
    s.max_svid_ttl = 60;
    s.intermediate_ttl = 200;
    s.root_ttl = 1000;
    s.root_publish_ahead = 30;
    let ca = Ca::open(store.clone(), s.clone(), T0).await.unwrap();
    ca.register(WEB, None, T0, "admin", None).await.unwrap();
    let td = s.trust_domain.clone();
    let issue = |now: i64| {
        let ca = Arc::clone(&ca);
        async move {
            let t = ca.join_token(WEB, None, now, "admin", None).await.unwrap();
            let (_, csr) = key_and_csr();
            ca.issue_with_join_token(&t.token, &csr, now, None)
                .await
                .unwrap()
        }
    };
    let bundle =
        |ca: &Ca| Bundle::parse(td.clone(), &serde_json::to_vec(&*ca.bundle()).unwrap()).unwrap();
    let b0 = bundle(&ca);
    assert_eq!(b0.x509_authorities.len(), 1);
    let old_root = b0.x509_authorities[0].clone();

    // Past half the root's life: the next root is published, the old one still signs.
    let t1 = T0 + 601;
    ca.tick(t1).await.unwrap();
    let b1 = bundle(&ca);
    assert_eq!(
        b1.x509_authorities.len(),
        2,
        "old and new root while it rolls"
    );
    assert!(b1.sequence > b0.sequence);
    let before = issue(t1).await;
    let only_old = [CertificateDer::from(old_root.clone())];
    svid::verify(&chain(&before.chain), &td, &only_old, t1 + 1, true).unwrap();

    // The new root signs once its publication lead has passed; SVIDs issued just before
    // still verify against the bundle peers hold.
    let t2 = t1 + 31;
    ca.tick(t2).await.unwrap();
    let after = issue(t2).await;
    assert!(svid::verify(&chain(&after.chain), &td, &only_old, t2 + 1, true).is_err());
    let both: Vec<_> = bundle(&ca)
        .x509_authorities
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    svid::verify(&chain(&after.chain), &td, &both, t2 + 1, true).unwrap();
    svid::verify(&chain(&before.chain), &td, &both, t2 + 1, true).unwrap();

    // The old root leaves the bundle when it expires.
    ca.tick(T0 + 1101).await.unwrap();
    let b3 = bundle(&ca);
    assert_eq!(b3.x509_authorities.len(), 1);
    assert_ne!(b3.x509_authorities[0], old_root);
    assert!(b3.sequence > b1.sequence);
    // A second authority opening the same store sees the same keys.
    let other = Ca::open(store.clone(), s, T0 + 1102).await.unwrap();
    assert_eq!(other.roots(), ca.roots());
    assert!(actions(&store)
        .await
        .iter()
        .any(|(a, o)| a == "ca.rotate" && o == "success"));
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn an_upstream_ca_signs_the_intermediate_and_its_root_is_the_bundle() {
    let td = TrustDomain::new("example.org").unwrap();
    let enterprise = warden_identity::testing::TestCa::new(&td, T0 - 3600);
    let root = enterprise.root.cert_der().to_vec();
    let root_pem = pem("CERTIFICATE", &root);
    let key_pem = pem("PRIVATE KEY", enterprise.root.key_pkcs8());
    let up = warden_identity::UpstreamCa::load(root_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    assert_eq!(up.roots, vec![root.clone()]);
    assert!(up.chain.is_empty());
    // Refused: a CA that may not sign CAs, a chain without its root, a key that is not the
    // CA's.
    let inter = enterprise.signer.key();
    let inter_chain = format!("{}{root_pem}", pem("CERTIFICATE", inter.cert_der()));
    let inter_key = pem("PRIVATE KEY", inter.key_pkcs8());
    let e = warden_identity::UpstreamCa::load(inter_chain.as_bytes(), inter_key.as_bytes())
        .unwrap_err();
    assert!(e.contains("pathLenConstraint"), "{e}");
    let no_root = pem("CERTIFICATE", inter.cert_der());
    assert!(warden_identity::UpstreamCa::load(no_root.as_bytes(), inter_key.as_bytes()).is_err());
    let e =
        warden_identity::UpstreamCa::load(root_pem.as_bytes(), inter_key.as_bytes()).unwrap_err();
    assert!(e.contains("does not match"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let mut s = settings();
    s.upstream = Some(up);
    let ca = Ca::open(store.clone(), s, T0).await.unwrap();
    // The bundle is the enterprise root; no root of Warden's own.
    assert_eq!(ca.roots(), vec![root.clone()]);
    ca.register(WEB, None, T0, "admin", None).await.unwrap();
    let token = ca.join_token(WEB, None, T0, "admin", None).await.unwrap();
    let (key, csr) = key_and_csr();
    let svid = ca
        .issue_with_join_token(&token.token, &csr, T0, None)
        .await
        .unwrap();
    assert_eq!(svid.chain.len(), 2, "leaf and Warden's intermediate");
    let only_enterprise_root = [CertificateDer::from(root)];
    assert_eq!(
        svid::verify(
            &chain(&svid.chain),
            &td,
            &only_enterprise_root,
            T0 + 1,
            true
        )
        .unwrap()
        .as_str(),
        WEB
    );
    // Renewal verifies through the upstream root too.
    let (_, csr2) = key_and_csr();
    ca.renew(&svid.chain[..1], &csr2, &proof(&key, &csr2), T0 + 10, None)
        .await
        .unwrap();
}

/// The CA of another trust domain, on its own store in `dir`.
async fn other_domain(dir: &tempfile::TempDir, td: &TrustDomain) -> Arc<Ca> {
    let path = dir.path().join(format!("{td}.db"));
    let store = Store::open(path.to_str().unwrap(), &[8u8; 32])
        .await
        .unwrap();
    Ca::open(store, CaSettings::new(td.clone()), T0)
        .await
        .unwrap()
}

#[tokio::test]
async fn federated_bundles_are_checked_kept_across_restarts_audited_and_forgotten_when_unlisted() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let ca = Ca::open(store.clone(), settings(), T0).await.unwrap();
    let partner_td = TrustDomain::new("partner.org").unwrap();
    let partner = other_domain(&dir, &partner_td).await;
    let doc = serde_json::to_vec(&*partner.bundle()).unwrap();
    assert!(ca.federated_bundles().is_empty());
    assert_eq!(
        ca.federated_document(),
        serde_json::json!({ "bundles": {} })
    );

    // Taken: served to workloads under its trust domain.
    assert!(ca
        .set_federated_bundle(&partner_td, &doc, T0)
        .await
        .unwrap());
    let served = ca.federated_document();
    assert_eq!(served["bundles"]["partner.org"], *partner.bundle());
    assert_eq!(
        ca.federated_bundles()[&partner_td].bundle.x509_authorities,
        partner.roots()
    );
    // The same again is no change (and no second audit event).
    assert!(!ca
        .set_federated_bundle(&partner_td, &doc, T0 + 60)
        .await
        .unwrap());

    // Bad documents are refused with their reason; the last good bundle stays.
    for bad in [
        &b"not json"[..],
        br#"{"keys": []}"#,
        br#"{"keys": [{"use": "x509-svid", "kty": "EC", "x5c": ["AAAA"]}]}"#,
    ] {
        let e = ca
            .set_federated_bundle(&partner_td, bad, T0 + 120)
            .await
            .unwrap_err();
        assert_eq!(code(&e), "invalid_request", "{e}");
    }
    assert_eq!(
        ca.federated_bundles()[&partner_td].bundle.x509_authorities,
        partner.roots()
    );
    // Our own trust domain cannot come in as a federated one.
    let own = ca
        .set_federated_bundle(&TrustDomain::new("example.org").unwrap(), &doc, T0)
        .await
        .unwrap_err();
    assert!(own.to_string().contains("own trust domain"), "{own}");

    // Kept in the store: a restarted CA serves it before any fetch.
    drop(ca);
    let ca = Ca::open(store.clone(), settings(), T0 + 300).await.unwrap();
    assert_eq!(
        ca.federated_document()["bundles"]["partner.org"],
        *partner.bundle()
    );

    // Two domains' fetchers landing at once both stay.
    let other_td = TrustDomain::new("other.org").unwrap();
    let other = other_domain(&dir, &other_td).await;
    let other_doc = serde_json::to_vec(&*other.bundle()).unwrap();
    let (a, b) = tokio::join!(
        ca.set_federated_bundle(&other_td, &other_doc, T0 + 310),
        ca.set_federated_bundle(&partner_td, &doc, T0 + 310),
    );
    assert!(a.unwrap());
    b.unwrap();
    let held: Vec<String> = ca
        .federated_bundles()
        .keys()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(held, ["other.org", "partner.org"]);

    // No longer configured: forgotten, also in the store.
    ca.retain_federated(&[]).await.unwrap();
    assert!(ca.federated_bundles().is_empty());
    let ca = Ca::open(store.clone(), settings(), T0 + 400).await.unwrap();
    assert!(ca.federated_bundles().is_empty());

    let audited = actions(&store).await;
    let fed: Vec<_> = audited
        .iter()
        .filter(|(a, _)| a.starts_with("ca.federation"))
        .map(|(a, o)| (a.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        fed,
        vec![
            ("ca.federation.update", "success"),
            ("ca.federation.refused", "failure"),
            ("ca.federation.refused", "failure"),
            ("ca.federation.refused", "failure"),
            ("ca.federation.update", "success"),
            ("ca.federation.remove", "success"),
            ("ca.federation.remove", "success"),
        ]
    );
}
