//! The CA's keys in the store, and their rotation.
//!
//! Roots are stored under `ca/roots/<activates_at>`, intermediates under
//! `ca/intermediates/<activates_at>-<root's activates_at>` (zero-padded, so listing sorts by
//! time), each a JSON record with the certificate and its PKCS#8 key; the store seals every
//! value. `ca/meta` keeps the bundle's sequence number. A record's name makes creation
//! race-free across authorities sharing a database: two making the same slot race on
//! `put_if_absent` and one wins.
//!
//! The rotation step ([`KeyRing::step`], run by [`crate::Ca::tick`]):
//!
//! 1. No root: make one that signs from time 0.
//! 2. The newest root is past half its life: make the next, signing from
//!    `now + root_publish_ahead`. It is in the bundle from now on, so peers trust it before
//!    any SVID chains to it.
//! 3. Roots and intermediates past their expiry are deleted (nothing they signed is valid).
//! 4. No intermediate of the signing root, or the newest one past half its life: make one,
//!    signing at once. Intermediates are not in the bundle; each SVID carries its own.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use warden_identity::bundle::Bundle;
use warden_identity::{CaKey, Signer};
use warden_store::Store;

use crate::error::CaServiceError;
use warden_identity::CaSettings;

const ROOTS: &str = "ca/roots/";
const INTERMEDIATES: &str = "ca/intermediates/";
const META: &str = "ca/meta";

#[derive(Serialize, Deserialize)]
struct StoredKey {
    cert: String,
    key: String,
    activates_at: i64,
    /// For an intermediate: the `activates_at` of the root that signed it.
    #[serde(default)]
    root: i64,
    created: i64,
}

#[derive(Serialize, Deserialize, Default)]
struct Meta {
    sequence: u64,
}

/// One loaded CA key.
#[derive(Debug)]
pub struct Slot {
    /// From when it signs.
    pub activates_at: i64,
    /// For an intermediate: its root's `activates_at`.
    pub root: i64,
    /// When it was made.
    pub created: i64,
    /// The certificate and key.
    pub key: CaKey,
}

/// The CA's keys as loaded at one moment.
#[derive(Debug)]
pub struct KeyRing {
    /// Our own unexpired roots, oldest first (none under an upstream CA).
    pub roots: Vec<Slot>,
    /// The bundle's X.509 authorities: our roots, or the upstream chain's root.
    pub root_certs: Vec<Vec<u8>>,
    /// Unexpired intermediates, oldest first.
    pub intermediates: Vec<Slot>,
    /// Signs SVIDs now: the newest intermediate of the signing root.
    pub signer: Option<Signer>,
    /// With an upstream CA: the certificates between our intermediates and the root (for
    /// verifying a presented SVID); empty otherwise.
    pub upstream_chain: Vec<Vec<u8>>,
    /// The bundle's sequence number.
    pub sequence: u64,
}

fn decode(raw: &[u8]) -> Result<Slot, CaServiceError> {
    let s: StoredKey =
        serde_json::from_slice(raw).map_err(|e| CaServiceError::Corrupt(e.to_string()))?;
    let cert = STANDARD
        .decode(&s.cert)
        .map_err(|e| CaServiceError::Corrupt(e.to_string()))?;
    let key = STANDARD
        .decode(&s.key)
        .map_err(|e| CaServiceError::Corrupt(e.to_string()))?;
    Ok(Slot {
        activates_at: s.activates_at,
        root: s.root,
        created: s.created,
        key: CaKey::from_parts(cert, key)?,
    })
}

fn encode(key: &CaKey, activates_at: i64, root: i64, created: i64) -> Vec<u8> {
    serde_json::to_vec(&StoredKey {
        cert: STANDARD.encode(key.cert_der()),
        key: STANDARD.encode(key.key_pkcs8()),
        activates_at,
        root,
        created,
    })
    .unwrap_or_default()
}

