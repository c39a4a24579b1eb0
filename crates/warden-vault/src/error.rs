//! The vault's one error type and the one place it becomes an HTTP response: Vault's
//! `{"errors": [...]}` body with Vault's status codes.
//!
//! Messages name paths, policy and mount names, never secret values or tokens. Internal
//! failures (the store, corrupt records) are logged here and reach the client only as
//! `"internal error"`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Why a vault request failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// 400: the request is malformed (bad JSON, wrong types, bad parameters, CAS mismatch).
    #[error("{0}")]
    BadRequest(String),
    /// 403: no token, an unknown, expired or used-up token, or the policy does not allow it.
    /// Always the same message, so a refusal says nothing about what exists.
    #[error("permission denied")]
    PermissionDenied,
    /// 404 with an empty `errors` list: Vault's answer for a secret that does not exist.
    #[error("not found")]
    NotFound,
    /// 404 with an envelope whose `data` is this value: Vault's answer for a KV v2 version
    /// that was deleted or destroyed (`{"data": null, "metadata": {…deletion_time…}}`), so
    /// clients can tell it from one that never existed.
    #[error("not found")]
    NotFoundWithData(serde_json::Value),
    /// 404 with a message (a named thing that does not exist, e.g. a policy or a role).
    #[error("{0}")]
    NotFoundMsg(String),
    /// 404: no mount or handler serves this path (Vault's "no handler for route").
    #[error("no handler for route {0:?}. route entry not found.")]
    NoHandler(String),
    /// 405: the path exists but not for this method.
    #[error("unsupported operation")]
    MethodNotAllowed,
    /// 412: a precondition the client set does not hold.
    #[error("{0}")]
    Precondition(String),
    /// 413: the request body is larger than [`crate::api::MAX_REQUEST_BYTES`].
    #[error("request body too large")]
    TooLarge,
    /// 429: too many requests (or a standby, for `sys/health`).
    #[error("{0}")]
    TooManyRequests(String),
    /// 503: the vault is sealed.
    #[error("Vault is sealed")]
    Sealed,
    /// 503 with a message: the vault cannot serve now for another reason (a standby with no
    /// active authority known).
    #[error("{0}")]
    Unavailable(String),
    /// 500: the store failed, or a stored record is unreadable. Logged, never shown.
    #[error("internal: {0}")]
    Internal(String),
}

/// Result with [`VaultError`].
pub type Result<T, E = VaultError> = std::result::Result<T, E>;

impl VaultError {
    /// The HTTP status Vault gives this error.
    pub fn status(&self) -> StatusCode {
        match self {
            VaultError::BadRequest(_) => StatusCode::BAD_REQUEST,
            VaultError::PermissionDenied => StatusCode::FORBIDDEN,
            VaultError::NotFound
            | VaultError::NotFoundWithData(_)
            | VaultError::NotFoundMsg(_)
            | VaultError::NoHandler(_) => StatusCode::NOT_FOUND,
            VaultError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            VaultError::Precondition(_) => StatusCode::PRECONDITION_FAILED,
            VaultError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            VaultError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            VaultError::Sealed | VaultError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            VaultError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The messages of the `errors` list (empty for a plain 404, as Vault does).
    pub fn messages(&self) -> Vec<String> {
        match self {
            VaultError::NotFound | VaultError::NotFoundWithData(_) => Vec::new(),
            VaultError::Internal(_) => vec!["internal error".to_owned()],
            other => vec![other.to_string()],
        }
    }

    /// A 400 naming the parameter and what it should have been.
    pub fn bad_param(name: &str, expected: &str) -> VaultError {
        VaultError::BadRequest(format!("invalid value for {name:?}: expected {expected}"))
    }
}

impl From<warden_store::StoreError> for VaultError {
    fn from(e: warden_store::StoreError) -> Self {
        match e {
            warden_store::StoreError::InvalidKey(m) => {
                VaultError::BadRequest(format!("invalid path: {m}"))
            }
            warden_store::StoreError::TooLarge(m) => VaultError::BadRequest(m),
            // Sealed between the check and the read: the same 503 as any sealed request.
            warden_store::StoreError::Sealed => VaultError::Sealed,
            other => VaultError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for VaultError {
    fn into_response(self) -> Response {
        if let VaultError::Internal(reason) = &self {
            tracing::error!(%reason, "vault: internal error");
        }
        if let VaultError::NotFoundWithData(data) = self {
            let mut resp = crate::api::VaultResponse::data(data)
                .with_mount_type("kv")
                .into_response();
            *resp.status_mut() = StatusCode::NOT_FOUND;
            return resp;
        }
        let body = serde_json::json!({ "errors": self.messages() });
        let mut resp = (self.status(), axum::Json(body)).into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}
