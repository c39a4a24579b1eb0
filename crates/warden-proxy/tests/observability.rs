//! What an operator sees, over real sockets: every request refused below the handler (by hyper
//! or the connection's timers) and every HTTP/2 or TLS probe leaves an access-log line and a
//! count; `/metrics` follows reloads (series of removed endpoints, routes and clusters go, the
//! Redis store's gauge exists only where a store is configured) and shows known series at 0
//! before any traffic.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warden_test_util::authcfg::{access_log_toml, metrics, q, series, wait_for_lines};
use warden_test_util::{base_toml, client, raw, Gateway, Pki, Upstream};

/// A gateway whose access log is written to `log`, with `[server]` settings `server` and one
/// catch-all route `all` to `up`.
async fn logged_gateway(up: &Upstream, log: &Path, server: &str) -> Gateway {
    let toml = format!(
        "[server]\n{server}\n{}\n[[clusters]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"all\"\nauth = \"none\"\ncluster = \"up\"\npath_prefix = \"/\"\n",
        access_log_toml(&base_toml(), log),
        up.url()
    );
    Gateway::start(&toml).await
}

/// The one access-log line, as JSON (waits for it; fails if there are more).
async fn only_line(log: &Path) -> serde_json::Value {
    let text = wait_for_lines(log, 1).await;
    // A second line would be a double count: give it a moment to show up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(log).unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "expected one access-log line: {text}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Checks a refusal's access-log line: who, where, what was answered and why.
fn assert_refusal_line(line: &serde_json::Value, client: SocketAddr, status: u16, reason: &str) {
    assert_eq!(line["client"], client.to_string().as_str(), "{line}");
    assert_eq!(line["listener"], "main", "{line}");
    assert_eq!(line["route"], "-", "{line}");
    assert_eq!(line["status"], status, "{line}");
    assert_eq!(line["reason"], reason, "{line}");
    let time = line["time"].as_str().unwrap_or_default();
    assert!(time.len() == 24 && time.ends_with('Z'), "{line}");
}

fn rejected(text: &str, reason: &str) -> f64 {
    series(
        text,
        &format!("warden_rejected_requests_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

fn answered(text: &str, status: u16) -> f64 {
    series(
        text,
        &format!("warden_requests_total{{route=\"-\",status=\"{status}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Sends `bytes` on a new connection; returns what came back and the client's address.
async fn send(addr: SocketAddr, bytes: &[u8], wait: Duration) -> (String, SocketAddr) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let me = s.local_addr().expect("local addr");
    s.write_all(bytes).await.expect("write");
    (raw::read_all(&mut s, wait).await, me)
}

// ---------------------------------------------------------------------------------------------
// 6. Refusals made below the handler
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_head_gets_431_a_log_line_and_a_count() {
    let up = Upstream::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let gw = logged_gateway(&up, &log, "max_header_bytes = \"4KiB\"").await;
    let big = "a".repeat(8 * 1024);
    let req = format!("GET /x HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n");
    let (text, me) = send(gw.addr("main"), req.as_bytes(), Duration::from_secs(2)).await;
    assert_eq!(raw::statuses(&text), [431], "{text}");
    let line = only_line(&log).await;
    assert_refusal_line(&line, me, 431, "header_too_large");
    let m = metrics(gw.admin()).await;
    assert_eq!(rejected(&m, "header_too_large"), 1.0, "{m}");
    assert_eq!(answered(&m, 431), 1.0, "{m}");
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_head_gets_408_a_log_line_and_a_count() {
    let up = Upstream::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let gw = logged_gateway(&up, &log, "header_read_timeout = \"1s\"").await;
    // Half a head, then nothing: the timeout answers.
    let (text, me) = send(
        gw.addr("main"),
        b"GET /x HTTP/1.1\r\nHost: loc",
        Duration::from_secs(4),
    )
    .await;
    assert_eq!(raw::statuses(&text), [408], "{text}");
    let line = only_line(&log).await;
    assert_refusal_line(&line, me, 408, "header_read_timeout");
    let m = metrics(gw.admin()).await;
    assert_eq!(rejected(&m, "header_read_timeout"), 1.0, "{m}");
    assert_eq!(answered(&m, 408), 1.0, "{m}");
}

#[tokio::test]
async fn malformed_head_gets_400_a_log_line_and_a_count() {
    let up = Upstream::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let gw = logged_gateway(&up, &log, "").await;
    // A space inside a field name: hyper refuses the head itself.
    let (text, me) = send(
        gw.addr("main"),
        b"GET /x HTTP/1.1\r\nHost: localhost\r\nBad Name: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(raw::statuses(&text), [400], "{text}");
    let line = only_line(&log).await;
    assert_refusal_line(&line, me, 400, "malformed_request");
    assert_eq!(line["protocol"], "HTTP/1.1", "{line}");
    let m = metrics(gw.admin()).await;
    assert_eq!(rejected(&m, "malformed_request"), 1.0, "{m}");
    assert_eq!(answered(&m, 400), 1.0, "{m}");
    assert!(up.requests().is_empty());
}

/// An HTTP/2 frame: 9-byte header, then the payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn http2_protocol_violation_is_logged_and_counted_with_the_goaway_reason() {
    let up = Upstream::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let gw = logged_gateway(&up, &log, "").await;
    // h2c with prior knowledge: the preface, empty SETTINGS, then a WINDOW_UPDATE of 0 on the
    // connection, which RFC 9113 §6.9 makes a connection error of type PROTOCOL_ERROR.
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(frame(0x4, 0, 0, &[]));
    bytes.extend(frame(0x8, 0, 0, &0u32.to_be_bytes()));
    let mut s = TcpStream::connect(gw.addr("main")).await.expect("connect");
    let me = s.local_addr().unwrap();
    s.write_all(&bytes).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    // The gateway said GOAWAY with PROTOCOL_ERROR (error code 1).
    let mut i = 0;
    let mut goaway = None;
    while i + 9 <= got.len() {
        let len =
            (usize::from(got[i]) << 16) | (usize::from(got[i + 1]) << 8) | usize::from(got[i + 2]);
        if got[i + 3] == 0x7 && i + 9 + 8 <= got.len() {
            let code = &got[i + 9 + 4..i + 9 + 8];
            goaway = Some(u32::from_be_bytes(code.try_into().unwrap()));
        }
        i += 9 + len;
    }
    assert_eq!(goaway, Some(1), "no GOAWAY(PROTOCOL_ERROR) in {got:?}");
    let line = only_line(&log).await;
    assert_refusal_line(&line, me, 0, "h2_protocol_error");
    assert_eq!(line["protocol"], "HTTP/2", "{line}");
    let m = metrics(gw.admin()).await;
    assert_eq!(rejected(&m, "h2_protocol_error"), 1.0, "{m}");
}

#[tokio::test]
async fn a_failed_tls_handshake_is_logged_and_counted() {
    let up = Upstream::start("up").await;
    let pki = Pki::new("obs");
    let (cert, key) = pki.server("server", &["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let toml = format!(
        "{}[[listeners.tls.certificates]]\ncert = {}\nkey = \"file:{}\"\n\
         [[clusters]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"all\"\nauth = \"none\"\ncluster = \"up\"\npath_prefix = \"/\"\n",
        access_log_toml(&base_toml(), &log),
        q(&cert),
        key.display(),
        up.url()
    );
    let gw = Gateway::start(&toml).await;
    // Plain HTTP to a TLS listener: a probe, not a TLS client.
    let (_, me) = send(
        gw.addr("main"),
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    let line = only_line(&log).await;
    assert_refusal_line(&line, me, 0, "tls_handshake_failed");
    let m = metrics(gw.admin()).await;
    assert_eq!(rejected(&m, "tls_handshake_failed"), 1.0, "{m}");
    // A good TLS request is logged once, as a request (no refusal line with it).
    let ca = pki.ca_file();
    let res = client::send_tls(
        gw.addr("main"),
        "localhost",
        client::tls_config(&ca, None, &[b"http/1.1"]),
        http::Request::get("/ok")
            .header("host", "localhost")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await
    .expect("TLS request");
    assert_eq!(res.status, 200);
    let text = wait_for_lines(&log, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(&log).unwrap_or(text);
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[tokio::test]
async fn good_requests_leave_no_refusal_lines() {
    let up = Upstream::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let gw = logged_gateway(&up, &log, "").await;
    for _ in 0..3 {
        assert_eq!(client::get(gw.addr("main"), "/x").await.status, 200);
    }
    // A connection that opens and closes without a byte is not a refusal either.
    drop(TcpStream::connect(gw.addr("main")).await.unwrap());
    let text = wait_for_lines(&log, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&log).unwrap_or(text);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(!text.contains("\"reason\""), "{text}");
}

// ---------------------------------------------------------------------------------------------
// 7. Series of removed endpoints, routes and clusters go on reload
// ---------------------------------------------------------------------------------------------

/// Two clusters (`a` with `a_endpoints`, and `b` when `with_b`) and their routes.
fn two_clusters(a_endpoints: &[&Upstream], b: Option<&Upstream>) -> String {
    let eps: Vec<String> = a_endpoints
        .iter()
        .map(|u| format!("\"{}\"", u.url()))
        .collect();
    let mut toml = format!(
        "{}\n[[clusters]]\nname = \"a\"\nendpoints = [{}]\n\
         [[routes]]\nname = \"ra\"\nauth = \"none\"\ncluster = \"a\"\npath_prefix = \"/a/\"\n",
        base_toml(),
        eps.join(", ")
    );
    if let Some(b) = b {
        toml.push_str(&format!(
            "[[clusters]]\nname = \"b\"\nendpoints = [\"{}\"]\n\
             [[routes]]\nname = \"rb\"\nauth = \"none\"\ncluster = \"b\"\npath_prefix = \"/b/\"\n",
            b.url()
        ));
    }
    toml
}

#[tokio::test]
async fn a_reload_removes_the_series_of_removed_endpoints_routes_and_clusters() {
    let (u1, u2, u3) = (
        Upstream::start("u1").await,
        Upstream::start("u2").await,
        Upstream::start("u3").await,
    );
    let gw = Gateway::start(&two_clusters(&[&u1, &u2], Some(&u3))).await;
    assert_eq!(client::get(gw.addr("main"), "/a/x").await.status, 200);
    assert_eq!(client::get(gw.addr("main"), "/b/x").await.status, 200);
    let healthy = |u: &Upstream, c: &str| {
        format!(
            "warden_upstream_endpoint_healthy{{cluster=\"{c}\",endpoint=\"{}\"}}",
            u.addr()
        )
    };
    let before = metrics(gw.admin()).await;
    for s in [healthy(&u1, "a"), healthy(&u2, "a"), healthy(&u3, "b")] {
        assert_eq!(series(&before, &s), Some(1.0), "{s} missing:\n{before}");
    }
    assert!(before.contains("route=\"rb\""), "{before}");

    // Endpoint u2, cluster b and route rb go.
    gw.rewrite(&two_clusters(&[&u1], None));
    gw.handle.reload().await.expect("reload");
    let after = metrics(gw.admin()).await;
    assert_eq!(series(&after, &healthy(&u1, "a")), Some(1.0), "{after}");
    let u2_addr = u2.addr().to_string();
    for gone in [u2_addr.as_str(), "cluster=\"b\"", "route=\"rb\""] {
        let left: Vec<&str> = after.lines().filter(|l| l.contains(gone)).collect();
        assert!(
            left.is_empty(),
            "series of removed {gone} still exported: {left:#?}"
        );
    }
    // What stays keeps its count.
    assert_eq!(
        series(&after, "warden_requests_total{route=\"ra\",status=\"200\"}"),
        Some(1.0),
        "{after}"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. The Redis store's gauge exists only where a store is configured
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rate_limit_store_up_is_exported_only_where_a_store_is_configured() {
    let up = Upstream::start("up").await;
    let plain = format!(
        "{}\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"r\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/\"\n\
         [[routes.rate_limits]]\nkey = \"client_ip\"\nrequests = 100\n",
        base_toml(),
        up.url()
    );
    let gw = Gateway::start(&plain).await;
    let m = metrics(gw.admin()).await;
    assert!(!m.contains("warden_rate_limit_store_up"), "{m}");

    // A store (nothing listens there: the gauge shows it down, but it is there).
    let dead = warden_test_util::flaky::dead_endpoint().await;
    let with_store = format!(
        "{}\n[rate_limit_store]\nredis_url = \"redis://{dead}\"\n",
        plain.replace("requests = 100\n", "requests = 100\nstore = \"redis\"\n")
    );
    gw.rewrite(&with_store);
    gw.handle.reload().await.expect("reload with a store");
    let m = metrics(gw.admin()).await;
    assert_eq!(series(&m, "warden_rate_limit_store_up"), Some(0.0), "{m}");

    // And gone again with the store.
    gw.rewrite(&plain);
    gw.handle.reload().await.expect("reload without a store");
    let m = metrics(gw.admin()).await;
    assert!(!m.contains("warden_rate_limit_store_up"), "{m}");
}

// ---------------------------------------------------------------------------------------------
// 9. Known series start at 0
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn known_series_are_exported_at_zero_before_any_traffic() {
    let up = Upstream::start("up").await;
    let toml = format!(
        "{}\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n\
         [clusters.retries]\nattempts = 1\n[clusters.outlier_detection]\nconsecutive_failures = 5\n\
         [[routes]]\nname = \"r\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/\"\n\
         [[routes.rate_limits]]\nkey = \"client_ip\"\nrequests = 100\n",
        base_toml(),
        up.url()
    );
    let gw = Gateway::start(&toml).await;
    let m = metrics(gw.admin()).await;
    let ep = up.addr();
    for s in [
        "warden_rejected_requests_total{reason=\"header_too_large\"}".to_owned(),
        "warden_rejected_requests_total{reason=\"in_flight_limit\"}".to_owned(),
        "warden_rejected_requests_total{reason=\"h2_protocol_error\"}".to_owned(),
        "warden_rejected_requests_total{reason=\"tls_handshake_failed\"}".to_owned(),
        "warden_upstream_rejected_total{cluster=\"c\",reason=\"bulkhead\"}".to_owned(),
        "warden_upstream_rejected_total{cluster=\"c\",reason=\"circuit_open\"}".to_owned(),
        "warden_upstream_retries_total{cluster=\"c\",result=\"attempted\"}".to_owned(),
        format!("warden_upstream_errors_total{{cluster=\"c\",endpoint=\"{ep}\"}}"),
        format!("warden_upstream_ejections_total{{cluster=\"c\",endpoint=\"{ep}\"}}"),
        "warden_rate_limited_requests_total{route=\"r\",key=\"client_ip\"}".to_owned(),
        "warden_config_reloads_total{result=\"failure\"}".to_owned(),
    ] {
        assert_eq!(series(&m, &s), Some(0.0), "{s} not at 0:\n{m}");
    }
    // Statuses are not invented.
    assert!(!m.contains("warden_requests_total{"), "{m}");
}
