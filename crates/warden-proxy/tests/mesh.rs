//! Sidecars in a mesh over real sockets: sidecar A's `outbound` listener forwards to sidecar
//! B's `inbound` listener over mTLS with both SVIDs; B authorizes A by SPIFFE ID and passes
//! its identity to the local service. Refused: a server SVID that is not the expected ID
//! (502), a valid SVID the route does not allow (403), a peer from another CA, an expired
//! SVID, no certificate and plain text (all in the handshake). Rotating a sidecar's SVID
//! changes the certificate it presents without a reload. A WebSocket crosses both sidecars,
//! authorized at B by the caller's SPIFFE ID.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warden_identity::testing::TestCa;
use warden_identity::tls::{BundleSource, WorkloadIdentity};
use warden_test_util::{raw, Upstream};

use crate::mesh_support;
use mesh_support::*;

fn outbound_toml(peer: SocketAddr) -> String {
    format!(
        r#"
[[listeners]]
name = "outbound"
address = "127.0.0.1:0"
role = "outbound"
[[clusters]]
name = "b"
endpoints = ["https://{peer}"]
spiffe_ids = ["spiffe://example.org/b"]
[[clusters]]
name = "impostor"
endpoints = ["https://{peer}"]
spiffe_ids = ["spiffe://example.org/billing"]
[[routes]]
name = "to-impostor"
cluster = "impostor"
path_prefix = "/billing/"
auth = "none"
[[routes]]
name = "to-b"
cluster = "b"
path_prefix = "/b/"
auth = "none"
"#
    )
}

async fn get(addr: SocketAddr, path: &str) -> u16 {
    let res = raw::exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    raw::statuses(&res).first().copied().unwrap_or(0)
}

/// A direct TLS request to `addr` presenting `cert` (or none): the status, or 0 when the
/// handshake or the exchange failed.
async fn direct(
    addr: SocketAddr,
    bundle: &Arc<BundleSource>,
    cert: Option<Arc<CertifiedKey>>,
) -> u16 {
    direct_with_leaf(addr, bundle, cert).await.0
}

/// [`direct`], and the certificate the server presented.
/// Sidecar B (`spiffe://example.org/b`) in front of `local`, allowing only A.
async fn sidecar_b(ca: &TestCa, local: &Upstream) -> (Arc<Held>, Sidecar) {
    let b_id = Held::new(ca, "/b");
    let b = Sidecar::start(
        &inbound_toml(&local.url(), "spiffe://example.org/a"),
        b_id.clone(),
    )
    .await;
    (b_id, b)
}

/// A TLS connection to `addr` presenting `cert`, verifying the server against `bundle`;
/// `None` when the handshake fails.
async fn mtls(
    addr: SocketAddr,
    bundle: &Arc<BundleSource>,
    cert: Option<Arc<CertifiedKey>>,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    #[derive(Debug)]
    struct One(Option<Arc<CertifiedKey>>);
    impl rustls::client::ResolvesClientCert for One {
        fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
            self.0.clone()
        }
        fn has_certs(&self) -> bool {
            self.0.is_some()
        }
    }
    let verifier = warden_identity::tls::SpiffeServerVerifier::new(
        bundle.clone(),
        warden_identity::tls::Allowed::AnyTrusted,
    );
    let mut config = rustls::ClientConfig::builder_with_provider(warden_crypto::provider())
        .with_protocol_versions(warden_crypto::TLS_VERSIONS)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(One(cert)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("b").unwrap(), tcp)
        .await
        .ok()
}

