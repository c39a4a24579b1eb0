//! Revoked tokens (RFC 7009) and the revocation feed gateways poll.
//!
//! A revocation is stored twice: `tokens/revoked/<jti>` (looked up by introspection and token
//! exchange) and `tokens/revocations/<seq>` (the feed, in order). `seq` is allocated with
//! `put_if_absent` on the next free number, so two instances sharing a database never hand out
//! the same one, and a number becomes visible only together with its entry: a reader that has
//! seen `n` has seen everything before `n` that it will ever see (no gaps to skip over later).
//! Both records are deleted once the token has expired, since an expired token is refused
//! anyway.
//!
//! Introspection and token exchange ask [`Revocations::is_revoked`] on every request; to spare
//! them a store read each time, answers are kept in memory:
//!
//! - "revoked" until the token expires: a revocation is never undone;
//! - "not revoked" for [`REVOCATION_CACHE_TTL`] (1 s), counted from when the store read began.
//!
//! A revocation made through THIS instance marks the id revoked in memory as soon as its
//! lookup record is stored, so it takes effect here at once. One made through ANOTHER instance
//! sharing the database (PostgreSQL scale-out) takes effect here at most
//! [`REVOCATION_CACHE_TTL`] after it was stored (the same bound as the client-record cache,
//! [`crate::clients::CLIENT_CACHE_TTL`]). At most [`REVOCATION_CACHE_MAX`] ids are kept; a full
//! cache drops expired and stale entries, then others down to 7/8, "not revoked" ones first
//! (a dropped entry only costs a store read).
//!
//! Feed: `GET /oauth2/revocations?after=<seq>` → `{"revocations": [{"jti","exp","seq"}],
//! "next": <seq>}`, at most [`FEED_PAGE`] entries a call, in `seq` order; `next` is what to send
//! as `after` next time (the same `after` when nothing is new). A pusher (Redis pub/sub) can
//! publish the same entries as [`Revocations::revoke`] returns them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use warden_store::Store;

use crate::error::{AuthorityError, Result};

const BY_JTI: &str = "tokens/revoked/";
const FEED: &str = "tokens/revocations/";
/// Where used client-assertion ids are kept: `tokens/jti/<expiry>/<client>/<hash>`.
pub(crate) const JTI_PREFIX: &str = "tokens/jti/";

/// How long a "not revoked" answer read from the store is trusted in memory: the most a
/// revocation made through another instance sharing the database can take to be honoured here.
pub const REVOCATION_CACHE_TTL: Duration = Duration::from_secs(1);
/// Most token ids whose revocation state is kept in memory.
pub const REVOCATION_CACHE_MAX: usize = 100_000;

/// What this instance knows of one token id.
#[derive(Clone, Copy, Debug)]
enum Known {
    /// Not revoked, per a store read that began at this instant.
    NotRevoked(Instant),
    /// Revoked (for good).
    Revoked,
}

/// The in-memory revocation answers, with the token's `exp` (Unix seconds).
type Memo = Mutex<HashMap<String, (Known, i64)>>;

fn lock(m: &Memo) -> std::sync::MutexGuard<'_, HashMap<String, (Known, i64)>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Most entries in one feed answer.
pub const FEED_PAGE: usize = 1000;

/// One revocation, as the feed shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revoked {
    /// The token's id.
    pub jti: String,
    /// The token's expiry (the entry is dropped after it).
    pub exp: i64,
    /// Position in the feed.
    pub seq: u64,
}

/// The revocation list.
pub struct Revocations {
    store: Store,
    next_hint: AtomicU64,
    memo: Memo,
    memo_max: usize,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Revocations")
    }
}

fn feed_key(seq: u64) -> String {
    format!("{FEED}{seq:020}")
}

fn parse_seq(key: &str) -> Option<u64> {
    key.strip_prefix(FEED)?.parse().ok()
}

