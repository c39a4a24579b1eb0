//! The vault at `/v1`: the seal endpoints (Vault's `sys/init`, `sys/seal-status`,
//! `sys/unseal`, `sys/seal`, `sys/health`, `sys/leader`, `sys/rotate`, `sys/key-status`),
//! answered here because they drive the whole authority's seal, and everything else handed
//! to the vault's own router while unsealed.
//!
//! While sealed, only `sys/init`, `sys/seal-status`, `sys/unseal` and `sys/health` answer;
//! every other path gets 503 `Vault is sealed` before anything looks at it, so a sealed vault
//! tells nothing about mounts or paths. Errors are Vault's `{"errors": [...]}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt as _;
use warden_vault::seal::{self, SealError, SealStatus, DEFAULT_SHARES, DEFAULT_THRESHOLD};
use warden_vault::{Caps, VaultError};

use crate::services::Services;

/// Largest body the seal endpoints read.
const MAX_SEAL_BODY: usize = 64 * 1024;

/// The `/v1` service.
pub(crate) fn service(s: Arc<Services>) -> Router {
    Router::new()
        .route("/sys/init", get(init_status).put(init).post(init))
        .route("/sys/seal-status", get(seal_status))
        .route("/sys/unseal", put(unseal).post(unseal))
        .route("/sys/seal", put(seal_now).post(seal_now))
        .route("/sys/health", get(health).head(health))
        .route("/sys/leader", get(leader))
        .route("/sys/rotate", put(rotate).post(rotate))
        .route("/sys/key-status", get(key_status))
        .fallback(dispatch)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_SEAL_BODY))
        .layer(middleware::from_fn_with_state(s.clone(), standby))
        .layer(middleware::from_fn_with_state(s.clone(), count))
        .with_state(s)
}

/// Vault's error body.
fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    debug_assert_eq!(status, StatusCode::BAD_REQUEST);
    VaultError::BadRequest(msg.into()).into_response()
}

fn sealed() -> Response {
    VaultError::Sealed.into_response()
}

fn seal_failed(e: SealError) -> Response {
    match e {
        SealError::AlreadyInitialized | SealError::Invalid(_) | SealError::WrongShares => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        SealError::NotInitialized => error(StatusCode::BAD_REQUEST, e.to_string()),
        SealError::Store(e) => internal(&e),
    }
}

fn internal(e: &dyn std::fmt::Display) -> Response {
    VaultError::Internal(format!("seal: {e}")).into_response()
}

/// Parses a JSON body into `T` (an empty body is `T::default()`), or Vault's 400.
fn body<T: for<'de> Deserialize<'de> + Default>(b: &Bytes) -> Result<T, VaultError> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(b)
        .map_err(|e| VaultError::BadRequest(format!("failed to parse JSON input: {e}")))
}

/// Counts each response by mount and status, and makes refusals security events: a 403
/// (`vault.denied`: a missing, unknown or expired token, or a policy without the
/// capability; Vault does not tell them apart, nor does this) and a refused login
/// (`vault.login_failed`: a 400 from `auth/<mount>/login`). The path is not a secret (Vault's
/// audit devices keep it in clear too).
async fn count(State(s): State<Arc<Services>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::client_auth::Peer>>()
        .map(|c| c.0.ip);
    let res = next.run(req).await;
    let status = res.status();
    s.metrics().vault_response(&path, status.as_u16());
    let refusal = match status {
        StatusCode::FORBIDDEN => Some(("vault.denied", "permission_denied")),
        StatusCode::BAD_REQUEST if is_login(&path) => {
            Some(("vault.login_failed", "invalid_credentials"))
        }
        _ => None,
    };
    if let Some((event, reason)) = refusal {
        s.metrics()
            .security_events()
            .emit(&warden_telemetry::SecurityEvent {
                event,
                reason,
                method: Some(method.as_str()),
                client,
                status: Some(status.as_u16()),
                detail: Some(json!({ "path": format!("/v1{path}") })),
                ..Default::default()
            });
    }
    res
}

/// `auth/<mount>/login` or below (`auth/userpass/login/<name>`).
fn is_login(path: &str) -> bool {
    let mut parts = path.trim_start_matches('/').split('/');
    parts.next() == Some("auth") && parts.next().is_some() && parts.next() == Some("login")
}

/// The paths a standby answers itself; it sends every other request to the active authority.
const STANDBY_PATHS: &[&str] = &[
    "/sys/health",
    "/sys/seal-status",
    "/sys/leader",
    "/sys/init",
    "/sys/unseal",
    "/sys/seal",
];

/// On a standby: a 307 redirect to the active authority for everything but
/// [`STANDBY_PATHS`] (Vault's behaviour without request forwarding; clients such as `hvac`
/// and the Vault CLI follow it), or 503 while no active one is known.
async fn standby(State(s): State<Arc<Services>>, req: Request, next: Next) -> Response {
    if s.role() != crate::services::Role::Standby
        || STANDBY_PATHS.contains(&req.uri().path().trim_end_matches('/'))
    {
        return next.run(req).await;
    }
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    match crate::app::to_active(&s, &format!("/v1{pq}")) {
        Some(res) => res,
        None => VaultError::Unavailable(
            "this authority is a standby and no active authority is known yet; retry".into(),
        )
        .into_response(),
    }
}

