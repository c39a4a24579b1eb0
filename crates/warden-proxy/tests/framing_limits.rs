//! HTTP/1.1 framing, limits, timeouts and path normalisation, over real sockets.
//!
//! Every case sends bytes a well-behaved client would never send (over a raw TCP socket, so
//! nothing is normalised or fixed on the way) and checks what a user would notice: the status
//! the gateway answers with, whether it closed the connection, and what the recording upstream
//! behind it actually received.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warden_test_util::{base_toml, raw, Gateway, Recorded, Upstream};

/// Longest a refused exchange may take: the gateway closes at once, so this is only a backstop.
const WAIT: Duration = Duration::from_secs(2);

/// A gateway with `[server]` settings `server` and one catch-all route to `up`.
async fn catch_all(up: &Upstream, server: &str) -> Gateway {
    let toml = format!(
        "[server]\n{server}\n{}\n[[clusters]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"all\"\nauth = \"none\"\ncluster = \"up\"\npath_prefix = \"/\"\n",
        base_toml(),
        up.url()
    );
    Gateway::start(&toml).await
}

/// What came back over one raw connection.
struct Exchange {
    text: String,
    /// The gateway closed the connection (EOF or reset) rather than leaving it open.
    closed: bool,
}

impl Exchange {
    fn statuses(&self) -> Vec<u16> {
        raw::statuses(&self.text)
    }
}

