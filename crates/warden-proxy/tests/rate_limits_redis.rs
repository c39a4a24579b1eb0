//! Rate limits kept in Redis: several gateways share one limit, leasing stays within its
//! documented overshoot, and a Redis outage is met as configured (each gateway's local share
//! of the limit, closed, or unlimited), within the store's timeout, with limiting resuming
//! when Redis returns.
//!
//! Needs `WARDEN_TEST_REDIS_URL` (CI: `redis://127.0.0.1:6379`); each test is skipped, with a
//! notice, when it is not set. The outage test runs its own `redis-server`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use warden_test_util::redis::{test_url, unique_prefix, RedisServer};
use warden_test_util::{base_toml, client, Gateway, Upstream};

/// A config with the store and the given routes (each `(name, path, limit lines)`).
fn config(
    up: &Upstream,
    redis_url: &str,
    prefix: &str,
    timeout: &str,
    routes: &[(&str, &str, &str)],
) -> String {
    let mut out = format!(
        "{}\n[rate_limit_store]\nredis_url = \"{redis_url}\"\nkey_prefix = \"{prefix}\"\ntimeout = \"{timeout}\"\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n",
        base_toml(),
        up.url()
    );
    for (name, path, limit) in routes {
        out.push_str(&format!(
            "[[routes]]\nname = \"{name}\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"{path}\"\n[[routes.rate_limits]]\nstore = \"redis\"\n{limit}\n"
        ));
    }
    out
}

async fn get(gw: &Gateway, path: &str) -> client::Answer {
    let req = Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    client::send_h1(gw.addr("main"), req).await
}

