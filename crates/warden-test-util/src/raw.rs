//! Raw TCP exchanges, for tests of HTTP/1.1 framing that a well-behaved client cannot send.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `bytes` and reads until the server closes or `wait` passes with nothing new.
pub async fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    read_all(&mut s, wait).await
}

/// Reads until EOF or until `wait` passes without new bytes.
pub async fn read_all(s: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status codes of every response in a raw HTTP/1.1 byte stream, in order.
pub fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| raw.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// Reads a message head (through the blank line) from `s`: the head as text and whatever
/// came after it in the same reads. `None` when the peer closes first (or sends more than
/// 64 KiB without a blank line).
pub async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).into_owned();
            return Some((head, buf[i + 4..].to_vec()));
        }
    }
}

/// Back-pressure, seen from a writer that counts what it wrote into `written` while its
/// reader (on the far side of the proxy) reads nothing: waits until the count stops growing
/// and returns it. Panics if it never does (the proxy buffers without bound) or passes
/// 64 MiB. Then `drain` reads everything that was written from `client` and checks that the
/// writer resumes.
pub async fn assert_back_pressure(
    written: &std::sync::atomic::AtomicU64,
    client: &mut TcpStream,
    check: impl Fn(&[u8]),
) -> u64 {
    use std::sync::atomic::Ordering;
    let mut last = 0;
    let mut stalled = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = written.load(Ordering::SeqCst);
        if now > 0 && now == last {
            stalled = true;
            break;
        }
        last = now;
    }
    assert!(stalled, "the writer kept writing: {last} bytes");
    assert!(last < 64 << 20, "{last} bytes written with nobody reading");
    // Reading resumes the flow.
    let mut chunk = vec![0u8; 256 * 1024];
    let mut read = 0u64;
    while read < last {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk))
            .await
            .expect("the written bytes arrive")
            .expect("read");
        assert!(n > 0, "closed after {read} of {last} bytes");
        check(&chunk[..n]);
        read += n as u64;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while written.load(Ordering::SeqCst) <= last {
        assert!(
            std::time::Instant::now() < deadline,
            "the flow did not resume"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    last
}

/// The `Sec-WebSocket-Accept` a WebSocket server answers the `Sec-WebSocket-Key` of a request
/// head with (RFC 6455 §4.2.2); the empty key's when the head has none.
pub fn websocket_accept_for(head: &str) -> String {
    use base64::Engine as _;
    let key = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("sec-websocket-key:")
                .then(|| l["sec-websocket-key:".len()..].trim().to_owned())
        })
        .unwrap_or_default();
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}
