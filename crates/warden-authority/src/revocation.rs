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
//! Feed: `GET /oauth2/revocations?after=<seq>` → `{"revocations": [{"jti","exp","seq"}],
//! "next": <seq>}`, at most [`FEED_PAGE`] entries a call, in `seq` order; `next` is what to send
//! as `after` next time (the same `after` when nothing is new). A pusher (Redis pub/sub) can
//! publish the same entries as [`Revocations::revoke`] returns them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use warden_store::Store;

use crate::error::{AuthorityError, Result};

const BY_JTI: &str = "tokens/revoked/";
const FEED: &str = "tokens/revocations/";
/// Where used client-assertion ids are kept: `tokens/jti/<expiry>/<client>/<hash>`.
pub(crate) const JTI_PREFIX: &str = "tokens/jti/";

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
        Self {
            store,
            next_hint: AtomicU64::new(0),
        }
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

    /// Whether a token id was revoked.
    pub async fn is_revoked(&self, jti: &str) -> Result<bool> {
        Ok(self.store.get(&format!("{BY_JTI}{jti}")).await?.is_some())
    }

    /// Revokes a token id until `exp`. Idempotent: a second revocation returns the first entry.
    pub async fn revoke(&self, jti: &str, exp: i64) -> Result<Revoked> {
        let by_jti = format!("{BY_JTI}{jti}");
        if let Some(raw) = self.store.get(&by_jti).await? {
            if let Ok(r) = serde_json::from_slice::<Revoked>(&raw) {
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
