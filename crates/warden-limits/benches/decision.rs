//! The cost of one local rate-limit decision (issue target: under 1 µs median).
//!
//! `cargo bench -p warden-limits --bench decision`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use warden_limits::{Gcra, LocalLimiter};

fn decision(c: &mut Criterion) {
    let limit = Gcra::new(1_000_000, Duration::from_secs(1), 1_000).expect("limit");
    let l = LocalLimiter::new(limit, 100_000);
    // A warm key set: 10,000 distinct client addresses.
    let keys: Vec<[u8; 16]> = (0u32..10_000)
        .map(|i| {
            std::net::Ipv4Addr::from(0x0a00_0000 + i)
                .to_ipv6_mapped()
                .octets()
        })
        .collect();
    let mut now = 1_000_000_000u64;
    let mut i = 0usize;
    c.bench_function("local_gcra_decision_10k_keys", |b| {
        b.iter(|| {
            now += 1_000;
            i = (i + 1) % keys.len();
            black_box(l.check(black_box(&keys[i]), now))
        })
    });
    c.bench_function("local_gcra_decision_one_hot_key", |b| {
        b.iter(|| {
            now += 1_000;
            black_box(l.check(black_box(b"hot"), now))
        })
    });
}

criterion_group!(benches, decision);
criterion_main!(benches);
