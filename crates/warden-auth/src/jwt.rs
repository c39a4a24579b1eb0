//! JWT bearer tokens (RFC 7519, 7515): parsing, signature and claim checks.
//!
//! What is refused, and why:
//! - anything but three base64url parts (a five-part JWE, a stripped signature, padding);
//! - `alg` outside the issuer's allow-list (`none` is never on it), or not fitting the key the
//!   `kid` names: an `HS256` token is never checked with an RSA key or a JWKS as the secret;
//! - `jku`, `x5u`, `jwk` and `x5c` are ignored, never used to find a key;
//! - any `crit` header: Warden understands no JWS extensions (RFC 7515 §4.1.11);
//! - `exp` missing or past, `nbf` or `iat` in the future (each with the issuer's leeway);
//! - `iss` not the issuer's, no accepted audience in `aud`, a wrong `typ` where required.

use std::sync::Arc;

use serde_json::{Map, Value};
use warden_config::JwtIssuerConfig;
use warden_crypto::jws::{b64url_decode, Alg, Jwk, VerifyingKey};

use crate::identity::{scopes_from_claims, AuthMethod, Identity};
use crate::keys::{KeySet, Lookup};

/// Why a JWT was refused (for metrics and logs; the client only sees `invalid_token`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtError {
    /// Longer than the issuer allows.
    TooLarge,
    /// Not three base64url parts of JSON.
    Malformed,
    /// `alg` not allowed for the issuer.
    Algorithm,
    /// A `crit` header.
    Crit,
    /// Wrong `typ`.
    Type,
    /// No key with the token's `kid`.
    UnknownKey,
    /// The key named has another type than `alg`.
    KeyMismatch,
    /// The signature does not verify.
    Signature,
    /// No `exp`.
    MissingExp,
    /// Past `exp`.
    Expired,
    /// Before `nbf`.
    NotYetValid,
    /// `iat` in the future.
    IssuedInFuture,
    /// `iss` is not an accepted issuer.
    Issuer,
    /// No accepted audience.
    Audience,
    /// No `sub`.
    MissingSubject,
    /// The token's `jti` was revoked.
    Revoked,
}

impl JwtError {
    /// The reason label (metrics, access log).
    pub fn reason(self) -> &'static str {
        match self {
            JwtError::TooLarge => "token_too_large",
            JwtError::Malformed => "malformed_token",
            JwtError::Algorithm => "algorithm_not_allowed",
            JwtError::Crit => "unsupported_crit",
            JwtError::Type => "wrong_typ",
            JwtError::UnknownKey => "unknown_kid",
            JwtError::KeyMismatch => "key_type_mismatch",
            JwtError::Signature => "bad_signature",
            JwtError::MissingExp => "missing_exp",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::IssuedInFuture => "issued_in_future",
            JwtError::Issuer => "wrong_issuer",
            JwtError::Audience => "wrong_audience",
            JwtError::MissingSubject => "missing_sub",
            JwtError::Revoked => "revoked",
        }
    }
}

/// A token split and decoded, not yet trusted.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// `alg`.
    pub alg: Alg,
    /// `kid`.
    pub kid: Option<String>,
    /// `typ`.
    pub typ: Option<String>,
    /// The claims.
    pub claims: Map<String, Value>,
    /// `header.payload`, the signed bytes.
    pub signing_input: &'a str,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// The most a JWT may be before any parsing, whatever the issuer allows.
pub const HARD_MAX_TOKEN: usize = 64 * 1024;

/// Splits and decodes a compact JWS. Knows nothing about keys or issuers.
pub fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    if token.len() > HARD_MAX_TOKEN {
        return Err(JwtError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(JwtError::Malformed);
    }
    let header: Map<String, Value> = b64url_decode(h.as_bytes())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    let claims: Map<String, Value> = b64url_decode(p.as_bytes())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    let signature = b64url_decode(s.as_bytes()).ok_or(JwtError::Malformed)?;
    if header.contains_key("crit") {
        return Err(JwtError::Crit);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::parse)
        .ok_or(JwtError::Algorithm)?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) if k.len() <= 256 => Some(k.clone()),
        Some(_) => return Err(JwtError::Malformed),
    };
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(JwtError::Malformed),
    };
    Ok(Parsed {
        alg,
        kid,
        typ,
        claims,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature,
    })
}

