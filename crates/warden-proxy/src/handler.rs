//! The request path: checks, normalisation, routing, route filters, forwarding, response
//! filters, metrics and the access log. Every refusal is a [`Reject`] turned into a response in
//! one place ([`Reject::response`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use rustls::pki_types::CertificateDer;
use warden_config::UnderscoreHeaders;
use warden_telemetry::{AccessLog, AccessRecord};

use crate::body::{BodyState, OnFinish, RequestBody, ResponseBody};
use crate::conn_io::{ActiveGuard, ConnShared};
use crate::cors::{Cors, Preflight};
use crate::error::Reject;
use crate::gateway::{Gateway, InFlightGuard};
use crate::headers;
use crate::normalize::normalize_path;
use crate::snapshot::Snapshot;
use crate::upstream::exchange::Outbound;
use crate::upstream::EndpointGuard;

/// What the request path knows about the connection.
pub(crate) struct ConnInfo {
    pub(crate) listener: Arc<String>,
    pub(crate) peer: SocketAddr,
    /// When the connection was accepted.
    pub(crate) accepted: Instant,
    pub(crate) tls: bool,
    pub(crate) http1: bool,
    pub(crate) shared: Arc<ConnShared>,
    /// The verified client certificate (leaf), when the client sent one.
    pub(crate) peer_cert: Option<CertificateDer<'static>>,
}

impl ConnInfo {
    /// Counts and logs a refusal made below the handler on this connection.
    pub(crate) fn refused(&self, gw: &Gateway, refusal: crate::refusal::Refusal) {
        let at = crate::refusal::Where {
            listener: &self.listener,
            peer: self.peer,
            protocol: if self.http1 { "HTTP/1.1" } else { "HTTP/2" },
            accepted: self.accepted,
        };
        crate::refusal::record(gw, &at, refusal);
    }
}

/// Per-request facts gathered along the way, for the response, metrics and log.
struct Ctx {
    route: Option<Arc<crate::router::Route>>,
    upstream: Option<EndpointGuard>,
    reason: Option<&'static str>,
    body: Option<Arc<BodyState>>,
    /// The rate-limit state to report: policy, remaining, and the seconds until more quota
    /// is available (the `RateLimit` field's `t`).
    rate_limit: Option<(HeaderValue, u64, u64)>,
    /// What the limit that refused the request counts by.
    limited_by: Option<(Arc<str>, Option<Arc<str>>)>,
    /// How the caller authenticated, once authorized.
    auth_method: Option<&'static str>,
    /// Who, for the access log.
    subject: Option<String>,
}

/// Seconds since the Unix epoch, for token lifetimes.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Nanoseconds on a monotonic clock, for the rate limiters.
fn clock_nanos() -> u64 {
    static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    START.elapsed().as_nanos() as u64
}

