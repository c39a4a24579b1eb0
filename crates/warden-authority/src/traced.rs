//! The authority's spans: one server span per request it serves (token grants,
//! introspections, revocations, the vault's and the CA's calls), joined to the caller's trace
//! by `traceparent`, and the security events raised while serving it carry its ids.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use warden_otel::{KeyValue, Span, SpanKind, TraceIds};

use crate::services::Services;

/// The route a path belongs to, for span names: a bounded set, never a secret's path.
fn route(path: &str) -> &'static str {
    match path {
        "/oauth2/token" => "/oauth2/token",
        "/oauth2/introspect" => "/oauth2/introspect",
        "/oauth2/revoke" => "/oauth2/revoke",
        "/oauth2/revocations" => "/oauth2/revocations",
        "/oauth2/jwks" => "/oauth2/jwks",
        "/metrics" | "/healthz" => "/health",
        p if p.starts_with("/.well-known/") => "/.well-known",
        p if p.starts_with("/v1/") => "/v1/{path}",
        p if p.starts_with("/ca/") => "/ca",
        p if p.starts_with("/admin/") => "/admin",
        p if p.starts_with("/audit/") => "/audit",
        _ => "other",
    }
}

/// What the authority is asked to do, named as its security events are.
fn operation(route: &str) -> &'static str {
    match route {
        "/oauth2/token" => "token",
        "/oauth2/introspect" => "introspection",
        "/oauth2/revoke" => "revocation",
        "/v1/{path}" => "vault",
        "/ca" => "ca",
        "/admin" => "admin",
        _ => "other",
    }
}

/// Serves `req` inside its trace, and records the server span when the trace is sampled.
pub(crate) async fn traced(State(s): State<Arc<Services>>, req: Request, next: Next) -> Response {
    let tracer = s.tracer();
    let parent = req
        .headers()
        .get("traceparent")
        .and_then(|v| warden_otel::parse_traceparent(v.as_bytes()));
    let ids = TraceIds {
        trace_id: parent.map_or_else(warden_otel::new_trace_id, |p| p.trace_id),
        span_id: warden_otel::new_span_id(),
    };
    if !tracer.sample(parent.as_ref(), ids.trace_id) {
        return ids.scope(next.run(req)).await;
    }
    let start = SystemTime::now();
    let method = req.method().as_str().to_owned();
    let route = route(req.uri().path());
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::client_auth::Peer>>()
        .map(|c| c.0.ip);
    let res = ids.scope(next.run(req)).await;
    let status = res.status().as_u16();
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.clone()),
        KeyValue::new("http.route", route),
        KeyValue::new("http.response.status_code", i64::from(status)),
        KeyValue::new("warden.operation", operation(route)),
    ];
    if let Some(ip) = client {
        attributes.push(KeyValue::new("client.address", ip.to_string()));
    }
    let error = (status >= 500).then_some(Cow::Borrowed("server_error"));
    if status >= 400 {
        attributes.push(KeyValue::new("error.type", status.to_string()));
    }
    tracer.record(Span {
        ids,
        parent: parent.map(|p| (p.span_id, true)),
        kind: SpanKind::Server,
        name: Cow::Owned(format!("{method} {route}")),
        start,
        end: SystemTime::now(),
        attributes,
        error,
    });
    res
}
