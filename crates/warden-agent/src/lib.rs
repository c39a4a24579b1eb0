//! The sidecar's identity agent.
//!
//! At start it makes a P-256 key (in memory only; never written anywhere), sends a CSR and
//! its one-time join token to the authority's CA (`POST /ca/v1/svid`), and holds the SVID it
//! gets. From then on it renews at about half the SVID's life (± a tenth of it, so a fleet
//! started together does not renew together) with a new key, proving itself with the current
//! one (`POST /ca/v1/svid/renew`), and refreshes the trust bundle at its refresh hint, with
//! the bundles of the trust domains the authority federates with
//! (`GET /ca/v1/bundles/federated`): peers of those domains are verified against their own
//! roots.
//!
//! Consumers read the current SVID ([`Agent::current`]) or wait for the next
//! ([`Agent::subscribe`]): the sidecar's TLS configs swap certificates from it without
//! dropping connections, and the Workload API streams it. [`Agent::bundle`] is the
//! [`BundleSource`] the SPIFFE verifiers read.
//!
//! While the authority is unreachable the agent keeps the current SVID, retries with
//! back-off (1 s doubling to 30 s), and reports [`Health::Stale`]; once the SVID has expired
//! it reports [`Health::Expired`], and the sidecar must refuse rather than serve with it.

mod authority_shim;
mod client;
mod state;
pub mod workload_api;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rcgen::{CertificateParams, KeyPair, SigningKey as _};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use tokio::sync::watch;
use warden_identity::bundle::Bundle;
use warden_identity::tls::BundleSource;
use warden_identity::{SpiffeId, TrustDomain};
use zeroize::Zeroizing;

pub use client::AuthorityClient;

/// Why the agent could not get or renew an SVID.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    /// The authority could not be reached, or did not answer in time.
    #[error("authority unreachable: {0}")]
    Unreachable(String),
    /// The authority refused (`error` code and its description).
    #[error("authority refused ({status} {code}): {description}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The CA's error code (`invalid_token`, `revoked`, ...).
        code: String,
        /// Why.
        description: String,
    },
    /// The answer was not what the CA sends.
    #[error("unexpected answer from the authority: {0}")]
    BadAnswer(String),
    /// A local failure (key generation, configuration).
    #[error("{0}")]
    Local(String),
}

/// An X.509-SVID with its private key.
pub struct Svid {
    /// The SPIFFE ID.
    pub id: SpiffeId,
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    key: Zeroizing<Vec<u8>>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

impl std::fmt::Debug for Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Svid")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .field("key", &"**REDACTED**")
            .finish()
    }
}

impl Svid {
    /// The private key (PKCS#8).
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.to_vec()))
    }

    /// The private key, PKCS#8 DER (for the Workload API).
    pub fn private_key_der(&self) -> &[u8] {
        &self.key
    }
}

/// How the agent's identity stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The SVID is current and the last renewal (or issuance) worked.
    Fresh,
    /// The SVID is still valid but renewing it failed: the authority is unreachable or
    /// refused. `since` is when the first failure in a row happened (Unix seconds).
    Stale {
        /// First failure in a row.
        since: i64,
        /// The last error.
        error: String,
    },
    /// The SVID has expired and no new one could be had.
    Expired,
}

/// What the agent needs.
#[derive(Clone)]
pub struct AgentOptions {
    /// The authority.
    pub authority: AuthorityClient,
    /// The trust domain the SVID must belong to.
    pub trust_domain: TrustDomain,
    /// The one-time join token.
    pub join_token: Zeroizing<String>,
    /// The fraction of an SVID's life after which it is renewed (0.5).
    pub renew_at: f64,
    /// Where the SVID, its key and the bundle are kept across restarts (see [`state`]);
    /// `None`: in memory only.
    pub state_dir: Option<std::path::PathBuf>,
}

