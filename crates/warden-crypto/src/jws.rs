//! JSON Web Signature primitives (RFC 7515/7517/7518): the algorithms Warden accepts, public
//! keys from JWKs or PEM, signature checks and ES256/EdDSA signing keys.
//!
//! Everything here is built on ring. An algorithm is only ever checked against a key of its own
//! type: an `HS256` signature is never checked with an RSA key's bytes as the HMAC secret, and
//! an `ES256` signature never with a P-384 key. JWK `alg` and `use` are honoured when present.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair as _};
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

/// Decodes unpadded base64url, the only encoding JWS allows (padding and other alphabets are
/// errors).
pub fn b64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// Encodes as unpadded base64url.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A JWS algorithm Warden implements. `none` is not one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alg {
    /// HMAC SHA-256 (shared secret).
    HS256,
    /// HMAC SHA-384.
    HS384,
    /// HMAC SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    RS512,
    /// RSASSA-PSS SHA-256.
    PS256,
    /// RSASSA-PSS SHA-384.
    PS384,
    /// RSASSA-PSS SHA-512.
    PS512,
    /// ECDSA P-256 SHA-256.
    ES256,
    /// ECDSA P-384 SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

/// Every algorithm, for parsing and listing.
pub const ALL_ALGS: [Alg; 12] = [
    Alg::HS256,
    Alg::HS384,
    Alg::HS512,
    Alg::RS256,
    Alg::RS384,
    Alg::RS512,
    Alg::PS256,
    Alg::PS384,
    Alg::PS512,
    Alg::ES256,
    Alg::ES384,
    Alg::EdDSA,
];

impl Alg {
    /// The algorithm with this exact (case-sensitive) JOSE name.
    pub fn parse(name: &str) -> Option<Alg> {
        ALL_ALGS.iter().copied().find(|a| a.name() == name)
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// Whether the algorithm uses a shared secret.
    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }
}

/// Why a key could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The JWK lacks a member or has a bad one.
    #[error("JWK: {0}")]
    Jwk(&'static str),
    /// The key type or curve is not supported.
    #[error("unsupported key: {0}")]
    Unsupported(String),
    /// The PEM or DER could not be parsed.
    #[error("PEM: {0}")]
    Pem(String),
}

/// A key that checks signatures.
#[derive(Clone)]
pub enum VerifyingKey {
    /// RSA modulus and exponent, big-endian without leading zeros.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// A P-256 point, uncompressed (`04 || x || y`).
    P256(Vec<u8>),
    /// A P-384 point, uncompressed.
    P384(Vec<u8>),
    /// An Ed25519 public key.
    Ed25519(Vec<u8>),
    /// A shared HMAC secret.
    Hmac(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VerifyingKey::Rsa { .. } => "VerifyingKey::Rsa",
            VerifyingKey::P256(_) => "VerifyingKey::P256",
            VerifyingKey::P384(_) => "VerifyingKey::P384",
            VerifyingKey::Ed25519(_) => "VerifyingKey::Ed25519",
            VerifyingKey::Hmac(_) => "VerifyingKey::Hmac(redacted)",
        })
    }
}

fn strip_zeros(b: &[u8]) -> Vec<u8> {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b[start..].to_vec()
}

