//! The cryptography of transit, all with `ring`: AEAD sealing with random 96-bit nonces,
//! HKDF-SHA256 key derivation, HMAC, digests, Ed25519 and ECDSA P-256 signatures, and the
//! `vault:v<N>:<base64>` format of ciphertexts, signatures and HMACs.

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::{aead, digest, hkdf, hmac, signature};

use super::keys::KeyType;
use crate::api::{Result, VaultError};
use crate::util::fill_random;

/// The salt of the HKDF-SHA256 extraction for derived keys (see docs/vault.md, Transit).
const KDF_SALT: &[u8] = b"warden-transit-derived-key-v1";
/// DER prefix of a P-256 SubjectPublicKeyInfo with an uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Decodes a base64 parameter (standard alphabet, as Vault's clients send).
pub(crate) fn decode_b64(s: &str, what: &str) -> Result<Vec<u8>> {
    b64()
        .decode(s.trim())
        .map_err(|_| VaultError::BadRequest(format!("failed to base64-decode {what}")))
}

pub(crate) fn encode_b64(b: &[u8]) -> String {
    b64().encode(b)
}

/// HKDF-SHA256: the 32-byte key of `context` under `key`.
pub(crate) fn derive(key: &[u8], context: &[u8]) -> Result<Vec<u8>> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, KDF_SALT).extract(key);
    let info = [context];
    let okm = prk
        .expand(&info, Len(32))
        .map_err(|_| VaultError::Internal("hkdf expand failed".into()))?;
    let mut out = vec![0u8; 32];
    okm.fill(&mut out)
        .map_err(|_| VaultError::Internal("hkdf fill failed".into()))?;
    Ok(out)
}

fn aead_alg(kind: KeyType) -> Result<&'static aead::Algorithm> {
    match kind {
        KeyType::Aes256Gcm96 => Ok(&aead::AES_256_GCM),
        KeyType::ChaCha20Poly1305 => Ok(&aead::CHACHA20_POLY1305),
        other => Err(VaultError::BadRequest(format!(
            "key type {} does not support encryption",
            other.name()
        ))),
    }
}

fn aead_key(kind: KeyType, key: &[u8]) -> Result<aead::LessSafeKey> {
    let unbound = aead::UnboundKey::new(aead_alg(kind)?, key)
        .map_err(|_| VaultError::Internal("transit key has the wrong length".into()))?;
    Ok(aead::LessSafeKey::new(unbound))
}

/// Seals `plaintext`: a fresh random 96-bit nonce, then `nonce ‖ ciphertext ‖ tag`.
pub(crate) fn seal(kind: KeyType, key: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let k = aead_key(kind, key)?;
    let mut nonce = [0u8; aead::NONCE_LEN];
    fill_random(&mut nonce);
    let mut out = Vec::with_capacity(aead::NONCE_LEN + plaintext.len() + 16);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let mut body = out.split_off(aead::NONCE_LEN);
    k.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(aad),
        &mut body,
    )
    .map_err(|_| VaultError::Internal("encryption failed".into()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens `nonce ‖ ciphertext ‖ tag`.
pub(crate) fn open(kind: KeyType, key: &[u8], aad: &[u8], blob: &[u8]) -> Result<Vec<u8>> {
    let k = aead_key(kind, key)?;
    if blob.len() < aead::NONCE_LEN + k.algorithm().tag_len() {
        return Err(VaultError::BadRequest(
            "invalid ciphertext: too short".into(),
        ));
    }
    let (n, ct) = blob.split_at(aead::NONCE_LEN);
    let nonce = aead::Nonce::try_assume_unique_for_key(n)
        .map_err(|_| VaultError::BadRequest("invalid ciphertext: bad nonce".into()))?;
    let mut buf = ct.to_vec();
    let plain = k
        .open_in_place(nonce, aead::Aad::from(aad), &mut buf)
        .map_err(|_| VaultError::BadRequest("cipher: message authentication failed".into()))?;
    Ok(plain.to_vec())
}

/// `vault:v<N>:<encoded>`.
pub(crate) fn format_versioned(version: u32, encoded: &str) -> String {
    format!("vault:v{version}:{encoded}")
}

/// Splits `vault:v<N>:<rest>` into the version and the rest, with Vault's messages.
pub(crate) fn parse_versioned<'s>(s: &'s str, what: &str) -> Result<(u32, &'s str)> {
    let rest = s
        .strip_prefix("vault:")
        .ok_or_else(|| VaultError::BadRequest(format!("invalid {what}: no prefix")))?;
    let (v, body) = rest
        .split_once(':')
        .ok_or_else(|| VaultError::BadRequest(format!("invalid {what}: wrong number of fields")))?;
    let n = v
        .strip_prefix('v')
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            VaultError::BadRequest(format!(
                "invalid {what}: version number could not be decoded"
            ))
        })?;
    Ok((n, body))
}

