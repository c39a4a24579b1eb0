//! One request's trip to a cluster, after admission: pick an endpoint (healthy and not
//! ejected) → try it within the per-try timeout → classify the outcome (a 5xx answer, a
//! connection error, a reset or a timeout is a failure for the endpoint's breaker) → maybe
//! retry on another endpoint, after a jittered back-off and only within the retry budget. The
//! route's timeout bounds all of it, body buffering included.
//!
//! A request is retried only when the cluster has `[retries]`, its method is listed, its body
//! was buffered whole (see [`super::replay`]), and the failure is a connection error, a reset
//! before the response head, a per-try timeout, or an answer with a listed status. The last
//! failure is what the client gets: an upstream answer is passed through unchanged, an error
//! becomes 502 or 504.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use tokio::time::Instant;
use warden_telemetry::metrics::{ClusterLabel, ClusterResult};

use super::admission::Admission;
use super::conn::{PooledBody, Upgraded};
use super::replay::{self, Buffered, Replay, Tee, UpstreamBody};
use super::{now_nanos, Cluster, EndpointGuard, EndpointState};
use crate::body::{BodyState, RequestBody};
use crate::error::Reject;

/// What a request sends upstream.
pub(crate) struct Outbound<'a> {
    /// The request head with its headers ready for the upstream (the URI is set per try).
    pub(crate) head: http::request::Parts,
    /// Path and query as forwarded.
    pub(crate) path_and_query: PathAndQuery,
    pub(crate) body: RequestBody,
    pub(crate) body_state: &'a BodyState,
    /// The value that picks the endpoint for consistent hashing.
    pub(crate) hash_value: Option<&'a [u8]>,
    /// The route's timeout: bounds buffering, every try and every back-off.
    pub(crate) timeout: Duration,
}

/// How the trip ended, and the endpoint it ended on (for the access log; the guard also holds
/// the request's cluster slot until the response is done).
pub(crate) struct Exchanged {
    pub(crate) response: Result<Response<PooledBody>, Reject>,
    pub(crate) upstream: Option<EndpointGuard>,
}

/// How one try ended.
enum Try {
    /// The exchange is over: this goes to the client.
    Done(Result<Response<PooledBody>, Reject>),
    /// The endpoint failed in a way a retry may fix.
    Failed(Failed),
}

/// A failed try, kept until the next one is under way (then dropped) or returned as is.
enum Failed {
    Answer(Response<PooledBody>),
    Error(Reject),
}

/// Method, version and headers, to build the head of a retry.
type Template = (Method, Version, HeaderMap);

fn finish(
    response: Result<Response<PooledBody>, Reject>,
    mut guard: EndpointGuard,
    admission: Admission,
) -> Exchanged {
    guard.hold(admission);
    Exchanged {
        response,
        upstream: Some(guard),
    }
}

impl Failed {
    fn into_result(self) -> Result<Response<PooledBody>, Reject> {
        match self {
            Failed::Answer(res) => Ok(res),
            Failed::Error(r) => Err(r),
        }
    }
}

/// The refusal for a request body that failed (the gateway's size limit, or the client).
fn body_reject(state: &BodyState) -> Reject {
    if state.too_large.load(Ordering::Acquire) {
        Reject::PayloadTooLarge
    } else {
        Reject::BadRequest("malformed request body")
    }
}

