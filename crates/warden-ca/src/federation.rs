//! Bundles of federated trust domains (SPIFFE Federation): the authority fetches each
//! configured trust domain's bundle from its bundle endpoint and hands it here; the CA checks
//! it, keeps it in the store under `ca/federation/<trust domain>` (so a restart or an outage
//! of the other domain's endpoint keeps the last good one), audits every change, and serves
//! the set to its workloads (`GET /ca/v1/bundles/federated`), whose sidecars then accept
//! peers of those trust domains verified against those roots only.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use warden_identity::bundle::Bundle;
use warden_identity::TrustDomain;

use crate::error::CaServiceError;
use crate::service::Ca;

/// Where federated bundles are kept.
pub const FEDERATION: &str = "ca/federation/";

/// A federated bundle as kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stored {
    /// The bundle document as the other domain served it.
    pub bundle: Value,
    /// When it was fetched (Unix seconds).
    pub fetched_at: i64,
}

/// One federated trust domain's bundle, as the CA holds it.
#[derive(Debug, Clone)]
pub struct Federated {
    /// The bundle, checked.
    pub bundle: Bundle,
    /// Its document (served to workloads as is).
    pub document: Value,
    /// When it was fetched (Unix seconds).
    pub fetched_at: i64,
}

/// The federated bundles, by trust domain.
pub type FederatedBundles = BTreeMap<TrustDomain, Federated>;

/// Checks `doc` as `td`'s bundle: a SPIFFE bundle with at least one X.509 authority.
pub fn check(td: &TrustDomain, doc: &[u8]) -> Result<(Bundle, Value), CaServiceError> {
    let bundle = Bundle::parse(td.clone(), doc)
        .map_err(|e| CaServiceError::Invalid(format!("bundle of {td}: {e}")))?;
    if bundle.x509_authorities.is_empty() {
        return Err(CaServiceError::Invalid(format!(
            "bundle of {td} has no X.509 authority"
        )));
    }
    let value = serde_json::from_slice(doc)
        .map_err(|e| CaServiceError::Invalid(format!("bundle of {td}: {e}")))?;
    Ok((bundle, value))
}

impl Ca {
    /// Loads the kept federated bundles (at open).
    pub(crate) async fn load_federated(&self) -> Result<FederatedBundles, CaServiceError> {
        let mut out = BTreeMap::new();
        for key in self.store.list(FEDERATION).await? {
            let name = key.strip_prefix(FEDERATION).unwrap_or(&key);
            let Ok(td) = TrustDomain::new(name) else {
                tracing::warn!(key, "CA: ignoring a federated bundle under a bad name");
                continue;
            };
            let Some(raw) = self.store.get(&key).await? else {
                continue;
            };
            let stored: Stored = serde_json::from_slice(&raw)
                .map_err(|e| CaServiceError::Corrupt(format!("{key}: {e}")))?;
            let doc = serde_json::to_vec(&stored.bundle)
                .map_err(|e| CaServiceError::Corrupt(format!("{key}: {e}")))?;
            let (bundle, document) =
                check(&td, &doc).map_err(|e| CaServiceError::Corrupt(format!("{key}: {e}")))?;
            out.insert(
                td,
                Federated {
                    bundle,
                    document,
                    fetched_at: stored.fetched_at,
                },
            );
        }
        Ok(out)
    }

    /// The federated bundles held now.
    pub fn federated_bundles(&self) -> Arc<FederatedBundles> {
        self.federated.load_full()
    }

    /// The federated bundles as served to workloads: `{"bundles": {"<td>": <JWK set>}}`.
    pub fn federated_document(&self) -> Value {
        let bundles: serde_json::Map<String, Value> = self
            .federated
            .load()
            .iter()
            .map(|(td, f)| (td.to_string(), f.document.clone()))
            .collect();
        json!({ "bundles": bundles })
    }

    /// Takes `doc`, just fetched from `td`'s bundle endpoint: checked, kept and audited when
    /// it differs from the one held (its authorities, not its refresh hint). Returns whether
    /// it changed. A bundle that fails its checks is refused (audited) and the last good one
    /// stays.
    pub async fn set_federated_bundle(
        &self,
        td: &TrustDomain,
        doc: &[u8],
        now: i64,
    ) -> Result<bool, CaServiceError> {
        if td == &self.settings().trust_domain {
            return Err(CaServiceError::Invalid(format!(
                "{td} is this CA's own trust domain"
            )));
        }
        let (bundle, document) = match check(td, doc) {
            Ok(b) => b,
            Err(e) => {
                let detail = json!({ "trust_domain": td.to_string(), "reason": e.to_string() });
                self.audit("ca.federation.refused", "system", None, false, detail, None)
                    .await?;
                return Err(e);
            }
        };
        let same = self.federated.load().get(td).is_some_and(|f| {
            f.bundle.x509_authorities == bundle.x509_authorities
                && f.bundle.jwt_authorities == bundle.jwt_authorities
        });
        let stored = Stored {
            bundle: document.clone(),
            fetched_at: now,
        };
        let raw =
            serde_json::to_vec(&stored).map_err(|e| CaServiceError::Invalid(e.to_string()))?;
        self.store.put(&format!("{FEDERATION}{td}"), &raw).await?;
        if !same {
            let detail = json!({
                "trust_domain": td.to_string(),
                "sequence": bundle.sequence,
                "x509_authorities": bundle.x509_authorities.len(),
                "jwt_authorities": bundle.jwt_authorities.len(),
            });
            self.audit("ca.federation.update", "system", None, true, detail, None)
                .await?;
        }
        let held = Federated {
            bundle,
            document,
            fetched_at: now,
        };
        // One fetcher per trust domain runs at once: read-copy-update, so two landing
        // together do not drop each other's bundle.
        self.federated.rcu(|current| {
            let mut next = current.as_ref().clone();
            next.insert(td.clone(), held.clone());
            next
        });
        Ok(!same)
    }

    /// Forgets federated trust domains not in `keep` (a config that no longer names them).
    pub async fn retain_federated(&self, keep: &[TrustDomain]) -> Result<(), CaServiceError> {
        let current = self.federated.load_full();
        for td in current.keys().filter(|td| !keep.contains(td)) {
            self.store.delete(&format!("{FEDERATION}{td}")).await?;
            self.federated.rcu(|held| {
                let mut next = held.as_ref().clone();
                next.remove(td);
                next
            });
            let detail = json!({ "trust_domain": td.to_string() });
            self.audit("ca.federation.remove", "system", None, true, detail, None)
                .await?;
        }
        Ok(())
    }
}
