//! A compiled, immutable config: what every request reads. A reload compiles a new snapshot
//! completely (certificates loaded, regexes built, clusters ready) before it is swapped in, so
//! a bad config never replaces a good one; in-flight requests keep the snapshot they started
//! with.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use warden_config::{Config, SecretResolver};
use warden_telemetry::Metrics;

use crate::cors::Cors;
use crate::error::CompileError;
use crate::filters::ip_rules::IpRules;
use crate::filters::{Chain, ChainParts, Filter};
use crate::headers::SecurityHeaders;
use crate::router::{HeaderCond, PathMatch, Route, Router};
use crate::upstream::Cluster;

/// A listener's reloadable settings.
pub(crate) struct ListenerSettings {
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// The certificates `tls` serves; kept by the next snapshot when its section is unchanged.
    pub(crate) certs: Option<Arc<warden_crypto::tls::CertStore>>,
    pub(crate) http2: bool,
}

/// Limits, as durations and counts ready for the hot path.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) max_uri_bytes: usize,
    pub(crate) max_body_bytes: u64,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) drain_timeout: Duration,
    pub(crate) allow_encoded_slash: bool,
}

/// The running config.
pub struct Snapshot {
    pub(crate) config: Arc<Config>,
    /// Every route.
    pub(crate) router: Router,
    /// The routes of listeners that name theirs (`listeners[].routes`), by listener name.
    pub(crate) listener_routers: HashMap<String, Router>,
    pub(crate) clusters: HashMap<String, Arc<Cluster>>,
    pub(crate) listeners: HashMap<String, ListenerSettings>,
    pub(crate) limits: Limits,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) request_id_header: HeaderName,
    /// What to do with request headers whose names contain `_`.
    pub(crate) underscore_headers: warden_config::UnderscoreHeaders,
    /// The response phase of requests that matched no route (the global security headers).
    pub(crate) fallback_chain: Chain,
    /// Filters added to every route's chain by the embedding code (kept across reloads).
    pub(crate) extensions: Arc<[Arc<dyn Filter>]>,
    /// Reads secret references (`env:`, `file:`); kept across reloads.
    pub(crate) secrets: Arc<dyn SecretResolver>,
    /// The workload identity of a sidecar (its SVID and bundle), for `inbound` listeners and
    /// mesh clusters; kept across reloads.
    pub(crate) identity: Option<crate::Identity>,
    /// Verifiers, caches and policies of the `[auth]` section.
    pub(crate) auth: Arc<warden_auth::Authenticator>,
    /// The shared Redis rate-limit store, when a limit uses it.
    pub(crate) rate_limit_store: Option<Arc<warden_limits::RedisStore>>,
}

impl Snapshot {
    /// The config this snapshot was compiled from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Compiles a validated config, reusing clusters from `previous` whose config is unchanged
    /// (they keep their connection pools and health state).
    pub fn compile(
        config: Config,
        previous: Option<&Snapshot>,
        metrics: &Arc<Metrics>,
    ) -> Result<Snapshot, Vec<CompileError>> {
        let extensions = previous.map(|p| p.extensions.clone()).unwrap_or_default();
        let secrets = previous.map_or_else(
            || Arc::new(warden_config::LocalSecrets) as Arc<dyn SecretResolver>,
            |p| p.secrets.clone(),
        );
        let identity = previous.and_then(|p| p.identity.clone());
        Self::compile_with(config, previous, metrics, extensions, secrets, identity)
    }