async fn load(store: &Store, prefix: &str) -> Result<Vec<Slot>, CaServiceError> {
    let mut out = Vec::new();
    for key in store.list(prefix).await? {
        if let Some(raw) = store.get(&key).await? {
            out.push(decode(&raw)?);
        }
    }
    out.sort_by_key(|s| (s.activates_at, s.created));
    Ok(out)
}

/// Loads the intermediates, deleting those past their expiry (nothing they signed is still
/// valid).
async fn live_intermediates(store: &Store, now: i64) -> Result<Vec<Slot>, CaServiceError> {
    let mut inters = load(store, INTERMEDIATES).await?;
    for i in inters.iter().filter(|i| i.key.not_after() <= now) {
        store
            .delete(&format!(
                "{INTERMEDIATES}{:020}-{:020}",
                i.activates_at, i.root
            ))
            .await?;
    }
    inters.retain(|i| i.key.not_after() > now);
    Ok(inters)
}

/// The bundle's sequence number: set on first use, moved past `now` when the roots changed.
async fn sequence(store: &Store, now: i64, changed: bool) -> Result<u64, CaServiceError> {
    let mut meta: Meta = match store.get(META).await? {
        Some(raw) => serde_json::from_slice(&raw).unwrap_or_default(),
        None => Meta::default(),
    };
    if changed || meta.sequence == 0 {
        meta.sequence = (meta.sequence + 1).max(u64::try_from(now).unwrap_or(0));
        store
            .put(META, &serde_json::to_vec(&meta).unwrap_or_default())
            .await?;
    }
    Ok(meta.sequence)
}

impl KeyRing {
    /// Loads the keys, running one rotation step first; the flag tells whether the step
    /// made or dropped a key (a root change also moves the bundle's sequence).
    pub async fn step(
        store: &Store,
        settings: &CaSettings,
        now: i64,
    ) -> Result<(KeyRing, bool), CaServiceError> {
        if let Some(up) = &settings.upstream {
            return Self::step_upstream(store, settings, up, now).await;
        }
        let td = &settings.trust_domain;
        let mut changed = false;
        let mut roots = load(store, ROOTS).await?;
        let newest_half_gone = roots.last().is_none_or(|r| {
            r.activates_at <= now && r.key.not_after() - now < settings.root_ttl / 2
        });
        if newest_half_gone {
            let activates_at = if roots.is_empty() {
                0
            } else {
                now + settings.root_publish_ahead
            };
            let key = CaKey::new_root(td, now, settings.root_ttl + settings.root_publish_ahead)?;
            let name = format!("{ROOTS}{activates_at:020}");
            if store
                .put_if_absent(&name, &encode(&key, activates_at, 0, now))
                .await?
            {
                tracing::info!(activates_at, trust_domain = %td, "CA: new root");
                changed = true;
            }
            roots = load(store, ROOTS).await?;
        }
        for r in roots.iter().filter(|r| r.key.not_after() <= now) {
            store
                .delete(&format!("{ROOTS}{:020}", r.activates_at))
                .await?;
            changed = true;
        }
        roots.retain(|r| r.key.not_after() > now);
        let signing_root = roots.iter().rev().find(|r| r.activates_at <= now);

        let mut intermediate_made = false;
        let mut inters = live_intermediates(store, now).await?;
        if let Some(root) = signing_root {
            let current = inters
                .iter()
                .rev()
                .find(|i| i.root == root.activates_at && i.activates_at <= now);
            let replace = current.is_none_or(|i| {
                let life = i.key.not_after() - i.key.not_before();
                i.key.not_after() - now < life / 2
            });
            if replace {
                let key = root
                    .key
                    .new_intermediate(td, now, settings.intermediate_ttl)?;
                let name = format!("{INTERMEDIATES}{now:020}-{:020}", root.activates_at);
                if store
                    .put_if_absent(&name, &encode(&key, now, root.activates_at, now))
                    .await?
                {
                    tracing::info!(trust_domain = %td, "CA: new signing intermediate");
                    intermediate_made = true;
                }
                inters = load(store, INTERMEDIATES).await?;
                inters.retain(|i| i.key.not_after() > now);
            }
        }

        let sequence = sequence(store, now, changed).await?;

        let signer = match signing_root {
            Some(root) => inters
                .iter()
                .rev()
                .find(|i| i.root == root.activates_at && i.activates_at <= now)
                .map(|i| {
                    let key =
                        CaKey::from_parts(i.key.cert_der().to_vec(), i.key.key_pkcs8().to_vec())?;
                    Signer::new(td.clone(), key, Vec::new())
                })
                .transpose()?,
            None => None,
        };
        Ok((
            KeyRing {
                root_certs: roots.iter().map(|r| r.key.cert_der().to_vec()).collect(),
                roots,
                intermediates: inters,
                signer,
                upstream_chain: Vec::new(),
                sequence,
            },
            changed || intermediate_made,
        ))
    }

