//! The authority's listener on the one TLS stack, over real sockets: certificate files
//! replaced under load (no request fails, the new certificate within a second), SNI over two
//! certificates, a broken replacement that keeps the old certificate, and the gateway's
//! connection timeouts (handshake, request head, idle keep-alive).

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Backend, Harness};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warden_config::{CertificateConfig, SecretRef, TlsListenerConfig};
use warden_test_util::client;
use warden_test_util::rotation::{leaf_of, replace_atomically, rotate_under_load};
use warden_test_util::Pki;

fn certificate(cert: &Path, key: &Path, names: &[&str]) -> CertificateConfig {
    CertificateConfig {
        cert: cert.to_path_buf(),
        key: SecretRef::File(key.to_path_buf()),
        server_names: names.iter().map(|n| n.to_string()).collect(),
    }
}

async fn tls_authority(certs: Vec<CertificateConfig>) -> Harness {
    Harness::start_with(Backend::Sqlite, |c, _| {
        c.tls = Some(TlsListenerConfig {
            certificates: certs,
            client_auth: None,
        });
    })
    .await
}

async fn presented(h: &Harness, sni: &str, ca: &Path) -> CertificateDer<'static> {
    client::tls_connect(h.addr(), sni, client::tls_config(ca, None, &[b"http/1.1"]))
        .await
        .unwrap_or_else(|e| panic!("verified handshake for {sni}: {e}"))
        .1
        .server_cert
        .expect("server certificate")
}

fn leaf(path: &PathBuf) -> CertificateDer<'static> {
    leaf_of(&std::fs::read(path).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_replaced_under_load_loses_no_request_and_is_served_within_a_second() {
    let pki = Pki::new("authority rotation ca");
    let (cert, key) = pki.server("authority", &["localhost"]);
    let h = tls_authority(vec![certificate(&cert, &key, &[])]).await;
    let cfg = client::tls_config(&pki.ca_file(), None, &[b"http/1.1"]);
    let run = rotate_under_load(h.addr(), "localhost", "/oauth2/jwks", cfg, || {
        pki.rotate_server(&cert, &key, &["localhost"])
    })
    .await;
    eprintln!("rotation under load: {run:?}");
    assert!(
        run.failures.is_empty(),
        "requests failed during the rotation ({} ok): {:?}",
        run.ok,
        run.failures
    );
    let after = run
        .new_cert_after
        .expect("the new certificate was never presented");
    assert!(
        after <= Duration::from_secs(1),
        "the new certificate took {after:?} to be served"
    );
    assert!(run.ok >= 100, "too little load to show anything: {run:?}");
    assert!(
        run.ok_after > 0,
        "no request on a new connection after the swap"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_picks_between_two_certificates() {
    let pki = Pki::new("authority sni ca");
    let (a_cert, a_key) = pki.server("a", &["a.test"]);
    let (b_cert, b_key) = pki.server("b", &["b.test"]);
    let (w_cert, w_key) = pki.server("w", &["*.wild.test"]);
    let h = tls_authority(vec![
        certificate(&a_cert, &a_key, &[]),
        certificate(&b_cert, &b_key, &["b.test"]),
        certificate(&w_cert, &w_key, &["*.wild.test"]),
    ])
    .await;
    let ca = pki.ca_file();
    assert!(presented(&h, "a.test", &ca).await == leaf(&a_cert), "SAN");
    assert!(
        presented(&h, "b.test", &ca).await == leaf(&b_cert),
        "server_names"
    );
    assert!(
        presented(&h, "x.wild.test", &ca).await == leaf(&w_cert),
        "wildcard"
    );
    // And the requests work on each.
    for sni in ["a.test", "b.test"] {
        let req = hyper::Request::get("/oauth2/jwks")
            .header("host", sni)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let res = client::send_tls(
            h.addr(),
            sni,
            client::tls_config(&ca, None, &[b"http/1.1"]),
            req,
        )
        .await
        .expect("request");
        assert_eq!(res.status, 200, "{sni}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_replacement_keeps_the_old_certificate() {
    let pki = Pki::new("authority broken ca");
    let (cert, key) = pki.server("authority", &["localhost"]);
    let h = tls_authority(vec![certificate(&cert, &key, &[])]).await;
    let ca = pki.ca_file();
    let first = leaf(&cert);
    // Garbage in the key file, then a key that is not the certificate's.
    replace_atomically(&key, b"-----BEGIN PRIVATE KEY-----\nnot base64\n");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(presented(&h, "localhost", &ca).await == first);
    let other = pki.ca.server_cert(&["localhost"]).unwrap();
    replace_atomically(&key, other.key_pem.as_bytes());
    tokio::time::sleep(Duration::from_millis(800)).await;
    for _ in 0..3 {
        assert!(
            presented(&h, "localhost", &ca).await == first,
            "a broken pair replaced the old certificate"
        );
    }
    // The matching certificate arrives: the pair loads and is served within a second.
    replace_atomically(&cert, other.cert_pem.as_bytes());
    let want = leaf_of(other.cert_pem.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(1);
    while presented(&h, "localhost", &ca).await != want {
        assert!(
            Instant::now() < deadline,
            "the fixed pair was not served in 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads until the server closes; how long that took (or `None` within `limit`).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_get_the_gateways_timeouts() {
    let pki = Pki::new("authority timeouts ca");
    let (cert, key) = pki.server("authority", &["localhost"]);
    let h = Harness::start_with(Backend::Sqlite, |c, _| {
        c.tls = Some(TlsListenerConfig {
            certificates: vec![certificate(&cert, &key, &[])],
            client_auth: None,
        });
        c.header_read_timeout = warden_config::Dur(Duration::from_millis(300));
        c.idle_timeout = warden_config::Dur(Duration::from_millis(1000));
    })
    .await;
    let cfg = client::tls_config(&pki.ca_file(), None, &[b"http/1.1"]);

    // No ClientHello: dropped after the handshake timeout.
    let mut silent = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    let t = closed_within(&mut silent, Duration::from_secs(3))
        .await
        .expect("a silent connection was kept");
    assert!(t >= Duration::from_millis(250), "closed too early: {t:?}");

    // Half a request head: dropped after the header timeout.
    let (mut tls, _) = client::tls_connect(h.addr(), "localhost", cfg.clone())
        .await
        .unwrap();
    tls.write_all(b"GET /oauth2/jwks HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    let t = closed_within(&mut tls, Duration::from_secs(3))
        .await
        .expect("a stalled head was kept");
    assert!(
        t < Duration::from_millis(900),
        "the head timeout was not applied: {t:?}"
    );

    // Kept alive between requests for longer than the head timeout, closed once idle for
    // the idle timeout.
    let (tls, _) = client::tls_connect(h.addr(), "localhost", cfg.clone())
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let closed = tokio::spawn(async move {
        let _ = conn.await;
        Instant::now()
    });
    for i in 0..2 {
        let req = hyper::Request::get("/oauth2/jwks")
            .header("host", "localhost")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let res = sender.send_request(req).await.expect("kept-alive request");
        assert_eq!(res.status(), 200, "request {i}");
        http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap();
        // Longer than the head timeout, shorter than the idle timeout.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let waiting = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(3), closed)
        .await
        .expect("an idle connection was kept past the idle timeout")
        .unwrap();
    let t = closed.duration_since(waiting);
    assert!(
        t <= Duration::from_millis(900),
        "idle close took {t:?} more"
    );
}
