//! The console's JSON API, GET only, never cached:
//!
//! - `session` (open to all): whether a token is needed, and whether the one sent opens the
//!   rest, so that the page asks for one without a failed request.
//! - `overview`: per route, requests, 5xx, 4xx and p99 latency over the last minute and the
//!   last ten minutes, in 10-second buckets ([`warden_telemetry::history`]); the gateway's
//!   connections and requests in flight.
//! - `routes`: each route's match, listeners, authentication, Cedar policy opt-in, rate
//!   limits and cluster (from the redacted config), and the policies' ids and effects.
//! - `upstreams`: each cluster's endpoints with health and breaker state (as `/upstreams`).
//! - `events?after=SEQ&limit=N`: the security events numbered after `SEQ`
//!   ([`warden_telemetry::recent`]), at most 200 a page.
//! - `authority`: what the [`super::StatusSource`] says, or `{"enabled": false}`.
//! - `config`: the running config, redacted (secrets only as references), and the last loads.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use warden_telemetry::history;
use warden_telemetry::recent::RECENT_PAGE;

use super::Console;

/// How long the Authority page waits for the authority's status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// The route fields the Routes page shows, as the config names them.
const ROUTE_MATCH: &[&str] = &[
    "hosts",
    "path_exact",
    "path_prefix",
    "path_regex",
    "methods",
    "headers",
];

pub(super) fn router(console: Console) -> Router {
    Router::new()
        .route("/console/api/session", get(session))
        .route("/console/api/overview", get(overview))
        .route("/console/api/routes", get(routes))
        .route("/console/api/upstreams", get(upstreams))
        .route("/console/api/events", get(events))
        .route("/console/api/authority", get(authority))
        .route("/console/api/config", get(config))
        .with_state(console)
}

fn reply(v: Value) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(v)).into_response()
}

async fn session(State(c): State<Console>, headers: HeaderMap) -> Response {
    reply(c.access.session(&headers))
}

async fn overview(State(c): State<Console>) -> Response {
    let now = super::unix_now();
    let current = history::totals(c.gw.metrics());
    let mut v = {
        let h = c.history.lock().unwrap_or_else(|p| p.into_inner());
        h.view(now, &current)
    };
    let last_load = c.gw.reload_history().list().into_iter().next();
    v["gateway"] = json!({
        "started": c.started,
        "ready": c.gw.is_ready(),
        "open_connections": c.gw.open_connections(),
        "in_flight": c.gw.metrics().in_flight.get(),
        "config_sha256": last_load.and_then(|l| l.config_sha256),
        "token_required": c.access.needs_token(),
    });
    reply(v)
}

async fn routes(State(c): State<Console>) -> Response {
    let snap = c.gw.snapshot();
    let cfg = snap.config();
    let redacted = warden_config::to_redacted_json(cfg);
    let empty = Vec::new();
    let list = redacted["routes"].as_array().unwrap_or(&empty);
    let routes: Vec<Value> = list
        .iter()
        .zip(&cfg.routes)
        .map(|(r, rc)| {
            let matches: Map<String, Value> = ROUTE_MATCH
                .iter()
                .filter_map(|k| {
                    let v = r.get(*k)?;
                    let set = !(v.is_null() || v.as_array().is_some_and(Vec::is_empty));
                    set.then(|| ((*k).to_owned(), v.clone()))
                })
                .collect();
            let listeners: Vec<&str> = cfg
                .listeners
                .iter()
                .filter(|l| l.routes.is_empty() || l.routes.contains(&rc.name))
                .map(|l| l.name.as_str())
                .collect();
            json!({
                "name": rc.name,
                "listeners": listeners,
                "match": matches,
                "auth": r["auth"],
                "rate_limits": r["rate_limits"],
                "cluster": rc.cluster,
                "allow_cidrs": r["allow_cidrs"],
                "deny_cidrs": r["deny_cidrs"],
                "websocket": rc.websocket.is_some(),
                "timeout": r["timeout"],
            })
        })
        .collect();
    let policies: Vec<Value> = snap
        .auth
        .policy_summary()
        .into_iter()
        .map(|(id, effect)| json!({"id": id, "effect": effect}))
        .collect();
    reply(json!({
        "routes": routes,
        "policies": policies,
        "policy_files": redacted["auth"]["policies"]["files"],
    }))
}

async fn upstreams(State(c): State<Console>) -> Response {
    reply(crate::admin::upstreams_json(&c.gw))
}

/// `events?after=SEQ&limit=N`: numbers that do not parse are a 400.
#[derive(Debug, Deserialize)]
struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn events(State(c): State<Console>, Query(q): Query<EventsQuery>) -> Response {
    let page = c
        .recent
        .after(q.after.unwrap_or(0), q.limit.unwrap_or(RECENT_PAGE));
    reply(json!(page))
}

async fn authority(State(c): State<Console>) -> Response {
    let Some(source) = &c.status else {
        return reply(json!({"enabled": false}));
    };
    match tokio::time::timeout(STATUS_TIMEOUT, source.status()).await {
        Ok(v) => reply(v),
        Err(_) => reply(json!({"enabled": true, "error": "the authority did not answer in 5 s"})),
    }
}

async fn config(State(c): State<Console>) -> Response {
    let snap = c.gw.snapshot();
    reply(json!({
        "path": c.gw.config_path().map(|p| p.display().to_string()),
        "config": warden_config::to_redacted_json(snap.config()),
        "reloads": c.gw.reload_history().list(),
    }))
}
