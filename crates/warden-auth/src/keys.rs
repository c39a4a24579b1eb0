//! An issuer's key set: fixed (from config files) or remote (a JWKS URL, kept fresh by the
//! fetcher in [`crate::jwks`]).
//!
//! Readers take the current set without locking (`ArcSwap`). A token whose `kid` is not in the
//! set may ask for a re-fetch, but at most once per `unknown_kid_interval`: a flood of tokens
//! with made-up kids causes one fetch, not one per token.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};
use warden_crypto::jws::{Alg, Jwk};

/// The keys of one issuer.
pub struct KeySet {
    keys: ArcSwap<Vec<Jwk>>,
    ready: AtomicBool,
    remote: bool,
    /// Bumped on every completed fetch attempt (success or not), so waiters wake either way.
    fetched: watch::Sender<u64>,
    /// Wakes the fetcher for an out-of-schedule fetch.
    pub(crate) wake: Notify,
    /// When the last unknown-kid fetch was allowed (nanoseconds since `epoch`; 0: never).
    last_unknown: AtomicU64,
    /// An unknown-kid fetch was asked for and has not finished.
    in_flight: AtomicBool,
    epoch: Instant,
    unknown_kid_interval: Duration,
    fetch_timeout: Duration,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.load().len())
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl KeySet {
    /// A key set that never changes (files in the config; reloaded with it).
    pub fn fixed(keys: Vec<Jwk>) -> Arc<KeySet> {
        Arc::new(Self::new(keys, false, Duration::ZERO, Duration::ZERO))
    }

    /// An empty key set filled by a fetcher; not ready until the first fetch succeeds.
    pub fn remote(unknown_kid_interval: Duration, fetch_timeout: Duration) -> Arc<KeySet> {
        Arc::new(Self::new(
            Vec::new(),
            true,
            unknown_kid_interval,
            fetch_timeout,
        ))
    }

    fn new(keys: Vec<Jwk>, remote: bool, interval: Duration, timeout: Duration) -> KeySet {
        KeySet {
            keys: ArcSwap::from_pointee(keys),
            ready: AtomicBool::new(!remote),
            remote,
            fetched: watch::channel(0).0,
            wake: Notify::new(),
            last_unknown: AtomicU64::new(0),
            in_flight: AtomicBool::new(false),
            epoch: Instant::now(),
            unknown_kid_interval: interval,
            fetch_timeout: timeout,
        }
    }

    /// The current keys.
    pub fn current(&self) -> Arc<Vec<Jwk>> {
        self.keys.load_full()
    }

    /// Whether keys have been loaded at least once.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether a fetcher keeps this set fresh.
    pub fn is_remote(&self) -> bool {
        self.remote
    }

    /// Replaces the keys (a successful fetch).
    pub fn install(&self, keys: Vec<Jwk>) {
        self.keys.store(Arc::new(keys));
        self.ready.store(true, Ordering::Release);
    }

    /// Records that a fetch attempt finished (after [`KeySet::install`] when it succeeded).
    pub fn fetch_done(&self) {
        self.in_flight.store(false, Ordering::Release);
        self.fetched.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Finds the key for a token: the one with its `kid` (whose type and `alg` fit), or with no
    /// `kid` the only key that fits `alg`. A key configured without a kid (a PEM file, a shared
    /// secret) is used for tokens whose kid names no key, when it is the only such key.
    pub fn find(&self, kid: Option<&str>, alg: Alg) -> Lookup {
        let keys = self.keys.load();
        let fits = |k: &&Jwk| k.key.fits(alg) && k.alg.is_none_or(|a| a == alg);
        match kid {
            Some(kid) => match keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                Some(k) if fits(&k) => Lookup::Found(k.key.clone()),
                Some(_) => Lookup::WrongType,
                None => {
                    let mut unnamed = keys.iter().filter(|k| k.kid.is_none());
                    match (unnamed.next(), unnamed.next()) {
                        (Some(k), None) if fits(&k) => Lookup::Found(k.key.clone()),
                        (Some(_), None) => Lookup::WrongType,
                        _ => Lookup::UnknownKid,
                    }
                }
            },
            None => {
                let mut fit = keys
                    .iter()
                    .filter(|k| k.key.fits(alg) && k.alg.is_none_or(|a| a == alg));
                match (fit.next(), fit.next()) {
                    (Some(k), None) => Lookup::Found(k.key.clone()),
                    (None, _) => Lookup::WrongType,
                    (Some(_), Some(_)) => Lookup::Ambiguous,
                }
            }
        }
    }

    /// For a token with an unknown `kid`: asks the fetcher for a fresh set, at most once per
    /// `unknown_kid_interval`, and waits for that fetch (bounded by the fetch timeout). Returns
    /// false at once when a fetch is not allowed now.
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        if !self.remote {
            return false;
        }
        let wait = self.fetch_timeout + Duration::from_millis(100);
        let mut rx = self.fetched.subscribe();
        rx.borrow_and_update();
        let now = self.epoch.elapsed().as_nanos() as u64 + 1;
        let last = self.last_unknown.load(Ordering::Acquire);
        let interval = self.unknown_kid_interval.as_nanos() as u64;
        let claimed = (last == 0 || now.saturating_sub(last) >= interval)
            && self
                .last_unknown
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        if claimed {
            self.in_flight.store(true, Ordering::Release);
            self.wake.notify_one();
        } else if !self.in_flight.load(Ordering::Acquire) {
            // Fetched recently and nothing in flight: the kid is unknown to the issuer.
            return false;
        }
        // Wait for the fetch this or an earlier request asked for.
        tokio::time::timeout(wait, rx.changed()).await.is_ok()
    }
}

/// The result of looking for a token's key.
#[derive(Debug)]
pub enum Lookup {
    /// The key to check the signature with.
    Found(warden_crypto::jws::VerifyingKey),
    /// No key has the token's `kid`.
    UnknownKid,
    /// The key with that `kid` is of another type than `alg` (or no key fits `alg`).
    WrongType,
    /// No `kid`, and several keys fit.
    Ambiguous,
}
