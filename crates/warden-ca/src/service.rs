//! The CA service: registration, join tokens, issuance, renewal, rotation, the bundle.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};
use warden_identity::ca::BACKDATE_SECS;
use warden_identity::{csr, svid, SpiffeId};
use warden_store::{AuditEvent, Op, Store, StoreError};
use x509_parser::oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};
use x509_parser::prelude::FromDer;

use crate::error::CaServiceError;
use crate::keys::KeyRing;
use crate::registry::{self, Entry, JoinRecord, JoinToken, ENTRIES};
use warden_identity::CaSettings;

/// What a renewal's proof signs, before the new CSR's DER: the workload signs
/// `RENEW_CONTEXT || csr` with the key of its current SVID (ECDSA P-256 with SHA-256, DER
/// signature; or Ed25519).
pub use warden_identity::proof::RENEW_CONTEXT;

/// An issued SVID, as handed to the workload.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Its identity.
    pub spiffe_id: SpiffeId,
    /// Leaf first, then the intermediate, DER.
    pub chain: Vec<Vec<u8>>,
    /// The same chain as PEM.
    pub chain_pem: String,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Serial, hex.
    pub serial: String,
}

/// The certificate authority.
pub struct Ca {
    settings: CaSettings,
    pub(crate) store: Store,
    ring: ArcSwap<KeyRing>,
    jwt: ArcSwap<Vec<Value>>,
    bundle: ArcSwap<Value>,
    pub(crate) federated: ArcSwap<crate::federation::FederatedBundles>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.settings.trust_domain)
            .finish_non_exhaustive()
    }
}

fn invalid(e: impl std::fmt::Display) -> CaServiceError {
    CaServiceError::Invalid(e.to_string())
}

impl Ca {
    /// Opens the CA on an unsealed store: loads its keys, making a root and an intermediate
    /// on first use.
    pub async fn open(
        store: Store,
        settings: CaSettings,
        now: i64,
    ) -> Result<Arc<Ca>, CaServiceError> {
        settings
            .validate()
            .map_err(|(field, why)| CaServiceError::Invalid(format!("{field} {why}")))?;
        let (ring, changed) = KeyRing::step(&store, &settings, now).await?;
        let bundle = ring
            .bundle(&settings, Vec::new())
            .to_json()
            .map_err(invalid)?;
        let ca = Arc::new(Ca {
            settings,
            store,
            ring: ArcSwap::from_pointee(ring),
            jwt: ArcSwap::from_pointee(Vec::new()),
            bundle: ArcSwap::from_pointee(bundle),
            federated: ArcSwap::from_pointee(Default::default()),
        });
        ca.federated.store(Arc::new(ca.load_federated().await?));
        if changed {
            ca.audit_rotation().await?;
        }
        Ok(ca)
    }

    async fn audit_rotation(&self) -> Result<(), StoreError> {
        let (roots, sequence) = {
            let ring = self.ring.load();
            (ring.root_certs.len(), ring.sequence)
        };
        self.audit(
            "ca.rotate",
            "system",
            None,
            true,
            json!({ "roots": roots, "sequence": sequence }),
            None,
        )
        .await
    }

    /// One rotation step (see [`crate::keys`]); reloads the keys, which also picks up what
    /// another authority on the same database rotated.
    pub async fn tick(&self, now: i64) -> Result<(), CaServiceError> {
        let (ring, changed) = KeyRing::step(&self.store, &self.settings, now).await?;
        self.ring.store(Arc::new(ring));
        self.rebuild_bundle();
        if changed {
            self.audit_rotation().await?;
        }
        self.sweep_join_tokens(now).await
    }

    /// Deletes join tokens that expired without being used.
    async fn sweep_join_tokens(&self, now: i64) -> Result<(), CaServiceError> {
        for key in self.store.list(registry::JOIN).await? {
            let Some(raw) = self.store.get(&key).await? else {
                continue;
            };
            let expired =
                serde_json::from_slice::<JoinRecord>(&raw).map_or(true, |r| r.expires_at <= now);
            if expired {
                self.store.delete(&key).await?;
            }
        }
        Ok(())
    }

    /// The settings.
    pub fn settings(&self) -> &CaSettings {
        &self.settings
    }

    /// The trust bundle, SPIFFE's JWK set.
    pub fn bundle(&self) -> Arc<Value> {
        self.bundle.load_full()
    }

    /// The bundle's root certificates, DER.
    pub fn roots(&self) -> Vec<Vec<u8>> {
        self.ring.load().root_certs.clone()
    }

