//! The CA's HTTP API. The authority mounts [`router`] on its listener and [`admin_router`]
//! behind its admin token.
//!
//! | method | path | who | body → answer |
//! | --- | --- | --- | --- |
//! | GET | `/ca/v1/bundle` | anyone | the SPIFFE trust bundle (JWK set) |
//! | GET | `/ca/v1/bundles/federated` | anyone | `{"bundles": {"<trust domain>": <JWK set>}}` |
//! | POST | `/ca/v1/svid` | a workload with a join token | `{"join_token", "csr"}` → SVID |
//! | POST | `/ca/v1/svid/renew` | a workload with its current SVID | `{"svid", "csr", "proof"}` → SVID |
//! | GET, POST | `/admin/workloads` | admin | list; `{"spiffe_id", "svid_ttl"?}` → 201 entry |
//! | GET | `/admin/workloads/{entry}` | admin | the entry |
//! | POST | `/admin/workloads/{entry}/revoke` | admin | the revoked entry |
//! | POST | `/admin/workloads/{entry}/join-token` | admin | `{"ttl"?}` → 201 `{"token", ...}` |
//!
//! A CSR is PEM (`CERTIFICATE REQUEST`) or base64 DER; `svid` is the current chain as PEM
//! (its leaf is what counts); `proof` is base64url of the current key's signature over
//! [`crate::RENEW_CONTEXT`] followed by the new CSR's DER. An SVID answer is
//! `{"spiffe_id", "svid" (PEM chain, leaf first), "expires_at", "serial", "bundle"}`.
//! Errors are `{"error": code, "error_description": reason}` with 400, 403, 404, 409.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::CaServiceError;
use crate::service::{Ca, Issued};

/// Largest request body, bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// The connection information the listener gives handlers (for audit events).
pub trait PeerAddr: Clone + Send + Sync + 'static {
    /// The client's address.
    fn ip(&self) -> IpAddr;
}

