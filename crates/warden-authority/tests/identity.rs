//! The authority's certificate authority (`[authority.ca]`) over its real listener, on SQLite
//! and PostgreSQL: admin registration behind the admin token, a join token turned into an
//! X.509-SVID, the SVID verified against the published bundle, renewal refused after
//! revocation, every step in the store's audit chain, and a second instance on the same store
//! serving the same trust bundle.

use crate::common;

use bytes::Bytes;
use common::{admin_call, Backend, Harness};
use http_body_util::Full;
use hyper::Request;
use rcgen::{CertificateParams, KeyPair, SigningKey as _};
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};
use warden_config::CaConfig;
use warden_identity::bundle::Bundle;
use warden_identity::{svid, TrustDomain};
use warden_test_util::client::{self, Answer};

async fn post(addr: std::net::SocketAddr, path: &str, body: Value) -> Answer {
    let req = Request::post(path)
        .header("host", "auth.test")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    client::send_h1(addr, req).await
}

fn pem_chain(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

async fn ca_harness(backend: Backend) -> Harness {
    Harness::start_with(backend, |c, _| {
        c.ca = Some(CaConfig {
            trust_domain: "example.org".into(),
            ..CaConfig::default()
        });
    })
    .await
}

async fn a_workload_is_registered_joins_renews_and_loses_renewal_when_revoked(backend: Backend) {
    let h = ca_harness(backend).await;
    let addr = h.addr();
    let web = "spiffe://example.org/ns/prod/sa/web";

    // The admin API wants the admin token.
    let anon = admin_call(
        addr,
        "POST",
        "/admin/workloads",
        Some(json!({"spiffe_id": web})),
        None,
    )
    .await;
    assert_eq!(anon.status, 401);
    let reg = h
        .admin("POST", "/admin/workloads", Some(json!({"spiffe_id": web})))
        .await;
    assert_eq!(reg.status, 201, "{:?}", reg.body);
    let entry = reg.json()["id"].as_str().unwrap().to_owned();
    let wrong_td = h
        .admin(
            "POST",
            "/admin/workloads",
            Some(json!({"spiffe_id": "spiffe://evil.org/x"})),
        )
        .await;
    assert_eq!(wrong_td.status, 400);
    let tok = h
        .admin(
            "POST",
            &format!("/admin/workloads/{entry}/join-token"),
            Some(json!({"ttl": 120})),
        )
        .await;
    assert_eq!(tok.status, 201, "{:?}", tok.body);
    let token = tok.json()["token"].as_str().unwrap().to_owned();

    // The workload: its own key, a CSR, the token.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let got = post(
        addr,
        "/ca/v1/svid",
        json!({"join_token": token, "csr": csr.pem().unwrap()}),
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let v = got.json();
    assert_eq!(v["spiffe_id"], web);
    let chain = pem_chain(v["svid"].as_str().unwrap());

    // Verified against the bundle anyone can fetch.
    let b = client::get(addr, "/ca/v1/bundle").await;
    assert_eq!(b.status, 200);
    let td = TrustDomain::new("example.org").unwrap();
    let bundle = Bundle::parse(td.clone(), &b.body).unwrap();
    let roots: Vec<_> = bundle
        .x509_authorities
        .iter()
        .cloned()
        .map(CertificateDer::from)
        .collect();
    assert_eq!(
        svid::verify(&chain, &td, &roots, h.now(), true)
            .unwrap()
            .as_str(),
        web
    );

    // The token was single-use.
    let again = post(
        addr,
        "/ca/v1/svid",
        json!({"join_token": token, "csr": csr.pem().unwrap()}),
    )
    .await;
    assert_eq!(again.status, 403);

    // Renewal with the current SVID, then revocation stops it.
    let renew = |k: &KeyPair| {
        let k2 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr2 = CertificateParams::default().serialize_request(&k2).unwrap();
        let mut msg = warden_ca::RENEW_CONTEXT.to_vec();
        msg.extend_from_slice(csr2.der());
        use base64::Engine;
        let proof = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.sign(&msg).unwrap());
        json!({"svid": v["svid"], "csr": csr2.pem().unwrap(), "proof": proof})
    };
    let renewed = post(addr, "/ca/v1/svid/renew", renew(&key)).await;
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);
    let revoke = h
        .admin("POST", &format!("/admin/workloads/{entry}/revoke"), None)
        .await;
    assert_eq!(revoke.status, 200);
    let refused = post(addr, "/ca/v1/svid/renew", renew(&key)).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"], "revoked");

    // Everything is in the audit chain, which verifies.
    let records = h.store.audit_since(0, 10_000).await.unwrap();
    let ca: Vec<(String, String)> = records
        .iter()
        .filter(|r| r.event.component == "ca")
        .map(|r| (r.event.action.clone(), r.event.outcome.clone()))
        .collect();
    for want in [
        ("workload.register", "success"),
        ("join_token.create", "success"),
        ("svid.issue", "success"),
        ("svid.issue", "failure"),
        ("svid.renew", "success"),
        ("workload.revoke", "success"),
        ("svid.renew", "failure"),
    ] {
        assert!(
            ca.iter().any(|(a, o)| a == want.0 && o == want.1),
            "{want:?} not audited: {ca:?}"
        );
    }
    h.store.verify_audit().await.unwrap();

    // A second authority on the same store publishes the same roots.
    let second = h.second_instance().await;
    let b2 = client::get(second.addr(), "/ca/v1/bundle").await;
    let bundle2 = Bundle::parse(td, &b2.body).unwrap();
    assert_eq!(bundle2.x509_authorities, bundle.x509_authorities);
}
both_backends!(a_workload_is_registered_joins_renews_and_loses_renewal_when_revoked);

