//! A throwaway certificate authority for tests and examples: a root and a signing
//! intermediate made at a given time, and SVIDs with fresh keys for any path. It is not the
//! authority's CA (`warden-ca`, with its keys in the store); it signs through the same
//! [`Signer`] and CSR checks.

use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::ca::{CaKey, Signer};
use crate::spiffe::TrustDomain;

/// A root and intermediate for one trust domain.
pub struct TestCa {
    /// The root (the bundle's X.509 authority).
    pub root: CaKey,
    /// The intermediate that signs.
    pub signer: Signer,
}

impl TestCa {
    /// A CA for `td` made at `created` (Unix seconds): root 30 days, intermediate 7.
    pub fn new(td: &TrustDomain, created: i64) -> Self {
        let root = CaKey::new_root(td, created, 30 * 24 * 3600).expect("root");
        let inter = root
            .new_intermediate(td, created, 7 * 24 * 3600)
            .expect("intermediate");
        Self {
            signer: Signer::new(td.clone(), inter, Vec::new()).expect("signer"),
            root,
        }
    }

    /// An SVID for `path` in the trust domain, issued at `at` for `ttl` seconds, with a new
    /// P-256 key: the chain (leaf first) and the key.
    pub fn svid(
        &self,
        path: &str,
        at: i64,
        ttl: i64,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let der = CertificateParams::default()
            .serialize_request(&key)
            .expect("CSR")
            .der()
            .to_vec();
        let id = self.signer.trust_domain().id(path).expect("SPIFFE ID path");
        let csr = crate::csr::check(&der, &id).expect("CSR checks");
        let s = self.signer.issue(&csr, &id, at, ttl).expect("issue");
        (
            s.chain.into_iter().map(CertificateDer::from).collect(),
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }
}
