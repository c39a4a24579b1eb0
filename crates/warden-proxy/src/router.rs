//! Route matching.
//!
//! Order, deterministic and documented in `docs/architecture.md`:
//! 1. by host specificity: routes naming the exact host, then routes with a wildcard host
//!    matching it (longest suffix first), then routes with no `hosts`;
//! 2. within each group, in the order the routes appear in the config file;
//! 3. the first route whose path, method and header conditions all hold wins.
//!
//! Matching sees the normalised path (see [`crate::normalize`]) and the host lower-cased
//! without its port. A wildcard `*.example.com` matches any name ending in `.example.com`
//! (any depth), never `example.com` itself.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};

use crate::upstream::Cluster;

/// How a route matches the path.
pub(crate) enum PathMatch {
    Any,
    Exact(String),
    Prefix(String),
    Regex(regex::Regex),
}

pub(crate) enum HeaderCond {
    Present(HeaderName),
    Absent(HeaderName),
    Exact(HeaderName, String),
    Regex(HeaderName, regex::Regex),
}

/// A compiled route.
pub(crate) struct Route {
    pub(crate) name: Arc<String>,
    pub(crate) path: PathMatch,
    pub(crate) methods: Vec<Method>,
    /// Forward `TRACE`/`TRACK` (405 otherwise).
    pub(crate) allow_trace: bool,
    pub(crate) headers: Vec<HeaderCond>,
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) timeout: std::time::Duration,
    /// The longest a response body may go without a byte from the upstream.
    pub(crate) stream_idle_timeout: std::time::Duration,
    /// The route's filters (IP rules, CORS, auth, rate limits, …), compiled once per
    /// snapshot.
    pub(crate) chain: crate::filters::Chain,
    /// WebSocket upgrades allowed, and how they are carried.
    pub(crate) websocket: Option<crate::websocket::WebSocketRoute>,
}

/// What a rate limit counts by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LimitKey {
    ClientIp,
    Route,
    Header(HeaderName),
    /// The authenticated subject.
    Subject,
    /// The API key id.
    ApiKey,
    /// A claim (by dotted path); non-string claims count by their JSON text.
    Claim(String),
}

impl LimitKey {
    /// The metric label (never the key's value).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            LimitKey::ClientIp => "client_ip",
            LimitKey::Route => "route",
            LimitKey::Header(_) => "header",
            LimitKey::Subject => "subject",
            LimitKey::ApiKey => "api_key",
            LimitKey::Claim(_) => "claim",
        }
    }
}

/// A compiled rate limit: its key (one part or a combination), its buckets — one for callers
/// of no tier and one per tier, each with its limiter (kept across reloads while the limit is
/// unchanged) and the `RateLimit-Policy` value that describes it.
pub(crate) struct RouteLimit {
    pub(crate) keys: Vec<LimitKey>,
    /// The metric label: the key kinds joined with `+`.
    pub(crate) label: Arc<str>,
    pub(crate) config: warden_config::RateLimitConfig,
    /// The claim (or API key attribute) whose value names the caller's tier.
    pub(crate) tier_claim: Option<String>,
    /// The limit for callers of no tier.
    pub(crate) base: LimitBucket,
    /// The limits of the tiers, sorted by name.
    pub(crate) tiers: Vec<(String, LimitBucket)>,
}

impl RouteLimit {
    /// The bucket for a caller: its tier's when the tier claim names a configured tier, the
    /// limit's own otherwise.
    pub(crate) fn bucket(&self, identity: Option<&warden_auth::Identity>) -> &LimitBucket {
        let Some(claim) = &self.tier_claim else {
            return &self.base;
        };
        let find = |tier: &str| {
            self.tiers
                .binary_search_by(|(name, _)| name.as_str().cmp(tier))
                .map_or(&self.base, |i| &self.tiers[i].1)
        };
        match identity.and_then(|i| i.claim(claim)) {
            Some(serde_json::Value::String(tier)) => find(tier),
            // `level = 3` names tier "3".
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                find(&v.to_string())
            }
            _ => &self.base,
        }
    }
}