/// Applies the route's rate limits in order. A request must pass all of them; the state of the
/// limit with the fewest requests left is reported in the `RateLimit` headers.
///
/// Local limits decide synchronously, without allocating; this future only waits when a
/// Redis-backed limit has no local lease left, and then for at most the store's timeout. When
/// Redis cannot answer, the limit's `on_store_failure` decides: `open` skips the limit,
/// `closed` refuses with `Retry-After: 1`.
async fn check_rate_limits(
    route: &crate::router::Route,
    client_ip: std::net::IpAddr,
    headers: &http::HeaderMap,
    identity: Option<&warden_auth::Identity>,
    ctx: &mut Ctx,
) -> Result<(), Reject> {
    use crate::router::{LimitKey, Limiter};
    use warden_limits::Decision;
    let now = clock_nanos();
    let ip_bytes = match client_ip {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    };
    let mut claim_text = String::new();
    let mut combined = Vec::new();
    for l in &route.rate_limits {
        let part = |k: &LimitKey, claim_text: &mut String| -> Option<&[u8]> {
            Some(match k {
                LimitKey::ClientIp => &ip_bytes[..],
                LimitKey::Route => b"",
                LimitKey::Header(h) => headers.get(h).map_or(&b""[..], |v| v.as_bytes()),
                LimitKey::Subject => identity.map_or(&b""[..], |i| i.subject.as_bytes()),
                LimitKey::ApiKey => identity
                    .and_then(|i| i.key_id.as_deref())
                    .map_or(&b""[..], str::as_bytes),
                LimitKey::Claim(name) => match identity.and_then(|i| i.claim(name)) {
                    Some(serde_json::Value::String(s)) => s.as_bytes(),
                    Some(other) => {
                        *claim_text = other.to_string();
                        return None;
                    }
                    None => b"",
                },
            })
        };
        let key: &[u8] = if let [one] = l.keys.as_slice() {
            match part(one, &mut claim_text) {
                Some(k) => k,
                None => claim_text.as_bytes(),
            }
        } else {
            // A combination: each part length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            combined.clear();
            for k in &l.keys {
                let bytes = match part(k, &mut claim_text) {
                    Some(b) => b,
                    None => claim_text.as_bytes(),
                };
                combined.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                combined.extend_from_slice(bytes);
            }
            &combined
        };
        let bucket = l.bucket(identity);
        let decision = match &bucket.limiter {
            Limiter::Local(local) => local.check(key, now),
            Limiter::Redis(r) => match r.limiter.try_lease(key, now) {
                Some(d) => d,
                // Boxed so that requests which never reach Redis do not carry its future.
                None => match Box::pin(r.limiter.check(key, now)).await {
                    Ok(d) => d,
                    Err(e) => {
                        r.store_errors.inc();
                        match r.on_failure {
                            // This gateway's share of the limit, as Redis last left it.
                            warden_config::StoreFailure::Local => r.limiter.fallback(key, now, e),
                            warden_config::StoreFailure::Unlimited => continue,
                            warden_config::StoreFailure::Closed => {
                                ctx.rate_limit = Some((bucket.policy.clone(), 0, 1));
                                ctx.limited_by = Some((l.label.clone(), bucket.tier.clone()));
                                return Err(Reject::RateLimited(1));
                            }
                        }
                    }
                },
            },
        };
        match decision {
            Decision::Allowed { remaining, reset } => {
                if ctx
                    .rate_limit
                    .as_ref()
                    .is_none_or(|(_, r, _)| remaining < *r)
                {
                    ctx.rate_limit = Some((
                        bucket.policy.clone(),
                        remaining,
                        next_quota_secs(reset, bucket.emission),
                    ));
                }
            }
            Decision::Limited { retry_after, .. } => {
                // More quota comes exactly when the next request fits: `t` and Retry-After
                // say the same.
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                ctx.rate_limit = Some((bucket.policy.clone(), 0, secs));
                ctx.limited_by = Some((l.label.clone(), bucket.tier.clone()));
                return Err(Reject::RateLimited(secs));
            }
        }
    }
    Ok(())
}

