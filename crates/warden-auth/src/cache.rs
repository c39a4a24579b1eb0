//! The verified-token cache: a repeated token costs a hash and a lookup, not a signature check.
//!
//! Keyed by SHA-256 of the token (the token itself is never stored). Sharded, each shard under
//! its own short-held mutex (never across an await). Bounded: a full shard first drops expired
//! entries, then an arbitrary one. Each entry expires no later than its token's `exp`.
//! Revocation evicts by `jti`, and revoked ids are remembered until their tokens expire so a
//! revoked token is not cached again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::identity::Identity;

const SHARDS: usize = 16;

struct Entry {
    identity: Arc<Identity>,
    issuer: Arc<str>,
    expires: i64,
}

/// A bounded cache of verified tokens.
pub struct TokenCache {
    shards: Vec<Mutex<HashMap<[u8; 32], Entry>>>,
    per_shard: usize,
    revoked: Mutex<HashMap<String, i64>>,
    max_revoked: usize,
    /// Bumped on every revocation, for holders of long-lived sessions opened with a token
    /// (upgraded WebSockets) to check theirs.
    revocations: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenCache({} entries)", self.len())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TokenCache {
    /// A cache holding at most `max_entries` tokens.
    pub fn new(max_entries: usize) -> TokenCache {
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
            revoked: Mutex::new(HashMap::new()),
            max_revoked: max_entries.max(1024),
            revocations: tokio::sync::watch::Sender::new(0),
        }
    }

    fn shard(&self, key: &[u8; 32]) -> &Mutex<HashMap<[u8; 32], Entry>> {
        &self.shards[usize::from(key[0]) % SHARDS]
    }

    /// The identity a token verified to, with the issuer that verified it, if still valid at
    /// `now`.
    pub fn get(&self, key: &[u8; 32], now: i64) -> Option<(Arc<Identity>, Arc<str>)> {
        let mut shard = lock(self.shard(key));
        match shard.get(key) {
            Some(e) if now < e.expires => Some((e.identity.clone(), e.issuer.clone())),
            Some(_) => {
                shard.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers a verified token until `expires` (Unix seconds), unless its `jti` is revoked.
    pub fn insert(
        &self,
        key: [u8; 32],
        identity: Arc<Identity>,
        issuer: Arc<str>,
        expires: i64,
        now: i64,
    ) {
        if let Some(jti) = &identity.jti {
            if lock(&self.revoked).contains_key(jti) {
                return;
            }
        }
        let mut shard = lock(self.shard(&key));
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            // Make room for many inserts at once, so a full cache (a flood of fresh tokens)
            // costs one scan per eighth of a shard, not one per insert: drop the expired,
            // then, if still over 7/8 full, arbitrary entries down to 7/8.
            shard.retain(|_, e| now < e.expires);
            let keep = self.per_shard - self.per_shard / 8 - 1;
            if shard.len() > keep {
                let drop: Vec<[u8; 32]> = shard.keys().take(shard.len() - keep).copied().collect();
                for k in drop {
                    shard.remove(&k);
                }
            }
        }
        shard.insert(
            key,
            Entry {
                identity,
                issuer,
                expires,
            },
        );
    }

    /// Revokes a token id until `expires`: evicts cached tokens with it and refuses to cache
    /// it again. Returns how many entries were evicted.
    pub fn revoke(&self, jti: &str, expires: i64, now: i64) -> usize {
        {
            let mut r = lock(&self.revoked);
            if r.len() >= self.max_revoked {
                r.retain(|_, exp| now < *exp);
            }
            if r.len() < self.max_revoked {
                r.insert(jti.to_owned(), expires);
            }
        }
        let mut evicted = 0;
        for s in &self.shards {
            let mut s = lock(s);
            let before = s.len();
            s.retain(|_, e| e.identity.jti.as_deref() != Some(jti));
            evicted += before - s.len();
        }
        self.revocations.send_modify(|n| *n = n.wrapping_add(1));
        evicted
    }

    /// Changes with every revocation: a session opened with a token waits on this, then
    /// asks [`is_revoked`](Self::is_revoked) about its `jti`.
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// Whether a token id was revoked (and its token has not yet expired).
    pub fn is_revoked(&self, jti: &str, now: i64) -> bool {
        lock(&self.revoked).get(jti).is_some_and(|exp| now < *exp)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::AuthMethod;

    fn id(jti: &str) -> Arc<Identity> {
        let mut i = Identity::new("alice", AuthMethod::Jwt);
        i.jti = Some(jti.into());
        Arc::new(i)
    }

    #[test]
    fn an_entry_is_gone_at_its_tokens_expiry() {
        let c = TokenCache::new(100);
        c.insert([1; 32], id("a"), "iss".into(), 1000, 0);
        assert!(c.get(&[1; 32], 999).is_some());
        assert!(c.get(&[1; 32], 1000).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn the_cache_never_holds_more_than_its_bound() {
        let c = TokenCache::new(160);
        for i in 0..10_000u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            c.insert(k, id("x"), "iss".into(), 10_000, 0);
        }
        assert!(c.len() <= 160, "{}", c.len());
    }

    #[test]
    fn a_revocation_wakes_whoever_watches_for_revocations() {
        let c = TokenCache::new(100);
        let mut rx = c.revocations();
        assert!(!rx.has_changed().unwrap());
        c.revoke("j1", 1000, 0);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        assert!(c.is_revoked("j1", 10));
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn revocation_evicts_and_prevents_recaching() {
        let c = TokenCache::new(100);
        c.insert([1; 32], id("j1"), "iss".into(), 1000, 0);
        c.insert([2; 32], id("j2"), "iss".into(), 1000, 0);
        assert_eq!(c.revoke("j1", 1000, 10), 1);
        assert!(c.get(&[1; 32], 10).is_none());
        assert!(c.get(&[2; 32], 10).is_some());
        c.insert([1; 32], id("j1"), "iss".into(), 1000, 10);
        assert!(c.get(&[1; 32], 10).is_none());
        assert!(c.is_revoked("j1", 10));
        assert!(!c.is_revoked("j1", 1000));
    }
}
