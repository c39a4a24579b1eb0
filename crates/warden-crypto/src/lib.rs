//! The one place that chooses Warden's crypto: the rustls provider and its cipher suites,
//! the TLS versions we speak, key types for generated certificates, and constant-time compare.
//!
//! Everything else asks this crate for a provider instead of picking one, so that a change of
//! policy (say, dropping a suite) happens here once.

use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider};

pub mod dev_ca;
pub mod jws;
pub mod tls;

pub use dev_ca::{DevCa, IssuedCert};

/// TLS protocol versions Warden accepts: 1.3 and 1.2, nothing older.
pub static TLS_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto provider with Warden's cipher-suite policy: TLS 1.3 suites, and for TLS 1.2 only
/// ECDHE key exchange with AEAD ciphers (forward secrecy, no CBC, no RSA key transport).
pub fn provider() -> Arc<CryptoProvider> {
    // ring's provider offers exactly this set: three TLS 1.3 suites and six TLS 1.2 ECDHE
    // suites with AES-GCM or ChaCha20-Poly1305. The filter keeps that true if rustls ever
    // adds a suite without forward secrecy.
    let mut p = ring::default_provider();
    p.cipher_suites.retain(|s| {
        let name = format!("{:?}", s.suite());
        name.starts_with("TLS13_") || (name.contains("_ECDHE_") && !name.contains("CBC"))
    });
    Arc::new(p)
}

/// Compares two byte strings in constant time (for equal lengths); use it for every secret.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_has_only_forward_secret_aead_suites() {
        let p = provider();
        for s in &p.cipher_suites {
            let name = format!("{:?}", s.suite());
            assert!(
                name.starts_with("TLS13_") || name.contains("ECDHE"),
                "suite without forward secrecy: {name}"
            );
            assert!(!name.contains("CBC"), "CBC suite: {name}");
        }
    }

    #[test]
    fn ct_eq_compares_contents_and_length() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
