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

use std::collections::BTreeMap;
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

/// Roots (DER) of the federated trust domains, by trust domain.
pub type FederatedRoots = BTreeMap<TrustDomain, Vec<CertificateDer<'static>>>;

/// A trust domain's current roots, and those of the trust domains it federates with,
/// shared by the verifiers that use them. A peer's chain is verified against the roots of
/// the trust domain its SPIFFE ID names, and only those: a federated domain's CA cannot
/// vouch for an ID of this domain or of a third one.
#[derive(Debug)]
pub struct BundleSource {
    td: TrustDomain,
    roots: ArcSwap<Vec<CertificateDer<'static>>>,
    federated: ArcSwap<FederatedRoots>,
}

impl BundleSource {
    /// `td`'s roots (DER).
    pub fn new(td: TrustDomain, roots: Vec<Vec<u8>>) -> Arc<Self> {
        Arc::new(Self {
            td,
            roots: ArcSwap::from_pointee(roots.into_iter().map(CertificateDer::from).collect()),
            federated: ArcSwap::from_pointee(BTreeMap::new()),
        })
    }

    /// Replaces the federated trust domains' roots (this domain's own entry, if any, is
    /// ignored: its roots come only from [`BundleSource::update`]).
    pub fn update_federated(&self, mut federated: BTreeMap<TrustDomain, Vec<Vec<u8>>>) {
        federated.remove(&self.td);
        self.federated.store(Arc::new(
            federated
                .into_iter()
                .map(|(td, roots)| (td, roots.into_iter().map(CertificateDer::from).collect()))
                .collect(),
        ));
    }

    /// The federated trust domains' roots.
    pub fn federated(&self) -> Arc<FederatedRoots> {
        self.federated.load_full()
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

    /// The current roots.
    pub fn roots(&self) -> Arc<Vec<CertificateDer<'static>>> {
        self.roots.load_full()
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
        let id = svid::leaf_id(end_entity).map_err(refusal)?;
        if id.is_member_of(&self.td) {
            return svid::verify(&chain, &self.td, &self.roots.load(), now, client)
                .map_err(refusal);
        }
        let federated = self.federated.load();
        let Some((td, roots)) = federated.iter().find(|(td, _)| id.is_member_of(td)) else {
            return Err(refusal(SvidError::NoBundle(id.to_string())));
        };
        svid::verify(&chain, td, roots, now, client).map_err(refusal)
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
    /// Any ID of the trust domain or of a federated one (authorization happens later, per
    /// route).
    AnyTrusted,
    /// Only these.
    Only(Vec<SpiffeId>),
}

impl Allowed {
    fn check(&self, id: &SpiffeId) -> Result<(), rustls::Error> {
        match self {
            Allowed::AnyTrusted => Ok(()),
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

/// A workload's identity as the data plane uses it: the current X.509-SVID as rustls wants
/// it, and the trust bundle. The sidecar's agent implements it; the proxy only reads it, so
/// certificates rotate under running listeners and pools without a reload.
pub trait WorkloadIdentity: Send + Sync + std::fmt::Debug {
    /// The current SVID and its key; `None` before the first one, or once it has expired.
    fn certified_key(&self) -> Option<Arc<rustls::sign::CertifiedKey>>;
    /// The trust domain's bundle.
    fn bundle(&self) -> Arc<BundleSource>;
    /// The SPIFFE ID, when known.
    fn spiffe_id(&self) -> Option<SpiffeId>;
    /// How the identity stands, for readiness and metrics.
    fn status(&self) -> IdentityStatus {
        IdentityStatus::default()
    }
}

/// How a workload identity stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityStatus {
    /// When the current SVID expires (Unix seconds); `None` while there is none.
    pub not_after: Option<i64>,
    /// Since when renewing has been failing (Unix seconds); `None` while it works.
    pub renewal_failing_since: Option<i64>,
    /// The last renewal error.
    pub last_error: Option<String>,
}

/// An identity not issued yet: no SVID, an empty bundle. `warden check` compiles a sidecar's
/// config with it (the TLS configs build, nothing would verify).
#[derive(Debug)]
pub struct Unissued(Arc<BundleSource>);

impl Unissued {
    /// For trust domain `td`.
    pub fn new(td: TrustDomain) -> Arc<Self> {
        Arc::new(Self(BundleSource::new(td, Vec::new())))
    }
}

impl WorkloadIdentity for Unissued {
    fn certified_key(&self) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }

    fn bundle(&self) -> Arc<BundleSource> {
        self.0.clone()
    }

    fn spiffe_id(&self) -> Option<SpiffeId> {
        None
    }
}

/// Serves the workload's current SVID to every TLS client (no SNI choice: one identity).
#[derive(Debug)]
struct SvidResolver(Arc<dyn WorkloadIdentity>);

impl rustls::server::ResolvesServerCert for SvidResolver {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.certified_key()
    }
}

impl rustls::client::ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.certified_key()
    }

    fn has_certs(&self) -> bool {
        self.0.certified_key().is_some()
    }
}

/// The server config of a mesh inbound listener: the workload's SVID, clients must present
/// an SVID of the bundle (refused in the handshake otherwise), no session resumption.
pub fn inbound_server_config(
    identity: Arc<dyn WorkloadIdentity>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let verifier = SpiffeClientVerifier::new(identity.bundle(), Allowed::AnyTrusted);
    let mut c = rustls::ServerConfig::builder_with_provider(warden_crypto::provider())
        .with_protocol_versions(warden_crypto::TLS_VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SvidResolver(identity)));
    c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    c.send_tls13_tickets = 0;
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(c))
}

/// The client config for calling a peer in the mesh: presents the workload's SVID, accepts
/// only a server SVID of the bundle with one of `allowed` IDs, no session resumption.
pub fn outbound_client_config(
    identity: Arc<dyn WorkloadIdentity>,
    allowed: Allowed,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let verifier = SpiffeServerVerifier::new(identity.bundle(), allowed);
    let mut c = rustls::ClientConfig::builder_with_provider(warden_crypto::provider())
        .with_protocol_versions(warden_crypto::TLS_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(SvidResolver(identity)));
    c.resumption = rustls::client::Resumption::disabled();
    Ok(c)
}
