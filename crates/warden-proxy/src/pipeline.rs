//! The request pipeline, generic over the request body: the gateway's own checks (in-flight
//! limit, HTTP/1 framing verdict), normalisation, routing, the route's filter chain (see
//! [`crate::filters`]), forwarding through an [`Upstream`], then — for every response, in one
//! place — the response phases in reverse order, and the end-of-exchange hook that counts the
//! request and writes its access-log line.
//!
//! Production forwards to the route's cluster (`handler.rs`); [`crate::InMemory`] forwards to
//! a function, so the whole pipeline runs in memory, without sockets.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Version};
use warden_telemetry::{AccessLog, AccessRecord};

use crate::body::{BodyState, OnFinish, ResponseBody};
use crate::conn_io::ActiveGuard;
use crate::cors::Cors;
use crate::error::Reject;
use crate::filters::{normalize, Exchange, Flow};
use crate::gateway::{Gateway, InFlightGuard};
use crate::handler::{ConnInfo, DASH};
use crate::headers;
use crate::router::Route;
use crate::snapshot::Snapshot;
use crate::trace::RequestTrace;
use crate::upstream::{Admission, EndpointGuard, Upgraded};
use crate::websocket::{Ended, OpenSlot, Revocation, Tunnel, WebSocketRoute};

/// A request ready for the upstream: filtered head, the target to send, the client's body.
pub(crate) struct Outgoing<'a, B> {
    /// The head, headers ready for the upstream (the URI is set by the upstream).
    pub(crate) head: http::request::Parts,
    /// Path (rewritten when the route says so) and query, as forwarded.
    pub(crate) path_and_query: PathAndQuery,
    pub(crate) body: B,
    pub(crate) route: &'a Route,
    /// The value that picks the endpoint for consistent hashing.
    pub(crate) hash_value: Option<&'a [u8]>,
    /// The request's cluster slot (bulkhead, adaptive limit).
    pub(crate) admission: Admission,
    pub(crate) max_body_bytes: u64,
    /// A WebSocket upgrade: sent on a connection of its own, and a 101 brings that
    /// connection back in [`Forwarded::upgraded`].
    pub(crate) upgrade: bool,
    /// Time allowed up to the response head: the route's timeout, or a gRPC call's
    /// `grpc-timeout` when shorter.
    pub(crate) timeout: std::time::Duration,
}

/// How forwarding ended.
pub(crate) struct Forwarded {
    pub(crate) response: Result<Response<ResponseBody>, Reject>,
    /// The endpoint it ended on (for the access log; holds the cluster slot until the
    /// response is done).
    pub(crate) upstream: Option<EndpointGuard>,
    /// What happened to the request body.
    pub(crate) body: Option<Arc<BodyState>>,
    /// The upstream end of an upgraded connection, when the upstream switched protocols.
    pub(crate) upgraded: Option<Upgraded>,
}

/// Where filtered requests go.
pub(crate) trait Upstream<B> {
    fn forward(self, out: Outgoing<'_, B>) -> impl Future<Output = Forwarded> + Send;
}

/// What the end-of-exchange hook needs besides the [`Exchange`].
#[derive(Default)]
struct Tail {
    upstream: Option<EndpointGuard>,
    body: Option<Arc<BodyState>>,
    /// An accepted WebSocket upgrade, to splice once the 101 is written.
    tunnel: Option<Accepted>,
}

/// An upgrade the upstream accepted: what the tunnel needs besides the access-log record.
struct Accepted {
    upstream: Upgraded,
    /// The client's HTTP/2 stream, for an extended CONNECT (HTTP/1.1 connections are taken
    /// back from hyper instead).
    client_stream: Option<hyper::upgrade::OnUpgrade>,
    settings: WebSocketRoute,
    slot: OpenSlot,
    revocation: Option<Revocation>,
}

/// Serves one request through the pipeline.
pub(crate) async fn run<B, U>(
    req: Request<B>,
    conn: &ConnInfo,
    gw: &Arc<Gateway>,
    upstream: U,
) -> Response<ResponseBody>
where
    U: Upstream<B>,
{
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
    let (head, body) = req.into_parts();
    let request_id = headers::request_id(&head.headers, &snap.request_id_header);
    let mut trace = RequestTrace::begin(&head.headers, gw.tracer());
    // A gRPC call gets its refusals as gRPC statuses.
    let grpc = crate::grpc::is_grpc(&head.headers);
    let version = head.version;
    let log_path = gw
        .access_log()
        .enabled()
        .then(|| head.uri.path().to_owned());
    let mut ex = Exchange {
        snap: &snap,
        route: None,
        method: head.method.clone(),
        host: String::new(),
        host_value: HeaderValue::from_static(""),
        path: String::new(),
        client_ip: conn.peer.ip(),
        tls: conn.tls,
        peer_cert: conn.peer_cert.as_ref().map(|c| c.as_ref()),
        preflight: false,
        grpc,
        now: started_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        identity: None,
        origin: None,
        upstream_path: None,
        hash_value: None,
        rejected: None,
        authorized: false,
        from_upstream: false,
        rate_limit: None,
        limited_by: None,
        phases: trace.recording.as_ref().map(|_| Vec::new()),
        denied_by: None,
    };
    let mut tail = Tail::default();
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
        serve(
            head,
            body,
            conn,
            gw,
            &snap,
            &mut ex,
            &mut tail,
            upstream,
            &request_id,
            &mut trace,
        )
        .await
    };
    let res = match result {
        Ok(res) => res,
        Err(reject) => {
            ex.rejected = Some(reject);
            if grpc {
                crate::grpc::refusal(reject).map(ResponseBody::full)
            } else {
                reject.response().map(ResponseBody::full)
            }
        }
    };

