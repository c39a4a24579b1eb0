//! Cedar policy text through `Policies::parse` (Warden's nesting guard, Cedar's parser, strict
//! validation against Warden's schema); policies that load are then evaluated for a few
//! requests. Nothing may panic or overflow the stack.
//!
//! A NUL byte splits the input into several policy files, so ids across files are exercised.
//!
//! Stack: Cedar's parser, validator, evaluator and `Drop` recurse once per nesting level.
//! Warden guards parsing lexically (`too_deep` in policy.rs), budgeted for a 2 MiB thread
//! stack, the size of a tokio worker's. Each input is therefore handled on a fresh thread with
//! a 2 MiB stack (`FUZZ_POLICY_STACK` bytes overrides it), not on libFuzzer's 8 MiB main
//! thread, so an input that gets past the guard and overflows there is a crash here.
//!
//! Cedar's validator and evaluator also stop by themselves when less than 100 KiB of stack is
//! left, and they do so quietly: the validator then reports no type errors for the policy
//! (strict validation is skipped), and the evaluator fails the policy (Warden then refuses
//! every request). So a policy that loads is parsed and evaluated again on a 256 MiB stack,
//! and the outcome must be the same: what Warden accepts and decides must not depend on how
//! deep the parser could go. `FUZZ_POLICY_ORACLE=0` turns this comparison off (to look only
//! for panics and stack overflows while such a finding is open).

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use warden_auth::policy::{Policies, PolicyDecision, PolicyRequest};
use warden_auth::{AuthMethod, Identity};

/// The stack Warden's guard is budgeted for; `FUZZ_POLICY_STACK` (bytes) overrides it.
fn stack_size() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        std::env::var("FUZZ_POLICY_STACK")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2 * 1024 * 1024)
    })
}

/// Whether to compare with a run on a big stack (`FUZZ_POLICY_ORACLE=0`: no).
fn oracle() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("FUZZ_POLICY_ORACLE").map_or(true, |v| v != "0"))
}

/// A stack no policy within the guard can exhaust.
const BIG_STACK: usize = 256 * 1024 * 1024;

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

/// What Warden made of the text: the load errors, or the decisions for a few requests.
type Outcome = Result<Vec<PolicyDecision>, Vec<String>>;

fn run(text: &str) -> Outcome {
    let files: Vec<(String, String)> = text
        .split('\0')
        .enumerate()
        .map(|(i, t)| (format!("fuzz{i}.cedar"), t.to_owned()))
        .collect();
    let policies = Policies::parse(&files)?;
    let id = identity();
    let cert = Identity::new("spiffe://example.org/ns/a/sa/b", AuthMethod::ClientCert);
    let ips: [IpAddr; 3] = [
        IpAddr::from([10, 0, 0, 1]),
        "::ffff:192.0.2.7".parse().expect("ip"),
        "2001:db8::1".parse().expect("ip"),
    ];
    let mut decisions = Vec::new();
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
        assert!(
            !(d.allowed && method == "BREW"),
            "a method outside the schema was allowed"
        );
        decisions.push(d);
    }
    // `policies` is dropped here, on the small stack too.
    Ok(decisions)
}

/// Runs `run(text)` on a new thread with `stack` bytes of stack. A panic or stack overflow
/// there aborts the process (libfuzzer-sys's panic hook, Rust's guard-page handler), which
/// libFuzzer records as a crash.
fn run_on(stack: usize, text: &str) -> Outcome {
    let text = text.to_owned();
    std::thread::Builder::new()
        .name("policy_parse".into())
        .stack_size(stack)
        .spawn(move || run(&text))
        .expect("spawn parser thread")
        .join()
        .expect("parser thread")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let small = run_on(stack_size(), text);
    match &small {
        Err(errors) => assert!(!errors.is_empty(), "Err with no error message"),
        Ok(_) if !oracle() => {}
        Ok(decisions) => {
            let big = run_on(BIG_STACK, text);
            match &big {
                Err(errors) => panic!(
                    "policies load on a {} KiB stack only because Cedar's validator ran out of \
                     stack and skipped them; with enough stack they are refused: {errors:?}",
                    stack_size() / 1024
                ),
                Ok(expected) => assert_eq!(
                    decisions,
                    expected,
                    "decisions on a {} KiB stack differ from those with enough stack \
                     (Cedar's evaluator ran out of stack)",
                    stack_size() / 1024
                ),
            }
        }
    }
});