/// The `RateLimit` field's `t` for an allowed request: seconds (rounded up) until additional
/// quota is available (draft-ietf-httpapi-ratelimit-headers-10). A GCRA bucket regains one
/// request every `emission`, so the next one comes when the time to a full bucket (`reset`)
/// next crosses a multiple of the emission interval; a full bucket gains nothing (`t=0`).
fn next_quota_secs(reset: Duration, emission: Duration) -> u64 {
    let (reset, emission) = (reset.as_nanos(), emission.as_nanos().max(1));
    if reset == 0 {
        return 0;
    }
    let next = match reset % emission {
        0 => emission,
        r => r,
    };
    u64::try_from(next.div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
}

pub(crate) static DASH: std::sync::LazyLock<Arc<String>> =
    std::sync::LazyLock::new(|| Arc::new("-".to_owned()));

/// Serves one request.
pub(crate) async fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    gw: Arc<Gateway>,
) -> Result<Response<ResponseBody>, Infallible> {
    let start = Instant::now();
    let started_at = SystemTime::now();
    let active = conn.shared.begin();
    // Verdicts come one per HTTP/1 request head, in order: take ours before anything else.
    let verdict = if conn.http1 {
        conn.shared.next_verdict()
    } else {
        None
    };
    let in_flight = gw.enter();
    let snap = gw.snapshot();
    let request_id = headers::request_id(req.headers(), &snap.request_id_header);
    let method = req.method().clone();
    let version = req.version();
    let log_path = gw
        .access_log()
        .enabled()
        .then(|| req.uri().path().to_owned());
    let mut ctx = Ctx {
        route: None,
        upstream: None,
        reason: None,
        body: None,
        rate_limit: None,
        limited_by: None,
        auth_method: None,
        subject: None,
    };
    let result = if in_flight.over_limit(snap.limits.max_in_flight) {
        gw.metrics()
            .rejected
            .get_or_create(&warden_telemetry::metrics::Reason("in_flight_limit"))
            .inc();
        Err(Reject::Overloaded)
    } else if conn.http1 && verdict.is_none_or(|v| v.is_ambiguous()) {
        // No verdict: the inspector lost track of this connection's framing, so this head
        // cannot be vouched for.
        gw.metrics()
            .rejected
            .get_or_create(&warden_telemetry::metrics::Reason("ambiguous_framing"))
            .inc();
        Err(Reject::BadRequest("ambiguous message framing"))
    } else {
        forward(req, &conn, &snap, &request_id, &mut ctx).await
    };
    let mut auth_denied = None;
    let mut res = match result {
        Ok(res) => res,
        Err(reject) => {
            ctx.reason = Some(reject.reason());
            let mut res = reject.response().map(ResponseBody::full);
            if let Reject::Auth(e) = reject {
                auth_denied = Some(e.reason());
                if e.code() == "insufficient_scope" {
                    let scopes = ctx
                        .route
                        .as_ref()
                        .and_then(|r| r.auth.as_ref())
                        .map(|a| a.required_scopes())
                        .unwrap_or_default();
                    if let Some(v) = e
                        .www_authenticate(&scopes)
                        .and_then(|v| HeaderValue::from_str(&v).ok())
                    {
                        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                    }
                }
            }
            res
        }
    };

    // Response filters.
    let h = res.headers_mut();
    h.insert(header::SERVER, HeaderValue::from_static("warden"));
    h.insert(snap.request_id_header.clone(), request_id.clone());
    match &ctx.route {
        Some(r) => r.security_headers.apply(h, conn.tls),
        None => snap.security_headers.apply(h, conn.tls),
    }
    if version == Version::HTTP_2 {
        h.remove(header::CONNECTION);
    }
    if let Some((policy, remaining, reset)) = ctx.rate_limit.take() {
        h.insert(HeaderName::from_static("ratelimit-policy"), policy.clone());
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{};r={remaining};t={reset}",
            policy
                .to_str()
                .unwrap_or("\"0\"")
                .split(';')
                .next()
                .unwrap_or("\"0\"")
        )) {
            h.insert(HeaderName::from_static("ratelimit"), v);
        }
    }

    let route_name = ctx
        .route
        .as_ref()
        .map_or_else(|| DASH.clone(), |r| r.name.clone());
    let status = res.status().as_u16();
    let metrics = gw.metrics();
    // Through the registry's per-route methods, so a reload can remove a gone route's series.
    if let Some(reason) = auth_denied {
        metrics.count_auth_denied(&route_name, reason);
    }
    if let Some(method) = ctx.auth_method {
        metrics.count_auth_allowed(&route_name, method);
    }
    if let Some((key, tier)) = ctx.limited_by.take() {
        metrics
            .rate_limited_counter(&route_name, &key, tier.as_ref())
            .inc();
    }
    metrics.count_request(&route_name, status);
    metrics.observe_request_duration(&route_name, start.elapsed().as_secs_f64());

    let log = log_path.map(|path| LogLine {
        log: gw.access_log().clone(),
        time: started_at,
        start,
        request_id,
        listener: conn.listener.clone(),
        route: route_name,
        method,
        path,
        version,
        status,
        client: conn.peer,
        reason: ctx.reason,
        auth: ctx.auth_method,
        subject: ctx.subject.take(),
    });
    res.body_mut().set_on_finish(Box::new(Finish {
        _active: active,
        _in_flight: in_flight,
        upstream: ctx.upstream,
        body: ctx.body,
        log,
    }));
    Ok(res)
}

fn request_host(req: &Request<Incoming>) -> Result<(String, HeaderValue), Reject> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(Reject::BadRequest("duplicate Host header"));
    }
    let raw = match (req.uri().authority(), first) {
        (Some(a), _) => {
            HeaderValue::from_str(a.as_str()).map_err(|_| Reject::BadRequest("invalid host"))?
        }
        (None, Some(h)) => h.clone(),
        (None, None) if req.version() == Version::HTTP_10 => HeaderValue::from_static(""),
        (None, None) => return Err(Reject::BadRequest("missing Host header")),
    };
    if raw.is_empty() {
        return Ok((String::new(), raw));
    }
    let authority: http::uri::Authority = raw
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Reject::BadRequest("invalid Host header"))?;
    if authority.as_str().contains('@') {
        return Err(Reject::BadRequest("invalid Host header"));
    }
    Ok((
        authority.host().trim_end_matches('.').to_ascii_lowercase(),
        raw,
    ))
}