/// A configured issuer, ready to verify tokens.
pub struct Issuer {
    /// The name routes refer to.
    pub name: Arc<str>,
    /// The `iss` value.
    pub issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Alg>,
    leeway: i64,
    max_token_bytes: usize,
    require_typ: Option<String>,
    /// Its keys.
    pub keys: Arc<KeySet>,
    /// The config it was built from (to reuse it across reloads).
    pub config: JwtIssuerConfig,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("name", &self.name).finish()
    }
}

fn num(v: Option<&Value>) -> Result<Option<i64>, JwtError> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or(JwtError::Malformed),
        Some(_) => Err(JwtError::Malformed),
    }
}

impl Issuer {
    /// Builds an issuer from its config and a key set.
    pub fn new(cfg: &JwtIssuerConfig, keys: Arc<KeySet>) -> Issuer {
        Issuer {
            name: Arc::from(cfg.name.as_str()),
            issuer: cfg.issuer.clone(),
            audiences: cfg.audiences.clone(),
            algorithms: cfg
                .algorithms
                .iter()
                .filter_map(|a| Alg::parse(a))
                .collect(),
            leeway: cfg.leeway.0.as_secs() as i64,
            max_token_bytes: cfg.max_token_bytes.0 as usize,
            require_typ: cfg.require_typ.clone(),
            keys,
            config: cfg.clone(),
        }
    }

    /// Reads the keys a config names on disk (or the shared secret). `None` for `jwks_url`
    /// issuers, whose keys come from the fetcher.
    pub fn static_keys(
        cfg: &JwtIssuerConfig,
        secrets: &dyn warden_config::SecretResolver,
    ) -> Result<Option<Vec<Jwk>>, String> {
        if let Some(secret) = &cfg.hmac_secret {
            let v = secrets
                .resolve(secret)
                .map_err(|e| format!("hmac_secret: {e}"))?;
            // Validation checks local secrets; one from a vault is checked here.
            if v.len() < 32 {
                return Err("hmac_secret: must be at least 32 bytes (256 bits)".into());
            }
            return Ok(Some(vec![Jwk {
                kid: None,
                alg: None,
                key: VerifyingKey::Hmac(zeroize::Zeroizing::new(v.to_vec())),
            }]));
        }
        if let Some(f) = &cfg.public_key_file {
            let pem =
                std::fs::read(f).map_err(|e| format!("cannot read `{}`: {e}", f.display()))?;
            let key =
                VerifyingKey::from_pem(&pem).map_err(|e| format!("`{}`: {e}", f.display()))?;
            return Ok(Some(vec![Jwk {
                kid: None,
                alg: None,
                key,
            }]));
        }
        if let Some(f) = &cfg.jwks_file {
            let text =
                std::fs::read(f).map_err(|e| format!("cannot read `{}`: {e}", f.display()))?;
            let v: Value = serde_json::from_slice(&text)
                .map_err(|e| format!("`{}` is not JSON: {e}", f.display()))?;
            let (keys, skipped) =
                Jwk::set_from_json(&v).map_err(|e| format!("`{}`: {e}", f.display()))?;
            if let Some((i, e)) = skipped.first() {
                return Err(format!("`{}`: keys[{i}]: {e}", f.display()));
            }
            if keys.is_empty() {
                return Err(format!("`{}` holds no keys", f.display()));
            }
            return Ok(Some(keys));
        }
        Ok(None)
    }

    /// Whether `iss` names this issuer.
    pub fn is(&self, iss: &str) -> bool {
        self.issuer == iss
    }

