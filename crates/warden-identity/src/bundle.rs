//! SPIFFE trust bundles (SPIFFE Trust Domain and Bundle standard, section 4): a JWK set whose
//! keys are the trust domain's X.509 authorities (`"use": "x509-svid"`, the root in `x5c`)
//! and JWT authorities (`"use": "jwt-svid"`, with a `kid`), with `spiffe_sequence` and
//! `spiffe_refresh_hint`.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Map, Value};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::spiffe::TrustDomain;

/// The largest bundle document accepted, in bytes.
pub const MAX_BUNDLE_LEN: usize = 1024 * 1024;

/// Why a bundle document is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Too large.
    #[error("bundle is larger than {MAX_BUNDLE_LEN} bytes")]
    TooLarge,
    /// Not a JSON object with a `keys` array.
    #[error("bundle is not a JWK set: {0}")]
    Malformed(String),
    /// An X.509 authority entry without exactly one certificate in `x5c`.
    #[error("x509-svid key {0} must have exactly one certificate in x5c")]
    X5c(usize),
    /// A certificate that does not parse.
    #[error("x509-svid key {0}: certificate does not parse")]
    BadCertificate(usize),
    /// A JWT authority without a `kid`.
    #[error("jwt-svid key {0} has no kid")]
    NoKid(usize),
    /// A key type the bundle cannot describe.
    #[error("certificate's key type is not supported in a bundle")]
    KeyType,
}

/// A trust domain's bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// Whose bundle.
    pub trust_domain: TrustDomain,
    /// Root certificates (DER).
    pub x509_authorities: Vec<Vec<u8>>,
    /// Public JWKs (each with a `kid`).
    pub jwt_authorities: Vec<Value>,
    /// Increases with every change.
    pub sequence: u64,
    /// How often, in seconds, a holder should fetch it again.
    pub refresh_hint: Option<u64>,
}

impl Bundle {
    /// The bundle as SPIFFE's JWK set.
    pub fn to_json(&self) -> Result<Value, BundleError> {
        let mut keys = Vec::new();
        for der in &self.x509_authorities {
            let mut jwk = jwk_of_cert(der)?;
            jwk.insert("use".into(), "x509-svid".into());
            jwk.insert("x5c".into(), json!([STANDARD.encode(der)]));
            keys.push(Value::Object(jwk));
        }
        for k in &self.jwt_authorities {
            let mut k = k.clone();
            if let Some(o) = k.as_object_mut() {
                o.insert("use".into(), "jwt-svid".into());
            }
            keys.push(k);
        }
        let mut doc = json!({ "keys": keys, "spiffe_sequence": self.sequence });
        if let Some(h) = self.refresh_hint {
            doc["spiffe_refresh_hint"] = h.into();
        }
        Ok(doc)
    }

    /// Parses `doc` as `td`'s bundle. Keys with another `use` are ignored, as the standard
    /// asks.
    pub fn parse(td: TrustDomain, doc: &[u8]) -> Result<Self, BundleError> {
        if doc.len() > MAX_BUNDLE_LEN {
            return Err(BundleError::TooLarge);
        }
        let v: Value =
            serde_json::from_slice(doc).map_err(|e| BundleError::Malformed(e.to_string()))?;
        let keys = v
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| BundleError::Malformed("no `keys` array".into()))?;
        let mut x509 = Vec::new();
        let mut jwt = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match k.get("use").and_then(Value::as_str) {
                Some("x509-svid") => {
                    let x5c = k.get("x5c").and_then(Value::as_array);
                    let [cert] = x5c.map(Vec::as_slice).unwrap_or_default() else {
                        return Err(BundleError::X5c(i));
                    };
                    let der = cert
                        .as_str()
                        .and_then(|s| STANDARD.decode(s).ok())
                        .ok_or(BundleError::BadCertificate(i))?;
                    x509_parser::certificate::X509Certificate::from_der(&der)
                        .map_err(|_| BundleError::BadCertificate(i))?;
                    x509.push(der);
                }
                Some("jwt-svid") => {
                    if k.get("kid")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        return Err(BundleError::NoKid(i));
                    }
                    jwt.push(k.clone());
                }
                _ => {}
            }
        }
        Ok(Self {
            trust_domain: td,
            x509_authorities: x509,
            jwt_authorities: jwt,
            sequence: v
                .get("spiffe_sequence")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            refresh_hint: v.get("spiffe_refresh_hint").and_then(Value::as_u64),
        })
    }
}

/// The public JWK (`kty` and its members) of a certificate's key.
fn jwk_of_cert(der: &[u8]) -> Result<Map<String, Value>, BundleError> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|_| BundleError::BadCertificate(0))?;
    let spki = cert.public_key();
    let b64 = |b: &[u8]| Value::from(URL_SAFE_NO_PAD.encode(b));
    let mut jwk = Map::new();
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        let (crv, n) = match curve {
            Some(c) if c == OID_EC_P256 => ("P-256", 32),
            Some(c) if c == OID_NIST_EC_P384 => ("P-384", 48),
            _ => return Err(BundleError::KeyType),
        };
        let point = &spki.subject_public_key.data;
        if point.len() != 1 + 2 * n || point[0] != 4 {
            return Err(BundleError::KeyType);
        }
        jwk.insert("kty".into(), "EC".into());
        jwk.insert("crv".into(), crv.into());
        jwk.insert("x".into(), b64(&point[1..1 + n]));
        jwk.insert("y".into(), b64(&point[1 + n..]));
    } else if *alg == OID_SIG_ED25519 {
        jwk.insert("kty".into(), "OKP".into());
        jwk.insert("crv".into(), "Ed25519".into());
        jwk.insert("x".into(), b64(&spki.subject_public_key.data));
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(BundleError::KeyType);
        };
        let strip = |b: &[u8]| -> Vec<u8> {
            let i = b.iter().position(|&x| x != 0).unwrap_or(b.len());
            b[i..].to_vec()
        };
        jwk.insert("kty".into(), "RSA".into());
        jwk.insert("n".into(), b64(&strip(rsa.modulus)));
        jwk.insert("e".into(), b64(&strip(rsa.exponent)));
    } else {
        return Err(BundleError::KeyType);
    }
    Ok(jwk)
}
