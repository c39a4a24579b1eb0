//! The CA's HTTP API over a real socket: an admin registers a workload and makes a join
//! token; the workload posts a PEM CSR and gets its SVID and the bundle; bad requests get
//! JSON errors.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use rcgen::{CertificateParams, KeyPair, SigningKey as _};
use serde_json::{json, Value};
use warden_ca::http::{admin_router, router, Api};
use warden_ca::{Ca, CaSettings, RENEW_CONTEXT};
use warden_identity::TrustDomain;
use warden_store::Store;
use warden_test_util::client::{send_h1, Answer};

async fn serve(ca: Arc<Ca>) -> SocketAddr {
    let api = Api::new(ca, Arc::new(warden_test_util::jwt::now));
    let app = router::<SocketAddr>(api.clone()).merge(admin_router::<SocketAddr>(api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> Answer {
    let req = Request::post(path)
        .header("host", "ca")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    send_h1(addr, req).await
}

#[tokio::test]
async fn a_workload_gets_its_svid_over_http_and_bad_requests_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("ca.db").to_str().unwrap(), &[9u8; 32])
        .await
        .unwrap();
    let settings = CaSettings::new(TrustDomain::new("example.org").unwrap());
    let ca = Ca::open(store, settings, warden_test_util::jwt::now())
        .await
        .unwrap();
    let addr = serve(ca).await;

    let bundle = warden_test_util::client::get(addr, "/ca/v1/bundle").await;
    assert_eq!(bundle.status, 200);
    assert_eq!(bundle.json()["keys"][0]["use"], "x509-svid");
    assert_eq!(bundle.header("cache-control"), Some("max-age=300"));

    let reg = post(
        addr,
        "/admin/workloads",
        r#"{"spiffe_id":"spiffe://example.org/web"}"#,
    )
    .await;
    assert_eq!(reg.status, 201, "{:?}", reg.body);
    let entry = reg.json()["id"].as_str().unwrap().to_owned();
    let dup = post(
        addr,
        "/admin/workloads",
        r#"{"spiffe_id":"spiffe://example.org/web"}"#,
    )
    .await;
    assert_eq!(dup.status, 409);
    let tok = post(addr, &format!("/admin/workloads/{entry}/join-token"), "").await;
    assert_eq!(tok.status, 201);
    let token = tok.json()["token"].as_str().unwrap().to_owned();

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let body = json!({ "join_token": token, "csr": csr.pem().unwrap() }).to_string();
    let got = post(addr, "/ca/v1/svid", &body).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.header("cache-control"), Some("no-store"));
    let v: Value = got.json();
    assert_eq!(v["spiffe_id"], "spiffe://example.org/web");
    let pem = v["svid"].as_str().unwrap();
    assert_eq!(
        pem.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf and intermediate"
    );
    assert!(v["bundle"]["keys"].is_array());

    // Renewal with the PEM chain and a proof.
    let key2 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr2 = CertificateParams::default()
        .serialize_request(&key2)
        .unwrap();
    let mut msg = RENEW_CONTEXT.to_vec();
    msg.extend_from_slice(csr2.der());
    use base64::Engine;
    let proof = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.sign(&msg).unwrap());
    let body = json!({ "svid": pem, "csr": csr2.pem().unwrap(), "proof": proof }).to_string();
    let renewed = post(addr, "/ca/v1/svid/renew", &body).await;
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);

    // The same token again, a garbage CSR, unknown fields, not JSON.
    let body = json!({ "join_token": token, "csr": csr.pem().unwrap() }).to_string();
    let again = post(addr, "/ca/v1/svid", &body).await;
    assert_eq!(again.status, 403);
    assert_eq!(again.json()["error"], "invalid_token");
    let tok2 = post(
        addr,
        &format!("/admin/workloads/{entry}/join-token"),
        r#"{"ttl":60}"#,
    )
    .await;
    let token2 = tok2.json()["token"].as_str().unwrap().to_owned();
    let body = json!({ "join_token": token2, "csr": "bm90IGEgY3Ny" }).to_string();
    let garbage = post(addr, "/ca/v1/svid", &body).await;
    assert_eq!(garbage.status, 400);
    assert!(garbage.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("csr"));
    // A refused CSR does not use the token up: the corrected request gets its SVID.
    let key3 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr3 = CertificateParams::default()
        .serialize_request(&key3)
        .unwrap();
    let body = json!({ "join_token": token2, "csr": csr3.pem().unwrap() }).to_string();
    assert_eq!(post(addr, "/ca/v1/svid", &body).await.status, 200);
    let extra = post(
        addr,
        "/ca/v1/svid",
        r#"{"join_token":"x","csr":"y","admin":true}"#,
    )
    .await;
    assert_eq!(extra.status, 400);
    assert_eq!(post(addr, "/ca/v1/svid", "{").await.status, 400);
    let missing = warden_test_util::client::get(addr, "/admin/workloads/ffff").await;
    assert_eq!(missing.status, 404);
    let revoked = post(addr, &format!("/admin/workloads/{entry}/revoke"), "").await;
    assert_eq!(revoked.status, 200);
    assert!(revoked.json()["revoked_at"].is_i64());
}