fn body_failed(state: &BodyState) -> bool {
    state.too_large.load(Ordering::Acquire) || state.client_error.load(Ordering::Acquire)
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

impl Cluster {
    /// Sends a request to the cluster, with the cluster's outlier detection and retries.
    pub(crate) async fn send(&self, out: Outbound<'_>, admission: Admission) -> Exchanged {
        let deadline = Instant::now() + out.timeout;
        let mut guard = match self.pick(out.hash_value) {
            Ok(g) => g,
            Err(r) => {
                return Exchanged {
                    response: Err(r),
                    upstream: None,
                }
            }
        };
        let Outbound {
            head,
            path_and_query,
            body,
            body_state,
            hash_value,
            ..
        } = out;
        let policy = self.retry.as_ref();
        // gRPC calls are retried on their status, whatever their method.
        let grpc = policy.is_some() && crate::grpc::is_grpc(&head.headers);
        let per_try = policy.map_or(self.response_timeout, |p| {
            p.per_try_timeout.min(self.response_timeout)
        });
        let (mut first_body, mut replay, tee) = match self
            .prepare_body(&head, grpc, body, body_state, deadline)
            .await
        {
            Ok(b) => b,
            Err(r) => return finish(Err(r), guard, admission),
        };
        // Retries need a copy of the head (the first try consumes the original).
        let template: Option<Template> = (replay.is_some() || tee.is_some())
            .then(|| (head.method.clone(), head.version, head.headers.clone()));
        // Whether the body can be sent again: kept whole, or teed and ended within the limit
        // by the time an answer asks for a retry.
        let resendable =
            |replay: &Option<Replay>| replay.is_some() || tee.as_ref().is_some_and(Tee::complete);
        let mut head = Some(head);
        let mut tried: Vec<usize> = Vec::new();
        let mut retry = 0u32;
        let mut token = None;
        loop {
            tried.push(guard.endpoint.index);
            let body = first_body
                .take()
                .or_else(|| replay.as_ref().map(Replay::body))
                .unwrap_or_else(UpstreamBody::empty);
            let req = match self.request(
                head.take(),
                template.as_ref(),
                &guard.endpoint,
                &path_and_query,
                body,
            ) {
                Ok(r) => r,
                Err(r) => return finish(Err(r), guard, admission),
            };
            if let Err(r) = self.take_connection_slot(&mut guard, deadline).await {
                return finish(Err(r), guard, admission);
            }
            let attempts_left = policy.filter(|p| retry < p.attempts);
            let retry_status = |s: u16, h: &HeaderMap| {
                attempts_left
                    .filter(|_| resendable(&replay))
                    .is_some_and(|p| {
                        if grpc {
                            p.retries_grpc_answer(s, h)
                        } else {
                            p.retries_status(s)
                        }
                    })
            };
            let wait = per_try.min(deadline.saturating_duration_since(Instant::now()));
            let failure = match self
                .try_once(&mut guard, req, wait, &retry_status, body_state)
                .await
            {
                Try::Done(result) => {
                    if let (true, Ok(res)) = (retry > 0, &result) {
                        let status = res.status().as_u16();
                        let retried = policy.is_some_and(|p| {
                            if grpc {
                                p.retries_grpc_answer(status, res.headers())
                            } else {
                                p.retries_status(status)
                            }
                        });
                        if status < 500 && !retried {
                            self.count_retry("succeeded");
                        }
                    }
                    return finish(result, guard, admission);
                }
                Try::Failed(f) => f,
            };
            drop(token.take());
            if replay.is_none() {
                replay = tee.as_ref().and_then(Tee::replay);
            }
            let Some(p) = attempts_left.filter(|_| replay.is_some()) else {
                return finish(failure.into_result(), guard, admission);
            };
            let Some(t) = self.load.try_retry(&p.budget) else {
                self.count_retry("budget_exhausted");
                return finish(failure.into_result(), guard, admission);
            };
            let delay = p.backoff(retry);
            if Instant::now() + delay >= deadline {
                return finish(failure.into_result(), guard, admission);
            }
            tokio::time::sleep(delay).await;
            let Some(next) = self.pick_retry(hash_value, &tried) else {
                return finish(failure.into_result(), guard, admission);
            };
            self.count_retry("attempted");
            token = Some(t);
            retry += 1;
            // The failed answer's connection goes back to the pool (or closes) here.
            drop(failure);
            guard = next;
        }
    }

    /// Sends an upgrade request (WebSocket): one try, on a connection of its own, within the
    /// route's timeout and the cluster's response timeout. It is never retried: the client's
    /// first frames may already be on their way. A 101 comes back with the upstream end of
    /// the tunnel; any other answer is passed through.
    pub(crate) async fn send_upgrade(
        &self,
        out: Outbound<'_>,
        admission: Admission,
    ) -> (Exchanged, Option<Upgraded>) {
        let mut guard = match self.pick(out.hash_value) {
            Ok(g) => g,
            Err(r) => {
                let ex = Exchanged {
                    response: Err(r),
                    upstream: None,
                };
                return (ex, None);
            }
        };
        let req = match self.request(
            Some(out.head),
            None,
            &guard.endpoint,
            &out.path_and_query,
            UpstreamBody::empty(),
        ) {
            Ok(r) => r,
            Err(r) => return (finish(Err(r), guard, admission), None),
        };
        let wait = self.response_timeout.min(out.timeout);
        let conns = self.connections(guard.endpoint.index);
        match tokio::time::timeout(wait, conns.send_upgrade(req)).await {
            Ok(Ok((res, upgraded))) => {
                self.record(&mut guard, res.status().as_u16() < 500);
                (finish(Ok(res), guard, admission), upgraded)
            }
            Ok(Err(e)) => {
                self.record_error(&guard.endpoint);
                self.record(&mut guard, false);
                tracing::warn!(cluster = %self.name, endpoint = %guard.endpoint.label, error = %error_chain(&*e), "upstream upgrade request failed");
                let r = if is_timeout(&*e) {
                    Reject::GatewayTimeout
                } else {
                    Reject::BadGateway
                };
                (finish(Err(r), guard, admission), None)
            }
            Err(_) => {
                self.record_error(&guard.endpoint);
                self.record(&mut guard, false);
                tracing::warn!(cluster = %self.name, endpoint = %guard.endpoint.label, timeout_ms = wait.as_millis() as u64, "upstream did not answer the upgrade in time");
                (finish(Err(Reject::GatewayTimeout), guard, admission), None)
            }
        }
    }

    /// The body for the first try and, when the request may be retried and its body fits the
    /// buffer, a copy to send again. Buffering is bounded by the route's deadline (past it:
    /// 408, the client was still sending).
    async fn prepare_body(
        &self,
        head: &http::request::Parts,
        grpc: bool,
        body: RequestBody,
        body_state: &BodyState,
        deadline: Instant,
    ) -> Result<(Option<UpstreamBody>, Option<Replay>, Option<Tee>), Reject> {
        if let Some(p) = self.retry.as_ref().filter(|p| grpc && p.retries_grpc()) {
            // Streamed at once, a copy kept: a streaming call's messages may wait on the
            // answers, so the body is never waited for.
            let copy = Tee::new(p.buffer_body_bytes);
            let teed = UpstreamBody::Tee {
                rest: body,
                copy: copy.clone(),
            };
            return Ok((Some(teed), None, Some(copy)));
        }
        let Some(p) = self
            .retry
            .as_ref()
            .filter(|p| p.retries_method(&head.method))
        else {
            return Ok((Some(UpstreamBody::Stream(body)), None, None));
        };
        let declared = content_length(&head.headers);
        let read = replay::buffer(body, p.buffer_body_bytes, declared);
        match tokio::time::timeout_at(deadline, read).await {
            Err(_) => Err(Reject::RequestTimeout),
            Ok(Err(_)) => Err(body_reject(body_state)),
            Ok(Ok(Buffered::Whole(r))) => Ok((None, Some(r), None)),
            Ok(Ok(Buffered::Streamed(b))) => Ok((Some(b), None, None)),
        }
    }

    /// Sends one try within `wait`, tells the endpoint's breaker how it went, and classifies
    /// it: an answer whose status `retry_status` accepts, a connection error, a reset or a
    /// timeout is a failure a retry may fix; anything else ends the exchange.
    async fn try_once(
        &self,
        guard: &mut EndpointGuard,
        req: Request<UpstreamBody>,
        wait: Duration,
        retry_status: &(dyn Fn(u16, &HeaderMap) -> bool + Sync),
        body_state: &BodyState,
    ) -> Try {
        let started = Instant::now();
        let conns = self.connections(guard.endpoint.index);
        match tokio::time::timeout(wait, conns.send(req)).await {
            Ok(Ok(res)) => {
                self.sample(started.elapsed());
                let status = res.status().as_u16();
                self.record(guard, status < 500);
                if retry_status(status, res.headers()) {
                    Try::Failed(Failed::Answer(res))
                } else {
                    Try::Done(Ok(res))
                }
            }
            Ok(Err(e)) => {
                if body_failed(body_state) {
                    // The client's fault, not the endpoint's: no outcome for its breaker.
                    return Try::Done(Err(body_reject(body_state)));
                }
                self.record_error(&guard.endpoint);
                self.record(guard, false);
                tracing::warn!(cluster = %self.name, endpoint = %guard.endpoint.label, error = %error_chain(&*e), "upstream request failed");
                Try::Failed(Failed::Error(if is_timeout(&*e) {
                    Reject::GatewayTimeout
                } else {
                    Reject::BadGateway
                }))
            }
            Err(_) => {
                if !body_state.complete.load(Ordering::Acquire) {
                    return Try::Done(Err(Reject::RequestTimeout));
                }
                self.sample(started.elapsed());
                self.record_error(&guard.endpoint);
                self.record(guard, false);
                tracing::warn!(cluster = %self.name, endpoint = %guard.endpoint.label, timeout_ms = wait.as_millis() as u64, "upstream did not answer in time");
                Try::Failed(Failed::Error(Reject::GatewayTimeout))
            }
        }
    }

    /// Builds one try's request: the original head for the first, a copy for retries.
    fn request(
        &self,
        head: Option<http::request::Parts>,
        template: Option<&Template>,
        ep: &EndpointState,
        pq: &PathAndQuery,
        body: UpstreamBody,
    ) -> Result<Request<UpstreamBody>, Reject> {
        // HTTP/1.1 sends the origin form; HTTP/2 needs scheme and authority (its pseudo-headers).
        let uri = if self.version == Version::HTTP_2 {
            Uri::builder()
                .scheme(self.scheme.clone())
                .authority(ep.authority.clone())
                .path_and_query(pq.clone())
                .build()
                .map_err(|_| Reject::BadRequest("invalid request target"))?
        } else {
            Uri::from(pq.clone())
        };
        let mut parts = match (head, template) {
            (Some(p), _) => p,
            (None, Some((method, version, headers))) => {
                let (mut p, ()) = Request::new(()).into_parts();
                p.method = method.clone();
                p.version = *version;
                p.headers = headers.clone();
                p
            }
            // A retry always has its template; without one there is nothing to send.
            (None, None) => return Err(Reject::BadGateway),
        };
        parts.uri = uri;
        parts.version = self.version;
        // An HTTP/1.0 client may send no Host; the upstream gets the one it would expect
        // when called directly: its own authority (HTTP/1.1 requires a Host).
        if !parts.headers.contains_key(http::header::HOST) {
            if let Ok(v) = http::HeaderValue::from_str(ep.authority.as_str()) {
                parts.headers.insert(http::header::HOST, v);
            }
        }
        Ok(Request::from_parts(parts, body))
    }

    /// Feeds a try's latency to the adaptive limit, if the cluster has one.
    fn sample(&self, rtt: Duration) {
        if let Some(limit) = self.load.sample(now_nanos(), rtt) {
            self.metrics
                .upstream_concurrency_limit
                .get_or_create(&ClusterLabel(self.name.clone()))
                .set(limit as i64);
        }
    }

    fn count_retry(&self, result: &'static str) {
        self.metrics
            .upstream_retries
            .get_or_create(&ClusterResult {
                cluster: self.name.clone(),
                result,
            })
            .inc();
    }
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        if err.to_string().contains("timed out") || err.to_string().contains("timeout") {
            return true;
        }
        cur = err.source();
    }
    false
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        out.push_str(": ");
        out.push_str(&err.to_string());
        cur = err.source();
    }
    out
}
