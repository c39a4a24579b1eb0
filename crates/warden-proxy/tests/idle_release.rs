//! Idle HTTP/1 connections are handed back from hyper (freeing its buffers) and picked up
//! again when the next request arrives: the client must not notice anything.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use warden_test_util::{base_toml, raw, Gateway, Upstream};

async fn gateway(up: &Upstream) -> Gateway {
    let toml = format!(
        "{}\n[server]\nheader_read_timeout = \"10s\"\nidle_timeout = \"30s\"\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/\"\n",
        base_toml(),
        up.url()
    );
    Gateway::start(&toml).await
}

#[tokio::test]
async fn keep_alive_connection_serves_again_after_a_long_idle() {
    let up = Upstream::start("u").await;
    let gw = gateway(&up).await;
    let mut s = TcpStream::connect(gw.addr("main")).await.unwrap();
    for i in 0..3 {
        s.write_all(format!("GET /n{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let got = raw::read_all(&mut s, Duration::from_millis(300)).await;
        assert_eq!(raw::statuses(&got), vec![200], "round {i}: {got}");
        // Longer than the release delay: the connection is handed back from hyper.
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    let uris: Vec<String> = up.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(uris, ["/n0", "/n1", "/n2"]);
    assert!(
        releases(&gw).await >= 3,
        "the connection was released while idle"
    );
}

/// `warden_idle_connection_releases_total` from the admin listener.
async fn releases(gw: &Gateway) -> u64 {
    let res = warden_test_util::client::get(gw.admin(), "/metrics").await;
    let text = String::from_utf8_lossy(&res.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("warden_idle_connection_releases_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no release counter in {text}"))
}

#[tokio::test]
async fn a_slow_request_head_cancels_the_release_and_is_served_whole() {
    let up = Upstream::start("u").await;
    let gw = gateway(&up).await;
    let mut s = TcpStream::connect(gw.addr("main")).await.unwrap();
    s.write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        raw::statuses(&raw::read_all(&mut s, Duration::from_millis(300)).await),
        vec![200]
    );
    // The idle connection has been released by now. Half a head, then a long pause, then the
    // rest: no release happens while a head is arriving, and the request is served whole.
    let before = releases(&gw).await;
    s.write_all(b"GET /sec").await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        releases(&gw).await,
        before,
        "no release while a head is arriving"
    );
    s.write_all(b"ond HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let got = raw::read_all(&mut s, Duration::from_millis(500)).await;
    assert_eq!(raw::statuses(&got), vec![200], "{got}");
    let uris: Vec<String> = up.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(uris, ["/first", "/second"]);
    // One more release: after the second response, not in the middle of its head.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(releases(&gw).await, before + 1);
}

#[tokio::test]
async fn framing_checks_still_apply_after_a_release() {
    let up = Upstream::start("u").await;
    let gw = gateway(&up).await;
    let mut s = TcpStream::connect(gw.addr("main")).await.unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        raw::statuses(&raw::read_all(&mut s, Duration::from_millis(300)).await),
        vec![200]
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    s.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let got = raw::read_all(&mut s, Duration::from_millis(500)).await;
    assert_eq!(raw::statuses(&got), vec![400], "{got}");
    let uris: Vec<String> = up.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(
        uris,
        ["/ok"],
        "nothing after the refused request reached the upstream"
    );
}

#[tokio::test]
async fn released_connections_still_close_at_the_idle_timeout() {
    let up = Upstream::start("u").await;
    let toml = format!(
        "{}\n[server]\nidle_timeout = \"1500ms\"\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/\"\n",
        base_toml(),
        up.url()
    );
    let gw = Gateway::start(&toml).await;
    let mut s = TcpStream::connect(gw.addr("main")).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let start = std::time::Instant::now();
    // read_all returns at EOF (the gateway closing) or after 3 s of silence.
    let got = raw::read_all(&mut s, Duration::from_secs(3)).await;
    assert_eq!(raw::statuses(&got), vec![200]);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1200) && waited < Duration::from_millis(2900),
        "closed after {waited:?}"
    );
}
