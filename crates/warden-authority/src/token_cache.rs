//! The introspection cache: a token introspected again costs a hash and a lookup, not a JWS
//! parse, an ES256 verification and a JSON answer built anew.
//!
//! Keyed by SHA-256 of the token (the token itself is never stored); the value is what
//! verification established (the claims' `jti`, `exp`, `nbf`, the signing key's `kid`) and the
//! RFC 7662 answer for an active token, already serialized. Each hit re-checks, at the
//! authority's clock and against the current key ring, what [`crate::tokens::verify`] checks
//! that can change after the first verification:
//!
//! - `exp`: an entry is never used at or after its token's `exp` (then dropped);
//! - `nbf` (with leeway), in case the clock was set back;
//! - the signing key: the entry is used only while a key with its `kid` is still in the ring.
//!   The `kid` is the key's RFC 7638 thumbprint, so the same `kid` is the same key, and a
//!   token whose key was retired (or removed by another instance) is refused exactly as an
//!   uncached one is.
//!
//! The issuer, `typ` and signature are properties of the token bytes and the key, both
//! unchanged on a hit. Revocation is NOT cached here: the caller checks it on every hit (see
//! [`crate::revocation`] for its own short-lived cache).
//!
//! Bounded: at most [`MAX_ENTRIES`] entries in 16 shards, each under its own short-held mutex
//! (never across an await). A full shard first drops expired entries, then arbitrary ones down
//! to 7/8 of its share, so a flood of fresh tokens costs one scan per eighth of a shard (as the
//! gateway's verified-token cache does). Answers longer than [`MAX_ANSWER`] bytes (long actor
//! chains) are not cached, which bounds memory to roughly `MAX_ENTRIES × 1.2 KiB` (~0.6 KiB
//! each for a typical 430-byte token).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::keys::KeyRing;
use crate::settings::LEEWAY;

/// Most tokens held.
pub const MAX_ENTRIES: usize = 100_000;
/// Longest introspection answer cached, in bytes.
pub const MAX_ANSWER: usize = 1024;
const SHARDS: usize = 16;

/// A verified, active token as introspection answers it.
#[derive(Debug)]
pub struct Introspected {
    /// Its `jti` (for the revocation check on every hit).
    pub jti: Box<str>,
    /// Its `exp`.
    pub exp: i64,
    /// Its `nbf`, when it has one.
    pub nbf: Option<i64>,
    /// The `kid` of the key that signed it.
    pub kid: Box<str>,
    /// The RFC 7662 answer (`"active": true` and the claims), JSON.
    pub answer: Bytes,
}

type Shard = Mutex<HashMap<[u8; 32], Arc<Introspected>>>;

/// A bounded cache of verified tokens, keyed by the token's SHA-256.
pub struct TokenCache {
    shards: Vec<Shard>,
    per_shard: usize,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenCache({} entries)", self.len())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new(MAX_ENTRIES)
    }
}

impl TokenCache {
    /// A cache holding at most `max_entries` tokens.
    pub fn new(max_entries: usize) -> TokenCache {
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
        }
    }

    /// The cache key of a token: its SHA-256.
    pub fn key(token: &str) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut k = [0u8; 32];
        k.copy_from_slice(d.as_ref());
        k
    }

    fn shard(&self, key: &[u8; 32]) -> &Shard {
        &self.shards[usize::from(key[0]) % SHARDS]
    }

    /// The cached answer for a token, if it would still verify at `now` with `ring` (not yet
    /// expired, past `nbf`, its key still in the ring). Revocation is the caller's to check.
    pub fn get(&self, key: &[u8; 32], ring: &KeyRing, now: i64) -> Option<Arc<Introspected>> {
        let hit = {
            let mut shard = lock(self.shard(key));
            let e = shard.get(key)?;
            if now >= e.exp {
                shard.remove(key);
                return None;
            }
            e.clone()
        };
        if hit.nbf.is_some_and(|nbf| now + LEEWAY < nbf) || ring.find(&hit.kid).is_none() {
            return None;
        }
        Some(hit)
    }

    /// Remembers a token verified at `now` (at most until its `exp`).
    pub fn insert(&self, key: [u8; 32], entry: Introspected, now: i64) {
        if now >= entry.exp || entry.answer.len() > MAX_ANSWER {
            return;
        }
        let mut shard = lock(self.shard(&key));
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, e| now < e.exp);
            let keep = self.per_shard - self.per_shard / 8 - 1;
            if shard.len() > keep {
                let drop: Vec<[u8; 32]> = shard.keys().take(shard.len() - keep).copied().collect();
                for k in drop {
                    shard.remove(&k);
                }
            }
        }
        shard.insert(key, Arc::new(entry));
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

    fn entry(exp: i64) -> Introspected {
        Introspected {
            jti: "j".into(),
            exp,
            nbf: None,
            kid: "k".into(),
            answer: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn the_key_is_a_hash_not_the_token() {
        let k = TokenCache::key("a.b.c");
        assert_ne!(&k[..5], b"a.b.c");
        assert_eq!(k, TokenCache::key("a.b.c"));
        assert_ne!(k, TokenCache::key("a.b.d"));
    }

    #[test]
    fn memory_stays_bounded_and_expired_entries_go_first() {
        let c = TokenCache::new(160);
        for i in 0..10_000u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            k[0] = (i % 16) as u8;
            c.insert(k, entry(100), 10);
        }
        assert!(c.len() <= 160, "{}", c.len());
        assert!(c.len() >= 160 - 160 / 8 - 16, "{}", c.len());
        // Expired and oversized entries are never stored.
        let c = TokenCache::new(16);
        c.insert([1; 32], entry(10), 10);
        let mut big = entry(100);
        big.answer = Bytes::from(vec![b' '; MAX_ANSWER + 1]);
        c.insert([2; 32], big, 10);
        assert!(c.is_empty());
    }
}