/// Sends `bytes` on a new connection and reads until the gateway closes it or `WAIT` passes
/// with nothing new.
async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Exchange {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    Exchange {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// The upstream's log after giving in-flight forwarding a moment to land (so a request that
/// slipped through is seen, not missed by a race).
async fn settled(up: &Upstream) -> Vec<Recorded> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    up.requests()
}

/// Sends one malformed request on a fresh gateway and checks it was refused: exactly one 4xx
/// response, the connection closed, and nothing at all reached the upstream.
async fn assert_refused_before_upstream(case: &str, bytes: &[u8]) {
    let up = Upstream::start("up").await;
    let gw = catch_all(&up, "").await;
    let ex = send_raw(gw.addr("main"), bytes).await;
    let statuses = ex.statuses();
    assert_eq!(
        statuses.len(),
        1,
        "{case}: expected exactly one response, got:\n{}",
        ex.text
    );
    assert!(
        (400..500).contains(&statuses[0]),
        "{case}: expected a 4xx, got:\n{}",
        ex.text
    );
    assert!(
        ex.closed,
        "{case}: connection left open after a framing error:\n{}",
        ex.text
    );
    let got = settled(&up).await;
    assert!(
        got.iter().all(|r| !r.uri.contains("admin")),
        "{case}: smuggled request reached the upstream: {got:#?}"
    );
    assert!(got.is_empty(), "{case}: upstream received {got:#?}");
}

/// The smuggled request hidden in the bodies below.
const SMUGGLED: &str = "GET /admin HTTP/1.1\r\nHost: localhost\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// 1. Malformed or ambiguous framing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn content_length_then_transfer_encoding_is_refused() {
    // CL.TE: a front end that honours Content-Length forwards the whole thing as one body; a
    // back end that honours chunked sees an empty body and then `GET /admin`.
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let req = format!(
        "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    assert_refused_before_upstream("CL then TE", req.as_bytes()).await;
}

#[tokio::test]
async fn transfer_encoding_then_content_length_is_refused() {
    // TE.CL: the chunk holds `GET /admin`; a back end that honours Content-Length: 4 would read
    // `2b\r\n` as the body and the rest as a second request.
    let chunk = format!("{SMUGGLED}x");
    let req = format!(
        "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    assert_refused_before_upstream("TE then CL", req.as_bytes()).await;
}

#[tokio::test]
async fn duplicate_content_length_with_different_values_is_refused() {
    let req = format!(
        "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    assert_refused_before_upstream("CL 0 and CL n", req.as_bytes()).await;
}

#[tokio::test]
async fn duplicate_content_length_with_equal_values_is_refused() {
    let req = "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello";
    assert_refused_before_upstream("CL 5 twice", req.as_bytes()).await;
}

#[tokio::test]
async fn malformed_content_length_is_refused() {
    for value in ["abc", "-1", "1,2", "+5"] {
        let req = format!(
            "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: {value}\r\n\r\nhello{SMUGGLED}"
        );
        assert_refused_before_upstream(&format!("Content-Length: {value}"), req.as_bytes()).await;
    }
}

#[tokio::test]
async fn unknown_transfer_coding_is_refused() {
    for value in ["gzip", "gzip, chunked", "chunked, identity", "xchunked"] {
        let req = format!(
            "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: {value}\r\n\r\n0\r\n\r\n{SMUGGLED}"
        );
        assert_refused_before_upstream(&format!("Transfer-Encoding: {value}"), req.as_bytes())
            .await;
    }
}

#[tokio::test]
async fn two_transfer_encoding_lines_are_refused() {
    for (first, second) in [
        ("chunked", "chunked"),
        ("identity", "chunked"),
        ("gzip", "chunked"),
    ] {
        let req = format!(
            "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: {first}\r\nTransfer-Encoding: {second}\r\n\r\n0\r\n\r\n{SMUGGLED}"
        );
        assert_refused_before_upstream(&format!("TE {first} + TE {second}"), req.as_bytes()).await;
    }
}

#[tokio::test]
async fn obs_fold_is_refused() {
    // A folded line could hide `Transfer-Encoding` from one parser and not another.
    for fold in [" ", "\t"] {
        let req = format!(
            "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nX-Note: a\r\n{fold}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
        );
        assert_refused_before_upstream(&format!("obs-fold with {fold:?}"), req.as_bytes()).await;
    }
}

#[tokio::test]
async fn nul_in_header_value_is_refused() {
    let req = b"GET /x HTTP/1.1\r\nHost: localhost\r\nX-Note: a\0b\r\n\r\n";
    assert_refused_before_upstream("NUL in header value", req).await;
}

#[tokio::test]
async fn bare_cr_in_header_is_refused() {
    let in_value = format!("GET /x HTTP/1.1\r\nHost: localhost\r\nX-Note: a\rb\r\n\r\n{SMUGGLED}");
    assert_refused_before_upstream("bare CR in a value", in_value.as_bytes()).await;
    let as_terminator = format!("GET /x HTTP/1.1\r\nHost: localhost\rX-Note: b\r\n\r\n{SMUGGLED}");
    assert_refused_before_upstream("bare CR ending a line", as_terminator.as_bytes()).await;
}

/// Sends a chunked POST whose body breaks after the head was accepted, and checks: a 4xx, the
/// connection closed, no smuggled request upstream, and no complete body upstream.
async fn assert_bad_chunked_refused(case: &str, body: &str) {
    let up = Upstream::start("up").await;
    let gw = catch_all(&up, "").await;
    let req = format!(
        "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n{body}{SMUGGLED}"
    );
    let ex = send_raw(gw.addr("main"), req.as_bytes()).await;
    let statuses = ex.statuses();
    assert_eq!(
        statuses.len(),
        1,
        "{case}: expected exactly one response, got:\n{}",
        ex.text
    );
    assert!(
        (400..500).contains(&statuses[0]),
        "{case}: expected a 4xx, got:\n{}",
        ex.text
    );
    assert!(ex.closed, "{case}: connection left open:\n{}", ex.text);
    let got = settled(&up).await;
    assert!(
        got.iter().all(|r| !r.uri.contains("admin")),
        "{case}: smuggled request reached the upstream: {got:#?}"
    );
    // The head may already have been forwarded when the body broke, but the upstream must
    // never have seen a complete, valid body (its recorded body is empty when the stream was
    // cut).
    assert!(
        got.iter().all(|r| r.body.is_empty()),
        "{case}: upstream received a body: {got:#?}"
    );
}

#[tokio::test]
async fn invalid_chunk_sizes_are_refused() {
    assert_bad_chunked_refused("chunk size zz", "zz\r\nhello\r\n0\r\n\r\n").await;
    assert_bad_chunked_refused("negative chunk size", "-5\r\nhello\r\n0\r\n\r\n").await;
    assert_bad_chunked_refused(
        "overflowing chunk size",
        "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_bad_chunked_refused("no CRLF after chunk data", "5\r\nhelloXX0\r\n\r\n").await;
}

#[tokio::test]
async fn missing_host_on_http11_is_refused() {
    assert_refused_before_upstream("no Host", b"GET /x HTTP/1.1\r\nAccept: */*\r\n\r\n").await;
}

#[tokio::test]
async fn duplicate_host_is_refused() {
    assert_refused_before_upstream(
        "two Host lines",
        b"GET /x HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n",
    )
    .await;
}

/// First requests with valid but unusual framing, for the pipelining tests: (case, bytes,
/// whether a valid request after it must still be served). Every one gets a 200.
fn unusual_first_requests() -> Vec<(&'static str, String, bool)> {
    let chunked = |body: &str| {
        format!("POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
    };
    vec![
        (
            "GET",
            "GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
            true,
        ),
        (
            "fixed-length body with a newline in it",
            "POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhe\nlo".to_owned(),
            true,
        ),
        (
            "chunk extension",
            chunked("5;ext=1\r\nhello\r\n0\r\n\r\n"),
            true,
        ),
        (
            "trailers",
            chunked("5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"),
            true,
        ),
        (
            "upper-case hex size",
            chunked("000A\r\nhellohello\r\n0\r\n\r\n"),
            true,
        ),
        (
            "16-digit chunk size",
            chunked("0000000000000005\r\nhello\r\n0\r\n\r\n"),
            true,
        ),
        (
            "20 KiB header line (max_header_bytes = 32 KiB)",
            format!(
                "GET /a HTTP/1.1\r\nHost: localhost\r\nX-Long: {}\r\n\r\n",
                "v".repeat(20 * 1024)
            ),
            true,
        ),
        // hyper accepts any number of leading zeros; past the inspector's line bound the gateway
        // can no longer vouch for the connection's framing, so later requests are refused.
        (
            "chunk size with 40 KiB of leading zeros",
            chunked(&format!("{}5\r\nhello\r\n0\r\n\r\n", "0".repeat(40 * 1024))),
            false,
        ),
    ]
}

#[tokio::test]
async fn ambiguous_request_pipelined_after_a_valid_one_is_refused() {
    // The framing checks must hold for every request on a keep-alive connection, whatever
    // valid framing the requests before it used.
    let up = Upstream::start("up").await;
    let gw = catch_all(&up, "max_header_bytes = 32768").await;
    let second = format!(
        "POST /b HTTP/1.1\r\nHost: localhost\r\nContent-Length: {n}\r\nContent-Length: {n}\r\n\r\n{SMUGGLED}",
        n = SMUGGLED.len()
    );
    for (case, first, _) in unusual_first_requests() {
        up.clear();
        let ex = send_raw(gw.addr("main"), format!("{first}{second}").as_bytes()).await;
        assert_eq!(ex.statuses(), [200, 400], "{case}:\n{}", ex.text);
        assert!(ex.closed, "{case}: connection left open:\n{}", ex.text);
        let got: Vec<_> = settled(&up).await.into_iter().map(|r| r.uri).collect();
        assert_eq!(got, ["/a"], "{case}: upstream received {got:?}");
    }
}

#[tokio::test]
async fn valid_request_pipelined_after_unusual_framing_is_forwarded() {
    // The other half: following the framing exactly means no false refusals either.
    let up = Upstream::start("up").await;
    let gw = catch_all(&up, "max_header_bytes = 32768").await;
    let second = "GET /b HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    for (case, first, followed) in unusual_first_requests() {
        if !followed {
            continue;
        }
        up.clear();
        let ex = send_raw(gw.addr("main"), format!("{first}{second}").as_bytes()).await;
        assert_eq!(ex.statuses(), [200, 200], "{case}:\n{}", ex.text);
        let got: Vec<_> = up.requests().into_iter().map(|r| r.uri).collect();
        assert_eq!(got, ["/a", "/b"], "{case}");
    }
}

#[tokio::test]
async fn a_valid_request_on_the_same_setup_is_forwarded() {
    // Control for the cases above: the same gateway forwards well-formed chunked and
    // fixed-length bodies, so their refusals are about framing, not about POST or bodies.
    let up = Upstream::start("up").await;
    let gw = catch_all(&up, "").await;
    let req = "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
               POST /y HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\nworld";
    let ex = send_raw(gw.addr("main"), req.as_bytes()).await;
    assert_eq!(ex.statuses(), [200, 200], "{}", ex.text);
    let got = up.requests();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(
        (got[0].uri.as_str(), &got[0].body[..]),
        ("/x", &b"hello"[..])
    );
    assert_eq!(
        (got[1].uri.as_str(), &got[1].body[..]),
        ("/y", &b"world"[..])
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Limits and timeouts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn body_over_limit_with_content_length_gets_413_before_upstream() {
    let up = Upstream::start("up").await;
    let gw = catch_all(&up, "max_body_bytes = 1024").await;
    let body = "a".repeat(2000);
    let req = format!(
        "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let ex = send_raw(gw.addr("main"), req.as_bytes()).await;
    assert_eq!(ex.statuses(), [413], "{}", ex.text);
    assert!(
        settled(&up).await.is_empty(),
        "upstream saw {:#?}",
        up.requests()
    );

    // At the limit it goes through.
    let body = "a".repeat(1024);
    let req = format!(
        "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let ex = send_raw(gw.addr("main"), req.as_bytes()).await;
    assert_eq!(ex.statuses(), [200], "{}", ex.text);
    assert_eq!(up.requests().len(), 1);
    assert_eq!(up.requests()[0].body.len(), 1024);
}

#[tokio::test]
async fn chunked_body_crossing_limit_gets_413_and_is_cut() {
    let up = Upstream::start("up").await;
    let gw = catch_all(&up, "max_body_bytes = 1024").await;
    let chunk = "b".repeat(256);
    let mut req =
        String::from("POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunks = 16;
    for _ in 0..chunks {
        req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    req.push_str("0\r\n\r\n");
    let sent = chunks * chunk.len();
    let ex = send_raw(gw.addr("main"), req.as_bytes()).await;
    assert_eq!(ex.statuses(), [413], "{}", ex.text);
    let got = settled(&up).await;
    assert!(
        got.iter()
            .all(|r| r.body.len() < sent && r.body.len() <= 1024),
        "upstream received the whole body ({sent} bytes sent): {:?}",
        got.iter().map(|r| r.body.len()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn header_section_over_limit_gets_431() {
    let up = Upstream::start("up").await;
    let gw = catch_all(&up, "max_header_bytes = 2048").await;
    let req = format!(
        "GET /x HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "v".repeat(4000)
    );
    let ex = send_raw(gw.addr("main"), req.as_bytes()).await;
    assert_eq!(ex.statuses(), [431], "{}", ex.text);
    assert!(settled(&up).await.is_empty());
    // Just under the limit is fine.
    let req = format!(
        "GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "v".repeat(1500)
    );
    let ex = send_raw(gw.addr("main"), req.as_bytes()).await;
    assert_eq!(ex.statuses(), [200], "{}", ex.text);
}

#[tokio::test]
async fn too_many_headers_gets_431() {
    let up = Upstream::start("up").await;
    let gw = catch_all(&up, "max_headers = 10").await;
    let mut req = String::from("GET /x HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..20 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let ex = send_raw(gw.addr("main"), req.as_bytes()).await;
    assert_eq!(ex.statuses(), [431], "{}", ex.text);
    assert!(settled(&up).await.is_empty());
    // Within the limit (Host, Connection and 8 more) is fine.
    let mut req = String::from("GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for i in 0..8 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let ex = send_raw(gw.addr("main"), req.as_bytes()).await;
    assert_eq!(ex.statuses(), [200], "{}", ex.text);
}

#[tokio::test]
async fn request_target_over_limit_gets_414() {
    let up = Upstream::start("up").await;
    let gw = catch_all(&up, "max_uri_bytes = 256").await;
    let req = format!(
        "GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "p".repeat(1000)
    );
    let ex = send_raw(gw.addr("main"), req.as_bytes()).await;
    assert_eq!(ex.statuses(), [414], "{}", ex.text);
    // The query counts too.
    let req = format!(
        "GET /x?q={} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "q".repeat(1000)
    );
    let ex = send_raw(gw.addr("main"), req.as_bytes()).await;
    assert_eq!(ex.statuses(), [414], "{}", ex.text);
    assert!(settled(&up).await.is_empty());
    let req = format!(
        "GET /{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        "p".repeat(200)
    );
    let ex = send_raw(gw.addr("main"), req.as_bytes()).await;
    assert_eq!(ex.statuses(), [200], "{}", ex.text);
}

/// Reads until EOF (or a reset) or `limit` passes; returns the bytes and when the connection
/// ended, if it did.
async fn read_until_closed(
    s: &mut tokio::net::tcp::OwnedReadHalf,
    limit: Duration,
) -> (String, Option<Instant>) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break Some(Instant::now()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break None,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_head_gets_408_and_close() {
    let up = Upstream::start("up").await;
    let gw = catch_all(&up, "header_read_timeout = \"2s\"").await;
    let stream = TcpStream::connect(gw.addr("main")).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let start = Instant::now();
    // One byte a second: a complete head would take ~30 s.
    let writer = tokio::spawn(async move {
        for b in b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n" {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let (text, end) = read_until_closed(&mut rd, Duration::from_secs(6)).await;
    writer.abort();
    let end = end.unwrap_or_else(|| panic!("connection still open after 6 s; got {text:?}"));
    assert_eq!(raw::statuses(&text), [408], "{text:?}");
    let took = end.duration_since(start);
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "closed after {took:?}, expected about 2 s"
    );
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_after_header_timeout() {
    let up = Upstream::start("up").await;
    let gw = catch_all(&up, "header_read_timeout = \"2s\"").await;
    let stream = TcpStream::connect(gw.addr("main")).await.expect("connect");
    let start = Instant::now();
    let (mut rd, _wr) = stream.into_split();
    let (text, end) = read_until_closed(&mut rd, Duration::from_secs(6)).await;
    let end = end.unwrap_or_else(|| panic!("silent connection still open after 6 s"));
    let took = end.duration_since(start);
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "closed after {took:?}, expected about 2 s"
    );
    // Nothing was asked, so at most a 408 is said.
    assert!(
        text.is_empty() || raw::statuses(&text) == [408],
        "unexpected reply: {text:?}"
    );
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns the status and head.
async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .expect("response has content-length");
                if buf.len() >= end + 4 + len {
                    return head;
                }
            }
            let n = s.read(&mut tmp).await.expect("read response");
            assert!(
                n > 0,
                "connection closed mid-response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&tmp[..n]);
        }
    };
    let head = tokio::time::timeout(Duration::from_secs(3), read)
        .await
        .expect("response in time");
    (raw::statuses(&head).first().copied().unwrap_or(0), head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let up = Upstream::start("up").await;
    // The header timeout is longer than the test, so only the idle timeout can close it.
    let gw = catch_all(&up, "idle_timeout = \"1s\"\nheader_read_timeout = \"10s\"").await;
    let mut s = TcpStream::connect(gw.addr("main")).await.expect("connect");
    s.write_all(b"GET /one HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (status, head) = read_response(&mut s).await;
    assert_eq!(status, 200, "{head}");
    // Well within the idle timeout, the connection is still good for a second request.
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.write_all(b"GET /two HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (status, head) = read_response(&mut s).await;
    assert_eq!(status, 200, "{head}");
    let idle_from = Instant::now();
    let got: Vec<_> = up.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(got, ["/one", "/two"]);
    // Then, idle, it is closed after about a second.
    let (mut rd, _wr) = s.into_split();
    let (text, end) = read_until_closed(&mut rd, Duration::from_secs(4)).await;
    let end = end.unwrap_or_else(|| panic!("idle connection still open after 4 s"));
    let took = end.duration_since(idle_from);
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "idle connection closed after {took:?}, expected about 1 s"
    );
    assert!(
        text.is_empty(),
        "unexpected bytes on an idle connection: {text:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Path normalisation
// ---------------------------------------------------------------------------------------------

/// Routes `public` (`/public/`, open) and `admin` (`/admin`, 10.0.0.0/8 only, so 403 here).
async fn two_routes(public: &Upstream, admin: &Upstream, server: &str) -> Gateway {
    let toml = format!(
        "[server]\n{server}\n{}\n\
         [[clusters]]\nname = \"public\"\nendpoints = [\"{}\"]\n\
         [[clusters]]\nname = \"admin\"\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"public\"\nauth = \"none\"\ncluster = \"public\"\npath_prefix = \"/public/\"\n\
         [[routes]]\nname = \"admin\"\nauth = \"none\"\ncluster = \"admin\"\npath_prefix = \"/admin\"\nallow_cidrs = [\"10.0.0.0/8\"]\n",
        base_toml(),
        public.url(),
        admin.url()
    );
    Gateway::start(&toml).await
}

/// `GET target` over a raw socket (so nothing normalises it on the way); the status.
async fn raw_get(addr: SocketAddr, target: &str) -> u16 {
    let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let ex = send_raw(addr, req.as_bytes()).await;
    let statuses = ex.statuses();
    assert_eq!(statuses.len(), 1, "{target}: {}", ex.text);
    statuses[0]
}

#[tokio::test]
async fn spellings_of_admin_cannot_bypass_the_admin_route() {
    let public = Upstream::start("public").await;
    let admin = Upstream::start("admin").await;
    let gw = two_routes(&public, &admin, "").await;
    let addr = gw.addr("main");
    // Control: the admin route really refuses 127.0.0.1, and the public route really forwards.
    assert_eq!(raw_get(addr, "/admin").await, 403);
    assert_eq!(raw_get(addr, "/public/ok").await, 200);
    assert_eq!(public.requests().len(), 1);
    public.clear();
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "//admin",
        "/public//../admin",
        "/./admin",
        "/%61dmin",
        "/public/../admin/secret",
        "/public/%2e%2e/%61dmin/",
    ] {
        let status = raw_get(addr, target).await;
        assert!(
            status == 403 || status == 400,
            "{target}: got {status}, expected the admin route's 403 or a 400"
        );
    }
    let got = settled(&public).await;
    assert!(
        got.is_empty(),
        "public upstream received {:?}",
        got.iter().map(|r| &r.uri).collect::<Vec<_>>()
    );
    assert!(
        admin.requests().is_empty(),
        "admin upstream received {:#?}",
        admin.requests()
    );
}

#[tokio::test]
async fn hidden_separators_nul_and_dot_parameters_get_400() {
    let public = Upstream::start("public").await;
    let admin = Upstream::start("admin").await;
    let gw = two_routes(&public, &admin, "").await;
    let addr = gw.addr("main");
    for target in [
        "/public%2F..%2Fadmin",
        "/public/..%2Fadmin",
        "/public/..%2fadmin",
        "/public/..%5Cadmin",
        "/public/%00",
        "/public/a%00/../../admin",
        "/public/..;/admin",
        "/public/.;x/../../admin",
        "/public/..\\admin",
    ] {
        assert_eq!(raw_get(addr, target).await, 400, "{target}");
    }
    let got = settled(&public).await;
    assert!(
        got.is_empty(),
        "public upstream received {:?}",
        got.iter().map(|r| &r.uri).collect::<Vec<_>>()
    );
    assert!(admin.requests().is_empty());
}

#[tokio::test]
async fn dot_segments_resolve_before_forwarding() {
    let public = Upstream::start("public").await;
    let admin = Upstream::start("admin").await;
    let gw = two_routes(&public, &admin, "").await;
    assert_eq!(raw_get(gw.addr("main"), "/public/a/./b/../c").await, 200);
    assert_eq!(
        raw_get(gw.addr("main"), "/public/a/./b/../c?x=/../y").await,
        200
    );
    let got: Vec<_> = public.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(got, ["/public/a/c", "/public/a/c?x=/../y"]);
}

/// Percent-decodes `s` (test helper; malformed escapes are kept as they are).
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[tokio::test]
async fn non_ascii_path_reaches_upstream_unchanged() {
    // Raw UTF-8 in the request target (which hyper admits) must reach the upstream as the same
    // path, raw or percent-encoded, never re-encoded byte by byte (`café` as `cafÃ©`).
    let public = Upstream::start("public").await;
    let admin = Upstream::start("admin").await;
    let gw = two_routes(&public, &admin, "").await;
    let addr = gw.addr("main");
    for target in [
        &b"/public/caf\xc3\xa9"[..],
        b"/public/caf%C3%A9",
        b"/public/caf%c3%a9",
    ] {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let ex = send_raw(addr, &req).await;
        assert_eq!(ex.statuses(), [200], "{}", ex.text);
    }
    let got: Vec<_> = public.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(got.len(), 3);
    for uri in &got {
        assert_eq!(
            percent_decode(uri),
            "/public/café".as_bytes(),
            "upstream received {uri:?}"
        );
    }
}

#[tokio::test]
async fn encoded_slash_when_allowed_is_forwarded_still_encoded() {
    let public = Upstream::start("public").await;
    let admin = Upstream::start("admin").await;
    let gw = two_routes(&public, &admin, "allow_encoded_slash = true").await;
    let addr = gw.addr("main");
    assert_eq!(raw_get(addr, "/public/a%2Fb").await, 200);
    assert_eq!(raw_get(addr, "/public/c%2fd").await, 200);
    let got: Vec<_> = public.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(got, ["/public/a%2Fb", "/public/c%2Fd"]);
    assert!(admin.requests().is_empty());
}