impl Revocations {
    /// The list on `store`.
    pub fn new(store: Store) -> Self {
        Self::with_capacity(store, REVOCATION_CACHE_MAX)
    }

    /// The list on `store`, remembering at most `memo_max` ids in memory.
    pub fn with_capacity(store: Store, memo_max: usize) -> Self {
        Self {
            store,
            next_hint: AtomicU64::new(0),
            memo: Mutex::default(),
            memo_max: memo_max.max(8),
        }
    }

    /// Remembers `known` for `jti` (token expiring at `exp`), at Unix time `now`. "Revoked"
    /// is never replaced by "not revoked": a read that began before a local revocation and
    /// ends after it must not hide it.
    fn remember(&self, jti: &str, known: Known, exp: i64, now: i64) {
        let mut memo = lock(&self.memo);
        if let Some((Known::Revoked, _)) = memo.get(jti) {
            return;
        }
        if memo.len() >= self.memo_max && !memo.contains_key(jti) {
            memo.retain(|_, (k, exp)| {
                now < *exp
                    && match k {
                        Known::Revoked => true,
                        Known::NotRevoked(at) => at.elapsed() < REVOCATION_CACHE_TTL,
                    }
            });
            // Then down to 7/8, "not revoked" answers first: losing one costs a store read,
            // losing a "revoked" one could let a read that raced a local revocation win.
            let keep = self.memo_max - self.memo_max / 8 - 1;
            for revoked_too in [false, true] {
                if memo.len() <= keep {
                    break;
                }
                let drop: Vec<String> = memo
                    .iter()
                    .filter(|(_, (k, _))| revoked_too || matches!(k, Known::NotRevoked(_)))
                    .map(|(j, _)| j.clone())
                    .take(memo.len() - keep)
                    .collect();
                for k in drop {
                    memo.remove(&k);
                }
            }
        }
        memo.insert(jti.to_owned(), (known, exp));
    }