async fn direct_with_leaf(
    addr: SocketAddr,
    bundle: &Arc<BundleSource>,
    cert: Option<Arc<CertifiedKey>>,
) -> (u16, Option<CertificateDer<'static>>) {
    let Some(mut tls) = mtls(addr, bundle, cert).await else {
        return (0, None);
    };
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned());
    if tls
        .write_all(b"GET /x HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return (0, leaf);
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    let status = raw::statuses(&String::from_utf8_lossy(&out))
        .first()
        .copied()
        .unwrap_or(0);
    (status, leaf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_talk_over_mtls_and_authorize_by_spiffe_id() {
    let ca = ca();
    let local = Upstream::start("service-b").await;
    let (b_id, b) = sidecar_b(&ca, &local).await;
    let a = Sidecar::start(&outbound_toml(b.addr("inbound")), Held::new(&ca, "/a")).await;

    // A → B: mTLS both ways, A's identity reaches the service.
    assert_eq!(get(a.addr("outbound"), "/b/hello").await, 200);
    let seen = local.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers["x-warden-subject"],
        "spiffe://example.org/a"
    );
    assert_eq!(seen[0].headers["x-warden-auth"], "client_cert");

    // B is not the SPIFFE ID this cluster expects: refused before any request is sent.
    assert_eq!(get(a.addr("outbound"), "/billing/x").await, 502);
    assert_eq!(local.requests().len(), 1);

    // C has a valid SVID, but B's route allows only A: 403 from B.
    let c = Sidecar::start(&outbound_toml(b.addr("inbound")), Held::new(&ca, "/c")).await;
    assert_eq!(get(c.addr("outbound"), "/b/hello").await, 403);
    assert_eq!(local.requests().len(), 1);

    // Straight to B's inbound listener.
    let bundle = b_id.bundle();
    let a_cert = certified(svid(&ca, "/a", now()));
    assert_eq!(direct(b.addr("inbound"), &bundle, Some(a_cert)).await, 200);
    let rogue = ca_other();
    assert_eq!(
        direct(
            b.addr("inbound"),
            &bundle,
            Some(certified(svid(&rogue, "/a", now())))
        )
        .await,
        0
    );
    let expired = certified(svid(&ca, "/a", now() - 2 * 3600));
    assert_eq!(direct(b.addr("inbound"), &bundle, Some(expired)).await, 0);
    assert_eq!(direct(b.addr("inbound"), &bundle, None).await, 0);
    assert_eq!(
        get(b.addr("inbound"), "/plain").await,
        0,
        "plain text is refused"
    );
    assert_eq!(local.requests().len(), 2);

    // B's SVID rotates under the running listener: the next handshake presents the new one,
    // and A's calls keep working.
    let a_cert = certified(svid(&ca, "/a", now()));
    let (_, before) = direct_with_leaf(b.addr("inbound"), &bundle, Some(a_cert.clone())).await;
    assert_eq!(before.as_ref(), Some(&b_id.key.load().cert[0]));
    b_id.key.store(certified(svid(&ca, "/b", now())));
    let (status, after) = direct_with_leaf(b.addr("inbound"), &bundle, Some(a_cert)).await;
    assert_eq!(status, 200);
    assert_eq!(after.as_ref(), Some(&b_id.key.load().cert[0]));
    assert_ne!(after, before);
    assert_eq!(get(a.addr("outbound"), "/b/again").await, 200);
    assert_eq!(local.requests().len(), 5);
}

/// What one read on `tls` returns (a response head and body that fit in one read).
async fn read(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_svid_that_expires_while_its_connection_is_open_is_refused_on_the_next_request() {
    let ca = ca();
    let local = Upstream::start("service").await;
    let (b_id, b) = sidecar_b(&ca, &local).await;
    // Valid for five more seconds: the handshake accepts it.
    let expires = now() + 5;
    let a_cert = certified(ca.svid("/a", expires - 3600, 3600));
    let mut tls = mtls(b.addr("inbound"), &b_id.bundle(), Some(a_cert))
        .await
        .expect("handshake while the SVID is valid");
    tls.write_all(b"GET /first HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .unwrap();
    let first = read(&mut tls).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    // Expired, on the same connection: refused, and the service never sees it.
    while now() < expires {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tls.write_all(b"GET /second HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .unwrap();
    let second = read(&mut tls).await;
    assert!(second.starts_with("HTTP/1.1 401"), "{second}");
    let seen: Vec<String> = local.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(seen, ["/first"]);
}

fn ca_other() -> TestCa {
    ca()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_says_when_renewal_fails_and_stops_serving_once_its_svid_has_expired() {
    let ca = ca();
    let local = Upstream::start("service").await;
    let (b_id, b) = sidecar_b(&ca, &local).await;
    let admin = b.handle.admin_addr().unwrap();
    let ready = |_: ()| async move { warden_test_util::client::get(admin, "/readyz").await };
    let r = ready(()).await;
    assert_eq!((r.status, &r.body[..]), (200, &b"ready\n"[..]));
    let metrics = warden_test_util::authcfg::metrics(admin).await;
    let expiry =
        warden_test_util::authcfg::series(&metrics, "warden_sidecar_svid_expiry_timestamp_seconds")
            .unwrap();
    assert!(expiry > now() as f64, "{metrics}");
    assert_eq!(
        warden_test_util::authcfg::series(&metrics, "warden_sidecar_svid_renewal_failing"),
        Some(0.0)
    );

    // The authority is unreachable: still serving with the current SVID, and saying so.
    *b_id.failing.lock().unwrap() =
        Some((now(), "authority unreachable: connection refused".into()));
    let r = ready(()).await;
    assert_eq!(r.status, 200);
    assert!(
        String::from_utf8_lossy(&r.body).contains("renewal failing"),
        "{:?}",
        r.body
    );
    let metrics = warden_test_util::authcfg::metrics(admin).await;
    assert_eq!(
        warden_test_util::authcfg::series(&metrics, "warden_sidecar_svid_renewal_failing"),
        Some(1.0)
    );
    let a_cert = certified(svid(&ca, "/a", now()));
    let bundle = b_id.bundle();
    assert_eq!(
        direct(b.addr("inbound"), &bundle, Some(a_cert.clone())).await,
        200
    );

    // Expired: not ready, and the handshake fails rather than present an expired identity.
    b_id.expired
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let r = ready(()).await;
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("no workload identity"));
    assert_eq!(direct(b.addr("inbound"), &bundle, Some(a_cert)).await, 0);
    let metrics = warden_test_util::authcfg::metrics(admin).await;
    assert_eq!(
        warden_test_util::authcfg::series(&metrics, "warden_sidecar_svid_expiry_timestamp_seconds"),
        Some(0.0)
    );
    assert_eq!(local.requests().len(), 1);
}

/// GETs through `addr` from four tasks until `stop`; the statuses that were not 200.
fn load(
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<u16>)> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut bad) = (0u64, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match get(addr, "/b/load").await {
                        200 => ok += 1,
                        s => bad.push(s),
                    }
                }
                (ok, bad)
            }));
        }
        let mut total = (0, Vec::new());
        for t in tasks {
            let (ok, bad) = t.await.unwrap();
            total.0 += ok;
            total.1.extend(bad);
        }
        total
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rotation_and_svid_renewals_under_load_fail_no_request() {
    let old = ca();
    let new = ca_other();
    let local = Upstream::start("service-b").await;
    let b_id = Held::new(&old, "/b");
    let a_id = Held::new(&old, "/a");
    let b = Sidecar::start(
        &inbound_toml(&local.url(), "spiffe://example.org/a"),
        b_id.clone(),
    )
    .await;
    // No idle upstream connections: every request is a new mTLS handshake, A to B, with
    // the SVIDs and bundles of the moment.
    let a_toml = outbound_toml(b.addr("inbound")).replacen(
        "spiffe_ids = [\"spiffe://example.org/b\"]",
        "spiffe_ids = [\"spiffe://example.org/b\"]\npool_max_idle = 0",
        1,
    );
    let a = Sidecar::start(&a_toml, a_id.clone()).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = load(a.addr("outbound"), stop.clone());
    let pause = || tokio::time::sleep(Duration::from_millis(300));
    pause().await;
    // 1. Both roots in every bundle (the new root is published ahead).
    let both = vec![old.root.cert_der().to_vec(), new.root.cert_der().to_vec()];
    a_id.bundle.update(both.clone());
    b_id.bundle.update(both);
    pause().await;
    // 2. Each sidecar renews onto the new CA, one after the other.
    b_id.key.store(certified(svid(&new, "/b", now())));
    pause().await;
    a_id.key.store(certified(svid(&new, "/a", now())));
    pause().await;
    // 3. The old root leaves the bundles.
    a_id.bundle.update(vec![new.root.cert_der().to_vec()]);
    b_id.bundle.update(vec![new.root.cert_der().to_vec()]);
    pause().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = running.await.unwrap();
    assert!(ok > 20, "too little load to mean anything: {ok}");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        ok + failed.len() as u64
    );

    // New handshakes: B presents its new SVID; an SVID of the old CA is now refused.
    let bundle = b_id.bundle();
    let (status, leaf) = direct_with_leaf(
        b.addr("inbound"),
        &bundle,
        Some(certified(svid(&new, "/a", now()))),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(leaf.as_ref(), Some(&b_id.key.load().cert[0]));
    let (status, _) = direct_with_leaf(
        b.addr("inbound"),
        &bundle,
        Some(certified(svid(&old, "/a", now()))),
    )
    .await;
    assert_eq!(status, 0);
}

