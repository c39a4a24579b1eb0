//! TLS for listeners and upstream clusters, on the one TLS stack in [`warden_crypto::tls`]:
//! this file only turns config sections into its sources and names errors by config field.
//!
//! A listener's certificates live in a [`CertStore`] that outlives snapshots: a reload whose
//! certificate section is unchanged keeps the store (re-reading the files if they changed, and
//! failing the reload if they do not load), and the store's own watcher swaps rotated files in
//! between reloads, so certificates rotate without a reload and without dropping connections.

use std::sync::Arc;

use rustls::ServerConfig;
use warden_config::{
    ClientAuthMode, SecretRef, SecretResolver, TlsListenerConfig, UpstreamTlsConfig,
};
use warden_crypto::tls::{self as stack, CertSource, CertStore, ClientAuth, KeySource, TlsField};

use crate::error::CompileError;

/// A key reference as the TLS stack reads it: files are re-read when they change; anything
/// else (an environment variable, a vault secret) is read once, here, through the resolver.
pub(crate) fn key_source(
    secret: &SecretRef,
    path: &str,
    secrets: &dyn SecretResolver,
) -> Result<KeySource, CompileError> {
    match secret.path() {
        Some(p) => Ok(KeySource::File(p.to_path_buf())),
        None => secrets
            .resolve(secret)
            .map(KeySource::Pem)
            .map_err(|e| CompileError::new(path, e.to_string())),
    }
}

fn listener_error(path: &str, e: stack::TlsError) -> CompileError {
    let field = match e.field {
        TlsField::Cert(i) => format!("{path}.certificates[{i}].cert"),
        TlsField::Key(i) => format!("{path}.certificates[{i}].key"),
        TlsField::ClientCa => format!("{path}.client_auth.ca"),
        TlsField::ClientAuth => format!("{path}.client_auth"),
        TlsField::Roots | TlsField::Config => path.to_owned(),
    };
    CompileError::new(field, e.message)
}

/// The certificate store for a listener: `previous` when it was loaded from the same sources
/// (refreshed from disk), a new one otherwise.
fn listener_store(
    t: &TlsListenerConfig,
    previous: Option<&Arc<CertStore>>,
    path: &str,
    secrets: &dyn SecretResolver,
) -> Result<Arc<CertStore>, CompileError> {
    let mut sources = Vec::with_capacity(t.certificates.len());
    for (i, c) in t.certificates.iter().enumerate() {
        sources.push(CertSource {
            cert: c.cert.clone(),
            key: key_source(&c.key, &format!("{path}.certificates[{i}].key"), secrets)?,
            server_names: c.server_names.clone(),
        });
    }
    if let Some(store) = previous.filter(|s| s.sources() == sources.as_slice()) {
        store.refresh().map_err(|e| listener_error(path, e))?;
        return Ok(store.clone());
    }
    CertStore::load(sources, path).map_err(|e| listener_error(path, e))
}

/// Builds a listener's TLS server config and returns the certificate store it serves from.
pub(crate) fn server_config(
    t: &TlsListenerConfig,
    http2: bool,
    previous: Option<&Arc<CertStore>>,
    path: &str,
    secrets: &dyn SecretResolver,
) -> Result<(Arc<ServerConfig>, Arc<CertStore>), CompileError> {
    let store = listener_store(t, previous, path, secrets)?;
    let client_auth = t.client_auth.as_ref().map(|ca| ClientAuth {
        ca: ca.ca.clone(),
        required: ca.mode == ClientAuthMode::Required,
    });
    let alpn: &[&[u8]] = if http2 {
        &[b"h2", b"http/1.1"]
    } else {
        &[b"http/1.1"]
    };
    let config = stack::server_config(&store, client_auth.as_ref(), alpn)
        .map_err(|e| listener_error(path, e))?;
    Ok((config, store))
}

/// Builds the TLS client config for an upstream cluster.
pub(crate) fn client_config(
    t: &UpstreamTlsConfig,
    path: &str,
    secrets: &dyn SecretResolver,
) -> Result<rustls::ClientConfig, CompileError> {
    let named = |e: stack::TlsError| {
        let field = match e.field {
            TlsField::Roots => format!("{path}.ca"),
            TlsField::Cert(_) => format!("{path}.client_cert"),
            TlsField::Key(_) => format!("{path}.client_key"),
            _ => path.to_owned(),
        };
        CompileError::new(field, e.message)
    };
    let client = match (&t.client_cert, &t.client_key) {
        (Some(cert), Some(key)) => {
            let source = CertSource {
                cert: cert.clone(),
                key: key_source(key, &format!("{path}.client_key"), secrets)?,
                server_names: Vec::new(),
            };
            Some(CertStore::load(vec![source], path).map_err(named)?)
        }
        _ => None,
    };
    stack::client_config(&t.ca, client.as_ref()).map_err(named)
}

/// The server config of a sidecar's `inbound` listener: the workload's SVID, peers verified
/// against its trust bundle (see `warden_identity::tls`).
pub(crate) fn inbound_config(
    identity: Option<&crate::Identity>,
    http2: bool,
    path: &str,
) -> Result<Arc<ServerConfig>, CompileError> {
    let identity = identity.ok_or_else(|| {
        CompileError::new(
            path,
            "an inbound listener needs the sidecar's identity ([sidecar])",
        )
    })?;
    let alpn: &[&[u8]] = if http2 {
        &[b"h2", b"http/1.1"]
    } else {
        &[b"http/1.1"]
    };
    warden_identity::tls::inbound_server_config(identity.clone(), alpn)
        .map_err(|e| CompileError::new(path, e.to_string()))
}

/// The client config of a mesh cluster: presents the sidecar's SVID and accepts only an
/// endpoint SVID with one of `ids`.
pub(crate) fn mesh_client_config(
    identity: Option<&crate::Identity>,
    ids: &[String],
    path: &str,
) -> Result<rustls::ClientConfig, CompileError> {
    let identity = identity.ok_or_else(|| {
        CompileError::new(
            path,
            "mesh endpoints need the sidecar's identity ([sidecar])",
        )
    })?;
    let mut allowed = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        allowed.push(
            warden_identity::SpiffeId::parse(id)
                .map_err(|e| CompileError::new(format!("{path}[{i}]"), e.to_string()))?,
        );
    }
    warden_identity::tls::outbound_client_config(
        identity.clone(),
        warden_identity::tls::Allowed::Only(allowed),
    )
    .map_err(|e| CompileError::new(path, e.to_string()))
}
