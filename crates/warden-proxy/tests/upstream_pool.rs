//! Upstream connections under bursts, over real sockets: the per-endpoint connection cap
//! (`max_connections_per_endpoint`) bounds what a burst opens, the pool keeps a burst's
//! connections for the next one, requests past the cap wait their turn, a wait past the
//! route's timeout gets 503 `upstream_busy` (counted as `connection_cap`), and opened/closed
//! connections are counted per endpoint.
//!
//! The upstream here counts the TCP connections it accepts and the most requests it had in
//! flight at once. `/slow/<ms>` answers after `<ms>`; `/hold/<ms>` sends its head at once and
//! its body after `<ms>` (so the connection stays busy past the response head).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use warden_test_util::client::{self, Answer};
use warden_test_util::{base_toml, Gateway};

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

struct CountingUpstream {
    addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingUpstream {
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
                let c = c.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(req, c.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
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

    fn max_in_flight(&self) -> usize {
        self.counts.max_in_flight.load(Ordering::SeqCst)
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Counts the request in flight until its body has been sent.
struct InFlight(Arc<Counts>);

impl InFlight {
    fn new(c: Arc<Counts>) -> Self {
        let n = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_in_flight.fetch_max(n, Ordering::SeqCst);
        Self(c)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn answer(req: Request<Incoming>, c: Arc<Counts>) -> Result<Response<Body>, Infallible> {
    let flight = InFlight::new(c);
    let path = req.uri().path().to_owned();
    let ms = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    };
    if let Some(d) = ms("/hold/") {
        // The head now, the body (and the end of the exchange) after `d`.
        let body = futures_util::stream::once(async move {
            tokio::time::sleep(d).await;
            drop(flight);
            Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(b"held")))
        });
        return Ok(Response::new(http_body_util::StreamBody::new(body).boxed()));
    }
    if let Some(d) = ms("/slow/") {
        tokio::time::sleep(d).await;
    }
    drop(flight);
    Ok(Response::new(Full::new(Bytes::from_static(b"ok")).boxed()))
}

/// A gateway with one data-plane thread (so "per thread" is the whole gateway), a route `/`
/// to cluster `c` over `upstream`, `cluster` lines inside `[[clusters]]`, `route` lines inside
/// `[[routes]]`.
async fn gateway(upstream: &CountingUpstream, cluster: &str, route: &str) -> Gateway {
    Gateway::start(&format!(
        "{}\n[server]\ndata_threads = 1\n\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n{cluster}\n\n[[routes]]\nname = \"r\"\nauth = \"none\"\ncluster = \"c\"\n{route}\n",
        base_toml(),
        upstream.url()
    ))
    .await
}

/// `n` concurrent requests for `path`, each on its own client connection.
async fn burst(gw: &Gateway, n: usize, path: &str) -> Vec<Answer> {
    let addr = gw.addr("main");
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let path = path.to_owned();
            tokio::spawn(async move { client::get(addr, &path).await })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

/// Lets connects still under way finish: when a request gets a connection that came back to
/// the pool while its own connect was starting, the connect finishes in the background and
/// its connection joins the pool. Counting before that would miss it.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_opens_at_most_the_cap_and_the_next_burst_reuses_them() {
    let up = CountingUpstream::start().await;
    let gw = gateway(&up, "max_connections_per_endpoint = 8", "").await;

    let first = burst(&gw, 300, "/slow/20").await;
    assert!(
        first.iter().all(|a| a.status == 200 && a.body == "ok"),
        "every request of the burst is served: {:?}",
        first.iter().find(|a| a.status != 200)
    );
    settle().await;
    let opened = up.accepted();
    assert!(
        (1..=8).contains(&opened),
        "300 concurrent requests opened {opened} upstream connections; the cap is 8"
    );
    assert!(up.max_in_flight() <= 8, "at most 8 requests on the wire");

    let second = burst(&gw, 300, "/slow/20").await;
    assert!(second.iter().all(|a| a.status == 200));
    settle().await;
    let total = up.accepted();
    assert!(
        total <= 8,
        "two bursts opened {total} connections in all: the second reuses the first's"
    );

    let m = metrics(&gw).await;
    let labels = format!("cluster=\"c\",endpoint=\"{}\"", up.addr);
    assert_eq!(
        sample(&m, "warden_upstream_connections_opened_total", &labels),
        Some(total as f64),
        "opened connections are counted per endpoint:\n{m}"
    );
    assert_eq!(
        sample(&m, "warden_upstream_connections_closed_total", &labels),
        Some(0.0),
        "none closed between or after the bursts (kept idle)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_set_cap_the_default_keeps_a_burst_of_hundreds_open_for_the_next() {
    // Default cap (256) and idle pool (as many): two bursts of 200 open at most 200 in all and
    // close none (the old default kept 64 idle, closed the rest and opened them again).
    let up = CountingUpstream::start().await;
    let gw = gateway(&up, "", "").await;
    for _ in 0..2 {
        let answers = burst(&gw, 200, "/slow/100").await;
        assert!(answers.iter().all(|a| a.status == 200));
        settle().await;
    }
    let total = up.accepted();
    assert!(total <= 200, "two bursts of 200 opened {total} connections");
    let m = metrics(&gw).await;
    let labels = format!("cluster=\"c\",endpoint=\"{}\"", up.addr);
    assert_eq!(
        sample(&m, "warden_upstream_connections_closed_total", &labels),
        Some(0.0),
        "no churn: the bursts' connections were kept ({total} opened)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_past_the_cap_wait_their_turn_on_one_connection() {
    let up = CountingUpstream::start().await;
    let gw = gateway(&up, "max_connections_per_endpoint = 1", "timeout = \"10s\"").await;
    let started = Instant::now();
    let answers = burst(&gw, 5, "/slow/150").await;
    let took = started.elapsed();
    assert!(answers.iter().all(|a| a.status == 200 && a.body == "ok"));
    assert_eq!(up.accepted(), 1, "one connection served them all");
    assert_eq!(up.max_in_flight(), 1, "one at a time");
    assert!(
        took >= Duration::from_millis(5 * 150),
        "served in turn, not at once: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wait_past_the_route_timeout_is_refused_as_upstream_busy() {
    let up = CountingUpstream::start().await;
    let gw = gateway(
        &up,
        "max_connections_per_endpoint = 1",
        "timeout = \"500ms\"",
    )
    .await;
    let addr = gw.addr("main");
    // Holds the only connection for 2 s (head at once, body later).
    let holder = tokio::spawn(async move { client::get(addr, "/hold/2000").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let waited = client::get(addr, "/slow/0").await;
    let took = started.elapsed();
    assert_eq!(waited.status, 503, "{:?}", waited.body);
    assert_eq!(waited.json()["error"], "upstream_busy");
    assert_eq!(waited.header("retry-after"), Some("1"));
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1800),
        "refused at the route's timeout, not at once nor when the holder finished: {took:?}"
    );
    let held = holder.await.expect("holder");
    assert_eq!(held.status, 200);
    assert_eq!(held.body, "held");
    assert_eq!(up.accepted(), 1, "the refused request opened no connection");

    let m = metrics(&gw).await;
    assert_eq!(
        sample(
            &m,
            "warden_upstream_rejected_total",
            "cluster=\"c\",reason=\"connection_cap\""
        ),
        Some(1.0),
        "the refusal is counted:\n{m}"
    );
    // The slot came back with the holder's body: the next request is served.
    assert_eq!(client::get(addr, "/slow/0").await.status, 200);
}

#[tokio::test]
async fn the_cap_is_validated() {
    for (extra, field) in [
        (
            "max_connections_per_endpoint = 0",
            "max_connections_per_endpoint",
        ),
        (
            "max_connections_per_endpoint = 100000",
            "max_connections_per_endpoint",
        ),
    ] {
        let toml = format!(
            "{}\n[[clusters]]\nname = \"c\"\nendpoints = [\"http://127.0.0.1:1\"]\n{extra}\n\n[[routes]]\nname = \"r\"\nauth = \"none\"\ncluster = \"c\"\n",
            base_toml()
        );
        let err = warden_config::parse(&toml)
            .err()
            .unwrap_or_else(|| panic!("{extra} is accepted"));
        assert!(
            err.to_string().contains(&format!("clusters[0].{field}")),
            "{extra}: {err}"
        );
    }
}