    /// [`Snapshot::compile`], with filters added at the end of every route's chain (after the
    /// built-in ones: they see the request as it will be forwarded), the resolver that reads
    /// secret references, and a sidecar's workload identity. A reload keeps all three.
    pub(crate) fn compile_with(
        config: Config,
        previous: Option<&Snapshot>,
        metrics: &Arc<Metrics>,
        extensions: Arc<[Arc<dyn Filter>]>,
        secrets: Arc<dyn SecretResolver>,
        identity: Option<crate::Identity>,
    ) -> Result<Snapshot, Vec<CompileError>> {
        let mut errors = Vec::new();
        let mut listeners = HashMap::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let (tls, certs) = match (&l.tls, l.role) {
                (_, warden_config::ListenerRole::Inbound) => {
                    match crate::tls::inbound_config(
                        identity.as_ref(),
                        l.http2,
                        &format!("listeners[{i}].role"),
                    ) {
                        Ok(c) => (Some(c), None),
                        Err(e) => {
                            errors.push(e);
                            (None, None)
                        }
                    }
                }
                (Some(t), _) => {
                    let kept = previous
                        .and_then(|p| p.listeners.get(&l.name))
                        .and_then(|s| s.certs.as_ref());
                    let path = format!("listeners[{i}].tls");
                    match crate::tls::server_config(t, l.http2, kept, &path, secrets.as_ref()) {
                        Ok((c, store)) => {
                            let counts = metrics.tls_certificate_reloads.clone();
                            let expiry = metrics
                                .tls_certificate_expiry
                                .get_or_create(&warden_telemetry::metrics::ListenerLabel(Arc::new(
                                    l.name.clone(),
                                )))
                                .clone();
                            let set_expiry = move |s: &warden_crypto::tls::CertStore| {
                                expiry.set(s.current().earliest_expiry().unwrap_or(0));
                            };
                            set_expiry(store.as_ref());
                            // Weak: the store owns its observer.
                            let watched = Arc::downgrade(&store);
                            store.observe(Box::new(move |ok| {
                                let result = if ok { "success" } else { "failure" };
                                counts
                                    .get_or_create(&warden_telemetry::metrics::Outcome(result))
                                    .inc();
                                if let Some(s) = watched.upgrade() {
                                    set_expiry(s.as_ref());
                                }
                            }));
                            (Some(c), Some(store))
                        }
                        Err(e) => {
                            errors.push(e);
                            (None, None)
                        }
                    }
                }
                (None, _) => (None, None),
            };
            listeners.insert(
                l.name.clone(),
                ListenerSettings {
                    tls,
                    certs,
                    http2: l.http2,
                },
            );
        }
        let mut clusters = HashMap::new();
        for (i, c) in config.clusters.iter().enumerate() {
            let reused = previous
                .and_then(|p| p.clusters.get(&c.name))
                .filter(|old| old.reusable_for(c, secrets.as_ref()))
                .cloned();
            let cluster = match reused {
                Some(c) => c,
                None => match Cluster::build(
                    c,
                    &format!("clusters[{i}]"),
                    metrics.clone(),
                    secrets.as_ref(),
                    identity.as_ref(),
                ) {
                    Ok(c) => Arc::new(c),
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                },
            };
            clusters.insert(c.name.clone(), cluster);
        }
        let dropped = metrics.revocation_messages_dropped.clone();
        for r in warden_auth::revocation::Dropped::ALL {
            let _ = dropped.get_or_create(&warden_telemetry::metrics::Reason(r.reason()));
        }
        let events = metrics.security_events().clone();
        let on_drop: warden_auth::revocation::DropHook =
            Arc::new(move |r: warden_auth::revocation::Dropped| {
                dropped
                    .get_or_create(&warden_telemetry::metrics::Reason(r.reason()))
                    .inc();
                events.emit(&warden_telemetry::SecurityEvent {
                    event: "revocation.message_dropped",
                    reason: r.reason(),
                    ..Default::default()
                });
            });
        let events = metrics.security_events().clone();
        let on_event: warden_auth::events::EventHook =
            Arc::new(move |e: warden_auth::events::SourceEvent<'_>| {
                events.emit(&warden_telemetry::SecurityEvent {
                    event: e.event,
                    reason: e.reason,
                    detail: Some(serde_json::json!({ "source": e.source })),
                    ..Default::default()
                });
            });
        let auth = match warden_auth::Authenticator::compile(
            &config.auth,
            previous.map(|p| p.auth.as_ref()),
            &on_drop,
            &on_event,
            secrets.as_ref(),
        ) {
            Ok(a) => Some(Arc::new(a)),
            Err(problems) => {
                errors.extend(
                    problems
                        .into_iter()
                        .map(|(path, why)| CompileError::new(path, why)),
                );
                None
            }
        };
        let global_headers = Arc::new(SecurityHeaders::compile(&config.security_headers));
        let rate_limit_store = rate_limit_store(&config, previous, metrics, secrets.as_ref())
            .map_err(|e| errors.push(e))
            .ok()
            .flatten();
        let mut routes = Vec::new();
        for (ri, r) in config.routes.iter().enumerate() {
            let Some(cluster) = clusters.get(&r.cluster).cloned() else {
                continue;
            };
            let path = match (&r.path_exact, &r.path_prefix, &r.path_regex) {
                (Some(p), _, _) => PathMatch::Exact(p.clone()),
                (_, Some(p), _) => PathMatch::Prefix(p.clone()),
                (_, _, Some(re)) => PathMatch::Regex(re.0.clone()),
                _ => PathMatch::Any,
            };
            // Typed when the config was read; a value missing here is a config that did not
            // validate, refused rather than matched more widely.
            let mut untyped = |what: String| {
                errors.push(CompileError::new(what, "not parsed"));
            };
            let headers = r
                .headers
                .iter()
                .enumerate()
                .filter_map(|(hi, h)| {
                    let Some(name) = h.name.value().cloned() else {
                        untyped(format!("routes[{ri}].headers[{hi}].name"));
                        return None;
                    };
                    Some(match (&h.exact, &h.regex, h.present) {
                        (Some(v), _, _) => HeaderCond::Exact(name, v.clone()),
                        (_, Some(re), _) => HeaderCond::Regex(name, re.0.clone()),
                        (_, _, true) => HeaderCond::Present(name),
                        (_, _, false) => HeaderCond::Absent(name),
                    })
                })
                .collect();
            let methods = r
                .methods
                .iter()
                .filter_map(|m| {
                    let v = m.value().cloned();
                    if v.is_none() {
                        untyped(format!("routes[{ri}].methods"));
                    }
                    v
                })
                .collect();
            let route = Route {
                name: Arc::new(r.name.clone()),
                path,
                methods,
                allow_trace: r.allow_trace,
                headers,
                cluster,
                timeout: r.timeout.unwrap_or(config.server.request_timeout).0,
                stream_idle_timeout: r.stream_idle_timeout.0,
                websocket: r
                    .websocket
                    .as_ref()
                    .map(crate::websocket::WebSocketRoute::compile),
                chain: Chain::compile(ChainParts {
                    security_headers: r
                        .security_headers
                        .as_ref()
                        .map(|s| Arc::new(SecurityHeaders::compile(s)))
                        .unwrap_or_else(|| global_headers.clone()),
                    ip_rules: IpRules {
                        allow: r.allow_cidrs.iter().map(|c| c.0).collect(),
                        deny: r.deny_cidrs.iter().map(|c| c.0).collect(),
                    },
                    cors: r.cors.as_ref().map(Cors::compile),
                    auth: match &r.auth {
                        Some(warden_config::RouteAuth::Rules(rules)) => {
                            Some(Arc::new(warden_auth::RoutePolicy::compile(rules)))
                        }
                        _ => None,
                    },
                    rate_limits: r
                        .rate_limits
                        .iter()
                        .enumerate()
                        .filter_map(|(i, l)| {
                            let old = previous
                                .and_then(|p| p.router.by_name(&r.name))
                                .map(|old| old.chain.rate_limits());
                            // A limit that cannot be built is an error, never a limit
                            // silently left out (that would fail open).
                            compile_limit(l, old, i, &r.name, rate_limit_store.as_ref(), metrics)
                                .map_err(|why| {
                                    errors.push(CompileError::new(
                                        format!("routes[{ri}].rate_limits[{i}]"),
                                        why,
                                    ))
                                })
                                .ok()
                        })
                        .collect(),
                    max_body_bytes: config.server.max_body_bytes.0,
                    underscore_headers: config.forwarding.headers_with_underscores,
                    rewrite: r
                        .rewrite_prefix
                        .clone()
                        .and_then(|w| r.path_prefix.clone().map(|p| (p, w))),
                    extra: extensions.to_vec(),
                }),
            };
            routes.push((Arc::new(route), r.hosts.clone()));
        }
        let request_id_header = config.forwarding.request_id_header.value().cloned();
        if request_id_header.is_none() {
            errors.push(CompileError::new(
                "forwarding.request_id_header",
                "not parsed",
            ));
        }
        let (Some(auth), Some(request_id_header), true) =
            (auth, request_id_header, errors.is_empty())
        else {
            return Err(errors);
        };
        let s = &config.server;
        let limits = Limits {
            max_header_bytes: s.max_header_bytes.0 as usize,
            max_headers: s.max_headers,
            max_uri_bytes: s.max_uri_bytes.0 as usize,
            max_body_bytes: s.max_body_bytes.0,
            header_read_timeout: s.header_read_timeout.0,
            idle_timeout: s.idle_timeout.0,
            max_connections: s.max_connections,
            max_in_flight: s.max_in_flight,
            drain_timeout: s.drain_timeout.0,
            allow_encoded_slash: s.allow_encoded_slash,
        };
        Ok(Snapshot {
            trusted_proxies: config
                .forwarding
                .trusted_proxies
                .iter()
                .map(|c| c.0)
                .collect(),
            request_id_header,
            underscore_headers: config.forwarding.headers_with_underscores,
            fallback_chain: Chain::fallback(global_headers),
            extensions,
            secrets,
            identity,
            auth,
            rate_limit_store,
            listener_routers: listener_routers(&config, &routes),
            router: Router::new(routes),
            clusters,
            listeners,
            limits,
            config: Arc::new(config),
        })
    }

    /// The routes a request on `listener` is matched against. A map lookup only when some
    /// listener names its routes; otherwise every listener serves every route.
    pub(crate) fn router_for(&self, listener: &str) -> &Router {
        if self.listener_routers.is_empty() {
            return &self.router;
        }
        self.listener_routers.get(listener).unwrap_or(&self.router)
    }

    /// Starts background work (health checks) for clusters that are new in this snapshot, and
    /// the listeners' certificate watchers unless `watch_certs` is false (a signed config pins
    /// its files: they change only through a checked reload).
    pub(crate) fn start_background(&self, watch_certs: bool) {
        if watch_certs {
            for store in self.listeners.values().filter_map(|l| l.certs.as_ref()) {
                store.watch(warden_crypto::tls::WATCH_INTERVAL);
            }
        }
        for c in self.clusters.values() {
            c.start_health_checks();
        }
        if let Some(store) = &self.rate_limit_store {
            store.start();
        }
    }
}

