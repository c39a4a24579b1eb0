//! Upstream resilience end to end, over real sockets: outlier detection (ejection, fast 503s,
//! half-open recovery, the ejection cap), retries (statuses, connection failures, resets,
//! per-try timeouts, budget, buffered bodies), the bulkhead and the adaptive limit, and what
//! the admin listener shows of it all.
//!
//! Upstreams report their name in `x-upstream`, so a test can tell which one answered; their
//! records tell what reached them, and what did not.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use warden_test_util::client::{self, Answer};
use warden_test_util::flaky::{dead_endpoint, Flaky, Mode};
use warden_test_util::{base_toml, raw, Behaviour, Gateway, Upstream};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A gateway with one public route `/` to cluster `c` over `endpoints` (URLs); `extra` goes
/// inside the `[[clusters]]` table (keys, then sub-tables).
async fn gateway(endpoints: &[String], extra: &str) -> Gateway {
    Gateway::start(&config(endpoints, extra)).await
}

fn config(endpoints: &[String], extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "{}\n[[clusters]]\nname = \"c\"\nendpoints = [{}]\n{extra}\n\n[[routes]]\nname = \"r\"\nauth = \"none\"\ncluster = \"c\"\n",
        base_toml(),
        eps.join(", ")
    )
}

fn status(code: u16) -> Behaviour {
    Behaviour {
        status: code,
        ..Behaviour::default()
    }
}

fn slow(code: u16, ms: u64) -> Behaviour {
    Behaviour {
        status: code,
        delay: Duration::from_millis(ms),
        ..Behaviour::default()
    }
}

async fn get(gw: &Gateway, path: &str) -> Answer {
    client::get(gw.addr("main"), path).await
}

