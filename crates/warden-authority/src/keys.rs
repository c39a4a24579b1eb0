//! Signing keys and their rotation (publish, then sign; keep publishing until expiry).
//!
//! Each key is stored (sealed by the store) under `tokens/keys/<activates_at>`, the Unix time
//! from which it signs; the first key activates at 0. A rotation step, run on a timer:
//!
//! 1. When the newest key will activate within `key_publish_ahead` of the next rotation time,
//!    a new key is made with `activates_at = newest + key_rotation` (or later): it is in the
//!    JWKS from now on, but signs nothing until then. Verifiers that cache the JWKS for up to
//!    `jwks_max_age` (≤ `key_publish_ahead`) already have it when it starts to sign.
//! 2. A key superseded at `S` (the next key's activation) is deleted once
//!    `S + max_token_lifetime + leeway` has passed: no token it signed is still valid.
//!
//! The slot name makes creation race-free across instances sharing a database: two instances
//! computing the same next slot race on `put_if_absent`, and one key wins.
//! The signing key at time `t` is the one with the latest `activates_at ≤ t`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use warden_crypto::jws::{b64url, b64url_decode, Alg, SigningKey};
use warden_store::Store;

use crate::audit::{Audit, Event};
use crate::error::{AuthorityError, Result};
use crate::settings::{Settings, LEEWAY};

const KEY_PREFIX: &str = "tokens/keys/";

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    alg: String,
    pkcs8: String,
    activates_at: i64,
    created: i64,
}

/// One loaded key.
pub struct RingKey {
    /// From when it signs.
    pub activates_at: i64,
    /// When it was made.
    pub created: i64,
    /// The key.
    pub key: SigningKey,
}

/// The keys currently published, oldest first, and the JWKS document for them.
pub struct KeyRing {
    keys: Vec<RingKey>,
    jwks: Value,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl KeyRing {
    /// The key that signs at `now`.
    pub fn signer(&self, now: i64) -> Option<&SigningKey> {
        self.keys
            .iter()
            .rev()
            .find(|k| k.activates_at <= now)
            .map(|k| &k.key)
    }

    /// A published key by kid.
    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.keys
            .iter()
            .find(|k| k.key.kid() == kid)
            .map(|k| &k.key)
    }

    /// The JWKS document.
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// The published keys, oldest first.
    pub fn keys(&self) -> &[RingKey] {
        &self.keys
    }
}

/// The key manager: the ring readers use, and the rotation step.
pub struct Keys {
    store: Store,
    audit: Audit,
    ring: ArcSwap<KeyRing>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("ring", &self.ring.load())
            .finish()
    }
}

fn slot(activates_at: i64) -> String {
    format!("{KEY_PREFIX}{:020}", activates_at.max(0))
}

impl Keys {
    /// Loads the keys, making the first one when there is none, and runs one rotation step.
    pub async fn open(store: Store, audit: Audit, s: &Settings, now: i64) -> Result<Arc<Keys>> {
        let keys = Arc::new(Keys {
            store,
            audit,
            ring: ArcSwap::from_pointee(KeyRing {
                keys: Vec::new(),
                jwks: json!({"keys": []}),
            }),
        });
        keys.rotate(s, now).await?;
        Ok(keys)
    }

    /// The current ring.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    async fn load(&self) -> Result<Vec<RingKey>> {
        let mut names = self.store.list(KEY_PREFIX).await?;
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let Some(raw) = self.store.get(&name).await? else {
                continue; // deleted since listing
            };
            let corrupt = |reason: String| AuthorityError::Corrupt {
                key: name.clone(),
                reason,
            };
            let sk: StoredKey = serde_json::from_slice(&raw).map_err(|e| corrupt(e.to_string()))?;
            let alg = Alg::parse(&sk.alg).ok_or_else(|| corrupt("unknown alg".into()))?;
            let der = zeroize::Zeroizing::new(
                b64url_decode(sk.pkcs8.as_bytes()).ok_or_else(|| corrupt("pkcs8".into()))?,
            );
            let key = SigningKey::from_pkcs8(alg, &der).map_err(|e| corrupt(e.to_string()))?;
            out.push(RingKey {
                activates_at: sk.activates_at,
                created: sk.created,
                key,
            });
        }
        out.sort_by_key(|k| k.activates_at);
        Ok(out)
    }

    async fn create(&self, alg: Alg, activates_at: i64, now: i64) -> Result<bool> {
        let key = SigningKey::generate(alg)
            .map_err(|e| AuthorityError::Config(format!("cannot make a signing key: {e}")))?;
        let stored = StoredKey {
            kid: key.kid().to_owned(),
            alg: alg.name().to_owned(),
            pkcs8: b64url(key.pkcs8()),
            activates_at,
            created: now,
        };
        let raw = zeroize::Zeroizing::new(
            serde_json::to_vec(&stored).map_err(|e| AuthorityError::Invalid(e.to_string()))?,
        );
        let made = self.store.put_if_absent(&slot(activates_at), &raw).await?;
        if made {
            self.audit
                .record(
                    Event::new("key.create", "system", "success")
                        .subject(key.kid())
                        .detail(json!({"alg": alg.name(), "activates_at": activates_at})),
                )
                .await?;
        }
        Ok(made)
    }

    /// One rotation step at `now`: make the next key when due, delete keys whose tokens have
    /// all expired, and reload the ring from the store (other instances may have rotated).
    pub async fn rotate(&self, s: &Settings, now: i64) -> Result<()> {
        let mut keys = self.load().await?;
        if keys.is_empty() {
            self.create(s.alg, 0, now).await?;
            keys = self.load().await?;
        }
        if let Some(newest) = keys.last() {
            // The first key activates at 0 but its period starts when it was made. After a
            // long stop the next key is due at once (it still waits its publish-ahead time).
            let started = newest.activates_at.max(newest.created);
            let next = started.max(now - s.key_rotation) + s.key_rotation;
            if now >= next - s.key_publish_ahead {
                let at = next.max(now + s.key_publish_ahead);
                if self.create(s.alg, at, now).await? {
                    tracing::info!(activates_at = at, "new signing key published");
                }
                keys = self.load().await?;
            }
        }
        // Delete keys superseded long enough ago that every token they signed has expired.
        let retire_after = s.max_token_lifetime + LEEWAY;
        let mut kept = Vec::with_capacity(keys.len());
        let mut iter = keys.into_iter().peekable();
        while let Some(k) = iter.next() {
            let superseded = iter.peek().map(|n| n.activates_at).filter(|a| *a <= now);
            match superseded {
                Some(at) if now >= at + retire_after => {
                    self.store.delete(&slot(k.activates_at)).await?;
                    self.audit
                        .record(Event::new("key.retire", "system", "success").subject(k.key.kid()))
                        .await?;
                }
                _ => kept.push(k),
            }
        }
        let jwks = json!({
            "keys": kept.iter().map(|k| k.key.public_jwk()).collect::<Vec<_>>(),
        });
        self.ring.store(Arc::new(KeyRing { keys: kept, jwks }));
        Ok(())
    }
}
