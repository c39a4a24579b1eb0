//! What the CA's operations refuse, and how each reaches an HTTP client.

use axum::http::StatusCode;
use warden_identity::CaError;
use warden_store::StoreError;

/// Why a CA operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CaServiceError {
    /// The request is malformed (a CSR that fails its checks, a bad field).
    #[error("{0}")]
    Invalid(String),
    /// The caller did not prove the right to what it asked: `code` is stable
    /// (`invalid_token`, `revoked`, `invalid_svid`, `invalid_proof`), `reason` says more.
    #[error("{reason}")]
    Refused {
        /// Stable code.
        code: &'static str,
        /// Human-readable reason.
        reason: String,
    },
    /// No such workload.
    #[error("no such workload")]
    NotFound,
    /// Already registered.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The CA could not sign or load its keys.
    #[error("certificate authority: {0}")]
    Ca(#[from] CaError),
    /// Stored CA data does not parse.
    #[error("corrupt CA state: {0}")]
    Corrupt(String),
}

impl CaServiceError {
    pub(crate) fn refused(code: &'static str, reason: impl Into<String>) -> Self {
        Self::Refused {
            code,
            reason: reason.into(),
        }
    }

    /// The HTTP status and the stable error code.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::Refused { code, .. } => (StatusCode::FORBIDDEN, code),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Store(StoreError::Sealed) => (StatusCode::SERVICE_UNAVAILABLE, "sealed"),
            Self::Store(_) | Self::Ca(_) | Self::Corrupt(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "server_error")
            }
        }
    }
}