impl PeerAddr for std::net::SocketAddr {
    fn ip(&self) -> IpAddr {
        std::net::SocketAddr::ip(self)
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    ca: Arc<Ca>,
    now: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl Api {
    /// The API of `ca` on the clock `now` (Unix seconds).
    pub fn new(ca: Arc<Ca>, now: Arc<dyn Fn() -> i64 + Send + Sync>) -> Self {
        Self { ca, now }
    }
}

/// A JSON answer with `Cache-Control: no-store`.
pub fn reply(status: StatusCode, v: Value) -> Response {
    let mut res = (status, Json(v)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The stable code of a refusal (`invalid_token`, `revoked`, `invalid_request`, ...), on the
/// response as an extension for whoever mounts the router (the authority's security events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusalCode(pub &'static str);

/// The JSON answer for a refusal or failure (`{"error", "error_description"}`; server
/// errors are logged and answered without detail). `Cache-Control: no-store`.
pub fn failed(e: CaServiceError) -> Response {
    let (status, code) = e.status();
    let mut res = if status.is_server_error() {
        tracing::error!(error = %e, "CA request failed");
        reply(status, json!({ "error": code }))
    } else {
        reply(
            status,
            json!({ "error": code, "error_description": e.to_string() }),
        )
    };
    res.extensions_mut().insert(RefusalCode(code));
    res
}

fn bad(m: impl Into<String>) -> CaServiceError {
    CaServiceError::Invalid(m.into())
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, CaServiceError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("body: {e}")))
}

/// A CSR as PEM or base64 DER.
fn csr_der(s: &str) -> Result<Vec<u8>, CaServiceError> {
    let s = s.trim();
    if s.starts_with("-----BEGIN") {
        return pem_blocks(s, "CERTIFICATE REQUEST")
            .filter(|v| !v.is_empty())
            .or_else(|| pem_blocks(s, "NEW CERTIFICATE REQUEST"))
            .and_then(|mut v| v.pop())
            .ok_or_else(|| bad("csr: no CERTIFICATE REQUEST block"));
    }
    b64_any(s).ok_or_else(|| bad("csr: neither PEM nor base64"))
}

fn b64_any(s: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(s)
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .or_else(|_| URL_SAFE.decode(s))
        .ok()
}

/// The DER of each `label` block in `pem`.
fn pem_blocks(pem: &str, label: &str) -> Option<Vec<Vec<u8>>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(i) = rest.find(&begin) {
        let after = &rest[i + begin.len()..];
        let j = after.find(&end)?;
        let b64: String = after[..j].chars().filter(|c| !c.is_whitespace()).collect();
        out.push(STANDARD.decode(b64).ok()?);
        rest = &after[j + end.len()..];
    }
    Some(out)
}

fn issued(api: &Api, svid: Issued) -> Response {
    reply(
        StatusCode::OK,
        json!({
            "spiffe_id": svid.spiffe_id,
            "svid": svid.chain_pem,
            "expires_at": svid.not_after,
            "serial": svid.serial,
            "bundle": *api.ca.bundle(),
        }),
    )
}

/// The public routes: bundle, issuance, renewal.
pub fn router<P: PeerAddr>(api: Api) -> Router {
    Router::new()
        .route("/ca/v1/bundle", get(bundle))
        .route("/ca/v1/bundles/federated", get(federated))
        .route("/ca/v1/svid", post(join::<P>))
        .route("/ca/v1/svid/renew", post(renew::<P>))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

/// The admin routes, with no authentication of their own: mount them behind the admin
/// credential.
pub fn admin_router<P: PeerAddr>(api: Api) -> Router {
    Router::new()
        .route("/admin/workloads", get(list).post(register::<P>))
        .route("/admin/workloads/{id}", get(show))
        .route("/admin/workloads/{id}/revoke", post(revoke::<P>))
        .route("/admin/workloads/{id}/join-token", post(join_token::<P>))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

async fn bundle(State(api): State<Api>) -> Response {
    cacheable(&api, api.ca.bundle().as_ref().clone())
}

async fn federated(State(api): State<Api>) -> Response {
    cacheable(&api, api.ca.federated_document())
}

/// `doc` with `Cache-Control: max-age` of the bundle's refresh hint.
fn cacheable(api: &Api, doc: Value) -> Response {
    let mut res = Json(doc).into_response();
    let age = format!("max-age={}", api.ca.settings().refresh_hint);
    if let Ok(v) = HeaderValue::from_str(&age) {
        res.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    res
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    join_token: String,
    csr: String,
}

async fn join<P: PeerAddr>(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<P>,
    body: Bytes,
) -> Response {
    let b: JoinBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return failed(e),
    };
    let csr = match csr_der(&b.csr) {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    let source = peer.ip().to_string();
    match api
        .ca
        .issue_with_join_token(&b.join_token, &csr, (api.now)(), Some(&source))
        .await
    {
        Ok(svid) => issued(&api, svid),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    svid: String,
    csr: String,
    proof: String,
}

async fn renew<P: PeerAddr>(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<P>,
    body: Bytes,
) -> Response {
    let b: RenewBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return failed(e),
    };
    let csr = match csr_der(&b.csr) {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    let chain = match pem_blocks(&b.svid, "CERTIFICATE") {
        Some(c) if !c.is_empty() => c,
        _ => return failed(bad("svid: no CERTIFICATE block")),
    };
    let Some(proof) = b64_any(b.proof.trim()) else {
        return failed(bad("proof: not base64url"));
    };
    let source = peer.ip().to_string();
    match api
        .ca
        .renew(&chain, &csr, &proof, (api.now)(), Some(&source))
        .await
    {
        Ok(svid) => issued(&api, svid),
        Err(e) => failed(e),
    }
}

async fn list(State(api): State<Api>) -> Response {
    match api.ca.list().await {
        Ok(entries) => reply(StatusCode::OK, json!({ "workloads": entries })),
        Err(e) => failed(e),
    }
}

async fn show(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.ca.get(&id).await {
        Ok(entry) => reply(StatusCode::OK, json!(entry)),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    spiffe_id: String,
    #[serde(default)]
    svid_ttl: Option<i64>,
}

async fn register<P: PeerAddr>(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<P>,
    body: Bytes,
) -> Response {
    let b: RegisterBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return failed(e),
    };
    let source = peer.ip().to_string();
    match api
        .ca
        .register(
            &b.spiffe_id,
            b.svid_ttl,
            (api.now)(),
            "admin",
            Some(&source),
        )
        .await
    {
        Ok(entry) => reply(StatusCode::CREATED, json!(entry)),
        Err(e) => failed(e),
    }
}

async fn revoke<P: PeerAddr>(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<P>,
    Path(id): Path<String>,
) -> Response {
    let source = peer.ip().to_string();
    match api
        .ca
        .revoke(&id, (api.now)(), "admin", Some(&source))
        .await
    {
        Ok(entry) => reply(StatusCode::OK, json!(entry)),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    #[serde(default)]
    ttl: Option<i64>,
}

async fn join_token<P: PeerAddr>(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<P>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let b: TokenBody = if body.is_empty() {
        TokenBody::default()
    } else {
        match parse(&body) {
            Ok(b) => b,
            Err(e) => return failed(e),
        }
    };
    let source = peer.ip().to_string();
    match api
        .ca
        .join_token(&id, b.ttl, (api.now)(), "admin", Some(&source))
        .await
    {
        Ok(t) => reply(StatusCode::CREATED, json!(t)),
        Err(e) => failed(e),
    }
}
