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

    /// Checks what is forwarded to upstreams in headers (`x-warden-subject`, `-client-id`,
    /// `-scopes`): a subject, client id or scope with a control character (CR, LF, NUL, tab,
    /// DEL, C1) could split or end a header line in some upstream stack, or could not be
    /// forwarded at all, leaving the upstream an authenticated request without a subject;
    /// a scope with a space would read as two. Such a credential is refused
    /// (`invalid_claim`), whoever signed it.
    pub fn check_forwardable(&self) -> Result<(), &'static str> {
        let control = |s: &str| s.chars().any(char::is_control);
        if control(&self.subject)
            || self.client_id.as_deref().is_some_and(control)
            || self.scopes.iter().any(|s| control(s) || s.contains(' '))
        {
            return Err("invalid_claim");
        }
        Ok(())
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
/// as an array or string. Split on spaces only (RFC 6749 §3.3), so a CR, LF or tab stays in
/// its scope and [`Identity::check_forwardable`] refuses it.
pub fn scopes_from_claims(claims: &Map<String, Value>) -> Vec<String> {
    let from = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => s
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(claims: Value) -> Identity {
        let claims = claims.as_object().cloned().unwrap_or_default();
        let mut id = Identity::new(
            claims.get("sub").and_then(Value::as_str).unwrap_or("svc"),
            AuthMethod::Jwt,
        );
        id.scopes = scopes_from_claims(&claims);
        id.client_id = claims
            .get("client_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        id
    }

    #[test]
    fn control_characters_in_forwarded_claims_are_refused() {
        for bad in [
            json!({"sub": "admin\r\nx-warden-subject: root"}),
            json!({"sub": "admin\u{0}"}),
            json!({"sub": "a\tb"}),
            json!({"sub": "a\u{7f}"}),
            json!({"sub": "a\u{85}b"}),
            json!({"sub": "svc", "client_id": "c\nd"}),
            json!({"sub": "svc", "scope": "read\r\nwrite"}),
            json!({"sub": "svc", "scope": "read\twrite"}),
            json!({"sub": "svc", "scp": ["read", "a b"]}),
            json!({"sub": "svc", "scp": ["read\n"]}),
        ] {
            assert_eq!(
                id(bad.clone()).check_forwardable(),
                Err("invalid_claim"),
                "{bad}"
            );
        }
    }

    #[test]
    fn ordinary_claims_pass_and_scopes_split_on_spaces() {
        let ok = id(json!({"sub": "spiffe://x/ns/José", "client_id": "c-1", "scope": "a  b c"}));
        assert_eq!(ok.check_forwardable(), Ok(()));
        assert_eq!(ok.scopes, ["a", "b", "c"]);
    }
}
