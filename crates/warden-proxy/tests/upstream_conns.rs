//! The upstream connection pool's life cycle, over real sockets (see `upstream/conn.rs`): a
//! connection goes back to the pool when its response body ends and serves the next request;
//! one whose body was cut short is closed, never reused; an idle connection the upstream
//! closed is not used again, and is noticed without traffic; one idle past
//! `pool_idle_timeout` is closed; a burst to an HTTP/2 cluster opens one connection.
//!
//! The HTTP/1.1 upstream here is hand-written, so each test controls exactly when it closes:
//! `/ok` answers `ok` and keeps the connection; `/ok-then-close` answers `ok` with keep-alive
//! and closes the connection 100 ms later (as an upstream's keep-alive timeout does); `/big`
//! answers a 4 MiB body slowly. It counts the connections it accepts and those the gateway
//! closed (EOF or error on read).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden_test_util::client;
use warden_test_util::{base_toml, Gateway};

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    /// Connections the gateway closed (the upstream read EOF or an error).
    closed_by_gateway: AtomicUsize,
}

struct RawUpstream {
    addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok";
const BIG: usize = 4 << 20;

impl RawUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, c.clone()));
            }
        });
        Self { addr, counts, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    fn closed_by_gateway(&self) -> usize {
        self.counts.closed_by_gateway.load(Ordering::SeqCst)
    }
}

/// Serves one upstream connection: request heads (no bodies) and the answers above.
async fn serve(mut s: TcpStream, c: Arc<Counts>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    c.closed_by_gateway.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
        match path.as_str() {
            "/ok-then-close" => {
                let _ = s.write_all(OK).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
            "/big" => {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\n\r\n");
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 << 10];
                for _ in 0..BIG / chunk.len() {
                    if s.write_all(&chunk).await.is_err() {
                        c.closed_by_gateway.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            _ => {
                if s.write_all(OK).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn gateway(upstream: &str, cluster: &str) -> Gateway {
    Gateway::start(&format!(
        "{}\n[server]\ndata_threads = 1\n\n[[clusters]]\nname = \"c\"\nendpoints = [\"{upstream}\"]\n{cluster}\n\n[[routes]]\nname = \"r\"\nauth = \"none\"\ncluster = \"c\"\n",
        base_toml(),
    ))
    .await
}

async fn metrics(gw: &Gateway) -> String {
    let m = client::get(gw.admin(), "/metrics").await;
    assert_eq!(m.status, 200, "admin /metrics");
    String::from_utf8(m.body.to_vec()).expect("utf-8")
}

/// The value of the series `name{labels}` in `/metrics` text.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

async fn closed_total(gw: &Gateway, upstream: SocketAddr) -> Option<f64> {
    let labels = format!("cluster=\"c\",endpoint=\"{upstream}\"");
    sample(
        &metrics(gw).await,
        "warden_upstream_connections_closed_total",
        &labels,
    )
}

/// Waits up to 3 s for `check`.
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..60 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let up = RawUpstream::start().await;
    let gw = gateway(&up.url(), "").await;
    for _ in 0..20 {
        let a = client::get(gw.addr("main"), "/ok").await;
        assert_eq!((a.status, &a.body[..]), (200, &b"ok"[..]));
    }
    assert_eq!(up.accepted(), 1, "each response returned the connection");
    assert_eq!(up.closed_by_gateway(), 0);
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_used_again() {
    let up = RawUpstream::start().await;
    let gw = gateway(&up.url(), "").await;
    let first = client::get(gw.addr("main"), "/ok-then-close").await;
    assert_eq!(first.status, 200);
    // The upstream has closed the pooled connection by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next = client::get(gw.addr("main"), "/ok").await;
    assert_eq!(
        (next.status, &next.body[..]),
        (200, &b"ok"[..]),
        "served on a fresh connection, not failed on the closed one: {next:?}"
    );
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn idle_connections_closed_by_the_upstream_are_noticed_without_traffic() {
    let up = RawUpstream::start().await;
    let gw = gateway(&up.url(), "").await;
    assert_eq!(
        client::get(gw.addr("main"), "/ok-then-close").await.status,
        200
    );
    assert_eq!(
        closed_total(&gw, up.addr).await,
        Some(0.0),
        "pooled after its response"
    );
    let mut closed = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        closed = closed_total(&gw, up.addr).await;
        if closed == Some(1.0) {
            break;
        }
    }
    assert_eq!(
        closed,
        Some(1.0),
        "the pool closed (and counted) the connection the upstream closed, with no request"
    );
}

#[tokio::test]
async fn connections_idle_past_the_idle_timeout_are_closed() {
    let up = RawUpstream::start().await;
    let gw = gateway(&up.url(), "pool_idle_timeout = \"200ms\"").await;
    assert_eq!(client::get(gw.addr("main"), "/ok").await.status, 200);
    assert_eq!(up.closed_by_gateway(), 0, "kept at first");
    assert!(
        eventually(|| up.closed_by_gateway() == 1).await,
        "the gateway closed the idle connection after its idle timeout"
    );
    assert_eq!(closed_total(&gw, up.addr).await, Some(1.0));
    // And the next request opens a new one.
    assert_eq!(client::get(gw.addr("main"), "/ok").await.status, 200);
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn a_response_body_cut_short_closes_its_connection() {
    let up = RawUpstream::start().await;
    let gw = gateway(&up.url(), "").await;
    let mut s = TcpStream::connect(gw.addr("main")).await.expect("connect");
    s.write_all(b"GET /big HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut got = vec![0u8; 64 << 10];
    let mut n = 0;
    while n < 1024 {
        let r = s.read(&mut got[n..]).await.expect("read");
        assert!(r > 0, "the gateway answered");
        n += r;
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", &got[..32]);
    // The client goes away in the middle of the body.
    drop(s);
    assert!(
        eventually(|| up.closed_by_gateway() == 1).await,
        "the half-read upstream connection was closed, not pooled"
    );
    let next = client::get(gw.addr("main"), "/ok").await;
    assert_eq!((next.status, &next.body[..]), (200, &b"ok"[..]));
    assert_eq!(up.accepted(), 2, "the next request needed a new connection");
}

#[tokio::test]
async fn a_burst_to_an_http2_cluster_opens_one_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                        "{:?}",
                        req.version()
                    )))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let gw = gateway(&format!("http://{addr}"), "protocol = \"http2\"").await;
    let main = gw.addr("main");
    let burst: Vec<_> = (0..50)
        .map(|_| tokio::spawn(async move { client::get(main, "/").await }))
        .collect();
    for t in burst {
        let a = t.await.expect("request");
        assert_eq!((a.status, &a.body[..]), (200, &b"HTTP/2.0"[..]));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "50 concurrent requests shared one HTTP/2 connection"
    );
    task.abort();
}
