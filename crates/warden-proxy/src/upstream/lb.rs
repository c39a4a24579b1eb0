//! Load balancing over usable endpoints (healthy and not ejected; the caller says which):
//! round-robin, least-request (power of two choices) and consistent hashing (a ring with
//! virtual nodes, so one endpoint's departure moves only its own share of keys, which fall to
//! the next usable endpoint on the ring).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use warden_config::LoadBalancer;

use super::EndpointState;

const VNODES: usize = 160;

/// A stable 64-bit hash (FNV-1a then a mix), the same in every process and version.
fn hash64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finaliser: spreads FNV's weak low bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

pub(crate) enum Balancer {
    RoundRobin(AtomicUsize),
    LeastRequest,
    Hash {
        ring: Vec<(u64, usize)>,
        fallback: AtomicUsize,
    },
}

impl Balancer {
    pub(crate) fn new(kind: LoadBalancer, endpoints: &[Arc<EndpointState>]) -> Self {
        match kind {
            LoadBalancer::RoundRobin => Balancer::RoundRobin(AtomicUsize::new(0)),
            LoadBalancer::LeastRequest => Balancer::LeastRequest,
            LoadBalancer::ConsistentHash => {
                let mut ring = Vec::with_capacity(endpoints.len() * VNODES);
                for (i, ep) in endpoints.iter().enumerate() {
                    for v in 0..VNODES {
                        let key = format!("{}#{v}", ep.label);
                        ring.push((hash64(key.as_bytes()), i));
                    }
                }
                ring.sort_unstable();
                Balancer::Hash {
                    ring,
                    fallback: AtomicUsize::new(0),
                }
            }
        }
    }

    /// Index of the chosen endpoint among those `usable` says yes to, or `None` when there is
    /// none. `usable` is asked only about candidates, in the policy's order.
    pub(crate) fn pick(
        &self,
        eps: &[Arc<EndpointState>],
        hash_value: Option<&[u8]>,
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = eps.len();
        match self {
            Balancer::RoundRobin(next) => round_robin(next, n, usable),
            Balancer::LeastRequest => {
                let candidates: Vec<usize> = (0..n).filter(|i| usable(*i)).collect();
                match candidates.len() {
                    0 => None,
                    1 => Some(candidates[0]),
                    len => {
                        let a = rand::random_range(0..len);
                        let mut b = rand::random_range(0..len - 1);
                        if b >= a {
                            b += 1;
                        }
                        let (a, b) = (candidates[a], candidates[b]);
                        Some(if eps[b].in_flight() < eps[a].in_flight() {
                            b
                        } else {
                            a
                        })
                    }
                }
            }
            Balancer::Hash { ring, fallback } => {
                let Some(value) = hash_value else {
                    return round_robin(fallback, n, usable);
                };
                if ring.is_empty() || n == 0 {
                    return None;
                }
                let h = hash64(value);
                let start = ring.partition_point(|(p, _)| *p < h);
                let mut refused = vec![false; n];
                (0..ring.len())
                    .map(|k| ring[(start + k) % ring.len()].1)
                    .find(|i| {
                        // Each endpoint has many points on the ring: ask about it once.
                        if refused[*i] {
                            return false;
                        }
                        let ok = usable(*i);
                        refused[*i] = !ok;
                        ok
                    })
            }
        }
    }
}

fn round_robin(next: &AtomicUsize, n: usize, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let start = next.fetch_add(1, Ordering::Relaxed);
    (0..n).map(|k| (start + k) % n).find(|i| usable(*i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use warden_telemetry::metrics::EndpointLabel;

    fn eps(n: usize) -> Vec<Arc<EndpointState>> {
        (0..n)
            .map(|i| {
                let label = Arc::new(format!("10.0.0.{i}:80"));
                Arc::new(EndpointState {
                    index: i,
                    authority: label.parse().unwrap(),
                    label: label.clone(),
                    healthy: AtomicBool::new(true),
                    in_flight: AtomicUsize::new(0),
                    metric: EndpointLabel {
                        cluster: Arc::new("c".into()),
                        endpoint: label,
                    },
                    breaker: None,
                })
            })
            .collect()
    }

    fn healthy(e: &[Arc<EndpointState>]) -> impl Fn(usize) -> bool + '_ {
        |i| e[i].is_healthy()
    }

    #[test]
    fn round_robin_cycles_and_skips_unhealthy() {
        let e = eps(3);
        let b = Balancer::new(LoadBalancer::RoundRobin, &e);
        let picks: Vec<_> = (0..6)
            .map(|_| b.pick(&e, None, &healthy(&e)).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        e[1].healthy.store(false, Ordering::Release);
        let picks: Vec<_> = (0..4)
            .map(|_| b.pick(&e, None, &healthy(&e)).unwrap())
            .collect();
        assert!(!picks.contains(&1), "{picks:?}");
        for ep in &e {
            ep.healthy.store(false, Ordering::Release);
        }
        assert_eq!(b.pick(&e, None, &healthy(&e)), None);
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let e = eps(2);
        e[0].in_flight.store(10, Ordering::Relaxed);
        let b = Balancer::new(LoadBalancer::LeastRequest, &e);
        for _ in 0..20 {
            assert_eq!(b.pick(&e, None, &healthy(&e)), Some(1));
        }
    }

    #[test]
    fn every_policy_skips_what_the_caller_rules_out() {
        let e = eps(4);
        let not_2 = |i: usize| i != 2;
        for kind in [
            LoadBalancer::RoundRobin,
            LoadBalancer::LeastRequest,
            LoadBalancer::ConsistentHash,
        ] {
            let b = Balancer::new(kind, &e);
            for k in 0..200 {
                let key = format!("k{k}");
                let got = b.pick(&e, Some(key.as_bytes()), &not_2);
                assert!(got.is_some_and(|i| i != 2), "{got:?}");
            }
            assert_eq!(b.pick(&e, Some(b"x"), &|_| false), None);
        }
    }

    #[test]
    fn consistent_hash_is_sticky_and_moves_only_the_lost_share() {
        let e = eps(4);
        let b = Balancer::new(LoadBalancer::ConsistentHash, &e);
        let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
        let before: Vec<_> = keys
            .iter()
            .map(|k| b.pick(&e, Some(k.as_bytes()), &healthy(&e)).unwrap())
            .collect();
        let again: Vec<_> = keys
            .iter()
            .map(|k| b.pick(&e, Some(k.as_bytes()), &healthy(&e)).unwrap())
            .collect();
        assert_eq!(before, again);
        for i in 0..4 {
            let share = before.iter().filter(|p| **p == i).count();
            assert!(
                (150..=350).contains(&share),
                "endpoint {i} got {share} of 1000"
            );
        }
        e[2].healthy.store(false, Ordering::Release);
        let after: Vec<_> = keys
            .iter()
            .map(|k| b.pick(&e, Some(k.as_bytes()), &healthy(&e)).unwrap())
            .collect();
        for (x, y) in before.iter().zip(&after) {
            if *x != 2 {
                assert_eq!(x, y, "a key not on the lost endpoint moved");
            } else {
                assert_ne!(*y, 2);
            }
        }
    }
}
