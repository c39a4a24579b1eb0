//! The request pipeline in memory, no sockets: each filter's request phase (what reaches the
//! upstream, what is refused) and response phase (what the client gets back), and a filter
//! defined here, added to every route's chain, to show the extension point.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use warden_proxy::filters::{Exchange, Filter, Flow};
use warden_proxy::{InMemory, Reject};
use warden_test_util::authcfg::{bearer, issuer, Keys};
use warden_test_util::jwt::TestIssuer;

const CLIENT: &str = "192.0.2.10:40000";

fn client() -> SocketAddr {
    CLIENT.parse().unwrap()
}

/// Config text with one cluster `c` (never contacted: the upstream is a function here) and
/// the given extra sections.
fn config(extra: &str) -> warden_config::Config {
    let text = format!(
        "[admin]\nenabled = false\n[access_log]\nenabled = false\n[reload]\nwatch = false\n\
         [[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"c\"\nendpoints = [\"http://127.0.0.1:9\"]\n{extra}"
    );
    warden_config::parse(&text).unwrap_or_else(|e| panic!("config: {e}\n{text}"))
}

fn public_route(name: &str, prefix: &str, body: &str) -> String {
    format!(
        "\n[[routes]]\nname = \"{name}\"\ncluster = \"c\"\npath_prefix = \"{prefix}\"\n\
         auth = \"none\"\n{body}\n"
    )
}

