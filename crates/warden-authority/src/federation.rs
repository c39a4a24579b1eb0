//! SPIFFE Federation, the fetching side: one task per `[[authority.ca.federation]]` entry
//! fetches that trust domain's bundle from its bundle endpoint (HTTPS, Web PKI: the
//! `https_web` profile) at start and then at the bundle's `spiffe_refresh_hint` (between 5 s
//! and an hour; 5 minutes without one), and hands it to the CA, which checks it, keeps it
//! and serves it to the workloads. A failed fetch keeps the last good bundle and is retried
//! with back-off; a bundle that fails its checks is refused and audited by the CA.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warden_auth::http_client::HttpClient;
use warden_ca::Ca;
use warden_config::authority::CaConfig;
use warden_identity::bundle::MAX_BUNDLE_LEN;
use warden_identity::TrustDomain;

use crate::clock::Clock;
use crate::AuthorityError;

const TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_REFRESH: u64 = 300;
const MIN_REFRESH: u64 = 5;
const MAX_REFRESH: u64 = 3600;

/// One federated trust domain and how to fetch its bundle.
struct Source {
    td: TrustDomain,
    url: String,
    client: HttpClient,
}

/// Forgets federated trust domains the config no longer names and starts a fetcher for
/// each it names.
pub(crate) async fn spawn(
    config: &CaConfig,
    ca: &Arc<Ca>,
    clock: Arc<dyn Clock>,
    stop: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, AuthorityError> {
    let mut sources = Vec::new();
    for (i, f) in config.federation.iter().enumerate() {
        let field = format!("authority.ca.federation[{i}]");
        let td = f
            .trust_domain()
            .map_err(|why| AuthorityError::Config(format!("{field}.trust_domain: {why}")))?;
        let client = HttpClient::new(f.endpoint_ca.as_deref(), TIMEOUT)
            .map_err(|why| AuthorityError::Config(format!("{field}.endpoint_ca: {why}")))?;
        sources.push(Source {
            td,
            url: f.bundle_endpoint.clone(),
            client,
        });
    }
    let keep: Vec<TrustDomain> = sources.iter().map(|s| s.td.clone()).collect();
    ca.retain_federated(&keep)
        .await
        .map_err(|e| AuthorityError::Config(format!("federated bundles: {e}")))?;
    Ok(sources
        .into_iter()
        .map(|s| tokio::spawn(run(s, ca.clone(), clock.clone(), stop.clone())))
        .collect())
}

async fn run(source: Source, ca: Arc<Ca>, clock: Arc<dyn Clock>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match fetch(&source).await {
            Ok(doc) => match ca.set_federated_bundle(&source.td, &doc, clock.now()).await {
                Ok(changed) => {
                    if changed {
                        tracing::info!(trust_domain = %source.td, "federated bundle updated");
                    }
                    backoff = Duration::from_secs(1);
                    let hint = ca
                        .federated_bundles()
                        .get(&source.td)
                        .and_then(|f| f.bundle.refresh_hint)
                        .unwrap_or(DEFAULT_REFRESH);
                    Duration::from_secs(hint.clamp(MIN_REFRESH, MAX_REFRESH))
                }
                Err(e) => {
                    tracing::warn!(trust_domain = %source.td, url = %source.url, error = %e,
                        "refused a federated bundle; keeping the last good one");
                    failed(&mut backoff)
                }
            },
            Err(e) => {
                tracing::warn!(trust_domain = %source.td, url = %source.url, error = %e,
                    "cannot fetch a federated bundle; keeping the last good one");
                failed(&mut backoff)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The next wait after a failure: 1 s doubling to 5 minutes.
fn failed(backoff: &mut Duration) -> Duration {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(Duration::from_secs(DEFAULT_REFRESH));
    wait
}

async fn fetch(source: &Source) -> Result<Bytes, String> {
    let req = http::Request::get(&source.url)
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let (status, _, body) = source
        .client
        .send(req, TIMEOUT, MAX_BUNDLE_LEN)
        .await
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("the bundle endpoint answered {status}"));
    }
    Ok(body)
}
