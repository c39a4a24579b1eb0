//! Routing, load balancing, health checks, forwarding hygiene, CORS, IP rules, timeouts and
//! protections, end to end over real sockets (every listener on an ephemeral port).
//!
//! Each upstream reports its name in `x-upstream`, so a test can tell which one answered; the
//! upstream's own record (`requests()`) tells what reached it, and what did not.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use warden_test_util::client::{self, Answer};
use warden_test_util::{base_toml, raw, Behaviour, Gateway, Upstream};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A `[[clusters]]` block; `extra` is appended inside it (more keys, then sub-tables).
fn cluster(name: &str, ups: &[&Upstream], extra: &str) -> String {
    let eps: Vec<String> = ups.iter().map(|u| format!("\"{}\"", u.url())).collect();
    format!(
        "\n[[clusters]]\nname = \"{name}\"\nendpoints = [{}]\n{extra}\n",
        eps.join(", ")
    )
}

/// A public `[[routes]]` block; `body` is appended inside it (more keys, then sub-tables).
fn route(name: &str, cluster: &str, body: &str) -> String {
    format!("\n[[routes]]\nname = \"{name}\"\nauth = \"none\"\ncluster = \"{cluster}\"\n{body}\n")
}

/// A request built from parts; `uri` may be a path (HTTP/1.1) or absolute (h2c).
fn request(method: &str, host: &str, uri: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).expect("request")
}

/// One request over a new HTTP/1.1 connection.
async fn send(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    client::send_h1(addr, request(method, host, path, headers)).await
}

/// `GET path` with `Host: localhost` and extra headers.
async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    send(addr, "GET", "localhost", path, headers).await
}

/// The upstream that answered (its `x-upstream` header), or `-`.
fn who(a: &Answer) -> String {
    a.header("x-upstream").unwrap_or("-").to_owned()
}

