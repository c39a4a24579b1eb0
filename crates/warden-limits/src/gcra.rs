//! GCRA (the generic cell rate algorithm), as a token bucket with exact burst semantics.
//!
//! A limit of `r` requests per period `T` with burst `b` has an emission interval
//! `I = T / r` and a tolerance of `b × I`. Each key keeps one number, its theoretical arrival
//! time `TAT`. A request at time `t` computes `tat' = max(TAT, t) + I`; it is allowed when
//! `tat' − t ≤ b × I` (and `TAT` becomes `tat'`), refused otherwise (and `TAT` stays).
//! So a fresh key can send `b` requests at once, then one per `I`; after `b × I` of silence it
//! is full again. An entry whose `TAT ≤ t` is exactly a full bucket, which is why idle keys can
//! be dropped without changing any decision: that is how memory stays bounded.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

/// A limit: `requests` per `period`, with `burst` requests allowed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    emission_nanos: u64,
    tolerance_nanos: u64,
    requests: u64,
    period: Duration,
    burst: u64,
}

impl Gcra {
    /// A limit of `requests` per `period` with the given `burst`. `None` when a value is zero
    /// or the interval does not fit in nanoseconds.
    pub fn new(requests: u64, period: Duration, burst: u64) -> Option<Self> {
        if requests == 0 || burst == 0 || period.is_zero() {
            return None;
        }
        let emission = u64::try_from(period.as_nanos() / u128::from(requests))
            .ok()?
            .max(1);
        Some(Self {
            emission_nanos: emission,
            tolerance_nanos: emission.checked_mul(burst)?,
            requests,
            period,
            burst,
        })
    }

    /// Requests per period.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Burst size.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Decides for one key given its TAT (`None`: never seen or idle). Returns the decision
    /// and the new TAT to store.
    fn decide(&self, tat: Option<u64>, now: u64) -> (Decision, u64) {
        let tat = tat.unwrap_or(now).max(now);
        let new_tat = tat.saturating_add(self.emission_nanos);
        let used = new_tat - now;
        if used <= self.tolerance_nanos {
            let remaining = (self.tolerance_nanos - used) / self.emission_nanos;
            (
                Decision::Allowed {
                    remaining,
                    reset: Duration::from_nanos(used),
                },
                new_tat,
            )
        } else {
            let retry_after = Duration::from_nanos(used - self.tolerance_nanos);
            (
                Decision::Limited {
                    retry_after,
                    reset: Duration::from_nanos(tat - now),
                },
                tat,
            )
        }
    }
}

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allowed {
        /// Requests still allowed right now.
        remaining: u64,
        /// Time until the bucket is full again.
        reset: Duration,
    },
    /// Refused.
    Limited {
        /// Time until one request would be allowed.
        retry_after: Duration,
        /// Time until the bucket is full again.
        reset: Duration,
    },
}

impl Decision {
    /// True when allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

const SHARDS: usize = 64;

/// A local limiter for one limit: keys hashed into shards, each a small map behind a mutex
/// that is held only for a lookup (never across an await).
///
/// Memory is bounded by `max_keys` (about 32 bytes per key in the maps, so 1,000,000 keys is
/// ~32–64 MiB). Keys are hashed with a per-process random key (SipHash), so a client cannot
/// aim at one shard. When a shard is full, entries whose bucket is already full again are
/// dropped (this changes no decision); if that frees less than an eighth of the shard,
/// arbitrary entries are dropped until it does, which lets those keys start again with a full
/// bucket: under a flood of distinct keys the limiter errs towards forgetting, never towards
/// refusing keys it has not seen, and each sweep is paid for by many insertions.
pub struct LocalLimiter {
    limit: Gcra,
    shards: Box<[Mutex<HashMap<u64, u64>>]>,
    per_shard: usize,
    hasher: RandomState,
}

impl LocalLimiter {
    /// A limiter for `limit`, holding at most about `max_keys` keys.
    pub fn new(limit: Gcra, max_keys: usize) -> Self {
        let per_shard = (max_keys / SHARDS).max(1);
        Self {
            limit,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard,
            hasher: RandomState::new(),
        }
    }

    /// The limit this limiter applies.
    pub fn limit(&self) -> &Gcra {
        &self.limit
    }

