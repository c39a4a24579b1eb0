//! Errors: [`AuthorityError`] for start-up and storage, and [`OAuthError`], the one place where
//! a refusal becomes an HTTP response (RFC 6749 §5.2 codes, `Cache-Control: no-store`, no
//! detail that would help an attacker guess).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Why the authority could not start or could not reach its state.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// The config cannot be used (a secret cannot be read, a file is missing).
    #[error("{0}")]
    Config(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] warden_store::StoreError),
    /// A stored record does not decode (corruption or a newer format).
    #[error("stored record `{key}` is unreadable: {reason}")]
    Corrupt {
        /// The store key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Binding or configuring the listener failed.
    #[error("listener {addr}: {reason}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// A request to change something named what does not exist or is not allowed.
    #[error("{0}")]
    Invalid(String),
    /// No such client.
    #[error("no client `{0}`")]
    NoClient(String),
}

/// Result with [`AuthorityError`].
pub type Result<T, E = AuthorityError> = std::result::Result<T, E>;

/// An RFC 6749 §5.2 error code (plus the RFC 8693 / RFC 8707 `invalid_target`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed request: missing, repeated or unsupported parameters.
    InvalidRequest,
    /// Client authentication failed.
    InvalidClient,
    /// The grant (subject token) is invalid, expired or revoked.
    InvalidGrant,
    /// The client may not use this grant type (or revoke this token).
    UnauthorizedClient,
    /// The grant type is unknown.
    UnsupportedGrantType,
    /// A requested scope is not allowed.
    InvalidScope,
    /// A requested audience is not allowed.
    InvalidTarget,
    /// `token_type_hint` names a type the server does not know (RFC 7009).
    UnsupportedTokenType,
    /// Too many failed client authentications from this client or address.
    TemporarilyUnavailable,
    /// Something failed inside the authority (the store).
    ServerError,
}

impl ErrorCode {
    /// The code as it appears in `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::ServerError => "server_error",
        }
    }
}

/// A refusal at an OAuth endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthError {
    /// The code.
    pub code: ErrorCode,
    /// For 429: seconds until a try may succeed.
    pub retry_after: Option<u64>,
}

impl OAuthError {
    /// A refusal with `code`.
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            retry_after: None,
        }
    }

    /// `invalid_request`.
    pub fn request() -> Self {
        Self::new(ErrorCode::InvalidRequest)
    }

    /// `invalid_client` (401 with a `Basic` challenge).
    pub fn client() -> Self {
        Self::new(ErrorCode::InvalidClient)
    }

    /// `server_error`, logged with its cause (which the client never sees).
    pub fn internal(e: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %e, "token service internal error");
        Self::new(ErrorCode::ServerError)
    }

    /// The HTTP status for this refusal.
    pub fn status(&self) -> StatusCode {
        match self.code {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::TemporarilyUnavailable => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<AuthorityError> for OAuthError {
    fn from(e: AuthorityError) -> Self {
        OAuthError::internal(&e)
    }
}

impl From<warden_store::StoreError> for OAuthError {
    fn from(e: warden_store::StoreError) -> Self {
        OAuthError::internal(&e)
    }
}

/// Headers every token-endpoint answer carries (RFC 6749 §5.1).
pub(crate) fn no_store(res: &mut Response) {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code.as_str() });
        let mut res = (self.status(), axum::Json(body)).into_response();
        no_store(&mut res);
        if self.code == ErrorCode::InvalidClient {
            // Always: a 401 must carry a challenge (RFC 9110 §15.5.2), and RFC 6749 §5.2
            // requires this one when the client used Basic. Basic is the scheme every client
            // can use.
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"warden\""),
            );
        }
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.max(1).to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res
    }
}
