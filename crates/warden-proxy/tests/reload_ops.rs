//! Operations: hot reload under load, failed reloads, the admin API, file watching, the
//! access log and graceful drain. Real sockets on ephemeral ports only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use warden_test_util::{base_toml, client, Behaviour, Gateway, Pki, Upstream};

/// A config with cluster `c` → `up` and route `main` (prefix `/`). Variant `b` also has a
/// route `beta` that rewrites `/beta/` to `/rewritten/`, a different `x-config` response header
/// and a different cluster pool setting (so the cluster is rebuilt on every switch).
fn variant(up: &Upstream, v: char) -> String {
    let mut t = base_toml();
    t.push_str(&format!(
        "\n[security_headers.extra]\nx-config = \"{v}\"\n\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\npool_idle_timeout = \"{}\"\n",
        up.url(),
        if v == 'a' { "90s" } else { "91s" }
    ));
    if v == 'b' {
        t.push_str(
            "\n[[routes]]\nname = \"beta\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/beta/\"\nrewrite_prefix = \"/rewritten/\"\n",
        );
    }
    t.push_str(
        "\n[[routes]]\nname = \"main\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/\"\n",
    );
    t
}

/// Cluster `c` → `up`, plus the given routes (TOML text).
fn with_routes(up: &Upstream, routes: &str) -> String {
    format!(
        "{}\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n{routes}",
        base_toml(),
        up.url()
    )
}

fn route(name: &str, prefix: &str, cluster: &str) -> String {
    format!("\n[[routes]]\nname = \"{name}\"\nauth = \"none\"\ncluster = \"{cluster}\"\npath_prefix = \"{prefix}\"\n")
}

fn get_req(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn body_text(a: &client::Answer) -> String {
    String::from_utf8_lossy(&a.body).into_owned()
}

async fn metrics_text(admin: SocketAddr) -> String {
    let res = client::get(admin, "/metrics").await;
    assert_eq!(res.status, 200);
    body_text(&res)
}

/// The value of one series (`name{labels}` exactly as exported), if present.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

async fn post_reload(admin: SocketAddr) -> client::Answer {
    let req = Request::post("/reload")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    client::send_h1(admin, req).await
}

/// A load client's tally.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

const LOAD_PATHS: [&str; 2] = ["/beta/load", "/plain/load"];

/// Sends requests without pause over ONE HTTP/1.1 keep-alive connection until `stop`; any
/// error ends it (a reload must not break a kept-alive connection).
async fn h1_keepalive_client(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        if let Err(e) = sender.ready().await {
            tally.fail(format!("h1 keep-alive connection unusable: {e}"));
            return;
        }
        match sender.send_request(get_req(LOAD_PATHS[i % 2])).await {
            Ok(res) => {
                let status = res.status();
                match res.into_body().collect().await {
                    Ok(_) if status == 200 => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => tally.fail(format!("h1 keep-alive: status {status}")),
                    Err(e) => {
                        tally.fail(format!("h1 keep-alive body: {e}"));
                        return;
                    }
                }
            }
            Err(e) => {
                tally.fail(format!("h1 keep-alive request: {e}"));
                return;
            }
        }
    }
}

/// Same over ONE h2c connection.
async fn h2_keepalive_client(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        match sender.send_request(get_req(LOAD_PATHS[i % 2])).await {
            Ok(res) => {
                let status = res.status();
                match res.into_body().collect().await {
                    Ok(_) if status == 200 => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => tally.fail(format!("h2 keep-alive: status {status}")),
                    Err(e) => {
                        tally.fail(format!("h2 keep-alive body: {e}"));
                        return;
                    }
                }
            }
            Err(e) => {
                tally.fail(format!("h2 keep-alive request: {e}"));
                return;
            }
        }
    }
}