fn get(path: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::get(path).header("host", "api.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

/// An upstream that records what it received and answers 200 `ok` with `headers`.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<http::request::Parts>>>,
    headers: Vec<(&'static str, &'static str)>,
}

impl Recorder {
    fn answering(headers: &[(&'static str, &'static str)]) -> Self {
        Self {
            headers: headers.to_vec(),
            ..Self::default()
        }
    }

    async fn call(&self, gw: &InMemory, req: Request<()>) -> Response<Bytes> {
        self.call_from(gw, req, client()).await
    }

    async fn call_from(
        &self,
        gw: &InMemory,
        req: Request<()>,
        from: SocketAddr,
    ) -> Response<Bytes> {
        let seen = self.seen.clone();
        let headers = self.headers.clone();
        gw.send(req, from, move |forwarded: Request<()>| async move {
            seen.lock().unwrap().push(forwarded.into_parts().0);
            let mut res = Response::new(Bytes::from_static(b"ok"));
            for (k, v) in headers {
                res.headers_mut().append(k, HeaderValue::from_static(v));
            }
            res
        })
        .await
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn last(&self) -> http::request::Parts {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a forwarded request")
    }
}

fn header<'a>(res: &'a Response<Bytes>, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

fn error_code(res: &Response<Bytes>) -> String {
    let v: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
    v["error"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn normalisation_forwards_the_normalised_path_and_refuses_what_cannot_be_routed() {
    let gw = InMemory::new(config(&public_route("all", "/", ""))).unwrap();
    let up = Recorder::default();

    let res = up.call(&gw, get("/a/./b/../c//d?x=1", &[])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(up.last().uri, "/a/c/d?x=1");

    // Two Host headers: refused before routing, never forwarded, and the refusal still gets
    // the response phase (the fallback chain's security headers, Server, request id).
    let mut req = get("/a", &[]);
    req.headers_mut()
        .append("host", HeaderValue::from_static("other.test"));
    let res = up.call(&gw, req).await;
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(&res), "bad_request");
    assert_eq!(header(&res, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&res, "server"), Some("warden"));
    assert!(header(&res, "x-request-id").is_some());

    let res = up.call(&gw, get("/a%2Fb", &[])).await;
    assert_eq!(res.status(), 400);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn ip_rules_refuse_denied_clients_before_the_upstream() {
    let gw = InMemory::new(config(&public_route(
        "inner",
        "/",
        "allow_cidrs = [\"10.0.0.0/8\"]\ndeny_cidrs = [\"10.9.0.0/16\"]",
    )))
    .unwrap();
    let up = Recorder::default();
    let res = up
        .call_from(&gw, get("/x", &[]), "10.1.2.3:1".parse().unwrap())
        .await;
    assert_eq!(res.status(), 200);
    let res = up
        .call_from(&gw, get("/x", &[]), "10.9.2.3:1".parse().unwrap())
        .await;
    assert_eq!(res.status(), 403);
    let res = up.call(&gw, get("/x", &[])).await;
    assert_eq!(res.status(), 403);
    assert_eq!(error_code(&res), "forbidden");
    assert_eq!(up.count(), 1);
}

fn jwt_route(name: &str, prefix: &str, rules: &str, extra: &str) -> String {
    format!(
        "\n[[routes]]\nname = \"{name}\"\ncluster = \"c\"\npath_prefix = \"{prefix}\"\n{extra}\n\
         [routes.auth]\naccept = [\"jwt\"]\n{rules}\n"
    )
}

fn with_issuer(iss: &TestIssuer, routes: &str) -> warden_config::Config {
    let jwks = iss.jwks_file();
    config(&format!(
        "{}\n{routes}",
        issuer("main", &iss.iss, &["ES256"], Keys::JwksFile(&jwks), "")
    ))
}

#[tokio::test]
async fn cors_answers_preflights_before_authentication_and_sets_headers_on_forwarded_responses() {
    let iss = TestIssuer::new("https://issuer.test");
    let gw = InMemory::new(with_issuer(
        &iss,
        &jwt_route(
            "api",
            "/",
            "",
            "[routes.cors]\nallowed_origins = [\"https://app.test\"]\nallowed_methods = [\"GET\"]",
        ),
    ))
    .unwrap();
    // The upstream tries to widen CORS; only the route's policy counts.
    let up = Recorder::answering(&[("access-control-allow-origin", "*")]);

    let preflight = Request::options("/x")
        .header("host", "api.test")
        .header("origin", "https://app.test")
        .header("access-control-request-method", "GET")
        .body(())
        .unwrap();
    let res = up.call(&gw, preflight).await;
    assert_eq!(res.status(), 204, "no credentials needed for a preflight");
    assert_eq!(
        header(&res, "access-control-allow-origin"),
        Some("https://app.test")
    );
    assert_eq!(up.count(), 0);

    let token = iss.token(&iss.claims("alice", "api", "read"));
    let res = up
        .call(
            &gw,
            get(
                "/x",
                &[
                    ("origin", "https://evil.test"),
                    ("authorization", &bearer(&token)),
                ],
            ),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "access-control-allow-origin"), None);
    assert_eq!(header(&res, "vary"), Some("Origin"));
    let res = up
        .call(
            &gw,
            get(
                "/x",
                &[
                    ("origin", "https://app.test"),
                    ("authorization", &bearer(&token)),
                ],
            ),
        )
        .await;
    assert_eq!(
        header(&res, "access-control-allow-origin"),
        Some("https://app.test")
    );

    // The gateway's own refusals carry no CORS headers.
    let res = up
        .call(&gw, get("/x", &[("origin", "https://app.test")]))
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(header(&res, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn authentication_and_identity_propagation_tell_the_upstream_who_called_and_nothing_else() {
    let iss = TestIssuer::new("https://issuer.test");
    let gw = InMemory::new(with_issuer(&iss, &jwt_route("api", "/", "", ""))).unwrap();
    let up = Recorder::default();

    let res = up.call(&gw, get("/x", &[])).await;
    assert_eq!(res.status(), 401);
    assert!(header(&res, "www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    assert_eq!(up.count(), 0);

    let token = iss.token(&iss.claims("alice", "api", "read"));
    let res = up
        .call(
            &gw,
            get(
                "/x",
                &[
                    ("authorization", &bearer(&token)),
                    // Spoofed identity: header rules remove it, identity propagation sets it.
                    ("x-warden-subject", "mallory"),
                ],
            ),
        )
        .await;
    assert_eq!(res.status(), 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-warden-subject"], "alice");
    assert_eq!(seen.headers.get_all("x-warden-subject").iter().count(), 1);
    assert_eq!(seen.headers["x-warden-auth"], "jwt");
}

#[tokio::test]
async fn authorization_refuses_missing_scopes_and_names_them_in_the_response_phase() {
    let iss = TestIssuer::new("https://issuer.test");
    let gw = InMemory::new(with_issuer(
        &iss,
        &jwt_route("admin", "/", "scopes_all = [\"admin\"]", ""),
    ))
    .unwrap();
    let up = Recorder::default();
    let token = iss.token(&iss.claims("alice", "api", "read"));
    let res = up
        .call(&gw, get("/x", &[("authorization", &bearer(&token))]))
        .await;
    assert_eq!(res.status(), 403);
    let www = header(&res, "www-authenticate").expect("WWW-Authenticate");
    assert!(www.contains("insufficient_scope"), "{www}");
    assert!(www.contains("scope=\"admin\""), "{www}");
    assert_eq!(up.count(), 0);

    let token = iss.token(&iss.claims("root", "api", "admin"));
    let res = up
        .call(&gw, get("/x", &[("authorization", &bearer(&token))]))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "www-authenticate"), None);
}

#[tokio::test]
async fn rate_limits_refuse_past_the_burst_and_report_their_state_on_every_response() {
    let gw = InMemory::new(config(&public_route(
        "limited",
        "/",
        "[[routes.rate_limits]]\nkey = \"client_ip\"\nrequests = 2\nper = \"60s\"\nburst = 2",
    )))
    .unwrap();
    let up = Recorder::default();
    let res = up.call(&gw, get("/x", &[])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "ratelimit-policy"), Some("\"0\";q=2;w=60"));
    assert!(header(&res, "ratelimit").is_some_and(|v| v.starts_with("\"0\";r=1;")));
    assert_eq!(up.call(&gw, get("/x", &[])).await.status(), 200);
    let res = up.call(&gw, get("/x", &[])).await;
    assert_eq!(res.status(), 429);
    assert!(header(&res, "retry-after").is_some());
    assert!(header(&res, "ratelimit").is_some_and(|v| v.starts_with("\"0\";r=0;")));
    assert_eq!(up.count(), 2);
    // Another client has its own bucket.
    let res = up
        .call_from(&gw, get("/x", &[]), "192.0.2.99:1".parse().unwrap())
        .await;
    assert_eq!(res.status(), 200);
    // The end-of-exchange hook counted the refusal.
    let text = gw.gateway().metrics().encode_prometheus();
    assert!(
        text.lines()
            .any(|l| l.starts_with("warden_rate_limited_requests_total")
                && l.contains("route=\"limited\"")
                && l.ends_with(" 1")),
        "{text}"
    );
}

#[tokio::test]
async fn body_limits_refuse_a_declared_length_past_the_limit() {
    let gw = InMemory::new(config(&format!(
        "[server]\nmax_body_bytes = \"1KiB\"\n{}",
        public_route("up", "/", "")
    )))
    .unwrap();
    let up = Recorder::default();
    let res = up.call(&gw, get("/x", &[("content-length", "1025")])).await;
    assert_eq!(res.status(), 413);
    let res = up.call(&gw, get("/x", &[("content-length", "1024")])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn header_rules_strip_hop_by_hop_and_underscored_headers_and_forwarding_headers_are_set() {
    let gw = InMemory::new(config(&format!(
        "[forwarding]\nheaders_with_underscores = \"drop\"\n{}",
        public_route("up", "/", "")
    )))
    .unwrap();
    // Hop-by-hop headers from the upstream do not reach the client either.
    let up = Recorder::answering(&[
        ("connection", "x-up-secret"),
        ("x-up-secret", "1"),
        ("x-kept", "1"),
    ]);
    let res = up
        .call(
            &gw,
            get(
                "/x",
                &[
                    ("connection", "x-secret"),
                    ("x-secret", "1"),
                    ("x_user", "admin"),
                    ("x-fine", "1"),
                ],
            ),
        )
        .await;
    assert_eq!(res.status(), 200);
    let seen = up.last();
    assert!(seen.headers.get("x-secret").is_none());
    assert!(seen.headers.get("connection").is_none());
    assert!(seen.headers.get("x_user").is_none());
    assert_eq!(seen.headers["x-fine"], "1");
    assert_eq!(seen.headers["x-forwarded-for"], "192.0.2.10");
    assert_eq!(seen.headers["host"], "api.test");
    assert!(seen.headers.get("x-request-id").is_some());
    assert!(res.headers().get("x-up-secret").is_none());
    assert_eq!(header(&res, "x-kept"), Some("1"));
}

#[tokio::test]
async fn rewrite_replaces_the_prefix_in_the_path_sent_upstream() {
    let gw = InMemory::new(config(&public_route(
        "old",
        "/old",
        "rewrite_prefix = \"/v2\"",
    )))
    .unwrap();
    let up = Recorder::default();
    let res = up.call(&gw, get("/old/items?page=2", &[])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(up.last().uri, "/v2/items?page=2");
}

#[tokio::test]
async fn security_headers_are_added_unless_the_upstream_set_them_and_hsts_only_over_tls() {
    let routes = format!(
        "{}{}",
        public_route(
            "framed",
            "/framed",
            "[routes.security_headers]\nframe_options = \"SAMEORIGIN\""
        ),
        public_route("plain", "/", "")
    );
    let up = Recorder::answering(&[("referrer-policy", "origin")]);
    let gw = InMemory::new(config(&routes)).unwrap();
    let res = up.call(&gw, get("/framed", &[])).await;
    assert_eq!(header(&res, "x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(header(&res, "referrer-policy"), Some("origin"));
    assert_eq!(header(&res, "strict-transport-security"), None);
    let res = up.call(&gw, get("/plain", &[])).await;
    assert_eq!(header(&res, "x-frame-options"), Some("DENY"));

    let gw = InMemory::new(config(&routes)).unwrap().over_tls();
    let res = up.call(&gw, get("/plain", &[])).await;
    assert!(header(&res, "strict-transport-security").is_some_and(|v| v.contains("max-age")));
    assert_eq!(up.last().headers["x-forwarded-proto"], "https");
}

/// A filter written outside the crate: requests must name a tenant; responses say which
/// tenant they were for.
struct RequireTenant {
    runs: AtomicUsize,
}

impl Filter for RequireTenant {
    fn name(&self) -> &'static str {
        "require_tenant"
    }

    fn request(&self, ex: &mut Exchange<'_>, head: &mut http::request::Parts) -> Flow {
        self.runs.fetch_add(1, Ordering::Relaxed);
        if ex.path() == "/teapot" {
            let mut res = Response::new(Bytes::from_static(b"short and stout"));
            *res.status_mut() = http::StatusCode::IM_A_TEAPOT;
            return Flow::Respond(res);
        }
        match head.headers.get("x-tenant") {
            Some(_) => Flow::Continue,
            None => Flow::Reject(Reject::Forbidden),
        }
    }

    fn response(&self, ex: &Exchange<'_>, head: &mut http::response::Parts) {
        let seen = match (ex.rejected(), ex.from_upstream()) {
            (Some(_), _) => "refused",
            (None, true) => "upstream",
            (None, false) => "filter",
        };
        head.headers
            .insert("x-tenant-checked", HeaderValue::from_static(seen));
    }
}

#[tokio::test]
async fn a_filter_defined_outside_the_crate_joins_every_chain_after_the_built_in_filters() {
    let iss = TestIssuer::new("https://issuer.test");
    let tenant = Arc::new(RequireTenant {
        runs: AtomicUsize::new(0),
    });
    let gw = InMemory::with_filters(
        with_issuer(&iss, &jwt_route("api", "/", "", "")),
        vec![tenant.clone() as Arc<dyn Filter>],
    )
    .unwrap();
    let up = Recorder::default();
    let token = iss.token(&iss.claims("alice", "api", "read"));

    // After the built-in filters: an unauthenticated request is refused by authentication,
    // and the added filter never sees it (its response phase still runs).
    let res = up.call(&gw, get("/x", &[("x-tenant", "acme")])).await;
    assert_eq!(res.status(), 401);
    assert_eq!(tenant.runs.load(Ordering::Relaxed), 0);
    assert_eq!(header(&res, "x-tenant-checked"), Some("refused"));

    let res = up
        .call(&gw, get("/x", &[("authorization", &bearer(&token))]))
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(header(&res, "x-tenant-checked"), Some("refused"));
    assert_eq!(up.count(), 0);

    let res = up
        .call(
            &gw,
            get(
                "/x",
                &[("authorization", &bearer(&token)), ("x-tenant", "acme")],
            ),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-tenant-checked"), Some("upstream"));
    // The built-in response phases still ran around it.
    assert_eq!(header(&res, "x-content-type-options"), Some("nosniff"));
    assert_eq!(up.count(), 1);

    let res = up
        .call(&gw, get("/teapot", &[("authorization", &bearer(&token))]))
        .await;
    assert_eq!(res.status(), 418);
    assert_eq!(res.body().as_ref(), b"short and stout");
    assert_eq!(header(&res, "x-tenant-checked"), Some("filter"));
    assert_eq!(up.count(), 1);
}