async fn forward(
    req: Request<Incoming>,
    conn: &ConnInfo,
    snap: &Snapshot,
    request_id: &HeaderValue,
    ctx: &mut Ctx,
) -> Result<Response<ResponseBody>, Reject> {
    let limits = &snap.limits;
    if req.method() == Method::CONNECT {
        return Err(Reject::BadRequest("CONNECT is not supported"));
    }
    let (host, host_value) = request_host(&req)?;
    if snap.underscore_headers == UnderscoreHeaders::Reject
        && req.headers().keys().any(|k| k.as_str().contains('_'))
    {
        return Err(Reject::BadRequest("header name with underscore"));
    }
    if conn.http1 {
        let mut te = req.headers().get_all(header::TRANSFER_ENCODING).iter();
        if let Some(v) = te.next() {
            let chunked_only = v.as_bytes().eq_ignore_ascii_case(b"chunked");
            if !chunked_only || te.next().is_some() {
                return Err(Reject::BadRequest("unsupported transfer coding"));
            }
        }
    }
    let pq_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if pq_len > limits.max_uri_bytes {
        return Err(Reject::UriTooLong);
    }
    let path = normalize_path(req.uri().path(), limits.allow_encoded_slash)
        .map_err(|_| Reject::BadRequest("invalid path"))?;

    let preflight = Cors::is_preflight(req.method(), req.headers());
    let match_method = if preflight {
        req.headers()
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or(Method::OPTIONS)
    } else {
        req.method().clone()
    };
    let route = snap
        .router
        .find(&host, &path, &match_method, req.headers())
        .ok_or(Reject::NoRoute)?
        .clone();
    ctx.route = Some(route.clone());
    // TRACE echoes the request back, credentials included (cross-site tracing); TRACK is
    // IIS's alias for it.
    if !route.allow_trace && (req.method() == Method::TRACE || req.method().as_str() == "TRACK") {
        return Err(Reject::MethodNotAllowed);
    }

    let client_ip = headers::client_ip(conn.peer.ip(), req.headers(), &snap.trusted_proxies);
    if !route.ip_allowed(client_ip) {
        return Err(Reject::Forbidden);
    }
    // Preflights carry no credentials (browsers never send them), so they are answered
    // before authentication; they reveal only the route's CORS policy.
    if preflight {
        if let Some(cors) = &route.cors {
            return match cors.preflight(req.headers()) {
                Preflight::Allowed(res) => {
                    Ok(res.map(|()| ResponseBody::full(bytes::Bytes::new())))
                }
                Preflight::Denied => Err(Reject::CorsRejected),
            };
        }
    }
    let now = unix_now();
    let identity = match &route.auth {
        None => None,
        Some(policy) => {
            let id = snap
                .auth
                .authenticate(
                    policy,
                    req.headers(),
                    conn.peer_cert.as_ref().map(|c| c.as_ref()),
                    now,
                )
                .await
                .map_err(Reject::Auth)?;
            snap.auth
                .authorize(
                    policy,
                    &id,
                    req.method(),
                    &route.name,
                    &path,
                    &host,
                    client_ip,
                )
                .map_err(Reject::Auth)?;
            ctx.auth_method = Some(id.method.as_str());
            ctx.subject = Some(id.subject.clone());
            Some(id)
        }
    };
    if !route.rate_limits.is_empty() {
        check_rate_limits(&route, client_ip, req.headers(), identity.as_deref(), ctx).await?;
    }
    if let Some(cl) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if cl > limits.max_body_bytes {
            return Err(Reject::PayloadTooLarge);
        }
    }

    let cluster = route.cluster.clone();
    let hash_value = cluster
        .hash_header
        .as_ref()
        .and_then(|h| req.headers().get(h))
        .map(|v| v.as_bytes().to_vec());
    // Bulkhead and adaptive limit first: a full cluster answers at once.
    let admission = cluster.admit()?;

    let (mut parts, body) = req.into_parts();
    let origin = parts.headers.get(header::ORIGIN).cloned();
    headers::strip_hop_by_hop(&mut parts.headers);
    snap.auth.strip_identity_headers(&mut parts.headers);
    if snap.underscore_headers == UnderscoreHeaders::Drop {
        headers::drop_underscored(&mut parts.headers);
    }
    if let (Some(id), Some(policy)) = (&identity, &route.auth) {
        snap.auth
            .add_identity_headers(policy, id, &cluster.name, &mut parts.headers, now)
            .map_err(Reject::Auth)?;
    }
    headers::set_forwarded(
        &mut parts.headers,
        conn.peer.ip(),
        conn.tls,
        host_value.to_str().unwrap_or(""),
        &snap.trusted_proxies,
    );
    parts
        .headers
        .insert(snap.request_id_header.clone(), request_id.clone());
    headers::propagate_trace(&mut parts.headers);
    if !host_value.is_empty() {
        parts.headers.insert(header::HOST, host_value);
    }
    let upstream_path = route.upstream_path(&path);
    let pq = match parts.uri.query() {
        Some(q) => format!("{upstream_path}?{q}"),
        None => upstream_path.into_owned(),
    };
    let path_and_query = http::uri::PathAndQuery::try_from(pq)
        .map_err(|_| Reject::BadRequest("invalid request target"))?;
    parts.version = cluster.version;
    let state = Arc::new(BodyState::default());
    ctx.body = Some(state.clone());
    let body = RequestBody::new(body, limits.max_body_bytes, state.clone());

    // Endpoint pick (health and breakers), tries, retries: upstream/exchange.rs.
    let sent = cluster
        .send(
            Outbound {
                head: parts,
                path_and_query,
                body,
                body_state: &state,
                hash_value: hash_value.as_deref(),
                timeout: route.timeout,
            },
            admission,
        )
        .await;
    ctx.upstream = sent.upstream;
    let (mut rp, rb) = sent.response?.into_parts();
    headers::strip_hop_by_hop(&mut rp.headers);
    if let Some(cors) = &route.cors {
        cors.apply(origin.as_ref(), &mut rp.headers);
    }
    Ok(Response::from_parts(rp, ResponseBody::stream(rb)))
}

