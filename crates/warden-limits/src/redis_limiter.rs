//! A rate limit kept in Redis (see [`crate::redis_store`]), shared by every gateway that uses
//! the same store, with optional local leasing.
//!
//! # Keys
//!
//! `{key_prefix}{route}:{limit index}:{key kind}:{sha256(key value) in hex}`. The value is
//! hashed because it may be a credential-like header; Redis never sees it. Every gateway must
//! name the route and order its limits the same way to share a counter.
//!
//! # Leasing
//!
//! With `lease = n > 1`, a gateway asks Redis for up to `n` tokens for a key at once (the
//! script grants as many as fit), spends one, and keeps the rest for that key's next requests,
//! which then need no round trip. When half the lease or less is left, the next request tops it
//! up (asking for `n` minus what is held) while the others keep spending what is left. Only one
//! request per key fetches at a time; if the lease runs dry meanwhile, requests ask Redis for a
//! single token. So a gateway never holds more than `n − 1` tokens for a key. A lease expires
//! after the time its tokens stand for (`n` × emission interval), at least 50 ms and at most
//! 1 s, so tokens do not outlive their window: unspent ones are forgotten, which can only admit
//! less. A request that Redis refuses spends a token that landed in the lease meanwhile.
//!
//! **Overshoot bound.** Redis counts leased tokens as spent when it grants them, so the fleet
//! never admits more than Redis granted; what leasing changes is *when* tokens are spent. In any
//! window a gateway may spend tokens granted before it, at most what it holds, so the limit can
//! be exceeded by at most `lease` requests per gateway per key (`N × lease` for `N` gateways).
//! Conversely, tokens left in an idle gateway's lease are unavailable to the others until it
//! expires, so a key can see up to `(N − 1) × lease` fewer requests admitted than the limit.
//!
//! # When Redis cannot answer: the local share
//!
//! Failing open used to mean *unlimited*: one 50 ms Redis stall a second let three gateways
//! admit 2,419 requests against a limit of 200 in 10 s, and a single 10 ms timeout during a
//! scheduling hiccup admitted requests Redis had refused. Now each key also has a *shadow*
//! bucket in this process, the limit's share for one gateway (`rate / gateways`, the same
//! tolerance, so `burst / gateways` requests), which [`RedisLimiter::fallback`] decides with
//! while Redis is down or slow:
//!
//! - **Aligned with Redis.** Every answer from Redis sets the shadow bucket's TAT to
//!   `now + reset` (the time Redis says the shared bucket needs to be full again), so the
//!   shadow holds `remaining / gateways` tokens: a key Redis has exhausted stays exhausted
//!   through a stall, refilling at this gateway's share of the rate; a key with `R` left lets
//!   each of `gateways` gateways admit `R / gateways`.
//! - **Leases first.** Tokens already leased from Redis are spent before the shadow bucket.
//! - **Owed, then repaid.** A request admitted by the shadow bucket while Redis was *down*
//!   (the call was never sent, or Redis answered with an error) is owed to Redis: the key's
//!   next call asks for the owed tokens too and spends what it gets on the debt before this
//!   request, so Redis ends up counting what the fleet admitted. A call that *timed out* is
//!   not owed: Redis still runs it when it wakes (and counts it), so after a stall a limit
//!   errs towards admitting less.
//!
//! The shadow buckets are bounded like the leases (`max_keys`); a forgotten one is a full
//! share, which can only admit more, never refuse a key it has not seen.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::gcra::Decision;
use crate::redis_store::{Grant, RedisStore, StoreError};

/// A key's shadow bucket: its share of the limit in this process (see the module doc).
#[derive(Clone, Copy, Default)]
struct Shadow {
    /// Theoretical arrival time of the share (the caller's clock, nanoseconds); 0: full.
    tat: u64,
    /// Requests admitted here while Redis was down, not yet counted in Redis.
    owed: u32,
}

/// The most a key may owe Redis: past it, further fallback admissions are not recorded (the
/// shadow bucket still limits them).
const MAX_OWED: u32 = 1 << 16;

const SHARDS: usize = 16;
const LEASE_MAX_LIFE: Duration = Duration::from_secs(1);
const LEASE_MIN_LIFE: Duration = Duration::from_millis(50);

