//! `/oauth2/jwks` and the metadata documents (RFC 8414, OpenID Connect Discovery).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::authority::Authority;
use crate::clients::{GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE};

/// `GET /oauth2/jwks`: every published key (the signing key, the next one, and old ones
/// whose tokens may still be valid).
pub(super) async fn jwks(State(a): State<Arc<Authority>>) -> Response {
    let mut res = Json(a.jwks()).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={}", a.settings.jwks_max_age)) {
        res.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    res
}

/// The RFC 8414 metadata.
pub(super) fn metadata_document(a: &Authority) -> Value {
    let s = &a.settings;
    // Only what this server can do: `tls_client_auth` needs a TLS listener that asks for
    // client certificates. Which of them a given client may use is its registration's
    // business (RFC 8414 lists the server's; RFC 7591 `token_endpoint_auth_method` the
    // client's, see the admin API).
    let mut auth_methods = vec![
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ];
    if s.tls_client_auth {
        auth_methods.push("tls_client_auth");
    }
    let assertion_algs = [
        "ES256", "ES384", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    ];
    json!({
        "issuer": s.issuer,
        "token_endpoint": s.token_endpoint(),
        "jwks_uri": s.endpoint("/oauth2/jwks"),
        "introspection_endpoint": s.endpoint("/oauth2/introspect"),
        "revocation_endpoint": s.endpoint("/oauth2/revoke"),
        "grant_types_supported": [GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE],
        // RFC 8414 makes this field required, but there is no authorization endpoint, so the
        // only honest value is `none` (OAuth 2.0 Multiple Response Type Encoding Practices):
        // nothing is ever issued from an authorization endpoint. An empty list is refused by
        // clients that validate metadata (authlib).
        "response_types_supported": ["none"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "tls_client_certificate_bound_access_tokens": s.tls_client_auth,
        "access_token_signing_alg_values_supported": [s.alg.name()],
    })
}

fn cached(v: Value) -> Response {
    let mut res = Json(v).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    res
}

/// `GET /.well-known/oauth-authorization-server`.
pub(super) async fn metadata(State(a): State<Arc<Authority>>) -> Response {
    cached(metadata_document(&a))
}

/// `GET /.well-known/openid-configuration`: the same document, with the members OpenID
/// Connect Discovery requires (this is not an OpenID provider: it issues no ID tokens).
pub(super) async fn openid(State(a): State<Arc<Authority>>) -> Response {
    let mut v = metadata_document(&a);
    v["subject_types_supported"] = json!(["public"]);
    v["id_token_signing_alg_values_supported"] = json!([a.settings.alg.name()]);
    cached(v)
}
