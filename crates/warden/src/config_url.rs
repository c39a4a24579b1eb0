//! Fleet distribution of configs (issue 14): `warden serve --config PATH --config-url URL`
//! takes the config from an HTTPS URL (any static file server, or a path the authority
//! serves) and its signature from `URL.sig`, polled with `If-None-Match`. A new config is
//! checked (signature, trusted keys, and the files it reads, which are provisioned on the host
//! beside PATH, never fetched) before it is written over PATH and PATH.sig and reloaded like
//! any reload, which checks it again. Anything wrong (the server down or slow, a status other
//! than 200 or 304, a body over 1 MiB, a bad or missing signature) leaves the running config
//! in place, is logged, and is a `config.fetch` security event with its reason.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Full;
use warden_auth::http_client::HttpClient;
use warden_telemetry::SecurityEvent;

use crate::serve::SignedConfigGate;

/// Largest config fetched.
const MAX_CONFIG_BYTES: usize = 1 << 20;
/// Largest signature fetched.
const MAX_SIGNATURE_BYTES: usize = 64 << 10;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// What a poll found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fetched {
    /// The server said 304: nothing new.
    NotModified,
    /// The same bytes as the config in place.
    Unchanged,
    /// A new config, checked and written over the local file.
    Written,
}

/// Why a fetch was not applied: a stable reason and a message.
pub(crate) type Refusal = (&'static str, String);

/// The URL a config comes from, and where it goes.
pub(crate) struct ConfigUrl {
    url: String,
    path: PathBuf,
    http: HttpClient,
    etag: Option<String>,
}

impl ConfigUrl {
    /// A fetcher of `url` (https only) into `path`, trusting `ca` (PEM) or the Mozilla roots.
    pub(crate) fn new(url: &str, path: &Path, ca: Option<&Path>) -> anyhow::Result<ConfigUrl> {
        let Some(rest) = url.strip_prefix("https://") else {
            anyhow::bail!("--config-url must be an https:// URL");
        };
        // The URL is logged and put in security events: credentials have no place in it.
        if rest
            .split(['/', '?', '#'])
            .next()
            .is_some_and(|a| a.contains('@'))
        {
            anyhow::bail!(
                "--config-url must not carry credentials (user:password@): the URL is logged; \
                 serve configs from a server that needs none (they are signed)"
            );
        }
        let http = HttpClient::new(ca, FETCH_TIMEOUT)
            .map_err(|e| anyhow::anyhow!("--config-url-ca: {e}"))?;
        Ok(ConfigUrl {
            url: url.to_owned(),
            path: path.to_path_buf(),
            http,
            etag: None,
        })
    }

    async fn get(
        &self,
        url: &str,
        etag: Option<&str>,
        max: usize,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), Refusal> {
        let mut req = Request::get(url);
        if let Some(e) = etag {
            req = req.header(header::IF_NONE_MATCH, e);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| ("bad_url", format!("{url}: {e}")))?;
        self.http
            .send(req, FETCH_TIMEOUT, max)
            .await
            .map_err(|e| match e {
                warden_auth::http_client::FetchError::TooLarge(n) => {
                    ("too_large", format!("{url}: larger than {n} bytes"))
                }
                warden_auth::http_client::FetchError::Timeout => (
                    "unreachable",
                    format!("{url}: no answer in {FETCH_TIMEOUT:?}"),
                ),
                warden_auth::http_client::FetchError::Request(m) => {
                    ("unreachable", format!("{url}: {m}"))
                }
            })
    }

    /// One poll: fetches the config (conditionally) and its signature, checks them with
    /// `check`, and writes them over the local files when they pass and differ.
    pub(crate) async fn fetch(
        &mut self,
        check: impl Fn(&Path, &[u8], &str) -> Result<(), Refusal>,
    ) -> Result<Fetched, Refusal> {
        let (status, headers, body) = self
            .get(&self.url, self.etag.as_deref(), MAX_CONFIG_BYTES)
            .await?;
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if status != StatusCode::OK {
            return Err(("bad_status", format!("{}: answered {status}", self.url)));
        }
        let sig_url = format!("{}.sig", self.url);
        let (sig_status, _, sig) = self.get(&sig_url, None, MAX_SIGNATURE_BYTES).await?;
        if sig_status != StatusCode::OK {
            return Err((
                "unsigned",
                format!("{sig_url}: answered {sig_status}; a fetched config must be signed"),
            ));
        }
        let sig = std::str::from_utf8(&sig)
            .map_err(|_| ("malformed_signature", format!("{sig_url}: not text")))?
            .trim()
            .to_owned();
        check(&self.path, &body, &sig)?;
        let etag = headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if std::fs::read(&self.path).is_ok_and(|old| old == body) {
            self.etag = etag;
            return Ok(Fetched::Unchanged);
        }
        // The signature first, then the config: each renamed over the old in one step.
        let sig_path = warden_signed_config::signature_path(&self.path);
        write_replace(&sig_path, format!("{sig}\n").as_bytes())
            .map_err(|e| ("write_failed", format!("{}: {e}", sig_path.display())))?;
        write_replace(&self.path, &body)
            .map_err(|e| ("write_failed", format!("{}: {e}", self.path.display())))?;
        self.etag = etag;
        Ok(Fetched::Written)
    }
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`.
fn write_replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".fetching");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Polls every `every` until the process ends: a written config is reloaded; a refusal is
/// logged and a `config.fetch` security event.
pub(crate) async fn poll(
    mut source: ConfigUrl,
    gate: Arc<SignedConfigGate>,
    gateway: Arc<warden_proxy::Gateway>,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let result = source
            .fetch(|path, bytes, sig| gate.verify_signature(path, bytes, sig))
            .await;
        match result {
            Ok(Fetched::Written) => {
                tracing::info!(url = %source.url, "a new signed config was fetched; reloading");
                if let Err(e) = gateway.reload().await {
                    tracing::warn!(error = %e, "the fetched config was not applied");
                }
            }
            Ok(_) => {}
            Err((reason, message)) => {
                tracing::warn!(url = %source.url, reason, %message, "config fetch refused; the running config stays");
                gateway.security_events().emit(&SecurityEvent {
                    event: "config.fetch",
                    reason,
                    detail: Some(serde_json::json!({ "url": source.url, "message": message })),
                    ..Default::default()
                });
            }
        }
    }
}