    // The response phase, in one place, for every response.
    let (mut parts, body) = res.into_parts();
    parts
        .headers
        .insert(header::SERVER, HeaderValue::from_static("warden"));
    parts
        .headers
        .insert(snap.request_id_header.clone(), request_id.clone());
    match ex.route {
        Some(r) => r.chain.response(&ex, &mut parts),
        None => snap.fallback_chain.response(&ex, &mut parts),
    }
    if version == Version::HTTP_2 {
        parts.headers.remove(header::CONNECTION);
    }
    let mut res = Response::from_parts(parts, body);

    let logging = log_path.is_some();
    let authorized = ex.identity.as_deref().filter(|_| ex.authorized);
    if let Some(rec) = trace.recording.as_mut() {
        rec.phases = ex.phases.take().unwrap_or_default();
        rec.host = std::mem::take(&mut ex.host);
        rec.path = std::mem::take(&mut ex.path);
        // Who, for the span: the subject once authorized, or the one a policy refused.
        if rec.subject.is_none() {
            rec.subject = ex.identity.as_ref().map(|id| id.subject.clone());
        }
    }
    let end = End {
        // Only what the access log needs is kept for it, and only when it is on.
        log: logging.then(|| (gw.access_log().clone(), conn.listener.clone())),
        time: started_at,
        start,
        request_id,
        route: ex.route.map_or_else(|| DASH.clone(), |r| r.name.clone()),
        method: std::mem::replace(&mut ex.method, Method::GET),
        path: log_path,
        version,
        status: res.status().as_u16(),
        client: conn.peer,
        reason: ex.rejected.map(Reject::reason),
        auth_denied: match ex.rejected {
            Some(Reject::Auth(e)) => Some(e),
            _ => None,
        },
        // Who was refused by a policy, for the security event (denials only).
        denied_subject: match ex.rejected {
            Some(Reject::Auth(warden_auth::AuthError::Forbidden { .. })) => {
                ex.identity.as_ref().map(|id| id.subject.clone())
            }
            _ => None,
        },
        denied_by: ex.denied_by.take(),
        // How the caller authenticated and who, once authorized.
        auth: authorized.map(|id| id.method.as_str()),
        subject: authorized.filter(|_| logging).map(|id| id.subject.clone()),
        limited_by: ex.limited_by.take(),
        upstream: tail.upstream,
        body: tail.body,
        tls: conn.tls,
        tracer: trace.recording.is_some().then(|| gw.tracer().clone()),
        trace,
    };
    drop(ex);
    end.at_head(gw);
    if let Some(accepted) = tail.tunnel.take() {
        // The 101: the access-log line and the connection's slot wait for the tunnel's end;
        // an open WebSocket is not a request in flight.
        drop(in_flight);
        let Accepted {
            upstream,
            client_stream,
            settings,
            slot,
            revocation,
        } = accepted;
        let metrics = gw.metrics().clone();
        metrics
            .websocket_upgrades
            .get_or_create(&warden_telemetry::metrics::RouteLabel(end.route.clone()))
            .inc();
        let tunnel = Tunnel {
            upstream,
            settings,
            revocation,
            on_end: Box::new(move |ended: &Ended| {
                drop(slot);
                end.at_tunnel_end(&metrics, ended);
                drop(active);
            }),
        };
        match client_stream {
            // HTTP/2: the stream is one of many on its connection, so the tunnel gets a task
            // of its own, on this thread, once hyper has sent the 200.
            Some(stream) => {
                let shutdown = gw.shutdown.subscribe();
                tokio::spawn(async move {
                    match stream.await {
                        Ok(io) => {
                            let io = hyper_util::rt::TokioIo::new(io);
                            tunnel.run(io, bytes::Bytes::new(), shutdown).await;
                        }
                        Err(_) => tunnel.abandon(),
                    }
                });
            }
            None => conn.shared.hand_off(tunnel),
        }
        return res;
    }
    res.body_mut().set_on_finish(Box::new(Finish {
        _active: active,
        _in_flight: in_flight,
        end,
    }));
    res
}

