//! The certificate authority's keys and X.509-SVID issuance.
//!
//! A trust domain's CA is a root ([`CaKey::new_root`], self-made, or imported from an
//! upstream PKI) and an online intermediate that signs ([`CaKey::new_intermediate`]); the
//! bundle carries the roots, an SVID's chain carries the intermediate. Every key here is
//! ECDSA P-256. An SVID ([`Signer::issue`]) certifies the workload's own key, taken from its
//! CSR: the CA never sees a workload's private key.
//!
//! The X.509-SVID profile (SPIFFE X.509-SVID standard, section 4 and 5): exactly one URI SAN,
//! the SPIFFE ID; `basicConstraints` `cA=false`; `keyUsage` `digitalSignature` (critical);
//! `extendedKeyUsage` `serverAuth` and `clientAuth`; the authority key identifier of the
//! intermediate; a random 128-bit serial; valid from 10 s before issuance (clock skew) for
//! the requested lifetime, never past the intermediate's own expiry.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use crate::csr::CheckedCsr;
use crate::spiffe::{SpiffeId, TrustDomain};

/// How far before issuance a certificate's validity starts, for clocks a little behind.
pub const BACKDATE_SECS: i64 = 10;

/// Why the CA could not make or load a certificate.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rcgen refused the parameters or could not sign.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A stored or imported certificate does not parse.
    #[error("CA certificate does not parse: {0}")]
    BadCertificate(String),
    /// A stored or imported key does not parse or does not match its certificate.
    #[error("CA key: {0}")]
    BadKey(String),
    /// The certificate is not a CA.
    #[error("the certificate is not a CA (basicConstraints cA=true and keyCertSign needed)")]
    NotCa,
    /// The signing intermediate has expired (or is not yet valid).
    #[error("the signing CA certificate is not valid at this time")]
    Expired,
    /// The SPIFFE ID is outside the CA's trust domain.
    #[error("{0} is outside trust domain {1}")]
    WrongTrustDomain(String, String),
    /// The random source failed.
    #[error("no randomness")]
    Random,
}

/// A CA certificate with its private key.
pub struct CaKey {
    cert_der: Vec<u8>,
    key_pkcs8: Zeroizing<Vec<u8>>,
    not_before: i64,
    not_after: i64,
}

impl std::fmt::Debug for CaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaKey")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key", &"**REDACTED**")
            .finish()
    }
}

fn at(unix: i64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| CaError::BadCertificate(e.to_string()))
}

fn serial() -> Result<SerialNumber, CaError> {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| CaError::Random)?;
    // Positive, and never shorter than 16 bytes' worth of entropy minus the sign bit.
    b[0] &= 0x7f;
    b[0] |= 0x40;
    Ok(SerialNumber::from_slice(&b))
}

fn ca_params(
    td: &TrustDomain,
    name: &str,
    path_len: u8,
    not_before: i64,
    not_after: i64,
) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Warden");
    dn.push(DnType::CommonName, format!("{name} {}", td.as_str()));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // The trust domain's ID, as SPIFFE recommends for signing certificates.
    p.subject_alt_names =
        vec![SanType::URI(td.id_string().try_into().map_err(|_| {
            CaError::BadCertificate("trust domain is not IA5".into())
        })?)];
    p.serial_number = Some(serial()?);
    p.not_before = at(not_before)?;
    p.not_after = at(not_after)?;
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

