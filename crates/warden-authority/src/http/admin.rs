//! The admin API: manage clients with `Authorization: Bearer <admin token>`. Without a
//! configured admin token every admin path answers 404. The credential is checked once, by
//! [`require_admin`], a layer on every admin route; the handlers only do their work.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::authority::Authority;
use crate::client_auth::Peer;
use crate::clients::{public_view, ClientSpec, ClientUpdate};
use crate::error::{no_store, AuthorityError};

use super::oauth::{bearer_matches, bearer_refused, too_many};

/// Who the admin API records as the actor.
const ACTOR: &str = "admin";

fn reply(status: StatusCode, v: Value) -> Response {
    let mut res = (status, Json(v)).into_response();
    no_store(&mut res);
    res
}

fn failed(e: AuthorityError) -> Response {
    match e {
        AuthorityError::Invalid(m) => reply(
            StatusCode::BAD_REQUEST,
            json!({ "error": "invalid_request", "error_description": m }),
        ),
        AuthorityError::NoClient(_) => {
            reply(StatusCode::NOT_FOUND, json!({ "error": "not_found" }))
        }
        other => {
            tracing::error!(error = %other, "admin API failed");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "server_error" }),
            )
        }
    }
}

/// Checks the admin credential; `Err` is the response to send.
async fn admin(a: &Authority, headers: &HeaderMap, peer: &Peer) -> Result<(), Response> {
    let Some(token) = a.settings.admin_token.as_deref() else {
        return Err(reply(
            StatusCode::NOT_FOUND,
            json!({ "error": "not_found" }),
        ));
    };
    if let Some(w) = a.throttle.blocked(None, peer.ip) {
        return Err(too_many(w));
    }
    if bearer_matches(headers, &[Some(&token[..])]) {
        Ok(())
    } else {
        Err(bearer_refused(a, peer, "admin").await)
    }
}

/// The admin routes' layer: the request reaches its handler only with the admin token.
pub(super) async fn require_admin(
    State(a): State<Arc<Authority>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
    match admin(&a, req.headers(), &peer).await {
        Ok(()) => next.run(req).await,
        Err(res) => res,
    }
}

fn body_json<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

fn bad_body(why: String) -> Response {
    reply(
        StatusCode::BAD_REQUEST,
        json!({ "error": "invalid_request", "error_description": why }),
    )
}

/// `GET /admin/clients`.
pub(super) async fn list_clients(State(a): State<Arc<Authority>>) -> Response {
    match a.registry.list().await {
        Ok(cs) => reply(
            StatusCode::OK,
            json!({ "clients": cs.iter().map(public_view).collect::<Vec<_>>() }),
        ),
        Err(e) => failed(e),
    }
}

/// `GET /admin/clients/{id}`.
pub(super) async fn get_client(
    State(a): State<Arc<Authority>>,
    Path(id): Path<String>,
) -> Response {
    match a.registry.get(&id).await {
        Ok(Some(c)) => reply(StatusCode::OK, public_view(&c)),
        Ok(None) => failed(AuthorityError::NoClient(id)),
        Err(e) => failed(e),
    }
}

/// `POST /admin/clients` with a [`ClientSpec`]: 201 with the client and, for the secret
/// methods, its first secret (shown this once).
pub(super) async fn create_client(State(a): State<Arc<Authority>>, body: Bytes) -> Response {
    let spec: ClientSpec = match body_json(&body) {
        Ok(s) => s,
        Err(why) => return bad_body(why),
    };
    match a.registry.create(spec, ACTOR, a.now()).await {
        Ok((c, secret)) => {
            let mut v = json!({ "client": public_view(&c) });
            if let Some(s) = secret {
                v["client_id"] = c.client_id.clone().into();
                v["client_secret"] = s.secret.as_str().into();
                v["secret_id"] = s.id.into();
            }
            reply(StatusCode::CREATED, v)
        }
        Err(e) => failed(e),
    }
}

/// `PATCH /admin/clients/{id}` with a [`ClientUpdate`] (`auth_method`: one name or a list;
/// `introspect`: true or false): 200 with the client and, when the change gave it its first
/// secret method, that secret (shown this once).
pub(super) async fn update_client(
    State(a): State<Arc<Authority>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let update: ClientUpdate = match body_json(&body) {
        Ok(s) => s,
        Err(why) => return bad_body(why),
    };
    match a.registry.update(&id, update, ACTOR, a.now()).await {
        Ok((c, secret)) => {
            let mut v = json!({ "client": public_view(&c) });
            if let Some(s) = secret {
                v["client_id"] = c.client_id.clone().into();
                v["client_secret"] = s.secret.as_str().into();
                v["secret_id"] = s.id.into();
            }
            reply(StatusCode::OK, v)
        }
        Err(e) => failed(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct AddSecret {
    /// Seconds after which the client's existing secrets stop working.
    #[serde(default)]
    old_expires_in: Option<i64>,
}

/// `POST /admin/clients/{id}/secrets`: a new secret; old ones keep working until removed
/// (or until `old_expires_in` seconds from now).
pub(super) async fn add_secret(
    State(a): State<Arc<Authority>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let req: AddSecret = match body_json(&body) {
        Ok(s) => s,
        Err(why) => return bad_body(why),
    };
    let now = a.now();
    let old = req.old_expires_in.map(|s| now + s.max(0));
    match a.registry.add_secret(&id, old, ACTOR, now).await {
        Ok(s) => reply(
            StatusCode::CREATED,
            json!({ "client_id": id, "secret_id": s.id, "client_secret": s.secret.as_str() }),
        ),
        Err(e) => failed(e),
    }
}

/// `DELETE /admin/clients/{id}/secrets/{secret_id}`.
pub(super) async fn remove_secret(
    State(a): State<Arc<Authority>>,
    Path((id, secret_id)): Path<(String, String)>,
) -> Response {
    match a
        .registry
        .remove_secret(&id, &secret_id, ACTOR, a.now())
        .await
    {
        Ok(c) => reply(StatusCode::OK, public_view(&c)),
        Err(e) => failed(e),
    }
}

async fn set_disabled(a: &Authority, id: &str, disabled: bool) -> Response {
    match a.registry.set_disabled(id, disabled, ACTOR, a.now()).await {
        Ok(c) => reply(StatusCode::OK, public_view(&c)),
        Err(e) => failed(e),
    }
}

/// `POST /admin/clients/{id}/disable`.
pub(super) async fn disable(State(a): State<Arc<Authority>>, Path(id): Path<String>) -> Response {
    set_disabled(&a, &id, true).await
}

/// `POST /admin/clients/{id}/enable`.
pub(super) async fn enable(State(a): State<Arc<Authority>>, Path(id): Path<String>) -> Response {
    set_disabled(&a, &id, false).await
}
