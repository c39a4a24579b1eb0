//! WebSocket upgrades at the byte level: what the gateway refuses before any upstream sees
//! it, what it refuses from an upstream, the per-route limit on open sockets, a drain closing
//! open sockets with a close frame to each side, and back-pressure from a client that stops
//! reading. (The `websockets` library's view is in `websocket_interop.rs`.)

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden_test_util::authcfg::{metrics, series};
use warden_test_util::{base_toml, raw, Gateway};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// How the test upstream answers an upgrade.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// 101 with the right accept, then echoes every byte.
    Echo,
    /// 101 with the right accept, then writes as fast as it can, counting what it wrote.
    Flood,
    /// 101 whose accept is for another key.
    WrongAccept,
    /// 403, no upgrade.
    Refuse,
}

/// A WebSocket upstream that speaks just enough of RFC 6455 for these tests.
struct WsUpstream {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    /// After the 101: bytes received from the gateway, per connection.
    received: Arc<Mutex<Vec<u8>>>,
    written: Arc<AtomicU64>,
}

impl WsUpstream {
    async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let written = Arc::new(AtomicU64::new(0));
        let (h, r, w) = (heads.clone(), received.clone(), written.clone());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let (h, r, w) = (h.clone(), r.clone(), w.clone());
                tokio::spawn(async move {
                    let Some((head, rest)) = raw::read_head(&mut s).await else {
                        return;
                    };
                    h.lock().unwrap().push(head.clone());
                    r.lock().unwrap().extend_from_slice(&rest);
                    let mut chunk = [0u8; 4096];
                    let accept = if answer == Answer::WrongAccept {
                        "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned()
                    } else {
                        raw::websocket_accept_for(&head)
                    };
                    if answer == Answer::Refuse {
                        let body = "no sockets here";
                        let res = format!(
                            "HTTP/1.1 403 Forbidden\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = s.write_all(res.as_bytes()).await;
                        return;
                    }
                    let res = format!("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n");
                    if s.write_all(res.as_bytes()).await.is_err() {
                        return;
                    }
                    let echoed = r.lock().unwrap().clone();
                    if answer == Answer::Flood {
                        let block = vec![0x5a; 64 * 1024];
                        while s.write_all(&block).await.is_ok() {
                            w.fetch_add(block.len() as u64, Ordering::SeqCst);
                        }
                        return;
                    }
                    if s.write_all(&echoed).await.is_err() {
                        return;
                    }
                    loop {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            let _ = s.shutdown().await;
                            return;
                        }
                        r.lock().unwrap().extend_from_slice(&chunk[..n]);
                        if s.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            heads,
            received,
            written,
        }
    }

    fn upgrades(&self) -> usize {
        self.heads.lock().unwrap().len()
    }
}

fn config(upstream: SocketAddr, websocket: &str) -> String {
    format!(
        "{}\n[[clusters]]\nname = \"c\"\nendpoints = [\"http://{upstream}\"]\n\
         [[routes]]\nname = \"ws\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/ws\"\n\
         [routes.websocket]\n{websocket}\n\
         [[routes]]\nname = \"plain\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/\"\n",
        base_toml()
    )
}

fn handshake(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
    )
}

