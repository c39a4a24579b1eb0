//! Throttling of failed client authentications, per client id and per source address.
//!
//! Only failures are counted, each in a GCRA bucket (`warden_limits::LocalLimiter`): `n`
//! failures per period, refilled evenly. When a failure finds its bucket empty, the key is
//! blocked until the bucket has room again, and every attempt for a blocked key — right or
//! wrong — gets 429 with `Retry-After` *without* its credentials being checked, so a guesser
//! learns nothing while blocked. Successful authentications cost nothing, so a busy client
//! with the right secret is never slowed down by this.
//!
//! Memory is bounded: the limiters by `max_keys`, the block list by the same number (expired
//! blocks are dropped first, then arbitrary ones).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use warden_limits::{Decision, Gcra, LocalLimiter};

use crate::settings::Settings;

/// The failure throttle.
pub struct Throttle {
    per_client: LocalLimiter,
    per_address: LocalLimiter,
    blocked: Mutex<HashMap<Vec<u8>, u64>>,
    max_blocked: usize,
    epoch: Instant,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Throttle")
    }
}

fn client_key(id: &str) -> Vec<u8> {
    let mut k = b"c:".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

fn addr_key(ip: IpAddr) -> Vec<u8> {
    // IPv6 clients usually own a /64: count them as one.
    let mut k = b"a:".to_vec();
    match ip {
        IpAddr::V4(v4) => k.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => k.extend_from_slice(&v6.octets()[..8]),
    }
    k
}

impl Throttle {
    /// A throttle with the configured limits.
    pub fn new(s: &Settings) -> Throttle {
        let limiter = |n: u64| {
            let g = Gcra::new(n, s.failed_period, n)
                .or_else(|| Gcra::new(1, std::time::Duration::from_secs(1), 1))
                .expect("a 1/s limit is valid");
            LocalLimiter::new(g, s.failed_max_keys)
        };
        Throttle {
            per_client: limiter(s.failed_per_client),
            per_address: limiter(s.failed_per_address),
            blocked: Mutex::new(HashMap::new()),
            max_blocked: s.failed_max_keys.max(1),
            epoch: Instant::now(),
        }
    }

    fn nanos(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Seconds to wait when the client id or address is blocked now.
    pub fn blocked(&self, client_id: Option<&str>, ip: IpAddr) -> Option<u64> {
        let now = self.nanos();
        let map = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys = vec![addr_key(ip)];
        if let Some(c) = client_id {
            keys.push(client_key(c));
        }
        keys.iter()
            .filter_map(|k| map.get(k))
            .filter(|until| **until > now)
            .map(|until| (until - now).div_ceil(1_000_000_000))
            .max()
    }

    /// Counts one failure; returns seconds to wait when it emptied a bucket.
    pub fn failure(&self, client_id: Option<&str>, ip: IpAddr) -> Option<u64> {
        let now = self.nanos();
        let mut wait = None;
        let mut checks = vec![(addr_key(ip), &self.per_address)];
        if let Some(c) = client_id {
            checks.push((client_key(c), &self.per_client));
        }
        let mut map = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        for (key, limiter) in checks {
            if let Decision::Limited { retry_after, .. } = limiter.check(&key, now) {
                let until = now + retry_after.as_nanos() as u64;
                if map.len() >= self.max_blocked {
                    map.retain(|_, u| *u > now);
                    if map.len() >= self.max_blocked {
                        let victim = map.keys().next().cloned();
                        if let Some(v) = victim {
                            map.remove(&v);
                        }
                    }
                }
                map.insert(key, until);
                let secs = retry_after.as_nanos().div_ceil(1_000_000_000) as u64;
                wait = Some(wait.map_or(secs, |w: u64| w.max(secs)));
            }
        }
        wait
    }
}