async fn jwt_svids_are_issued_to_svid_holders_once_per_proof_and_never_to_the_revoked(
    backend: Backend,
) {
    let h = ca_harness(backend).await;
    let addr = h.addr();
    let web = "spiffe://example.org/web";
    let reg = h
        .admin("POST", "/admin/workloads", Some(json!({"spiffe_id": web})))
        .await;
    let entry = reg.json()["id"].as_str().unwrap().to_owned();
    let tok = h
        .admin(
            "POST",
            &format!("/admin/workloads/{entry}/join-token"),
            None,
        )
        .await;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let got = post(
        addr,
        "/ca/v1/svid",
        json!({"join_token": tok.json()["token"], "csr": csr.pem().unwrap()}),
    )
    .await;
    let pem = got.json()["svid"].as_str().unwrap().to_owned();
    let request = |iat: i64, aud: &[&str], signer: &KeyPair| {
        let aud: Vec<String> = aud.iter().map(|a| a.to_string()).collect();
        let msg = warden_identity::proof::jwt_svid_message(iat, &aud);
        use base64::Engine;
        let proof =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signer.sign(&msg).unwrap());
        json!({"svid": pem, "audience": aud, "iat": iat, "proof": proof})
    };

    let body = request(h.now(), &["payments"], &key);
    let ok = post(addr, "/ca/v1/jwt-svid", body.clone()).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let token = ok.json()["token"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value =
        serde_json::from_slice(&warden_crypto::jws::b64url_decode(parts[0].as_bytes()).unwrap())
            .unwrap();
    let claims: Value =
        serde_json::from_slice(&warden_crypto::jws::b64url_decode(parts[1].as_bytes()).unwrap())
            .unwrap();
    assert_eq!(header["typ"], "JWT");
    assert_eq!(claims["sub"], web);
    assert_eq!(claims["aud"], "payments");
    assert_eq!(claims["iss"], common::ISSUER);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    // Its key is a JWT authority of the trust bundle (and in the JWKS).
    let bundle = client::get(addr, "/ca/v1/bundle").await.json();
    assert!(bundle["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["use"] == "jwt-svid" && k["kid"] == header["kid"]));

    // The same request again: refused (a proof works once).
    let replay = post(addr, "/ca/v1/jwt-svid", body).await;
    assert_eq!(replay.status, 403);
    assert_eq!(replay.json()["error"], "invalid_proof");
    // A stale iat, a proof by another key, no audience: refused.
    let stale = post(
        addr,
        "/ca/v1/jwt-svid",
        request(h.now() - 120, &["payments"], &key),
    )
    .await;
    assert_eq!(stale.status, 403);
    let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let forged = post(
        addr,
        "/ca/v1/jwt-svid",
        request(h.now(), &["payments"], &other),
    )
    .await;
    assert_eq!(forged.status, 403);
    assert_eq!(forged.json()["error"], "invalid_proof");
    let none = post(addr, "/ca/v1/jwt-svid", request(h.now(), &[], &key)).await;
    assert_eq!(none.status, 400);
    // Revoked: no more JWT-SVIDs.
    h.admin("POST", &format!("/admin/workloads/{entry}/revoke"), None)
        .await;
    let revoked = post(
        addr,
        "/ca/v1/jwt-svid",
        request(h.now(), &["payments"], &key),
    )
    .await;
    assert_eq!(revoked.status, 403);
    assert_eq!(revoked.json()["error"], "revoked");
    let trail: Vec<_> = h
        .store
        .audit_since(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event.action == "jwt_svid.issue")
        .map(|r| r.event.outcome)
        .collect();
    assert_eq!(trail.iter().filter(|o| *o == "success").count(), 1);
    assert!(
        trail.iter().filter(|o| *o == "failure").count() >= 4,
        "{trail:?}"
    );
}
both_backends!(jwt_svids_are_issued_to_svid_holders_once_per_proof_and_never_to_the_revoked);

async fn guessing_join_tokens_gets_an_address_throttled(backend: Backend) {
    let h = ca_harness(backend).await;
    let addr = h.addr();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let mut statuses = Vec::new();
    for i in 0..40 {
        let guess = json!({"join_token": format!("wjt_guess{i}"), "csr": csr.pem().unwrap()});
        statuses.push(post(addr, "/ca/v1/svid", guess).await.status);
    }
    // 30 failures per minute per address (the token service's `failed_auth.per_address`):
    // the failure that finds the bucket empty blocks the address; from then on, 429 without
    // looking at the token.
    let refused = statuses.iter().take_while(|s| **s == 403).count();
    assert!((30..=31).contains(&refused), "{statuses:?}");
    assert!(
        statuses[refused..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    // The bundle stays public.
    assert_eq!(client::get(addr, "/ca/v1/bundle").await.status, 200);
}
both_backends!(guessing_join_tokens_gets_an_address_throttled);
