//! An HTTPS static-file server for tests of config distribution: serves the files of a
//! directory at `https://localhost:PORT/<name>` with a strong `ETag` (the content's SHA-256),
//! answers `If-None-Match` with 304, and counts the requests (and the 304s).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

/// The server; stops (and closes its connections) when dropped.
pub struct FileServer {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    not_modified: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FileServer {
    /// Serves `dir` over TLS with the PEM certificate chain and key given.
    pub async fn start(dir: PathBuf, cert_pem: &str, key_pem: &str) -> FileServer {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
        let tls = rustls::ServerConfig::builder_with_provider(warden_crypto::provider())
            .with_protocol_versions(warden_crypto::TLS_VERSIONS)
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = Arc::new(AtomicU64::new(0));
        let not_modified = Arc::new(AtomicU64::new(0));
        let (s, n) = (served.clone(), not_modified.clone());
        let task = tokio::spawn(async move {
            // Owned here, so that stopping the server ends its open connections too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, dir, s, n) = (acceptor.clone(), dir.clone(), s.clone(), n.clone());
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (dir, s, n) = (dir.clone(), s.clone(), n.clone());
                        async move { Ok::<_, std::convert::Infallible>(answer(&dir, &req, &s, &n)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        FileServer {
            addr,
            served,
            not_modified,
            task,
        }
    }

    /// `https://localhost:PORT/name`.
    pub fn url(&self, name: &str) -> String {
        format!("https://localhost:{}/{name}", self.addr.port())
    }

    /// Requests answered (any status).
    pub fn requests(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Requests answered 304.
    pub fn not_modified(&self) -> u64 {
        self.not_modified.load(Ordering::Relaxed)
    }
}

fn answer(
    dir: &std::path::Path,
    req: &Request<Incoming>,
    served: &AtomicU64,
    not_modified: &AtomicU64,
) -> Response<Full<Bytes>> {
    served.fetch_add(1, Ordering::Relaxed);
    let name = req.uri().path().trim_start_matches('/');
    let reply = |status: StatusCode, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r
    };
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return reply(StatusCode::NOT_FOUND, Bytes::new());
    }
    let Ok(body) = std::fs::read(dir.join(name)) else {
        return reply(StatusCode::NOT_FOUND, Bytes::new());
    };
    let etag = format!(
        "\"{}\"",
        warden_crypto::jws::sha256(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut r = if matches {
        not_modified.fetch_add(1, Ordering::Relaxed);
        reply(StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        reply(StatusCode::OK, Bytes::from(body))
    };
    r.headers_mut()
        .insert(header::ETAG, etag.parse().expect("etag header"));
    r
}