struct LogLine {
    log: AccessLog,
    time: SystemTime,
    start: Instant,
    request_id: HeaderValue,
    listener: Arc<String>,
    route: Arc<String>,
    method: Method,
    path: String,
    version: Version,
    status: u16,
    client: SocketAddr,
    reason: Option<&'static str>,
    auth: Option<&'static str>,
    subject: Option<String>,
}

/// Released when the response body is done: slots, and the access-log line.
struct Finish {
    _active: ActiveGuard,
    _in_flight: InFlightGuard,
    upstream: Option<EndpointGuard>,
    body: Option<Arc<BodyState>>,
    log: Option<LogLine>,
}

impl OnFinish for Finish {
    fn finish(self: Box<Self>, bytes_out: u64) {
        let Some(l) = &self.log else { return };
        let time = warden_telemetry::format_time(l.time);
        let client = l.client.to_string();
        let upstream = self.upstream.as_ref().map(|g| g.endpoint().label.clone());
        let protocol = match l.version {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        l.log.write(&AccessRecord {
            time: &time,
            request_id: l.request_id.to_str().unwrap_or("-"),
            listener: &l.listener,
            route: &l.route,
            method: l.method.as_str(),
            path: &l.path,
            protocol,
            status: l.status,
            duration_ms: l.start.elapsed().as_secs_f64() * 1000.0,
            upstream: upstream.as_deref().map_or("-", |s| s.as_str()),
            bytes_in: self
                .body
                .as_ref()
                .map_or(0, |b| b.bytes.load(Ordering::Relaxed)),
            bytes_out,
            client: &client,
            reason: l.reason,
            auth: l.auth,
            subject: l.subject.as_deref(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::next_quota_secs;
    use std::time::Duration;

    #[test]
    fn t_is_the_time_until_the_next_request_is_regained() {
        let ms = Duration::from_millis;
        // 5 per second: one request back every 200 ms, so never more than a second away.
        assert_eq!(next_quota_secs(ms(2000), ms(200)), 1);
        assert_eq!(next_quota_secs(ms(1950), ms(200)), 1);
        // 1,000 per hour (3.6 s each): 7.3 s to full means the next one in 0.1 s...
        assert_eq!(next_quota_secs(ms(7300), ms(3600)), 1);
        // ...and 7.2 s to full (exactly two behind) means a whole interval, rounded up.
        assert_eq!(next_quota_secs(ms(7200), ms(3600)), 4);
        // A full bucket regains nothing.
        assert_eq!(next_quota_secs(Duration::ZERO, ms(200)), 0);
    }
}
