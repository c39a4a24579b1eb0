//! HTTP clients for tests: HTTP/1.1, h2c with prior knowledge, and TLS with a given CA
//! (and optionally a client certificate), choosing HTTP/2 or HTTP/1.1 by ALPN.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

/// A response with its body read.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: u16,
    /// Version.
    pub version: http::Version,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// A header's value as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn read(res: Response<hyper::body::Incoming>) -> Answer {
    let (parts, body) = res.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Answer {
        status: parts.status.as_u16(),
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// Sends one request over a new HTTP/1.1 connection.
pub async fn send_h1(addr: SocketAddr, req: Request<Full<Bytes>>) -> Answer {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    read(sender.send_request(req).await.expect("h1 request")).await
}

/// Sends `method path` with `headers` (and `host: localhost`) and `body` over a new HTTP/1.1
/// connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send_h1(addr, b.body(Full::new(body.into())).unwrap()).await
}

/// Sends one request over a new h2c (prior knowledge) connection.
pub async fn send_h2c(addr: SocketAddr, req: Request<Full<Bytes>>) -> Answer {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    read(sender.send_request(req).await.expect("h2 request")).await
}

/// `GET url-path` with a Host header, over HTTP/1.1.
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    let req = Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    send_h1(addr, req).await
}

/// A rustls client config trusting `ca`, optionally presenting a client certificate.
pub fn tls_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("read ca") {
        roots.add(c.expect("ca pem")).expect("add ca");
    }
    let b = rustls::ClientConfig::builder_with_provider(warden_crypto::provider())
        .with_protocol_versions(warden_crypto::TLS_VERSIONS)
        .expect("versions")
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some((cert, key)) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
                .expect("cert")
                .map(|c| c.expect("pem"))
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).expect("key");
            b.with_client_auth_cert(chain, key).expect("client auth")
        }
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A finished TLS handshake: what was negotiated.
pub struct TlsInfo {
    /// ALPN protocol chosen.
    pub alpn: Option<Vec<u8>>,
    /// The server's leaf certificate.
    pub server_cert: Option<CertificateDer<'static>>,
    /// Protocol version.
    pub version: Option<rustls::ProtocolVersion>,
}

/// Connects with TLS using SNI `server_name`; returns the stream and what was negotiated.
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<(tokio_rustls::client::TlsStream<TcpStream>, TlsInfo)> {
    let stream = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, stream)
        .await?;
    let (_, session) = tls.get_ref();
    let info = TlsInfo {
        alpn: session.alpn_protocol().map(|p| p.to_vec()),
        server_cert: session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned()),
        version: session.protocol_version(),
    };
    Ok((tls, info))
}

/// Sends one request over TLS, using HTTP/2 if ALPN chose it.
pub async fn send_tls(
    addr: SocketAddr,
    server_name: &str,
    cfg: Arc<rustls::ClientConfig>,
    req: Request<Full<Bytes>>,
) -> std::io::Result<Answer> {
    let (tls, info) = tls_connect(addr, server_name, cfg).await?;
    let io = TokioIo::new(tls);
    let res = if info.alpn.as_deref() == Some(b"h2") {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        sender
            .send_request(req)
            .await
            .map_err(std::io::Error::other)?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        sender
            .send_request(req)
            .await
            .map_err(std::io::Error::other)?
    };
    Ok(read(res).await)
}
