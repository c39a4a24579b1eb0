//! Checking a peer's X.509-SVID: the chain verifies to one of the trust domain's roots at the
//! given time, and the leaf is an X.509-SVID (exactly one URI SAN, a SPIFFE ID in that trust
//! domain; not a CA; `digitalSignature`, neither `keyCertSign` nor `cRLSign`).

use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::spiffe::{SpiffeId, TrustDomain};

/// Why a certificate chain is not an acceptable X.509-SVID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    /// No certificate.
    #[error("no certificate")]
    Empty,
    /// The leaf does not parse.
    #[error("certificate does not parse")]
    Malformed,
    /// Not exactly one URI SAN.
    #[error("an X.509-SVID has exactly one URI SAN; this one has {0}")]
    UriSans(usize),
    /// The URI SAN is not a SPIFFE ID.
    #[error("URI SAN is not a SPIFFE ID: {0}")]
    NotSpiffeId(crate::spiffe::IdError),
    /// A SPIFFE ID from another trust domain.
    #[error("{0} is not in trust domain {1}")]
    WrongTrustDomain(String, String),
    /// A SPIFFE ID of a trust domain that is neither this one nor a federated one.
    #[error("{0} is of a trust domain with no trust bundle here (not federated)")]
    NoBundle(String),
    /// The leaf is a CA or may sign certificates or CRLs.
    #[error("leaf certificate is a CA or may sign certificates")]
    LeafIsCa,
    /// The leaf may not make signatures.
    #[error("leaf certificate lacks digitalSignature")]
    NoDigitalSignature,
    /// The chain does not verify (unknown issuer, expired, bad signature, wrong usage).
    #[error("chain does not verify: {0}")]
    Chain(String),
}

/// The SPIFFE ID of a leaf certificate, checked against the X.509-SVID profile but not
/// verified against any root.
pub fn leaf_id(leaf: &[u8]) -> Result<SpiffeId, SvidError> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf)
        .map_err(|_| SvidError::Malformed)?;
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(_) => return Err(SvidError::Malformed),
    };
    if uris.len() != 1 {
        return Err(SvidError::UriSans(uris.len()));
    }
    let id = SpiffeId::parse(uris[0]).map_err(SvidError::NotSpiffeId)?;
    if cert
        .basic_constraints()
        .map_err(|_| SvidError::Malformed)?
        .is_some_and(|bc| bc.value.ca)
    {
        return Err(SvidError::LeafIsCa);
    }
    match cert.key_usage().map_err(|_| SvidError::Malformed)? {
        Some(ku) if ku.value.key_cert_sign() || ku.value.crl_sign() => {
            return Err(SvidError::LeafIsCa)
        }
        Some(ku) if !ku.value.digital_signature() => return Err(SvidError::NoDigitalSignature),
        _ => {}
    }
    Ok(id)
}

/// Verifies `chain` (leaf first) as an X.509-SVID of `td` against its `roots` (DER) at Unix
/// time `now`, for use as a TLS client (`client`) or server certificate; returns its ID.
pub fn verify(
    chain: &[CertificateDer<'_>],
    td: &TrustDomain,
    roots: &[CertificateDer<'_>],
    now: i64,
    client: bool,
) -> Result<SpiffeId, SvidError> {
    let leaf = chain.first().ok_or(SvidError::Empty)?;
    let id = leaf_id(leaf)?;
    if !id.is_member_of(td) {
        return Err(SvidError::WrongTrustDomain(id.to_string(), td.to_string()));
    }
    let anchors: Vec<_> = roots
        .iter()
        .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
        .collect();
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| SvidError::Chain(e.to_string()))?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(now.max(0) as u64));
    let usage = if client {
        webpki::KeyUsage::client_auth()
    } else {
        webpki::KeyUsage::server_auth()
    };
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &chain[1..],
        time,
        usage,
        None,
        None,
    )
    .map_err(|e| SvidError::Chain(format!("{e:?}")))?;
    Ok(id)
}