/// The JSON `error` code of a gateway-made response.
fn error_code(a: &Answer) -> String {
    a.json()["error"].as_str().unwrap_or_default().to_owned()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of `warden_upstream_endpoint_healthy` for one endpoint, from the admin listener.
async fn healthy_gauge(gw: &Gateway, cluster: &str, up: &Upstream) -> Option<i64> {
    let m = client::get(gw.admin(), "/metrics").await;
    assert_eq!(m.status, 200, "admin /metrics");
    let text = String::from_utf8_lossy(&m.body).into_owned();
    let prefix = format!(
        "warden_upstream_endpoint_healthy{{cluster=\"{cluster}\",endpoint=\"{}\"}} ",
        up.addr()
    );
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

fn slow(delay_ms: u64) -> Behaviour {
    Behaviour {
        delay: Duration::from_millis(delay_ms),
        ..Behaviour::default()
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Routing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn host_specificity_beats_file_order_exact_then_wildcard_then_any() {
    let exact = Upstream::start("exact").await;
    let wild = Upstream::start("wild").await;
    let deep = Upstream::start("deep").await;
    let any = Upstream::start("any").await;
    // File order is the reverse of the matching order, on purpose.
    let toml = [
        base_toml(),
        cluster("exact", &[&exact], ""),
        cluster("wild", &[&wild], ""),
        cluster("deep", &[&deep], ""),
        cluster("any", &[&any], ""),
        route("any", "any", "path_prefix = \"/\""),
        route(
            "wild",
            "wild",
            "hosts = [\"*.example.com\"]\npath_prefix = \"/\"",
        ),
        route(
            "deep",
            "deep",
            "hosts = [\"*.eu.example.com\"]\npath_prefix = \"/\"",
        ),
        route(
            "exact",
            "exact",
            "hosts = [\"api.example.com\"]\npath_prefix = \"/v1\"",
        ),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("main");

    let cases = [
        ("api.example.com", "/v1/users", "exact"),
        // Host matching ignores case and port.
        ("API.Example.COM:8443", "/v1/users", "exact"),
        // The exact-host route does not match this path: the next group (wildcard) gets a turn.
        ("api.example.com", "/other", "wild"),
        ("www.example.com", "/v1/users", "wild"),
        // Wildcards match at any depth; the longest matching suffix is tried first.
        ("a.b.example.com", "/", "wild"),
        ("x.eu.example.com", "/", "deep"),
        ("WWW.EXAMPLE.COM:80", "/", "wild"),
        // A wildcard never matches the apex.
        ("example.com", "/v1/users", "any"),
        ("unrelated.test", "/", "any"),
    ];
    for (host, path, expected) in cases {
        let res = send(addr, "GET", host, path, &[]).await;
        assert_eq!(res.status, 200, "{host}{path}");
        assert_eq!(who(&res), expected, "Host: {host}, path {path}");
    }
    // Over HTTP/2 the host comes from `:authority`, with the same rules.
    for (authority, expected) in [
        ("API.example.com:9999", "exact"),
        ("Www.Example.com", "wild"),
        ("example.com", "any"),
    ] {
        let req = request("GET", authority, &format!("http://{authority}/v1/h2"), &[]);
        let res = client::send_h2c(addr, req).await;
        assert_eq!(res.version, http::Version::HTTP_2);
        assert_eq!(
            (res.status, who(&res).as_str()),
            (200, expected),
            "h2 :authority {authority}"
        );
    }
    assert_eq!(exact.requests().len(), 3);
    assert_eq!(wild.requests().len(), 5);
    assert_eq!(deep.requests().len(), 1);
    assert_eq!(any.requests().len(), 3);
    // The upstream sees the client's Host.
    assert_eq!(
        exact.requests()[1].headers.get("host").map(String::as_str),
        Some("API.Example.COM:8443")
    );
}

#[tokio::test]
async fn first_route_in_file_order_wins_and_paths_match_exact_regex_prefix() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    let d = Upstream::start("d").await;
    let toml = [
        base_toml(),
        cluster("a", &[&a], ""),
        cluster("b", &[&b], ""),
        cluster("c", &[&c], ""),
        cluster("d", &[&d], ""),
        route("exact", "a", "path_exact = \"/items\""),
        route("regex", "b", "path_regex = '^/items/[0-9]+$'"),
        route("prefix", "c", "path_prefix = \"/items\""),
        // More specific, but later in the file: never chosen for /items/special.
        route("later-prefix", "d", "path_prefix = \"/items/special\""),
        route("docs", "d", "path_prefix = \"/docs/\""),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("main");

    let cases = [
        ("/items", "a"),
        ("/items?page=2", "a"),
        ("/items/42", "b"),
        ("/items/42/parts", "c"),
        ("/items/abc", "c"),
        ("/items/", "c"),
        ("/items/special", "c"),
        ("/docs/intro", "d"),
    ];
    for (path, expected) in cases {
        let res = get_with(addr, path, &[]).await;
        assert_eq!(res.status, 200, "{path}");
        assert_eq!(who(&res), expected, "{path}");
    }
    // `/docs` is not under the prefix `/docs/`, and nothing else matches it.
    let res = get_with(addr, "/docs", &[]).await;
    assert_eq!(res.status, 404);
    assert_eq!(error_code(&res), "no_route");
    assert_eq!(a.requests().len(), 2);
    assert_eq!(b.requests().len(), 1);
    assert_eq!(c.requests().len(), 4);
    assert_eq!(d.requests().len(), 1);
}

#[tokio::test]
async fn methods_and_header_conditions_select_routes() {
    let writes = Upstream::start("writes").await;
    let canary = Upstream::start("canary").await;
    let v2 = Upstream::start("v2").await;
    let debug = Upstream::start("debug").await;
    let anon = Upstream::start("anon").await;
    let fallback = Upstream::start("fallback").await;
    let toml = [
        base_toml(),
        cluster("writes", &[&writes], ""),
        cluster("canary", &[&canary], ""),
        cluster("v2", &[&v2], ""),
        cluster("debug", &[&debug], ""),
        cluster("anon", &[&anon], ""),
        cluster("fallback", &[&fallback], ""),
        route("writes", "writes", "path_prefix = \"/m\"\nmethods = [\"POST\", \"PUT\"]"),
        route("canary", "canary", "path_prefix = \"/h\"\nheaders = [{ name = \"X-Env\", exact = \"canary\" }]"),
        route("v2", "v2", "path_prefix = \"/h\"\nheaders = [{ name = \"x-version\", regex = '^v2(\\.[0-9]+)?$' }]"),
        route("debug", "debug", "path_prefix = \"/h\"\nheaders = [{ name = \"x-debug\" }]"),
        route("anon", "anon", "path_prefix = \"/h\"\nheaders = [{ name = \"authorization\", present = false }]"),
        route("fallback", "fallback", "path_prefix = \"/\""),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("main");

    for (method, expected) in [
        ("POST", "writes"),
        ("PUT", "writes"),
        ("GET", "fallback"),
        ("DELETE", "fallback"),
    ] {
        let res = send(addr, method, "localhost", "/m", &[]).await;
        assert_eq!(res.status, 200, "{method}");
        assert_eq!(who(&res), expected, "{method} /m");
    }

    let auth = ("authorization", "Bearer t");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("x-env", "canary"), auth], "canary"),
        // Exact is exact: case matters in values.
        (vec![("x-env", "Canary"), auth], "fallback"),
        (vec![("x-env", "prod"), auth], "fallback"),
        (vec![("x-version", "v2"), auth], "v2"),
        (vec![("x-version", "v2.7"), auth], "v2"),
        (vec![("x-version", "v2-beta"), auth], "fallback"),
        (vec![("x-version", "v3"), auth], "fallback"),
        (vec![("x-debug", "1"), auth], "debug"),
        // Header names match case-insensitively.
        (vec![("X-DEBUG", "yes"), auth], "debug"),
        // Both canary and debug hold: the earlier route wins.
        (vec![("x-debug", "1"), ("x-env", "canary"), auth], "canary"),
        // Absent: no Authorization header.
        (vec![], "anon"),
        (vec![auth], "fallback"),
    ];
    for (headers, expected) in cases {
        let res = get_with(addr, "/h", &headers).await;
        assert_eq!(res.status, 200, "{headers:?}");
        assert_eq!(who(&res), expected, "{headers:?}");
    }
    assert_eq!(writes.requests().len(), 2);
    assert!(writes
        .requests()
        .iter()
        .all(|r| r.method == "POST" || r.method == "PUT"));
    assert_eq!(canary.requests().len(), 2);
    assert_eq!(v2.requests().len(), 2);
    assert_eq!(debug.requests().len(), 2);
    assert_eq!(anon.requests().len(), 1);
    assert!(!anon.requests()[0].headers.contains_key("authorization"));
}

#[tokio::test]
async fn unmatched_request_gets_404_no_route_and_reaches_no_upstream() {
    let up = Upstream::start("only").await;
    let toml = [
        base_toml(),
        cluster("c", &[&up], ""),
        route(
            "api",
            "c",
            "hosts = [\"api.example.com\"]\npath_prefix = \"/api\"\nmethods = [\"GET\"]",
        ),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("main");

    for (method, host, path) in [
        ("GET", "other.example.com", "/api/x"),
        ("GET", "api.example.com", "/admin"),
        ("POST", "api.example.com", "/api/x"),
        ("GET", "localhost", "/api/x"),
    ] {
        let res = send(addr, method, host, path, &[]).await;
        assert_eq!(res.status, 404, "{method} {host}{path}");
        assert_eq!(res.header("content-type"), Some("application/json"));
        let body = res.json();
        assert_eq!(body["error"], "no_route", "{body}");
        assert!(body["message"].is_string(), "{body}");
        assert_eq!(res.header("server"), Some("warden"));
    }
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    // The route itself works.
    let res = send(addr, "GET", "api.example.com", "/api/x", &[]).await;
    assert_eq!((res.status, who(&res).as_str()), (200, "only"));
}

#[tokio::test]
async fn rewrite_prefix_changes_the_forwarded_path() {
    let up = Upstream::start("svc").await;
    let toml = [
        base_toml(),
        cluster("c", &[&up], ""),
        route(
            "api",
            "c",
            "path_prefix = \"/api/\"\nrewrite_prefix = \"/v1/\"",
        ),
        route(
            "legacy",
            "c",
            "path_prefix = \"/legacy\"\nrewrite_prefix = \"/\"",
        ),
        route(
            "svc",
            "c",
            "path_prefix = \"/svc\"\nrewrite_prefix = \"/internal/svc\"",
        ),
        route("plain", "c", "path_prefix = \"/\""),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("main");

    let cases = [
        ("/api/users?id=7", "/v1/users?id=7"),
        ("/legacy/x/y", "/x/y"),
        ("/legacy", "/"),
        ("/svc/a", "/internal/svc/a"),
        ("/plain/kept", "/plain/kept"),
    ];
    for (path, _) in cases {
        let res = get_with(addr, path, &[]).await;
        assert_eq!(res.status, 200, "{path}");
    }
    let got: Vec<String> = up.requests().into_iter().map(|r| r.uri).collect();
    let want: Vec<&str> = cases.iter().map(|(_, w)| *w).collect();
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------------------------
// 2. Load balancing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn round_robin_spreads_requests_evenly() {
    let ups = [
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    ];
    let toml = [
        base_toml(),
        cluster(
            "rr",
            &[&ups[0], &ups[1], &ups[2]],
            "load_balancer = \"round_robin\"",
        ),
        route("r", "rr", "path_prefix = \"/\""),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..30 {
        let res = get_with(gw.addr("main"), &format!("/n/{i}"), &[]).await;
        assert_eq!(res.status, 200);
        *seen.entry(who(&res)).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = [
        ("a".to_owned(), 10),
        ("b".to_owned(), 10),
        ("c".to_owned(), 10),
    ]
    .into();
    assert_eq!(seen, want);
    for u in &ups {
        assert_eq!(u.requests().len(), 10, "upstream {}", u.name());
    }
}

#[tokio::test]
async fn consistent_hash_sends_a_header_value_to_the_same_endpoint() {
    let ups = [
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    ];
    let toml = [
        base_toml(),
        cluster(
            "ch",
            &[&ups[0], &ups[1], &ups[2]],
            "load_balancer = \"consistent_hash\"\nhash_header = \"x-user\"",
        ),
        route("r", "ch", "path_prefix = \"/\""),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("main");
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    // Interleave users so that stickiness cannot come from request order.
    for round in 0..3 {
        for u in 0..20 {
            let user = format!("user-{u}");
            let res = get_with(addr, "/cart", &[("x-user", &user)]).await;
            assert_eq!(res.status, 200);
            let got = who(&res);
            match owner.get(&user) {
                Some(first) => assert_eq!(&got, first, "{user} moved in round {round}"),
                None => {
                    owner.insert(user, got);
                }
            }
        }
    }
    let distinct: std::collections::BTreeSet<&String> = owner.values().collect();
    assert!(distinct.len() > 1, "20 users all hashed to {distinct:?}");
    // Each upstream saw exactly the users it owns, three times each.
    for up in &ups {
        let mut users: Vec<String> = up
            .requests()
            .iter()
            .map(|r| r.headers["x-user"].clone())
            .collect();
        users.sort();
        let mut want: Vec<String> = owner
            .iter()
            .filter(|(_, o)| o.as_str() == up.name())
            .flat_map(|(u, _)| std::iter::repeat_n(u.clone(), 3))
            .collect();
        want.sort();
        assert_eq!(users, want, "upstream {}", up.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_request_prefers_the_endpoint_that_is_not_busy() {
    let busy = Upstream::start("busy").await;
    let idle = Upstream::start("idle").await;
    busy.set(slow(500));
    let toml = [
        base_toml(),
        cluster("lr", &[&busy, &idle], "load_balancer = \"least_request\""),
        route("r", "lr", "path_prefix = \"/\""),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("main");

    // Concurrent bursts until the slow endpoint is holding at least two requests.
    let mut held = Vec::new();
    for _ in 0..20 {
        for _ in 0..4 {
            held.push(tokio::spawn(async move {
                get_with(addr, "/burst", &[]).await.status
            }));
        }
        let settled = eventually(Duration::from_secs(2), || {
            let n = busy.requests().len() + idle.requests().len();
            let target = held.len();
            async move { n >= target }
        })
        .await;
        assert!(settled, "burst requests did not arrive");
        if busy.requests().len() >= 2 {
            break;
        }
    }
    let busy_before = busy.requests().len();
    assert!(
        busy_before >= 2,
        "the slow endpoint never got two concurrent requests"
    );
    // Let the fast burst requests finish; the slow ones are held for 500 ms.
    tokio::time::sleep(Duration::from_millis(30)).await;

    // A random or round-robin choice would send about half of these to the busy endpoint.
    let mut to_idle = 0;
    for _ in 0..20 {
        let res = get_with(addr, "/new", &[]).await;
        assert_eq!(res.status, 200);
        if who(&res) == "idle" {
            to_idle += 1;
        }
    }
    assert!(
        to_idle >= 17,
        "only {to_idle} of 20 new requests went to the idle endpoint"
    );
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Health checks
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_take_endpoints_out_and_bring_them_back() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let hc = "[clusters.health_check]\ninterval = \"100ms\"\nunhealthy_threshold = 2\nhealthy_threshold = 2";
    let toml = [
        base_toml(),
        cluster("hc", &[&a, &b], hc),
        route("r", "hc", "path_prefix = \"/\""),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("main");
    assert_eq!(healthy_gauge(&gw, "hc", &a).await, Some(1));
    assert_eq!(healthy_gauge(&gw, "hc", &b).await, Some(1));

    // b fails its checks: it is taken out.
    b.set_health(500);
    let out = eventually(Duration::from_secs(5), || async {
        healthy_gauge(&gw, "hc", &b).await == Some(0)
    })
    .await;
    assert!(
        out,
        "b never reported unhealthy (checks received: {})",
        b.health_checks()
    );
    assert_eq!(healthy_gauge(&gw, "hc", &a).await, Some(1));
    a.clear();
    b.clear();
    for _ in 0..10 {
        let res = get_with(addr, "/", &[]).await;
        assert_eq!((res.status, who(&res).as_str()), (200, "a"));
    }
    assert_eq!(a.requests().len(), 10);
    assert!(b.requests().is_empty(), "an unhealthy endpoint got traffic");

    // b recovers: it comes back into the rotation.
    b.set_health(200);
    let back = eventually(Duration::from_secs(5), || async {
        healthy_gauge(&gw, "hc", &b).await == Some(1)
    })
    .await;
    assert!(back, "b never came back");
    let mut to_b = 0;
    for _ in 0..10 {
        let res = get_with(addr, "/", &[]).await;
        assert_eq!(res.status, 200);
        if who(&res) == "b" {
            to_b += 1;
        }
    }
    assert_eq!(to_b, 5, "round robin over two healthy endpoints");

    // Everything unhealthy: the gateway answers itself.
    a.set_health(500);
    b.set_health(500);
    let all_out = eventually(Duration::from_secs(5), || async {
        healthy_gauge(&gw, "hc", &a).await == Some(0)
            && healthy_gauge(&gw, "hc", &b).await == Some(0)
    })
    .await;
    assert!(all_out, "endpoints never reported unhealthy");
    a.clear();
    b.clear();
    let res = get_with(addr, "/", &[]).await;
    assert_eq!(res.status, 503);
    assert_eq!(error_code(&res), "no_healthy_upstream");
    assert!(res.header("retry-after").is_some(), "{:?}", res.headers);
    assert!(a.requests().is_empty() && b.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 4. Forwarding hygiene
// ---------------------------------------------------------------------------------------------

async fn echo_gateway(extra: &str) -> (Upstream, Gateway) {
    let up = Upstream::start("echo").await;
    let toml = [
        base_toml(),
        extra.to_owned(),
        cluster("c", &[&up], ""),
        route("r", "c", "path_prefix = \"/\""),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    (up, gw)
}

#[tokio::test]
async fn hop_by_hop_request_headers_never_reach_the_upstream() {
    let (up, gw) = echo_gateway("").await;
    let res = get_with(
        gw.addr("main"),
        "/hop",
        &[
            ("connection", "x-hop"),
            ("x-hop", "secret"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
        ],
    )
    .await;
    assert_eq!(res.status, 200);
    let got = up.requests();
    assert_eq!(got.len(), 1);
    let h = &got[0].headers;
    for name in [
        "x-hop",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(!h.contains_key(name), "{name} reached the upstream: {h:?}");
    }
    assert!(
        !h.get("connection").is_some_and(|v| v.contains("x-hop")),
        "{h:?}"
    );
    assert_eq!(h.get("x-kept").map(String::as_str), Some("yes"));
}

#[tokio::test]
async fn hop_by_hop_response_headers_never_reach_the_client() {
    let (up, gw) = echo_gateway("").await;
    up.set(Behaviour {
        headers: vec![
            ("connection".into(), "x-resp-hop".into()),
            ("x-resp-hop".into(), "1".into()),
            ("keep-alive".into(), "timeout=5".into()),
            ("x-resp-kept".into(), "yes".into()),
        ],
        ..Behaviour::default()
    });
    let addr = gw.addr("main");
    let h1 = get_with(addr, "/", &[]).await;
    let h2 = client::send_h2c(
        addr,
        request("GET", "localhost", &format!("http://{addr}/"), &[]),
    )
    .await;
    assert_eq!(h2.version, http::Version::HTTP_2);
    for res in [h1, h2] {
        assert_eq!(res.status, 200);
        assert!(res.header("x-resp-hop").is_none(), "{:?}", res.headers);
        assert!(res.header("keep-alive").is_none(), "{:?}", res.headers);
        assert!(
            !res.header("connection")
                .is_some_and(|v| v.contains("x-resp-hop")),
            "{:?}",
            res.headers
        );
        assert_eq!(res.header("x-resp-kept"), Some("yes"));
    }
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_client_are_replaced() {
    let (up, gw) = echo_gateway("").await;
    let res = send(
        gw.addr("main"),
        "GET",
        "app.test:8080",
        "/",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.test"),
            ("forwarded", "for=6.6.6.6;proto=https"),
            ("x-real-ip", "6.6.6.6"),
        ],
    )
    .await;
    assert_eq!(res.status, 200);
    let h = &up.requests()[0].headers;
    assert_eq!(
        h.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(h.get("x-forwarded-proto").map(String::as_str), Some("http"));
    assert_eq!(
        h.get("x-forwarded-host").map(String::as_str),
        Some("app.test:8080")
    );
    assert!(!h.contains_key("forwarded"), "{h:?}");
    assert!(!h.contains_key("x-real-ip"), "{h:?}");
}

#[tokio::test]
async fn forwarded_headers_from_a_trusted_proxy_are_kept_and_extended() {
    let (up, gw) = echo_gateway("\n[forwarding]\ntrusted_proxies = [\"127.0.0.0/8\"]\n").await;
    let addr = gw.addr("main");
    let res = get_with(
        addr,
        "/",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(res.status, 200);
    let res = get_with(addr, "/", &[]).await;
    assert_eq!(res.status, 200);
    let got = up.requests();
    assert_eq!(
        got[0].headers.get("x-forwarded-for").map(String::as_str),
        Some("6.6.6.6, 127.0.0.1")
    );
    assert_eq!(
        got[0].headers.get("x-forwarded-proto").map(String::as_str),
        Some("https")
    );
    assert_eq!(
        got[1].headers.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(
        got[1].headers.get("x-forwarded-proto").map(String::as_str),
        Some("http")
    );
    assert_eq!(
        got[1].headers.get("x-forwarded-host").map(String::as_str),
        Some("localhost")
    );
}

#[tokio::test]
async fn request_id_is_kept_when_valid_and_generated_otherwise() {
    let (up, gw) = echo_gateway("").await;
    let addr = gw.addr("main");

    let res = get_with(addr, "/", &[("x-request-id", "client-id_1.2:3")]).await;
    assert_eq!(res.header("x-request-id"), Some("client-id_1.2:3"));
    assert_eq!(up.requests()[0].headers["x-request-id"], "client-id_1.2:3");

    let mut generated = Vec::new();
    for headers in [
        vec![],
        vec![("x-request-id", "bad id <script>")],
        vec![("x-request-id", "")],
    ] {
        up.clear();
        let res = get_with(addr, "/", &headers).await;
        assert_eq!(res.status, 200);
        let id = res.header("x-request-id").unwrap_or_default().to_owned();
        assert!(is_hex(&id, 32), "{headers:?}: response id {id:?}");
        assert_eq!(up.requests()[0].headers["x-request-id"], id, "{headers:?}");
        generated.push(id);
    }
    assert!(
        generated[0] != generated[1] && generated[1] != generated[2],
        "{generated:?}"
    );

    // Responses the gateway makes itself carry the id too.
    let res = get_with(addr, "/%zz", &[("x-request-id", "abc-123")]).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.header("x-request-id"), Some("abc-123"));
}

#[tokio::test]
async fn traceparent_is_continued_when_valid_and_replaced_when_not() {
    let (up, gw) = echo_gateway("").await;
    let addr = gw.addr("main");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";

    let parse = |tp: &str| -> (String, String, String, String) {
        let p: Vec<&str> = tp.split('-').collect();
        assert_eq!(p.len(), 4, "traceparent {tp:?}");
        (p[0].into(), p[1].into(), p[2].into(), p[3].into())
    };

    let valid = format!("00-{trace}-{parent}-01");
    let res = get_with(
        addr,
        "/",
        &[("traceparent", &valid), ("tracestate", "vendor=1")],
    )
    .await;
    assert_eq!(res.status, 200);
    let h = up.requests()[0].headers.clone();
    let (v, t, p, f) = parse(&h["traceparent"]);
    assert_eq!((v.as_str(), t.as_str(), f.as_str()), ("00", trace, "01"));
    assert!(
        is_hex(&p, 16) && p != parent && p != "0000000000000000",
        "parent id {p}"
    );
    assert_eq!(h.get("tracestate").map(String::as_str), Some("vendor=1"));

    for invalid in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "garbage",
    ] {
        up.clear();
        let res = get_with(
            addr,
            "/",
            &[("traceparent", invalid), ("tracestate", "vendor=1")],
        )
        .await;
        assert_eq!(res.status, 200);
        let h = up.requests()[0].headers.clone();
        let (v, t, p, _) = parse(&h["traceparent"]);
        assert_eq!(v, "00");
        assert!(
            is_hex(&t, 32) && t != "0".repeat(32) && !invalid.contains(&t),
            "{invalid}: trace id {t}"
        );
        assert!(is_hex(&p, 16) && p != parent, "{invalid}: parent id {p}");
        assert!(
            !h.contains_key("tracestate"),
            "{invalid}: tracestate kept: {h:?}"
        );
    }
}

#[tokio::test]
async fn server_header_is_always_warden() {
    let (up, gw) = echo_gateway("").await;
    up.set(Behaviour {
        headers: vec![("server".into(), "nginx/1.2.3".into())],
        ..Behaviour::default()
    });
    let res = get_with(gw.addr("main"), "/", &[]).await;
    assert_eq!(res.status, 200);
    let servers: Vec<_> = res.headers.get_all("server").iter().collect();
    assert_eq!(servers, ["warden"]);
}

// ---------------------------------------------------------------------------------------------
// 5. CORS
// ---------------------------------------------------------------------------------------------

const APP: &str = "https://app.example.com";

async fn cors_gateway() -> (Upstream, Gateway) {
    let up = Upstream::start("api").await;
    let cors = "path_prefix = \"/api\"\n[routes.cors]\nallowed_origins = [\"https://app.example.com\"]\n\
                allowed_methods = [\"GET\", \"POST\"]\nallowed_headers = [\"X-Token\", \"content-type\"]\n\
                exposed_headers = [\"x-total\"]\nallow_credentials = true\nmax_age = \"60s\"";
    let toml = [
        base_toml(),
        cluster("c", &[&up], ""),
        route("api", "c", cors),
        route(
            "open",
            "c",
            "path_prefix = \"/open\"\n[routes.cors]\nallowed_origins = [\"*\"]",
        ),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    (up, gw)
}

#[tokio::test]
async fn cors_preflight_is_answered_by_the_gateway() {
    let (up, gw) = cors_gateway().await;
    let res = send(
        gw.addr("main"),
        "OPTIONS",
        "localhost",
        "/api/items",
        &[
            ("origin", APP),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-token, Content-Type"),
        ],
    )
    .await;
    assert_eq!(res.status, 204, "{:?}", res.body);
    assert_eq!(res.header("access-control-allow-origin"), Some(APP));
    let methods = res
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .to_owned();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let headers = res
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        headers.contains("x-token") && headers.contains("content-type"),
        "{headers}"
    );
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(res.header("access-control-max-age"), Some("60"));
    assert!(
        res.header("vary").is_some_and(|v| v.contains("Origin")),
        "{:?}",
        res.headers
    );
    assert!(res.body.is_empty());
    assert!(
        up.requests().is_empty(),
        "preflight reached the upstream: {:?}",
        up.requests()
    );
}

#[tokio::test]
async fn cors_preflight_outside_the_policy_gets_403() {
    let (up, gw) = cors_gateway().await;
    let addr = gw.addr("main");
    let cases: [&[(&str, &str)]; 3] = [
        &[
            ("origin", "https://evil.example.com"),
            ("access-control-request-method", "GET"),
        ],
        &[("origin", APP), ("access-control-request-method", "DELETE")],
        &[
            ("origin", APP),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-token, x-evil"),
        ],
    ];
    for headers in cases {
        let res = send(addr, "OPTIONS", "localhost", "/api/items", headers).await;
        assert_eq!(res.status, 403, "{headers:?}");
        assert_eq!(error_code(&res), "cors_rejected", "{headers:?}");
        assert!(
            res.header("access-control-allow-origin").is_none(),
            "{headers:?}"
        );
    }
    assert!(
        up.requests().is_empty(),
        "a refused preflight reached the upstream: {:?}",
        up.requests()
    );
}

#[tokio::test]
async fn cors_actual_requests_get_headers_only_for_allowed_origins() {
    let (up, gw) = cors_gateway().await;
    let addr = gw.addr("main");

    let res = get_with(addr, "/api/items", &[("origin", APP)]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("access-control-allow-origin"), Some(APP));
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(res.header("access-control-expose-headers"), Some("x-total"));
    assert!(res
        .headers
        .get_all("vary")
        .iter()
        .any(|v| v.to_str().unwrap_or("").contains("Origin")));

    let res = get_with(
        addr,
        "/api/items",
        &[("origin", "https://evil.example.com")],
    )
    .await;
    assert_eq!(res.status, 200);
    assert!(
        res.header("access-control-allow-origin").is_none(),
        "{:?}",
        res.headers
    );
    assert!(
        res.header("access-control-allow-credentials").is_none(),
        "{:?}",
        res.headers
    );
    assert!(
        res.header("access-control-expose-headers").is_none(),
        "{:?}",
        res.headers
    );

    // Any origin, no credentials: the wildcard is sent.
    let res = get_with(addr, "/open", &[("origin", "https://anyone.test")]).await;
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    assert!(res.header("access-control-allow-credentials").is_none());

    // Actual requests (unlike preflights) do reach the upstream, Origin included.
    let got = up.requests();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].headers.get("origin").map(String::as_str), Some(APP));
}

#[tokio::test]
async fn cors_headers_from_the_upstream_never_widen_the_route_policy() {
    let (up, gw) = cors_gateway().await;
    up.set(Behaviour {
        headers: vec![
            ("access-control-allow-origin".into(), "*".into()),
            ("access-control-allow-credentials".into(), "true".into()),
        ],
        ..Behaviour::default()
    });
    let res = get_with(
        gw.addr("main"),
        "/api/items",
        &[("origin", "https://evil.example.com")],
    )
    .await;
    assert_eq!(res.status, 200);
    assert!(
        res.header("access-control-allow-origin").is_none(),
        "{:?}",
        res.headers
    );
    assert!(
        res.header("access-control-allow-credentials").is_none(),
        "{:?}",
        res.headers
    );
    let res = get_with(gw.addr("main"), "/api/items", &[("origin", APP)]).await;
    assert_eq!(res.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        res.headers
            .get_all("access-control-allow-origin")
            .iter()
            .count(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// 6. IP rules
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ip_rules_allow_and_deny_by_client_address() {
    let up = Upstream::start("up").await;
    let toml = [
        base_toml(),
        cluster("c", &[&up], ""),
        route("deny", "c", "path_prefix = \"/deny\"\ndeny_cidrs = [\"127.0.0.1/32\"]"),
        route("allow10", "c", "path_prefix = \"/allow10\"\nallow_cidrs = [\"10.0.0.0/8\"]"),
        route("allow127", "c", "path_prefix = \"/allow127\"\nallow_cidrs = [\"127.0.0.0/8\"]"),
        route(
            "both",
            "c",
            "path_prefix = \"/both\"\nallow_cidrs = [\"127.0.0.0/8\"]\ndeny_cidrs = [\"127.0.0.1\"]",
        ),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("main");

    for path in ["/deny", "/allow10", "/both"] {
        let res = get_with(addr, path, &[]).await;
        assert_eq!(res.status, 403, "{path}");
        assert_eq!(error_code(&res), "forbidden", "{path}");
    }
    // Without trusted proxies, a client cannot claim another address.
    let res = get_with(addr, "/allow10", &[("x-forwarded-for", "10.1.2.3")]).await;
    assert_eq!(res.status, 403);
    assert!(
        up.requests().is_empty(),
        "a refused request reached the upstream: {:?}",
        up.requests()
    );

    let res = get_with(addr, "/allow127", &[]).await;
    assert_eq!((res.status, who(&res).as_str()), (200, "up"));
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn ip_rules_use_the_forwarded_client_behind_trusted_proxies() {
    let up = Upstream::start("up").await;
    let toml = [
        base_toml(),
        "\n[forwarding]\ntrusted_proxies = [\"127.0.0.0/8\"]\n".to_owned(),
        cluster("c", &[&up], ""),
        route(
            "internal",
            "c",
            "path_prefix = \"/internal\"\nallow_cidrs = [\"10.0.0.0/8\"]",
        ),
        route(
            "blocked",
            "c",
            "path_prefix = \"/blocked\"\ndeny_cidrs = [\"6.6.6.0/24\"]",
        ),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("main");

    let cases: [(&str, Option<&str>, u16); 6] = [
        ("/internal", Some("10.1.2.3"), 200),
        // The right-most address that is not a trusted proxy is the client.
        ("/internal", Some("10.1.2.3, 127.0.0.5"), 200),
        ("/internal", Some("6.6.6.6"), 403),
        ("/internal", None, 403),
        ("/blocked", Some("6.6.6.6"), 403),
        ("/blocked", Some("10.1.2.3"), 200),
    ];
    for (path, xff, status) in cases {
        let headers: Vec<(&str, &str)> = xff.map(|v| ("x-forwarded-for", v)).into_iter().collect();
        let res = get_with(addr, path, &headers).await;
        assert_eq!(res.status, status, "{path} XFF {xff:?}");
        if status == 403 {
            assert_eq!(error_code(&res), "forbidden");
        }
    }
    assert_eq!(up.requests().len(), 3);
}

// ---------------------------------------------------------------------------------------------
// 7. Timeouts and failures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn upstream_slower_than_response_timeout_gets_504() {
    let up = Upstream::start("slow").await;
    up.set(slow(3000));
    let toml = [
        base_toml(),
        cluster("c", &[&up], "response_timeout = \"300ms\""),
        route("r", "c", "path_prefix = \"/\""),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    let started = Instant::now();
    let res = get_with(gw.addr("main"), "/", &[]).await;
    let took = started.elapsed();
    assert_eq!(res.status, 504);
    assert_eq!(error_code(&res), "gateway_timeout");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(2000),
        "took {took:?}"
    );
    assert_eq!(
        up.requests().len(),
        1,
        "the request was sent, then given up on"
    );
}

#[tokio::test]
async fn refused_connection_gets_502() {
    // A port nothing listens on: bind one, note it, close it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = format!(
        "{}\n[[clusters]]\nname = \"c\"\nendpoints = [\"http://{dead}\"]\n{}",
        base_toml(),
        route("r", "c", "path_prefix = \"/\"")
    );
    let gw = Gateway::start(&toml).await;
    let res = get_with(gw.addr("main"), "/", &[]).await;
    assert_eq!(res.status, 502);
    assert_eq!(error_code(&res), "bad_gateway");
    let body = String::from_utf8_lossy(&res.body);
    assert!(
        !body.contains(&dead.port().to_string()),
        "upstream address leaked: {body}"
    );
}

#[tokio::test]
async fn route_timeout_shorter_than_upstream_delay_gets_504() {
    let up = Upstream::start("slow").await;
    up.set(slow(700));
    let toml = [
        base_toml(),
        cluster("c", &[&up], ""),
        route(
            "short",
            "c",
            "path_prefix = \"/short\"\ntimeout = \"200ms\"",
        ),
        route("default", "c", "path_prefix = \"/\""),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("main");
    let started = Instant::now();
    let res = get_with(addr, "/short", &[]).await;
    let took = started.elapsed();
    assert_eq!(res.status, 504);
    assert_eq!(error_code(&res), "gateway_timeout");
    assert!(
        took < Duration::from_millis(650),
        "took {took:?}: the route timeout was not applied"
    );
    // The same upstream is fine for a route with the default timeout.
    let res = get_with(addr, "/long", &[]).await;
    assert_eq!(res.status, 200);
}

// ---------------------------------------------------------------------------------------------
// 8. Protections
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_in_flight_refuses_excess_requests_at_once() {
    let up = Upstream::start("slow").await;
    up.set(slow(800));
    let toml = [
        base_toml(),
        "\n[server]\nmax_in_flight = 2\n".to_owned(),
        cluster("c", &[&up], ""),
        route("r", "c", "path_prefix = \"/\""),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("main");
    let first: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get_with(addr, "/slow", &[]).await.status }))
        .collect();
    assert!(
        eventually(Duration::from_secs(2), || async {
            up.requests().len() == 2
        })
        .await,
        "the first two requests did not reach the upstream"
    );
    let started = Instant::now();
    let res = get_with(addr, "/third", &[]).await;
    let took = started.elapsed();
    assert_eq!(res.status, 503);
    assert_eq!(error_code(&res), "overloaded");
    assert!(res.header("retry-after").is_some());
    assert!(took < Duration::from_millis(400), "refusal took {took:?}");
    for f in first {
        assert_eq!(f.await.unwrap(), 200);
    }
    assert_eq!(
        up.requests().len(),
        2,
        "the refused request reached the upstream"
    );
    // Slots are released once the responses are done.
    up.set(Behaviour::default());
    let ok = eventually(Duration::from_secs(2), || async {
        get_with(addr, "/after", &[]).await.status == 200
    })
    .await;
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_connections_refuses_a_third_connection() {
    use tokio::io::AsyncWriteExt;
    let (up, gw) = echo_gateway("\n[server]\nmax_connections = 2\n").await;
    let addr = gw.addr("main");
    let req = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    // Two keep-alive connections, each proven accepted by a served request.
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req).await.unwrap();
        let got = raw::read_all(&mut s, Duration::from_millis(200)).await;
        assert_eq!(raw::statuses(&got), [200], "{got}");
        open.push(s);
    }
    let started = Instant::now();
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = third.write_all(req).await;
    let got = raw::read_all(&mut third, Duration::from_secs(3)).await;
    let took = started.elapsed();
    assert_eq!(raw::statuses(&got), [503], "{got}");
    assert!(got.contains("\"overloaded\""), "{got}");
    assert!(
        took < Duration::from_secs(2),
        "the refused connection was not closed (took {took:?})"
    );
    assert_eq!(up.requests().len(), 2);

    // Closing one frees a slot (once the gateway has seen it close; until then, new
    // connections are still refused, so poll with raw bytes).
    drop(open.remove(0));
    let close = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let ok = eventually(Duration::from_secs(3), || async {
        raw::statuses(&raw::exchange(addr, close, Duration::from_secs(1)).await) == [200]
    })
    .await;
    assert!(ok, "a slot was not freed when a connection closed");
}

#[tokio::test]
async fn security_headers_global_route_override_and_upstream_values() {
    let plain = Upstream::start("plain").await;
    let own = Upstream::start("own").await;
    own.set(Behaviour {
        headers: vec![
            ("x-frame-options".into(), "DENY".into()),
            ("referrer-policy".into(), "origin".into()),
        ],
        ..Behaviour::default()
    });
    let global = "\n[security_headers]\nreferrer_policy = \"strict-origin-when-cross-origin\"\n\
                  frame_options = \"SAMEORIGIN\"\nextra = { \"permissions-policy\" = \"geolocation=()\" }\n";
    let override_ = "path_prefix = \"/custom\"\n[routes.security_headers]\ncontent_type_options = false\n\
                     referrer_policy = \"same-origin\"\nframe_options = \"\"\nextra = { \"x-route-policy\" = \"on\" }";
    let toml = [
        base_toml(),
        global.to_owned(),
        cluster("plain", &[&plain], ""),
        cluster("own", &[&own], ""),
        route("custom", "plain", override_),
        route("own", "own", "path_prefix = \"/own\""),
        route("plain", "plain", "path_prefix = \"/plain\""),
    ]
    .concat();
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("main");

    // Global set, on proxied responses and on the gateway's own (404) responses.
    for path in ["/plain", "/nowhere"] {
        let res = get_with(addr, path, &[]).await;
        assert_eq!(
            res.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            res.header("referrer-policy"),
            Some("strict-origin-when-cross-origin"),
            "{path}"
        );
        assert_eq!(res.header("x-frame-options"), Some("SAMEORIGIN"), "{path}");
        assert_eq!(
            res.header("permissions-policy"),
            Some("geolocation=()"),
            "{path}"
        );
        assert!(res.header("x-route-policy").is_none(), "{path}");
        // HSTS only on TLS listeners.
        assert!(res.header("strict-transport-security").is_none(), "{path}");
    }

    // The route's set replaces the global one entirely.
    let res = get_with(addr, "/custom", &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("referrer-policy"), Some("same-origin"));
    assert_eq!(res.header("x-route-policy"), Some("on"));
    assert!(
        res.header("x-content-type-options").is_none(),
        "{:?}",
        res.headers
    );
    assert!(res.header("x-frame-options").is_none(), "{:?}", res.headers);
    assert!(
        res.header("permissions-policy").is_none(),
        "{:?}",
        res.headers
    );

    // What the upstream set is kept, not overwritten nor doubled.
    let res = get_with(addr, "/own", &[]).await;
    assert_eq!(res.status, 200);
    let xfo: Vec<_> = res.headers.get_all("x-frame-options").iter().collect();
    assert_eq!(xfo, ["DENY"]);
    let rp: Vec<_> = res.headers.get_all("referrer-policy").iter().collect();
    assert_eq!(rp, ["origin"]);
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
}