/// One key's lease.
#[derive(Clone, Copy, Default)]
struct Lease {
    /// Tokens left.
    tokens: u32,
    /// When they lapse (the caller's clock, nanoseconds).
    expires: u64,
    /// Redis' remaining count when granted.
    remaining: u64,
    /// When the bucket is full again (the caller's clock, nanoseconds).
    reset_at: u64,
    /// A request is fetching a new lease for this key (since then, nanoseconds), so others
    /// do not fetch too.
    fetching_since: Option<u64>,
}

/// A Redis-backed limit for one route limit.
pub struct RedisLimiter {
    store: Arc<RedisStore>,
    key_base: String,
    emission_us: u64,
    tolerance_us: u64,
    lease: u32,
    lease_life_nanos: u64,
    leases: Box<[Mutex<HashMap<u64, Lease>>]>,
    /// Each key's share of the limit while Redis cannot answer.
    shadows: Box<[Mutex<HashMap<u64, Shadow>>]>,
    /// The shadow bucket's emission interval: `gateways` × the limit's (nanoseconds).
    share_emission_nanos: u64,
    /// The shadow bucket's tolerance: the limit's, at least one share interval (nanoseconds).
    share_tolerance_nanos: u64,
    per_shard: usize,
    hasher: RandomState,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("key_base", &self.key_base)
            .field("emission_us", &self.emission_us)
            .field("tolerance_us", &self.tolerance_us)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// A limit of `requests` per `period` with `burst`, kept in `store` under keys starting
    /// with `key_base` (prefix, route, index and key kind), leasing `lease` tokens at a time
    /// (0: none) for at most `max_keys` keys. Refuses a limit faster than one request per
    /// microsecond per key (Redis time is in microseconds).
    pub fn new(
        store: Arc<RedisStore>,
        key_base: String,
        requests: u64,
        period: Duration,
        burst: u64,
        lease: u32,
        max_keys: usize,
    ) -> Result<Self, String> {
        if requests == 0 || burst == 0 || period.is_zero() {
            return Err("requests, burst and period must be more than zero".into());
        }
        let emission_us = u64::try_from(period.as_micros() / u128::from(requests))
            .map_err(|_| "the period is too long".to_string())?;
        if emission_us == 0 {
            return Err(format!(
                "{requests} per {period:?} is faster than Redis-backed limits resolve (at most one request per microsecond per key)"
            ));
        }
        // Lua numbers are doubles: keep times below 2^53 µs (~285 years).
        let tolerance_us = emission_us
            .checked_mul(burst)
            .filter(|t| *t < (1 << 53))
            .ok_or_else(|| format!("burst {burst} × interval is out of range"))?;
        let lease_life = Duration::from_micros(emission_us.saturating_mul(u64::from(lease)))
            .clamp(LEASE_MIN_LIFE, LEASE_MAX_LIFE);
        let share_emission_nanos = emission_us
            .saturating_mul(1000)
            .saturating_mul(u64::from(store.gateways().max(1)));
        Ok(Self {
            share_emission_nanos,
            share_tolerance_nanos: tolerance_us.saturating_mul(1000).max(share_emission_nanos),
            shadows: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            store,
            key_base,
            emission_us,
            tolerance_us,
            lease,
            lease_life_nanos: lease_life.as_nanos() as u64,
            leases: (0..if lease > 0 { SHARDS } else { 0 })
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            per_shard: (max_keys / SHARDS).max(1),
            hasher: RandomState::new(),
        })
    }

    /// The store this limit uses.
    pub fn store(&self) -> &Arc<RedisStore> {
        &self.store
    }

    /// The lease size (0: none).
    pub fn lease(&self) -> u32 {
        self.lease
    }

    /// Spends a token from this key's local lease, when it has one: no I/O, no allocation.
    /// `None`: ask [`RedisLimiter::check`].
    /// When half the lease or less is left and no request is topping it up, this request is
    /// sent to Redis to do so (`None`), so that a busy key's lease rarely runs dry.
    pub fn try_lease(&self, key: &[u8], now_nanos: u64) -> Option<Decision> {
        self.spend(key, now_nanos, true)
    }