fn member(jwk: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, KeyError> {
    let s = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or(KeyError::Jwk(name))?;
    b64url_decode(s.as_bytes()).ok_or(KeyError::Jwk(name))
}

/// A public key from a JWK set, with what the set says about it.
#[derive(Clone, Debug)]
pub struct Jwk {
    /// `kid`, when present.
    pub kid: Option<String>,
    /// `alg`, when present and known; a key with an unknown `alg` is refused.
    pub alg: Option<Alg>,
    /// The key.
    pub key: VerifyingKey,
}

/// Keys of a set that could not be used, with their index and why.
pub type SkippedKeys = Vec<(usize, KeyError)>;

impl Jwk {
    /// Reads one JWK (RFC 7517). Private members are ignored, symmetric (`oct`) keys are refused
    /// (they never belong in a published key set), and keys marked `use: enc` are refused.
    pub fn from_json(v: &Value) -> Result<Jwk, KeyError> {
        let o = v.as_object().ok_or(KeyError::Jwk("not an object"))?;
        if let Some(u) = o.get("use") {
            if u.as_str() != Some("sig") {
                return Err(KeyError::Unsupported("key not for signatures".into()));
            }
        }
        let kid = match o.get("kid") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(KeyError::Jwk("kid")),
        };
        let alg = match o.get("alg") {
            None => None,
            Some(Value::String(s)) => {
                Some(Alg::parse(s).ok_or_else(|| KeyError::Unsupported(format!("alg {s}")))?)
            }
            Some(_) => return Err(KeyError::Jwk("alg")),
        };
        let kty = o
            .get("kty")
            .and_then(Value::as_str)
            .ok_or(KeyError::Jwk("kty"))?;
        let key = match kty {
            "RSA" => {
                let n = strip_zeros(&member(o, "n")?);
                let e = strip_zeros(&member(o, "e")?);
                if n.len() < 256 {
                    return Err(KeyError::Unsupported("RSA key under 2048 bits".into()));
                }
                VerifyingKey::Rsa { n, e }
            }
            "EC" => {
                let crv = o
                    .get("crv")
                    .and_then(Value::as_str)
                    .ok_or(KeyError::Jwk("crv"))?;
                let (x, y) = (member(o, "x")?, member(o, "y")?);
                let size = match crv {
                    "P-256" => 32,
                    "P-384" => 48,
                    other => return Err(KeyError::Unsupported(format!("curve {other}"))),
                };
                if x.len() != size || y.len() != size {
                    return Err(KeyError::Jwk("x/y length"));
                }
                let mut point = Vec::with_capacity(1 + 2 * size);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                if size == 32 {
                    VerifyingKey::P256(point)
                } else {
                    VerifyingKey::P384(point)
                }
            }
            "OKP" => {
                let crv = o
                    .get("crv")
                    .and_then(Value::as_str)
                    .ok_or(KeyError::Jwk("crv"))?;
                if crv != "Ed25519" {
                    return Err(KeyError::Unsupported(format!("curve {crv}")));
                }
                let x = member(o, "x")?;
                if x.len() != 32 {
                    return Err(KeyError::Jwk("x length"));
                }
                VerifyingKey::Ed25519(x)
            }
            "oct" => return Err(KeyError::Unsupported("symmetric key in a key set".into())),
            other => return Err(KeyError::Unsupported(format!("kty {other}"))),
        };
        if let Some(a) = alg {
            if !key.fits(a) {
                return Err(KeyError::Unsupported(format!(
                    "alg {} does not fit the key type",
                    a.name()
                )));
            }
        }
        Ok(Jwk { kid, alg, key })
    }

    /// Reads a JWK set (`{"keys": [...]}`). Keys that cannot be used are skipped and reported
    /// in the second list (with their index), so one odd key does not lose the set.
    pub fn set_from_json(v: &Value) -> Result<(Vec<Jwk>, SkippedKeys), KeyError> {
        let keys = v
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(KeyError::Jwk("keys"))?;
        let mut ok = Vec::new();
        let mut skipped = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match Jwk::from_json(k) {
                Ok(j) => ok.push(j),
                Err(e) => skipped.push((i, e)),
            }
        }
        Ok((ok, skipped))
    }
}

