//! Cedar policy text through `Policies::parse` (Warden's nesting guard, Cedar's parser, strict
//! validation against Warden's schema); policies that load are then evaluated for a few
//! requests (evaluation must not panic either).
//!
//! A NUL byte splits the input into several policy files, so ids across files are exercised.
//!
//! Cedar's parser recurses per nesting level and a stack overflow aborts the process; Warden
//! guards against it lexically (`too_deep` in policy.rs), budgeted for a 2 MiB thread stack,
//! the size of a tokio worker's or any spawned thread's stack. Each input is therefore parsed
//! on a fresh thread with a 2 MiB stack, not on libFuzzer's 8 MiB main thread, so an input
//! that gets past the guard but overflows in production overflows here too.

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use warden_auth::policy::{Policies, PolicyRequest};
use warden_auth::{AuthMethod, Identity};

/// The stack Warden's guard is budgeted for; `FUZZ_POLICY_STACK` (bytes) overrides it, e.g.
/// to look for inputs that come close to the limit.
fn stack_size() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        std::env::var("FUZZ_POLICY_STACK")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2 * 1024 * 1024)
    })
}

fn identity() -> Identity {
    let mut id = Identity::new("alice", AuthMethod::Jwt);
    id.issuer = Some("https://issuer.example".into());
    id.scopes = vec!["read".into(), "write".into()];
    id.client_id = Some("cli".into());
    if let Some(claims) = json!({"tenant": "acme", "level": 3, "admin": false,
        "groups": ["ops", "dev"], "org": {"id": 7}, "nothing": null})
    .as_object()
    {
        id.claims = claims.clone();
    }
    id
}

fn run(text: &str) {
    let files: Vec<(String, String)> = text
        .split('\0')
        .enumerate()
        .map(|(i, t)| (format!("fuzz{i}.cedar"), t.to_owned()))
        .collect();
    let policies = match Policies::parse(&files) {
        Ok(p) => p,
        Err(errors) => {
            assert!(!errors.is_empty(), "Err with no error message");
            return;
        }
    };
    let id = identity();
    let cert = Identity::new("spiffe://example.org/ns/a/sa/b", AuthMethod::ClientCert);
    let ips: [IpAddr; 3] = [
        IpAddr::from([10, 0, 0, 1]),
        "::ffff:192.0.2.7".parse().expect("ip"),
        "2001:db8::1".parse().expect("ip"),
    ];
    for (identity, method, ip) in [
        (&id, "GET", ips[0]),
        (&id, "DELETE", ips[1]),
        (&cert, "POST", ips[2]),
        (&id, "BREW", ips[0]),
    ] {
        let d = policies.is_authorized(&PolicyRequest {
            identity,
            method,
            route: "api",
            path: "/api/things",
            host: "example.com",
            client_ip: ip,
        });
        assert!(!(d.allowed && method == "BREW"), "a method outside the schema was allowed");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text = text.to_owned();
    // A panic or stack overflow on this thread aborts the process (libfuzzer-sys's panic hook,
    // Rust's guard-page handler), which libFuzzer records as a crash.
    std::thread::Builder::new()
        .name("policy_parse".into())
        .stack_size(stack_size())
        .spawn(move || run(&text))
        .expect("spawn parser thread")
        .join()
        .expect("parser thread");
});
