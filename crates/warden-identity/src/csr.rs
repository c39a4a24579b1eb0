//! Checking a workload's certificate signing request before the CA signs its key.
//!
//! The CA takes only the public key from a CSR; everything else in the certificate is the
//! CA's own choice. The rest of the CSR is checked so that a workload asking for more than
//! it may learns why: the signature must verify (the workload holds the key), the key must
//! be ECDSA P-256 or Ed25519, the CSR may name no SAN (the CA fills in the registered ID) or
//! exactly one, the workload's registered SPIFFE ID, and it may not ask to be a CA.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};
use x509_parser::prelude::FromDer;

use crate::spiffe::SpiffeId;

/// The largest CSR accepted, in bytes (a P-256 CSR with one SAN is about 300).
pub const MAX_CSR_LEN: usize = 16 * 1024;

/// The key types a workload may have certified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256.
    EcdsaP256,
    /// Ed25519.
    Ed25519,
}

/// Why a CSR is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// Larger than [`MAX_CSR_LEN`].
    #[error("CSR is larger than {MAX_CSR_LEN} bytes")]
    TooLarge,
    /// Not a DER PKCS#10 request.
    #[error("not a PKCS#10 certificate signing request")]
    Malformed,
    /// The signature does not verify with the CSR's key.
    #[error("CSR signature does not verify with its public key")]
    BadSignature,
    /// A key type other than ECDSA P-256 or Ed25519.
    #[error("key type {0} is not accepted: use ECDSA P-256 or Ed25519")]
    KeyType(String),
    /// More than one subject alternative name.
    #[error(
        "CSR names {0} subject alternative names: an X.509-SVID has exactly one, its SPIFFE ID"
    )]
    TooManySans(usize),
    /// A SAN that is not a URI.
    #[error("CSR names a {0} subject alternative name: only the SPIFFE ID (a URI) is allowed")]
    NotUri(&'static str),
    /// A URI SAN that is not a SPIFFE ID.
    #[error("CSR's URI SAN {0:?} is not a SPIFFE ID: {1}")]
    NotSpiffeId(String, crate::spiffe::IdError),
    /// A SPIFFE ID in another trust domain.
    #[error("CSR asks for {requested}, outside trust domain {trust_domain}")]
    WrongTrustDomain {
        /// What the CSR names.
        requested: String,
        /// The CA's trust domain.
        trust_domain: String,
    },
    /// A SPIFFE ID other than the workload's registered one.
    #[error("CSR asks for {requested}; this workload is registered as {registered}")]
    WrongId {
        /// What the CSR names.
        requested: String,
        /// The registered ID.
        registered: String,
    },
    /// Asks for `cA=true`.
    #[error("CSR asks for a CA certificate (basicConstraints cA=true)")]
    IsCa,
}

/// A CSR that passed the checks: the key the CA may certify.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    /// The SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
    /// The key's type.
    pub key: KeyKind,
}

/// Checks `der` as a request for `registered`'s X.509-SVID.
pub fn check(der: &[u8], registered: &SpiffeId) -> Result<CheckedCsr, CsrError> {
    if der.len() > MAX_CSR_LEN {
        return Err(CsrError::TooLarge);
    }
    let csr = match X509CertificationRequest::from_der(der) {
        Ok(([], csr)) => csr,
        _ => return Err(CsrError::Malformed),
    };
    let spki = &csr.certification_request_info.subject_pki;
    let alg = &spki.algorithm.algorithm;
    let key = if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 => KeyKind::EcdsaP256,
            Some(c) => return Err(CsrError::KeyType(format!("EC curve {c}"))),
            None => return Err(CsrError::KeyType("EC without a named curve".into())),
        }
    } else if *alg == OID_SIG_ED25519 {
        KeyKind::Ed25519
    } else {
        return Err(CsrError::KeyType(key_name(&alg.to_id_string())));
    };
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            match ext {
                ParsedExtension::SubjectAlternativeName(san) => {
                    let names = &san.general_names;
                    if names.len() > 1 {
                        return Err(CsrError::TooManySans(names.len()));
                    }
                    if let Some(name) = names.first() {
                        check_san(name, registered)?;
                    }
                }
                ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(CsrError::IsCa),
                // Key usages, EKUs and anything else: the CA sets its own.
                _ => {}
            }
        }
    }
    Ok(CheckedCsr {
        spki_der: spki.raw.to_vec(),
        key,
    })
}

fn key_name(oid: &str) -> String {
    match oid {
        "1.2.840.113549.1.1.1" => "RSA".into(),
        "1.3.101.113" => "Ed448".into(),
        other => format!("OID {other}"),
    }
}

fn check_san(name: &GeneralName<'_>, registered: &SpiffeId) -> Result<(), CsrError> {
    let uri = match name {
        GeneralName::URI(u) => *u,
        GeneralName::DNSName(_) => return Err(CsrError::NotUri("DNS")),
        GeneralName::IPAddress(_) => return Err(CsrError::NotUri("IP address")),
        GeneralName::RFC822Name(_) => return Err(CsrError::NotUri("e-mail")),
        _ => return Err(CsrError::NotUri("non-URI")),
    };
    let id = SpiffeId::parse(uri).map_err(|e| CsrError::NotSpiffeId(uri.to_owned(), e))?;
    if id.trust_domain_name() != registered.trust_domain_name() {
        return Err(CsrError::WrongTrustDomain {
            requested: id.to_string(),
            trust_domain: registered.trust_domain_name().to_owned(),
        });
    }
    if id != *registered {
        return Err(CsrError::WrongId {
            requested: id.to_string(),
            registered: registered.to_string(),
        });
    }
    Ok(())
}