/// Everything but the seal endpoints: the vault's router, or 503 while sealed.
async fn dispatch(State(s): State<Arc<Services>>, mut req: Request) -> Response {
    let Some(live) = s.live() else {
        return sealed();
    };
    // The vault reads the client's address (AppRole CIDR bindings) as axum's plain
    // `ConnectInfo<SocketAddr>`; this listener records a `Peer`.
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::client_auth::Peer>>()
        .map(|c| c.0.ip);
    if let Some(ip) = peer {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::new(ip, 0)));
    }
    match live.vault_router.clone().oneshot(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    }
}

fn status_json(st: &SealStatus) -> Value {
    json!({
        "type": st.kind,
        "initialized": st.initialized,
        "sealed": st.sealed,
        "t": st.threshold,
        "n": st.shares,
        "progress": st.progress,
        "nonce": st.nonce,
        "version": env!("CARGO_PKG_VERSION"),
        "build_date": "",
        "migration": false,
        "recovery_seal": false,
        "storage_type": storage_type(),
    })
}

fn storage_type() -> &'static str {
    "warden-store"
}

/// `GET sys/init`.
async fn init_status(State(s): State<Arc<Services>>) -> Response {
    match s.store().is_initialized().await {
        Ok(i) => Json(json!({ "initialized": i })).into_response(),
        Err(e) => internal(&e),
    }
}

#[derive(Deserialize, Default)]
struct InitRequest {
    secret_shares: Option<u8>,
    secret_threshold: Option<u8>,
    #[serde(default)]
    pgp_keys: Option<Vec<String>>,
    #[serde(default)]
    root_token_pgp_key: Option<String>,
    #[serde(default)]
    stored_shares: Option<u8>,
    #[serde(default)]
    recovery_shares: Option<u8>,
    #[serde(default)]
    recovery_threshold: Option<u8>,
}

