//! The admin listener (loopback by default): `/metrics`, `/healthz`, `/readyz`, `/config`
//! (secrets appear only as their `env:`/`file:` references), `/upstreams` (endpoint health,
//! breakers and load), `POST /reload` and the web console at `/console/` ([`crate::console`]),
//! behind `admin.token` ([`crate::admin_auth`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::admin_auth::AdminAccess;
use crate::console::Console;
use crate::gateway::Gateway;

/// The admin API's routes, the console's, and the access rule over them.
pub(crate) fn router(gw: Arc<Gateway>, access: Arc<AdminAccess>, console: Console) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/config", get(config))
        .route("/upstreams", get(upstreams))
        .route("/reload", post(reload))
        .with_state(gw)
        .merge(crate::console::router(console))
        .layer(axum::middleware::from_fn_with_state(
            access,
            crate::admin_auth::guard,
        ))
        .layer(axum::middleware::from_fn(crate::console::headers))
}

/// OpenMetrics for scrapers that ask for it (Prometheus does, in its Accept header), the
/// classic text format otherwise (curl, promtool, older scrapers).
async fn metrics(State(gw): State<Arc<Gateway>>, headers: axum::http::HeaderMap) -> Response {
    identity_gauges(&gw);
    let wants_open_metrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if wants_open_metrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            gw.metrics().encode(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            gw.metrics().encode_prometheus(),
        )
            .into_response()
    }
}

/// Ready once every listener is bound; a sidecar also needs a current SVID. A sidecar whose
/// renewals fail is still ready while its SVID is valid, and says so.
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if !gw.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    }
    let Some(identity) = gw.snapshot().identity.clone() else {
        return (StatusCode::OK, "ready\n").into_response();
    };
    if identity.certified_key().is_none() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no workload identity (the SVID has expired or was never issued)\n",
        )
            .into_response();
    }
    let status = identity.status();
    match (status.renewal_failing_since, status.not_after) {
        (Some(since), Some(not_after)) => (
            StatusCode::OK,
            format!(
                "ready; SVID renewal failing since {since} ({}); the SVID expires at {not_after}\n",
                status.last_error.unwrap_or_default()
            ),
        )
            .into_response(),
        _ => (StatusCode::OK, "ready\n").into_response(),
    }
}

/// Sets the sidecar's SVID gauges from its identity, before a scrape.
fn identity_gauges(gw: &Gateway) {
    let Some(identity) = gw.snapshot().identity.clone() else {
        return;
    };
    let status = identity.status();
    let m = gw.metrics();
    m.set_sidecar(true);
    m.sidecar_svid_expiry.set(
        status
            .not_after
            .filter(|_| identity.certified_key().is_some())
            .unwrap_or(0),
    );
    m.sidecar_svid_renewal_failing
        .set(i64::from(status.renewal_failing_since.is_some()));
}

/// The public keys of the gateway's internal tokens, for services that verify them.
async fn jwks(State(gw): State<Arc<Gateway>>) -> Response {
    (
        [(header::CACHE_CONTROL, "max-age=60")],
        Json(gw.snapshot().auth.internal_jwks()),
    )
        .into_response()
}

async fn config(State(gw): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    Json(warden_config::to_redacted_json(gw.snapshot().config()))
}

/// Each cluster's endpoints: health, breaker state, load and concurrency limits.
async fn upstreams(State(gw): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    Json(upstreams_json(&gw))
}

/// Every cluster's status, by name.
pub(crate) fn upstreams_json(gw: &Gateway) -> serde_json::Value {
    let snap = gw.snapshot();
    let mut clusters: Vec<_> = snap.clusters.values().collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    serde_json::json!({
        "clusters": clusters.iter().map(|c| c.status()).collect::<Vec<_>>(),
    })
}

async fn reload(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.reload().await {
        Ok(()) => (
            StatusCode::OK,
            Json(serde_json::json!({"status": "reloaded"})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({"status": "rejected", "errors": e.errors})),
        )
            .into_response(),
    }
}
