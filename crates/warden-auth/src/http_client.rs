//! A small HTTP(S) client for the auth layer's own calls (JWKS fetches, introspection): TLS
//! through Warden's crypto provider, bounded time and bounded response size.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connecting or exchanging failed.
    #[error("request failed: {0}")]
    Request(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The body was larger than allowed.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

/// A pooled client.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    /// A client trusting the CAs in `ca` (PEM), or the Mozilla root set when `None`.
    pub fn new(ca: Option<&Path>, connect_timeout: Duration) -> Result<HttpClient, String> {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("`{}`: {e}", path.display()))?;
                if certs.is_empty() {
                    return Err(format!("`{}` holds no certificates", path.display()));
                }
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| format!("`{}`: {e}", path.display()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder_with_provider(warden_crypto::provider())
            .with_protocol_versions(warden_crypto::TLS_VERSIONS)
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(8)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(HttpClient { client })
    }

    /// Sends `req` and reads the whole response, within `timeout` and `max_bytes`.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<(StatusCode, HeaderMap, Bytes), FetchError> {
        let call = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| FetchError::Request(error_chain(&e)))?;
            let (parts, body) = res.into_parts();
            let body = Limited::new(body, max_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        FetchError::TooLarge(max_bytes)
                    } else {
                        FetchError::Request(e.to_string())
                    }
                })?
                .to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| FetchError::Timeout)?
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        out.push_str(": ");
        out.push_str(&err.to_string());
        cur = err.source();
    }
    out
}
