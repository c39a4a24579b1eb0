//! RFC 9068 JWT access tokens: minted with the ring's current key, and verified when they
//! come back (token exchange, introspection, revocation).

use serde_json::{json, Map, Value};
use warden_auth::jwt;
use warden_crypto::jws::b64url;

use crate::keys::KeyRing;
use crate::settings::LEEWAY;

/// The JOSE `typ` of access tokens (RFC 9068 §2.1).
pub const TYP: &str = "at+jwt";

/// What goes into a new access token.
#[derive(Debug, Clone)]
pub struct Grant {
    /// `sub`.
    pub subject: String,
    /// `client_id`: the client the token is issued to.
    pub client_id: String,
    /// `aud` (one or more).
    pub audiences: Vec<String>,
    /// Scopes (`scope`, space-separated; omitted when empty).
    pub scopes: Vec<String>,
    /// Lifetime in seconds.
    pub lifetime: i64,
    /// `cnf.x5t#S256` (certificate-bound token).
    pub cert_thumbprint: Option<String>,
    /// `act` (token exchange): the actor chain.
    pub act: Option<Value>,
}

/// A token just minted.
#[derive(Debug)]
pub struct Minted {
    /// The compact JWS.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`.
    pub exp: i64,
    /// The signing key's `kid`.
    pub kid: String,
}

/// Mints a token at `now`; `None` when no key signs at `now` (never after start-up).
pub fn mint(ring: &KeyRing, issuer: &str, g: &Grant, now: i64) -> Option<Minted> {
    let key = ring.signer(now)?;
    let mut jti_bytes = [0u8; 16];
    rand::fill(&mut jti_bytes);
    let jti = b64url(&jti_bytes);
    let exp = now + g.lifetime;
    let aud = if g.audiences.len() == 1 {
        Value::String(g.audiences[0].clone())
    } else {
        json!(g.audiences)
    };
    let mut claims = json!({
        "iss": issuer,
        "sub": g.subject,
        "aud": aud,
        "exp": exp,
        "iat": now,
        "nbf": now,
        "jti": jti,
        "client_id": g.client_id,
    });
    let o = claims.as_object_mut()?;
    if !g.scopes.is_empty() {
        o.insert("scope".into(), g.scopes.join(" ").into());
    }
    if let Some(t) = &g.cert_thumbprint {
        o.insert("cnf".into(), json!({ "x5t#S256": t }));
    }
    if let Some(a) = &g.act {
        o.insert("act".into(), a.clone());
    }
    Some(Minted {
        token: key.sign_jwt(TYP, &claims),
        jti,
        exp,
        kid: key.kid().to_owned(),
    })
}

/// Verifies a token this authority issued: our `typ`, a published key, the signature, `iss`,
/// and `exp`/`nbf` at `now` (with leeway). Returns the claims. Revocation is checked by the
/// caller (it needs the store).
pub fn verify(ring: &KeyRing, issuer: &str, token: &str, now: i64) -> Option<Map<String, Value>> {
    verify_with_kid(ring, issuer, token, now).map(|(c, _)| c)
}

/// [`verify`], also returning the `kid` of the key that signed the token.
pub fn verify_with_kid(
    ring: &KeyRing,
    issuer: &str,
    token: &str,
    now: i64,
) -> Option<(Map<String, Value>, String)> {
    if token.len() > 16 * 1024 {
        return None;
    }
    let t = jwt::parse(token).ok()?;
    if !t
        .typ
        .as_deref()
        .is_some_and(|x| x.eq_ignore_ascii_case(TYP))
    {
        return None;
    }
    let kid = t.kid?;
    let key = ring.find(&kid)?;
    if key.alg() != t.alg
        || !key
            .verifying_key()
            .verify(t.alg, t.signing_input.as_bytes(), &t.signature)
    {
        return None;
    }
    let c = t.claims;
    if c.get("iss").and_then(Value::as_str) != Some(issuer) {
        return None;
    }
    let exp = c.get("exp").and_then(Value::as_i64)?;
    if now >= exp {
        return None;
    }
    if c.get("nbf")
        .and_then(Value::as_i64)
        .is_some_and(|nbf| now + LEEWAY < nbf)
    {
        return None;
    }
    c.get("jti").and_then(Value::as_str)?;
    Some((c, kid))
}

/// The `scope` claim as a list.
pub fn scopes_of(c: &Map<String, Value>) -> Vec<String> {
    c.get("scope")
        .and_then(Value::as_str)
        .map(|s| {
            s.split(' ')
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The `aud` claim as a list.
pub fn audiences_of(c: &Map<String, Value>) -> Vec<String> {
    match c.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}
