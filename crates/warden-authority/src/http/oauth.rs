//! `/oauth2/token`, `/oauth2/introspect`, `/oauth2/revoke` and the revocation feed.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::audit::Event;
use crate::authority::Authority;
use crate::client_auth::Peer;
use crate::clients::{GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE};
use crate::error::{no_store, OAuthError, Refusal};
use crate::form::Params;
use crate::metrics::GrantTag;
use crate::revocation::FEED_PAGE;

fn json_no_store(v: Value) -> Response {
    let mut res = Json(v).into_response();
    no_store(&mut res);
    res
}

fn done(r: Result<Response, OAuthError>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /oauth2/token`.
pub(super) async fn token(
    State(a): State<Arc<Authority>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    done(
        async {
            let p = Params::parse(&headers, &body)?;
            let grant = p.get("grant_type").ok_or(Refusal::MissingGrantType)?;
            let endpoint = a.settings.token_endpoint();
            let client = a.authenticate(&headers, &p, &peer, &endpoint).await?;
            let (v, tag) = match grant {
                GRANT_CLIENT_CREDENTIALS => (
                    a.client_credentials(&client, &p, &peer).await?,
                    GrantTag("client_credentials"),
                ),
                GRANT_TOKEN_EXCHANGE => (
                    a.token_exchange(&client, &p, &peer).await?,
                    GrantTag("token_exchange"),
                ),
                _ => return Err(Refusal::UnsupportedGrantType.into()),
            };
            let mut res = json_no_store(v);
            res.extensions_mut().insert(tag);
            Ok(res)
        }
        .await,
    )
}

/// `POST /oauth2/introspect` (RFC 7662).
pub(super) async fn introspect(
    State(a): State<Arc<Authority>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    done(
        async {
            let p = Params::parse(&headers, &body)?;
            let endpoint = a.settings.endpoint("/oauth2/introspect");
            let client = a.authenticate(&headers, &p, &peer, &endpoint).await?;
            let token = p.get("token").ok_or(Refusal::MissingToken)?;
            let mut res = a
                .introspect_for(&client, token, &peer)
                .await?
                .into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            no_store(&mut res);
            Ok(res)
        }
        .await,
    )
}

/// `POST /oauth2/revoke` (RFC 7009).
pub(super) async fn revoke(
    State(a): State<Arc<Authority>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    done(
        async {
            let p = Params::parse(&headers, &body)?;
            let endpoint = a.settings.endpoint("/oauth2/revoke");
            let client = a.authenticate(&headers, &p, &peer, &endpoint).await?;
            let token = p.get("token").ok_or(Refusal::MissingToken)?;
            if p.get("token_type_hint")
                .is_some_and(|h| h != "access_token" && h != "refresh_token")
            {
                return Err(Refusal::UnsupportedTokenType.into());
            }
            a.revoke(&client, token, &peer).await?;
            let mut res = StatusCode::OK.into_response();
            no_store(&mut res);
            Ok(res)
        }
        .await,
    )
}

#[derive(Deserialize)]
pub(super) struct FeedQuery {
    #[serde(default)]
    after: u64,
}

/// Checks `Authorization: Bearer <token>` against the given tokens (constant time each).
pub(super) fn bearer_matches(headers: &HeaderMap, tokens: &[Option<&[u8]>]) -> bool {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return false;
    };
    let Some(presented) = v
        .as_bytes()
        .strip_prefix(b"Bearer ")
        .or_else(|| v.as_bytes().strip_prefix(b"bearer "))
    else {
        return false;
    };
    let mut ok = false;
    for t in tokens.iter().flatten() {
        ok |= warden_crypto::ct_eq(presented, t);
    }
    ok
}

/// A 401 for the bearer-protected APIs (feed, admin), after counting the failure.
pub(super) async fn bearer_refused(a: &Authority, peer: &Peer, api: &str) -> Response {
    let wait = a.throttle.failure(None, peer.ip);
    a.audit
        .record_lossy(
            Event::new(&format!("{api}.authenticate"), "-", "failure")
                .source(Some(peer.ip.to_string())),
        )
        .await;
    if let Some(w) = wait {
        return too_many(w);
    }
    let mut res = (
        StatusCode::UNAUTHORIZED,
        Json(json!({
            "error": "invalid_token",
            "error_description": "a missing or wrong bearer token",
        })),
    )
        .into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"warden\""),
    );
    no_store(&mut res);
    res
}

/// 429 with `Retry-After`.
pub(super) fn too_many(wait: u64) -> Response {
    OAuthError::throttled(wait).into_response()
}

/// `GET /oauth2/revocations?after=N`: revoked token ids for gateways.
pub(super) async fn revocations(
    State(a): State<Arc<Authority>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> Response {
    if let Some(w) = a.throttle.blocked(None, peer.ip) {
        return too_many(w);
    }
    let s = &a.settings;
    let allowed = [
        s.feed_token.as_deref().map(|v| &v[..]),
        s.admin_token.as_deref().map(|v| &v[..]),
    ];
    if !bearer_matches(&headers, &allowed) {
        return bearer_refused(&a, &peer, "revocations").await;
    }
    match a.revocations.feed(q.after, FEED_PAGE).await {
        Ok((entries, next)) => json_no_store(json!({ "revocations": entries, "next": next })),
        Err(e) => OAuthError::internal(&e).into_response(),
    }
}
