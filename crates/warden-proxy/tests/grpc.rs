//! gRPC refusals at the byte level, over h2c: a malformed `grpc-timeout` is refused with
//! INVALID_ARGUMENT and never forwarded, an unrouted method is UNIMPLEMENTED, and each is a
//! trailers-only answer (the status in the response head, the stream ended there), while a
//! request that is not gRPC keeps its JSON refusal; a stream that sends DATA after its
//! trailers is refused and the bytes never forwarded. (grpcio's view is in `grpc_interop.rs`.)

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use warden_test_util::{base_toml, client, Behaviour, Gateway, Upstream};

fn call(path: &str, grpc_timeout: Option<&str>) -> Request<Full<Bytes>> {
    let mut req = Request::post(format!("http://a{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = grpc_timeout {
        req = req.header("grpc-timeout", t);
    }
    // One empty message: compressed flag 0, length 0.
    req.body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap()
}

#[tokio::test]
async fn gateway_refusals_of_grpc_calls_are_trailers_only_grpc_statuses() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&format!(
        "{}\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"svc\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/pkg.Svc/\"\n",
        base_toml(),
        up.url()
    ))
    .await;
    let addr = gw.addr("main");

    for bad in ["1.5S", "123456789S", "10", "10x"] {
        let res = client::send_h2c(addr, call("/pkg.Svc/Get", Some(bad))).await;
        assert_eq!(res.status, 200, "{bad}");
        assert_eq!(res.header("grpc-status"), Some("3"), "{bad}");
        assert_eq!(res.header("grpc-message"), Some("malformed grpc-timeout"));
        assert_eq!(res.header("content-type"), Some("application/grpc"));
        assert!(res.body.is_empty(), "trailers-only: no body");
    }
    assert!(
        up.requests().is_empty(),
        "nothing half-formed was forwarded"
    );

    // A well-formed one is forwarded as it came.
    let res = client::send_h2c(addr, call("/pkg.Svc/Get", Some("250m"))).await;
    assert_eq!(res.status, 200);
    assert_eq!(up.requests().len(), 1);
    assert_eq!(
        up.requests()[0]
            .headers
            .get("grpc-timeout")
            .map(String::as_str),
        Some("250m")
    );

    let res = client::send_h2c(addr, call("/other.Svc/Get", None)).await;
    assert_eq!(res.header("grpc-status"), Some("12"), "UNIMPLEMENTED");

    // Not gRPC: the usual JSON refusal.
    let res = client::send_h2c(
        addr,
        Request::post("http://a/other")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status, 404);
    assert_eq!(res.json()["error"], "no_route");
}

#[tokio::test]
async fn a_grpc_timeout_shorter_than_the_route_s_ends_the_call_with_deadline_exceeded() {
    let up = Upstream::start("u").await;
    up.set(Behaviour {
        delay: Duration::from_secs(3),
        ..Behaviour::default()
    });
    let gw = Gateway::start(&format!(
        "{}\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"svc\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/pkg.Svc/\"\ntimeout = \"30s\"\n",
        base_toml(),
        up.url()
    ))
    .await;
    let started = Instant::now();
    let res = client::send_h2c(gw.addr("main"), call("/pkg.Svc/Slow", Some("300m"))).await;
    let took = started.elapsed();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("grpc-status"), Some("4"), "DEADLINE_EXCEEDED");
    assert!(
        (Duration::from_millis(250)..Duration::from_secs(2)).contains(&took),
        "ended after {took:?}, not at the route's 30 s nor the upstream's 3 s"
    );
}

/// An HTTP/2 frame: length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    [&len[1..], &[kind, flags], &stream.to_be_bytes(), payload].concat()
}

/// Sends `bytes` on a fresh h2c connection to `addr` and returns the frames the gateway sent
/// back within 2 s, as (type, stream, payload).
async fn h2_frames(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        let stream = u32::from_be_bytes(got[at + 5..at + 9].try_into().unwrap()) & 0x7fff_ffff;
        let payload = got[at + 9..(at + 9 + len).min(got.len())].to_vec();
        frames.push((got[at + 3], stream, payload));
        at += 9 + len;
    }
    frames
}

#[tokio::test]
async fn data_after_a_streams_trailers_is_refused_and_never_forwarded() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&format!(
        "{}\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"svc\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/\"\n",
        base_toml(),
        up.url()
    ))
    .await;
    // HPACK: :method POST (static 3), :scheme http (6), :path /x and :authority a (literal,
    // indexed names 4 and 1), content-type application/grpc (literal, indexed name 31).
    let mut head = vec![0x83, 0x86, 0x44, 2, b'/', b'x', 0x41, 1, b'a', 0x5f, 16];
    head.extend_from_slice(b"application/grpc");
    // Trailers: grpc-foo: yes (literal, new name).
    let mut trailers = vec![0x00, 8];
    trailers.extend_from_slice(b"grpc-foo");
    trailers.extend_from_slice(&[3, b'y', b'e', b's']);
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(frame(4, 0, 0, &[])); // SETTINGS
    bytes.extend(frame(1, 0x4, 1, &head)); // HEADERS, END_HEADERS
    bytes.extend(frame(0, 0, 1, &[0, 0, 0, 0, 1, b'm'])); // DATA: one message
    bytes.extend(frame(1, 0x5, 1, &trailers)); // trailers: END_STREAM | END_HEADERS

    // The well-formed call is forwarded whole and answered (the frames are right).
    let frames = h2_frames(gw.addr("main"), &bytes).await;
    assert!(
        frames
            .iter()
            .any(|(kind, stream, _)| *kind == 1 && *stream == 1),
        "a response HEADERS on stream 1: {frames:?}"
    );
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(&seen[0].body[..], &[0, 0, 0, 0, 1, b'm']);

    // The same, then DATA after the trailers: a protocol error (RFC 9113 §5.1); the gateway
    // ends the connection (GOAWAY, PROTOCOL_ERROR) or the stream (STREAM_CLOSED), and the
    // bytes never reach the upstream.
    let mut smuggling = bytes.clone();
    smuggling.extend(frame(0, 0, 1, b"smuggled"));
    let frames = h2_frames(gw.addr("main"), &smuggling).await;
    let code = frames.iter().find_map(|(kind, _, p)| match kind {
        3 => Some(u32::from_be_bytes(p[..4].try_into().unwrap())),
        7 => Some(u32::from_be_bytes(p[4..8].try_into().unwrap())),
        _ => None,
    });
    assert!(
        matches!(code, Some(0x1 | 0x5)),
        "PROTOCOL_ERROR or STREAM_CLOSED in a GOAWAY or RST_STREAM: {frames:?}"
    );
    for r in up.requests() {
        assert!(!r.body.windows(8).any(|w| w == b"smuggled"), "{r:?}");
    }
    // The gateway serves the next connection.
    let res = client::send_h2c(gw.addr("main"), call("/pkg.Svc/Get", None)).await;
    assert_eq!(res.status, 200);
}
