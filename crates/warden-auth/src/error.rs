//! What a refused request looks like (RFC 6750 §3).

/// Which challenges a `401` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenges {
    /// `Bearer` (JWT or introspection accepted).
    pub bearer: bool,
    /// `ApiKey`.
    pub api_key: bool,
}

/// Why authentication or authorization refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No accepted credential was presented: 401 without an error code (RFC 6750 §3.1).
    Missing(Challenges),
    /// A credential was presented and is not valid: 401 `invalid_token`.
    Invalid {
        /// `Bearer` or `ApiKey`.
        api_key: bool,
        /// The reason label (never shown to the client).
        reason: &'static str,
    },
    /// The request is malformed (two `Authorization` headers, say): 400 `invalid_request`.
    BadRequest(&'static str),
    /// Authenticated but not allowed: 403, `insufficient_scope` where scopes are missing.
    Forbidden {
        /// The reason label.
        reason: &'static str,
        /// Missing scopes.
        insufficient_scope: bool,
    },
    /// A service needed to decide (introspection) did not answer: 503, fail closed.
    Unavailable(&'static str),
}

impl AuthError {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            AuthError::Missing(_) | AuthError::Invalid { .. } => 401,
            AuthError::BadRequest(_) => 400,
            AuthError::Forbidden { .. } => 403,
            AuthError::Unavailable(_) => 503,
        }
    }

    /// The stable error code of the JSON body (RFC 6750 codes where they exist).
    pub fn code(self) -> &'static str {
        match self {
            AuthError::Missing(_) => "unauthorized",
            AuthError::Invalid { .. } => "invalid_token",
            AuthError::BadRequest(_) => "invalid_request",
            AuthError::Forbidden {
                insufficient_scope: true,
                ..
            } => "insufficient_scope",
            AuthError::Forbidden { .. } => "forbidden",
            AuthError::Unavailable(_) => "auth_unavailable",
        }
    }

    /// The reason label for metrics and the access log (says which check failed; never sent).
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing(_) => "missing_credential",
            AuthError::Invalid { reason, .. }
            | AuthError::BadRequest(reason)
            | AuthError::Forbidden { reason, .. }
            | AuthError::Unavailable(reason) => reason,
        }
    }

    /// The `WWW-Authenticate` value, if the answer carries one.
    pub fn www_authenticate(self, required_scope: &str) -> Option<String> {
        const REALM: &str = "realm=\"warden\"";
        match self {
            AuthError::Missing(c) => {
                let mut v = Vec::new();
                if c.bearer {
                    v.push(format!("Bearer {REALM}"));
                }
                if c.api_key {
                    v.push(format!("ApiKey {REALM}"));
                }
                if v.is_empty() {
                    None
                } else {
                    Some(v.join(", "))
                }
            }
            AuthError::Invalid { api_key, .. } => Some(format!(
                "{} {REALM}, error=\"invalid_token\"",
                if api_key { "ApiKey" } else { "Bearer" }
            )),
            AuthError::BadRequest(_) => Some(format!("Bearer {REALM}, error=\"invalid_request\"")),
            AuthError::Forbidden {
                insufficient_scope: true,
                ..
            } => {
                // Scope tokens are NQCHAR (no `"` or `\`), so they can be quoted as they are.
                let scope: String = required_scope
                    .chars()
                    .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
                    .collect();
                Some(format!(
                    "Bearer {REALM}, error=\"insufficient_scope\", scope=\"{scope}\""
                ))
            }
            AuthError::Forbidden { .. } | AuthError::Unavailable(_) => None,
        }
    }

    /// A short message for the JSON body (no detail about which check failed).
    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing(_) => "authentication required",
            AuthError::Invalid { .. } => "the credential is not valid",
            AuthError::BadRequest(_) => "malformed credentials",
            AuthError::Forbidden {
                insufficient_scope: true,
                ..
            } => "the credential lacks a required scope",
            AuthError::Forbidden { .. } => "access denied",
            AuthError::Unavailable(_) => "authentication temporarily unavailable",
        }
    }
}
