//! Certificate rotation on the one TLS stack, over real sockets: certificate and key files
//! replaced under load on a gateway listener, with config-file watching off (the listener's
//! certificate store swaps them in by itself) and on (a config reload keeps the store).

use std::path::Path;
use std::time::Duration;

use warden_test_util::authcfg::{metrics, series};
use warden_test_util::client;
use warden_test_util::rotation::rotate_under_load;
use warden_test_util::{Gateway, Pki, Upstream};

fn q(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

fn gateway_toml(cert: &Path, key: &Path, upstream: &str, watch: bool) -> String {
    format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n[access_log]\nenabled = false\n\
         [reload]\nwatch = {watch}\npoll_interval = \"200ms\"\n\
         [[listeners]]\nname = \"tls\"\naddress = \"127.0.0.1:0\"\n\
         [[listeners.tls.certificates]]\ncert = {}\nkey = \"file:{}\"\n\
         [[clusters]]\nname = \"c\"\nendpoints = [\"{upstream}\"]\n\
         [[routes]]\nname = \"r\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/\"\n",
        q(cert),
        key.display()
    )
}

async fn replaced_under_load(watch: bool) {
    let pki = Pki::new("rotation ca");
    let (cert, key) = pki.server("site", &["localhost"]);
    let up = Upstream::start("up").await;
    let gw = Gateway::start(&gateway_toml(&cert, &key, &up.url(), watch)).await;
    let cfg = client::tls_config(&pki.ca_file(), None, &[b"http/1.1"]);
    let run = rotate_under_load(gw.addr("tls"), "localhost", "/rotate", cfg, || {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_replaced_under_load_loses_no_request_and_is_served_within_a_second() {
    replaced_under_load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_rotation_under_load_with_config_watching_on() {
    replaced_under_load(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_replacement_keeps_the_old_certificate_without_a_reload() {
    let pki = Pki::new("broken ca");
    let (cert, key) = pki.server("site", &["localhost"]);
    let up = Upstream::start("up").await;
    let gw = Gateway::start(&gateway_toml(&cert, &key, &up.url(), false)).await;
    let addr = gw.addr("tls");
    let cfg = client::tls_config(&pki.ca_file(), None, &[b"http/1.1"]);
    let presented = || async {
        client::tls_connect(addr, "localhost", cfg.clone())
            .await
            .expect("handshake")
            .1
            .server_cert
            .expect("server certificate")
    };
    let first = presented().await;
    // The listener's certificate expiry is exported (DevCa's leaves live 397 days).
    let expiry = |m: &str| {
        series(
            m,
            "warden_tls_certificate_expiry_timestamp_seconds{listener=\"tls\"}",
        )
        .expect("expiry series")
    };
    let first_expiry = expiry(&metrics(gw.admin()).await);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let days_left = (first_expiry - now) / 86_400.0;
    assert!((396.0..398.0).contains(&days_left), "{days_left} days left");
    // A key that is not the certificate's: the pair does not load, the old one keeps serving.
    // (Issued a second later, so that it expires a second later.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let other = pki.ca.server_cert(&["localhost"]).expect("cert");
    warden_test_util::rotation::replace_atomically(&key, other.key_pem.as_bytes());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..3 {
        assert!(presented().await == first, "a broken pair replaced the old");
        let res = client::send_tls(
            addr,
            "localhost",
            cfg.clone(),
            hyper::Request::get("/still")
                .header("host", "localhost")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("request with the old certificate");
        assert_eq!(res.status, 200);
    }
    // Logged and counted once, not at every look.
    let m = metrics(gw.admin()).await;
    assert_eq!(
        series(
            &m,
            "warden_tls_certificate_reloads_total{result=\"failure\"}"
        ),
        Some(1.0),
        "{m}"
    );
    // The matching certificate lands: served within a second.
    warden_test_util::rotation::replace_atomically(&cert, other.cert_pem.as_bytes());
    let want = warden_test_util::rotation::leaf_of(other.cert_pem.as_bytes());
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        if presented().await == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fixed pair was not served within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = metrics(gw.admin()).await;
    assert_eq!(
        series(
            &m,
            "warden_tls_certificate_reloads_total{result=\"success\"}"
        ),
        Some(1.0),
        "{m}"
    );
    // The expiry follows the certificate swapped in (the broken pair did not move it).
    assert!(expiry(&m) > first_expiry, "{m}");
}