    fn spend(&self, key: &[u8], now_nanos: u64, leave_refill: bool) -> Option<Decision> {
        if self.lease == 0 {
            return None;
        }
        let h = self.hasher.hash_one(key);
        let mut map = self.shard(h);
        let l = map.get_mut(&h)?;
        if l.tokens == 0 || now_nanos >= l.expires {
            return None;
        }
        if leave_refill && l.tokens <= self.lease / 2 && l.fetching_since.is_none() {
            return None;
        }
        l.tokens -= 1;
        Some(Decision::Allowed {
            remaining: l.remaining + u64::from(l.tokens),
            reset: Duration::from_nanos(l.reset_at.saturating_sub(now_nanos)),
        })
    }

    /// Decides for `key` with Redis (taking a new lease when leasing), within the store's
    /// timeout. `now_nanos` is the caller's monotonic clock, for lease expiry only.
    pub async fn check(&self, key: &[u8], now_nanos: u64) -> Result<Decision, StoreError> {
        let fetch = self.begin_fetch(key, now_nanos);
        let want = match &fetch {
            Some(f) => f.want,
            None => {
                // Another request is topping the lease up: spend what is left meanwhile.
                if let Some(d) = self.spend(key, now_nanos, false) {
                    return Ok(d);
                }
                1
            }
        };
        let redis_key = self.redis_key(key);
        let h = self.hasher.hash_one(key);
        // Requests admitted while Redis was down are counted now, before this one.
        let owed = self.take_owed(h);
        let grant = self
            .store
            .gcra(
                &redis_key,
                self.emission_us,
                self.tolerance_us,
                want.saturating_add(owed),
            )
            .await;
        let grant = match grant {
            Ok(g) => Ok(self.repay_and_align(h, owed, g, now_nanos)),
            Err(e) => {
                self.owe(h, owed);
                Err(e)
            }
        };
        let held = match (&fetch, &grant) {
            (Some(f), Ok(g)) => self.store_lease(f, g, now_nanos),
            _ => 0,
        };
        drop(fetch);
        match grant {
            // Refused, but another request's lease may have landed while this one waited:
            // spend it rather than leave it to lapse (which would admit less than the limit).
            Ok(g) if g.granted == 0 => Ok(self
                .spend(key, now_nanos, false)
                .unwrap_or_else(|| to_decision(&g))),
            other => other.map(|g| match to_decision(&g) {
                // What this gateway holds for the key is available to it too.
                Decision::Allowed { reset, .. } => Decision::Allowed {
                    remaining: g.remaining + u64::from(held),
                    reset,
                },
                limited => limited,
            }),
        }
    }

    /// Decides for `key` without Redis, after [`RedisLimiter::check`] failed with `error`:
    /// tokens leased for the key first, then the key's shadow bucket (this gateway's share of
    /// the limit, aligned with Redis' last answer). A request admitted while Redis is down is
    /// owed to it; one whose call timed out is not (Redis will still count it).
    pub fn fallback(&self, key: &[u8], now_nanos: u64, error: StoreError) -> Decision {
        if let Some(d) = self.spend(key, now_nanos, false) {
            return d;
        }
        let h = self.hasher.hash_one(key);
        let mut map = self.shadow_shard(h);
        if !map.contains_key(&h) && map.len() >= self.per_shard {
            forget_shadows(&mut map, self.per_shard, now_nanos);
        }
        let s = map.entry(h).or_default();
        let tat = s.tat.max(now_nanos);
        let new_tat = tat.saturating_add(self.share_emission_nanos);
        let used = new_tat - now_nanos;
        if used <= self.share_tolerance_nanos {
            s.tat = new_tat;
            if error != StoreError::Timeout && s.owed < MAX_OWED {
                s.owed += 1;
            }
            Decision::Allowed {
                remaining: (self.share_tolerance_nanos - used) / self.share_emission_nanos,
                reset: Duration::from_nanos(used),
            }
        } else {
            Decision::Limited {
                retry_after: Duration::from_nanos(used - self.share_tolerance_nanos),
                reset: Duration::from_nanos(tat - now_nanos),
            }
        }
    }

    fn take_owed(&self, h: u64) -> u32 {
        self.shadow_shard(h)
            .get_mut(&h)
            .map_or(0, |s| std::mem::take(&mut s.owed))
    }

    fn owe(&self, h: u64, n: u32) {
        if n > 0 {
            if let Some(s) = self.shadow_shard(h).get_mut(&h) {
                s.owed = s.owed.saturating_add(n).min(MAX_OWED);
            }
        }
    }

