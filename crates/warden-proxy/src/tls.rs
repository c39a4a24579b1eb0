//! TLS: server configs for listeners (SNI over several certificates, optional client
//! certificates) and client configs for upstream clusters. Certificates and keys are read when
//! a config snapshot is compiled, so a reload (file change, SIGHUP, admin) picks up new ones.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use warden_config::{
    CertificateConfig, ClientAuthMode, SecretRef, TlsListenerConfig, UpstreamTlsConfig,
};

use crate::error::CompileError;

/// Reads a PEM certificate chain.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("`{}` is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no certificate", path.display()));
    }
    Ok(certs)
}

/// Reads a PEM private key from a secret reference. The error never includes key material.
pub(crate) fn load_key(secret: &SecretRef) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = secret.read().map_err(|e| e.to_string())?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| format!("{secret} holds no PEM private key"))
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("`{}`: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

struct SniCert {
    exact: Vec<String>,
    wildcard: Vec<String>,
    key: Arc<CertifiedKey>,
    /// The leaf, for checking names when none are configured.
    leaf: CertificateDer<'static>,
}

/// Chooses a certificate by SNI: configured exact names, then wildcard names, then names in
/// certificates without configured names, then the first certificate.
pub(crate) struct SniResolver {
    certs: Vec<SniCert>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("certs", &self.certs.len())
            .finish()
    }
}

impl SniResolver {
    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = sni.map(|s| s.to_ascii_lowercase()) else {
            return self.certs.first().map(|c| c.key.clone());
        };
        if let Some(c) = self.certs.iter().find(|c| c.exact.contains(&name)) {
            return Some(c.key.clone());
        }
        if let Some(c) = self.certs.iter().find(|c| {
            c.wildcard.iter().any(|suffix| {
                name.ends_with(suffix.as_str()) && !name[..name.len() - suffix.len()].contains('.')
            })
        }) {
            return Some(c.key.clone());
        }
        if let Ok(server_name) = rustls::pki_types::ServerName::try_from(name.as_str()) {
            for c in self
                .certs
                .iter()
                .filter(|c| c.exact.is_empty() && c.wildcard.is_empty())
            {
                if let Ok(ee) = webpki::EndEntityCert::try_from(&c.leaf) {
                    if ee.verify_is_valid_for_subject_name(&server_name).is_ok() {
                        return Some(c.key.clone());
                    }
                }
            }
        }
        self.certs.first().map(|c| c.key.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

fn certified_key(c: &CertificateConfig, path: &str) -> Result<SniCert, CompileError> {
    let chain = load_certs(&c.cert).map_err(|e| CompileError::new(format!("{path}.cert"), e))?;
    let key = load_key(&c.key).map_err(|e| CompileError::new(format!("{path}.key"), e))?;
    let provider = warden_crypto::provider();
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        CompileError::new(format!("{path}.key"), format!("unusable private key: {e}"))
    })?;
    let leaf = chain[0].clone();
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        CompileError::new(
            format!("{path}.key"),
            format!("does not match the certificate: {e}"),
        )
    })?;
    let mut exact = Vec::new();
    let mut wildcard = Vec::new();
    for n in &c.server_names {
        let n = n.to_ascii_lowercase();
        match n.strip_prefix('*') {
            Some(suffix) => wildcard.push(suffix.to_owned()),
            None => exact.push(n),
        }
    }
    Ok(SniCert {
        exact,
        wildcard,
        key: Arc::new(ck),
        leaf,
    })
}

/// Builds a listener's TLS server config.
pub(crate) fn server_config(
    t: &TlsListenerConfig,
    http2: bool,
    path: &str,
) -> Result<Arc<ServerConfig>, CompileError> {
    let mut certs = Vec::new();
    for (i, c) in t.certificates.iter().enumerate() {
        certs.push(certified_key(c, &format!("{path}.certificates[{i}]"))?);
    }
    let provider = warden_crypto::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(warden_crypto::TLS_VERSIONS)
        .map_err(|e| CompileError::new(path, e.to_string()))?;
    let builder = match &t.client_auth {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = load_roots(&ca.ca)
                .map_err(|e| CompileError::new(format!("{path}.client_auth.ca"), e))?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match ca.mode {
                ClientAuthMode::Required => verifier,
                ClientAuthMode::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| CompileError::new(format!("{path}.client_auth"), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver { certs }));
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// Builds the TLS client config for an upstream cluster.
pub(crate) fn client_config(
    t: &UpstreamTlsConfig,
    path: &str,
) -> Result<rustls::ClientConfig, CompileError> {
    let roots = load_roots(&t.ca).map_err(|e| CompileError::new(format!("{path}.ca"), e))?;
    let builder = rustls::ClientConfig::builder_with_provider(warden_crypto::provider())
        .with_protocol_versions(warden_crypto::TLS_VERSIONS)
        .map_err(|e| CompileError::new(path, e.to_string()))?
        .with_root_certificates(roots);
    match (&t.client_cert, &t.client_key) {
        (Some(cert), Some(key)) => {
            let chain = load_certs(cert)
                .map_err(|e| CompileError::new(format!("{path}.client_cert"), e))?;
            let key =
                load_key(key).map_err(|e| CompileError::new(format!("{path}.client_key"), e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| CompileError::new(format!("{path}.client_key"), e.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}
