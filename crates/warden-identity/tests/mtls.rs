//! mTLS between two workloads over TCP with the SPIFFE verifiers: both SVIDs verify against
//! the bundle; a client from another CA, without a certificate or with an expired SVID is
//! refused in the handshake; a server whose ID is not the expected one is refused; and a
//! bundle update takes effect on the next handshake without a new TLS config.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use warden_identity::testing::TestCa;
use warden_identity::tls::{Allowed, BundleSource, SpiffeClientVerifier, SpiffeServerVerifier};
use warden_identity::{svid, SpiffeId, TrustDomain};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn ca(created: i64) -> TestCa {
    TestCa::new(&td(), created)
}

fn svid_for(
    ca: &TestCa,
    path: &str,
    at: i64,
    ttl: i64,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    ca.svid(path, at, ttl)
}

/// Resumption is off on both sides, as the mesh will have it: a resumed session skips
/// certificate verification, so it would outlive a bundle change.
fn server_config(
    bundle: &Arc<BundleSource>,
    cert: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
) -> Arc<ServerConfig> {
    let mut c = ServerConfig::builder_with_provider(warden_crypto::provider())
        .with_protocol_versions(warden_crypto::TLS_VERSIONS)
        .unwrap()
        .with_client_cert_verifier(SpiffeClientVerifier::new(
            bundle.clone(),
            Allowed::AnyTrusted,
        ))
        .with_single_cert(cert.0, cert.1)
        .unwrap();
    c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    c.send_tls13_tickets = 0;
    Arc::new(c)
}