/// Normalisation, routing, the route's request phases, forwarding.
#[allow(clippy::too_many_arguments)]
async fn serve<'a, B, U>(
    mut head: http::request::Parts,
    body: B,
    conn: &ConnInfo,
    gw: &Gateway,
    snap: &'a Snapshot,
    ex: &mut Exchange<'a>,
    tail: &mut Tail,
    upstream: U,
    request_id: &HeaderValue,
    trace: &mut RequestTrace,
) -> Result<Response<ResponseBody>, Reject>
where
    U: Upstream<B>,
{
    let n = normalize::request(&head, conn.http1, snap)?;
    let handshake = crate::websocket::check_request(&head)?;
    ex.host = n.host;
    ex.host_value = n.host_value;
    ex.path = n.path;

    ex.preflight = Cors::is_preflight(&head.method, &head.headers);
    let match_method = if ex.preflight {
        head.headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or(Method::OPTIONS)
    } else {
        head.method.clone()
    };
    let route = snap
        .router_for(&conn.listener)
        .find(&ex.host, &ex.path, &match_method, &head.headers)
        .ok_or(Reject::NoRoute)?;
    ex.route = Some(route);
    // TRACE echoes the request back, credentials included (cross-site tracing); TRACK is
    // IIS's alias for it.
    if !route.allow_trace && (head.method == Method::TRACE || head.method.as_str() == "TRACK") {
        return Err(Reject::MethodNotAllowed);
    }
    if handshake.is_some() && route.websocket.is_none() {
        return Err(Reject::UpgradeNotAllowed);
    }
    ex.client_ip = headers::client_ip(conn.peer.ip(), &head.headers, &snap.trusted_proxies);
    let cluster = &route.cluster;
    // Read before any filter edits the headers.
    ex.hash_value = cluster
        .hash_header
        .as_ref()
        .and_then(|h| head.headers.get(h))
        .map(|v| v.as_bytes().to_vec());

    match route.chain.request(ex, &mut head).await {
        Flow::Continue => {}
        Flow::Reject(r) => return Err(r),
        Flow::Respond(res) => return Ok(res.map(ResponseBody::full)),
    }

    // The route's limit on open WebSockets, held from here to the tunnel's end.
    let ws = match (&handshake, &route.websocket) {
        (Some(hs), Some(settings)) => Some((
            hs,
            settings,
            OpenSlot::take(gw.metrics(), &route.name, settings.max_connections)
                .ok_or(Reject::TooManyWebSockets)?,
        )),
        _ => None,
    };
    // Bulkhead and adaptive limit: a full cluster answers at once.
    let admission = cluster.admit()?;
    let host_value = std::mem::replace(&mut ex.host_value, HeaderValue::from_static(""));
    headers::set_forwarded(
        &mut head.headers,
        conn.peer.ip(),
        conn.tls,
        host_value.to_str().unwrap_or(""),
        &snap.trusted_proxies,
    );
    head.headers
        .insert(snap.request_id_header.clone(), request_id.clone());
    trace.propagate(&mut head.headers);
    if !host_value.is_empty() {
        head.headers.insert(header::HOST, host_value);
    }
    // An HTTP/2 client's stream, once the 200 is sent (RFC 8441).
    let mut client_stream = None;
    if let Some((hs, ..)) = &ws {
        hs.restore_request_headers(&mut head);
        if hs.h2 {
            client_stream = head.extensions.remove::<hyper::upgrade::OnUpgrade>();
        }
    }
    let upstream_path = ex.upstream_path.as_deref().unwrap_or(&ex.path);
    let pq = match head.uri.query() {
        Some(q) => format!("{upstream_path}?{q}"),
        None => upstream_path.to_owned(),
    };
    let path_and_query =
        PathAndQuery::try_from(pq).map_err(|_| Reject::BadRequest("invalid request target"))?;
    head.version = cluster.version;
    let mut timeout = route.timeout;
    if let Some(v) = ex
        .grpc
        .then(|| head.headers.get(crate::grpc::GRPC_TIMEOUT))
        .flatten()
    {
        let grpc_timeout =
            crate::grpc::parse_timeout(v).ok_or(Reject::BadRequest("malformed grpc-timeout"))?;
        timeout = timeout.min(grpc_timeout);
    }

    let sent = upstream
        .forward(Outgoing {
            head,
            path_and_query,
            body,
            route,
            hash_value: ex.hash_value.as_deref(),
            admission,
            max_body_bytes: snap.limits.max_body_bytes,
            upgrade: ws.is_some(),
            timeout,
        })
        .await;
    tail.upstream = sent.upstream;
    tail.body = sent.body;
    match &sent.response {
        Ok(r) => trace.upstream_done(Some(r.status().as_u16()), None),
        Err(e) => trace.upstream_done(None, Some(e.reason())),
    }
    let mut res = sent.response?;
    // Read before the hop-by-hop headers (`Upgrade`, `Connection`) go.
    let accepted = ws
        .as_ref()
        .is_some_and(|(hs, ..)| hs.accepted_by(res.headers()));
    headers::strip_hop_by_hop(res.headers_mut());
    ex.from_upstream = true;
    if let Some((hs, settings, slot)) = ws {
        if res.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            let upstream = sent
                .upgraded
                .filter(|_| accepted)
                .ok_or_else(|| {
                    tracing::warn!(route = %route.name, "upstream answered a websocket upgrade with a 101 that does not accept it");
                    Reject::BadGateway
                })?;
            let (mut parts, body) = res.into_parts();
            hs.client_response(&mut parts);
            res = Response::from_parts(parts, body);
            if let Some(g) = tail.upstream.as_mut() {
                g.release_slots();
            }
            tail.tunnel = Some(Accepted {
                upstream,
                client_stream,
                settings: settings.clone(),
                slot,
                revocation: ex
                    .identity
                    .as_ref()
                    .and_then(|id| id.jti.clone())
                    .map(|jti| Revocation {
                        cache: snap.auth.cache().clone(),
                        jti,
                    }),
            });
        }
    } else if res.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        // Only an upgrade the gateway asked for may switch protocols.
        tracing::warn!(route = %route.name, "upstream switched protocols without an upgrade request");
        return Err(Reject::BadGateway);
    }
    Ok(res)
}