/// A router for each listener that names its routes, sharing the compiled routes (and so
/// their limiters and caches) with every other listener that serves them.
fn listener_routers(
    config: &Config,
    routes: &[(Arc<Route>, Vec<String>)],
) -> HashMap<String, Router> {
    config
        .listeners
        .iter()
        .filter(|l| !l.routes.is_empty())
        .map(|l| {
            let served = routes
                .iter()
                .filter(|(r, _)| l.routes.iter().any(|n| n == r.name.as_str()))
                .cloned()
                .collect();
            (l.name.clone(), Router::new(served))
        })
        .collect()
}

/// The shared Redis store, when a limit uses it: the previous snapshot's when
/// `[rate_limit_store]` (and the password it names) is unchanged, so a reload keeps the
/// connection. Nothing connects here: `warden check` and start-up never wait on Redis.
fn rate_limit_store(
    config: &Config,
    previous: Option<&Snapshot>,
    metrics: &Arc<Metrics>,
    secrets: &dyn SecretResolver,
) -> Result<Option<Arc<warden_limits::RedisStore>>, CompileError> {
    use warden_limits::{RedisStore, StoreConfig, StoreHealth};
    let s = &config.rate_limit_store;
    let used = config
        .routes
        .iter()
        .flat_map(|r| &r.rate_limits)
        .any(|l| l.store == warden_config::LimitStore::Redis);
    let (true, Some(url)) = (used, &s.redis_url) else {
        return Ok(None);
    };
    let password = match &s.password {
        None => None,
        Some(p) => Some(
            secrets
                .resolve_line(p)
                .map_err(|e| CompileError::new("rate_limit_store.password", e))?
                .to_string(),
        ),
    };
    let store_config = StoreConfig {
        url: url.clone(),
        password,
        timeout: s.timeout.0,
        key_prefix: s.key_prefix.clone(),
        gateways: s.gateways,
    };
    if let Some(old) = previous
        .and_then(|p| p.rate_limit_store.as_ref())
        .filter(|old| old.is_for(&store_config))
    {
        return Ok(Some(old.clone()));
    }
    let up = metrics.rate_limit_store_up.clone();
    let hook = Box::new(move |h: StoreHealth<'_>| match h {
        StoreHealth::Up => {
            up.set(1);
            tracing::info!("rate-limit store (Redis) answers");
        }
        StoreHealth::Down(why) => {
            up.set(0);
            tracing::warn!(
                error = why,
                "rate-limit store (Redis) unavailable: Redis-backed limits apply their on_store_failure until it answers again"
            );
        }
    });
    RedisStore::new(&store_config, hook)
        .map(|store| Some(Arc::new(store)))
        .map_err(|why| CompileError::new("rate_limit_store.redis_url", why))
}