    /// When the signing intermediate expires (Unix seconds), if there is one.
    pub fn signer_expiry(&self) -> Option<i64> {
        self.ring
            .load()
            .signer
            .as_ref()
            .map(|s| s.key().not_after())
    }

    /// The CA's certificates now, for the admin console: the trust domain, each own root and
    /// intermediate with its validity (Unix seconds), and when the signing one expires.
    pub fn summary(&self) -> Value {
        let ring = self.ring.load();
        let validity = |slots: &[crate::keys::Slot]| -> Vec<Value> {
            slots
                .iter()
                .map(|s| {
                    json!({
                        "not_before": s.key.not_before(),
                        "not_after": s.key.not_after(),
                        "activates_at": s.activates_at,
                    })
                })
                .collect()
        };
        json!({
            "trust_domain": self.settings.trust_domain.to_string(),
            "roots": validity(&ring.roots),
            "intermediates": validity(&ring.intermediates),
            "upstream": !ring.upstream_chain.is_empty(),
            "signer_expires_at": self.signer_expiry(),
            "bundle_sequence": ring.sequence,
        })
    }

    /// Sets the bundle's JWT authorities (the token service's JWT-SVID keys).
    pub fn set_jwt_authorities(&self, keys: Vec<Value>) {
        self.jwt.store(Arc::new(keys));
        self.rebuild_bundle();
    }

    fn rebuild_bundle(&self) {
        let ring = self.ring.load();
        let jwt = self.jwt.load().as_ref().clone();
        match ring.bundle(&self.settings, jwt).to_json() {
            Ok(b) => self.bundle.store(Arc::new(b)),
            Err(e) => tracing::error!(error = %e, "CA: cannot build the trust bundle"),
        }
    }

    pub(crate) async fn audit(
        &self,
        action: &str,
        actor: &str,
        subject: Option<String>,
        success: bool,
        detail: Value,
        source: Option<&str>,
    ) -> Result<(), StoreError> {
        let event = event(action, actor, subject, success, detail, source);
        self.store.audit(&event).await.map(|_| ())
    }

    /// Audits a refusal and returns it.
    async fn refuse(
        &self,
        action: &str,
        subject: Option<String>,
        err: CaServiceError,
        source: Option<&str>,
    ) -> CaServiceError {
        let (_, code) = err.status();
        let detail = json!({ "error": code, "reason": err.to_string() });
        if let Err(e) = self
            .audit(action, "workload", subject, false, detail, source)
            .await
        {
            tracing::error!(error = %e, "CA: cannot audit a refusal");
        }
        err
    }

