//! Identities from verified client certificates (the TLS layer has already checked the chain).
//!
//! With `spiffe`, the identity is the certificate's `spiffe://trust-domain/path` URI SAN; a
//! certificate with more than one URI SAN is refused, as the SPIFFE X.509-SVID spec requires.

use warden_config::{CertIdentitySource, ClientCertConfig};
use warden_crypto::jws::{b64url, sha256};
use x509_parser::extensions::GeneralName;

use crate::identity::{AuthMethod, Identity};

/// Why a certificate gave no identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertError {
    /// Not parseable (should not happen after TLS verification).
    Malformed,
    /// More than one URI SAN, or a malformed SPIFFE ID.
    BadSpiffeId,
    /// A SPIFFE ID outside the accepted trust domains.
    TrustDomain,
    /// None of the configured sources is present.
    NoIdentity,
}

impl CertError {
    /// The reason label.
    pub fn reason(self) -> &'static str {
        match self {
            CertError::Malformed => "malformed_certificate",
            CertError::BadSpiffeId => "bad_spiffe_id",
            CertError::TrustDomain => "untrusted_trust_domain",
            CertError::NoIdentity => "no_certificate_identity",
        }
    }
}

/// The RFC 8705 `x5t#S256` thumbprint of a DER certificate.
pub fn thumbprint(der: &[u8]) -> String {
    b64url(&sha256(der))
}

/// Checks a SPIFFE ID's shape: `spiffe://` then a trust domain of lowercase letters, digits,
/// `.`, `-`, `_`, then an optional path of non-empty segments without `.`/`..`.
pub fn parse_spiffe_id(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix("spiffe://")?;
    let (td, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if td.is_empty()
        || td.len() > 255
        || !td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return None;
    }
    if !path.is_empty() {
        for seg in path[1..].split('/') {
            if seg.is_empty()
                || seg == "."
                || seg == ".."
                || !seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return None;
            }
        }
    }
    Some((td, path))
}

/// The identity a verified client certificate carries.
pub fn identity(der: &[u8], cfg: &ClientCertConfig) -> Result<Identity, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| CertError::Malformed)?;
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::URI(u) => uris.push(*u),
                GeneralName::DNSName(d) => dns.push(*d),
                _ => {}
            }
        }
    }
    let mut spiffe = None;
    if let Some(u) = uris.iter().find(|u| u.starts_with("spiffe://")) {
        if uris.len() != 1 {
            return Err(CertError::BadSpiffeId);
        }
        let (td, _) = parse_spiffe_id(u).ok_or(CertError::BadSpiffeId)?;
        if !cfg.trust_domains.is_empty() && !cfg.trust_domains.iter().any(|t| t == td) {
            return Err(CertError::TrustDomain);
        }
        spiffe = Some((*u).to_owned());
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .map(str::to_owned);
    let subject = cfg
        .identity
        .iter()
        .find_map(|src| match src {
            CertIdentitySource::Spiffe => spiffe.clone(),
            CertIdentitySource::Dns => dns.first().map(|d| (*d).to_owned()),
            CertIdentitySource::Cn => cn.clone(),
        })
        .ok_or(CertError::NoIdentity)?;
    let mut id = Identity::new(subject, AuthMethod::ClientCert);
    id.spiffe_id = spiffe;
    id.issuer = Some(cert.issuer().to_string());
    id.expires_at = Some(cert.validity().not_after.timestamp());
    id.cert_thumbprint = Some(thumbprint(der));
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_are_checked_for_shape() {
        assert_eq!(
            parse_spiffe_id("spiffe://prod.example/ns/billing/sa/api"),
            Some(("prod.example", "/ns/billing/sa/api"))
        );
        assert!(parse_spiffe_id("spiffe://Prod/x").is_none());
        assert!(parse_spiffe_id("spiffe://prod/../x").is_none());
        assert!(parse_spiffe_id("spiffe://prod//x").is_none());
        assert!(parse_spiffe_id("https://prod/x").is_none());
        assert!(parse_spiffe_id("spiffe:///x").is_none());
    }
}
