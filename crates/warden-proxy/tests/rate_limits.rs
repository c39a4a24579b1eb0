//! Per-route rate limits (GCRA): 429 with Retry-After and the RateLimit headers, keys by
//! client address, header or route, counters kept across reloads.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use warden_test_util::{base_toml, client, Gateway, Upstream};

fn config(up: &Upstream, limits: &str) -> String {
    format!(
        "{}\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"api\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/\"\n{limits}",
        base_toml(),
        up.url()
    )
}

/// A route `api` that takes JWTs from `iss`, with the given `[[routes.rate_limits]]` lines.
fn jwt_config(up: &Upstream, iss: &warden_test_util::jwt::TestIssuer, limits: &str) -> String {
    format!(
        r#"{}
[[auth.jwt]]
name = "t"
issuer = "{}"
audiences = ["api"]
algorithms = ["ES256"]
jwks_file = "{}"
[[clusters]]
name = "c"
endpoints = ["{}"]
[[routes]]
name = "api"
cluster = "c"
path_prefix = "/"
[routes.auth]
accept = ["jwt"]
{limits}"#,
        base_toml(),
        iss.iss,
        iss.jwks_file().display(),
        up.url()
    )
}

async fn get(gw: &Gateway, headers: &[(&str, &str)]) -> client::Answer {
    let mut b = Request::get("/x").header("host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    client::send_h1(gw.addr("main"), b.body(Full::new(Bytes::new())).unwrap()).await
}

#[tokio::test]
async fn a_client_over_its_burst_gets_429_with_retry_after_and_ratelimit_headers() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(
        &up,
        "[[routes.rate_limits]]\nkey = \"client_ip\"\nrequests = 5\nper = \"10s\"\nburst = 5\n",
    ))
    .await;
    for i in 0..5 {
        let res = get(&gw, &[]).await;
        assert_eq!(res.status, 200, "request {i}");
        assert_eq!(res.header("ratelimit-policy"), Some("\"0\";q=5;w=10"));
        // `t`: seconds until more quota comes. One request comes back every 2 s, however
        // far the bucket is from full (10 s after the fifth request).
        let rl = res.header("ratelimit").unwrap();
        assert!(rl.starts_with(&format!("\"0\";r={};t=", 4 - i)), "{rl}");
        let t: u64 = rl.rsplit("t=").next().unwrap().parse().unwrap();
        assert!((1..=2).contains(&t), "{rl}");
    }
    let res = get(&gw, &[]).await;
    assert_eq!(res.status, 429);
    assert_eq!(res.json()["error"], "rate_limited");
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
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
    let metrics = client::get(gw.admin(), "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("warden_rate_limited_requests_total{route=\"api\",key=\"client_ip\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn header_keys_are_counted_separately_and_missing_headers_share_a_bucket() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(
        &up,
        "[[routes.rate_limits]]\nkey = \"header:x-api-key\"\nrequests = 2\nper = \"1m\"\n",
    ))
    .await;
    for key in ["alice", "bob"] {
        assert_eq!(get(&gw, &[("x-api-key", key)]).await.status, 200);
        assert_eq!(get(&gw, &[("x-api-key", key)]).await.status, 200);
        assert_eq!(
            get(&gw, &[("x-api-key", key)]).await.status,
            429,
            "{key}'s third"
        );
    }
    assert_eq!(get(&gw, &[]).await.status, 200);
    assert_eq!(get(&gw, &[]).await.status, 200);
    assert_eq!(get(&gw, &[]).await.status, 429);
}

#[tokio::test]
async fn every_limit_must_pass_and_a_route_limit_is_shared_by_all_callers() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(
        &up,
        "[[routes.rate_limits]]\nkey = \"header:x-user\"\nrequests = 10\nper = \"1m\"\n[[routes.rate_limits]]\nkey = \"route\"\nrequests = 3\nper = \"1m\"\n",
    ))
    .await;
    let codes: Vec<u16> = futures_statuses(&gw, &["a", "b", "c", "d"]).await;
    assert_eq!(codes, [200, 200, 200, 429]);
    let res = get(&gw, &[("x-user", "e")]).await;
    assert_eq!(
        res.header("ratelimit-policy"),
        Some("\"1\";q=3;w=60"),
        "the route limit refused"
    );
}

async fn futures_statuses(gw: &Gateway, users: &[&str]) -> Vec<u16> {
    let mut out = Vec::new();
    for u in users {
        out.push(get(gw, &[("x-user", u)]).await.status);
    }
    out
}

