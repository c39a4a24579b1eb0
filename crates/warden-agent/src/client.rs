//! A small HTTP client for the authority's CA: one request per connection (renewals come
//! once an hour), over TCP or TLS, with a timeout on the whole exchange.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use crate::AgentError;

/// The largest answer read, bytes.
const MAX_ANSWER: usize = 1024 * 1024;

/// Where the authority is and how to reach it.
#[derive(Clone)]
pub struct AuthorityClient {
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    timeout: Duration,
}

impl std::fmt::Debug for AuthorityClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AuthorityClient({}://{}:{})",
            if self.tls.is_some() { "https" } else { "http" },
            self.host,
            self.port
        )
    }
}

impl AuthorityClient {
    /// A client of `url` (`http://host:port` or `https://host:port`, no path), trusting
    /// `roots` for `https` (required then).
    pub fn new(
        url: &str,
        roots: Option<Vec<CertificateDer<'static>>>,
        timeout: Duration,
    ) -> Result<Self, AgentError> {
        let bad = |why: &str| AgentError::Local(format!("authority URL {url:?}: {why}"));
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(bad("must be scheme://host[:port] with no path"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                p.parse::<u16>().map_err(|_| bad("bad port"))?,
            ),
            _ => (authority.to_owned(), if https { 443 } else { 80 }),
        };
        let tls = if https {
            let roots = roots.ok_or_else(|| bad("https needs the authority's CA certificate"))?;
            let mut store = rustls::RootCertStore::empty();
            for r in roots {
                store
                    .add(r)
                    .map_err(|e| AgentError::Local(format!("authority CA: {e}")))?;
            }
            let config = rustls::ClientConfig::builder_with_provider(warden_crypto::provider())
                .with_protocol_versions(warden_crypto::TLS_VERSIONS)
                .map_err(|e| AgentError::Local(e.to_string()))?
                .with_root_certificates(store)
                .with_no_client_auth();
            let name = ServerName::try_from(host.clone()).map_err(|_| bad("bad host name"))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self {
            host,
            port,
            tls,
            timeout,
        })
    }

    /// `GET path`, a JSON answer.
    pub async fn get_json(&self, path: &str) -> Result<Value, AgentError> {
        self.call(http::Method::GET, path, None).await
    }

    /// `POST path` with a JSON body, a JSON answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, AgentError> {
        let body = serde_json::to_vec(body).map_err(|e| AgentError::Local(e.to_string()))?;
        self.call(http::Method::POST, path, Some(body)).await
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Value, AgentError> {
        tokio::time::timeout(self.timeout, self.exchange(method, path, body))
            .await
            .map_err(|_| AgentError::Unreachable(format!("no answer within {:?}", self.timeout)))?
    }

    async fn exchange(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Value, AgentError> {
        let unreachable = |e: &dyn std::fmt::Display| AgentError::Unreachable(e.to_string());
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| unreachable(&e))?;
        let _ = tcp.set_nodelay(true);
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, host)
            .header(http::header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| AgentError::Local(e.to_string()))?;
        let res = match &self.tls {
            None => send(TokioIo::new(tcp), req).await?,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| unreachable(&e))?;
                send(TokioIo::new(tls), req).await?
            }
        };
        let status = res.status().as_u16();
        let bytes = Limited::new(res.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| unreachable(&e))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| AgentError::BadAnswer(format!("{status}, not JSON: {e}")))?;
        if status >= 400 {
            let s = |k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            if status >= 500 {
                return Err(AgentError::Unreachable(format!("{status} {}", s("error"))));
            }
            return Err(AgentError::Refused {
                status,
                code: s("error"),
                description: s("error_description"),
            });
        }
        Ok(v)
    }
}

async fn send<T>(
    io: TokioIo<T>,
    req: http::Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, AgentError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| AgentError::Unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| AgentError::Unreachable(e.to_string()))
}