impl VerifyingKey {
    /// Reads a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) or the key of a PEM `CERTIFICATE`.
    pub fn from_pem(pem: &[u8]) -> Result<VerifyingKey, KeyError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
        use x509_parser::prelude::FromDer;
        if let Ok(spki) = SubjectPublicKeyInfoDer::from_pem_slice(pem) {
            let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref())
                .map_err(|e| KeyError::Pem(e.to_string()))?;
            return Self::from_spki(&parsed);
        }
        if let Ok(cert) = CertificateDer::from_pem_slice(pem) {
            let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref())
                .map_err(|e| KeyError::Pem(e.to_string()))?;
            return Self::from_spki(c.public_key());
        }
        Err(KeyError::Pem(
            "no PUBLIC KEY or CERTIFICATE block found".into(),
        ))
    }

    fn from_spki(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<Self, KeyError> {
        use x509_parser::public_key::PublicKey;
        match spki.parsed().map_err(|e| KeyError::Pem(e.to_string()))? {
            PublicKey::RSA(rsa) => {
                let n = strip_zeros(rsa.modulus);
                if n.len() < 256 {
                    return Err(KeyError::Unsupported("RSA key under 2048 bits".into()));
                }
                Ok(VerifyingKey::Rsa {
                    n,
                    e: strip_zeros(rsa.exponent),
                })
            }
            PublicKey::EC(point) => {
                // The curve is named in the algorithm parameters; the point's length alone does
                // not say which curve it is on.
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string());
                let data = point.data().to_vec();
                match (curve.as_deref(), data.len(), data.first()) {
                    (Some("1.2.840.10045.3.1.7"), 65, Some(4)) => Ok(VerifyingKey::P256(data)),
                    (Some("1.3.132.0.34"), 97, Some(4)) => Ok(VerifyingKey::P384(data)),
                    _ => Err(KeyError::Unsupported(
                        "EC key (uncompressed P-256 and P-384 only)".into(),
                    )),
                }
            }
            PublicKey::Unknown(raw)
                if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" && raw.len() == 32 =>
            {
                Ok(VerifyingKey::Ed25519(raw.to_vec()))
            }
            _ => Err(KeyError::Unsupported(format!(
                "public key algorithm {}",
                spki.algorithm.algorithm.to_id_string()
            ))),
        }
    }

    /// Whether `alg` is an algorithm for this kind of key.
    pub fn fits(&self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (
                VerifyingKey::Rsa { .. },
                Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512
            ) | (VerifyingKey::P256(_), Alg::ES256)
                | (VerifyingKey::P384(_), Alg::ES384)
                | (VerifyingKey::Ed25519(_), Alg::EdDSA)
                | (VerifyingKey::Hmac(_), Alg::HS256 | Alg::HS384 | Alg::HS512)
        )
    }

    /// Checks `sig` over `msg` with `alg`. False when the algorithm does not fit the key.
    pub fn verify(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> bool {
        if !self.fits(alg) {
            return false;
        }
        match self {
            VerifyingKey::Hmac(secret) => {
                let a = match alg {
                    Alg::HS256 => ring::hmac::HMAC_SHA256,
                    Alg::HS384 => ring::hmac::HMAC_SHA384,
                    _ => ring::hmac::HMAC_SHA512,
                };
                // ring compares the tag in constant time.
                ring::hmac::verify(&ring::hmac::Key::new(a, secret), msg, sig).is_ok()
            }
            VerifyingKey::Rsa { n, e } => {
                let params: &signature::RsaParameters = match alg {
                    Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                };
                signature::RsaPublicKeyComponents { n, e }
                    .verify(params, msg, sig)
                    .is_ok()
            }
            VerifyingKey::P256(p) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, p)
                    .verify(msg, sig)
                    .is_ok()
            }
            VerifyingKey::P384(p) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, p)
                    .verify(msg, sig)
                    .is_ok()
            }
            VerifyingKey::Ed25519(p) => signature::UnparsedPublicKey::new(&signature::ED25519, p)
                .verify(msg, sig)
                .is_ok(),
        }
    }

    /// The public JWK for this key (never for HMAC secrets).
    pub fn to_jwk(&self, kid: &str, alg: Alg) -> Option<Value> {
        let mut v = match self {
            VerifyingKey::Rsa { n, e } => json!({"kty": "RSA", "n": b64url(n), "e": b64url(e)}),
            VerifyingKey::P256(p) => {
                json!({"kty": "EC", "crv": "P-256", "x": b64url(&p[1..33]), "y": b64url(&p[33..])})
            }
            VerifyingKey::P384(p) => {
                json!({"kty": "EC", "crv": "P-384", "x": b64url(&p[1..49]), "y": b64url(&p[49..])})
            }
            VerifyingKey::Ed25519(p) => json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(p)}),
            VerifyingKey::Hmac(_) => return None,
        };
        let o = v.as_object_mut()?;
        o.insert("kid".into(), kid.into());
        o.insert("alg".into(), alg.name().into());
        o.insert("use".into(), "sig".into());
        Some(v)
    }
}