/// A WebSocket echo service behind sidecar B: answers the handshake, then echoes bytes.
/// Returns its address and the upgrade request heads it saw.
async fn ws_echo_service() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Some((head, rest)) = raw::read_head(&mut s).await else {
                    return;
                };
                let accept = raw::websocket_accept_for(&head);
                seen.lock().unwrap().push(head);
                let res = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
                if s.write_all(res.as_bytes()).await.is_err() {
                    return;
                }
                let _ = s.write_all(&rest).await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn a_websocket_crosses_two_sidecars_over_mtls_with_the_callers_spiffe_id() {
    let ca = ca();
    let (service, heads) = ws_echo_service().await;
    // The usual sidecar configs; the last route of each (B's `svc`, A's `to-b`) carries
    // WebSockets.
    let b = Sidecar::start(
        &(inbound_toml(&format!("http://{service}"), "spiffe://example.org/a")
            + "[routes.websocket]\n"),
        Held::new(&ca, "/b"),
    )
    .await;
    let a = Sidecar::start(
        &(outbound_toml(b.addr("inbound")) + "[routes.websocket]\n"),
        Held::new(&ca, "/a"),
    )
    .await;

    let mut s = tokio::net::TcpStream::connect(a.addr("outbound"))
        .await
        .unwrap();
    s.write_all(b"GET /b/chat HTTP/1.1\r\nHost: b\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let rest = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("an answer through both sidecars")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break got[i + 4..].to_vec();
        }
    };
    let head = String::from_utf8_lossy(&got);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    // A masked text frame "ping", echoed back through A → B (mTLS) → service and back.
    let frame = [
        0x81,
        0x84,
        1,
        2,
        3,
        4,
        b'p' ^ 1,
        b'i' ^ 2,
        b'n' ^ 3,
        b'g' ^ 4,
    ];
    s.write_all(&frame).await.unwrap();
    let mut echoed = rest;
    while echoed.len() < frame.len() {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        echoed.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(echoed, frame);
    let head = heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(
        head.contains("x-warden-subject: spiffe://example.org/a"),
        "B authorized A by its SPIFFE ID and told the service: {head}"
    );
}