    /// Registers `spiffe_id` (in the CA's trust domain), optionally with its own SVID
    /// lifetime.
    pub async fn register(
        &self,
        spiffe_id: &str,
        svid_ttl: Option<i64>,
        now: i64,
        actor: &str,
        source: Option<&str>,
    ) -> Result<Entry, CaServiceError> {
        let id = SpiffeId::parse(spiffe_id)
            .map_err(|e| invalid(format!("spiffe_id {spiffe_id:?} {e}")))?;
        if !id.is_member_of(&self.settings.trust_domain) {
            return Err(invalid(format!(
                "spiffe_id {id} is outside this CA's trust domain {}",
                self.settings.trust_domain
            )));
        }
        if id.path().is_empty() {
            return Err(invalid(
                "spiffe_id must have a path (a workload, not the trust domain)",
            ));
        }
        if let Some(ttl) = svid_ttl {
            if ttl < 60 || ttl > self.settings.max_svid_ttl {
                return Err(invalid(format!(
                    "svid_ttl must be between 60 and {} seconds",
                    self.settings.max_svid_ttl
                )));
            }
        }
        let entry = Entry {
            id: registry::entry_id(&id),
            spiffe_id: id,
            svid_ttl,
            created: now,
            revoked_at: None,
        };
        let key = format!("{ENTRIES}{}", entry.id);
        let previous = self.store.get(&key).await?;
        let value = serde_json::to_vec(&entry).map_err(invalid)?;
        let op = match &previous {
            // A revoked registration may be registered again; it starts afresh.
            Some(raw) => {
                let old: Entry = serde_json::from_slice(raw)
                    .map_err(|e| CaServiceError::Corrupt(e.to_string()))?;
                if !old.is_revoked() {
                    return Err(CaServiceError::Conflict(format!(
                        "{} is already registered (entry {})",
                        entry.spiffe_id, entry.id
                    )));
                }
                Op::Put { key, value }
            }
            None => Op::PutIfAbsent { key, value },
        };
        let event = event(
            "workload.register",
            actor,
            Some(entry.spiffe_id.to_string()),
            true,
            json!({ "entry": entry.id, "svid_ttl": entry.svid_ttl }),
            source,
        );
        match self.store.transact_audited(vec![op], &event).await {
            Ok(_) => Ok(entry),
            Err(StoreError::Conflict) => Err(CaServiceError::Conflict(format!(
                "{} is already registered",
                entry.spiffe_id
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Every registration, by SPIFFE ID.
    pub async fn list(&self) -> Result<Vec<Entry>, CaServiceError> {
        let mut out = Vec::new();
        for key in self.store.list(ENTRIES).await? {
            if let Some(raw) = self.store.get(&key).await? {
                out.push(
                    serde_json::from_slice::<Entry>(&raw)
                        .map_err(|e| CaServiceError::Corrupt(e.to_string()))?,
                );
            }
        }
        out.sort_by(|a, b| a.spiffe_id.cmp(&b.spiffe_id));
        Ok(out)
    }

    /// One registration by entry id (or by SPIFFE ID).
    pub async fn get(&self, id: &str) -> Result<Entry, CaServiceError> {
        let entry_id = match SpiffeId::parse(id) {
            Ok(sid) => registry::entry_id(&sid),
            Err(_) => id.to_owned(),
        };
        if entry_id.is_empty()
            || entry_id.len() > 64
            || !entry_id.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(CaServiceError::NotFound);
        }
        let raw = self
            .store
            .get(&format!("{ENTRIES}{entry_id}"))
            .await?
            .ok_or(CaServiceError::NotFound)?;
        serde_json::from_slice(&raw).map_err(|e| CaServiceError::Corrupt(e.to_string()))
    }

    /// Revokes a registration: it gets no join token and no renewal from now on.
    pub async fn revoke(
        &self,
        id: &str,
        now: i64,
        actor: &str,
        source: Option<&str>,
    ) -> Result<Entry, CaServiceError> {
        let mut entry = self.get(id).await?;
        if entry.revoked_at.is_none() {
            entry.revoked_at = Some(now);
            let event = event(
                "workload.revoke",
                actor,
                Some(entry.spiffe_id.to_string()),
                true,
                json!({ "entry": entry.id }),
                source,
            );
            let op = Op::Put {
                key: format!("{ENTRIES}{}", entry.id),
                value: serde_json::to_vec(&entry).map_err(invalid)?,
            };
            self.store.transact_audited(vec![op], &event).await?;
        }
        Ok(entry)
    }

    /// Makes a one-time join token for a registration, valid `ttl` seconds (the default
    /// when `None`).
    pub async fn join_token(
        &self,
        id: &str,
        ttl: Option<i64>,
        now: i64,
        actor: &str,
        source: Option<&str>,
    ) -> Result<JoinToken, CaServiceError> {
        let ttl = ttl.unwrap_or(self.settings.join_token_ttl);
        if ttl < 1 || ttl > self.settings.max_join_token_ttl {
            return Err(invalid(format!(
                "ttl must be between 1 and {} seconds",
                self.settings.max_join_token_ttl
            )));
        }
        let entry = self.get(id).await?;
        if entry.is_revoked() {
            return Err(CaServiceError::refused(
                "revoked",
                format!("{} is revoked", entry.spiffe_id),
            ));
        }
        let token =
            registry::new_token().ok_or_else(|| CaServiceError::Corrupt("no randomness".into()))?;
        let record = JoinRecord {
            entry: entry.id.clone(),
            expires_at: now + ttl,
        };
        let event = event(
            "join_token.create",
            actor,
            Some(entry.spiffe_id.to_string()),
            true,
            json!({ "entry": entry.id, "expires_at": record.expires_at }),
            source,
        );
        let op = Op::PutIfAbsent {
            key: registry::join_key(&token),
            value: serde_json::to_vec(&record).map_err(invalid)?,
        };
        self.store.transact_audited(vec![op], &event).await?;
        Ok(JoinToken {
            token,
            entry: entry.id,
            spiffe_id: entry.spiffe_id,
            expires_at: record.expires_at,
        })
    }

    /// Issues the first SVID of a workload that presents a join token. The token is used up
    /// only when the SVID is issued: a CSR refused for its content leaves it for a corrected
    /// one, so a workload's mistake does not cost it the token.
    pub async fn issue_with_join_token(
        &self,
        token: &str,
        csr_der: &[u8],
        now: i64,
        source: Option<&str>,
    ) -> Result<Issued, CaServiceError> {
        const ACTION: &str = "svid.issue";
        let unknown =
            || CaServiceError::refused("invalid_token", "join token unknown, used or expired");
        if token.is_empty() || token.len() > 128 {
            return Err(self.refuse(ACTION, None, unknown(), source).await);
        }
        let key = registry::join_key(token);
        let Some(raw) = self.store.get(&key).await? else {
            return Err(self.refuse(ACTION, None, unknown(), source).await);
        };
        let record: JoinRecord =
            serde_json::from_slice(&raw).map_err(|e| CaServiceError::Corrupt(e.to_string()))?;
        if record.expires_at <= now {
            self.store.delete(&key).await?;
            let e = CaServiceError::refused("invalid_token", "join token expired");
            return Err(self.refuse(ACTION, None, e, source).await);
        }
        let entry = match self.get(&record.entry).await {
            Ok(e) => e,
            Err(CaServiceError::NotFound) => {
                self.store.delete(&key).await?;
                return Err(self.refuse(ACTION, None, unknown(), source).await);
            }
            Err(e) => return Err(e),
        };
        let subject = Some(entry.spiffe_id.to_string());
        if entry.is_revoked() {
            self.store.delete(&key).await?;
            let e = CaServiceError::refused("revoked", format!("{} is revoked", entry.spiffe_id));
            return Err(self.refuse(ACTION, subject, e, source).await);
        }
        if let Err(e) = csr::check(csr_der, &entry.spiffe_id) {
            let e = CaServiceError::Invalid(format!("csr: {e}"));
            return Err(self.refuse(ACTION, subject, e, source).await);
        }
        // Whoever deletes it uses it: of two presentations at once, one issues.
        if !self.store.delete(&key).await? {
            return Err(self.refuse(ACTION, subject, unknown(), source).await);
        }
        self.issue_for_entry(&entry, csr_der, now, "join_token", source)
            .await
    }

    /// Renews a workload's SVID: `chain` (leaf first) must be a valid SVID of this CA for a
    /// registered, unrevoked workload, issued since its registration, and `proof` its key's
    /// signature over [`RENEW_CONTEXT`] and the new CSR.
    pub async fn renew(
        &self,
        chain: &[Vec<u8>],
        csr_der: &[u8],
        proof: &[u8],
        now: i64,
        source: Option<&str>,
    ) -> Result<Issued, CaServiceError> {
        let signed = warden_identity::proof::renew_message(csr_der);
        let entry = self
            .authenticate("svid.renew", chain, &signed, proof, now, source)
            .await?;
        self.issue_for_entry(&entry, csr_der, now, "renewal", source)
            .await
    }

    /// Checks that `chain` (leaf first) is a valid SVID of this CA for a registered,
    /// unrevoked workload, issued since its registration, and that `proof` is its key's
    /// signature over `signed`; returns the registration. A refusal is audited as `action`.
    pub async fn authenticate(
        &self,
        action: &str,
        chain: &[Vec<u8>],
        signed: &[u8],
        proof: &[u8],
        now: i64,
        source: Option<&str>,
    ) -> Result<Entry, CaServiceError> {
        let Some(leaf) = chain.first() else {
            let e = CaServiceError::refused("invalid_svid", "no certificate");
            return Err(self.refuse(action, None, e, source).await);
        };
        let id = {
            let ring = self.ring.load();
            let mut certs = vec![CertificateDer::from(leaf.clone())];
            certs.extend(
                ring.intermediates
                    .iter()
                    .map(|i| CertificateDer::from(i.key.cert_der().to_vec())),
            );
            certs.extend(
                ring.upstream_chain
                    .iter()
                    .cloned()
                    .map(CertificateDer::from),
            );
            let roots: Vec<_> = ring
                .root_certs
                .iter()
                .cloned()
                .map(CertificateDer::from)
                .collect();
            svid::verify(&certs, &self.settings.trust_domain, &roots, now, true)
        };
        let id = match id {
            Ok(id) => id,
            Err(e) => {
                let e = CaServiceError::refused("invalid_svid", format!("current SVID: {e}"));
                return Err(self.refuse(action, None, e, source).await);
            }
        };
        let subject = Some(id.to_string());
        let (issued_at, spki_alg, spki_key) = match leaf_key(leaf) {
            Some(x) => x,
            None => {
                let e = CaServiceError::refused("invalid_svid", "current SVID does not parse");
                return Err(self.refuse(action, subject, e, source).await);
            }
        };
        if ring::signature::UnparsedPublicKey::new(spki_alg, &spki_key)
            .verify(signed, proof)
            .is_err()
        {
            let e = CaServiceError::refused(
                "invalid_proof",
                "proof is not a signature by the current SVID's key over this request",
            );
            return Err(self.refuse(action, subject, e, source).await);
        }
        let entry = match self.get(id.as_str()).await {
            Ok(e) => e,
            Err(CaServiceError::NotFound) => {
                let e = CaServiceError::refused("revoked", format!("{id} is not registered"));
                return Err(self.refuse(action, subject, e, source).await);
            }
            Err(e) => return Err(e),
        };
        if entry.is_revoked() {
            let e = CaServiceError::refused("revoked", format!("{id} is revoked"));
            return Err(self.refuse(action, subject, e, source).await);
        }
        if issued_at < entry.created - BACKDATE_SECS {
            let e = CaServiceError::refused(
                "revoked",
                format!("current SVID predates {id}'s registration"),
            );
            return Err(self.refuse(action, subject, e, source).await);
        }
        Ok(entry)
    }

    /// Audits an event of the CA's (for issuance done elsewhere, such as JWT-SVIDs signed by
    /// the token service); a failure to audit fails the caller.
    pub async fn record(
        &self,
        action: &str,
        subject: &str,
        detail: Value,
        source: Option<&str>,
    ) -> Result<(), CaServiceError> {
        self.audit(
            action,
            "workload",
            Some(subject.to_owned()),
            true,
            detail,
            source,
        )
        .await
        .map_err(Into::into)
    }

    /// Audits a refusal of the CA's made elsewhere, and returns it.
    pub async fn refused(
        &self,
        action: &str,
        subject: Option<String>,
        err: CaServiceError,
        source: Option<&str>,
    ) -> CaServiceError {
        self.refuse(action, subject, err, source).await
    }

    /// Issues an SVID for `entry` over the key in `csr_der`, however the workload proved
    /// itself (`how`, recorded in the audit event).
    pub async fn issue_for_entry(
        &self,
        entry: &Entry,
        csr_der: &[u8],
        now: i64,
        how: &str,
        source: Option<&str>,
    ) -> Result<Issued, CaServiceError> {
        let action = if how == "renewal" {
            "svid.renew"
        } else {
            "svid.issue"
        };
        let subject = Some(entry.spiffe_id.to_string());
        if entry.is_revoked() {
            let e = CaServiceError::refused("revoked", format!("{} is revoked", entry.spiffe_id));
            return Err(self.refuse(action, subject, e, source).await);
        }
        let checked = match csr::check(csr_der, &entry.spiffe_id) {
            Ok(c) => c,
            Err(e) => {
                let e = CaServiceError::Invalid(format!("csr: {e}"));
                return Err(self.refuse(action, subject, e, source).await);
            }
        };
        let ttl = entry.svid_ttl.unwrap_or(self.settings.svid_ttl);
        let svid = {
            let ring = self.ring.load();
            let signer = ring.signer.as_ref().ok_or_else(|| {
                CaServiceError::Corrupt("the CA has no signing intermediate".into())
            })?;
            signer.issue(&checked, &entry.spiffe_id, now, ttl)?
        };
        // Audited before it is handed out: no audit, no certificate.
        self.audit(
            action,
            "workload",
            subject,
            true,
            json!({
                "entry": entry.id,
                "serial": svid.serial,
                "not_after": svid.not_after,
                "proof": how,
            }),
            source,
        )
        .await?;
        Ok(Issued {
            spiffe_id: svid.id.clone(),
            chain_pem: svid.chain_pem(),
            chain: svid.chain,
            not_after: svid.not_after,
            serial: svid.serial,
        })
    }
}

/// One of the CA's audit events.
fn event(
    action: &str,
    actor: &str,
    subject: Option<String>,
    success: bool,
    detail: Value,
    source: Option<&str>,
) -> AuditEvent {
    AuditEvent {
        component: "ca".into(),
        action: action.into(),
        actor: actor.into(),
        subject,
        outcome: if success { "success" } else { "failure" }.into(),
        detail,
        source: source.map(str::to_owned),
    }
}

/// The leaf's start of validity and public key, for checking a renewal's proof.
fn leaf_key(
    der: &[u8],
) -> Option<(
    i64,
    &'static dyn ring::signature::VerificationAlgorithm,
    Vec<u8>,
)> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let spki = cert.public_key();
    let alg: &'static dyn ring::signature::VerificationAlgorithm =
        if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
            &ring::signature::ECDSA_P256_SHA256_ASN1
        } else if spki.algorithm.algorithm == OID_SIG_ED25519 {
            &ring::signature::ED25519
        } else {
            return None;
        };
    Some((
        cert.validity().not_before.timestamp(),
        alg,
        spki.subject_public_key.data.to_vec(),
    ))
}