async fn metrics(gw: &Gateway) -> String {
    let res = client::get(gw.admin(), "/metrics").await;
    String::from_utf8_lossy(&res.body).into_owned()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Sends `per_gateway` requests to each gateway, all at once; returns (admitted, refused,
/// elapsed).
async fn drive(gws: &[Gateway], per_gateway: usize) -> (usize, usize, Duration) {
    let addrs: Vec<_> = gws.iter().map(|g| g.addr("main")).collect();
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..per_gateway {
        for addr in &addrs {
            let addr = *addr;
            set.spawn(async move {
                let req = Request::get(format!("/x/{i}"))
                    .header("host", "localhost")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                client::send_h1(addr, req).await.status
            });
        }
    }
    let (mut ok, mut limited) = (0, 0);
    while let Some(status) = set.join_next().await {
        match status.expect("request task") {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    (ok, limited, start.elapsed())
}

/// Three gateways, one Redis limit of 100 per 10 s (burst 100), driven concurrently.
async fn shared_limit_run(url: &str, test: &str, lease: u32) -> (usize, usize, Duration) {
    let up = Upstream::start("u").await;
    let prefix = unique_prefix(test);
    // Fail closed: a store failure can then only lower the count, never pass for accuracy.
    let limit = format!(
        "key = \"route\"\nrequests = 100\nper = \"10s\"\nburst = 100\nlease = {lease}\non_store_failure = \"closed\""
    );
    let toml = config(&up, url, &prefix, "500ms", &[("api", "/", &limit)]);
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(Gateway::start(&toml).await);
    }
    let result = drive(&gws, 100).await;
    for gw in &gws {
        let text = metrics(gw).await;
        assert_eq!(
            metric(
                &text,
                "warden_rate_limit_store_errors_total{result=\"closed\"}"
            ),
            0.0,
            "the store answered every decision"
        );
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_one_limit_within_two_percent() {
    let Some(url) = test_url("three_gateways_share_one_limit_within_two_percent") else {
        return;
    };
    // GCRA refills one request per 100 ms: whatever the run's length allows on top of the
    // burst is no error, so it is allowed for (and printed).
    let (ok, limited, elapsed) = shared_limit_run(&url, "share", 0).await;
    let refill = (elapsed.as_millis() / 100) as usize;
    println!(
        "no lease: {ok} admitted, {limited} refused of 300 across 3 gateways in {elapsed:?} (refill allowance {refill})"
    );
    assert!(ok >= 100, "admitted {ok} < 100");
    assert!(ok <= 102 + refill, "admitted {ok} > 102 + {refill}");

    let (ok, limited, elapsed) = shared_limit_run(&url, "share-lease", 5).await;
    let refill = (elapsed.as_millis() / 100) as usize;
    println!(
        "lease 5: {ok} admitted, {limited} refused of 300 across 3 gateways in {elapsed:?} (bound 100 + 3 × 5, refill allowance {refill})"
    );
    assert!(ok >= 100, "admitted {ok} < 100");
    assert!(ok <= 100 + 3 * 5 + refill, "admitted {ok} > 115 + {refill}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_limits_answer_429_with_retry_after_and_ratelimit_headers() {
    let Some(url) = test_url("redis_limits_answer_429_with_retry_after_and_ratelimit_headers")
    else {
        return;
    };
    let up = Upstream::start("u").await;
    let prefix = unique_prefix("headers");
    let gw = Gateway::start(&config(
        &up,
        &url,
        &prefix,
        "500ms",
        &[(
            "api",
            "/",
            "key = \"client_ip\"\nrequests = 5\nper = \"10s\"\nburst = 5",
        )],
    ))
    .await;
    for i in 0..5 {
        let res = get(&gw, "/x").await;
        assert_eq!(res.status, 200, "request {i}");
        assert_eq!(res.header("ratelimit-policy"), Some("\"0\";q=5;w=10"));
        let rl = res.header("ratelimit").unwrap();
        assert!(rl.starts_with(&format!("\"0\";r={};t=", 4 - i)), "{rl}");
        let t: u64 = rl.rsplit("t=").next().unwrap().parse().unwrap();
        assert!(
            (1..=2).contains(&t),
            "one request comes back every 2 s: {rl}"
        );
    }
    let res = get(&gw, "/x").await;
    assert_eq!(res.status, 429);
    assert_eq!(res.json()["error"], "rate_limited");
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    assert_eq!(res.header("ratelimit-policy"), Some("\"0\";q=5;w=10"));
    assert_eq!(
        res.header("ratelimit"),
        Some(format!("\"0\";r=0;t={retry}").as_str()),
        "t says what Retry-After says"
    );
    assert_eq!(
        up.requests().len(),
        5,
        "the refused request never reached the upstream"
    );
    let text = metrics(&gw).await;
    assert!(
        text.contains("warden_rate_limited_requests_total{route=\"api\",key=\"client_ip\"} 1"),
        "{text}"
    );
    assert_eq!(metric(&text, "warden_rate_limit_store_up"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_open_or_closed_within_the_timeout_and_limiting_resumes() {
    let test = "redis_outage_fails_open_or_closed_within_the_timeout_and_limiting_resumes";
    if test_url(test).is_none() {
        return;
    }
    let Some(mut redis) = RedisServer::start(test).await else {
        return;
    };
    let up = Upstream::start("u").await;
    let limit = |mode: &str| {
        format!("key = \"route\"\nrequests = 5\nper = \"10s\"\nburst = 5\non_store_failure = \"{mode}\"")
    };
    let (open, closed) = (limit("unlimited"), limit("closed"));
    let gw = Gateway::start(&config(
        &up,
        &redis.url(),
        &unique_prefix("outage"),
        "20ms",
        &[("open", "/open", &open), ("closed", "/closed", &closed)],
    ))
    .await;

    // Redis up: both routes limited at 5.
    for path in ["/open", "/closed"] {
        let codes: Vec<u16> = burst(&gw, path, 6).await;
        assert_eq!(
            codes,
            [200, 200, 200, 200, 200, 429],
            "{path} with Redis up"
        );
    }

    // Redis gone: unlimited lets everything through, closed refuses everything, both at once.
    redis.kill();
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        for (path, want) in [("/open", 200), ("/closed", 429)] {
            let t = Instant::now();
            let res = get(&gw, path).await;
            let took = t.elapsed();
            slowest = slowest.max(took);
            assert_eq!(res.status, want, "{path} request {i} during the outage");
            assert!(
                took < Duration::from_millis(100),
                "{path} request {i} took {took:?}"
            );
            if want == 429 {
                assert_eq!(res.header("retry-after"), Some("1"));
                assert!(res.header("ratelimit").is_some());
            }
        }
    }
    println!("slowest request during the outage: {slowest:?} (store timeout 20 ms)");
    let text = metrics(&gw).await;
    assert!(
        metric(
            &text,
            "warden_rate_limit_store_errors_total{result=\"open\"}"
        ) >= 10.0
    );
    assert!(
        metric(
            &text,
            "warden_rate_limit_store_errors_total{result=\"closed\"}"
        ) >= 10.0
    );
    assert_eq!(metric(&text, "warden_rate_limit_store_up"), 0.0);

    // Redis back (empty): limiting resumes within a few seconds.
    redis.restart().await;
    let back = Instant::now();
    loop {
        let codes = burst(&gw, "/open", 6).await;
        if codes.contains(&429) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "limiting did not resume within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "limiting resumed {:?} after Redis came back",
        back.elapsed()
    );
    assert_eq!(
        burst(&gw, "/closed", 6).await,
        [200, 200, 200, 200, 200, 429],
        "closed route limited again, not refused"
    );
    assert_eq!(
        metric(&metrics(&gw).await, "warden_rate_limit_store_up"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_at_most_the_timeout_then_fails_fast_until_it_answers() {
    let test = "a_hung_redis_costs_at_most_the_timeout_then_fails_fast_until_it_answers";
    if test_url(test).is_none() {
        return;
    }
    let Some(redis) = RedisServer::start(test).await else {
        return;
    };
    let up = Upstream::start("u").await;
    let limit =
        "key = \"route\"\nrequests = 10\nper = \"100s\"\nburst = 10\non_store_failure = \"closed\"";
    let gw = Gateway::start(&config(
        &up,
        &redis.url(),
        &unique_prefix("hung"),
        "20ms",
        &[("api", "/", limit)],
    ))
    .await;
    assert_eq!(get(&gw, "/x").await.status, 200, "Redis up");

    // Frozen: connections stay open and nothing answers. Each request waits at most the
    // timeout; after three timeouts in a row the store is down and requests fail at once.
    redis.pause();
    let mut took = Vec::new();
    for i in 0..10 {
        let t = Instant::now();
        let res = get(&gw, "/x").await;
        took.push(t.elapsed());
        assert_eq!(
            res.status, 429,
            "request {i} while Redis is hung (fail closed)"
        );
        assert_eq!(res.header("retry-after"), Some("1"));
    }
    println!("latencies while Redis is hung (timeout 20 ms): {took:?}");
    for (i, t) in took.iter().enumerate() {
        assert!(*t < Duration::from_millis(100), "request {i} took {t:?}");
    }
    for (i, t) in took.iter().enumerate().skip(3) {
        assert!(
            *t < Duration::from_millis(15),
            "request {i} took {t:?}: the store should be down by now, failing at once"
        );
    }

    // Thawed: the background reconnection finds it; limiting (not refusing) resumes.
    redis.resume();
    let back = Instant::now();
    while get(&gw, "/x").await.status != 200 {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "Redis-backed limiting did not resume within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("answering again {:?} after Redis resumed", back.elapsed());
    // The count went on in Redis: 2 admitted, plus the requests that timed out (Redis ran
    // them when it woke, though their answers came too late): at most 10 − 2 more now.
    let codes = burst(&gw, "/x", 10).await;
    let admitted = codes.iter().filter(|c| **c == 200).count();
    assert!((1..=8).contains(&admitted), "{codes:?}");
    assert_eq!(codes.last(), Some(&429), "{codes:?}");
}

async fn burst(gw: &Gateway, path: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(gw, path).await.status);
    }
    out
}

/// Two gateways share a tiered limit in Redis: a gold API key's 4 requests and a plain key's
/// 1 are counted across both, each tier in keys of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_are_shared_across_gateways_in_keys_of_their_own() {
    use std::collections::BTreeMap;
    use warden_auth::apikey;
    let Some(url) = test_url("tiers_are_shared_across_gateways_in_keys_of_their_own") else {
        return;
    };
    let up = Upstream::start("u").await;
    let prefix = unique_prefix("tiers");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    let now = warden_test_util::jwt::now();
    let gold_attrs = BTreeMap::from([("tier".to_owned(), "gold".to_owned())]);
    let (gold, gold_e) = apikey::generate("partner", vec![], None, gold_attrs, now);
    let (plain, plain_e) = apikey::generate("hobbyist", vec![], None, BTreeMap::new(), now);
    std::fs::write(&file, apikey::write_key_file(&[gold_e, plain_e])).unwrap();
    let toml = format!(
        "{}\n[auth.api_keys]\nfile = {:?}\n[rate_limit_store]\nredis_url = \"{url}\"\nkey_prefix = \"{prefix}\"\ntimeout = \"500ms\"\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"api\"\ncluster = \"c\"\npath_prefix = \"/\"\n[routes.auth]\naccept = [\"api_key\"]\n[[routes.rate_limits]]\nstore = \"redis\"\non_store_failure = \"closed\"\nkey = \"api_key\"\nrequests = 1\nper = \"60s\"\ntier_claim = \"tier\"\n[routes.rate_limits.tiers.gold]\nrequests = 4\n",
        base_toml(),
        file.display().to_string(),
        up.url()
    );
    let gws = [Gateway::start(&toml).await, Gateway::start(&toml).await];
    let mut admitted = BTreeMap::new();
    for (name, key) in [("gold", &gold), ("plain", &plain)] {
        for i in 0..8 {
            let req = Request::get("/x")
                .header("host", "localhost")
                .header("x-api-key", key.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap();
            let status = client::send_h1(gws[i % 2].addr("main"), req).await.status;
            assert!(status == 200 || status == 429, "status {status}");
            *admitted.entry(name).or_insert(0) += usize::from(status == 200);
        }
    }
    assert_eq!(
        admitted["gold"], 4,
        "the gold tier's 4, across both gateways"
    );
    assert_eq!(
        admitted["plain"], 1,
        "the limit's own 1, across both gateways"
    );
    // Redis holds one key per tier in use, named by route, limit, tier and key kind.
    let mut conn = std::net::TcpStream::connect(url.trim_start_matches("redis://")).unwrap();
    use std::io::{Read, Write};
    conn.write_all(format!("KEYS {prefix}*\r\n").as_bytes())
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let (gold_key, base_key) = (
        format!("{prefix}api:0:tier=gold:api_key:"),
        format!("{prefix}api:0:api_key:"),
    );
    // The reply may come in pieces: read until both keys are in it (or the timeout fails it).
    let mut reply = String::new();
    while !(reply.contains(&gold_key) && reply.contains(&base_key)) {
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).expect("the KEYS reply");
        assert!(n > 0, "Redis closed the connection; got {reply}");
        reply.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        !reply.contains("partner") && !reply.contains("hobbyist"),
        "{reply}"
    );
}

/// Requests to `path`, `n` to each gateway in turn (A, B, C, A, …), one at a time; the 200s
/// each gateway answered.
async fn round_robin(gws: &[Gateway], path: &str, n: usize) -> Vec<usize> {
    let mut ok = vec![0; gws.len()];
    for _ in 0..n {
        for (i, gw) in gws.iter().enumerate() {
            let status = get(gw, path).await.status;
            assert!(status == 200 || status == 429, "status {status}");
            ok[i] += usize::from(status == 200);
        }
    }
    ok
}

/// Fail-open must not mean unlimited. Three gateways (`gateways = 3`, the default
/// `on_store_failure`) share limits of 30 per 1000 s on a private `redis-server` that is then
/// frozen (SIGSTOP): a key Redis had exhausted stays exhausted on every gateway, a fresh key
/// gets each gateway's share (10) and no more, and once Redis is back, what a gateway admitted
/// during the stall is counted there (it is repaid before anything new is admitted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_leaves_each_gateway_limiting_at_its_share() {
    let test = "a_stalled_redis_leaves_each_gateway_limiting_at_its_share";
    if test_url(test).is_none() {
        return;
    }
    let Some(redis) = RedisServer::start(test).await else {
        return;
    };
    let up = Upstream::start("u").await;
    // One request per 33 s refills: nothing that matters while the test runs.
    let limit = "key = \"route\"\nrequests = 30\nper = \"1000s\"\nburst = 30";
    let toml = config(
        &up,
        &redis.url(),
        &unique_prefix("stall"),
        "20ms",
        &[("spent", "/spent", limit), ("fresh", "/fresh", limit)],
    )
    .replace("[rate_limit_store]\n", "[rate_limit_store]\ngateways = 3\n");
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(Gateway::start(&toml).await);
    }
    // Redis up: the fleet admits the limit, then refuses.
    let before = round_robin(&gws, "/spent", 14).await;
    assert_eq!(before.iter().sum::<usize>(), 30, "{before:?}");

    redis.pause();
    let spent = round_robin(&gws, "/spent", 15).await;
    let fresh = round_robin(&gws, "/fresh", 15).await;
    println!("during the stall: exhausted key {spent:?} admitted, fresh key {fresh:?}");
    assert_eq!(
        spent,
        [0, 0, 0],
        "a key Redis had exhausted stays exhausted while Redis is frozen"
    );
    assert_eq!(
        fresh,
        [10, 10, 10],
        "each gateway admits its share, no more"
    );
    for gw in &gws {
        let text = metrics(gw).await;
        assert!(
            metric(
                &text,
                "warden_rate_limit_store_errors_total{result=\"local\"}"
            ) >= 30.0
        );
        assert_eq!(metric(&text, "warden_rate_limit_store_up"), 0.0);
    }

    redis.resume();
    let back = Instant::now();
    while metric(&metrics(&gws[0]).await, "warden_rate_limit_store_up") != 1.0 {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "the store did not reconnect within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Redis never saw the fresh key's 30: the first gateway repays its 10 first, so of
    // Redis' 30 it admits 20 (plus at most one refilled), not 30.
    let after = burst(&gws[0], "/fresh", 40).await;
    let admitted = after.iter().filter(|c| **c == 200).count();
    println!("after the stall, gateway A on the fresh key: {admitted} admitted of 40");
    assert!((20..=21).contains(&admitted), "{after:?}");
}