/// A private key that signs JWS (ES256 or EdDSA), kept as PKCS#8 so it can be stored.
pub struct SigningKey {
    alg: Alg,
    kid: String,
    pkcs8: Zeroizing<Vec<u8>>,
    inner: SignerInner,
}

enum SignerInner {
    Ecdsa(signature::EcdsaKeyPair),
    Ed25519(signature::Ed25519KeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, kid {})", self.alg.name(), self.kid)
    }
}

impl SigningKey {
    /// A new random key for `alg` (ES256 or EdDSA).
    pub fn generate(alg: Alg) -> Result<SigningKey, KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = match alg {
            Alg::ES256 => signature::EcdsaKeyPair::generate_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &rng,
            ),
            Alg::EdDSA => signature::Ed25519KeyPair::generate_pkcs8(&rng),
            other => {
                return Err(KeyError::Unsupported(format!(
                    "signing with {}",
                    other.name()
                )))
            }
        }
        .map_err(|_| KeyError::Unsupported("key generation failed".into()))?;
        Self::from_pkcs8(alg, pkcs8.as_ref())
    }

    /// Reads a PKCS#8 key for `alg` (ES256 or EdDSA).
    pub fn from_pkcs8(alg: Alg, der: &[u8]) -> Result<SigningKey, KeyError> {
        let rng = SystemRandom::new();
        let inner = match alg {
            Alg::ES256 => SignerInner::Ecdsa(
                signature::EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der,
                    &rng,
                )
                .map_err(|e| KeyError::Pem(format!("not a P-256 PKCS#8 key: {e}")))?,
            ),
            Alg::EdDSA => SignerInner::Ed25519(
                signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|e| KeyError::Pem(format!("not an Ed25519 PKCS#8 key: {e}")))?,
            ),
            other => {
                return Err(KeyError::Unsupported(format!(
                    "signing with {}",
                    other.name()
                )))
            }
        };
        let mut key = SigningKey {
            alg,
            kid: String::new(),
            pkcs8: Zeroizing::new(der.to_vec()),
            inner,
        };
        // The kid is the RFC 7638 thumbprint of the public key, so it is stable for a key.
        key.kid = key.verifying_key().thumbprint();
        Ok(key)
    }

    /// Reads a PEM `PRIVATE KEY` (PKCS#8) for `alg`.
    pub fn from_pem(alg: Alg, pem: &[u8]) -> Result<SigningKey, KeyError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::PrivatePkcs8KeyDer;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem)
            .map_err(|_| KeyError::Pem("no PKCS#8 PRIVATE KEY block found".into()))?;
        Self::from_pkcs8(alg, der.secret_pkcs8_der())
    }

    /// The algorithm.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The key id (its JWK thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The PKCS#8 encoding, for storage (encrypt it before it touches disk).
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        match &self.inner {
            SignerInner::Ecdsa(k) => VerifyingKey::P256(k.public_key().as_ref().to_vec()),
            SignerInner::Ed25519(k) => VerifyingKey::Ed25519(k.public_key().as_ref().to_vec()),
        }
    }

    /// The public JWK, with `kid`, `alg` and `use`.
    pub fn public_jwk(&self) -> Value {
        self.verifying_key()
            .to_jwk(&self.kid, self.alg)
            .unwrap_or(Value::Null)
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match &self.inner {
            SignerInner::Ecdsa(k) => k
                .sign(&SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
            SignerInner::Ed25519(k) => k.sign(msg).as_ref().to_vec(),
        }
    }

    /// Builds a compact JWS: header (`alg`, `kid`, `typ`) and `claims`, signed.
    pub fn sign_jwt(&self, typ: &str, claims: &Value) -> String {
        let header = json!({"alg": self.alg.name(), "kid": self.kid, "typ": typ});
        let mut out = b64url(header.to_string().as_bytes());
        out.push('.');
        out.push_str(&b64url(claims.to_string().as_bytes()));
        let sig = self.sign(out.as_bytes());
        out.push('.');
        out.push_str(&b64url(&sig));
        out
    }
}