/// The identity agent.
pub struct Agent {
    opts: AgentOptions,
    svid: watch::Sender<Arc<Svid>>,
    bundle: Arc<BundleSource>,
    bundle_doc: ArcSwap<Value>,
    /// Federated trust domains' bundle documents.
    federated_docs: ArcSwap<BTreeMap<TrustDomain, Value>>,
    /// Bumped whenever the SVID or a bundle changes (the Workload API's streams follow it).
    updates: watch::Sender<u64>,
    health: ArcSwap<Health>,
    /// The current SVID as rustls serves it.
    certified: ArcSwap<rustls::sign::CertifiedKey>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("svid", &*self.svid.borrow())
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn new_key() -> Result<(KeyPair, Vec<u8>), AgentError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AgentError::Local(format!("key generation: {e}")))?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .map_err(|e| AgentError::Local(format!("CSR: {e}")))?;
    Ok((key, csr.der().to_vec()))
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

impl Agent {
    /// Gets the first SVID and starts renewing it and refreshing the bundle. With a
    /// `state_dir` holding an SVID that has not expired, that one is renewed with its own key
    /// (and served while the authority cannot be reached); otherwise the join token gets a
    /// new one. Fails when no SVID can be had (a sidecar without an identity does not start).
    pub async fn start(opts: AgentOptions) -> Result<Arc<Agent>, AgentError> {
        if let Some(dir) = &opts.state_dir {
            state::prepare(dir)?;
            match state::load(dir) {
                Ok(Some(stored)) => match Self::resume(&opts, stored).await {
                    Ok(agent) => return Ok(Self::run(agent)),
                    Err(e) if opts.join_token.is_empty() => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "the stored identity cannot be used; joining with the join token");
                    }
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "ignoring the stored identity"),
            }
        }
        if opts.join_token.is_empty() {
            return Err(AgentError::Local(
                "no usable stored identity and no join token (sidecar.join_token)".into(),
            ));
        }
        let (key, csr) = new_key()?;
        let answer = opts
            .authority
            .post_json(
                "/ca/v1/svid",
                &json!({ "join_token": opts.join_token.as_str(), "csr": b64(&csr) }),
            )
            .await?;
        let svid = Self::svid_from(&opts.trust_domain, &answer, key.serialize_der())?;
        let bundle_doc = answer.get("bundle").cloned().unwrap_or(Value::Null);
        let agent = Self::assemble(opts, svid, bundle_doc)?;
        agent.save();
        tracing::info!(spiffe_id = %agent.current().id, not_after = agent.current().not_after, "obtained an X.509-SVID");
        Ok(Self::run(agent))
    }

    fn assemble(
        opts: AgentOptions,
        svid: Svid,
        bundle_doc: Value,
    ) -> Result<Arc<Agent>, AgentError> {
        let roots = Self::roots_of(&opts.trust_domain, &bundle_doc)?;
        Ok(Arc::new(Agent {
            certified: ArcSwap::new(certified(&svid)?),
            bundle: BundleSource::new(opts.trust_domain.clone(), roots),
            bundle_doc: ArcSwap::from_pointee(bundle_doc),
            federated_docs: ArcSwap::from_pointee(BTreeMap::new()),
            updates: watch::channel(0).0,
            svid: watch::channel(Arc::new(svid)).0,
            health: ArcSwap::from_pointee(Health::Fresh),
            opts,
        }))
    }

    /// Takes up a stored SVID: renews it at once, or, while the authority cannot be
    /// reached, keeps serving with it (stale) until a renewal works.
    async fn resume(opts: &AgentOptions, stored: state::Stored) -> Result<Arc<Agent>, AgentError> {
        let leaf = stored
            .chain
            .first()
            .ok_or_else(|| AgentError::Local("stored SVID is empty".into()))?;
        let id = warden_identity::svid::leaf_id(leaf)
            .map_err(|e| AgentError::Local(format!("stored SVID: {e}")))?;
        if !id.is_member_of(&opts.trust_domain) {
            return Err(AgentError::Local(format!(
                "stored SVID {id} is not in trust domain {}",
                opts.trust_domain
            )));
        }
        let (not_before, not_after) = validity(leaf)?;
        if not_after <= unix_now() {
            return Err(AgentError::Local(format!("stored SVID {id} has expired")));
        }
        let svid = Svid {
            id,
            chain: stored.chain,
            key: stored.key,
            not_before,
            not_after,
        };
        certified(&svid)?
            .keys_match()
            .map_err(|e| AgentError::Local(format!("stored SVID and key: {e}")))?;
        let agent = Self::assemble(opts.clone(), svid, stored.bundle)?;
        match agent.renew().await {
            Ok(()) => {
                tracing::info!(spiffe_id = %agent.current().id, "took up the stored identity and renewed it");
            }
            Err(AgentError::Unreachable(e)) => {
                tracing::warn!(spiffe_id = %agent.current().id, not_after = agent.current().not_after, error = %e,
                    "the authority is unreachable: serving with the stored SVID until a renewal works");
                agent.health.store(Arc::new(Health::Stale {
                    since: unix_now(),
                    error: format!("authority unreachable: {e}"),
                }));
            }
            Err(e) => return Err(e),
        }
        Ok(agent)
    }

    /// Starts the renewal and bundle loops.
    fn run(agent: Arc<Agent>) -> Arc<Agent> {
        tokio::spawn(Self::renew_loop(Arc::downgrade(&agent)));
        tokio::spawn(Self::bundle_loop(Arc::downgrade(&agent)));
        let first = agent.clone();
        // Federated bundles are best effort at start: the own domain works without them,
        // and the bundle loop tries again.
        tokio::spawn(async move {
            if let Err(e) = first.refresh_federated().await {
                tracing::warn!(error = %e, "cannot fetch the federated bundles yet");
            }
        });
        agent
    }

    /// Stores the SVID and the bundle in the state directory, if there is one. A failure is
    /// logged: the identity in memory stays good, only a restart would need a join token.
    fn save(&self) {
        let Some(dir) = &self.opts.state_dir else {
            return;
        };
        let svid = self.current();
        let saved = state::save_svid(dir, &svid.chain, &svid.key)
            .and_then(|()| state::save_bundle(dir, &self.bundle_doc.load()));
        if let Err(e) = saved {
            tracing::error!(error = %e, "cannot store the identity; a restart will need a new join token");
        }
    }

    /// The current SVID.
    pub fn current(&self) -> Arc<Svid> {
        self.svid.borrow().clone()
    }

    /// A receiver that sees every new SVID.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Svid>> {
        self.svid.subscribe()
    }

    /// The trust bundle's roots, as the SPIFFE verifiers read them.
    pub fn bundle(&self) -> Arc<BundleSource> {
        self.bundle.clone()
    }

    /// The trust bundle document (SPIFFE JWK set), as last fetched.
    pub fn bundle_document(&self) -> Arc<Value> {
        self.bundle_doc.load_full()
    }

    /// The federated trust domains' bundle documents, as last fetched.
    pub fn federated_documents(&self) -> Arc<BTreeMap<TrustDomain, Value>> {
        self.federated_docs.load_full()
    }

    /// A receiver that sees every change of the SVID or of a bundle.
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.updates.subscribe()
    }

    fn changed(&self) {
        self.updates.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How the identity stands now.
    pub fn health(&self) -> Health {
        let h = self.health.load();
        if self.current().not_after <= unix_now() {
            return Health::Expired;
        }
        h.as_ref().clone()
    }

    fn svid_from(td: &TrustDomain, answer: &Value, key: Vec<u8>) -> Result<Svid, AgentError> {
        let pem = answer
            .get("svid")
            .and_then(Value::as_str)
            .ok_or_else(|| AgentError::BadAnswer("no `svid`".into()))?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| AgentError::BadAnswer(format!("svid PEM: {e}")))?;
        let leaf = chain
            .first()
            .ok_or_else(|| AgentError::BadAnswer("empty svid".into()))?;
        let id = warden_identity::svid::leaf_id(leaf)
            .map_err(|e| AgentError::BadAnswer(format!("svid: {e}")))?;
        if !id.is_member_of(td) {
            return Err(AgentError::BadAnswer(format!(
                "svid {id} is not in trust domain {td}"
            )));
        }
        let (not_before, not_after) = validity(leaf)?;
        Ok(Svid {
            id,
            chain,
            key: Zeroizing::new(key),
            not_before,
            not_after,
        })
    }

    fn roots_of(td: &TrustDomain, doc: &Value) -> Result<Vec<Vec<u8>>, AgentError> {
        let bytes = serde_json::to_vec(doc).map_err(|e| AgentError::BadAnswer(e.to_string()))?;
        let b = Bundle::parse(td.clone(), &bytes)
            .map_err(|e| AgentError::BadAnswer(format!("bundle: {e}")))?;
        if b.x509_authorities.is_empty() {
            return Err(AgentError::BadAnswer(
                "bundle has no X.509 authority".into(),
            ));
        }
        Ok(b.x509_authorities)
    }

    /// Renews now: a new key, proved by the current one.
    pub async fn renew(&self) -> Result<(), AgentError> {
        let current = self.current();
        let (key, csr) = new_key()?;
        let (chain_pem, proof) = proved(&current, &warden_identity::proof::renew_message(&csr))?;
        let answer = self
            .opts
            .authority
            .post_json(
                "/ca/v1/svid/renew",
                &json!({ "svid": chain_pem, "csr": b64(&csr), "proof": URL_SAFE_NO_PAD.encode(proof) }),
            )
            .await?;
        let svid = Self::svid_from(&self.opts.trust_domain, &answer, key.serialize_der())?;
        if svid.id != current.id {
            return Err(AgentError::BadAnswer(format!(
                "renewal answered for {}, not {}",
                svid.id, current.id
            )));
        }
        if let Some(doc) = answer.get("bundle") {
            self.apply_bundle(doc);
        }
        tracing::info!(spiffe_id = %svid.id, not_after = svid.not_after, "renewed the X.509-SVID");
        self.certified.store(certified(&svid)?);
        self.svid.send_replace(Arc::new(svid));
        self.health.store(Arc::new(Health::Fresh));
        self.changed();
        self.save();
        Ok(())
    }

    /// A JWT-SVID for `audience`, signed by the authority's token service, proving this
    /// workload with its current X.509-SVID.
    pub async fn fetch_jwt_svid(&self, audience: &[String]) -> Result<String, AgentError> {
        let iat = unix_now();
        let msg = warden_identity::proof::jwt_svid_message(iat, audience);
        let (chain_pem, proof) = proved(&self.current(), &msg)?;
        let answer = self
            .opts
            .authority
            .post_json(
                "/ca/v1/jwt-svid",
                &json!({
                    "svid": chain_pem,
                    "audience": audience,
                    "iat": iat,
                    "proof": URL_SAFE_NO_PAD.encode(proof),
                }),
            )
            .await?;
        answer
            .get("token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| AgentError::BadAnswer("no `token`".into()))
    }

    /// Validates a JWT-SVID against the bundle's JWT authorities: its signature (by `kid`,
    /// an asymmetric algorithm that fits the key), `exp`, that `audience` is among its `aud`,
    /// and that `sub` is a SPIFFE ID of the trust domain. Returns the ID and the claims.
    pub fn validate_jwt_svid(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<(SpiffeId, serde_json::Map<String, Value>), String> {
        use warden_crypto::jws::{b64url_decode, Alg, Jwk};
        let parts: Vec<&str> = token.split('.').collect();
        let [h, c, s] = parts.as_slice() else {
            return Err("not a compact JWS".into());
        };
        let json = |p: &str| -> Result<Value, String> {
            let bytes = b64url_decode(p.as_bytes()).ok_or("bad base64url")?;
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())
        };
        let header = json(h)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(Alg::parse)
            .filter(|a| !a.is_hmac())
            .ok_or("alg missing, unknown or symmetric")?;
        let kid = header.get("kid").and_then(Value::as_str).ok_or("no kid")?;
        // The bundle is chosen by the trust domain `sub` names: this domain's, or a
        // federated one's (the claims count only once the signature verifies with it).
        let unverified = json(c)?;
        let sub = unverified
            .get("sub")
            .and_then(Value::as_str)
            .ok_or("no sub")?;
        let id = SpiffeId::parse(sub).map_err(|e| format!("sub {e}"))?;
        let doc = if id.is_member_of(&self.opts.trust_domain) {
            self.bundle_document()
        } else {
            let federated = self.federated_documents();
            let doc = federated
                .iter()
                .find(|(td, _)| id.is_member_of(td))
                .map(|(_, d)| d.clone())
                .ok_or_else(|| format!("{id} is of a trust domain with no bundle here"))?;
            Arc::new(doc)
        };
        let jwk = doc
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|k| {
                k.get("use").and_then(Value::as_str) == Some("jwt-svid")
                    && k.get("kid").and_then(Value::as_str) == Some(kid)
            })
            .ok_or_else(|| format!("no JWT authority with kid {kid:?} in the bundle"))?;
        let mut jwk = jwk.clone();
        if let Some(o) = jwk.as_object_mut() {
            o.remove("use");
        }
        let key = Jwk::from_json(&jwk).map_err(|e| e.to_string())?;
        let sig = b64url_decode(s.as_bytes()).ok_or("bad signature encoding")?;
        let signed = &token[..h.len() + 1 + c.len()];
        if !key.key.verify(alg, signed.as_bytes(), &sig) {
            return Err("signature does not verify".into());
        }
        let claims = match json(c)? {
            Value::Object(m) => m,
            _ => return Err("claims are not an object".into()),
        };
        let exp = claims.get("exp").and_then(Value::as_i64).ok_or("no exp")?;
        if exp <= unix_now() {
            return Err("expired".into());
        }
        let auds: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !auds.contains(&audience) {
            return Err(format!("audience {audience:?} not in aud"));
        }
        Ok((id, claims))
    }

    fn apply_bundle(&self, doc: &Value) {
        if **self.bundle_doc.load() == *doc {
            return;
        }
        match Self::roots_of(&self.opts.trust_domain, doc) {
            Ok(roots) => {
                self.bundle.update(roots);
                self.bundle_doc.store(Arc::new(doc.clone()));
                self.changed();
                self.save();
            }
            Err(e) => tracing::warn!(error = %e, "ignored a trust bundle"),
        }
    }

    /// Fetches the bundle and the federated bundles now.
    pub async fn refresh_bundle(&self) -> Result<(), AgentError> {
        let doc = self.opts.authority.get_json("/ca/v1/bundle").await?;
        self.apply_bundle(&doc);
        self.refresh_federated().await
    }

    /// Fetches the federated trust domains' bundles: each that checks out replaces the one
    /// held (one that does not keeps the last good one); a domain no longer listed is
    /// dropped.
    async fn refresh_federated(&self) -> Result<(), AgentError> {
        let answer = self
            .opts
            .authority
            .get_json("/ca/v1/bundles/federated")
            .await?;
        let listed = answer
            .get("bundles")
            .and_then(Value::as_object)
            .ok_or_else(|| AgentError::BadAnswer("no `bundles` object".into()))?;
        let held = self.federated_docs.load_full();
        let mut docs = BTreeMap::new();
        let mut roots = BTreeMap::new();
        for (name, doc) in listed {
            let Ok(td) = TrustDomain::new(name) else {
                tracing::warn!(trust_domain = %name, "ignored a federated bundle with a bad name");
                continue;
            };
            if td == self.opts.trust_domain {
                continue;
            }
            let doc = match Self::roots_of(&td, doc) {
                Ok(_) => doc,
                Err(e) => {
                    tracing::warn!(trust_domain = %td, error = %e, "ignored a federated bundle");
                    match held.get(&td) {
                        Some(old) => old,
                        None => continue,
                    }
                }
            };
            if let Ok(r) = Self::roots_of(&td, doc) {
                roots.insert(td.clone(), r);
                docs.insert(td, doc.clone());
            }
        }
        if *held != docs {
            self.bundle.update_federated(roots);
            self.federated_docs.store(Arc::new(docs));
            self.changed();
        }
        Ok(())
    }

    fn renew_delay(&self, svid: &Svid) -> Duration {
        let life = (svid.not_after - svid.not_before).max(1) as f64;
        let mut b = [0u8; 2];
        let _ = SystemRandom::new().fill(&mut b);
        // ± a tenth of the life.
        let jitter = (f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) - 0.5) * 0.2 * life;
        let at = svid.not_before as f64 + life * self.opts.renew_at + jitter;
        Duration::from_secs_f64((at - unix_now() as f64).max(0.0))
    }

    async fn renew_loop(agent: std::sync::Weak<Agent>) {
        loop {
            let delay = match agent.upgrade() {
                Some(a) => a.renew_delay(&a.current()),
                None => return,
            };
            tokio::time::sleep(delay).await;
            let mut backoff = Duration::from_secs(1);
            loop {
                let Some(a) = agent.upgrade() else { return };
                match a.renew().await {
                    Ok(()) => break,
                    Err(e) => {
                        let since = match a.health.load().as_ref() {
                            Health::Stale { since, .. } => *since,
                            _ => unix_now(),
                        };
                        let left = a.current().not_after - unix_now();
                        tracing::warn!(error = %e, seconds_left = left, "cannot renew the X.509-SVID; retrying");
                        a.health.store(Arc::new(Health::Stale {
                            since,
                            error: e.to_string(),
                        }));
                    }
                }
                drop(a);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }

    async fn bundle_loop(agent: std::sync::Weak<Agent>) {
        loop {
            let every = match agent.upgrade() {
                Some(a) => a
                    .bundle_doc
                    .load()
                    .get("spiffe_refresh_hint")
                    .and_then(Value::as_u64)
                    .unwrap_or(300)
                    .clamp(1, 3600),
                None => return,
            };
            tokio::time::sleep(Duration::from_secs(every)).await;
            let Some(a) = agent.upgrade() else { return };
            if let Err(e) = a.refresh_bundle().await {
                tracing::warn!(error = %e, "cannot refresh the trust bundle; keeping the last one");
            }
        }
    }
}

/// The SVID's chain as PEM and its key's signature over `msg`: how the workload proves
/// itself to the CA.
fn proved(svid: &Svid, msg: &[u8]) -> Result<(String, Vec<u8>), AgentError> {
    let key = KeyPair::try_from(svid.key.as_slice())
        .map_err(|e| AgentError::Local(format!("current key: {e}")))?;
    let proof = key
        .sign(msg)
        .map_err(|e| AgentError::Local(format!("proof: {e}")))?;
    let chain_pem = svid
        .chain
        .iter()
        .map(|c| warden_identity::ca::pem_cert(c))
        .collect();
    Ok((chain_pem, proof))
}

/// The SVID as rustls serves it (the key loaded by Warden's crypto provider).
fn certified(svid: &Svid) -> Result<Arc<rustls::sign::CertifiedKey>, AgentError> {
    let key = warden_crypto::provider()
        .key_provider
        .load_private_key(svid.private_key())
        .map_err(|e| AgentError::Local(format!("SVID key: {e}")))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        svid.chain.clone(),
        key,
    )))
}

impl warden_identity::tls::WorkloadIdentity for Agent {
    fn certified_key(&self) -> Option<Arc<rustls::sign::CertifiedKey>> {
        // An expired SVID is not served: the sidecar refuses rather than present it.
        (self.current().not_after > unix_now()).then(|| self.certified.load_full())
    }

    fn bundle(&self) -> Arc<BundleSource> {
        self.bundle.clone()
    }

    fn spiffe_id(&self) -> Option<SpiffeId> {
        Some(self.current().id.clone())
    }

    fn status(&self) -> warden_identity::tls::IdentityStatus {
        let (since, error) = match self.health.load().as_ref() {
            Health::Stale { since, error } => (Some(*since), Some(error.clone())),
            _ => (None, None),
        };
        warden_identity::tls::IdentityStatus {
            not_after: Some(self.current().not_after),
            renewal_failing_since: since,
            last_error: error,
        }
    }
}

fn validity(leaf: &[u8]) -> Result<(i64, i64), AgentError> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf)
        .map_err(|e| AgentError::BadAnswer(format!("svid: {e}")))?;
    Ok((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}