/// The hash algorithms of `hash/`, `hmac/` and `sign/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HashAlg {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    pub(crate) fn parse(s: Option<&str>) -> Result<HashAlg> {
        match s.unwrap_or("sha2-256") {
            "sha2-256" | "" => Ok(HashAlg::Sha256),
            "sha2-384" => Ok(HashAlg::Sha384),
            "sha2-512" => Ok(HashAlg::Sha512),
            "sha2-224" | "sha3-224" | "sha3-256" | "sha3-384" | "sha3-512" | "sha1" | "none"
            | "sha2-512/256" => Err(VaultError::BadRequest(format!(
                "unsupported hash algorithm {:?}: Warden's transit has sha2-256, sha2-384 and \
                 sha2-512",
                s.unwrap_or_default()
            ))),
            other => Err(VaultError::BadRequest(format!(
                "unknown hash algorithm {other:?}: Warden's transit has sha2-256, sha2-384 and \
                 sha2-512"
            ))),
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            HashAlg::Sha256 => hmac::HMAC_SHA256,
            HashAlg::Sha384 => hmac::HMAC_SHA384,
            HashAlg::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            HashAlg::Sha256 => &digest::SHA256,
            HashAlg::Sha384 => &digest::SHA384,
            HashAlg::Sha512 => &digest::SHA512,
        }
    }
}

/// A digest of `input`.
pub(crate) fn hash(alg: HashAlg, input: &[u8]) -> Vec<u8> {
    digest::digest(alg.digest(), input).as_ref().to_vec()
}

/// HMAC of `input` under `key`.
pub(crate) fn hmac_sign(alg: HashAlg, key: &[u8], input: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(alg.hmac(), key), input)
        .as_ref()
        .to_vec()
}

/// Checks an HMAC in constant time.
pub(crate) fn hmac_verify(alg: HashAlg, key: &[u8], input: &[u8], tag: &[u8]) -> bool {
    hmac::verify(&hmac::Key::new(alg.hmac(), key), input, tag).is_ok()
}

/// How a signature is written: DER (`asn1`, standard base64) or JWS (`r ‖ s`, URL-safe
/// base64 without padding), as Vault's `marshaling_algorithm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Marshaling {
    Asn1,
    Jws,
}

impl Marshaling {
    pub(crate) fn parse(s: Option<&str>) -> Result<Marshaling> {
        match s.unwrap_or("asn1") {
            "asn1" | "" => Ok(Marshaling::Asn1),
            "jws" => Ok(Marshaling::Jws),
            other => Err(VaultError::BadRequest(format!(
                "unsupported marshaling type {other:?}: use asn1 or jws"
            ))),
        }
    }

    pub(crate) fn encode(self, b: &[u8]) -> String {
        match self {
            Marshaling::Asn1 => b64().encode(b),
            Marshaling::Jws => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
        }
    }

    pub(crate) fn decode(self, s: &str) -> Result<Vec<u8>> {
        let r = match self {
            Marshaling::Asn1 => b64().decode(s),
            Marshaling::Jws => base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s),
        };
        r.map_err(|_| VaultError::BadRequest("invalid signature: could not decode base64".into()))
    }
}

/// A new ECDSA P-256 key as PKCS#8.
pub(crate) fn ecdsa_generate() -> Result<Vec<u8>> {
    let doc = signature::EcdsaKeyPair::generate_pkcs8(
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &SystemRandom::new(),
    )
    .map_err(|_| VaultError::Internal("ecdsa key generation failed".into()))?;
    Ok(doc.as_ref().to_vec())
}

fn ed25519(seed: &[u8]) -> Result<signature::Ed25519KeyPair> {
    signature::Ed25519KeyPair::from_seed_unchecked(seed)
        .map_err(|_| VaultError::Internal("ed25519 key unreadable".into()))
}

fn ecdsa(pkcs8: &[u8], m: Marshaling) -> Result<signature::EcdsaKeyPair> {
    let alg = match m {
        Marshaling::Asn1 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        Marshaling::Jws => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
    };
    signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8, &SystemRandom::new())
        .map_err(|_| VaultError::Internal("ecdsa key unreadable".into()))
}

/// Signs `input` with `key` (an Ed25519 seed or an ECDSA PKCS#8 document).
pub(crate) fn sign(kind: KeyType, key: &[u8], input: &[u8], m: Marshaling) -> Result<Vec<u8>> {
    match kind {
        KeyType::Ed25519 => Ok(ed25519(key)?.sign(input).as_ref().to_vec()),
        KeyType::EcdsaP256 => Ok(ecdsa(key, m)?
            .sign(&SystemRandom::new(), input)
            .map_err(|_| VaultError::Internal("ecdsa signing failed".into()))?
            .as_ref()
            .to_vec()),
        other => Err(VaultError::BadRequest(format!(
            "key type {} does not support signing",
            other.name()
        ))),
    }
}

