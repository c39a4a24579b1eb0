//! Internal tokens: short-lived JWTs the gateway signs for upstreams, so a service can check
//! that a call came through the gateway and who made it. The public keys are served on the
//! admin listener (`/.well-known/jwks.json`).

use std::sync::Arc;

use serde_json::{json, Value};
use warden_config::InternalTokenConfig;
use warden_crypto::jws::{b64url, Alg, SigningKey};

use crate::identity::Identity;

/// Signs internal tokens.
pub struct InternalSigner {
    key: Arc<SigningKey>,
    issuer: String,
    lifetime: i64,
    config: InternalTokenConfig,
}

impl std::fmt::Debug for InternalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InternalSigner(kid {})", self.key.kid())
    }
}

impl InternalSigner {
    /// Builds the signer. A configured key is read; otherwise the previous signer's generated
    /// key is kept (so a reload does not change it), or a new one is generated.
    pub fn new(
        cfg: &InternalTokenConfig,
        previous: Option<&InternalSigner>,
        secrets: &dyn warden_config::SecretResolver,
    ) -> Result<InternalSigner, String> {
        let key = match &cfg.signing_key {
            Some(r) => {
                let pem = secrets.resolve(r).map_err(|e| e.to_string())?;
                Arc::new(SigningKey::from_pem(Alg::ES256, &pem).map_err(|e| e.to_string())?)
            }
            None => match previous.filter(|p| p.config.signing_key.is_none()) {
                Some(p) => p.key.clone(),
                None => Arc::new(SigningKey::generate(Alg::ES256).map_err(|e| e.to_string())?),
            },
        };
        Ok(InternalSigner {
            key,
            issuer: cfg.issuer.clone(),
            lifetime: cfg.lifetime.0.as_secs() as i64,
            config: cfg.clone(),
        })
    }

    /// The JWK set with the signing key, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.key.public_jwk()] })
    }

    /// A token for `audience` saying who the caller is: `sub`, `scope`, `client_id`, how they
    /// authenticated (`warden_auth`) and who vouched for them (`warden_iss`).
    pub fn mint(&self, id: &Identity, audience: &str, now: i64) -> String {
        let mut jti = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut jti[..]);
        let mut claims = json!({
            "iss": self.issuer,
            "sub": id.subject,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
            "jti": b64url(&jti),
            "scope": id.scopes.join(" "),
            "warden_auth": id.method.as_str(),
        });
        if let Some(o) = claims.as_object_mut() {
            if let Some(c) = &id.client_id {
                o.insert("client_id".into(), c.clone().into());
            }
            if let Some(i) = &id.issuer {
                o.insert("warden_iss".into(), i.clone().into());
            }
        }
        self.key.sign_jwt("at+jwt", &claims)
    }
}