/// One set of counters of a limit, with what describes it in responses and metrics.
pub(crate) struct LimitBucket {
    pub(crate) limiter: Limiter,
    pub(crate) policy: http::HeaderValue,
    /// The time in which the bucket regains one request (`per` / `requests`).
    pub(crate) emission: std::time::Duration,
    /// The `tier` metric label: the tier's name, `default` for callers of no tier on a limit
    /// with tiers, none for a limit without tiers.
    pub(crate) tier: Option<Arc<str>>,
}

/// Where a limit's counters live.
pub(crate) enum Limiter {
    /// In this process: a sync, allocation-free decision.
    Local(Arc<warden_limits::LocalLimiter>),
    /// In Redis, shared with the other gateways.
    Redis(Arc<RedisLimit>),
}

/// A Redis-backed limit, with what it does when Redis cannot answer.
pub(crate) struct RedisLimit {
    pub(crate) limiter: warden_limits::RedisLimiter,
    /// What to do when Redis cannot answer: limit at this gateway's share, refuse (429), or
    /// let the request through.
    pub(crate) on_failure: warden_config::StoreFailure,
    /// `warden_rate_limit_store_errors_total{result=...}` for this limit's failure mode.
    pub(crate) store_errors: warden_telemetry::metrics::Counter,
}

impl Route {
    fn matches(&self, path: &str, method: &Method, headers: &HeaderMap) -> bool {
        let path_ok = match &self.path {
            PathMatch::Any => true,
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Regex(r) => r.is_match(path),
        };
        path_ok
            && (self.methods.is_empty() || self.methods.contains(method))
            && self.headers.iter().all(|h| match h {
                HeaderCond::Present(n) => headers.contains_key(n),
                HeaderCond::Absent(n) => !headers.contains_key(n),
                HeaderCond::Exact(n, v) => headers
                    .get_all(n)
                    .iter()
                    .any(|x| x.as_bytes() == v.as_bytes()),
                HeaderCond::Regex(n, r) => headers
                    .get_all(n)
                    .iter()
                    .any(|x| x.to_str().is_ok_and(|s| r.is_match(s))),
            })
    }
}

/// All routes, grouped by host for matching.
#[derive(Default)]
pub(crate) struct Router {
    routes: Vec<Arc<Route>>,
    exact: HashMap<String, Vec<usize>>,
    /// (suffix including the leading dot, route indices), longest suffix first.
    wildcard: Vec<(String, Vec<usize>)>,
    any: Vec<usize>,
}

impl Router {
    pub(crate) fn new(routes: Vec<(Arc<Route>, Vec<String>)>) -> Self {
        let mut r = Router::default();
        let mut wild: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, (route, hosts)) in routes.into_iter().enumerate() {
            r.routes.push(route);
            if hosts.is_empty() {
                r.any.push(i);
            }
            for h in hosts {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix('*') {
                    Some(suffix) => wild.entry(suffix.to_owned()).or_default().push(i),
                    None => r.exact.entry(h).or_default().push(i),
                }
            }
        }
        r.wildcard = wild.into_iter().collect();
        r.wildcard
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        r
    }

    /// Every route, in file order.
    pub(crate) fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// A route by name (to carry state such as rate-limit counters across reloads).
    pub(crate) fn by_name(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.name.as_str() == name)
    }

    /// The first matching route.
    pub(crate) fn find(
        &self,
        host: &str,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<&Arc<Route>> {
        let exact = self.exact.get(host).into_iter().flatten();
        let wild = self
            .wildcard
            .iter()
            .filter(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .flat_map(|(_, ids)| ids);
        exact
            .chain(wild)
            .chain(self.any.iter())
            .map(|i| &self.routes[*i])
            .find(|r| r.matches(path, method, headers))
    }
}
