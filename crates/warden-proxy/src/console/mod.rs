//! The web console on the admin listener: a read-only page at `/console/` (HTML, CSS and
//! plain JavaScript embedded in the binary; nothing is fetched from anywhere else) over a
//! JSON API at `/console/api/…` (see [`api`]). Every response under `/console` carries a
//! strict Content-Security-Policy (no inline script or style, no other origin), `nosniff`
//! and `frame-ancestors 'none'`; the API's answers are never cached. Who may read it is the
//! admin listener's rule ([`crate::admin_auth`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{Redirect, Response};
use axum::routing::get;
use axum::Router;
use warden_telemetry::history::{self, History};
use warden_telemetry::RecentEvents;

use crate::admin_auth::AdminAccess;
use crate::gateway::Gateway;

pub(crate) mod api;

/// The console's Content-Security-Policy: its own scripts, styles and API only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                       base-uri 'none'; form-action 'none'";

/// What the console's Authority page shows, from outside the data plane (the `warden` binary
/// fills it from the authority in the same process; the proxy never links the authority).
pub trait StatusSource: Send + Sync + 'static {
    /// The authority's status as JSON: clients, signing keys, seal, CA.
    fn status(&self) -> StatusFuture;
}

/// What [`StatusSource::status`] returns.
pub type StatusFuture = Pin<Box<dyn Future<Output = serde_json::Value> + Send>>;

/// The embedded files: path, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/console/",
        "text/html; charset=utf-8",
        include_bytes!("assets/index.html"),
    ),
    (
        "/console/console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
    (
        "/console/console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/console.js"),
    ),
    (
        "/console/icon.svg",
        "image/svg+xml",
        include_bytes!("assets/icon.svg"),
    ),
];

/// Whether `path` is one of the console's static files (open to all: the page must load to
/// ask for the token).
pub(crate) fn is_static(path: &str) -> bool {
    path == "/console" || ASSETS.iter().any(|(p, _, _)| *p == path)
}

/// The console's shared state.
#[derive(Clone)]
pub(crate) struct Console {
    pub(crate) gw: Arc<Gateway>,
    pub(crate) history: Arc<Mutex<History>>,
    pub(crate) recent: Arc<RecentEvents>,
    pub(crate) status: Option<Arc<dyn StatusSource>>,
    pub(crate) access: Arc<AdminAccess>,
    pub(crate) started: u64,
}

impl Console {
    pub(crate) fn new(
        gw: Arc<Gateway>,
        recent: Arc<RecentEvents>,
        status: Option<Arc<dyn StatusSource>>,
        access: Arc<AdminAccess>,
    ) -> Self {
        Console {
            gw,
            history: Arc::new(Mutex::new(History::new())),
            recent,
            status,
            access,
            started: unix_now(),
        }
    }
}

/// The console's routes: the static files and the API.
pub(crate) fn router(console: Console) -> Router {
    let mut r = Router::new().route(
        "/console",
        get(|| async { Redirect::permanent("/console/") }),
    );
    for (path, content_type, body) in ASSETS {
        r = r.route(
            path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, *content_type),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    *body,
                )
            }),
        );
    }
    r.merge(api::router(console))
}

/// Adds the console's security headers to every response under `/console`, refusals by the
/// admin listener's rule included.
pub(crate) async fn headers(req: Request, next: Next) -> Response {
    let console = req.uri().path().starts_with("/console");
    let mut resp = next.run(req).await;
    if console {
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        );
        h.insert(
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        );
        h.entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
    resp
}

/// Samples the per-route counters every [`history::BUCKET_SECONDS`] until shutdown.
pub(crate) async fn sample(console: Console) {
    let mut shutdown = console.gw.shutdown.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(history::BUCKET_SECONDS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let totals = history::totals(console.gw.metrics());
        let mut h = console.history.lock().unwrap_or_else(|p| p.into_inner());
        h.sample(unix_now(), totals);
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
