//! A route's auth rules: TOML decoded into `AuthRules` (and `RouteAuth`), compiled with
//! `RoutePolicy::compile` and checked against fixed callers; and `rules::glob` on the input
//! split at its first newline (pattern, then subject), compared with a simple reference
//! matcher.

#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use warden_auth::rules::glob;
use warden_auth::{AuthMethod, Identity, RoutePolicy};
use warden_config::{AuthRules, RouteAuth};

fn callers() -> [Identity; 3] {
    let mut alice = Identity::new("alice@example.com", AuthMethod::Jwt);
    alice.scopes = vec!["read".into(), "write".into()];
    if let Some(c) = json!({"tenant": "acme", "groups": ["a", "b", 3], "org": {"id": 7},
        "admin": true, "level": 2.5, "nothing": null, "": "empty"})
    .as_object()
    {
        alice.claims = c.clone();
    }
    let mut key = Identity::new("svc", AuthMethod::ApiKey);
    key.scopes = vec!["read".into()];
    if let Some(c) = json!({"tier": "gold"}).as_object() {
        key.claims = c.clone();
    }
    let cert = Identity::new("spiffe://prod/ns/billing/sa/api", AuthMethod::ClientCert);
    [alice, key, cert]
}

/// `*` matches any run of bytes, everything else itself: the textbook dynamic programme.
fn glob_reference(p: &[u8], s: &[u8]) -> bool {
    // m[j]: p[..i] matches s[..j].
    let mut m = vec![false; s.len() + 1];
    m[0] = true;
    for &c in p {
        let mut next = vec![false; s.len() + 1];
        if c == b'*' {
            let mut any = false;
            for j in 0..=s.len() {
                any |= m[j];
                next[j] = any;
            }
        } else {
            for j in 1..=s.len() {
                next[j] = m[j - 1] && s[j - 1] == c;
            }
        }
        m = next;
    }
    m[s.len()]
}

fn check_glob(pattern: &str, s: &str) {
    let got = glob(pattern, s);
    if pattern.len() <= 256 && s.len() <= 256 {
        let want = glob_reference(pattern.as_bytes(), s.as_bytes());
        assert_eq!(got, want, "glob({pattern:?}, {s:?})");
    }
    if !pattern.contains('*') {
        assert_eq!(got, pattern == s, "glob without `*` is equality");
    }
    assert!(glob(s, s), "a string matches itself as a pattern");
    assert!(glob("*", s));
}

fn check_rules(rules: &AuthRules) {
    let policy = RoutePolicy::compile(rules);
    assert!(policy.accept.len() <= rules.accept.len());
    let _ = policy.required_scopes();
    for id in &callers() {
        for method in [Method::GET, Method::POST, Method::DELETE] {
            if policy.check(id, &method).is_ok() {
                // What the rules require, the caller has.
                assert!(rules.scopes_all.iter().all(|s| id.has_scope(s)));
                assert!(
                    rules.scopes_any.is_empty() || rules.scopes_any.iter().any(|s| id.has_scope(s))
                );
                assert!(
                    rules.subjects.is_empty()
                        || rules.subjects.iter().any(|p| glob(p, &id.subject))
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, subject) = text.split_once('\n').unwrap_or((text, ""));
    check_glob(pattern, subject);

    if let Ok(rules) = toml::from_str::<AuthRules>(text) {
        check_rules(&rules);
    }
    // The same text as a route's `auth = { ... }` value.
    if let Ok(RouteAuth::Rules(rules)) = toml::from_str::<RouteAuth>(text) {
        check_rules(&rules);
    }
});