impl VerifyingKey {
    /// The RFC 7638 JWK thumbprint (SHA-256, base64url).
    pub fn thumbprint(&self) -> String {
        // Members in lexicographic order, no whitespace, as RFC 7638 §3 requires.
        let canonical = match self {
            VerifyingKey::Rsa { n, e } => {
                format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64url(e), b64url(n))
            }
            VerifyingKey::P256(p) => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64url(&p[1..33]),
                b64url(&p[33..])
            ),
            VerifyingKey::P384(p) => format!(
                r#"{{"crv":"P-384","kty":"EC","x":"{}","y":"{}"}}"#,
                b64url(&p[1..49]),
                b64url(&p[49..])
            ),
            VerifyingKey::Ed25519(p) => {
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64url(p))
            }
            VerifyingKey::Hmac(_) => return String::new(),
        };
        b64url(&sha256(canonical.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn es256_and_eddsa_keys_sign_and_verify_through_their_jwk() {
        for alg in [Alg::ES256, Alg::EdDSA] {
            let k = SigningKey::generate(alg).unwrap();
            let jwk = Jwk::from_json(&k.public_jwk()).unwrap();
            assert_eq!(jwk.kid.as_deref(), Some(k.kid()));
            assert_eq!(jwk.alg, Some(alg));
            let sig = k.sign(b"hello");
            assert!(jwk.key.verify(alg, b"hello", &sig));
            assert!(!jwk.key.verify(alg, b"hellO", &sig));
            // The same bytes under another algorithm never verify.
            assert!(!jwk.key.verify(Alg::HS256, b"hello", &sig));
        }
    }

    #[test]
    fn all_zero_ecdsa_signature_is_rejected() {
        let k = SigningKey::generate(Alg::ES256).unwrap();
        assert!(!k.verifying_key().verify(Alg::ES256, b"msg", &[0u8; 64]));
    }

    #[test]
    fn symmetric_and_encryption_keys_are_refused_in_a_key_set() {
        let oct = json!({"kty": "oct", "k": "c2VjcmV0"});
        assert!(Jwk::from_json(&oct).is_err());
        let k = SigningKey::generate(Alg::ES256).unwrap();
        let mut enc = k.public_jwk();
        enc["use"] = "enc".into();
        assert!(Jwk::from_json(&enc).is_err());
        let mut wrong = k.public_jwk();
        wrong["alg"] = "RS256".into();
        assert!(Jwk::from_json(&wrong).is_err());
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let jwk = Jwk::from_json(&json!({"kty": "RSA", "n": n, "e": "AQAB"})).unwrap();
        assert_eq!(
            jwk.key.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn pem_public_keys_load() {
        let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let vk = VerifyingKey::from_pem(k.public_key_pem().as_bytes()).unwrap();
        assert!(matches!(vk, VerifyingKey::P256(_)));
        let sk = SigningKey::from_pem(Alg::ES256, k.serialize_pem().as_bytes()).unwrap();
        assert!(vk.verify(Alg::ES256, b"x", &sk.sign(b"x")));
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let vk = VerifyingKey::from_pem(ed.public_key_pem().as_bytes()).unwrap();
        assert!(matches!(vk, VerifyingKey::Ed25519(_)));
        assert!(VerifyingKey::from_pem(b"garbage").is_err());
    }
}