    async fn seqs(&self) -> Result<Vec<u64>> {
        let mut v: Vec<u64> = self
            .store
            .list(FEED)
            .await?
            .iter()
            .filter_map(|k| parse_seq(k))
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Whether a token id (of a token expiring at `exp`, checked at Unix time `now`) was
    /// revoked: from memory when known (see the module documentation for how stale "not
    /// revoked" may be), else from the store.
    pub async fn is_revoked(&self, jti: &str, exp: i64, now: i64) -> Result<bool> {
        match lock(&self.memo).get(jti) {
            Some((Known::Revoked, _)) => return Ok(true),
            Some((Known::NotRevoked(at), _)) if at.elapsed() < REVOCATION_CACHE_TTL => {
                return Ok(false)
            }
            _ => {}
        }
        // The answer is as old as the read's start, not its end.
        let began = Instant::now();
        let revoked = self.store.get(&format!("{BY_JTI}{jti}")).await?.is_some();
        let known = if revoked {
            Known::Revoked
        } else {
            Known::NotRevoked(began)
        };
        self.remember(jti, known, exp, now);
        Ok(revoked)
    }

    /// Revokes a token id until `exp`. Idempotent: a second revocation returns the first entry.
    /// From then on, this instance answers [`Revocations::is_revoked`] with `true` at once.
    pub async fn revoke(&self, jti: &str, exp: i64, now: i64) -> Result<Revoked> {
        let by_jti = format!("{BY_JTI}{jti}");
        if let Some(raw) = self.store.get(&by_jti).await? {
            if let Ok(r) = serde_json::from_slice::<Revoked>(&raw) {
                self.remember(jti, Known::Revoked, exp, now);
                return Ok(r);
            }
        }
        let mut seq = self
            .next_hint
            .load(Ordering::Acquire)
            .max(self.seqs().await?.last().copied().unwrap_or(0) + 1);
        loop {
            let entry = Revoked {
                jti: jti.to_owned(),
                exp,
                seq,
            };
            let raw =
                serde_json::to_vec(&entry).map_err(|e| AuthorityError::Invalid(e.to_string()))?;
            // The lookup record first: the authority refuses the token before gateways hear.
            self.store.put(&by_jti, &raw).await?;
            self.remember(jti, Known::Revoked, exp, now);
            if self.store.put_if_absent(&feed_key(seq), &raw).await? {
                self.next_hint.fetch_max(seq + 1, Ordering::AcqRel);
                return Ok(entry);
            }
            seq += 1;
        }
    }

    /// Entries after `after`, at most `limit`; and the `next` cursor.
    pub async fn feed(&self, after: u64, limit: usize) -> Result<(Vec<Revoked>, u64)> {
        let mut out = Vec::new();
        let mut next = after;
        for seq in self.seqs().await?.into_iter().filter(|s| *s > after) {
            if out.len() >= limit {
                break;
            }
            if let Some(raw) = self.store.get(&feed_key(seq)).await? {
                if let Ok(r) = serde_json::from_slice::<Revoked>(&raw) {
                    next = next.max(r.seq);
                    out.push(r);
                }
            }
        }
        Ok((out, next))
    }

    /// Deletes revocations of expired tokens and expired client-assertion ids.
    pub async fn cleanup(&self, now: i64) -> Result<usize> {
        let mut removed = 0;
        let seqs = self.seqs().await?;
        let newest = seqs.last().copied();
        for seq in seqs {
            let key = feed_key(seq);
            let Some(raw) = self.store.get(&key).await? else {
                continue;
            };
            let Ok(r) = serde_json::from_slice::<Revoked>(&raw) else {
                continue;
            };
            if r.exp < now {
                self.store.delete(&format!("{BY_JTI}{}", r.jti)).await?;
                // The newest feed entry stays (harmless: its token has expired) so that the
                // next number handed out is never one a gateway has already passed.
                if Some(seq) != newest {
                    self.store.delete(&key).await?;
                }
                removed += 1;
            }
        }
        for key in self.store.list(JTI_PREFIX).await? {
            let exp = key
                .strip_prefix(JTI_PREFIX)
                .and_then(|r| r.split('/').next())
                .and_then(|e| e.parse::<i64>().ok())
                .unwrap_or(0);
            if exp >= now {
                // Sorted by expiry: the rest are still live.
                break;
            }
            self.store.delete(&key).await?;
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_are_remembered_within_their_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let store = Store::open(path.to_str().unwrap(), &[7u8; 32])
            .await
            .unwrap();
        let here = Revocations::with_capacity(store.clone(), 64);
        let there = Revocations::new(store);
        // Revoked here: refused here at once, and a racing "not revoked" does not undo it.
        assert!(!here.is_revoked("a", 100, 10).await.unwrap());
        here.revoke("a", 100, 10).await.unwrap();
        assert!(here.is_revoked("a", 100, 10).await.unwrap());
        here.remember("a", Known::NotRevoked(Instant::now()), 100, 10);
        assert!(here.is_revoked("a", 100, 10).await.unwrap());
        // Revoked by another instance on the same store: seen here once the TTL has passed.
        assert!(!here.is_revoked("b", 100, 10).await.unwrap());
        there.revoke("b", 100, 10).await.unwrap();
        assert!(there.is_revoked("b", 100, 10).await.unwrap());
        tokio::time::sleep(REVOCATION_CACHE_TTL).await;
        assert!(here.is_revoked("b", 100, 10).await.unwrap());
        // Bounded; "revoked" answers outlive "not revoked" ones when making room.
        for i in 0..1000 {
            assert!(!here.is_revoked(&format!("j{i}"), 100, 10).await.unwrap());
        }
        let memo = lock(&here.memo);
        assert!(memo.len() <= 64, "{}", memo.len());
        assert!(matches!(memo.get("a"), Some((Known::Revoked, _))));
    }
}
