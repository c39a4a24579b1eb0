//! Errors: [`AuthorityError`] for start-up and storage, and [`OAuthError`], the one place where
//! a refusal becomes an HTTP response (RFC 6749 §5.2 codes with an `error_description` from
//! one table, [`Refusal`]; `Cache-Control: no-store`; no detail that would help an attacker
//! guess).

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

/// Why a request was refused: the one table from reason to RFC 6749 §5.2 `error` and
/// `error_description`. A description says what to fix in words a developer can act on, but
/// never tells an attacker more than the code does: every failed client authentication
/// (unknown client, disabled client, unregistered method, wrong secret, bad assertion or
/// certificate) is the same [`Refusal::ClientAuthFailed`], so the answer does not reveal
/// whether a client id exists. The precise reason goes to the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The body is not `application/x-www-form-urlencoded`.
    NotAForm,
    /// The form does not decode (bad `%XX` escape, not UTF-8).
    BadFormEncoding,
    /// A parameter appears twice (RFC 6749 §3.1).
    RepeatedParameter,
    /// No `grant_type`.
    MissingGrantType,
    /// No `token` (introspection, revocation).
    MissingToken,
    /// More than one `Authorization` header.
    SeveralAuthorizationHeaders,
    /// Two client authentication methods in one request (RFC 6749 §2.3).
    SeveralAuthMethods,
    /// `client_id` in the body names another client than the credentials.
    ClientIdMismatch,
    /// `client_secret` in the body without `client_id`.
    SecretWithoutClientId,
    /// A `client_assertion` with a missing or wrong `client_assertion_type`.
    BadAssertionType,
    /// An `Authorization` header that is not well-formed HTTP Basic.
    MalformedBasic,
    /// No client credentials at all.
    NoClientCredentials,
    /// Client authentication failed, for whatever reason (see the type's docs).
    ClientAuthFailed,
    /// An unknown `grant_type`.
    UnsupportedGrantType,
    /// The client is not registered for this grant type.
    GrantNotAllowed,
    /// A scope with characters RFC 6749 §3.3 does not allow.
    ScopeSyntax,
    /// A scope the client is not registered for.
    ScopeNotAllowed,
    /// Token exchange asked for a scope the subject token does not hold.
    ExchangeScopeNotAllowed,
    /// An audience (`audience`, `resource`) the client is not registered for.
    AudienceNotAllowed,
    /// No audience asked for and the client has no registered one.
    NoAudience,
    /// Token exchange asked for an audience not among the client's exchange audiences.
    ExchangeAudienceNotAllowed,
    /// Token exchange without `audience`, and the subject token names none the client may
    /// exchange to.
    NoExchangeAudience,
    /// `requested_token_type` is not one this server issues.
    BadRequestedTokenType,
    /// `subject_token` or `subject_token_type` missing.
    MissingSubjectToken,
    /// `subject_token_type` is not an access token or JWT.
    BadSubjectTokenType,
    /// `actor_token` and `actor_token_type` not given together, or an unknown type.
    BadActorTokenParameters,
    /// The subject token is not valid here (not ours, expired, revoked, malformed).
    InvalidSubjectToken,
    /// The actor token is not valid here, or was issued to another client.
    InvalidActorToken,
    /// The subject token expires too soon to derive a token from it.
    SubjectTokenExpiring,
    /// Revocation of a token issued to another client (RFC 7009 §2.1).
    RevokeNotOwner,
    /// `token_type_hint` names a type this server does not know.
    UnsupportedTokenType,
    /// Too many failed client authentications (429 with `Retry-After`).
    Throttled,
    /// Something failed inside the authority.
    Internal,
}