    /// Checks (and counts, when allowed) one request for `key` at `now_nanos` (any monotonic
    /// clock, the same for every call).
    pub fn check(&self, key: &[u8], now_nanos: u64) -> Decision {
        let h = self.hasher.hash_one(key);
        let shard = &self.shards[(h as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let tat = map.get(&h).copied();
        let (decision, new_tat) = self.limit.decide(tat, now_nanos);
        if tat.is_none() && map.len() >= self.per_shard {
            // Make room for an eighth of the shard at once, so that a flood of new keys costs
            // one sweep per many insertions, not one per insertion.
            map.retain(|_, t| *t > now_nanos);
            let target = self.per_shard - self.per_shard / 8;
            if map.len() > target {
                let excess = map.len() - target;
                let victims: Vec<u64> = map.keys().take(excess).copied().collect();
                for v in victims {
                    map.remove(&v);
                }
            }
            // Removals leave tombstones that would make the table grow; rehash to its bound.
            map.shrink_to(self.per_shard);
        }
        map.insert(h, new_tat);
        decision
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Bytes held by the key maps (their allocated capacity: a key and its TAT, 16 bytes, plus
    /// one control byte per slot). The documented bound is `max_keys × 2 × 17` bytes, as a
    /// hash map's capacity is at most twice its length after growth.
    pub fn approx_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).capacity() * 8 / 7 * 17)
            .sum()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;

    fn limiter(requests: u64, per: Duration, burst: u64) -> LocalLimiter {
        LocalLimiter::new(Gcra::new(requests, per, burst).unwrap(), 1000)
    }

    #[test]
    fn a_fresh_key_gets_exactly_its_burst_at_once() {
        let l = limiter(5, Duration::from_secs(1), 10);
        let t = 100 * S;
        let allowed = (0..20).filter(|_| l.check(b"k", t).is_allowed()).count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn refill_is_one_request_per_emission_interval() {
        let l = limiter(5, Duration::from_secs(1), 10); // one every 200 ms
        let t = 100 * S;
        for _ in 0..10 {
            assert!(l.check(b"k", t).is_allowed());
        }
        assert!(
            !l.check(b"k", t + 199 * MS).is_allowed(),
            "just before the interval"
        );
        assert!(
            l.check(b"k", t + 200 * MS).is_allowed(),
            "exactly at the interval"
        );
        assert!(!l.check(b"k", t + 200 * MS).is_allowed());
        // After burst × interval of silence the bucket is full again.
        let later = t + 200 * MS + 2 * S;
        let allowed = (0..20)
            .filter(|_| l.check(b"k", later).is_allowed())
            .count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn retry_after_says_when_the_next_request_fits() {
        let l = limiter(2, Duration::from_secs(1), 1); // one every 500 ms, no burst
        let t = 10 * S;
        assert!(l.check(b"k", t).is_allowed());
        match l.check(b"k", t + 100 * MS) {
            Decision::Limited { retry_after, .. } => {
                assert_eq!(retry_after, Duration::from_millis(400))
            }
            d => panic!("{d:?}"),
        }
        assert!(l.check(b"k", t + 500 * MS).is_allowed());
    }

    #[test]
    fn remaining_counts_down_through_the_burst() {
        let l = limiter(10, Duration::from_secs(1), 3);
        let t = S;
        let remaining: Vec<u64> = (0..3)
            .map(|_| match l.check(b"k", t) {
                Decision::Allowed { remaining, .. } => remaining,
                d => panic!("{d:?}"),
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
    }

    #[test]
    fn keys_are_independent() {
        let l = limiter(1, Duration::from_secs(60), 1);
        assert!(l.check(b"a", S).is_allowed());
        assert!(!l.check(b"a", S).is_allowed());
        assert!(l.check(b"b", S).is_allowed());
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_within_the_bound() {
        let l = LocalLimiter::new(Gcra::new(10, Duration::from_secs(1), 10).unwrap(), 64 * 100);
        for i in 0u64..100_000 {
            l.check(&i.to_le_bytes(), S);
        }
        assert!(l.len() <= 64 * 100, "held {}", l.len());
    }

    #[test]
    fn idle_keys_are_dropped_first_without_changing_decisions() {
        let l = LocalLimiter::new(Gcra::new(1, Duration::from_secs(1), 1).unwrap(), 64);
        // Fill with keys that are idle (full again) one second later.
        for i in 0u64..10_000 {
            l.check(&i.to_le_bytes(), S);
        }
        // A live key at t = 3 s, refused on its second request.
        assert!(l.check(b"live", 3 * S).is_allowed());
        assert!(!l.check(b"live", 3 * S).is_allowed());
    }

    #[test]
    fn a_million_distinct_keys_stay_under_the_documented_memory_bound() {
        let max_keys = 100_000;
        let l = LocalLimiter::new(Gcra::new(10, Duration::from_secs(1), 10).unwrap(), max_keys);
        for i in 0u64..1_000_000 {
            // All keys live (same instant): the worst case, no idle key to drop.
            l.check(&i.to_le_bytes(), S);
        }
        assert!(l.len() <= max_keys, "held {} keys", l.len());
        let bound = max_keys * 2 * 17 + SHARDS * 64 * 17;
        assert!(
            l.approx_bytes() <= bound,
            "{} bytes > {bound}",
            l.approx_bytes()
        );
    }

    #[test]
    fn zero_values_are_refused() {
        assert!(Gcra::new(0, Duration::from_secs(1), 1).is_none());
        assert!(Gcra::new(1, Duration::ZERO, 1).is_none());
        assert!(Gcra::new(1, Duration::from_secs(1), 0).is_none());
    }
}
