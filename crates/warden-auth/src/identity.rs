//! Who made a request, once a credential has been verified.

use serde_json::{Map, Value};

/// How the caller was authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// A JWT bearer token.
    Jwt,
    /// An API key.
    ApiKey,
    /// An opaque token checked by introspection.
    Introspection,
    /// A verified client certificate.
    ClientCert,
}

impl AuthMethod {
    /// The name used in `x-warden-auth`, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Introspection => "introspection",
            AuthMethod::ClientCert => "client_cert",
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// The subject: a token's `sub`, an API key's owner, a certificate's SPIFFE ID (or DNS
    /// name or CN).
    pub subject: String,
    /// How it was authenticated.
    pub method: AuthMethod,
    /// Who vouched for it: the token's `iss`, the introspection endpoint's name, the API key
    /// id or the certificate issuer.
    pub issuer: Option<String>,
    /// Scopes granted (from `scope`/`scp`, or the API key's scopes).
    pub scopes: Vec<String>,
    /// Token claims, or an API key's attributes; what rules and policies look at.
    pub claims: Map<String, Value>,
    /// The OAuth client (`client_id`/`azp`), when the credential names one.
    pub client_id: Option<String>,
    /// The API key id, for API keys.
    pub key_id: Option<String>,
    /// The SPIFFE ID of a client certificate.
    pub spiffe_id: Option<String>,
    /// When the credential stops being valid (Unix seconds).
    pub expires_at: Option<i64>,
    /// The token's `jti`, used for revocation.
    pub jti: Option<String>,
    /// RFC 8705 certificate binding: the SHA-256 thumbprint (`cnf.x5t#S256`) the request's
    /// client certificate must have.
    pub cert_thumbprint: Option<String>,
}

impl Identity {
    /// A new identity with only a subject and method.
    pub fn new(subject: impl Into<String>, method: AuthMethod) -> Self {
        Identity {
            subject: subject.into(),
            method,
            issuer: None,
            scopes: Vec::new(),
            claims: Map::new(),
            client_id: None,
            key_id: None,
            spiffe_id: None,
            expires_at: None,
            jti: None,
            cert_thumbprint: None,
        }
    }

    /// Whether the caller has `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// A claim by dotted path (`org.id` reaches into objects).
    pub fn claim(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut cur = self.claims.get(parts.next()?)?;
        for p in parts {
            cur = cur.as_object()?.get(p)?;
        }
        Some(cur)
    }
}

/// Scopes from a claims object: `scope` as a space-separated string (RFC 8693/9068), or `scp`
/// as an array or string.
pub fn scopes_from_claims(claims: &Map<String, Value>) -> Vec<String> {
    let from = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => s.split_ascii_whitespace().map(str::to_owned).collect(),
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    };
    claims
        .get("scope")
        .or_else(|| claims.get("scp"))
        .map(from)
        .unwrap_or_default()
}