/// A masked text frame, as a client sends it.
fn client_frame(text: &[u8]) -> Vec<u8> {
    assert!(text.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x81, 0x80 | text.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads a response head (and whatever came with it) from `s`, within 5 s.
async fn read_head(s: &mut TcpStream) -> (String, Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(5), raw::read_head(s))
        .await
        .expect("a response within 5 s")
        .expect("closed before a response head")
}

async fn open(gw: &Gateway, path: &str) -> (TcpStream, String, Vec<u8>) {
    let mut s = TcpStream::connect(gw.addr("main")).await.unwrap();
    s.write_all(handshake(path, "").as_bytes()).await.unwrap();
    let (head, rest) = read_head(&mut s).await;
    (s, head, rest)
}

fn status(head: &str) -> u16 {
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn malformed_or_unallowed_upgrades_are_refused_before_any_upstream_sees_them() {
    let up = WsUpstream::start(Answer::Echo).await;
    let gw = Gateway::start(&config(up.addr, "")).await;
    let addr = gw.addr("main");
    let cases: Vec<(String, u16, &str)> = vec![
        (handshake("/other", ""), 403, "upgrade_not_allowed"),
        (
            handshake("/ws", "").replace("Version: 13", "Version: 8"),
            426,
            "websocket_version",
        ),
        (
            handshake("/ws", "").replace(KEY, "bm90IDE2IGJ5dGVz"),
            400,
            "invalid Sec-WebSocket-Key",
        ),
        (
            handshake("/ws", "").replace("Upgrade: websocket", "Upgrade: TLS/1.0"),
            400,
            "unsupported upgrade protocol",
        ),
        (
            handshake("/ws", "Content-Length: 5\r\n") + "hello",
            400,
            "websocket upgrade with a body",
        ),
        (
            handshake("/ws", "").replace("GET", "POST"),
            400,
            "must be a GET",
        ),
    ];
    for (request, expected, why) in cases {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let got = raw::read_all(&mut s, Duration::from_millis(500)).await;
        assert_eq!(raw::statuses(&got), vec![expected], "{why}: {got}");
        assert!(got.contains(why), "{why}: {got}");
        if expected == 426 {
            assert!(
                got.to_ascii_lowercase()
                    .contains("sec-websocket-version: 13"),
                "{got}"
            );
        }
    }
    assert_eq!(up.upgrades(), 0, "no refused upgrade reached the upstream");

    // `Upgrade: h2c` (curl --http2 on http://) is ignored: the request is served over
    // HTTP/1.1 and goes upstream without the hop-by-hop upgrade headers.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), read_head(&mut s)).await;
    let heads = up.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let forwarded = heads[0].to_ascii_lowercase();
    assert!(forwarded.starts_with("get /x http/1.1"), "{forwarded}");
    assert!(!forwarded.contains("upgrade"), "{forwarded}");
}

#[tokio::test]
async fn an_upstream_answer_that_does_not_accept_the_key_is_a_502_and_a_refusal_passes_through() {
    let wrong = WsUpstream::start(Answer::WrongAccept).await;
    let gw = Gateway::start(&config(wrong.addr, "")).await;
    let (mut s, head, _) = open(&gw, "/ws").await;
    assert_eq!(status(&head), 502, "{head}");
    // Nothing is spliced: the connection is not a tunnel to the upstream.
    let _ = s.write_all(&client_frame(b"smuggled")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(wrong.received.lock().unwrap().is_empty());

    let refusing = WsUpstream::start(Answer::Refuse).await;
    let gw = Gateway::start(&config(refusing.addr, "")).await;
    let (_s, head, rest) = open(&gw, "/ws").await;
    assert_eq!(status(&head), 403, "{head}");
    assert!(
        String::from_utf8_lossy(&rest).contains("no sockets here")
            || head.contains("content-length: 15"),
        "{head}"
    );
}

#[tokio::test]
async fn frames_flow_both_ways_including_those_sent_with_the_handshake() {
    let up = WsUpstream::start(Answer::Echo).await;
    let gw = Gateway::start(&config(up.addr, "")).await;
    let mut s = TcpStream::connect(gw.addr("main")).await.unwrap();
    // The first frame rides in the same packet as the handshake.
    let mut first = handshake("/ws/chat", "").into_bytes();
    first.extend_from_slice(&client_frame(b"early"));
    s.write_all(&first).await.unwrap();
    let (head, mut rest) = read_head(&mut s).await;
    assert_eq!(status(&head), 101, "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket") && lower.contains("connection: upgrade"));
    assert!(head.contains(ACCEPT), "{head}");
    s.write_all(&client_frame(b"later")).await.unwrap();
    let expected = [client_frame(b"early"), client_frame(b"later")].concat();
    while rest.len() < expected.len() {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        rest.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(rest, expected, "echoed byte for byte");
    let head = up.heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.contains("upgrade: websocket") && head.contains(&KEY.to_ascii_lowercase()));
    assert!(head.contains("x-forwarded-for: 127.0.0.1"), "{head}");
}

#[tokio::test]
async fn the_route_limit_on_open_websockets_refuses_with_503_until_one_closes() {
    let up = WsUpstream::start(Answer::Echo).await;
    let gw = Gateway::start(&config(up.addr, "max_connections = 2")).await;
    let (a, head, _) = open(&gw, "/ws").await;
    assert_eq!(status(&head), 101);
    let (_b, head, _) = open(&gw, "/ws").await;
    assert_eq!(status(&head), 101);
    let (_c, head, _) = open(&gw, "/ws").await;
    assert_eq!(status(&head), 503, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert_eq!(
        series(
            &metrics(gw.admin()).await,
            "warden_websocket_connections_open{route=\"ws\"}"
        ),
        Some(2.0)
    );
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_d, head, _) = open(&gw, "/ws").await;
        if status(&head) == 101 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed socket's place never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_drain_sends_each_side_a_going_away_close_frame() {
    let up = WsUpstream::start(Answer::Echo).await;
    let gw = Gateway::start(&config(up.addr, "going_away_close_code = 4001")).await;
    let (mut s, head, _) = open(&gw, "/ws").await;
    assert_eq!(status(&head), 101);
    // A frame cut in half when the drain starts: it is finished before the close frame.
    let frame = client_frame(b"half and half");
    s.write_all(&frame[..6]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drain = tokio::spawn(gw.handle.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(&frame[6..]).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    // The echo of the whole frame, then an unmasked close frame with the configured code.
    let close = got
        .len()
        .checked_sub(4 + "gateway shutting down".len())
        .unwrap();
    assert_eq!(
        &got[..close],
        &frame[..],
        "the frame in flight was finished: {got:?}"
    );
    assert_eq!(&got[close..close + 4], &[0x88, 2 + 21, 0x0f, 0xa1]);
    assert_eq!(&got[close + 4..], b"gateway shutting down");
    // The upstream got the whole frame, then a masked close frame with the same code.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while up.received.lock().unwrap().len() < frame.len() + 2 + 4 + 23
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = up.received.lock().unwrap().clone();
    assert_eq!(&received[..frame.len()], &frame[..]);
    let close = &received[frame.len()..];
    assert_eq!(close[0], 0x88);
    assert_eq!(close[1], 0x80 | 23);
    let code = [close[6] ^ close[2], close[7] ^ close[3]];
    assert_eq!(u16::from_be_bytes(code), 4001);
    tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .expect("the drain ends")
        .unwrap();
}

#[tokio::test]
async fn a_client_that_stops_reading_holds_the_upstream_back() {
    let up = WsUpstream::start(Answer::Flood).await;
    let gw = Gateway::start(&config(up.addr, "")).await;
    let (mut s, head, _) = open(&gw, "/ws").await;
    assert_eq!(status(&head), 101);
    // The client reads nothing more: the upstream's writes must stall once the socket
    // buffers are full, the gateway holding at most a copy buffer in between.
    let stalled_at = raw::assert_back_pressure(&up.written, &mut s, |chunk| {
        assert!(chunk.iter().all(|b| *b == 0x5a), "byte for byte");
    })
    .await;
    println!("the upstream stalled after {} KiB", stalled_at >> 10);
}

#[tokio::test]
async fn a_websocket_over_http2_extended_connect_reaches_an_http1_upstream() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let up = WsUpstream::start(Answer::Echo).await;
    let gw = Gateway::start(&config(up.addr, "")).await;
    let tcp = TcpStream::connect(gw.addr("main")).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    // One ordinary exchange first, so the server's SETTINGS (which allow extended CONNECT)
    // have arrived. (The test upstream answers every request with a 101, which the gateway
    // refuses for a request that asked for no upgrade.)
    let plain = sender
        .send_request(
            http::Request::get("http://a/plain")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(plain.status(), 502);

    // Another protocol over extended CONNECT is refused.
    let mut other = http::Request::connect("http://a/ws/chat")
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .unwrap();
    other
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("something-else"));
    assert_eq!(sender.send_request(other).await.unwrap().status(), 400);

    let mut req = http::Request::connect("http://a/ws/chat")
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200, "RFC 8441: a 200 opens the stream");
    assert!(res.headers().get("sec-websocket-accept").is_none());
    let mut io = TokioIo::new(hyper::upgrade::on(res).await.unwrap());
    let frame = client_frame(b"over http/2");
    io.write_all(&frame).await.unwrap();
    let mut echoed = vec![0u8; frame.len()];
    tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut echoed))
        .await
        .expect("the echo comes back through the stream")
        .unwrap();
    assert_eq!(echoed, frame);
    // The upstream saw an HTTP/1.1 upgrade with a key of the gateway's own.
    let heads = up.heads.lock().unwrap().clone();
    let head = heads
        .iter()
        .find(|h| h.starts_with("GET /ws/chat"))
        .expect("the upgrade");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("upgrade: websocket") && lower.contains("sec-websocket-key:"),
        "{head}"
    );
}
