//! The revocation channel's messages: a compact JWS signed by the token service with its
//! current token-signing key, so a gateway believes only what the authority it already trusts
//! published, not whoever can `PUBLISH` to the channel.
//!
//! Header `{"alg": "ES256", "kid": …, "typ": "warden-revocation+jwt"}`, claims
//! `{"jti", "exp", "seq", "iat"}`. The gateway verifies it with the key set of the
//! `[[auth.jwt]]` issuer named by `auth.revocation.signed_by` (the JWKS it fetches anyway; no
//! shared secret to distribute), and drops, counting each by reason ([`Dropped`]):
//! anything that is not a JWS (`unsigned`: what an older token service or an intruder sends),
//! a signature that does not verify or an algorithm the issuer does not allow
//! (`bad_signature`), a `kid` the issuer does not publish even after a re-fetch
//! (`unknown_key`), another `typ` or missing claims (`malformed`: an access token replayed on
//! the channel is one), and an `iat` further than `max_message_age` from the gateway's clock
//! either way (`stale`). A replayed message can at most revoke the same token again; the age
//! bound keeps a message captured long ago, or signed with a key since retired, from counting.

use serde_json::{json, Value};
use warden_crypto::jws::SigningKey;

use crate::jwt::{self, Issuer, JwtError};

/// The JOSE `typ` of a revocation message: never `at+jwt`, so a message is not a token and a
/// token is not a message.
pub const TYP: &str = "warden-revocation+jwt";

/// Longest `jti` accepted in a message (the authority's are 22 characters).
const MAX_JTI: usize = 256;

/// Why a message on the revocation channel was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Not a compact JWS at all.
    Unsigned,
    /// The signature does not verify, or the algorithm or key type is not the issuer's.
    BadSignature,
    /// No key of the signing issuer has the message's `kid`.
    UnknownKey,
    /// Signed, but not a revocation message (`typ`, claims).
    Malformed,
    /// `iat` too old or too far in the future.
    Stale,
}

impl Dropped {
    /// Every reason, for metrics that list them all from the start.
    pub const ALL: [Dropped; 5] = [
        Dropped::Unsigned,
        Dropped::BadSignature,
        Dropped::UnknownKey,
        Dropped::Malformed,
        Dropped::Stale,
    ];

    /// The `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            Dropped::Unsigned => "unsigned",
            Dropped::BadSignature => "bad_signature",
            Dropped::UnknownKey => "unknown_key",
            Dropped::Malformed => "malformed",
            Dropped::Stale => "stale",
        }
    }
}

/// A verified revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The revoked token's id.
    pub jti: String,
    /// The token's expiry (Unix seconds).
    pub exp: i64,
}

/// Signs a revocation message at `iat` (the token service).
pub fn sign(key: &SigningKey, jti: &str, exp: i64, seq: u64, iat: i64) -> String {
    key.sign_jwt(
        TYP,
        &json!({"jti": jti, "exp": exp, "seq": seq, "iat": iat}),
    )
}

/// Verifies a message with `issuer`'s keys at `now` (Unix seconds), allowing `max_age`
/// seconds between its `iat` and `now` either way.
pub async fn verify(
    payload: &[u8],
    issuer: &Issuer,
    now: i64,
    max_age: i64,
) -> Result<Revocation, Dropped> {
    let text = std::str::from_utf8(payload).map_err(|_| Dropped::Unsigned)?;
    let t = jwt::parse(text.trim()).map_err(|_| Dropped::Unsigned)?;
    if !t
        .typ
        .as_deref()
        .is_some_and(|x| x.eq_ignore_ascii_case(TYP))
    {
        return Err(Dropped::Malformed);
    }
    issuer.check_signature(&t).await.map_err(|e| match e {
        JwtError::UnknownKey => Dropped::UnknownKey,
        _ => Dropped::BadSignature,
    })?;
    let c = &t.claims;
    let jti = c
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI);
    let exp = c.get("exp").and_then(Value::as_i64);
    let iat = c.get("iat").and_then(Value::as_i64);
    let (Some(jti), Some(exp), Some(iat)) = (jti, exp, iat) else {
        return Err(Dropped::Malformed);
    };
    if now.abs_diff(iat) > max_age.unsigned_abs() {
        return Err(Dropped::Stale);
    }
    Ok(Revocation {
        jti: jti.to_owned(),
        exp,
    })
}

#[cfg(test)]
mod tests {
    use warden_config::JwtIssuerConfig;
    use warden_crypto::jws::{b64url, Alg, Jwk};

    use super::*;
    use crate::keys::KeySet;

    fn issuer(key: &SigningKey) -> Issuer {
        let cfg: JwtIssuerConfig = toml::from_str(
            "name = \"authority\"\nissuer = \"https://auth.test\"\naudiences = [\"api\"]\n\
             algorithms = [\"ES256\"]\njwks_url = \"https://auth.test/jwks\"\n",
        )
        .unwrap();
        let jwk = Jwk::from_json(&key.public_jwk()).unwrap();
        Issuer::new(&cfg, KeySet::fixed(vec![jwk]))
    }

    const NOW: i64 = 1_800_000_000;

    #[tokio::test]
    async fn only_a_fresh_message_signed_by_the_issuer_is_a_revocation() {
        let key = SigningKey::generate(Alg::ES256).unwrap();
        let other = SigningKey::generate(Alg::ES256).unwrap();
        let iss = issuer(&key);
        let check = |m: String| {
            let iss = &iss;
            async move { verify(m.as_bytes(), iss, NOW, 60).await }
        };
        assert_eq!(
            check(sign(&key, "j1", NOW + 300, 7, NOW - 5)).await,
            Ok(Revocation {
                jti: "j1".into(),
                exp: NOW + 300
            })
        );
        // What the token service sent before messages were signed, and an intruder's guess.
        let plain = r#"{"jti":"j1","exp":1800000300,"seq":7}"#.to_owned();
        assert_eq!(check(plain).await, Err(Dropped::Unsigned));
        // The issuer's kid, another key's signature.
        let forged = {
            let good = sign(&key, "j1", NOW + 300, 7, NOW);
            let (input, _) = good.rsplit_once('.').unwrap();
            format!("{input}.{}", b64url(&other.sign(input.as_bytes())))
        };
        assert_eq!(check(forged).await, Err(Dropped::BadSignature));
        assert_eq!(
            check(sign(&other, "j1", NOW + 300, 7, NOW)).await,
            Err(Dropped::UnknownKey)
        );
        assert_eq!(
            check(sign(&key, "j1", NOW + 300, 7, NOW - 61)).await,
            Err(Dropped::Stale)
        );
        assert_eq!(
            check(sign(&key, "j1", NOW + 300, 7, NOW + 61)).await,
            Err(Dropped::Stale)
        );
        // An access token of the same issuer is not a revocation message.
        let token = key.sign_jwt(
            "at+jwt",
            &json!({"jti": "j1", "exp": NOW + 300, "iat": NOW}),
        );
        assert_eq!(check(token).await, Err(Dropped::Malformed));
        let no_exp = key.sign_jwt(TYP, &json!({"jti": "j1", "iat": NOW}));
        assert_eq!(check(no_exp).await, Err(Dropped::Malformed));
    }
}
