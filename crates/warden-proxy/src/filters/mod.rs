//! The request pipeline's filters, one file each, and the per-route chain they are compiled
//! into.
//!
//! A filter has a request phase, which lets the request go on ([`Flow::Continue`]), refuses
//! it with a [`Reject`] or answers it itself ([`Flow::Respond`]), and a response phase, which
//! edits the response head. The pipeline (`pipeline.rs`) runs the request phases in chain
//! order and then, for every response (forwarded, answered by a filter or refused), the
//! response phases of the whole chain in reverse order, in one place — the shape of Pingora's
//! `ProxyHttp` phases and of a stack of tower layers.
//!
//! Each route's chain is compiled once per config snapshot ([`Chain::compile`]) and shared
//! behind the route's `Arc`; nothing is built per request. The built-in filters are the
//! variants of [`Stage`] (static dispatch: the authentication and rate-limit futures are part
//! of the request's own future, with no `Box` per request); a filter written outside this
//! crate implements [`Filter`] and is added with `Stage::Custom` (see
//! [`crate::InMemory::with_filters`]).
//!
//! Chain order (request phases; response phases run in reverse):
//! `security_headers → ip_rules → cors → authenticate → authorize → rate_limits →
//! body_limit → header_rules → identity → rewrite → custom filters`.
//! Normalisation ([`normalize`]) runs before routing, so it is the snapshot's entry stage
//! rather than part of a route's chain. A request that matches no route gets the snapshot's
//! default chain (the global security headers).
//!
//! Adding a filter: one file here, a variant of [`Stage`] and its line in [`Chain::compile`],
//! its config section, and its [`Reject`] entry.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Response};

use crate::error::Reject;
use crate::router::Route;
use crate::snapshot::Snapshot;

pub(crate) mod authenticate;
pub(crate) mod authorize;
pub(crate) mod body_limit;
pub(crate) mod cors;
pub(crate) mod header_rules;
pub(crate) mod identity;
pub(crate) mod ip_rules;
pub(crate) mod normalize;
pub(crate) mod rate_limits;
pub(crate) mod rewrite;
pub(crate) mod security_headers;

/// What a request phase decided.
#[derive(Debug)]
pub enum Flow {
    /// On to the next filter (and, after the last, the upstream).
    Continue,
    /// Refuse the request: the gateway answers with the [`Reject`]'s response.
    Reject(Reject),
    /// Answer the request with this response, without forwarding it.
    Respond(Response<Bytes>),
}

/// A filter written outside the built-in set: a request phase and a response phase, both
/// synchronous (a filter that waits belongs in [`Stage`], where its future costs no box).
pub trait Filter: Send + Sync + 'static {
    /// The filter's name, for logs and debugging.
    fn name(&self) -> &'static str;

    /// Looks at (and may edit) the request head before it is forwarded.
    fn request(&self, _ex: &mut Exchange<'_>, _head: &mut http::request::Parts) -> Flow {
        Flow::Continue
    }

    /// Edits the response head, whoever produced it (the upstream, a filter, a refusal).
    fn response(&self, _ex: &Exchange<'_>, _head: &mut http::response::Parts) {}
}