/// `PUT sys/init`: the key shares and the initial root token, once.
async fn init(State(s): State<Arc<Services>>, b: Bytes) -> Response {
    let req: InitRequest = match body(&b) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if req.pgp_keys.as_ref().is_some_and(|k| !k.is_empty())
        || req
            .root_token_pgp_key
            .as_ref()
            .is_some_and(|k| !k.is_empty())
    {
        return error(
            StatusCode::BAD_REQUEST,
            "PGP-encrypted key shares are not supported",
        );
    }
    if req.stored_shares.unwrap_or(0) > 0
        || req.recovery_shares.unwrap_or(0) > 0
        || req.recovery_threshold.unwrap_or(0) > 0
    {
        return error(
            StatusCode::BAD_REQUEST,
            "stored shares and recovery keys are not supported (no auto-unseal device)",
        );
    }
    let shares = req.secret_shares.unwrap_or(DEFAULT_SHARES);
    let threshold = req.secret_threshold.unwrap_or(DEFAULT_THRESHOLD);
    let parts = match s.unsealer().init(shares, threshold).await {
        Ok(p) => p,
        Err(e) => return seal_failed(e),
    };
    // The store is unsealed now: start the services, then make the root token.
    if let Err(e) = s.start().await {
        return internal(&e);
    }
    let root = match s.create_root_token().await {
        Ok(t) => t,
        Err(e) => return internal(&e),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let keys: Vec<String> = parts.iter().map(|p| seal::hex(p)).collect();
    let keys_b64: Vec<String> = parts.iter().map(|p| b64.encode(&p[..])).collect();
    tracing::info!(shares, threshold, "vault initialized");
    Json(json!({
        "keys": keys,
        "keys_base64": keys_b64,
        "root_token": &*root,
    }))
    .into_response()
}

/// `GET sys/seal-status`.
async fn seal_status(State(s): State<Arc<Services>>) -> Response {
    match s.unsealer().status().await {
        Ok(st) => Json(status_json(&st)).into_response(),
        Err(e) => seal_failed(e),
    }
}

#[derive(Deserialize, Default)]
struct UnsealRequest {
    key: Option<String>,
    #[serde(default)]
    reset: bool,
    #[serde(default)]
    migrate: bool,
}

/// `PUT sys/unseal`: one key share (or `reset`); the seal status after it.
async fn unseal(State(s): State<Arc<Services>>, b: Bytes) -> Response {
    let req: UnsealRequest = match body(&b) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if req.migrate {
        return error(
            StatusCode::BAD_REQUEST,
            "seal migration is not supported: Warden has one seal type per store (key shares or \
             auto); change authority.seal.mode only for a new store",
        );
    }
    if req.reset {
        s.unsealer().reset();
    } else {
        let Some(key) = req.key.as_deref() else {
            return error(
                StatusCode::BAD_REQUEST,
                "'key' must be specified in request body as JSON, or 'reset' set to true",
            );
        };
        let Some(share) = seal::decode_share(key) else {
            return error(
                StatusCode::BAD_REQUEST,
                "'key' must be a valid hex or base64 string",
            );
        };
        match s.unsealer().submit(&share).await {
            Ok(true) => {
                if let Err(e) = s.start().await {
                    return internal(&e);
                }
            }
            Ok(false) => {}
            Err(e) => return seal_failed(e),
        }
    }
    seal_status(State(s)).await
}

/// `PUT sys/seal`: needs a root token (or `sudo` on `sys/seal`).
async fn seal_now(State(s): State<Arc<Services>>, headers: HeaderMap) -> Response {
    if s.is_sealed() {
        return sealed();
    }
    if s.role() == crate::services::Role::Standby {
        // It cannot check the token (no services run here), and sealing the active one
        // instead would surprise.
        return error(
            StatusCode::BAD_REQUEST,
            "this authority is a standby: seal the active authority (sys/leader names it), \
             or stop this one",
        );
    }
    if let Err(e) = s.require(&headers, "sys/seal", Caps::UPDATE).await {
        return e.into_response();
    }
    s.seal().await;
    StatusCode::NO_CONTENT.into_response()
}

/// `GET|HEAD sys/health` with Vault's status-code parameters.
async fn health(
    State(s): State<Arc<Services>>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let initialized = match s.store().is_initialized().await {
        Ok(i) => i,
        Err(e) => return internal(&e),
    };
    let sealed = s.is_sealed();
    let code = |name: &str, default: u16| -> u16 {
        q.get(name)
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|c| (100..=599).contains(c))
            .unwrap_or(default)
    };
    let standby = s.role() == crate::services::Role::Standby;
    let standby_ok = q.get("standbyok").is_some_and(|v| v == "true" || v == "1");
    let status = if !initialized {
        code("uninitcode", 501)
    } else if sealed {
        code("sealedcode", 503)
    } else if standby && !standby_ok {
        code("standbycode", 429)
    } else {
        code("activecode", 200)
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if method == Method::HEAD {
        return status.into_response();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (
        status,
        Json(json!({
            "initialized": initialized,
            "sealed": sealed,
            "standby": standby,
            "performance_standby": false,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": now,
            "version": env!("CARGO_PKG_VERSION"),
            "enterprise": false,
            "echo_duration_ms": 0,
            "clock_skew_ms": 0,
        })),
    )
        .into_response()
}

/// `GET sys/leader`: with `[authority.ha]`, the active authority's address and whether it is
/// this one; without, `ha_enabled: false`.
async fn leader(State(s): State<Arc<Services>>) -> Response {
    if s.is_sealed() {
        return sealed();
    }
    if s.ha_enabled() {
        let (address, is_self, since) = s.leader().unwrap_or_default();
        return Json(json!({
            "ha_enabled": true,
            "is_self": is_self,
            "active_time": if since > 0 { rfc3339(since) } else { "0001-01-01T00:00:00Z".into() },
            "leader_address": address,
            "leader_cluster_address": "",
            "performance_standby": false,
            "performance_standby_last_remote_wal": 0,
        }))
        .into_response();
    }
    Json(json!({
        "ha_enabled": false,
        "is_self": false,
        "active_time": "0001-01-01T00:00:00Z",
        "leader_address": "",
        "leader_cluster_address": "",
        "performance_standby": false,
        "performance_standby_last_remote_wal": 0,
    }))
    .into_response()
}

/// `PUT sys/rotate`: a new data-key term (`Store::rotate_data_key`); needs root or `sudo`.
async fn rotate(State(s): State<Arc<Services>>, headers: HeaderMap) -> Response {
    if s.is_sealed() {
        return sealed();
    }
    if let Err(e) = s.require(&headers, "sys/rotate", Caps::UPDATE).await {
        return e.into_response();
    }
    match s.store().rotate_data_key().await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => internal(&e),
    }
}

/// `GET sys/key-status`: the data-key term and when it was installed.
async fn key_status(State(s): State<Arc<Services>>, headers: HeaderMap) -> Response {
    if s.is_sealed() {
        return sealed();
    }
    if let Err(e) = s.require(&headers, "sys/key-status", Caps::READ).await {
        return e.into_response();
    }
    match s.store().key_status().await {
        Ok(k) => {
            let data = json!({
                "term": k.term,
                "install_time": rfc3339(k.install_time_ms),
                "encryptions": 0,
            });
            let mut v = envelope(data.clone());
            if let (Some(top), Some(d)) = (v.as_object_mut(), data.as_object()) {
                for (k, val) in d {
                    top.insert(k.clone(), val.clone());
                }
            }
            Json(v).into_response()
        }
        Err(e) => internal(&e),
    }
}

fn envelope(data: Value) -> Value {
    json!({
        "request_id": "",
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
    })
}

/// Unix milliseconds as RFC 3339 UTC (`2026-12-02T21:30:00.123Z`).
pub(crate) fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_796_247_000_123),
            "2026-12-02T21:30:00.123Z"
        );
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
