//! The authority's one listener: which service answers which path.
//!
//! | path | service | while sealed |
//! | --- | --- | --- |
//! | `/v1/...` | the vault (Vault's HTTP API; errors `{"errors": [...]}`) | 503, except the seal endpoints |
//! | `/metrics` | the authority's Prometheus metrics | served |
//! | `/healthz` | liveness | `ok` |
//! | `/audit/v1/head` | the audit chain's signed head (`audit_head.rs`), public | 503 |
//! | anything else | the token service (OAuth, discovery, admin; RFC 6749 errors) | 503 `temporarily_unavailable` |
//!
//! On a standby (`[authority.ha]`), `/metrics`, `/healthz` and the vault's `sys/health`,
//! `sys/seal-status`, `sys/leader`, `sys/init` and `sys/unseal` answer here; every other
//! request gets a 307 to the same path on the active authority (or 503 while none is known).
//!
//! Each service has its own router and its own error mapping; this file only dispatches to
//! the services of the moment ([`Services::live`]), so seal and unseal swap them without
//! rebuilding the listener, and counts what each answered.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower::ServiceExt as _;

use crate::error::{no_store, ErrorCode};
use crate::metrics::GrantTag;
use crate::services::Services;

/// The router for the whole listener.
pub fn router(services: Arc<Services>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/audit/v1/head", get(audit_head))
        .nest_service("/v1", crate::vault::service(services.clone()))
        .fallback(token_service)
        .layer(axum::middleware::from_fn_with_state(
            services.clone(),
            crate::traced::traced,
        ))
        .with_state(services)
}

/// OpenMetrics for scrapers that ask for it (Prometheus does, in its Accept header), the
/// classic text format otherwise (curl, promtool), as the gateway's admin listener does.
async fn metrics(State(s): State<Arc<Services>>, headers: axum::http::HeaderMap) -> Response {
    let wants_open_metrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let text = s.render_metrics().await;
    let (body, content_type) = if wants_open_metrics {
        (
            text,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            warden_telemetry::metrics::to_prometheus_text(&text),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let mut res = body.into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// Dispatches to the token service, or answers 503 while sealed.
async fn token_service(State(s): State<Arc<Services>>, req: Request) -> Response {
    let Some(live) = s.live() else {
        if s.role() == crate::services::Role::Standby {
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            if let Some(res) = to_active(&s, pq) {
                return res;
            }
        }
        return sealed();
    };
    let endpoint = match req.uri().path() {
        "/oauth2/token" => Some("token"),
        "/oauth2/introspect" => Some("introspect"),
        "/oauth2/revoke" => Some("revoke"),
        _ => None,
    };
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::client_auth::Peer>>()
        .map(|c| c.0.ip);
    let res = match live.token_router.clone().oneshot(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    };
    if let Some(endpoint) = endpoint {
        let error = res.extensions().get::<ErrorCode>().copied();
        s.metrics().token_response(
            endpoint,
            res.status().as_u16(),
            res.extensions().get::<GrantTag>().copied(),
            error,
        );
        // A refused client authentication is its own event, with the precise reason
        // (client_auth.rs); a failure of ours is not a security decision.
        if let Some(code) = error.filter(|c| {
            !matches!(
                c,
                ErrorCode::InvalidClient
                    | ErrorCode::ServerError
                    | ErrorCode::TemporarilyUnavailable
            )
        }) {
            s.metrics()
                .security_events()
                .emit(&warden_telemetry::SecurityEvent {
                    event: "token.refused",
                    reason: code.as_str(),
                    method: Some("POST"),
                    client,
                    status: Some(res.status().as_u16()),
                    detail: Some(json!({ "endpoint": endpoint })),
                    ..Default::default()
                });
        }
    }
    res
}

/// The latest signed head of the audit chain (public: it names a count and a hash, nothing
/// else). Signed now if none was yet.
async fn audit_head(State(s): State<Arc<Services>>) -> Response {
    let Some(live) = s.live() else {
        if s.role() == crate::services::Role::Standby {
            if let Some(res) = to_active(&s, "/audit/v1/head") {
                return res;
            }
        }
        return sealed();
    };
    let signed = match live.audit_head.latest() {
        Some(h) => h,
        None => match live.audit_head.sign(s.store(), live.authority.now()).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign the audit head");
                let mut res = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"error": "temporarily_unavailable"})),
                )
                    .into_response();
                no_store(&mut res);
                return res;
            }
        },
    };
    let mut res = Json(&*signed).into_response();
    no_store(&mut res);
    res
}

/// A standby's answer: 307 to the same path and query on the active authority, or `None`
/// while none other is known. A 307 keeps the method and the body, so a client that follows
/// it (curl -L, `requests`, `hvac`) repeats its request there.
pub(crate) fn to_active(s: &Services, path_and_query: &str) -> Option<Response> {
    let (address, is_self, _) = s.leader()?;
    if is_self || address.is_empty() {
        return None;
    }
    let location = HeaderValue::from_str(&format!("{address}{path_and_query}")).ok()?;
    let mut res = StatusCode::TEMPORARY_REDIRECT.into_response();
    res.headers_mut().insert(header::LOCATION, location);
    no_store(&mut res);
    Some(res)
}

/// The token service's answer while sealed (or a standby with no active authority known):
/// RFC 6749's `temporarily_unavailable`.
fn sealed() -> Response {
    let mut res = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "error": "temporarily_unavailable",
            "error_description": "the authority is sealed",
        })),
    )
        .into_response();
    no_store(&mut res);
    res
}