    /// Largest token this issuer accepts.
    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    /// Verifies a parsed token at `now` (Unix seconds): signature first, then claims.
    pub async fn verify(&self, t: &Parsed<'_>, now: i64) -> Result<Identity, JwtError> {
        if t.signing_input.len() + t.signature.len() > self.max_token_bytes {
            return Err(JwtError::TooLarge);
        }
        if !self.algorithms.contains(&t.alg) {
            return Err(JwtError::Algorithm);
        }
        if let Some(req) = &self.require_typ {
            let ok = t.typ.as_deref().is_some_and(|typ| {
                typ.eq_ignore_ascii_case(req)
                    || typ
                        .strip_prefix("application/")
                        .is_some_and(|s| s.eq_ignore_ascii_case(req))
            });
            if !ok {
                return Err(JwtError::Type);
            }
        }
        self.check_signature(t).await?;
        self.check_claims(&t.claims, now)
    }

    /// Checks a parsed JWS's signature with this issuer's keys: an allowed `alg`, a key that
    /// fits it (re-fetching the JWKS for an unknown `kid`, rate-limited), a valid signature.
    /// Nothing about the claims: the revocation channel's messages are checked with this.
    pub async fn check_signature(&self, t: &Parsed<'_>) -> Result<(), JwtError> {
        if !self.algorithms.contains(&t.alg) {
            return Err(JwtError::Algorithm);
        }
        let key = match self.keys.find(t.kid.as_deref(), t.alg) {
            Lookup::Found(k) => k,
            Lookup::UnknownKid => {
                if self.keys.refetch_for_unknown_kid().await {
                    match self.keys.find(t.kid.as_deref(), t.alg) {
                        Lookup::Found(k) => k,
                        Lookup::UnknownKid => return Err(JwtError::UnknownKey),
                        _ => return Err(JwtError::KeyMismatch),
                    }
                } else {
                    return Err(JwtError::UnknownKey);
                }
            }
            Lookup::WrongType | Lookup::Ambiguous => return Err(JwtError::KeyMismatch),
        };
        if !key.verify(t.alg, t.signing_input.as_bytes(), &t.signature) {
            return Err(JwtError::Signature);
        }
        Ok(())
    }

    /// Checks the claims of a token whose signature verified.
    pub fn check_claims(&self, c: &Map<String, Value>, now: i64) -> Result<Identity, JwtError> {
        let exp = num(c.get("exp"))?.ok_or(JwtError::MissingExp)?;
        if now >= exp.saturating_add(self.leeway) {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = num(c.get("nbf"))? {
            if now.saturating_add(self.leeway) < nbf {
                return Err(JwtError::NotYetValid);
            }
        }
        if let Some(iat) = num(c.get("iat"))? {
            if now.saturating_add(self.leeway) < iat {
                return Err(JwtError::IssuedInFuture);
            }
        }
        if c.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(JwtError::Issuer);
        }
        let aud_ok = match c.get("aud") {
            Some(Value::String(a)) => self.audiences.iter().any(|x| x == a),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .any(|a| self.audiences.iter().any(|x| x == a)),
            _ => false,
        };
        if !aud_ok {
            return Err(JwtError::Audience);
        }
        let sub = c
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(JwtError::MissingSubject)?;
        let mut id = Identity::new(sub, AuthMethod::Jwt);
        id.issuer = Some(self.issuer.clone());
        id.scopes = scopes_from_claims(c);
        id.client_id = c
            .get("client_id")
            .or_else(|| c.get("azp"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        id.expires_at = Some(exp);
        id.jti = c.get("jti").and_then(Value::as_str).map(str::to_owned);
        id.cert_thumbprint = c
            .get("cnf")
            .and_then(|cnf| cnf.get("x5t#S256"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        id.claims = c.clone();
        Ok(id)
    }
}

/// The unverified `iss` of a parsed token, to pick the issuer that must verify it.
pub fn unverified_issuer<'a>(t: &'a Parsed<'_>) -> Option<&'a str> {
    t.claims.get("iss").and_then(Value::as_str)
}