/// A new HTTP/1.1 connection for every request.
async fn new_connection_client(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let attempt = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            let res = sender
                .send_request(get_req(LOAD_PATHS[i % 2]))
                .await
                .map_err(|e| format!("request: {e}"))?;
            let status = res.status();
            res.into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?;
            Ok::<_, String>(status)
        };
        match attempt.await {
            Ok(s) if s == 200 => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(s) => tally.fail(format!("new connection: status {s}")),
            Err(e) => tally.fail(format!("new connection: {e}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_reloads_under_load_lose_no_request_and_each_change_shows() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&variant(&up, 'a')).await;
    let addr = gw.addr("main");
    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Vec<Arc<Tally>> = (0..3).map(|_| Arc::new(Tally::default())).collect();
    let tasks = vec![
        tokio::spawn(h1_keepalive_client(addr, stop.clone(), tallies[0].clone())),
        tokio::spawn(h2_keepalive_client(addr, stop.clone(), tallies[1].clone())),
        tokio::spawn(new_connection_client(
            addr,
            stop.clone(),
            tallies[2].clone(),
        )),
    ];
    for i in 0..50 {
        let v = if i % 2 == 0 { 'b' } else { 'a' };
        gw.rewrite(&variant(&up, v));
        gw.handle
            .reload()
            .await
            .unwrap_or_else(|e| panic!("reload {i} failed: {e}"));
        // The change is visible to the very next request.
        let res = client::get(addr, "/beta/probe").await;
        assert_eq!(res.status, 200, "reload {i}");
        assert_eq!(
            res.header("x-config"),
            Some(v.to_string().as_str()),
            "reload {i}: header"
        );
        let seen = res.json()["uri"].as_str().unwrap().to_owned();
        let want = if v == 'b' {
            "/rewritten/probe"
        } else {
            "/beta/probe"
        };
        assert_eq!(
            seen,
            want,
            "reload {i}: route `beta` should be {}",
            if v == 'b' { "on" } else { "off" }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let names = ["h1 keep-alive", "h2c keep-alive", "new connections"];
    for (name, t) in names.iter().zip(&tallies) {
        let failures = t.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{name}: {} failed requests, e.g. {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        let ok = t.ok.load(Ordering::Relaxed);
        assert!(
            ok >= 20,
            "{name}: only {ok} requests completed during 50 reloads"
        );
    }
    let m = metrics_text(gw.admin()).await;
    assert_eq!(
        series(&m, "warden_config_reloads_total{result=\"success\"}"),
        Some(50.0),
        "{m}"
    );
    assert_eq!(series(&m, "warden_config_last_reload_success"), Some(1.0));
}

#[tokio::test]
async fn a_bad_reload_keeps_the_old_routes_and_is_reported() {
    let up = Upstream::start("u").await;
    let good = with_routes(&up, &route("old", "/old/", "c"));
    let gw = Gateway::start(&good).await;
    let addr = gw.addr("main");
    assert_eq!(client::get(addr, "/old/x").await.status, 200);

    // 1. Syntax error on line 3 of the file.
    gw.rewrite("[admin]\naddress = \"127.0.0.1:0\"\n[[routes]\nname = \"new\"\n");
    let err = gw
        .handle
        .reload()
        .await
        .expect_err("a file that is not TOML must be refused");
    let text = err.to_string();
    assert!(
        text.contains("not valid TOML") && text.contains("line 3"),
        "{text}"
    );
    assert_eq!(
        client::get(addr, "/old/x").await.status,
        200,
        "old route must keep serving"
    );
    let m = metrics_text(gw.admin()).await;
    assert_eq!(
        series(&m, "warden_config_last_reload_success"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        series(&m, "warden_config_reloads_total{result=\"failure\"}"),
        Some(1.0),
        "{m}"
    );

    // 2. Valid TOML, but the new route names a cluster that does not exist.
    let bad = format!(
        "{}{}",
        with_routes(&up, &route("old", "/old/", "c")),
        route("new", "/new/", "nope")
    );
    gw.rewrite(&bad);
    let err = gw
        .handle
        .reload()
        .await
        .expect_err("a route naming a missing cluster must be refused");
    assert!(
        err.errors
            .iter()
            .any(|e| e.starts_with("routes[1].cluster") && e.contains("no cluster named `nope`")),
        "{:?}",
        err.errors
    );
    assert_eq!(
        client::get(addr, "/old/x").await.status,
        200,
        "old route must keep serving"
    );
    assert_eq!(
        client::get(addr, "/new/x").await.status,
        404,
        "half of a bad config must not apply"
    );
    let m = metrics_text(gw.admin()).await;
    assert_eq!(series(&m, "warden_config_last_reload_success"), Some(0.0));
    assert_eq!(
        series(&m, "warden_config_reloads_total{result=\"failure\"}"),
        Some(2.0),
        "{m}"
    );

    // 3. A valid file again restores success.
    gw.rewrite(&format!(
        "{}{}",
        with_routes(&up, &route("old", "/old/", "c")),
        route("new", "/new/", "c")
    ));
    gw.handle.reload().await.expect("valid reload");
    assert_eq!(client::get(addr, "/new/x").await.status, 200);
    assert_eq!(client::get(addr, "/old/x").await.status, 200);
    let m = metrics_text(gw.admin()).await;
    assert_eq!(series(&m, "warden_config_last_reload_success"), Some(1.0));
    assert_eq!(
        series(&m, "warden_config_reloads_total{result=\"success\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        series(&m, "warden_config_reloads_total{result=\"failure\"}"),
        Some(2.0)
    );
}

#[tokio::test]
async fn admin_post_reload_answers_200_or_422_with_field_errors() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&with_routes(&up, &route("one", "/one/", "c"))).await;
    let addr = gw.addr("main");
    assert_eq!(client::get(addr, "/two/x").await.status, 404);

    gw.rewrite(&with_routes(
        &up,
        &format!(
            "{}{}",
            route("one", "/one/", "c"),
            route("two", "/two/", "c")
        ),
    ));
    let res = post_reload(gw.admin()).await;
    assert_eq!(res.status, 200, "{}", body_text(&res));
    assert_eq!(res.json(), serde_json::json!({"status": "reloaded"}));
    assert_eq!(client::get(addr, "/two/x").await.status, 200);

    gw.rewrite(&with_routes(
        &up,
        &format!(
            "{}{}",
            route("one", "/one/", "c"),
            route("three", "/three/", "nope")
        ),
    ));
    let res = post_reload(gw.admin()).await;
    assert_eq!(res.status, 422, "{}", body_text(&res));
    let body = res.json();
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array: {body}"));
    assert!(
        errors.iter().any(|e| e
            .as_str()
            .is_some_and(|s| s.starts_with("routes[1].cluster") && s.contains("nope"))),
        "{body}"
    );
    // The running config is the last good one.
    assert_eq!(client::get(addr, "/two/x").await.status, 200);
    assert_eq!(client::get(addr, "/three/x").await.status, 404);
}

#[tokio::test]
async fn a_watched_file_reloads_by_itself() {
    let up = Upstream::start("u").await;
    let watched = |routes: &str| {
        with_routes(&up, routes).replace("watch = false", "watch = true\npoll_interval = \"100ms\"")
    };
    let gw = Gateway::start(&watched(&route("one", "/one/", "c"))).await;
    let addr = gw.addr("main");
    assert_eq!(client::get(addr, "/two/x").await.status, 404);
    // Let the watcher take its first look at the file before it changes.
    tokio::time::sleep(Duration::from_millis(250)).await;

    gw.rewrite(&watched(&route("two", "/two/", "c")));
    let start = Instant::now();
    loop {
        if client::get(addr, "/two/x").await.status == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the rewritten file was not picked up within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        client::get(addr, "/one/x").await.status,
        404,
        "the old route is gone"
    );
    let m = metrics_text(gw.admin()).await;
    assert_eq!(
        series(&m, "warden_config_reloads_total{result=\"success\"}"),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn admin_reports_health_readiness_metrics_and_a_redacted_config() {
    let up = Upstream::start("u").await;
    let pki = Pki::new("admin test CA");
    let (cert, key) = pki.server("server", &["localhost"]);
    let toml = format!(
        "{}\n[[listeners]]\nname = \"secure\"\naddress = \"127.0.0.1:0\"\n[[listeners.tls.certificates]]\ncert = \"{}\"\nkey = \"file:{}\"\n\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n[clusters.health_check]\ninterval = \"1s\"\n{}",
        base_toml(),
        cert.display(),
        key.display(),
        up.url(),
        route("r", "/", "c")
    );
    let gw = Gateway::start(&toml).await;
    let admin = gw.admin();

    let health = client::get(admin, "/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(client::get(admin, "/readyz").await.status, 200);

    assert_eq!(client::get(gw.addr("main"), "/x").await.status, 200);
    let tls = client::tls_config(&pki.ca_file(), None, &[b"h2", b"http/1.1"]);
    let res = client::send_tls(gw.addr("secure"), "localhost", tls, get_req("/y"))
        .await
        .expect("TLS request");
    assert_eq!(res.status, 200);

    let m = metrics_text(admin).await;
    assert_eq!(
        series(&m, "warden_requests_total{route=\"r\",status=\"200\"}"),
        Some(2.0),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("warden_request_duration_seconds_bucket{")
                && l.contains("route=\"r\"")),
        "{m}"
    );
    assert!(
        m.contains("warden_open_connections{listener=\"main\"}"),
        "{m}"
    );
    let ep = format!(
        "warden_upstream_endpoint_healthy{{cluster=\"c\",endpoint=\"{}\"}}",
        up.addr()
    );
    assert_eq!(series(&m, &ep), Some(1.0), "{m}");
    // Reload counters exist from the start, so an alert on the first failure can fire.
    assert_eq!(
        series(&m, "warden_config_reloads_total{result=\"failure\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        series(&m, "warden_config_reloads_total{result=\"success\"}"),
        Some(0.0),
        "{m}"
    );

    let res = client::get(admin, "/config").await;
    assert_eq!(res.status, 200);
    let text = body_text(&res);
    let config = res.json();
    let listener = &config["listeners"][1];
    assert_eq!(listener["name"], "secure");
    assert_eq!(
        listener["tls"]["certificates"][0]["key"],
        format!("file:{}", key.display())
    );
    assert_eq!(config["clusters"][0]["endpoints"][0], up.url());
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(
        !text.contains("PRIVATE KEY"),
        "/config shows key material: {text}"
    );
    for line in pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
    {
        assert!(!text.contains(line), "/config shows key material: {text}");
        assert!(
            !text.contains(&line[..16]),
            "/config shows key material: {text}"
        );
    }
}

#[tokio::test]
async fn access_log_has_one_json_line_per_request_without_query_strings() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let toml = with_routes(&up, &route("api", "/api/", "c")).replace(
        "[access_log]\nenabled = false",
        &format!("[access_log]\nenabled = true\npath = \"{}\"", log.display()),
    );
    assert!(toml.contains("enabled = true"), "base_toml changed shape");
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("main");

    let a = client::get(addr, "/api/items?token=secret").await;
    let post = Request::post("/api/upload")
        .header("host", "localhost")
        .body(Full::new(Bytes::from_static(b"12345")))
        .unwrap();
    let b = client::send_h1(addr, post).await;
    let c = client::get(addr, "/elsewhere").await;
    assert_eq!((a.status, b.status, c.status), (200, 200, 404));

    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 3 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "access log has {} lines: {text}",
            text.lines().count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        !text.contains("secret"),
        "query string leaked into the access log: {text}"
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    let find = |res: &client::Answer| {
        let id = res.header("x-request-id").expect("x-request-id");
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for request {id}: {text}"))
            .clone()
    };
    for (res, method, path, route, status, bytes_in) in [
        (&a, "GET", "/api/items", "api", 200, 0),
        (&b, "POST", "/api/upload", "api", 200, 5),
        (&c, "GET", "/elsewhere", "-", 404, 0),
    ] {
        let l = find(res);
        for field in [
            "time",
            "request_id",
            "route",
            "method",
            "path",
            "status",
            "duration_ms",
            "upstream",
            "bytes_in",
            "bytes_out",
            "client",
        ] {
            assert!(!l[field].is_null(), "field {field} missing: {l}");
        }
        assert_eq!(l["method"], method, "{l}");
        assert_eq!(l["path"], path, "{l}");
        assert_eq!(l["route"], route, "{l}");
        assert_eq!(l["status"], status, "{l}");
        assert_eq!(l["bytes_in"], bytes_in, "{l}");
        assert_eq!(l["bytes_out"], res.body.len() as u64, "{l}");
        let upstream = if status == 200 {
            up.addr().to_string()
        } else {
            "-".into()
        };
        assert_eq!(l["upstream"], upstream.as_str(), "{l}");
        assert!(
            l["client"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{l}"
        );
        assert!(l["duration_ms"].as_f64().unwrap() >= 0.0, "{l}");
        let time = l["time"].as_str().unwrap();
        assert!(
            time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
            "{l}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests_and_refuses_new_connections() {
    let up = Upstream::start("slow").await;
    up.set(Behaviour {
        delay: Duration::from_secs(1),
        ..Behaviour::default()
    });
    let gw = Gateway::start(&with_routes(&up, &route("r", "/", "c"))).await;
    let addr = gw.addr("main");
    let slow = tokio::spawn(async move { client::get(addr, "/slow").await.status });
    // Wait until the request is at the upstream, i.e. really in flight.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let began = Instant::now();
    let handle = gw.handle;
    let shutdown = tokio::spawn(async move {
        handle.shutdown().await;
        Instant::now()
    });
    // New connections are refused while the slow request is still running.
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        match TcpStream::connect(addr).await {
            // Reset: the handshake raced with the listener closing; nothing served it either.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                break
            }
            Err(e) => panic!("unexpected connect error: {e}"),
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "still accepting connections 500 ms after shutdown began"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    assert!(
        !slow.is_finished(),
        "the slow request should still be in flight"
    );
    assert!(
        !shutdown.is_finished(),
        "shutdown must wait for the in-flight request"
    );
    assert_eq!(
        slow.await.unwrap(),
        200,
        "the in-flight request must complete"
    );
    let stopped = tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown did not finish after the last request")
        .unwrap();
    // The upstream answers 1 s after it got the request; shutdown began just after that.
    assert!(
        stopped.duration_since(began) >= Duration::from_millis(800),
        "shutdown returned after {:?}, before the in-flight request was answered",
        stopped.duration_since(began)
    );
}