impl Refusal {
    /// The RFC 6749 §5.2 code and the `error_description`.
    pub fn describe(self) -> (ErrorCode, &'static str) {
        use ErrorCode as C;
        use Refusal as R;
        match self {
            R::NotAForm => (
                C::InvalidRequest,
                "the body must be application/x-www-form-urlencoded",
            ),
            R::BadFormEncoding => (
                C::InvalidRequest,
                "the form body does not decode: every %XX escape must be valid and the text UTF-8",
            ),
            R::RepeatedParameter => (
                C::InvalidRequest,
                "a parameter appears more than once (RFC 6749 section 3.1)",
            ),
            R::MissingGrantType => (C::InvalidRequest, "grant_type is missing"),
            R::MissingToken => (C::InvalidRequest, "the token parameter is missing"),
            R::SeveralAuthorizationHeaders => {
                (C::InvalidRequest, "more than one Authorization header")
            }
            R::SeveralAuthMethods => (
                C::InvalidRequest,
                "the client authenticated in more than one way (e.g. HTTP Basic and \
                 client_secret in the body); use exactly one",
            ),
            R::ClientIdMismatch => (
                C::InvalidRequest,
                "client_id in the body names another client than the credentials do",
            ),
            R::SecretWithoutClientId => (
                C::InvalidRequest,
                "client_secret in the body needs client_id beside it (client_secret_post)",
            ),
            R::BadAssertionType => (
                C::InvalidRequest,
                "client_assertion_type must be \
                 urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            R::MalformedBasic => (
                C::InvalidClient,
                "the Authorization header is not valid HTTP Basic: Basic base64(client_id \
                 \":\" client_secret), each part form-encoded first",
            ),
            R::NoClientCredentials => (
                C::InvalidClient,
                "no client credentials: use HTTP Basic, client_id and client_secret in the \
                 body, a client_assertion, or a TLS client certificate with client_id",
            ),
            R::ClientAuthFailed => (
                C::InvalidClient,
                "client authentication failed: the client is unknown or disabled, is not \
                 registered for this authentication method, or the credentials are wrong",
            ),
            R::UnsupportedGrantType => (
                C::UnsupportedGrantType,
                "grant_type must be client_credentials or \
                 urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            R::GrantNotAllowed => (
                C::UnauthorizedClient,
                "this client is not registered for this grant type",
            ),
            R::ScopeSyntax => (
                C::InvalidScope,
                "scope holds a character RFC 6749 section 3.3 does not allow",
            ),
            R::ScopeNotAllowed => (
                C::InvalidScope,
                "a requested scope is not among the scopes registered for this client",
            ),
            R::ExchangeScopeNotAllowed => (
                C::InvalidScope,
                "a requested scope is not in the subject token: exchange can only narrow scope",
            ),
            R::AudienceNotAllowed => (
                C::InvalidTarget,
                "a requested audience (audience or resource) is not registered for this client",
            ),
            R::NoAudience => (
                C::InvalidTarget,
                "this client has no registered audience to default to; name one with audience",
            ),
            R::ExchangeAudienceNotAllowed => (
                C::InvalidTarget,
                "a requested audience is not among this client's exchange audiences",
            ),
            R::NoExchangeAudience => (
                C::InvalidTarget,
                "the subject token names none of this client's exchange audiences; ask for one \
                 with audience",
            ),
            R::BadRequestedTokenType => (
                C::InvalidRequest,
                "requested_token_type must be urn:ietf:params:oauth:token-type:access_token or \
                 urn:ietf:params:oauth:token-type:jwt",
            ),
            R::MissingSubjectToken => (
                C::InvalidRequest,
                "token exchange needs subject_token and subject_token_type",
            ),
            R::BadSubjectTokenType => (
                C::InvalidRequest,
                "subject_token_type must be urn:ietf:params:oauth:token-type:access_token or \
                 urn:ietf:params:oauth:token-type:jwt",
            ),
            R::BadActorTokenParameters => (
                C::InvalidRequest,
                "actor_token and actor_token_type go together, and the type must be \
                 urn:ietf:params:oauth:token-type:access_token or \
                 urn:ietf:params:oauth:token-type:jwt",
            ),
            R::InvalidSubjectToken => (
                C::InvalidGrant,
                "the subject token is not a valid token of this issuer: malformed, expired, \
                 revoked or signed by an unknown key",
            ),
            R::InvalidActorToken => (
                C::InvalidGrant,
                "the actor token is not a valid token of this issuer issued to this client",
            ),
            R::SubjectTokenExpiring => (
                C::InvalidGrant,
                "the subject token expires too soon to exchange",
            ),
            R::RevokeNotOwner => (
                C::UnauthorizedClient,
                "a token can only be revoked by the client it was issued to",
            ),
            R::UnsupportedTokenType => (
                C::UnsupportedTokenType,
                "token_type_hint must be access_token or refresh_token",
            ),
            R::Throttled => (
                C::TemporarilyUnavailable,
                "too many failed client authentications from this client or address; try \
                 again after Retry-After seconds",
            ),
            R::Internal => (
                C::ServerError,
                "the authority could not complete the request; try again later",
            ),
        }
    }
}

/// A refusal at an OAuth endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthError {
    /// The code.
    pub code: ErrorCode,
    /// Why (gives the `error_description`).
    pub refusal: Refusal,
    /// For 429: seconds until a try may succeed.
    pub retry_after: Option<u64>,
}

impl From<Refusal> for OAuthError {
    fn from(r: Refusal) -> Self {
        OAuthError {
            code: r.describe().0,
            refusal: r,
            retry_after: None,
        }
    }
}

impl OAuthError {
    /// `temporarily_unavailable` (429) with `Retry-After`.
    pub fn throttled(wait: u64) -> Self {
        OAuthError {
            retry_after: Some(wait),
            ..Refusal::Throttled.into()
        }
    }

    /// `server_error`, logged with its cause (which the client never sees).
    pub fn internal(e: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %e, "token service internal error");
        Refusal::Internal.into()
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
        let body = serde_json::json!({
            "error": self.code.as_str(),
            "error_description": self.refusal.describe().1,
        });
        let mut res = (self.status(), axum::Json(body)).into_response();
        no_store(&mut res);
        // For the metrics (failures by reason), read where the listener counts responses.
        res.extensions_mut().insert(self.code);
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