/// What the pipeline knows about one request, shared by its filters.
pub struct Exchange<'a> {
    pub(crate) snap: &'a Snapshot,
    pub(crate) route: Option<&'a Arc<Route>>,
    pub(crate) method: Method,
    /// Lower-cased host without port or trailing dot ("" for an HTTP/1.0 request without one).
    pub(crate) host: String,
    /// The Host (or authority) as sent, to forward.
    pub(crate) host_value: HeaderValue,
    /// The normalised path.
    pub(crate) path: String,
    pub(crate) client_ip: IpAddr,
    pub(crate) tls: bool,
    pub(crate) peer_cert: Option<&'a [u8]>,
    /// A CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`).
    pub(crate) preflight: bool,
    /// A gRPC call (`content-type: application/grpc`).
    pub(crate) grpc: bool,
    /// Seconds since the Unix epoch, for token lifetimes.
    pub(crate) now: i64,
    pub(crate) identity: Option<Arc<warden_auth::Identity>>,
    /// The request's `Origin`, kept by the CORS filter for the response phase.
    pub(crate) origin: Option<HeaderValue>,
    /// The path to send upstream when a rewrite changed it.
    pub(crate) upstream_path: Option<String>,
    /// The value that picks the endpoint for consistent hashing, read before any filter
    /// edits the headers.
    pub(crate) hash_value: Option<Vec<u8>>,
    /// Why the gateway refused the request, when it did.
    pub(crate) rejected: Option<Reject>,
    /// Authorization passed.
    pub(crate) authorized: bool,
    /// The response came from the upstream (not from a filter or a refusal).
    pub(crate) from_upstream: bool,
    /// The rate-limit state to report: policy, remaining, and the seconds until more quota
    /// is available (the `RateLimit` field's `t`).
    pub(crate) rate_limit: Option<(HeaderValue, u64, u64)>,
    /// What the limit that refused the request counts by.
    pub(crate) limited_by: Option<(Arc<str>, Option<Arc<str>>)>,
    /// The traced filters' work (authentication, authorization, rate limiting), kept when
    /// the request's trace is sampled.
    pub(crate) phases: Option<Vec<crate::trace::Phase>>,
    /// Which Cedar policies refused the request (`forbidden by p1`, `no policy permits`).
    pub(crate) denied_by: Option<String>,
}

impl Exchange<'_> {
    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The normalised path that routing saw.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The host, lower-cased, without port.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The client's address (after trusted proxies).
    pub fn client_ip(&self) -> IpAddr {
        self.client_ip
    }

    /// The matched route's name (`None` before routing or when nothing matched).
    pub fn route_name(&self) -> Option<&str> {
        self.route.map(|r| r.name.as_str())
    }

    /// The authenticated caller's subject, once authentication ran.
    pub fn subject(&self) -> Option<&str> {
        self.identity.as_deref().map(|i| i.subject.as_str())
    }

    /// Why the gateway refused the request, when it did (in the response phase).
    pub fn rejected(&self) -> Option<Reject> {
        self.rejected
    }

    /// Whether the response being filtered came from the upstream.
    pub fn from_upstream(&self) -> bool {
        self.from_upstream
    }
}

/// One compiled filter of a chain.
pub(crate) enum Stage {
    SecurityHeaders(security_headers::SecurityHeadersFilter),
    IpRules(ip_rules::IpRules),
    Cors(cors::CorsFilter),
    Authenticate(authenticate::Authenticate),
    Authorize(authorize::Authorize),
    RateLimits(rate_limits::RateLimits),
    BodyLimit(body_limit::BodyLimit),
    HeaderRules(header_rules::HeaderRules),
    Identity(identity::Identity),
    Rewrite(rewrite::Rewrite),
    Custom(Arc<dyn Filter>),
}

impl Stage {
    async fn request(&self, ex: &mut Exchange<'_>, head: &mut http::request::Parts) -> Flow {
        match self {
            Stage::SecurityHeaders(_) => Flow::Continue,
            Stage::IpRules(f) => f.request(ex),
            Stage::Cors(f) => f.request(ex, head),
            Stage::Authenticate(f) => f.request(ex, head).await,
            Stage::Authorize(f) => f.request(ex),
            Stage::RateLimits(f) => f.request(ex, head).await,
            Stage::BodyLimit(f) => f.request(head),
            Stage::HeaderRules(f) => f.request(ex, head),
            Stage::Identity(f) => f.request(ex, head),
            Stage::Rewrite(f) => f.request(ex),
            Stage::Custom(f) => f.request(ex, head),
        }
    }