/// Compiles a route's rate limit, reusing the limiters (and so their counters, or their Redis
/// leases) from the previous snapshot's route of the same name when that limit (and the
/// store) is unchanged.
fn compile_limit(
    l: &warden_config::RateLimitConfig,
    previous: Option<&[crate::router::RouteLimit]>,
    index: usize,
    route: &str,
    store: Option<&Arc<warden_limits::RedisStore>>,
    metrics: &Arc<Metrics>,
) -> Result<crate::router::RouteLimit, String> {
    use crate::router::{LimitKey, RouteLimit};
    let keys = l
        .key
        .parts()
        .iter()
        .map(|k| {
            Ok(match k.as_str() {
                "client_ip" => LimitKey::ClientIp,
                "route" => LimitKey::Route,
                "subject" => LimitKey::Subject,
                "api_key" => LimitKey::ApiKey,
                other if other.starts_with("claim:") => LimitKey::Claim(other[6..].to_owned()),
                other => LimitKey::Header(
                    other
                        .strip_prefix("header:")
                        .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                        .ok_or_else(|| format!("`{other}` is not a rate-limit key"))?,
                ),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if keys.is_empty() {
        return Err("a rate limit needs a key".into());
    }
    let label: Arc<str> = keys
        .iter()
        .map(LimitKey::kind)
        .collect::<Vec<_>>()
        .join("+")
        .into();
    let old = previous
        .and_then(|p| p.get(index))
        .filter(|old| old.config == *l);
    // The Redis key names the limit (and tier), never the value: that is hashed by the limiter.
    let key_name = {
        let mut n = String::new();
        for (i, k) in keys.iter().enumerate() {
            if i > 0 {
                n.push('+');
            }
            n.push_str(k.kind());
            match k {
                LimitKey::Header(h) => n.push_str(&format!("={h}")),
                LimitKey::Claim(c) => n.push_str(&format!("={c}")),
                _ => {}
            }
        }
        n
    };
    let tiered = !l.tiers.is_empty();
    let shape = Shape {
        requests: l.requests,
        per: l.per.0,
        burst: l.burst.unwrap_or(l.requests),
    };
    let base = compile_bucket(
        l,
        shape,
        old.map(|o| &o.base),
        &format!("{route}:{index}:{key_name}:"),
        &format!("{index}"),
        tiered.then(|| Arc::from("default")),
        store,
        metrics,
    )?;
    let mut tiers = Vec::with_capacity(l.tiers.len());
    // BTreeMap order: sorted by name, as `RouteLimit::bucket` searches them.
    for (name, t) in &l.tiers {
        let shape = Shape {
            requests: t.requests,
            per: t.per.map_or(l.per.0, |p| p.0),
            burst: t.burst.unwrap_or(t.requests),
        };
        let kept = old.and_then(|o| o.tiers.iter().find(|(n, _)| n == name).map(|(_, b)| b));
        let bucket = compile_bucket(
            l,
            shape,
            kept,
            &format!("{route}:{index}:tier={name}:{key_name}:"),
            &format!("{index}-{name}"),
            Some(Arc::from(name.as_str())),
            store,
            metrics,
        )
        .map_err(|why| format!("tier `{name}`: {why}"))?;
        tiers.push((name.clone(), bucket));
    }
    Ok(RouteLimit {
        keys,
        label,
        config: l.clone(),
        tier_claim: l.tier_claim.clone(),
        base,
        tiers,
    })
}

/// A limit's rate: `requests` per `per`, `burst` at once.
#[derive(Clone, Copy)]
struct Shape {
    requests: u64,
    per: std::time::Duration,
    burst: u64,
}

/// Builds one bucket of a limit (its own, or a tier's), keeping `kept`'s limiter when there is
/// one for the same store.
#[allow(clippy::too_many_arguments)]
fn compile_bucket(
    l: &warden_config::RateLimitConfig,
    shape: Shape,
    kept: Option<&crate::router::LimitBucket>,
    redis_key: &str,
    policy_name: &str,
    tier_label: Option<Arc<str>>,
    store: Option<&Arc<warden_limits::RedisStore>>,
    metrics: &Arc<Metrics>,
) -> Result<crate::router::LimitBucket, String> {
    use crate::router::{LimitBucket, Limiter, RedisLimit};
    let Shape {
        requests,
        per,
        burst,
    } = shape;
    let gcra = warden_limits::Gcra::new(requests, per, burst).ok_or_else(|| {
        format!(
            "{requests} per {per:?} with burst {burst} is out of range (burst × interval must fit in ~584 years)"
        )
    })?;
    let limiter = match l.store {
        warden_config::LimitStore::Local => match kept.map(|o| &o.limiter) {
            Some(Limiter::Local(kept)) => Limiter::Local(kept.clone()),
            _ => Limiter::Local(Arc::new(warden_limits::LocalLimiter::new(gcra, l.max_keys))),
        },
        warden_config::LimitStore::Redis => {
            let store =
                store.ok_or("store = \"redis\" needs a valid rate_limit_store.redis_url")?;
            match kept.map(|o| &o.limiter) {
                Some(Limiter::Redis(kept)) if Arc::ptr_eq(kept.limiter.store(), store) => {
                    Limiter::Redis(kept.clone())
                }
                _ => {
                    let limiter = warden_limits::RedisLimiter::new(
                        store.clone(),
                        format!("{}{redis_key}", store.key_prefix()),
                        requests,
                        per,
                        burst,
                        l.lease,
                        l.max_keys,
                    )?;
                    let result = match l.on_store_failure {
                        warden_config::StoreFailure::Local => "local",
                        warden_config::StoreFailure::Closed => "closed",
                        warden_config::StoreFailure::Unlimited => "open",
                    };
                    let store_errors = metrics
                        .rate_limit_store_errors
                        .get_or_create(&warden_telemetry::metrics::Outcome(result))
                        .clone();
                    Limiter::Redis(Arc::new(RedisLimit {
                        limiter,
                        on_failure: l.on_store_failure,
                        store_errors,
                    }))
                }
            }
        }
    };
    // draft-ietf-httpapi-ratelimit-headers: the policy's quota and window in seconds.
    let policy = http::HeaderValue::from_str(&format!(
        "\"{policy_name}\";q={requests};w={}",
        per.as_secs().max(1)
    ))
    .map_err(|_| "cannot express the policy as a header".to_string())?;
    Ok(LimitBucket {
        limiter,
        policy,
        emission: std::time::Duration::from_nanos(
            u64::try_from(per.as_nanos() / u128::from(requests))
                .unwrap_or(u64::MAX)
                .max(1),
        ),
        tier: tier_label,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use warden_config::{SecretError, SecretRef, SecretResolver, Zeroizing};
    use warden_telemetry::Metrics;

    use super::Snapshot;

    /// A store of secrets that is not the environment or a file, recording what it was asked.
    #[derive(Default)]
    struct Store(Mutex<Vec<String>>);

    impl SecretResolver for Store {
        fn resolve(&self, secret: &SecretRef) -> Result<Zeroizing<Vec<u8>>, SecretError> {
            self.0.lock().unwrap().push(secret.to_string());
            Ok(Zeroizing::new(b"from-the-store\n".to_vec()))
        }
    }

    #[test]
    fn secret_references_are_resolved_through_the_resolver_given_at_compile_time() {
        // Validation checks that the reference resolves here; then the file goes away, so only
        // a resolver that does not read it can compile the config.
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("redis-password");
        std::fs::write(&file, "pw\n").expect("write");
        let config = warden_config::parse(&format!(
            "[admin]\nenabled = false\n[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n\
             [rate_limit_store]\nredis_url = \"redis://127.0.0.1:1\"\n\
             password = \"file:{}\"\n\
             [[clusters]]\nname = \"c\"\nendpoints = [\"http://127.0.0.1:9\"]\n\
             [[routes]]\nname = \"r\"\ncluster = \"c\"\nauth = \"none\"\n\
             [[routes.rate_limits]]\nkey = \"client_ip\"\nrequests = 5\nstore = \"redis\"\n",
            file.display()
        ))
        .expect("config");
        std::fs::remove_file(&file).expect("remove");
        let metrics = Arc::new(Metrics::new());
        // The file is gone...
        let errors = Snapshot::compile(config.clone(), None, &metrics)
            .err()
            .expect("missing file");
        assert!(errors.iter().any(|e| e.path == "rate_limit_store.password"));
        // ...the resolver does, and a reload keeps asking it.
        let store = Arc::new(Store::default());
        let snap = Snapshot::compile_with(
            config.clone(),
            None,
            &metrics,
            Arc::from(Vec::new()),
            store.clone(),
            None,
        )
        .expect("compiles with the store's secret");
        assert!(Snapshot::compile(config, Some(&snap), &metrics).is_ok());
        let asked = format!("file:{}", file.display());
        assert_eq!(*store.0.lock().unwrap(), [asked.clone(), asked]);
    }
}