fn client_config(
    bundle: &Arc<BundleSource>,
    allowed: Allowed,
    cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Arc<ClientConfig> {
    let b = ClientConfig::builder_with_provider(warden_crypto::provider())
        .with_protocol_versions(warden_crypto::TLS_VERSIONS)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(SpiffeServerVerifier::new(bundle.clone(), allowed));
    let mut c = match cert {
        Some((chain, key)) => b.with_client_auth_cert(chain, key).unwrap(),
        None => b.with_no_client_auth(),
    };
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

/// One exchange: the server echoes a byte. Returns (client ok, server's view of the peer
/// ID or its error).
async fn exchange(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (bool, Result<SpiffeId, String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        tls.write_all(&b).await.map_err(|e| e.to_string())?;
        svid::leaf_id(&peer).map_err(|e| e.to_string())
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("workload").unwrap();
    let ok = match TlsConnector::from(client).connect(name, tcp).await {
        Ok(mut tls) => {
            let mut b = [0u8; 1];
            tls.write_all(b"x").await.is_ok() && tls.read_exact(&mut b).await.is_ok()
        }
        Err(_) => false,
    };
    (ok, srv.await.unwrap())
}

#[tokio::test]
async fn workloads_with_svids_of_the_bundle_talk_and_others_are_refused_in_the_handshake() {
    let t = now();
    let ours = ca(t - 3 * 3600);
    let bundle = BundleSource::new(td(), vec![ours.root.cert_der().to_vec()]);
    let server_id = td().id("/server").unwrap();
    let server = server_config(&bundle, svid_for(&ours, "/server", t, 3600));

    // Both sides verify.
    let good = client_config(
        &bundle,
        Allowed::Only(vec![server_id.clone()]),
        Some(svid_for(&ours, "/client", t, 3600)),
    );
    let (ok, peer) = exchange(server.clone(), good.clone()).await;
    assert!(ok);
    assert_eq!(peer.unwrap().as_str(), "spiffe://example.org/client");

    // A client whose SVID comes from another CA (same trust domain name).
    let theirs = ca(t - 3600);
    let foreign = client_config(
        &bundle,
        Allowed::AnyTrusted,
        Some(svid_for(&theirs, "/client", t, 3600)),
    );
    let (ok, peer) = exchange(server.clone(), foreign).await;
    assert!(!ok);
    let e = peer.unwrap_err();
    // Same issuer names, another key: a bad signature (an unknown name: UnknownIssuer).
    assert!(
        e.contains("BadSignature") || e.contains("UnknownIssuer"),
        "{e}"
    );

    // No client certificate at all.
    let anonymous = client_config(&bundle, Allowed::AnyTrusted, None);
    let (ok, peer) = exchange(server.clone(), anonymous).await;
    assert!(!ok);
    assert!(peer.is_err());

    // An expired SVID (issued two hours ago for one hour).
    let expired = client_config(
        &bundle,
        Allowed::AnyTrusted,
        Some(svid_for(&ours, "/client", t - 2 * 3600, 3600)),
    );
    let (ok, peer) = exchange(server.clone(), expired).await;
    assert!(!ok);
    assert!(peer.unwrap_err().to_lowercase().contains("expired"));

    // The client expects another server ID.
    let picky = client_config(
        &bundle,
        Allowed::Only(vec![td().id("/billing").unwrap()]),
        Some(svid_for(&ours, "/client", t, 3600)),
    );
    let (ok, _) = exchange(server.clone(), picky).await;
    assert!(
        !ok,
        "a server that is not the expected SPIFFE ID is refused"
    );

    // The bundle rotates to another CA: the same configs now refuse our SVIDs...
    bundle.update(vec![theirs.root.cert_der().to_vec()]);
    let (ok, _) = exchange(server.clone(), good.clone()).await;
    assert!(!ok);
    // ...and with both roots in it (a rotation in progress), both are accepted.
    bundle.update(vec![
        ours.root.cert_der().to_vec(),
        theirs.root.cert_der().to_vec(),
    ]);
    let (ok, _) = exchange(server, good).await;
    assert!(ok);
}

#[tokio::test]
async fn a_federated_trust_domain_vouches_for_its_own_ids_and_no_others() {
    let t = now();
    let ours = ca(t - 3600);
    let partner_td = TrustDomain::new("partner.org").unwrap();
    let partner = TestCa::new(&partner_td, t - 3600);
    let bundle = BundleSource::new(td(), vec![ours.root.cert_der().to_vec()]);
    let server = server_config(&bundle, svid_for(&ours, "/server", t, 3600));
    let as_client = |cert| client_config(&bundle, Allowed::AnyTrusted, Some(cert));

    // Before federation, a partner workload is refused, and the server says why.
    let (ok, peer) = exchange(server.clone(), as_client(partner.svid("/caller", t, 3600))).await;
    assert!(!ok);
    let err = peer.unwrap_err();
    assert!(
        err.contains("NoBundle(\"spiffe://partner.org/caller\")"),
        "{err}"
    );

    // Federated: partner.org's roots verify partner.org's IDs.
    bundle.update_federated([(partner_td.clone(), vec![partner.root.cert_der().to_vec()])].into());
    let (ok, peer) = exchange(server.clone(), as_client(partner.svid("/caller", t, 3600))).await;
    assert!(ok);
    assert_eq!(peer.unwrap().as_str(), "spiffe://partner.org/caller");

    // A CA whose root is in the bundle as partner.org's cannot vouch for an ID of
    // example.org, nor can partner.org's own CA be passed off under another trust domain.
    let rogue = ca(t - 60);
    bundle.update_federated(
        [(
            partner_td.clone(),
            vec![
                partner.root.cert_der().to_vec(),
                rogue.root.cert_der().to_vec(),
            ],
        )]
        .into(),
    );
    let (ok, peer) = exchange(server.clone(), as_client(rogue.svid("/admin", t, 3600))).await;
    assert!(!ok);
    assert!(peer.is_err());

    // An entry for this trust domain among the federated ones is ignored: our own roots
    // come only from our own bundle.
    bundle.update_federated([(td(), vec![rogue.root.cert_der().to_vec()])].into());
    let (ok, _) = exchange(server.clone(), as_client(rogue.svid("/admin", t, 3600))).await;
    assert!(!ok);
    assert!(bundle.federated().is_empty());

    // Federation withdrawn: partner workloads are refused again.
    bundle.update_federated(Default::default());
    let (ok, _) = exchange(server, as_client(partner.svid("/caller", t, 3600))).await;
    assert!(!ok);
}