impl CaKey {
    /// Makes a self-signed root for `td`, valid from `now` for `ttl_secs`.
    pub fn new_root(td: &TrustDomain, now: i64, ttl_secs: i64) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let nb = now - BACKDATE_SECS;
        let na = now + ttl_secs;
        // Names carry the time they were made: two roots (or intermediates) valid at once,
        // or ours under an upstream CA made by Warden too, never share a name, so chain
        // building never has to tell them apart by key.
        let mut params = ca_params(td, &format!("Warden root CA {now}"), 1, nb, na)?;
        params.use_authority_key_identifier_extension = false;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            key_pkcs8: Zeroizing::new(key.serialize_der()),
            not_before: nb,
            not_after: na,
        })
    }

    /// Makes an intermediate for `td` signed by this CA, valid from `now` for `ttl_secs`
    /// but never past this CA's expiry.
    pub fn new_intermediate(
        &self,
        td: &TrustDomain,
        now: i64,
        ttl_secs: i64,
    ) -> Result<Self, CaError> {
        let issuer = self.issuer()?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let nb = now - BACKDATE_SECS;
        let na = (now + ttl_secs).min(self.not_after);
        let params = ca_params(td, &format!("Warden signing CA {now}"), 0, nb, na)?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            key_pkcs8: Zeroizing::new(key.serialize_der()),
            not_before: nb,
            not_after: na,
        })
    }

    /// Loads a CA from its certificate and PKCS#8 key (stored, or imported from an upstream
    /// PKI): the certificate must be a CA that may sign certificates, and the key its own.
    pub fn from_parts(cert_der: Vec<u8>, key_pkcs8: Vec<u8>) -> Result<Self, CaError> {
        let key_pkcs8 = Zeroizing::new(key_pkcs8);
        let (not_before, not_after, spki) = {
            let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&cert_der)
                .map_err(|e| CaError::BadCertificate(e.to_string()))?;
            let ca = cert
                .basic_constraints()
                .ok()
                .flatten()
                .is_some_and(|bc| bc.value.ca);
            let signs = cert
                .key_usage()
                .ok()
                .flatten()
                .is_none_or(|ku| ku.value.key_cert_sign());
            if !ca || !signs {
                return Err(CaError::NotCa);
            }
            (
                cert.validity().not_before.timestamp(),
                cert.validity().not_after.timestamp(),
                cert.public_key().raw.to_vec(),
            )
        };
        let key = KeyPair::try_from(key_pkcs8.as_slice())
            .map_err(|e| CaError::BadKey(format!("does not parse as PKCS#8: {e}")))?;
        if key.subject_public_key_info() != spki {
            return Err(CaError::BadKey("does not match the certificate".into()));
        }
        Ok(Self {
            cert_der,
            key_pkcs8,
            not_before,
            not_after,
        })
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The private key, PKCS#8 DER (to be stored sealed).
    pub fn key_pkcs8(&self) -> &[u8] {
        &self.key_pkcs8
    }

    /// Start of validity, Unix seconds.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    /// End of validity, Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, CaError> {
        let key = KeyPair::try_from(self.key_pkcs8.as_slice())
            .map_err(|e| CaError::BadKey(e.to_string()))?;
        Ok(Issuer::from_ca_cert_der(
            &CertificateDer::from(self.cert_der.as_slice()),
            key,
        )?)
    }
}

/// An issued X.509-SVID: the certificate chain from the leaf up to (not including) the root.
#[derive(Debug, Clone)]
pub struct X509Svid {
    /// The SPIFFE ID it certifies.
    pub id: SpiffeId,
    /// Leaf first, then the intermediates, DER.
    pub chain: Vec<Vec<u8>>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// The serial number, lower-case hex.
    pub serial: String,
}

impl X509Svid {
    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|der| pem_cert(der)).collect()
    }
}

/// One certificate as PEM.
pub fn pem_cert(der: &[u8]) -> String {
    pem("CERTIFICATE", der)
}

/// DER as a PEM block with `label` (`CERTIFICATE`, `PRIVATE KEY`).
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str(&format!("-----BEGIN {label}-----\n"));
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The online CA that signs SVIDs: an intermediate and the chain above it.
pub struct Signer {
    td: TrustDomain,
    issuer: Issuer<'static, KeyPair>,
    key: CaKey,
    /// The signing certificate, then any intermediates above it (not the root).
    chain: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("trust_domain", &self.td)
            .field("key", &self.key)
            .finish()
    }
}

impl Signer {
    /// A signer for `td` with `key`; `above` lists the intermediates between it and the root
    /// (empty when the root signed it).
    pub fn new(td: TrustDomain, key: CaKey, above: Vec<Vec<u8>>) -> Result<Self, CaError> {
        let issuer = key.issuer()?;
        let mut chain = vec![key.cert_der.clone()];
        chain.extend(above);
        Ok(Self {
            td,
            issuer,
            key,
            chain,
        })
    }

    /// The signing CA.
    pub fn key(&self) -> &CaKey {
        &self.key
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.td
    }

    /// Signs an X.509-SVID for `id` over the key in `csr`, valid from `now` for `ttl_secs`
    /// (cut at the signing CA's expiry).
    pub fn issue(
        &self,
        csr: &CheckedCsr,
        id: &SpiffeId,
        now: i64,
        ttl_secs: i64,
    ) -> Result<X509Svid, CaError> {
        if !id.is_member_of(&self.td) {
            return Err(CaError::WrongTrustDomain(
                id.to_string(),
                self.td.to_string(),
            ));
        }
        if now < self.key.not_before || now >= self.key.not_after {
            return Err(CaError::Expired);
        }
        let nb = now - BACKDATE_SECS;
        let na = (now + ttl_secs).min(self.key.not_after);
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Warden");
        p.distinguished_name = dn;
        p.subject_alt_names =
            vec![SanType::URI(id.as_str().try_into().map_err(|_| {
                CaError::WrongTrustDomain(id.to_string(), self.td.to_string())
            })?)];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        let serial = serial()?;
        let serial_hex = serial.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        p.serial_number = Some(serial);
        p.not_before = at(nb)?;
        p.not_after = at(na)?;
        let spki = SubjectPublicKeyInfo::from_der(&csr.spki_der)?;
        let cert = p.signed_by(&spki, &self.issuer)?;
        let mut chain = Vec::with_capacity(self.chain.len() + 1);
        chain.push(cert.der().to_vec());
        chain.extend(self.chain.iter().cloned());
        Ok(X509Svid {
            id: id.clone(),
            chain,
            not_before: nb,
            not_after: na,
            serial: serial_hex,
        })
    }
}
