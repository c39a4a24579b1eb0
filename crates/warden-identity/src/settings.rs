//! The certificate authority's settings (`[authority.ca]`), in seconds, and how they must
//! fit together.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::FromDer;

use crate::ca::CaKey;
use crate::spiffe::TrustDomain;

/// An upstream CA (an enterprise PKI's root or intermediate) that signs the online
/// intermediate instead of a root the authority makes.
#[derive(Debug, Clone)]
pub struct UpstreamCa {
    /// The upstream CA's certificate and key.
    pub key: Arc<CaKey>,
    /// What SVID chains carry above the online intermediate: the upstream CA's certificate
    /// and its chain, without the root.
    pub chain: Vec<Vec<u8>>,
    /// The root(s) of the upstream chain: the bundle's X.509 authorities.
    pub roots: Vec<Vec<u8>>,
}

impl UpstreamCa {
    /// Loads `cert_pem` (the upstream CA's certificate first, then its chain up to and
    /// including the self-signed root) and `key_pem` (its PKCS#8 key).
    pub fn load(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("certificate PEM: {e}"))?;
        let first = certs.first().ok_or("no certificate")?;
        let key = match PrivateKeyDer::from_pem_slice(key_pem) {
            Ok(PrivateKeyDer::Pkcs8(k)) => k.secret_pkcs8_der().to_vec(),
            Ok(_) => return Err("the key must be PKCS#8 (BEGIN PRIVATE KEY)".into()),
            Err(e) => return Err(format!("key PEM: {e}")),
        };
        let key = CaKey::from_parts(first.to_vec(), key).map_err(|e| e.to_string())?;
        let path_len_zero = x509_parser::certificate::X509Certificate::from_der(first)
            .ok()
            .and_then(|(_, c)| {
                c.basic_constraints()
                    .ok()
                    .flatten()
                    .map(|b| b.value.path_len_constraint)
            })
            .flatten()
            == Some(0);
        if path_len_zero {
            return Err(
                "the CA certificate has pathLenConstraint 0: it may not sign Warden's intermediate"
                    .into(),
            );
        }
        let self_signed = |der: &[u8]| {
            x509_parser::certificate::X509Certificate::from_der(der)
                .map(|(_, c)| c.subject() == c.issuer())
                .unwrap_or(false)
        };
        let (roots, chain): (Vec<_>, Vec<_>) = certs
            .iter()
            .map(|c| c.to_vec())
            .partition(|c| self_signed(c));
        if roots.is_empty() {
            return Err("the chain must end with its self-signed root".into());
        }
        Ok(Self {
            key: Arc::new(key),
            chain,
            roots,
        })
    }
}

/// What the CA issues and how its keys rotate.
#[derive(Debug, Clone)]
pub struct CaSettings {
    /// The trust domain it issues for.
    pub trust_domain: TrustDomain,
    /// An SVID's lifetime unless the workload's registration says otherwise (1 hour).
    pub svid_ttl: i64,
    /// The longest lifetime a registration may ask for (24 hours).
    pub max_svid_ttl: i64,
    /// The signing intermediate's lifetime (7 days); replaced at half of it.
    pub intermediate_ttl: i64,
    /// The root's lifetime (1 year); replaced at half of it.
    pub root_ttl: i64,
    /// How long a new root is in the bundle before it signs (1 day).
    pub root_publish_ahead: i64,
    /// A join token's lifetime unless asked otherwise (10 minutes).
    pub join_token_ttl: i64,
    /// The longest join-token lifetime (1 day).
    pub max_join_token_ttl: i64,
    /// `spiffe_refresh_hint` in the bundle (5 minutes).
    pub refresh_hint: u64,
    /// An upstream CA that signs the online intermediate; `None`: a root of our own.
    pub upstream: Option<UpstreamCa>,
}

impl CaSettings {
    /// The defaults for `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            svid_ttl: 3600,
            max_svid_ttl: 24 * 3600,
            intermediate_ttl: 7 * 24 * 3600,
            root_ttl: 365 * 24 * 3600,
            root_publish_ahead: 24 * 3600,
            join_token_ttl: 600,
            max_join_token_ttl: 24 * 3600,
            refresh_hint: 300,
            upstream: None,
        }
    }

    /// Checks the lifetimes fit together; the error names the setting (as
    /// `authority.ca.<name>`) and says why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |name: &str, why: &str| Err((format!("authority.ca.{name}"), why.to_owned()));
        for (name, v) in [
            ("svid_ttl", self.svid_ttl),
            ("max_svid_ttl", self.max_svid_ttl),
            ("intermediate_ttl", self.intermediate_ttl),
            ("root_ttl", self.root_ttl),
            ("join_token_ttl", self.join_token_ttl),
            ("max_join_token_ttl", self.max_join_token_ttl),
        ] {
            if v < 1 {
                return err(name, "must be at least 1 s");
            }
        }
        if self.svid_ttl > self.max_svid_ttl {
            return err("svid_ttl", "must not exceed max_svid_ttl");
        }
        // An intermediate replaced at half its life still outlives the SVIDs it signed.
        if self.max_svid_ttl.saturating_mul(2) > self.intermediate_ttl {
            return err("intermediate_ttl", "must be at least twice max_svid_ttl");
        }
        if self.intermediate_ttl.saturating_mul(2) > self.root_ttl {
            return err("root_ttl", "must be at least twice intermediate_ttl");
        }
        if self.root_publish_ahead < 0 || self.root_publish_ahead.saturating_mul(2) > self.root_ttl
        {
            return err(
                "root_publish_ahead",
                "must be between 0 and half of root_ttl",
            );
        }
        if self.join_token_ttl > self.max_join_token_ttl {
            return err("join_token_ttl", "must not exceed max_join_token_ttl");
        }
        Ok(())
    }
}