async fn get_with(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::get(path).header("host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    client::send_h1(gw.addr("main"), b.body(Full::new(Bytes::new())).unwrap()).await
}

async fn post(gw: &Gateway, path: &str, body: &'static [u8]) -> Answer {
    let req = Request::post(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    client::send_h1(gw.addr("main"), req).await
}

/// The upstream that answered (its `x-upstream` header), or `-` for the gateway itself.
fn who(a: &Answer) -> String {
    a.header("x-upstream").unwrap_or("-").to_owned()
}

/// The JSON `error` code of a gateway-made response.
fn error_code(a: &Answer) -> String {
    a.json()["error"].as_str().unwrap_or_default().to_owned()
}

async fn metrics(gw: &Gateway) -> String {
    let m = client::get(gw.admin(), "/metrics").await;
    assert_eq!(m.status, 200, "admin /metrics");
    String::from_utf8_lossy(&m.body).into_owned()
}

/// The value of one series (`name{labels}` exactly as exported), or 0 when absent.
fn series(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(name_and_labels)?.strip_prefix(' ')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0.0)
}

fn ep_labels(addr: SocketAddr) -> String {
    format!("{{cluster=\"c\",endpoint=\"{addr}\"}}")
}

/// `/upstreams` for cluster `c`: the entry of the endpoint at `addr`.
async fn upstream_status(gw: &Gateway, addr: SocketAddr) -> serde_json::Value {
    let res = client::get(gw.admin(), "/upstreams").await;
    assert_eq!(res.status, 200, "admin /upstreams");
    let json = res.json();
    let cluster = json["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "c"))
        .cloned()
        .unwrap_or_else(|| panic!("no cluster c in {json}"));
    cluster["endpoints"]
        .as_array()
        .and_then(|eps| {
            eps.iter()
                .find(|e| e["endpoint"] == addr.to_string().as_str())
        })
        .cloned()
        .unwrap_or_else(|| panic!("no endpoint {addr} in {cluster}"))
}

const RETRIES_FAST: &str =
    "[clusters.retries]\nattempts = 2\nbackoff_base = \"1ms\"\nbackoff_max = \"5ms\"\n";

// ---------------------------------------------------------------------------------------------
// Outlier detection
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn consecutive_5xx_eject_the_endpoint_and_traffic_goes_to_the_healthy_one() {
    let bad = Upstream::start("bad").await;
    bad.set(status(500));
    let good = Upstream::start("good").await;
    let gw = gateway(
        &[bad.url(), good.url()],
        "[clusters.outlier_detection]\nconsecutive_failures = 3\nbase_ejection = \"30s\"\nmax_ejection = \"60s\"\n",
    )
    .await;
    let mut answers = Vec::new();
    for _ in 0..12 {
        let a = get(&gw, "/x").await;
        answers.push((a.status, who(&a)));
    }
    // Round robin: bad, good, bad, good, bad (third failure: ejected), then good only.
    assert_eq!(bad.requests().len(), 3, "{answers:?}");
    assert_eq!(
        answers[..5].iter().filter(|a| a.1 == "bad").count(),
        3,
        "{answers:?}"
    );
    assert!(
        answers[..5]
            .iter()
            .filter(|a| a.1 == "bad")
            .all(|a| a.0 == 500),
        "the upstream's 500s pass through unchanged: {answers:?}"
    );
    assert!(
        answers[5..].iter().all(|a| *a == (200, "good".into())),
        "{answers:?}"
    );
}

#[tokio::test]
async fn consistent_hash_falls_over_to_the_next_endpoint_when_its_own_is_ejected() {
    let bad = Upstream::start("bad").await;
    bad.set(status(502));
    let good = Upstream::start("good").await;
    let gw = gateway(
        &[bad.url(), good.url()],
        "load_balancer = \"consistent_hash\"\nhash_header = \"x-user\"\n[clusters.outlier_detection]\nconsecutive_failures = 2\nbase_ejection = \"30s\"\n",
    )
    .await;
    // A key that the ring puts on the bad endpoint.
    let mut key = None;
    for k in 0..64 {
        let user = format!("user-{k}");
        let a = get_with(&gw, "/", &[("x-user", &user)]).await;
        if who(&a) == "bad" {
            key = Some(user);
            break;
        }
    }
    let key = key.expect("some key hashes to the bad endpoint");
    let second = get_with(&gw, "/", &[("x-user", &key)]).await;
    assert_eq!((second.status, who(&second)), (502, "bad".into()));
    for _ in 0..5 {
        let a = get_with(&gw, "/", &[("x-user", &key)]).await;
        assert_eq!((a.status, who(&a)), (200, "good".into()));
    }
    assert_eq!(bad.requests().len(), 2);
}

#[tokio::test]
async fn every_endpoint_ejected_gives_a_fast_503_with_retry_after() {
    let up = Upstream::start("only").await;
    up.set(status(503));
    let gw = gateway(
        &[up.url()],
        "[clusters.outlier_detection]\nconsecutive_failures = 2\nbase_ejection = \"5s\"\n",
    )
    .await;
    assert_eq!(get(&gw, "/").await.status, 503);
    assert_eq!(get(&gw, "/").await.status, 503);
    // From here a request reaching the upstream would take 2 s.
    up.set(slow(200, 2000));
    let started = Instant::now();
    let a = get(&gw, "/").await;
    let elapsed = started.elapsed();
    assert_eq!(a.status, 503);
    assert_eq!(error_code(&a), "circuit_open");
    assert_eq!(
        a.header("retry-after"),
        Some("5"),
        "seconds until the ejection ends"
    );
    assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
    assert_eq!(
        up.requests().len(),
        2,
        "the ejected endpoint saw nothing more"
    );
    let m = metrics(&gw).await;
    assert_eq!(
        series(
            &m,
            "warden_upstream_rejected_total{cluster=\"c\",reason=\"circuit_open\"}"
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn failure_rate_ejects_once_the_window_holds_min_requests() {
    let up = Upstream::start("only").await;
    let gw = gateway(
        &[up.url()],
        "[clusters.outlier_detection]\nconsecutive_failures = 100\nfailure_rate = 0.5\nmin_requests = 6\nwindow = \"10s\"\nbase_ejection = \"30s\"\n",
    )
    .await;
    for _ in 0..3 {
        assert_eq!(get(&gw, "/").await.status, 200);
    }
    up.set(status(500));
    // 2 failures of 5 outcomes: under min_requests, nothing happens.
    assert_eq!(get(&gw, "/").await.status, 500);
    assert_eq!(get(&gw, "/").await.status, 500);
    // The 6th outcome: 3 of 6 failed = 50 %, at the threshold: ejected.
    let sixth = get(&gw, "/").await;
    assert_eq!((sixth.status, who(&sixth)), (500, "only".into()));
    let after = get(&gw, "/").await;
    assert_eq!(after.status, 503);
    assert_eq!(error_code(&after), "circuit_open");
    assert_eq!(up.requests().len(), 6);
}

#[tokio::test]
async fn an_ejected_endpoint_recovers_through_half_open_and_a_failed_trial_doubles_the_time() {
    let up = Upstream::start("only").await;
    up.set(status(500));
    let gw = gateway(
        &[up.url()],
        "[clusters.outlier_detection]\nconsecutive_failures = 1\nbase_ejection = \"500ms\"\nmax_ejection = \"10s\"\nhalf_open_requests = 1\n",
    )
    .await;
    // Ejected for 500 ms.
    assert_eq!(get(&gw, "/").await.status, 500);
    assert_eq!(error_code(&get(&gw, "/").await), "circuit_open");
    // Time up: one trial goes through, fails, and the ejection doubles to 1 s.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let trial = get(&gw, "/").await;
    assert_eq!((trial.status, who(&trial)), (500, "only".into()));
    let st = upstream_status(&gw, up.addr()).await;
    assert_eq!(st["breaker"]["state"], "open", "{st}");
    assert_eq!(st["ejections_in_a_row"], 2, "{st}");
    let left = st["breaker"]["seconds_left"].as_f64().unwrap_or_default();
    assert!(left > 0.5 && left <= 1.0, "{st}");
    // 600 ms later the first ejection time would have passed, the doubled one has not.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(error_code(&get(&gw, "/").await), "circuit_open");
    assert_eq!(up.requests().len(), 2);
    // The endpoint recovers; after the doubled time a successful trial closes the breaker.
    up.set(status(200));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let back = get(&gw, "/").await;
    assert_eq!((back.status, who(&back)), (200, "only".into()));
    let st = upstream_status(&gw, up.addr()).await;
    assert_eq!(st["breaker"]["state"], "closed", "{st}");
    assert_eq!(st["ejections_in_a_row"], 0, "{st}");
    for _ in 0..3 {
        assert_eq!(get(&gw, "/").await.status, 200);
    }
    let m = metrics(&gw).await;
    let labels = ep_labels(up.addr());
    assert_eq!(
        series(&m, &format!("warden_upstream_endpoint_ejected{labels}")),
        0.0,
        "{m}"
    );
    assert_eq!(
        series(&m, &format!("warden_upstream_ejections_total{labels}")),
        2.0,
        "{m}"
    );
}

#[tokio::test]
async fn max_ejected_percent_keeps_endpoints_in_rotation() {
    let ups = [
        Upstream::start("u0").await,
        Upstream::start("u1").await,
        Upstream::start("u2").await,
        Upstream::start("u3").await,
    ];
    for u in &ups {
        u.set(status(500));
    }
    let urls: Vec<String> = ups.iter().map(Upstream::url).collect();
    let gw = gateway(
        &urls,
        "[clusters.outlier_detection]\nconsecutive_failures = 1\nbase_ejection = \"30s\"\nmax_ejected_percent = 50\n",
    )
    .await;
    let mut answers = Vec::new();
    for _ in 0..20 {
        let a = get(&gw, "/").await;
        answers.push((a.status, who(&a)));
    }
    assert!(
        answers.iter().all(|a| a.0 == 500),
        "never a 503: half the endpoints stay in: {answers:?}"
    );
    let last: std::collections::BTreeSet<_> = answers[10..].iter().map(|a| a.1.clone()).collect();
    assert_eq!(last.len(), 2, "two endpoints still serve: {answers:?}");
    let m = metrics(&gw).await;
    let ejected: f64 = ups
        .iter()
        .map(|u| {
            series(
                &m,
                &format!("warden_upstream_endpoint_ejected{}", ep_labels(u.addr())),
            )
        })
        .sum();
    assert_eq!(ejected, 2.0, "{m}");
}

#[tokio::test]
async fn breaker_state_shows_in_metrics_and_upstreams() {
    let bad = Upstream::start("bad").await;
    bad.set(status(500));
    let good = Upstream::start("good").await;
    let gw = gateway(
        &[bad.url(), good.url()],
        "[clusters.outlier_detection]\nconsecutive_failures = 2\nbase_ejection = \"30s\"\n",
    )
    .await;
    for _ in 0..4 {
        get(&gw, "/").await;
    }
    let m = metrics(&gw).await;
    let (b, g) = (ep_labels(bad.addr()), ep_labels(good.addr()));
    assert_eq!(
        series(&m, &format!("warden_upstream_endpoint_ejected{b}")),
        1.0,
        "{m}"
    );
    assert_eq!(
        series(&m, &format!("warden_upstream_ejections_total{b}")),
        1.0,
        "{m}"
    );
    assert_eq!(
        series(&m, &format!("warden_upstream_endpoint_ejected{g}")),
        0.0,
        "{m}"
    );
    assert!(
        m.contains(&format!("warden_upstream_endpoint_ejected{g} 0")),
        "the healthy endpoint's gauge is exported at 0: {m}"
    );
    // The breaker opening is a security event too.
    assert_eq!(
        series(
            &m,
            "warden_security_events_total{event=\"upstream.ejected\",reason=\"outlier_detection\"}"
        ),
        1.0,
        "{m}"
    );

    let st = upstream_status(&gw, bad.addr()).await;
    assert_eq!(st["breaker"]["state"], "open", "{st}");
    let left = st["breaker"]["seconds_left"].as_f64().unwrap_or_default();
    assert!(left > 25.0 && left <= 30.0, "{st}");
    assert_eq!(st["ejections_in_a_row"], 1, "{st}");
    assert_eq!(
        st["healthy"], true,
        "health checks and breakers are separate: {st}"
    );
    assert_eq!(st["available"], false, "{st}");
    let st = upstream_status(&gw, good.addr()).await;
    assert_eq!(st["breaker"]["state"], "closed", "{st}");
    assert_eq!(st["in_flight"], 0, "{st}");
}

#[tokio::test]
async fn breaker_state_survives_a_reload_that_keeps_the_cluster() {
    let up = Upstream::start("only").await;
    up.set(status(500));
    let extra = "[clusters.outlier_detection]\nconsecutive_failures = 1\nbase_ejection = \"30s\"\n";
    let gw = gateway(&[up.url()], extra).await;
    assert_eq!(get(&gw, "/").await.status, 500);
    assert_eq!(error_code(&get(&gw, "/").await), "circuit_open");
    // A new route, the same cluster.
    gw.rewrite(&format!(
        "{}\n[[routes]]\nname = \"other\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/other/\"\n",
        config(&[up.url()], extra)
    ));
    let req = Request::post("/reload")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client::send_h1(gw.admin(), req).await.status, 200);
    let a = get(&gw, "/other/x").await;
    assert_eq!(
        error_code(&a),
        "circuit_open",
        "still ejected after the reload"
    );
    assert_eq!(up.requests().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_retried_on_503_lands_on_the_other_endpoint() {
    let bad = Upstream::start("bad").await;
    bad.set(status(503));
    let good = Upstream::start("good").await;
    let gw = gateway(&[bad.url(), good.url()], RETRIES_FAST).await;
    for _ in 0..4 {
        let a = get(&gw, "/r").await;
        assert_eq!((a.status, who(&a)), (200, "good".into()));
    }
    // Round robin sends every first try to the bad endpoint, every retry elsewhere.
    assert_eq!(bad.requests().len(), 4);
    assert_eq!(good.requests().len(), 4);
    let m = metrics(&gw).await;
    assert_eq!(
        series(
            &m,
            "warden_upstream_retries_total{cluster=\"c\",result=\"attempted\"}"
        ),
        4.0,
        "{m}"
    );
    assert_eq!(
        series(
            &m,
            "warden_upstream_retries_total{cluster=\"c\",result=\"succeeded\"}"
        ),
        4.0,
        "{m}"
    );
}

#[tokio::test]
async fn retries_exhausted_pass_the_last_answer_through() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    for u in [&a, &b] {
        u.set(Behaviour {
            status: 503,
            body: Some("upstream says busy".into()),
            ..Behaviour::default()
        });
    }
    let gw = gateway(&[a.url(), b.url()], RETRIES_FAST).await;
    let res = get(&gw, "/").await;
    assert_eq!(res.status, 503);
    assert_eq!(&res.body[..], b"upstream says busy");
    assert_ne!(who(&res), "-", "the upstream's own answer");
    assert_eq!(
        a.requests().len() + b.requests().len(),
        3,
        "1 try + 2 retries"
    );
}

#[tokio::test]
async fn get_retried_on_connection_refused_and_reset() {
    let dead = dead_endpoint().await;
    let reset = Flaky::start("reset", Mode::Reset).await;
    let closed = Flaky::start("closed", Mode::Close).await;
    let good = Upstream::start("good").await;
    for bad in [format!("http://{dead}"), reset.url(), closed.url()] {
        let gw = gateway(&[bad.clone(), good.url()], RETRIES_FAST).await;
        for _ in 0..3 {
            let a = get(&gw, "/").await;
            assert_eq!((a.status, who(&a)), (200, "good".into()), "with {bad}");
        }
    }
    assert_eq!(reset.requests(), 3);
    assert_eq!(closed.requests(), 3);
}

#[tokio::test]
async fn without_retries_a_reset_is_a_502() {
    let reset = Flaky::start("reset", Mode::Reset).await;
    let gw = gateway(&[reset.url()], "").await;
    let a = get(&gw, "/").await;
    assert_eq!(a.status, 502);
    assert_eq!(error_code(&a), "bad_gateway");
    assert_eq!(reset.requests(), 1);
}

#[tokio::test]
async fn post_is_not_retried_by_default() {
    let bad = Upstream::start("bad").await;
    bad.set(status(503));
    let good = Upstream::start("good").await;
    let gw = gateway(&[bad.url(), good.url()], RETRIES_FAST).await;
    let a = post(&gw, "/orders", b"{\"n\":1}").await;
    assert_eq!((a.status, who(&a)), (503, "bad".into()));
    assert_eq!(bad.requests().len(), 1, "the upstream saw one POST");
    assert!(good.requests().is_empty());
}

#[tokio::test]
async fn a_listed_post_is_retried_with_the_same_buffered_body() {
    let bad = Upstream::start("bad").await;
    bad.set(status(503));
    let good = Upstream::start("good").await;
    let gw = gateway(
        &[bad.url(), good.url()],
        &format!("{RETRIES_FAST}methods = [\"POST\"]\nbuffer_body_bytes = 1024\n"),
    )
    .await;
    let a = post(&gw, "/orders", b"{\"order\":42}").await;
    assert_eq!((a.status, who(&a)), (200, "good".into()));
    assert_eq!(&bad.requests()[0].body[..], b"{\"order\":42}");
    let sent = &good.requests()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(
        &sent.body[..],
        b"{\"order\":42}",
        "the same body, sent again"
    );
    assert_eq!(sent.uri, "/orders");

    // A chunked body that ends within the limit is buffered too.
    let raw_req = b"POST /chunked HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let text = raw::exchange(gw.addr("main"), raw_req, Duration::from_millis(500)).await;
    assert_eq!(raw::statuses(&text), [200], "{text}");
    let sent = good
        .requests()
        .into_iter()
        .find(|r| r.uri == "/chunked")
        .expect("retried");
    assert_eq!(&sent.body[..], b"hello world");
}

#[tokio::test]
async fn a_body_over_the_buffer_limit_is_streamed_and_not_retried() {
    let bad = Upstream::start("bad").await;
    bad.set(status(503));
    let good = Upstream::start("good").await;
    let gw = gateway(
        &[bad.url(), good.url()],
        &format!("{RETRIES_FAST}methods = [\"POST\", \"PUT\"]\nbuffer_body_bytes = 16\n"),
    )
    .await;
    let big: &'static [u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let a = post(&gw, "/big", big).await;
    assert_eq!((a.status, who(&a)), (503, "bad".into()));
    assert_eq!(&bad.requests()[0].body[..], big, "streamed whole");
    assert!(good.requests().is_empty(), "not retried");

    // Chunked, passing the limit mid-body: what was read goes first, then the rest.
    good.set(status(503));
    let raw_req = b"PUT /big-chunked HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\na\r\nabcdefghij\r\na\r\nklmnopqrst\r\n0\r\n\r\n";
    let text = raw::exchange(gw.addr("main"), raw_req, Duration::from_millis(500)).await;
    assert_eq!(raw::statuses(&text), [503], "{text}");
    let sent: Vec<_> = bad
        .requests()
        .into_iter()
        .chain(good.requests())
        .filter(|r| r.uri == "/big-chunked")
        .collect();
    assert_eq!(sent.len(), 1, "sent once, not retried");
    assert_eq!(&sent[0].body[..], b"0123456789abcdefghijklmnopqrst");
}

#[tokio::test]
async fn a_per_try_timeout_is_retried_on_another_endpoint() {
    let hung = Flaky::start("hung", Mode::Hang).await;
    let good = Upstream::start("good").await;
    let gw = gateway(
        &[hung.url(), good.url()],
        &format!("{RETRIES_FAST}per_try_timeout = \"200ms\"\n"),
    )
    .await;
    let started = Instant::now();
    let a = get(&gw, "/").await;
    let elapsed = started.elapsed();
    assert_eq!((a.status, who(&a)), (200, "good".into()));
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
    assert_eq!(hung.requests(), 1);
}

#[tokio::test]
async fn the_route_timeout_bounds_all_tries() {
    let a = Flaky::start("a", Mode::Hang).await;
    let b = Flaky::start("b", Mode::Hang).await;
    let toml = config(
        &[a.url(), b.url()],
        "[clusters.retries]\nattempts = 5\nper_try_timeout = \"300ms\"\nbackoff_base = \"1ms\"\nbackoff_max = \"1ms\"\n",
    )
    .replace("cluster = \"c\"\n", "cluster = \"c\"\ntimeout = \"500ms\"\n");
    let gw = Gateway::start(&toml).await;
    let started = Instant::now();
    let res = get(&gw, "/").await;
    let elapsed = started.elapsed();
    assert_eq!(res.status, 504);
    assert_eq!(error_code(&res), "gateway_timeout");
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(1200),
        "{elapsed:?}"
    );
    assert_eq!(a.requests() + b.requests(), 2, "two tries fit in 500 ms");
}

#[tokio::test]
async fn the_retry_budget_caps_retries_under_concurrent_failures() {
    let up = Upstream::start("only").await;
    up.set(slow(503, 400));
    let gw = gateway(
        &[up.url()],
        "[clusters.retries]\nattempts = 1\nbudget_percent = 10\nmin_retries_in_flight = 1\nbackoff_base = \"1ms\"\nbackoff_max = \"1ms\"\n",
    )
    .await;
    let addr = gw.addr("main");
    let tasks: Vec<_> = (0..10)
        .map(|_| tokio::spawn(async move { client::get(addr, "/").await.status }))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 503, "the failure is returned as is");
    }
    let m = metrics(&gw).await;
    let attempted = series(
        &m,
        "warden_upstream_retries_total{cluster=\"c\",result=\"attempted\"}",
    );
    let exhausted = series(
        &m,
        "warden_upstream_retries_total{cluster=\"c\",result=\"budget_exhausted\"}",
    );
    assert_eq!(attempted + exhausted, 10.0, "{m}");
    assert!(
        (1.0..=2.0).contains(&attempted),
        "10 % of 10 in flight: one retry at a time: {m}"
    );
    assert_eq!(up.requests().len() as f64, 10.0 + attempted);
}

// ---------------------------------------------------------------------------------------------
// Bulkhead and adaptive concurrency
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_bulkhead_refuses_the_third_concurrent_request_at_once() {
    let up = Upstream::start("slow").await;
    up.set(slow(200, 800));
    let gw = gateway(&[up.url()], "max_concurrent_requests = 2\n").await;
    let addr = gw.addr("main");
    let first: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { client::get(addr, "/").await.status }))
        .collect();
    // Both are at the upstream.
    let deadline = Instant::now() + Duration::from_secs(2);
    while up.requests().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let third = get(&gw, "/").await;
    let elapsed = started.elapsed();
    assert_eq!(third.status, 503);
    assert_eq!(error_code(&third), "upstream_busy");
    assert_eq!(third.header("retry-after"), Some("1"));
    assert!(elapsed < Duration::from_millis(400), "{elapsed:?}");
    for t in first {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(up.requests().len(), 2);
    let st = client::get(gw.admin(), "/upstreams").await.json();
    assert_eq!(st["clusters"][0]["max_concurrent_requests"], 2, "{st}");
    assert_eq!(st["clusters"][0]["in_flight"], 0, "slots given back: {st}");
    // Room again once they are done.
    assert_eq!(get(&gw, "/").await.status, 200);
    let m = metrics(&gw).await;
    assert_eq!(
        series(
            &m,
            "warden_upstream_rejected_total{cluster=\"c\",reason=\"bulkhead\"}"
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn the_adaptive_limit_refuses_past_it_and_is_exported() {
    let up = Upstream::start("slow").await;
    up.set(slow(200, 800));
    let gw = gateway(
        &[up.url()],
        "[clusters.adaptive_concurrency]\ninitial_limit = 2\nmin_limit = 1\nmax_limit = 4\n",
    )
    .await;
    let m = metrics(&gw).await;
    assert_eq!(
        series(&m, "warden_upstream_concurrency_limit{cluster=\"c\"}"),
        2.0,
        "{m}"
    );
    let addr = gw.addr("main");
    let first: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { client::get(addr, "/").await.status }))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(2);
    while up.requests().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let third = get(&gw, "/").await;
    assert_eq!(third.status, 503);
    assert_eq!(error_code(&third), "upstream_busy");
    for t in first {
        assert_eq!(t.await.unwrap(), 200);
    }
    let m = metrics(&gw).await;
    assert_eq!(
        series(
            &m,
            "warden_upstream_rejected_total{cluster=\"c\",reason=\"adaptive\"}"
        ),
        1.0,
        "{m}"
    );
    let st = client::get(gw.admin(), "/upstreams").await.json();
    let limit = st["clusters"][0]["concurrency_limit"].as_u64().unwrap_or(0);
    assert!((1..=4).contains(&limit), "{st}");
}