/// Checks a signature made by [`sign`].
pub(crate) fn verify(
    kind: KeyType,
    key: &[u8],
    input: &[u8],
    sig: &[u8],
    m: Marshaling,
) -> Result<bool> {
    let public = raw_public_key(kind, key)?;
    let alg: &'static dyn signature::VerificationAlgorithm = match (kind, m) {
        (KeyType::Ed25519, _) => &signature::ED25519,
        (KeyType::EcdsaP256, Marshaling::Asn1) => &signature::ECDSA_P256_SHA256_ASN1,
        (KeyType::EcdsaP256, Marshaling::Jws) => &signature::ECDSA_P256_SHA256_FIXED,
        (other, _) => {
            return Err(VaultError::BadRequest(format!(
                "key type {} does not support verification",
                other.name()
            )))
        }
    };
    Ok(signature::UnparsedPublicKey::new(alg, public)
        .verify(input, sig)
        .is_ok())
}

fn raw_public_key(kind: KeyType, key: &[u8]) -> Result<Vec<u8>> {
    use signature::KeyPair as _;
    match kind {
        KeyType::Ed25519 => Ok(ed25519(key)?.public_key().as_ref().to_vec()),
        KeyType::EcdsaP256 => Ok(ecdsa(key, Marshaling::Asn1)?.public_key().as_ref().to_vec()),
        other => Err(VaultError::BadRequest(format!(
            "key type {} has no public key",
            other.name()
        ))),
    }
}

/// The public key as Vault shows it: base64 for Ed25519, a PEM `PUBLIC KEY` for ECDSA.
pub(crate) fn public_key(kind: KeyType, key: &[u8]) -> Result<String> {
    let raw = raw_public_key(kind, key)?;
    match kind {
        KeyType::EcdsaP256 => {
            let mut der = P256_SPKI_PREFIX.to_vec();
            der.extend_from_slice(&raw);
            let b = b64().encode(der);
            let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
            for chunk in b.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
                pem.push('\n');
            }
            pem.push_str("-----END PUBLIC KEY-----\n");
            Ok(pem)
        }
        _ => Ok(b64().encode(raw)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aead_round_trips_with_fresh_nonces() {
        for kind in [KeyType::Aes256Gcm96, KeyType::ChaCha20Poly1305] {
            let key = [7u8; 32];
            let a = seal(kind, &key, b"", b"hello").unwrap();
            let b = seal(kind, &key, b"", b"hello").unwrap();
            assert_ne!(a[..12], b[..12], "nonces must differ");
            assert_eq!(open(kind, &key, b"", &a).unwrap(), b"hello");
            let mut t = a.clone();
            *t.last_mut().unwrap() ^= 1;
            assert!(open(kind, &key, b"", &t).is_err());
            assert!(open(kind, &key, b"aad", &a).is_err());
            assert!(open(kind, &[8u8; 32], b"", &a).is_err());
        }
    }

    #[test]
    fn derivation_depends_on_context() {
        let k = [1u8; 32];
        assert_eq!(derive(&k, b"a").unwrap(), derive(&k, b"a").unwrap());
        assert_ne!(derive(&k, b"a").unwrap(), derive(&k, b"b").unwrap());
        assert_ne!(derive(&k, b"a").unwrap(), derive(&[2u8; 32], b"a").unwrap());
    }

    #[test]
    fn versioned_strings_parse() {
        assert_eq!(parse_versioned("vault:v12:abc", "x").unwrap(), (12, "abc"));
        assert!(parse_versioned("vault:v0:abc", "x").is_err());
        assert!(parse_versioned("vault:12:abc", "x").is_err());
        assert!(parse_versioned("nope:v1:abc", "x").is_err());
        assert!(parse_versioned("vault:v1", "x").is_err());
    }

    #[test]
    fn known_digest_and_hmac() {
        // FIPS 180-2 "abc".
        assert_eq!(
            crate::util::hex(&hash(HashAlg::Sha256, b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // RFC 4231 test case 2.
        assert_eq!(
            crate::util::hex(&hmac_sign(
                HashAlg::Sha256,
                b"Jefe",
                b"what do ya want for nothing?"
            )),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(HashAlg::parse(Some("sha2-224")).is_err());
    }

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let ec = ecdsa_generate().unwrap();
        for (kind, key) in [(KeyType::Ed25519, vec![5u8; 32]), (KeyType::EcdsaP256, ec)] {
            for m in [Marshaling::Asn1, Marshaling::Jws] {
                let s = sign(kind, &key, b"msg", m).unwrap();
                assert!(verify(kind, &key, b"msg", &s, m).unwrap());
                assert!(!verify(kind, &key, b"msG", &s, m).unwrap());
            }
        }
        let pem = public_key(KeyType::EcdsaP256, &ecdsa_generate().unwrap()).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"));
    }
}
