//! rustls verifiers for mTLS between workloads: the peer's certificate chain must be an
//! X.509-SVID of the trust domain, verifying to a root of its current bundle
//! ([`BundleSource`], swapped when the bundle changes, so a CA rotation needs no new TLS
//! config), and, where a policy says so, one of the SPIFFE IDs allowed. Signatures are
//! checked with Warden's crypto provider (`warden_crypto::provider`).
//!
//! A resumed TLS session is not verified again, so configs using these verifiers should
//! turn resumption off (`ServerConfig::session_storage = NoServerSessionStorage`,
//! `send_tls13_tickets = 0`; `ClientConfig::resumption = Resumption::disabled()`) or scope
//! their session caches to the bundle in force: otherwise a peer whose root left the bundle
//! keeps resuming until its ticket expires (`tests/mtls.rs` shows the difference).

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::spiffe::{SpiffeId, TrustDomain};
use crate::svid::{self, SvidError};

/// A trust domain's current roots, shared by the verifiers that use them.
#[derive(Debug)]
pub struct BundleSource {
    td: TrustDomain,
    roots: ArcSwap<Vec<CertificateDer<'static>>>,
}

impl BundleSource {
    /// `td`'s roots (DER).
    pub fn new(td: TrustDomain, roots: Vec<Vec<u8>>) -> Arc<Self> {
        Arc::new(Self {
            td,
            roots: ArcSwap::from_pointee(roots.into_iter().map(CertificateDer::from).collect()),
        })
    }

    /// Replaces the roots (a new bundle); handshakes from now on use them.
    pub fn update(&self, roots: Vec<Vec<u8>>) {
        self.roots.store(Arc::new(
            roots.into_iter().map(CertificateDer::from).collect(),
        ));
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.td
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        client: bool,
    ) -> Result<SpiffeId, rustls::Error> {
        let mut chain = Vec::with_capacity(intermediates.len() + 1);
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        svid::verify(&chain, &self.td, &self.roots.load(), now, client).map_err(refusal)
    }
}

fn refusal(e: SvidError) -> rustls::Error {
    let kind = match &e {
        SvidError::Chain(m) if m.contains("Expired") => CertificateError::Expired,
        SvidError::Chain(m) if m.contains("NotValidYet") => CertificateError::NotValidYet,
        SvidError::Chain(m) if m.contains("UnknownIssuer") => CertificateError::UnknownIssuer,
        // Another CA with the same names: found by name, its signature does not match.
        SvidError::Chain(m) if m.contains("InvalidSignature") => CertificateError::BadSignature,
        _ => CertificateError::Other(OtherError(Arc::new(e))),
    };
    rustls::Error::InvalidCertificate(kind)
}

/// Which peer IDs a verifier accepts.
#[derive(Debug, Clone)]
pub enum Allowed {
    /// Any ID in the trust domain (authorization happens later, per route).
    AnyInTrustDomain,
    /// Only these.
    Only(Vec<SpiffeId>),
}

impl Allowed {
    fn check(&self, id: &SpiffeId) -> Result<(), rustls::Error> {
        match self {
            Allowed::AnyInTrustDomain => Ok(()),
            Allowed::Only(ids) if ids.contains(id) => Ok(()),
            Allowed::Only(_) => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(NotAllowed(id.to_string()))),
            ))),
        }
    }
}

/// A peer whose SVID verified but whose ID is not the expected one.
#[derive(Debug, thiserror::Error)]
#[error("peer {0} is not an allowed SPIFFE ID")]
pub struct NotAllowed(String);

fn algorithms() -> WebPkiSupportedAlgorithms {
    warden_crypto::provider().signature_verification_algorithms
}

/// Verifies TLS clients' X.509-SVIDs (mandatory: a client without one is refused in the
/// handshake).
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    bundle: Arc<BundleSource>,
    allowed: Allowed,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeClientVerifier {
    /// A verifier of clients against `bundle`.
    pub fn new(bundle: Arc<BundleSource>, allowed: Allowed) -> Arc<Self> {
        Arc::new(Self {
            bundle,
            allowed,
            algs: algorithms(),
        })
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let id = self.bundle.verify(end_entity, intermediates, now, true)?;
        self.allowed.check(&id)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Verifies a TLS server's X.509-SVID (the server name is not used: SPIFFE identifies by
/// URI SAN, not DNS name).
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    bundle: Arc<BundleSource>,
    allowed: Allowed,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// A verifier of servers against `bundle`.
    pub fn new(bundle: Arc<BundleSource>, allowed: Allowed) -> Arc<Self> {
        Arc::new(Self {
            bundle,
            allowed,
            algs: algorithms(),
        })
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = self.bundle.verify(end_entity, intermediates, now, false)?;
        self.allowed.check(&id)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
