//! Streaming through the gateway: server-sent events reach `curl -N` as they are sent and
//! outlive the route's request timeout; a stream that goes quiet past the route's
//! `stream_idle_timeout` is cut off (never ended as if complete); a client that stops reading
//! holds the upstream back instead of the gateway buffering; a request body reaches the
//! upstream as it arrives.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use warden_test_util::{base_toml, raw, Gateway};

/// What the streaming upstream does, by path.
struct StreamUpstream {
    addr: SocketAddr,
    /// Each message lets `/sse` send its next event (an empty string ends the stream).
    events: mpsc::UnboundedSender<String>,
    /// Bytes `/flood` managed to write.
    flooded: Arc<AtomicU64>,
    /// Request-body chunks `/upload` received, in order.
    uploaded: Arc<Mutex<Vec<String>>>,
}

fn chunk(data: &[u8]) -> Vec<u8> {
    [format!("{:x}\r\n", data.len()).as_bytes(), data, b"\r\n"].concat()
}

impl StreamUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events, rx) = mpsc::unbounded_channel::<String>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let flooded = Arc::new(AtomicU64::new(0));
        let uploaded = Arc::new(Mutex::new(Vec::new()));
        let (f, u) = (flooded.clone(), uploaded.clone());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let (rx, f, u) = (rx.clone(), f.clone(), u.clone());
                tokio::spawn(async move {
                    let Some((head, rest)) = raw::read_head(&mut s).await else {
                        return;
                    };
                    let mut tmp = [0u8; 4096];
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let stream_head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
                    match path.as_str() {
                        "/sse" => {
                            s.write_all(stream_head.as_bytes()).await.unwrap();
                            let mut rx = rx.lock().await;
                            while let Some(e) = rx.recv().await {
                                if e.is_empty() {
                                    break;
                                }
                                let event = format!("data: {e}\n\n");
                                if s.write_all(&chunk(event.as_bytes())).await.is_err() {
                                    return;
                                }
                            }
                            let _ = s.write_all(b"0\r\n\r\n").await;
                        }
                        "/stall" => {
                            s.write_all(stream_head.as_bytes()).await.unwrap();
                            s.write_all(&chunk(b"data: first\n\n")).await.unwrap();
                            // Then nothing, for longer than the gateway waits.
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                        "/flood" => {
                            s.write_all(stream_head.as_bytes()).await.unwrap();
                            let block = chunk(&[b'x'; 64 * 1024]);
                            while s.write_all(&block).await.is_ok() {
                                f.fetch_add(64 * 1024, Ordering::SeqCst);
                            }
                        }
                        _ => {
                            // `/upload`: a chunked body, recorded chunk by chunk as it comes.
                            let mut body = rest;
                            loop {
                                // Parse whole chunks from what has arrived.
                                while let Some(i) = body.windows(2).position(|w| w == b"\r\n") {
                                    let size = usize::from_str_radix(
                                        std::str::from_utf8(&body[..i]).unwrap().trim(),
                                        16,
                                    )
                                    .unwrap();
                                    if body.len() < i + 2 + size + 2 {
                                        break;
                                    }
                                    let data = body[i + 2..i + 2 + size].to_vec();
                                    body.drain(..i + 2 + size + 2);
                                    if size == 0 {
                                        let _ = s
                                            .write_all(
                                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                                            )
                                            .await;
                                        return;
                                    }
                                    u.lock()
                                        .unwrap()
                                        .push(String::from_utf8_lossy(&data).into_owned());
                                }
                                let n = s.read(&mut tmp).await.unwrap_or(0);
                                if n == 0 {
                                    return;
                                }
                                body.extend_from_slice(&tmp[..n]);
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            events,
            flooded,
            uploaded,
        }
    }
}

fn config(upstream: SocketAddr, route: &str) -> String {
    format!(
        "{}\n[[clusters]]\nname = \"c\"\nendpoints = [\"http://{upstream}\"]\n\
         [[routes]]\nname = \"s\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/\"\n{route}\n",
        base_toml()
    )
}

fn curl_present() -> bool {
    match std::process::Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: the `curl` CLI is not installed (scripts/test installs it)");
            false
        }
        Err(e) => panic!("cannot run curl: {e}"),
    }
}

#[tokio::test]
async fn server_sent_events_reach_curl_as_they_are_sent_and_outlive_the_request_timeout() {
    if !curl_present() {
        return;
    }
    let up = StreamUpstream::start().await;
    let gw = Gateway::start(&config(
        up.addr,
        "timeout = \"1s\"\nstream_idle_timeout = \"5s\"",
    ))
    .await;
    let mut curl = tokio::process::Command::new("curl")
        .args(["-N", "-sS", "--fail", "-H", "Accept: text/event-stream"])
        .arg(format!("{}/sse", gw.url("main")))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run curl");
    let mut lines = BufReader::new(curl.stdout.take().unwrap()).lines();
    let started = Instant::now();
    for i in 0..4 {
        // Each event is sent only once the previous one reached curl: nothing in between
        // may hold it back.
        up.events.send(format!("event {i}")).unwrap();
        let line = tokio::time::timeout(Duration::from_secs(3), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("event {i} did not reach curl within 3 s"))
            .unwrap()
            .unwrap();
        assert_eq!(line, format!("data: event {i}"));
        let blank = lines.next_line().await.unwrap().unwrap();
        assert_eq!(blank, "");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "the stream outlived the 1 s request timeout"
    );
    up.events.send(String::new()).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), curl.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "curl saw the stream end cleanly: {status}"
    );
}

#[tokio::test]
async fn a_stream_quiet_past_its_idle_timeout_is_cut_off_not_ended() {
    let up = StreamUpstream::start().await;
    let gw = Gateway::start(&config(up.addr, "stream_idle_timeout = \"1s\"")).await;
    let mut s = TcpStream::connect(gw.addr("main")).await.unwrap();
    s.write_all(b"GET /stall HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("the gateway ends the connection")
        .ok();
    let waited = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("data: first"), "{text}");
    // Cut off: the last chunk (`0\r\n\r\n`) never came, so the client knows the body is
    // incomplete.
    assert!(!text.ends_with("0\r\n\r\n"), "{text:?}");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&waited),
        "cut off after {waited:?}"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_a_stream_holds_the_upstream_back() {
    let up = StreamUpstream::start().await;
    let gw = Gateway::start(&config(up.addr, "")).await;
    let mut s = TcpStream::connect(gw.addr("main")).await.unwrap();
    s.write_all(b"GET /flood HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let stalled_at = raw::assert_back_pressure(&up.flooded, &mut s, |_| {}).await;
    println!("the upstream stalled after {} KiB", stalled_at >> 10);
}

#[tokio::test]
async fn a_request_body_reaches_the_upstream_as_it_arrives() {
    let up = StreamUpstream::start().await;
    let gw = Gateway::start(&config(up.addr, "")).await;
    let mut s = TcpStream::connect(gw.addr("main")).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for i in 0..3 {
        let part = format!("part {i}");
        s.write_all(&chunk(part.as_bytes())).await.unwrap();
        // The next part is sent only once the upstream has this one.
        let deadline = Instant::now() + Duration::from_secs(3);
        while up.uploaded.lock().unwrap().len() <= i {
            assert!(
                Instant::now() < deadline,
                "part {i} did not reach the upstream while the body was still coming"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut got = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&got[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(*up.uploaded.lock().unwrap(), ["part 0", "part 1", "part 2"]);
}
