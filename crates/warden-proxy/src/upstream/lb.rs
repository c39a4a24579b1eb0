//! Load balancing over healthy endpoints: round-robin, least-request (power of two choices)
//! and consistent hashing (a ring with virtual nodes, so one endpoint's departure moves only
//! its own share of keys).

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

    /// Index of the chosen endpoint, or `None` when none is healthy.
    pub(crate) fn pick(
        &self,
        eps: &[Arc<EndpointState>],
        hash_value: Option<&[u8]>,
    ) -> Option<usize> {
        let n = eps.len();
        match self {
            Balancer::RoundRobin(next) => round_robin(next, eps),
            Balancer::LeastRequest => {
                let healthy = eps.iter().filter(|e| e.is_healthy()).count();
                if healthy == 0 {
                    return None;
                }
                let nth = |k: usize| {
                    eps.iter()
                        .enumerate()
                        .filter(|(_, e)| e.is_healthy())
                        .nth(k)
                        .map(|(i, _)| i)
                };
                if healthy == 1 {
                    return nth(0);
                }
                let a = rand::random_range(0..healthy);
                let mut b = rand::random_range(0..healthy - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (nth(a)?, nth(b)?);
                Some(if eps[b].in_flight() < eps[a].in_flight() {
                    b
                } else {
                    a
                })
            }
            Balancer::Hash { ring, fallback } => {
                let Some(value) = hash_value else {
                    return round_robin(fallback, eps);
                };
                if ring.is_empty() || n == 0 {
                    return None;
                }
                let h = hash64(value);
                let start = ring.partition_point(|(p, _)| *p < h);
                (0..ring.len())
                    .map(|k| ring[(start + k) % ring.len()].1)
                    .find(|i| eps[*i].is_healthy())
            }
        }
    }
}

fn round_robin(next: &AtomicUsize, eps: &[Arc<EndpointState>]) -> Option<usize> {
    let n = eps.len();
    let start = next.fetch_add(1, Ordering::Relaxed);
    (0..n)
        .map(|k| (start + k) % n)
        .find(|i| eps[*i].is_healthy())
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
                    authority: label.parse().unwrap(),
                    label: label.clone(),
                    healthy: AtomicBool::new(true),
                    in_flight: AtomicUsize::new(0),
                    metric: EndpointLabel {
                        cluster: Arc::new("c".into()),
                        endpoint: label,
                    },
                })
            })
            .collect()
    }

    #[test]
    fn round_robin_cycles_and_skips_unhealthy() {
        let e = eps(3);
        let b = Balancer::new(LoadBalancer::RoundRobin, &e);
        let picks: Vec<_> = (0..6).map(|_| b.pick(&e, None).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        e[1].healthy.store(false, Ordering::Release);
        let picks: Vec<_> = (0..4).map(|_| b.pick(&e, None).unwrap()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        for ep in &e {
            ep.healthy.store(false, Ordering::Release);
        }
        assert_eq!(b.pick(&e, None), None);
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let e = eps(2);
        e[0].in_flight.store(10, Ordering::Relaxed);
        let b = Balancer::new(LoadBalancer::LeastRequest, &e);
        for _ in 0..20 {
            assert_eq!(b.pick(&e, None), Some(1));
        }
    }

    #[test]
    fn consistent_hash_is_sticky_and_moves_only_the_lost_share() {
        let e = eps(4);
        let b = Balancer::new(LoadBalancer::ConsistentHash, &e);
        let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
        let before: Vec<_> = keys
            .iter()
            .map(|k| b.pick(&e, Some(k.as_bytes())).unwrap())
            .collect();
        let again: Vec<_> = keys
            .iter()
            .map(|k| b.pick(&e, Some(k.as_bytes())).unwrap())
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
            .map(|k| b.pick(&e, Some(k.as_bytes())).unwrap())
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