    /// The rotation step under an upstream CA: no root of our own (the bundle holds the
    /// upstream root); our intermediates, stored with root slot `-1`, are signed by the
    /// upstream key and replaced at half-life as usual, never outliving the upstream CA.
    async fn step_upstream(
        store: &Store,
        settings: &CaSettings,
        up: &warden_identity::UpstreamCa,
        now: i64,
    ) -> Result<(KeyRing, bool), CaServiceError> {
        const UPSTREAM: i64 = -1;
        let td = &settings.trust_domain;
        let mut made = false;
        let mut inters = live_intermediates(store, now).await?;
        // Only ours under this upstream CA: an upstream swapped in config starts afresh.
        let upstream_cert = up.key.cert_der();
        let signed_by_upstream =
            |i: &Slot| i.root == UPSTREAM && issued_by(i.key.cert_der(), upstream_cert);
        inters.retain(|i| signed_by_upstream(i));
        let replace = inters.last().is_none_or(|i| {
            let life = i.key.not_after() - i.key.not_before();
            i.key.not_after() - now < life / 2
        });
        if replace {
            let key = up
                .key
                .new_intermediate(td, now, settings.intermediate_ttl)?;
            let name = format!("{INTERMEDIATES}{now:020}-{UPSTREAM:020}");
            if store
                .put_if_absent(&name, &encode(&key, now, UPSTREAM, now))
                .await?
            {
                tracing::info!(trust_domain = %td, "CA: new signing intermediate under the upstream CA");
                made = true;
            }
            inters = load(store, INTERMEDIATES).await?;
            inters.retain(|i| i.key.not_after() > now && signed_by_upstream(i));
        }
        let signer = inters
            .last()
            .map(|i| {
                let key = CaKey::from_parts(i.key.cert_der().to_vec(), i.key.key_pkcs8().to_vec())?;
                Signer::new(td.clone(), key, up.chain.clone())
            })
            .transpose()?;
        let sequence = sequence(store, now, false).await?;
        Ok((
            KeyRing {
                root_certs: up.roots.clone(),
                roots: Vec::new(),
                intermediates: inters,
                signer,
                upstream_chain: up.chain.clone(),
                sequence,
            },
            made,
        ))
    }

    /// The trust bundle: every unexpired root, and the given JWT authorities.
    pub fn bundle(&self, settings: &CaSettings, jwt: Vec<serde_json::Value>) -> Bundle {
        Bundle {
            trust_domain: settings.trust_domain.clone(),
            x509_authorities: self.root_certs.clone(),
            jwt_authorities: jwt,
            sequence: self.sequence,
            refresh_hint: Some(settings.refresh_hint),
        }
    }
}

/// Whether `cert`'s issuer is `ca`'s subject (and its signature verifies with `ca`'s key).
fn issued_by(cert: &[u8], ca: &[u8]) -> bool {
    use x509_parser::prelude::FromDer;
    let (Ok((_, c)), Ok((_, issuer))) = (
        x509_parser::certificate::X509Certificate::from_der(cert),
        x509_parser::certificate::X509Certificate::from_der(ca),
    ) else {
        return false;
    };
    c.issuer() == issuer.subject() && c.verify_signature(Some(issuer.public_key())).is_ok()
}
