//! JWT parsing and claim checks, JWK / JWK-set reading and PEM public keys, on arbitrary bytes.
//!
//! - as UTF-8: `jwt::parse`; a token that parses goes through `Issuer::check_claims` and the
//!   whole `Issuer::verify` (alg allow-list, `typ`, key lookup, signature, claims) of two
//!   issuers with fixed keys (the ES256 and EdDSA public keys that signed the seed tokens, and
//!   an HMAC secret);
//! - as JSON: `Jwk::from_json`, `Jwk::set_from_json` (each key read is written back with
//!   `to_jwk` and read again: the thumbprint must survive), and `check_claims` on the object;
//! - as is: `VerifyingKey::from_pem`.
//!
//! Nothing may panic; `verify` on a fixed key set must finish without waiting.

#![no_main]

use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use warden_auth::jwt::{self, Issuer};
use warden_auth::keys::KeySet;
use warden_config::JwtIssuerConfig;
use warden_crypto::jws::{Alg, Jwk, VerifyingKey, ALL_ALGS};

/// The time tokens are checked at (2023-11-14); the seed tokens are valid then.
const NOW: i64 = 1_700_000_000;

/// Public halves of the throwaway keys that signed `seeds/jwt_parse/{es256,eddsa}_token`.
const ES256_JWK: &str = r#"{"alg": "ES256", "crv": "P-256", "kid": "wkz5_WSFEkTwvTN1a23ka4I1MFcZABj_3p3pDhpw7vo", "kty": "EC", "use": "sig", "x": "Z2L-StbojJBwCYMS2sX7WvnPEFx5flqA1P27zH0E9l4", "y": "lI0OQ5c3A0DvPOuvU2ye9bHzWvRceTL8bikWV4F7NIQ"}"#;
const EDDSA_JWK: &str = r#"{"alg": "EdDSA", "crv": "Ed25519", "kid": "OYWnd67lXhoxzatmPrpzTGfFCa_7Q-H94NM3I_Qk63A", "kty": "OKP", "use": "sig", "x": "vWYX-4gT6CbTlW4-wMeyUj9OwFjI2IscqVeKAHscM-Q"}"#;

fn issuer_config(extra: &str) -> JwtIssuerConfig {
    let text = format!(
        r#"
name = "fuzz"
issuer = "https://issuer.example"
audiences = ["warden", "api"]
algorithms = ["ES256", "EdDSA", "RS256", "PS256", "ES384", "HS256"]
{extra}
"#
    );
    toml::from_str(&text).expect("fuzz issuer config")
}

fn issuers() -> &'static [Issuer; 2] {
    static ISSUERS: OnceLock<[Issuer; 2]> = OnceLock::new();
    ISSUERS.get_or_init(|| {
        let jwk = |s: &str| Jwk::from_json(&serde_json::from_str(s).expect("json")).expect("jwk");
        let keys = || {
            vec![
                jwk(ES256_JWK),
                jwk(EDDSA_JWK),
                Jwk {
                    kid: Some("hmac".into()),
                    alg: Some(Alg::HS256),
                    key: VerifyingKey::Hmac(vec![7u8; 32].into()),
                },
            ]
        };
        [
            Issuer::new(&issuer_config(""), KeySet::fixed(keys())),
            Issuer::new(
                &issuer_config(
                    "leeway = \"5m\"\nrequire_typ = \"at+jwt\"\nmax_token_bytes = \"1KiB\"",
                ),
                KeySet::fixed(keys()),
            ),
        ]
    })
}

/// Polls a future that must not wait (a fixed key set never fetches).
fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("Issuer::verify waited on a fixed key set"),
    }
}

fn check_identity(id: &warden_auth::Identity) {
    assert!(!id.subject.is_empty(), "identity without a subject");
    assert!(id.expires_at.is_some(), "JWT identity without expiry");
}

/// A key read from a JWK or PEM must survive `to_jwk` -> `from_json` unchanged.
fn round_trip(key: &VerifyingKey) {
    // Any algorithm on any key: false, never a panic.
    for alg in ALL_ALGS {
        let _ = key.verify(alg, b"header.payload", &[0u8; 64]);
    }
    let Some(alg) = ALL_ALGS.into_iter().find(|a| key.fits(*a)) else {
        return;
    };
    let thumb = key.thumbprint();
    let Some(v) = key.to_jwk("k", alg) else {
        return;
    };
    let back = Jwk::from_json(&v)
        .unwrap_or_else(|e| panic!("to_jwk output is refused by from_json: {e}: {v}"));
    assert_eq!(back.kid.as_deref(), Some("k"));
    assert_eq!(back.alg, Some(alg));
    assert_eq!(
        back.key.thumbprint(),
        thumb,
        "thumbprint changed through to_jwk: {v}"
    );
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(parsed) = jwt::parse(text) {
            assert!(text.starts_with(parsed.signing_input));
            let _ = jwt::unverified_issuer(&parsed);
            for issuer in issuers() {
                if let Ok(id) = issuer.check_claims(&parsed.claims, NOW) {
                    check_identity(&id);
                }
                if let Ok(id) = now_or_never(issuer.verify(&parsed, NOW)) {
                    check_identity(&id);
                }
            }
        }
    }

    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        if let Ok(jwk) = Jwk::from_json(&v) {
            if let Some(alg) = jwk.alg {
                assert!(jwk.key.fits(alg), "from_json kept an alg that does not fit");
            }
            round_trip(&jwk.key);
        }
        if let Ok((keys, skipped)) = Jwk::set_from_json(&v) {
            let total = v["keys"].as_array().map_or(0, Vec::len);
            assert_eq!(keys.len() + skipped.len(), total);
            for k in &keys {
                round_trip(&k.key);
            }
        }
        if let Some(claims) = v.as_object() {
            for issuer in issuers() {
                if let Ok(id) = issuer.check_claims(claims, NOW) {
                    check_identity(&id);
                }
            }
        }
        // Wrapped as a one-key set too.
        let _ = Jwk::set_from_json(&json!({ "keys": [v] }));
    }

    if let Ok(key) = VerifyingKey::from_pem(data) {
        round_trip(&key);
    }
});