    /// The span a sampled request's trace gets for this filter, if any: the decisions an
    /// on-call engineer looks for, not every header edit.
    fn span_name(&self) -> Option<&'static str> {
        match self {
            Stage::Authenticate(_) => Some("authenticate"),
            Stage::Authorize(_) => Some("authorize"),
            Stage::RateLimits(_) => Some("rate_limit"),
            _ => None,
        }
    }

    fn response(&self, ex: &Exchange<'_>, head: &mut http::response::Parts) {
        match self {
            Stage::SecurityHeaders(f) => f.response(ex, head),
            Stage::Cors(f) => f.response(ex, head),
            Stage::Authorize(f) => f.response(ex, head),
            Stage::RateLimits(f) => f.response(ex, head),
            Stage::Custom(f) => f.response(ex, head),
            Stage::IpRules(_)
            | Stage::Authenticate(_)
            | Stage::BodyLimit(_)
            | Stage::HeaderRules(_)
            | Stage::Identity(_)
            | Stage::Rewrite(_) => {}
        }
    }
}

/// A route's filters, in order.
#[derive(Default)]
pub(crate) struct Chain {
    stages: Vec<Stage>,
}

/// What a route's chain is compiled from: the route's config, already turned into the
/// filters' values by the snapshot compiler.
pub(crate) struct ChainParts {
    pub(crate) security_headers: Arc<crate::headers::SecurityHeaders>,
    pub(crate) ip_rules: ip_rules::IpRules,
    pub(crate) cors: Option<crate::cors::Cors>,
    pub(crate) auth: Option<Arc<warden_auth::RoutePolicy>>,
    pub(crate) rate_limits: Vec<crate::router::RouteLimit>,
    pub(crate) max_body_bytes: u64,
    pub(crate) underscore_headers: warden_config::UnderscoreHeaders,
    pub(crate) rewrite: Option<(String, String)>,
    pub(crate) extra: Vec<Arc<dyn Filter>>,
}

impl Chain {
    /// Compiles a route's chain; filters with nothing to do on this route are left out.
    pub(crate) fn compile(p: ChainParts) -> Self {
        let mut stages = vec![Stage::SecurityHeaders(
            security_headers::SecurityHeadersFilter(p.security_headers),
        )];
        if !p.ip_rules.is_empty() {
            stages.push(Stage::IpRules(p.ip_rules));
        }
        if let Some(c) = p.cors {
            stages.push(Stage::Cors(cors::CorsFilter(c)));
        }
        if let Some(policy) = &p.auth {
            stages.push(Stage::Authenticate(authenticate::Authenticate(
                policy.clone(),
            )));
            stages.push(Stage::Authorize(authorize::Authorize(policy.clone())));
        }
        if !p.rate_limits.is_empty() {
            stages.push(Stage::RateLimits(rate_limits::RateLimits(p.rate_limits)));
        }
        stages.push(Stage::BodyLimit(body_limit::BodyLimit(p.max_body_bytes)));
        stages.push(Stage::HeaderRules(header_rules::HeaderRules(
            p.underscore_headers,
        )));
        if let Some(policy) = p.auth {
            stages.push(Stage::Identity(identity::Identity(policy)));
        }
        if let Some((prefix, with)) = p.rewrite {
            stages.push(Stage::Rewrite(rewrite::Rewrite { prefix, with }));
        }
        stages.extend(p.extra.into_iter().map(Stage::Custom));
        Chain { stages }
    }

    /// The chain for requests that match no route: the global security headers.
    pub(crate) fn fallback(security_headers: Arc<crate::headers::SecurityHeaders>) -> Self {
        Chain {
            stages: vec![Stage::SecurityHeaders(
                security_headers::SecurityHeadersFilter(security_headers),
            )],
        }
    }

    /// Runs the request phases in order until one does not continue.
    pub(crate) async fn request(
        &self,
        ex: &mut Exchange<'_>,
        head: &mut http::request::Parts,
    ) -> Flow {
        for s in &self.stages {
            let traced = ex.phases.is_some().then(|| s.span_name()).flatten();
            let start = traced.map(|_| std::time::SystemTime::now());
            let flow = s.request(ex, head).await;
            if let (Some(name), Some(start), Some(phases)) = (traced, start, ex.phases.as_mut()) {
                phases.push(crate::trace::Phase {
                    name,
                    start,
                    end: std::time::SystemTime::now(),
                    refused: match &flow {
                        Flow::Reject(r) => Some(r.reason()),
                        _ => None,
                    },
                });
            }
            match flow {
                Flow::Continue => {}
                other => return other,
            }
        }
        Flow::Continue
    }

