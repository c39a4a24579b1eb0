//! The authority's listener: plain HTTP (for `warden dev` and loopback) or TLS with rustls
//! (Warden's provider and cipher policy), optionally verifying client certificates for
//! `tls_client_auth`. Handlers learn the peer's address and verified certificate through
//! `ConnectInfo<Peer>`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use warden_config::{ClientAuthMode, TlsListenerConfig};

use crate::client_auth::Peer;
use crate::error::{AuthorityError, Result};

/// Time a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TLS handshakes in progress at once.
const MAX_HANDSHAKES: usize = 1024;

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer {
            ip: stream.remote_addr().ip(),
            cert: None,
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let read: std::result::Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| AuthorityError::Config(format!("cannot read `{}`: {e}", path.display())))?
        .collect();
    let certs = read.map_err(|e| AuthorityError::Config(format!("`{}`: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(AuthorityError::Config(format!(
            "`{}` holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Builds the rustls server config. The first certificate of `tls.certificates` is served.
pub fn tls_config(tls: &TlsListenerConfig) -> Result<Arc<rustls::ServerConfig>> {
    let c = tls
        .certificates
        .first()
        .ok_or_else(|| AuthorityError::Config("authority.tls: no certificate".into()))?;
    let chain = certs(&c.cert)?;
    let key_pem = c
        .key
        .read()
        .map_err(|e| AuthorityError::Config(format!("authority.tls key: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| AuthorityError::Config(format!("{} holds no PEM private key", c.key)))?;
    let provider = warden_crypto::provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(warden_crypto::TLS_VERSIONS)
        .map_err(|e| AuthorityError::Config(e.to_string()))?;
    let builder = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs(&ca.ca)? {
                roots
                    .add(cert)
                    .map_err(|e| AuthorityError::Config(format!("client CA: {e}")))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = match ca.mode {
                ClientAuthMode::Required => v,
                ClientAuthMode::Optional => v.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(
                v.build()
                    .map_err(|e| AuthorityError::Config(format!("client CA: {e}")))?,
            )
        }
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| AuthorityError::Config(format!("authority.tls: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A TLS listener for `axum::serve`: handshakes run in their own tasks (a slow client never
/// holds up others) and finished connections are handed over with their [`Peer`].
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl TlsListener {
    /// Starts accepting TLS connections on `tcp`.
    pub fn new(tcp: TcpListener, cfg: Arc<rustls::ServerConfig>) -> Result<TlsListener> {
        let local = tcp.local_addr().map_err(|e| AuthorityError::Listen {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            reason: e.to_string(),
        })?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(cfg);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, addr) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "authority accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let hs = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let Ok(Ok(tls)) = hs.await else { return };
                    let cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| Arc::new(c.as_ref().to_vec()));
                    let peer = Peer {
                        ip: addr.ip(),
                        cert,
                    };
                    let _ = tx.send((tls, peer)).await;
                });
            }
        });
        Ok(TlsListener {
            rx,
            local,
            accept_task,
        })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            ip: self.local.ip(),
            cert: None,
        })
    }
}

impl TlsListener {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.local
    }
}