/// The end-of-exchange hook: what one request did, counted in the metrics when its response
/// head is ready and written to the access log when its body is done (or dropped).
struct End {
    /// The access log and the listener's name, when the log is on.
    log: Option<(AccessLog, Arc<String>)>,
    time: SystemTime,
    start: Instant,
    request_id: HeaderValue,
    route: Arc<String>,
    method: Method,
    /// The path as the client sent it; `None` when the access log is off.
    path: Option<String>,
    version: Version,
    status: u16,
    client: SocketAddr,
    reason: Option<&'static str>,
    auth_denied: Option<warden_auth::AuthError>,
    denied_subject: Option<String>,
    /// The Cedar policies behind a policy denial.
    denied_by: Option<String>,
    auth: Option<&'static str>,
    subject: Option<String>,
    limited_by: Option<(Arc<str>, Option<Arc<str>>)>,
    upstream: Option<EndpointGuard>,
    body: Option<Arc<BodyState>>,
    tls: bool,
    /// The request's trace; its spans are recorded at the end when it is sampled.
    trace: RequestTrace,
    /// Set when the trace is recorded.
    tracer: Option<warden_otel::Tracer>,
}

impl End {
    /// The request's metrics. Counted at the response head, so a scrape right after a
    /// response sees it, and the duration is the time to the response head, as before.
    fn at_head(&self, gw: &Gateway) {
        let metrics = gw.metrics();
        // Through the registry's per-route methods, so a reload can remove a gone route's
        // series.
        if let Some(e) = self.auth_denied {
            metrics.count_auth_denied(&self.route, e.reason());
            let event = match e {
                warden_auth::AuthError::Forbidden { .. } => "authz.denied",
                warden_auth::AuthError::Unavailable(_) => "authn.unavailable",
                _ => "authn.failure",
            };
            let detail = self
                .denied_by
                .as_ref()
                .map(|by| serde_json::json!({ "policy": by }));
            self.security_event(gw, event, e.reason(), detail);
        }
        if let Some(method) = self.auth {
            metrics.count_auth_allowed(&self.route, method);
        }
        if let Some((key, tier)) = &self.limited_by {
            metrics
                .rate_limited_counter(&self.route, key, tier.as_ref())
                .inc();
            let detail = serde_json::json!({"key": &**key, "tier": tier.as_deref()});
            self.security_event(gw, "ratelimit.refused", "over_limit", Some(detail));
        }
        metrics.count_request(&self.route, self.status);
        metrics.observe_request_duration(&self.route, self.start.elapsed().as_secs_f64());
    }