    /// Runs every response phase, last filter first.
    pub(crate) fn response(&self, ex: &Exchange<'_>, head: &mut http::response::Parts) {
        for s in self.stages.iter().rev() {
            s.response(ex, head);
        }
    }

    /// The route's rate limits (empty when it has none).
    pub(crate) fn rate_limits(&self) -> &[crate::router::RouteLimit] {
        self.stages
            .iter()
            .find_map(|s| match s {
                Stage::RateLimits(r) => Some(r.0.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }

    /// The filters' names, in order (for tests and debugging).
    #[cfg(test)]
    pub(crate) fn names(&self) -> Vec<&'static str> {
        self.stages
            .iter()
            .map(|s| match s {
                Stage::SecurityHeaders(_) => "security_headers",
                Stage::IpRules(_) => "ip_rules",
                Stage::Cors(_) => "cors",
                Stage::Authenticate(_) => "authenticate",
                Stage::Authorize(_) => "authorize",
                Stage::RateLimits(_) => "rate_limits",
                Stage::BodyLimit(_) => "body_limit",
                Stage::HeaderRules(_) => "header_rules",
                Stage::Identity(_) => "identity",
                Stage::Rewrite(_) => "rewrite",
                Stage::Custom(f) => f.name(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use warden_telemetry::Metrics;

    use super::Filter;
    use crate::snapshot::Snapshot;

    struct Marker;

    impl Filter for Marker {
        fn name(&self) -> &'static str {
            "marker"
        }
    }

    fn config() -> warden_config::Config {
        warden_config::parse(
            "[admin]\nenabled = false\n[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n\
             [[clusters]]\nname = \"c\"\nendpoints = [\"http://127.0.0.1:9\"]\n\
             [[routes]]\nname = \"open\"\ncluster = \"c\"\npath_prefix = \"/open\"\nauth = \"none\"\n\
             [[routes]]\nname = \"full\"\ncluster = \"c\"\npath_prefix = \"/old\"\n\
             rewrite_prefix = \"/new\"\nallow_cidrs = [\"10.0.0.0/8\"]\n\
             [routes.cors]\nallowed_origins = [\"https://app.test\"]\n\
             [[routes.rate_limits]]\nkey = \"client_ip\"\nrequests = 5\nper = \"1s\"\n\
             [routes.auth]\naccept = [\"api_key\"]\n\
             [auth.api_keys]\nkeys = []\n",
        )
        .expect("config")
    }

    #[test]
    fn chains_hold_only_the_filters_a_route_uses_in_order_and_a_reload_keeps_added_ones() {
        let metrics = Arc::new(Metrics::new());
        let extra: Arc<[Arc<dyn Filter>]> = Arc::from(vec![Arc::new(Marker) as Arc<dyn Filter>]);
        let snap = Snapshot::compile_with(
            config(),
            None,
            &metrics,
            extra,
            Arc::new(warden_config::LocalSecrets),
            None,
        )
        .expect("compiles");
        let names = |s: &Snapshot, route: &str| s.router.by_name(route).unwrap().chain.names();
        assert_eq!(
            names(&snap, "open"),
            ["security_headers", "body_limit", "header_rules", "marker"]
        );
        assert_eq!(
            names(&snap, "full"),
            [
                "security_headers",
                "ip_rules",
                "cors",
                "authenticate",
                "authorize",
                "rate_limits",
                "body_limit",
                "header_rules",
                "identity",
                "rewrite",
                "marker"
            ]
        );
        let reloaded = Snapshot::compile(snap.config.as_ref().clone(), Some(&snap), &metrics)
            .expect("compiles");
        assert_eq!(names(&reloaded, "open").last(), Some(&"marker"));
    }
}
