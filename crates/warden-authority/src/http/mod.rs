//! The authority's HTTP API: the OAuth endpoints, discovery, and the admin API.
//!
//! | method | path | who |
//! | --- | --- | --- |
//! | POST | `/oauth2/token` | clients (any registered auth method) |
//! | POST | `/oauth2/introspect` | clients granted `introspect` (RFC 7662); others get `{"active": false}` |
//! | POST | `/oauth2/revoke` | the client the token was issued to (RFC 7009) |
//! | GET | `/oauth2/revocations?after=N` | `Bearer` revocation-feed token or admin token |
//! | GET | `/oauth2/jwks` | anyone |
//! | GET | `/.well-known/oauth-authorization-server`, `/.well-known/openid-configuration` | anyone |
//! | GET, POST | `/ca/v1/bundle`, `/ca/v1/svid`, `/ca/v1/svid/renew` (with `[authority.ca]`; see `warden_ca::http`) | anyone, workloads with a join token or their SVID |
//! | POST | `/ca/v1/jwt-svid` (with `[authority.ca]`; see `jwt_svid.rs`) | workloads proving their X.509-SVID |
//! | GET, POST | `/admin/workloads`, `/admin/workloads/{entry}`, `.../revoke`, `.../join-token` (with `[authority.ca]`) | `Bearer` admin token |
//! | GET, POST, PATCH | `/admin/clients`, `/admin/clients/{id}` (PATCH: auth methods, introspect), `/admin/clients/{id}/secrets`, `/admin/clients/{id}/secrets/{secret_id}` (DELETE), `/admin/clients/{id}/disable`, `/admin/clients/{id}/enable` | `Bearer` admin token |

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;

use crate::authority::Authority;

mod admin;
mod discovery;
mod jwt_svid;
mod oauth;

/// Largest request body accepted (forms and admin JSON).
pub const MAX_BODY: usize = 64 * 1024;

/// The admin API, behind [`admin::require_admin`].
fn admin_routes(a: Arc<Authority>) -> Router<Arc<Authority>> {
    Router::new()
        .route(
            "/admin/clients",
            get(admin::list_clients).post(admin::create_client),
        )
        .route(
            "/admin/clients/{id}",
            get(admin::get_client).patch(admin::update_client),
        )
        .route("/admin/clients/{id}/secrets", post(admin::add_secret))
        .route(
            "/admin/clients/{id}/secrets/{secret_id}",
            delete(admin::remove_secret),
        )
        .route("/admin/clients/{id}/disable", post(admin::disable))
        .route("/admin/clients/{id}/enable", post(admin::enable))
        .route_layer(axum::middleware::from_fn_with_state(
            a,
            admin::require_admin,
        ))
}

/// The token service's routes, and the CA's when it runs (the authority's listener mounts
/// them, see `crate::app`). The CA's admin routes sit behind the same admin credential.
pub fn router(a: Arc<Authority>, ca: Option<Arc<warden_ca::Ca>>) -> Router {
    let token = Router::new()
        .route("/oauth2/token", post(oauth::token))
        .route("/oauth2/introspect", post(oauth::introspect))
        .route("/oauth2/revoke", post(oauth::revoke))
        .route("/oauth2/revocations", get(oauth::revocations))
        .route("/oauth2/jwks", get(discovery::jwks))
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::metadata),
        )
        .route("/.well-known/openid-configuration", get(discovery::openid))
        .merge(admin_routes(a.clone()))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(a.clone());
    let Some(ca) = ca else { return token };
    let clock = a.clone();
    let jwt = Router::new()
        .route("/ca/v1/jwt-svid", post(jwt_svid::issue))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(jwt_svid::JwtSvids::new(a.clone(), ca.clone()));
    let api = warden_ca::http::Api::new(ca, Arc::new(move || clock.now()));
    // The workloads' endpoints share the token service's failure throttle per address: a
    // guesser of join tokens or proofs is slowed down, and cannot flood the audit log.
    let workloads = jwt
        .merge(warden_ca::http::router::<crate::client_auth::Peer>(
            api.clone(),
        ))
        .route_layer(axum::middleware::from_fn_with_state(a.clone(), ca_throttle));
    token.merge(workloads).merge(
        warden_ca::http::admin_router::<crate::client_auth::Peer>(api).route_layer(
            axum::middleware::from_fn_with_state(a, admin::require_admin),
        ),
    )
}

/// Refuses (429) a POST from an address blocked for failed authentications, and counts each
/// refusal of a workload's proof (403) as a failure of its address. The bundle (GET) stays
/// public.
async fn ca_throttle(
    axum::extract::State(a): axum::extract::State<Arc<Authority>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<crate::client_auth::Peer>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if req.method() == axum::http::Method::GET {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    let refused = |reason: &'static str, status: u16| {
        a.events.emit(&warden_telemetry::SecurityEvent {
            event: "ca.refused",
            reason,
            method: Some("POST"),
            client: Some(peer.ip),
            status: Some(status),
            detail: Some(serde_json::json!({ "path": path })),
            ..Default::default()
        });
    };
    if let Some(wait) = a.throttle.blocked(None, peer.ip) {
        refused("throttled", 429);
        return oauth::too_many(wait);
    }
    let res = next.run(req).await;
    let status = res.status();
    if status == axum::http::StatusCode::FORBIDDEN {
        a.throttle.failure(None, peer.ip);
    }
    if status.is_client_error() {
        let code = res
            .extensions()
            .get::<warden_ca::http::RefusalCode>()
            .map_or("invalid_request", |c| c.0);
        refused(code, status.as_u16());
    }
    res
}