#[tokio::test]
async fn counters_survive_a_reload_that_keeps_the_limit() {
    let up = Upstream::start("u").await;
    let limit = "[[routes.rate_limits]]\nkey = \"client_ip\"\nrequests = 1\nper = \"1m\"\n";
    let gw = Gateway::start(&config(&up, limit)).await;
    assert_eq!(get(&gw, &[]).await.status, 200);
    assert_eq!(get(&gw, &[]).await.status, 429);
    // Same limit, another change elsewhere: the client stays limited.
    gw.rewrite(&format!(
        "{}\n[forwarding]\nrequest_id_header = \"x-req\"\n",
        config(&up, limit)
    ));
    gw.handle.reload().await.expect("reload");
    assert_eq!(get(&gw, &[]).await.status, 429);
    // A changed limit starts afresh.
    gw.rewrite(&config(
        &up,
        "[[routes.rate_limits]]\nkey = \"client_ip\"\nrequests = 2\nper = \"1m\"\n",
    ));
    gw.handle.reload().await.expect("reload");
    assert_eq!(get(&gw, &[]).await.status, 200);
}

#[tokio::test]
async fn a_limit_that_cannot_be_built_is_a_reload_error_not_a_missing_limit() {
    let up = Upstream::start("u").await;
    let limit = "[[routes.rate_limits]]\nkey = \"client_ip\"\nrequests = 1\nper = \"1m\"\n";
    let gw = Gateway::start(&config(&up, limit)).await;
    assert_eq!(get(&gw, &[]).await.status, 200);
    // A burst so large that burst × interval overflows: refused, and the old limit stays.
    gw.rewrite(&config(
        &up,
        "[[routes.rate_limits]]\nkey = \"client_ip\"\nrequests = 1\nper = \"1d\"\nburst = 9223372036854775807\n",
    ));
    let err = gw
        .handle
        .reload()
        .await
        .expect_err("an overflowing limit must not load");
    assert!(
        err.errors
            .iter()
            .any(|e| e.starts_with("routes[0].rate_limits[0]:")),
        "{err:?}"
    );
    assert_eq!(
        get(&gw, &[]).await.status,
        429,
        "the running limit still applies"
    );
}