    /// Spends what Redis granted on the key's debt first (what is left goes to the request),
    /// and aligns the key's shadow bucket with the shared one.
    fn repay_and_align(&self, h: u64, owed: u32, mut g: Grant, now: u64) -> Grant {
        let repaid = g.granted.min(u64::from(owed));
        g.granted -= repaid;
        if g.granted == 0 && repaid > 0 {
            // Redis had tokens, but they paid for requests already admitted.
            g.retry_after_us = self.emission_us;
        }
        let mut map = self.shadow_shard(h);
        let unpaid = owed - repaid as u32;
        let aligned = now.saturating_add(g.reset_us.saturating_mul(1000));
        match map.get_mut(&h) {
            Some(s) => {
                s.tat = aligned;
                s.owed = s.owed.saturating_add(unpaid).min(MAX_OWED);
            }
            None => {
                if map.len() >= self.per_shard {
                    forget_shadows(&mut map, self.per_shard, now);
                }
                map.insert(
                    h,
                    Shadow {
                        tat: aligned,
                        owed: unpaid,
                    },
                );
            }
        }
        g
    }

    fn shadow_shard(&self, h: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Shadow>> {
        self.shadows[(h as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn redis_key(&self, key: &[u8]) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, key);
        let mut out = String::with_capacity(self.key_base.len() + 64);
        out.push_str(&self.key_base);
        for b in digest.as_ref() {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
        out
    }

    fn shard(&self, h: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Lease>> {
        self.leases[(h as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the right to fetch this key's next lease, unless another request holds it (a
    /// claim older than a few timeouts is taken over: its request was dropped mid-way).
    fn begin_fetch(&self, key: &[u8], now: u64) -> Option<FetchGuard<'_>> {
        if self.lease <= 1 {
            return None;
        }
        let h = self.hasher.hash_one(key);
        let stale = 4 * self.store.timeout().as_nanos() as u64;
        let mut map = self.shard(h);
        if !map.contains_key(&h) && map.len() >= self.per_shard {
            make_room(&mut map, self.per_shard, now);
        }
        let l = map.entry(h).or_default();
        match l.fetching_since {
            Some(since) if now.saturating_sub(since) < stale => None,
            _ => {
                l.fetching_since = Some(now);
                // Top up to `lease` held, never more: that is the overshoot bound.
                let held = if now < l.expires { l.tokens } else { 0 };
                Some(FetchGuard {
                    limiter: self,
                    hash: h,
                    want: self.lease - held.min(self.lease - 1),
                })
            }
        }
    }

    /// Adds a grant to the key's lease; returns the tokens now held.
    fn store_lease(&self, f: &FetchGuard<'_>, g: &Grant, now: u64) -> u32 {
        let mut map = self.shard(f.hash);
        let Some(l) = map.get_mut(&f.hash) else {
            return 0;
        };
        {
            let held = if now < l.expires { l.tokens } else { 0 };
            // The fetching request takes one of the granted tokens for itself.
            let add = u32::try_from(g.granted.saturating_sub(1)).unwrap_or(0);
            l.tokens = held.saturating_add(add).min(self.lease - 1);
            l.expires = now + self.lease_life_nanos;
            l.remaining = g.remaining;
            l.reset_at = now + g.reset_us.saturating_mul(1000);
        }
        l.tokens
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Ends a fetch claim, also when the request is dropped mid-way.
struct FetchGuard<'a> {
    limiter: &'a RedisLimiter,
    hash: u64,
    /// Tokens to ask for: what tops the lease up to its size.
    want: u32,
}

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.limiter.shard(self.hash).get_mut(&self.hash) {
            l.fetching_since = None;
        }
    }
}

/// Drops lapsed leases, then (if that freed less than an eighth) arbitrary ones: forgetting a
/// lease can only admit less.
fn make_room(map: &mut HashMap<u64, Lease>, per_shard: usize, now: u64) {
    map.retain(|_, l| l.fetching_since.is_some() || (l.tokens > 0 && l.expires > now));
    let target = per_shard - per_shard / 8;
    if map.len() > target {
        let victims: Vec<u64> = map.keys().take(map.len() - target).copied().collect();
        for v in victims {
            map.remove(&v);
        }
    }
    map.shrink_to(per_shard);
}

/// Drops shadow buckets that are full again and owe nothing (forgetting them changes no
/// decision), then, if that freed less than an eighth, arbitrary ones: a forgotten share is
/// full, which can only admit more.
fn forget_shadows(map: &mut HashMap<u64, Shadow>, per_shard: usize, now: u64) {
    map.retain(|_, s| s.owed > 0 || s.tat > now);
    let target = per_shard - per_shard / 8;
    if map.len() > target {
        let victims: Vec<u64> = map.keys().take(map.len() - target).copied().collect();
        for v in victims {
            map.remove(&v);
        }
    }
    map.shrink_to(per_shard);
}

fn to_decision(g: &Grant) -> Decision {
    if g.granted > 0 {
        Decision::Allowed {
            remaining: g.remaining + (g.granted - 1),
            reset: Duration::from_micros(g.reset_us),
        }
    } else {
        Decision::Limited {
            retry_after: Duration::from_micros(g.retry_after_us),
            reset: Duration::from_micros(g.reset_us),
        }
    }
}

/// The script's GCRA against a real Redis (`WARDEN_TEST_REDIS_URL`; skipped when unset).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis_store::StoreConfig;

    fn redis_url() -> Option<String> {
        let url = std::env::var("WARDEN_TEST_REDIS_URL").ok();
        if url.is_none() {
            eprintln!("WARDEN_TEST_REDIS_URL is not set: skipping a test that needs Redis");
        }
        url
    }

    fn store(url: &str, timeout_ms: u64) -> Arc<RedisStore> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let unique = format!(
            "warden-test:{}:{}:{}:",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        Arc::new(
            RedisStore::new(
                &StoreConfig {
                    url: url.to_owned(),
                    password: None,
                    timeout: Duration::from_millis(timeout_ms),
                    key_prefix: unique,
                    gateways: 1,
                },
                Box::new(|_| {}),
            )
            .unwrap(),
        )
    }

    fn limiter(
        s: &Arc<RedisStore>,
        requests: u64,
        per: Duration,
        burst: u64,
        lease: u32,
    ) -> RedisLimiter {
        let base = format!("{}r:0:client_ip:", s.key_prefix());
        RedisLimiter::new(s.clone(), base, requests, per, burst, lease, 1000).unwrap()
    }

    /// Generous: the first call also waits for the connection.
    const TIMEOUT_MS: u64 = 500;

    async fn allowed(l: &RedisLimiter, key: &[u8], n: usize) -> usize {
        let mut ok = 0;
        for _ in 0..n {
            let d = match l.try_lease(key, 0) {
                Some(d) => d,
                None => l.check(key, 0).await.expect("redis answers"),
            };
            ok += usize::from(d.is_allowed());
        }
        ok
    }

    #[tokio::test]
    async fn a_fresh_key_gets_exactly_its_burst_at_once() {
        let Some(url) = redis_url() else { return };
        let s = store(&url, TIMEOUT_MS);
        // One every 10 s: nothing refills while the test runs.
        let l = limiter(&s, 6, Duration::from_secs(60), 10, 0);
        assert_eq!(allowed(&l, b"k", 25).await, 10);
        assert_eq!(allowed(&l, b"other", 3).await, 3, "keys are independent");
    }

    #[tokio::test]
    async fn remaining_counts_down_and_retry_after_says_when_the_next_fits() {
        let Some(url) = redis_url() else { return };
        let s = store(&url, TIMEOUT_MS);
        let l = limiter(&s, 6, Duration::from_secs(60), 3, 0); // one every 10 s
        let mut remaining = Vec::new();
        for _ in 0..3 {
            match l.check(b"k", 0).await.unwrap() {
                Decision::Allowed {
                    remaining: r,
                    reset,
                } => {
                    remaining.push(r);
                    assert!(reset <= Duration::from_secs(30), "{reset:?}");
                }
                d => panic!("{d:?}"),
            }
        }
        assert_eq!(remaining, [2, 1, 0]);
        match l.check(b"k", 0).await.unwrap() {
            Decision::Limited { retry_after, reset } => {
                assert!(
                    retry_after > Duration::from_millis(9_000)
                        && retry_after <= Duration::from_secs(10),
                    "{retry_after:?}"
                );
                assert!(reset > Duration::from_secs(29), "{reset:?}");
            }
            d => panic!("{d:?}"),
        }
    }

    #[tokio::test]
    async fn refill_is_one_request_per_emission_interval_on_the_redis_clock() {
        let Some(url) = redis_url() else { return };
        let s = store(&url, TIMEOUT_MS);
        let l = limiter(&s, 5, Duration::from_secs(1), 2, 0); // one every 200 ms
        assert_eq!(allowed(&l, b"k", 2).await, 2);
        let wait = match l.check(b"k", 0).await.unwrap() {
            Decision::Limited { retry_after, .. } => retry_after,
            d => panic!("{d:?}"),
        };
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        tokio::time::sleep(wait + Duration::from_millis(5)).await;
        assert_eq!(allowed(&l, b"k", 3).await, 1, "exactly one refilled");
        // After burst × interval of silence the bucket is full again.
        tokio::time::sleep(Duration::from_millis(420)).await;
        assert_eq!(allowed(&l, b"k", 5).await, 2);
    }

    #[tokio::test]
    async fn a_lease_is_taken_at_once_spent_locally_and_topped_up() {
        let Some(url) = redis_url() else { return };
        let s = store(&url, TIMEOUT_MS);
        let leased = limiter(&s, 6, Duration::from_secs(60), 10, 4);
        let plain = limiter(&s, 6, Duration::from_secs(60), 10, 0);
        // The first request takes 4 tokens from Redis (Redis keeps 6, this gateway 3).
        match leased.check(b"k", 0).await.unwrap() {
            Decision::Allowed { remaining, .. } => assert_eq!(remaining, 9),
            d => panic!("{d:?}"),
        }
        assert_eq!(held(&leased, b"k"), 3);
        match leased.try_lease(b"k", 1) {
            Some(Decision::Allowed { remaining, .. }) => assert_eq!(remaining, 8),
            d => panic!("{d:?}"),
        }
        // Half left: the next request tops the lease up to 4 (asks for 2).
        assert!(leased.try_lease(b"k", 1).is_none());
        match leased.check(b"k", 1).await.unwrap() {
            Decision::Allowed { remaining, .. } => assert_eq!(remaining, 4 + 3),
            d => panic!("{d:?}"),
        }
        assert_eq!(held(&leased, b"k"), 3);
        // Every token Redis granted is spent, none twice, and the lease never holds more
        // than lease − 1: exactly the burst is admitted, with fewer round trips than requests.
        let (mut admitted, mut round_trips) = (3, 1);
        for _ in 0..10 {
            let d = match leased.try_lease(b"k", 2) {
                Some(d) => d,
                None => {
                    round_trips += 1;
                    leased.check(b"k", 2).await.unwrap()
                }
            };
            admitted += usize::from(d.is_allowed());
            assert!(held(&leased, b"k") <= 3);
        }
        assert_eq!(admitted, 10);
        assert!(round_trips < 10, "{round_trips} round trips");
        // Redis counted every leased token: another gateway sharing the limit gets none.
        assert_eq!(allowed(&plain, b"k", 3).await, 0);
    }

    /// No Redis needed: the shadow bucket is this process' own state.
    #[test]
    fn the_fallback_limits_at_the_gateways_share_aligned_with_redis_and_owes_what_it_admits() {
        let s = Arc::new(
            RedisStore::new(
                &StoreConfig {
                    url: "redis://127.0.0.1:1".into(),
                    password: None,
                    timeout: Duration::from_millis(10),
                    key_prefix: "t:".into(),
                    gateways: 3,
                },
                Box::new(|_| {}),
            )
            .unwrap(),
        );
        // 30 per 1000 s: the share is 10 at once, then one per 100 s.
        let l = limiter(&s, 30, Duration::from_secs(1000), 30, 0);
        let admitted = |key: &[u8], n, e| {
            (0..n)
                .filter(|_| l.fallback(key, 5, e).is_allowed())
                .count()
        };
        assert_eq!(admitted(b"fresh", 12, StoreError::Down), 10);
        let h = l.hasher.hash_one(b"fresh");
        assert_eq!(l.take_owed(h), 10, "admitted while Redis was down: owed");
        // Redis answers the next call (which asked for 1 + 10): 11 granted, 19 left. The debt
        // takes 10; the shadow now holds a third of what Redis says is left.
        let g = Grant {
            granted: 11,
            remaining: 19,
            retry_after_us: 0,
            reset_us: 11 * 33_333_333,
        };
        assert_eq!(l.repay_and_align(h, 10, g, 5).granted, 1);
        assert_eq!(admitted(b"fresh", 10, StoreError::Timeout), 6);
        assert_eq!(
            l.take_owed(h),
            0,
            "a timed-out call is counted by Redis itself"
        );
        // A key Redis refused is exhausted here too; a short grant leaves the rest owed.
        let h = l.hasher.hash_one(b"spent");
        let refused = Grant {
            granted: 0,
            remaining: 0,
            retry_after_us: 33_333_333,
            reset_us: 1_000_000_000,
        };
        l.repay_and_align(h, 4, refused, 5);
        assert_eq!(admitted(b"spent", 5, StoreError::Down), 0);
        assert_eq!(l.take_owed(h), 4);
    }

    fn held(l: &RedisLimiter, key: &[u8]) -> u32 {
        let h = l.hasher.hash_one(key);
        l.shard(h).get(&h).map_or(0, |l| l.tokens)
    }

    #[tokio::test]
    async fn a_lease_grants_what_fits_and_lapses() {
        let Some(url) = redis_url() else { return };
        let s = store(&url, TIMEOUT_MS);
        let l = limiter(&s, 6, Duration::from_secs(60), 3, 3);
        assert!(l.check(b"k", 0).await.unwrap().is_allowed());
        // A lapsed lease is forgotten (its tokens stay spent in Redis): only less is admitted.
        let lapsed = 2 * LEASE_MAX_LIFE.as_nanos() as u64;
        assert!(l.try_lease(b"k", lapsed).is_none());
        assert!(!l.check(b"k", lapsed).await.unwrap().is_allowed());
        let l = limiter(&s, 6, Duration::from_secs(60), 3, 3);
        // Burst 2 left of 3 in a fresh key's bucket after one plain request: a lease of 3
        // gets the 2 that fit.
        let plain = limiter(&s, 6, Duration::from_secs(60), 3, 0);
        assert!(plain.check(b"j", 0).await.unwrap().is_allowed());
        assert!(l.check(b"j", 0).await.unwrap().is_allowed());
        assert_eq!(held(&l, b"j"), 1);
        // The top-up finds Redis empty; the held token is spent instead.
        assert!(l.try_lease(b"j", 0).is_none());
        assert!(l.check(b"j", 0).await.unwrap().is_allowed());
        assert!(!l.check(b"j", 0).await.unwrap().is_allowed());
    }

    #[tokio::test]
    async fn key_values_are_hashed_and_keys_expire_when_the_bucket_is_full_again() {
        let Some(url) = redis_url() else { return };
        let s = store(&url, TIMEOUT_MS);
        let l = limiter(&s, 10, Duration::from_secs(1), 10, 0);
        assert!(l.check(b"secret-api-key", 0).await.unwrap().is_allowed());
        let ep = crate::resp::Endpoint::parse(&url).unwrap();
        let c = crate::resp::Connection::connect(&ep).await.unwrap();
        let pattern = format!("{}*", s.key_prefix());
        let keys = match c.call(&[b"KEYS", pattern.as_bytes()]).await.unwrap() {
            crate::resp::Value::Array(keys) => keys,
            v => panic!("{v:?}"),
        };
        assert_eq!(keys.len(), 1, "{keys:?}");
        let crate::resp::Value::Bulk(key) = &keys[0] else {
            panic!("{keys:?}")
        };
        let key = String::from_utf8_lossy(key).into_owned();
        assert!(!key.contains("secret"), "{key}");
        assert_eq!(
            key.len(),
            s.key_prefix().len() + "r:0:client_ip:".len() + 64
        );
        let ttl = match c.call(&[b"PTTL", key.as_bytes()]).await.unwrap() {
            crate::resp::Value::Int(t) => t,
            v => panic!("{v:?}"),
        };
        assert!(
            (1..=100).contains(&ttl),
            "one request refills in 100 ms: pttl {ttl}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_store_fails_within_its_timeout_then_at_once() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = store(&format!("redis://127.0.0.1:{port}"), 20);
        let l = limiter(&s, 10, Duration::from_secs(1), 10, 0);
        let t = std::time::Instant::now();
        assert!(l.check(b"k", 0).await.is_err());
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
        let t = std::time::Instant::now();
        assert_eq!(l.check(b"k", 0).await, Err(StoreError::Down));
        assert!(
            t.elapsed() < Duration::from_millis(5),
            "down: fails at once, {:?}",
            t.elapsed()
        );
    }
}
