//! Test token issuers: a signing key, its JWKS (as a file or JSON), and tokens with any claims
//! and headers, including deliberately broken ones.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use warden_crypto::jws::{b64url, Alg, SigningKey};

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An issuer with one signing key.
pub struct TestIssuer {
    /// The `iss` value.
    pub iss: String,
    /// The signing key.
    pub key: SigningKey,
    dir: tempfile::TempDir,
}

impl TestIssuer {
    /// An ES256 issuer named `iss`.
    pub fn new(iss: &str) -> Self {
        Self::with_alg(iss, Alg::ES256)
    }

    /// An issuer signing with `alg` (ES256 or EdDSA).
    pub fn with_alg(iss: &str, alg: Alg) -> Self {
        Self {
            iss: iss.to_owned(),
            key: SigningKey::generate(alg).expect("key"),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The `kid` of the key.
    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    /// The JWK set with the public key.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.key.public_jwk()] })
    }

    /// Writes the JWK set to a file; returns its path.
    pub fn jwks_file(&self) -> PathBuf {
        let p = self.dir.path().join("jwks.json");
        std::fs::write(&p, self.jwks().to_string()).expect("write jwks");
        p
    }

    /// Standard valid claims: this issuer, `aud`, `sub`, `exp` in 5 minutes, `iat` now.
    pub fn claims(&self, sub: &str, aud: &str, scope: &str) -> Value {
        let now = now();
        json!({
            "iss": self.iss, "sub": sub, "aud": aud, "scope": scope,
            "iat": now, "exp": now + 300, "jti": format!("jti-{}", rand_id()),
        })
    }

    /// A token with the standard header (`alg`, `kid`, `typ: at+jwt`).
    pub fn token(&self, claims: &Value) -> String {
        self.key.sign_jwt("at+jwt", claims)
    }

    /// A token with a custom header, signed by this key (whatever the header says).
    pub fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64url(&sig))
    }

    /// The standard header for this key.
    pub fn header(&self) -> Value {
        json!({"alg": self.key.alg().name(), "kid": self.kid(), "typ": "at+jwt"})
    }
}

/// A token with any header and claims and a given raw signature.
pub fn unsigned(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(signature)
    )
}

/// An HS256 token over `header.claims` with `secret` (for key-confusion attacks).
pub fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64url(tag.as_ref()))
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed) ^ (now() as u64).rotate_left(20)
}