#[tokio::test]
async fn a_limit_keyed_by_subject_counts_each_caller_separately() {
    use warden_test_util::jwt::TestIssuer;
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let gw = Gateway::start(&jwt_config(
        &up,
        &iss,
        r#"[[routes.rate_limits]]
key = "subject"
requests = 2
per = "60s"
[[routes.rate_limits]]
key = "claim:tenant"
requests = 3
per = "60s"
"#,
    ))
    .await;
    let token = |sub: &str, tenant: &str| {
        let mut c = iss.claims(sub, "api", "");
        c["tenant"] = tenant.into();
        format!("Bearer {}", iss.token(&c))
    };
    let (alice, bob, carol) = (token("alice", "a"), token("bob", "a"), token("carol", "b"));
    let status = |t: &str| {
        let t = t.to_owned();
        let gw = &gw;
        async move { get(gw, &[("authorization", &t)]).await.status }
    };
    assert_eq!(status(&alice).await, 200);
    assert_eq!(status(&alice).await, 200);
    assert_eq!(
        status(&alice).await,
        429,
        "alice is over her own limit of 2"
    );
    assert_eq!(status(&bob).await, 200, "bob has his own subject bucket");
    assert_eq!(
        status(&bob).await,
        429,
        "tenant a has used its 3 (alice 2 + bob 1)"
    );
    assert_eq!(status(&carol).await, 200, "tenant b is separate");
    let metrics = client::get(gw.admin(), "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("warden_rate_limited_requests_total{route=\"api\",key=\"subject\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("warden_rate_limited_requests_total{route=\"api\",key=\"claim\"} 1"),
        "{text}"
    );
}

/// A JWT route whose limit (keyed by subject) has tiers chosen by the `plan` claim.
#[tokio::test]
async fn a_claim_selects_the_callers_tier_and_unknown_or_missing_tiers_get_the_default_limit() {
    use warden_test_util::jwt::TestIssuer;
    let up = Upstream::start("u").await;
    let iss = TestIssuer::new("https://issuer.test");
    let gw = Gateway::start(&jwt_config(
        &up,
        &iss,
        r#"[[routes.rate_limits]]
key = "subject"
requests = 2
per = "60s"
tier_claim = "plan"
[routes.rate_limits.tiers.gold]
requests = 4
[routes.rate_limits.tiers.free]
requests = 1
per = "1h"
"#,
    ))
    .await;
    let token = |sub: &str, plan: Option<&str>| {
        let mut c = iss.claims(sub, "api", "");
        if let Some(p) = plan {
            c["plan"] = p.into();
        }
        format!("Bearer {}", iss.token(&c))
    };
    // How many requests in a row each caller gets, and the policy it is told about.
    let run = |t: String| {
        let gw = &gw;
        async move {
            let mut admitted = 0;
            let mut policy = None;
            for _ in 0..10 {
                let res = get(gw, &[("authorization", &t)]).await;
                policy = res.header("ratelimit-policy").map(str::to_owned);
                match res.status {
                    200 => admitted += 1,
                    429 => break,
                    s => panic!("status {s}"),
                }
            }
            (admitted, policy.unwrap())
        }
    };
    assert_eq!(
        run(token("alice", Some("gold"))).await,
        (4, "\"0-gold\";q=4;w=60".to_owned())
    );
    assert_eq!(
        run(token("ann", Some("gold"))).await,
        (4, "\"0-gold\";q=4;w=60".to_owned()),
        "each gold subject has its own bucket"
    );
    assert_eq!(
        run(token("bob", Some("free"))).await,
        (1, "\"0-free\";q=1;w=3600".to_owned())
    );
    assert_eq!(
        run(token("carol", Some("platinum"))).await,
        (2, "\"0\";q=2;w=60".to_owned()),
        "a tier that is not configured gets the limit's own"
    );
    assert_eq!(
        run(token("dave", None)).await,
        (2, "\"0\";q=2;w=60".to_owned()),
        "no tier claim: the limit's own"
    );
    assert_eq!(
        run(token("carol", Some("gold"))).await,
        (4, "\"0-gold\";q=4;w=60".to_owned()),
        "tiers count in buckets of their own"
    );
    let metrics = client::get(gw.admin(), "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    for line in [
        "warden_rate_limited_requests_total{route=\"api\",key=\"subject\",tier=\"gold\"} 3",
        "warden_rate_limited_requests_total{route=\"api\",key=\"subject\",tier=\"free\"} 1",
        "warden_rate_limited_requests_total{route=\"api\",key=\"subject\",tier=\"default\"} 2",
    ] {
        assert!(text.contains(line), "missing {line} in {text}");
    }
    assert_eq!(up.requests().len(), 4 + 4 + 1 + 2 + 2 + 4);
}

#[tokio::test]
async fn an_api_key_attribute_selects_the_tier() {
    use std::collections::BTreeMap;
    use warden_auth::apikey;
    use warden_test_util::jwt::now;
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    let make = |owner: &str, tier: Option<&str>| {
        let attrs: BTreeMap<String, String> = tier
            .map(|t| ("tier".to_owned(), t.to_owned()))
            .into_iter()
            .collect();
        apikey::generate(owner, vec![], None, attrs, now())
    };
    let (gold, gold_e) = make("partner", Some("gold"));
    let (plain, plain_e) = make("hobbyist", None);
    std::fs::write(&file, apikey::write_key_file(&[gold_e, plain_e])).unwrap();
    let gw = Gateway::start(&format!(
        "{}\n[auth.api_keys]\nfile = {:?}\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"api\"\ncluster = \"c\"\npath_prefix = \"/\"\n[routes.auth]\naccept = [\"api_key\"]\n[[routes.rate_limits]]\nkey = \"api_key\"\nrequests = 1\nper = \"60s\"\ntier_claim = \"tier\"\n[routes.rate_limits.tiers.gold]\nrequests = 3\n",
        base_toml(),
        file.display().to_string(),
        up.url()
    ))
    .await;
    let statuses = |k: String| {
        let gw = &gw;
        async move {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(get(gw, &[("x-api-key", &k)]).await.status);
            }
            v
        }
    };
    assert_eq!(statuses(gold).await, [200, 200, 200, 429]);
    assert_eq!(statuses(plain).await, [200, 429, 429, 429]);
}

#[tokio::test]
async fn a_combined_key_counts_each_combination_of_values_separately() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(
        &up,
        "[[routes.rate_limits]]\nkey = [\"client_ip\", \"header:x-tenant\"]\nrequests = 2\nper = \"60s\"\n",
    ))
    .await;
    let mut seen = Vec::new();
    for tenant in ["a", "a", "a", "b", "b", "b", "ab", "", "", ""] {
        let headers: &[(&str, &str)] = if tenant.is_empty() {
            &[]
        } else {
            &[("x-tenant", tenant)]
        };
        seen.push(get(&gw, headers).await.status);
    }
    assert_eq!(
        seen,
        [200, 200, 429, 200, 200, 429, 200, 200, 200, 429],
        "tenants a, b, ab and none each have their own bucket from this address"
    );
    let metrics = client::get(gw.admin(), "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(
            "warden_rate_limited_requests_total{route=\"api\",key=\"client_ip+header\"} 3"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn combined_values_that_concatenate_alike_are_still_different_keys() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(
        &up,
        "[[routes.rate_limits]]\nkey = [\"header:x-a\", \"header:x-b\"]\nrequests = 1\nper = \"60s\"\n",
    ))
    .await;
    let ab_c = [("x-a", "ab"), ("x-b", "c")];
    let a_bc = [("x-a", "a"), ("x-b", "bc")];
    assert_eq!(get(&gw, &ab_c).await.status, 200);
    assert_eq!(get(&gw, &ab_c).await.status, 429);
    assert_eq!(get(&gw, &a_bc).await.status, 200, "(a, bc) is not (ab, c)");
}