    /// A security decision about this request, on the gateway's event stream.
    fn security_event(
        &self,
        gw: &Gateway,
        event: &'static str,
        reason: &'static str,
        detail: Option<serde_json::Value>,
    ) {
        gw.security_events().emit(&warden_telemetry::SecurityEvent {
            event,
            reason,
            route: Some(&self.route),
            method: Some(self.method.as_str()),
            client: Some(self.client.ip()),
            request_id: self.request_id.to_str().ok(),
            status: Some(self.status),
            subject: self.denied_subject.as_deref(),
            detail,
            trace: Some(self.trace.ids),
        });
    }

    /// When an upgraded connection ends: its metrics, and its access-log line with its whole
    /// duration, the bytes each way and how it ended.
    fn at_tunnel_end(&self, metrics: &warden_telemetry::Metrics, ended: &Ended) {
        use warden_telemetry::metrics::{RouteDirection, RouteReason};
        metrics
            .websocket_closed
            .get_or_create(&RouteReason {
                route: self.route.clone(),
                reason: ended.closed.as_str(),
            })
            .inc();
        for (direction, n) in [
            ("to_upstream", ended.to_upstream),
            ("to_client", ended.to_client),
        ] {
            metrics
                .websocket_bytes
                .get_or_create(&RouteDirection {
                    route: self.route.clone(),
                    direction,
                })
                .inc_by(n);
        }
        self.write_log(
            ended.to_upstream,
            ended.to_client,
            Some(ended.closed.as_str()),
        );
        self.record_spans();
    }

    /// The request's spans, when its trace is sampled: the server span ends now.
    fn record_spans(&self) {
        let (Some(tracer), Some(rec)) = (&self.tracer, &self.trace.recording) else {
            return;
        };
        let upstream = self.upstream.as_ref().map(|g| g.endpoint().label.clone());
        crate::trace::record(
            tracer,
            self.trace.ids,
            self.trace.parent_span(),
            rec,
            &crate::trace::Exchanged {
                method: self.method.as_str(),
                route: &self.route,
                status: self.status,
                tls: self.tls,
                protocol: match self.version {
                    Version::HTTP_2 => "2",
                    Version::HTTP_10 => "1.0",
                    _ => "1.1",
                },
                client: self.client.ip(),
                request_id: self.request_id.to_str().unwrap_or("-"),
                refused: self.reason,
                auth: self.auth,
                subject: rec.subject.as_deref(),
                upstream: upstream.as_deref().map(|s| s.as_str()),
                start: self.time,
                end: SystemTime::now(),
            },
        );
    }

    /// The access-log line, when the response body is done.
    fn at_finish(&self, bytes_out: u64) {
        let bytes_in = self
            .body
            .as_ref()
            .map_or(0, |b| b.bytes.load(Ordering::Relaxed));
        self.write_log(bytes_in, bytes_out, None);
        self.record_spans();
    }

    fn write_log(&self, bytes_in: u64, bytes_out: u64, closed: Option<&str>) {
        let (Some(path), Some((log, listener))) = (&self.path, &self.log) else {
            return;
        };
        let time = warden_telemetry::format_time(self.time);
        let client = self.client.to_string();
        let upstream = self.upstream.as_ref().map(|g| g.endpoint().label.clone());
        let protocol = match self.version {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        log.write(&AccessRecord {
            time: &time,
            request_id: self.request_id.to_str().unwrap_or("-"),
            listener,
            route: &self.route,
            method: self.method.as_str(),
            path,
            protocol,
            status: self.status,
            duration_ms: self.start.elapsed().as_secs_f64() * 1000.0,
            upstream: upstream.as_deref().map_or("-", |s| s.as_str()),
            bytes_in,
            bytes_out,
            client: &client,
            reason: self.reason,
            auth: self.auth,
            subject: self.subject.as_deref(),
            closed,
            trace: Some(self.trace.ids),
        });
    }
}

/// Released when the response body is done: slots, and the access-log line.
struct Finish {
    _active: ActiveGuard,
    _in_flight: InFlightGuard,
    end: End,
}

impl OnFinish for Finish {
    fn finish(self: Box<Self>, bytes_out: u64) {
        self.end.at_finish(bytes_out);
    }
}
