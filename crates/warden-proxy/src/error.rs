//! Errors, and the one place where a request-time error becomes an HTTP response.
//!
//! Each [`Reject`] has a stable code (the JSON body's `error`), a status and a short message;
//! internals (upstream addresses, IO errors) never reach the client, only the log.

use std::fmt;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// A config that parsed but cannot be compiled into a running snapshot (a certificate that
/// does not load, a key that does not match).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    /// Field path.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl CompileError {
    pub(crate) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl std::error::Error for CompileError {}

/// Why the gateway answered a request itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Malformed request (framing, host, path).
    BadRequest(&'static str),
    /// No route matched.
    NoRoute,
    /// The route does not forward this method (`TRACE`/`TRACK` unless `allow_trace`).
    MethodNotAllowed,
    /// The client address is not allowed on this route.
    Forbidden,
    /// A CORS preflight that the route's policy does not allow.
    CorsRejected,
    /// Request target longer than allowed.
    UriTooLong,
    /// Body larger than allowed.
    PayloadTooLarge,
    /// The client was too slow sending the request.
    RequestTimeout,
    /// Too many requests in flight at the gateway.
    Overloaded,
    /// A route's rate limit refused the request; retry after this many seconds.
    RateLimited(u64),
    /// Authentication or authorization refused the request.
    Auth(warden_auth::AuthError),
    /// No healthy endpoint in the cluster.
    NoHealthyUpstream,
    /// Every healthy endpoint of the cluster is ejected by outlier detection; the first
    /// ejection ends in this many seconds (at least 1).
    CircuitOpen(u64),
    /// The cluster's concurrency limit (bulkhead or adaptive) is reached.
    UpstreamBusy,
    /// The upstream could not be reached or broke the exchange.
    BadGateway,
    /// The upstream did not answer in time.
    GatewayTimeout,
    /// A WebSocket upgrade on a route without a `[routes.websocket]` section.
    UpgradeNotAllowed,
    /// A WebSocket handshake with a `Sec-WebSocket-Version` other than 13 (answered with 426
    /// and the version the gateway speaks, RFC 6455 §4.4).
    WebSocketVersion,
    /// The route's `websocket.max_connections` upgraded connections are open.
    TooManyWebSockets,
}

impl Reject {
    /// Status, stable code and message.
    pub fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Reject::BadRequest(why) => (StatusCode::BAD_REQUEST, "bad_request", why),
            Reject::NoRoute => (
                StatusCode::NOT_FOUND,
                "no_route",
                "no route for this request",
            ),
            Reject::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            ),
            Reject::Forbidden => (StatusCode::FORBIDDEN, "forbidden", "access denied"),
            Reject::Auth(e) => (
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED),
                e.code(),
                e.message(),
            ),
            Reject::CorsRejected => (
                StatusCode::FORBIDDEN,
                "cors_rejected",
                "CORS preflight not allowed",
            ),
            Reject::UriTooLong => (
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                "request target too long",
            ),
            Reject::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body too large",
            ),
            Reject::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "request not received in time",
            ),
            Reject::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests, retry later",
            ),
            Reject::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "gateway busy, retry later",
            ),
            Reject::NoHealthyUpstream => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no_healthy_upstream",
                "no healthy upstream",
            ),
            Reject::CircuitOpen(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "circuit_open",
                "upstream unavailable, retry later",
            ),
            Reject::UpstreamBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_busy",
                "upstream busy, retry later",
            ),
            Reject::BadGateway => (
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "upstream unavailable",
            ),
            Reject::GatewayTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                "upstream timed out",
            ),
            Reject::UpgradeNotAllowed => (
                StatusCode::FORBIDDEN,
                "upgrade_not_allowed",
                "websocket upgrades are not allowed on this route",
            ),
            Reject::WebSocketVersion => (
                StatusCode::UPGRADE_REQUIRED,
                "websocket_version",
                "unsupported Sec-WebSocket-Version (13 is supported)",
            ),
            Reject::TooManyWebSockets => (
                StatusCode::SERVICE_UNAVAILABLE,
                "websocket_limit",
                "too many open websockets on this route, retry later",
            ),
        }
    }

    /// The stable code. The access log's `reason` is the same, except for authentication and
    /// authorization refusals, where it is the precise reason (which the client never sees).
    pub fn code(self) -> &'static str {
        self.parts().1
    }

    /// The reason for the access log and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Reject::Auth(e) => e.reason(),
            other => other.code(),
        }
    }

    /// The response the client sees.
    pub fn response(self) -> Response<Bytes> {
        let (status, code, message) = self.parts();
        let body = format!("{{\"error\":\"{code}\",\"message\":\"{message}\"}}\n");
        let mut res = Response::new(Bytes::from(body));
        *res.status_mut() = status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Reject::Auth(e) = self {
            if let Some(v) = e
                .www_authenticate("")
                .and_then(|v| HeaderValue::from_str(&v).ok())
            {
                res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if self == Reject::WebSocketVersion {
            res.headers_mut().insert(
                http::header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        if matches!(
            self,
            Reject::Overloaded
                | Reject::NoHealthyUpstream
                | Reject::UpstreamBusy
                | Reject::TooManyWebSockets
        ) {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self == Reject::MethodNotAllowed {
            // RFC 9110 §15.5.6: a 405 lists what the resource does allow. A route that lists
            // its methods cannot list TRACE without `allow_trace` (validation), so the one
            // that refused it matches any method but these.
            res.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        if let Reject::RateLimited(secs) | Reject::CircuitOpen(secs) = self {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(
            self,
            Reject::BadRequest(_)
                | Reject::RequestTimeout
                | Reject::PayloadTooLarge
                | Reject::UpgradeNotAllowed
                | Reject::WebSocketVersion
        ) {
            // The connection's framing may be in doubt: do not reuse it.
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}
