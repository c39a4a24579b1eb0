//! A small certificate authority for development and tests: ECDSA P-256 keys made with rcgen.
//!
//! `warden dev` uses it for its HTTPS listener; tests use it for per-test PKI. It is not the
//! production certificate authority (that belongs to the authority role).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Errors from generating development certificates.
#[derive(Debug, thiserror::Error)]
pub enum DevCaError {
    /// rcgen refused the parameters or failed to sign.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A generated CA: its certificate (PEM) and the key that signs leaf certificates.
pub struct DevCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"**REDACTED**")
            .finish()
    }
}

impl DevCa {
    /// Makes a new self-signed CA named `common_name`, valid for ten years.
    pub fn new(common_name: &str) -> Result<Self, DevCaError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Warden development CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let (not_before, not_after) = validity(3650);
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let issuer = Issuer::new(params, key);
        Ok(Self { cert_pem, issuer })
    }

    /// The CA certificate, PEM: what clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a server certificate for the given DNS names and IP addresses.
    pub fn server_cert(&self, names: &[&str]) -> Result<IssuedCert, DevCaError> {
        self.leaf(names, &[], ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// Issues a client certificate with the given DNS names and URI SANs (e.g. SPIFFE IDs).
    pub fn client_cert(&self, names: &[&str], uris: &[&str]) -> Result<IssuedCert, DevCaError> {
        self.leaf(names, uris, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(
        &self,
        names: &[&str],
        uris: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<IssuedCert, DevCaError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("warden"),
        );
        params.distinguished_name = dn;
        for name in names {
            let san = match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into()?),
            };
            params.subject_alt_names.push(san);
        }
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into()?));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        // 397 days in all, backdating included: the CA/Browser Forum's limit for TLS server
        // certificates, under the 825 days Apple platforms refuse past.
        let (not_before, not_after) = validity(LEAF_DAYS);
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Lifetime of the leaf certificates, from `notBefore` to `notAfter`.
const LEAF_DAYS: i64 = 397;

/// `days` long in all, starting an hour ago (so a clock slightly behind still accepts it).
fn validity(days: i64) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    (not_before, not_before + time::Duration::days(days))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_pem_leaf_signed_by_ca() {
        let ca = DevCa::new("test ca").unwrap();
        let leaf = ca.server_cert(&["localhost", "127.0.0.1"]).unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(leaf.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{leaf:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn leaf_certificates_live_at_most_397_days_in_all() {
        let ca = DevCa::new("test ca").unwrap();
        for leaf in [
            ca.server_cert(&["localhost"]).unwrap(),
            ca.client_cert(&["svc"], &["spiffe://dev/svc"]).unwrap(),
        ] {
            let pem = x509_parser::pem::parse_x509_pem(leaf.cert_pem.as_bytes())
                .unwrap()
                .1;
            let cert = pem.parse_x509().unwrap();
            let v = cert.validity();
            let secs = v.not_after.timestamp() - v.not_before.timestamp();
            assert!(secs <= 397 * 86_400, "valid for {secs} s");
            assert!(secs >= 396 * 86_400, "valid for only {secs} s");
        }
    }
}
