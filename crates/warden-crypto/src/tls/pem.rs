//! PEM loading: certificate chains, private keys and CA bundles, and the check that a key
//! belongs to its certificate. Errors name the file, never key material.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use zeroize::Zeroizing;

/// Where a private key comes from.
#[derive(Clone)]
pub enum KeySource {
    /// A PEM file, read again when it changes.
    File(PathBuf),
    /// PEM bytes given once (an environment variable, or a key issued in memory).
    Pem(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "file:{}", p.display()),
            KeySource::Pem(_) => f.write_str("<in-memory key>"),
        }
    }
}

impl PartialEq for KeySource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (KeySource::File(a), KeySource::File(b)) => a == b,
            (KeySource::Pem(a), KeySource::Pem(b)) => crate::ct_eq(a, b),
            _ => false,
        }
    }
}

impl KeySource {
    /// The file to watch, if the key lives in one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            KeySource::File(p) => Some(p),
            KeySource::Pem(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            KeySource::File(p) => format!("`{}`", p.display()),
            KeySource::Pem(_) => "the key".into(),
        }
    }
}

/// Reads a PEM certificate chain (leaf first); at least one certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("`{}` is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no certificate", path.display()));
    }
    Ok(certs)
}

/// Reads a PEM private key. The error never includes key material.
pub fn load_key(source: &KeySource) -> Result<PrivateKeyDer<'static>, String> {
    let parsed = match source {
        KeySource::File(path) => {
            let bytes = Zeroizing::new(
                std::fs::read(path)
                    .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?,
            );
            PrivateKeyDer::from_pem_slice(&bytes)
        }
        KeySource::Pem(bytes) => PrivateKeyDer::from_pem_slice(bytes),
    };
    parsed.map_err(|_| format!("{} holds no PEM private key", source.describe()))
}

/// Reads a PEM bundle of CA certificates into a trust store.
pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("`{}`: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// Which half of a certificate pair a loading error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairPart {
    /// The certificate chain.
    Cert,
    /// The private key (unreadable, unusable, or not the certificate's).
    Key,
}

/// Builds a [`CertifiedKey`] with Warden's provider and checks that the key matches the leaf.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, (PairPart, String)> {
    if chain.is_empty() {
        return Err((PairPart::Cert, "no certificate".into()));
    }
    let signing = crate::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| (PairPart::Key, format!("unusable private key: {e}")))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        (
            PairPart::Key,
            format!("does not match the certificate: {e}"),
        )
    })?;
    Ok(ck)
}

/// Loads a certificate chain and its key from their sources and pairs them.
pub fn load_pair(cert: &Path, key: &KeySource) -> Result<CertifiedKey, (PairPart, String)> {
    let chain = load_certs(cert).map_err(|e| (PairPart::Cert, e))?;
    let key = load_key(key).map_err(|e| (PairPart::Key, e))?;
    certified_key(chain, key)
}
