use super::*;

fn acl(texts: &[&str]) -> Acl {
    let policies: Vec<Policy> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| Policy::parse(&format!("p{i}"), t).expect("policy parses"))
        .collect();
    Acl::new(false, policies.iter())
}

#[test]
fn deny_by_default_and_exact_rules() {
    let a = acl(&[r#"path "secret/data/a" { capabilities = ["read"] }"#]);
    assert!(a.allows("secret/data/a", Caps::READ));
    assert!(!a.allows("secret/data/a", Caps::UPDATE));
    assert!(!a.allows("secret/data/ab", Caps::READ));
    assert!(!a.allows("secret/data", Caps::READ));
}

#[test]
fn glob_is_a_prefix_match() {
    let a = acl(&[r#"path "secret/data/app-a/*" { capabilities = ["read", "list"] }"#]);
    assert!(a.allows("secret/data/app-a/x", Caps::READ));
    assert!(a.allows("secret/data/app-a/x/y", Caps::READ));
    assert!(!a.allows("secret/data/app-b/x", Caps::READ));
    assert!(!a.allows("secret/data/app-a", Caps::READ));
}

#[test]
fn plus_matches_one_segment() {
    // Vault's examples: "secret/+/teamb" and "secret/+/+/teamb".
    let a = acl(&[
        r#"path "secret/+/teamb" { capabilities = ["read"] }"#,
        r#"path "secret/+/+/teamb" { capabilities = ["update"] }"#,
    ]);
    assert!(a.allows("secret/foo/teamb", Caps::READ));
    assert!(!a.allows("secret/foo/bar/teamb", Caps::READ));
    assert!(a.allows("secret/foo/bar/teamb", Caps::UPDATE));
    assert!(!a.allows("secret/teamb", Caps::READ));
    assert!(!a.allows("secret/foo/teamb/x", Caps::READ));
}

#[test]
fn deny_wins_within_the_rule_that_applies() {
    let a = acl(&[
        r#"path "secret/*" { capabilities = ["read"] }"#,
        r#"path "secret/*" { capabilities = ["deny"] }"#,
    ]);
    assert!(!a.allows("secret/x", Caps::READ));
    assert_eq!(a.capabilities("secret/x").names(), vec!["deny"]);
}

#[test]
fn exact_rule_beats_glob_and_capabilities_are_not_merged_across_paths() {
    let a = acl(&[
        r#"path "secret/*" { capabilities = ["create", "read", "update"] }"#,
        r#"path "secret/super-secret" { capabilities = ["deny"] }"#,
        r#"path "secret/read-only" { capabilities = ["read"] }"#,
    ]);
    assert!(a.allows("secret/other", Caps::UPDATE));
    assert!(!a.allows("secret/super-secret", Caps::READ));
    // The exact rule applies alone: the glob's update is not added to it.
    assert!(a.allows("secret/read-only", Caps::READ));
    assert!(!a.allows("secret/read-only", Caps::UPDATE));
}

#[test]
fn vault_priority_rules() {
    // (1) The later first wildcard wins: "secret/a/*" over "secret/*".
    let a = acl(&[
        r#"path "secret/*" { capabilities = ["read"] }"#,
        r#"path "secret/a/*" { capabilities = ["update"] }"#,
    ]);
    assert_eq!(a.capabilities("secret/a/b"), Caps::UPDATE);
    // (1) again with `+`: "secret/a/+" (wildcard at 9) over "secret/+/b" (at 7).
    let a = acl(&[
        r#"path "secret/+/b" { capabilities = ["read"] }"#,
        r#"path "secret/a/+" { capabilities = ["update"] }"#,
    ]);
    assert_eq!(a.capabilities("secret/a/b"), Caps::UPDATE);
    // (2) Not ending in `*` wins: "secret/+/b" over "secret/+*"... same first wildcard:
    let a = acl(&[
        r#"path "secret/+/b*" { capabilities = ["read"] }"#,
        r#"path "secret/+/b" { capabilities = ["update"] }"#,
    ]);
    assert_eq!(a.capabilities("secret/x/b"), Caps::UPDATE);
    assert_eq!(a.capabilities("secret/x/bc"), Caps::READ);
    // (3) Fewer `+` wins: "secret/+/b/*" over "secret/+/+/*" (same first wildcard, both
    // globs).
    let a = acl(&[
        r#"path "secret/+/+/*" { capabilities = ["read"] }"#,
        r#"path "secret/+/b/*" { capabilities = ["update"] }"#,
    ]);
    assert_eq!(a.capabilities("secret/a/b/c"), Caps::UPDATE);
    // Vault's own example: of "secret/*" and "secret/+/*", "secret/*" applies (same first
    // wildcard, both globs, fewer `+`).
    let a = acl(&[
        r#"path "secret/*" { capabilities = ["read"] }"#,
        r#"path "secret/+/*" { capabilities = ["update"] }"#,
    ]);
    assert_eq!(a.capabilities("secret/a/b"), Caps::READ);
    // (4) Longer wins: "secret/+/bc*" over "secret/+/b*".
    let a = acl(&[
        r#"path "secret/+/b*" { capabilities = ["read"] }"#,
        r#"path "secret/+/bc*" { capabilities = ["update"] }"#,
    ]);
    assert_eq!(a.capabilities("secret/x/bcd"), Caps::UPDATE);
    assert_eq!(a.capabilities("secret/x/bd"), Caps::READ);
    // (5) Lexicographically greater wins when all else ties.
    let a = acl(&[
        r#"path "secret/+/ab" { capabilities = ["read"] }"#,
        r#"path "secret/+/+" { capabilities = ["update"] }"#,
    ]);
    // (3) decides here first: fewer `+` wins.
    assert_eq!(a.capabilities("secret/x/ab"), Caps::READ);
    let a = acl(&[
        r#"path "a/+/x*" { capabilities = ["read"] }"#,
        r#"path "a/+/y*" { capabilities = ["update"] }"#,
    ]);
    // Both match nothing in common; a path matching only one gets that one.
    assert_eq!(a.capabilities("a/q/xa"), Caps::READ);
}

#[test]
fn templated_and_parameter_rules_are_refused_clearly() {
    let e = Policy::parse(
        "t",
        r#"path "secret/data/{{identity.entity.id}}/*" { capabilities = ["read"] }"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("templated"), "{e}");
    let e = Policy::parse(
        "t",
        r#"path "secret/*" {
            capabilities = ["update"]
            allowed_parameters = { "x" = [] }
        }"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("allowed_parameters"), "{e}");
    let e = Policy::parse("t", r#"path "a/*/b" { capabilities = ["read"] }"#).unwrap_err();
    assert!(e.to_string().contains("only allowed at the end"), "{e}");
    let e = Policy::parse("t", r#"path "a" { capabilities = ["fly"] }"#).unwrap_err();
    assert!(e.to_string().contains("unknown capability"), "{e}");
    assert!(Policy::parse("t", "path {").is_err());
}

#[test]
fn json_and_legacy_forms_parse() {
    let p = Policy::parse(
        "j",
        r#"{"path": {"secret/*": {"capabilities": ["read", "list"]}}}"#,
    )
    .unwrap();
    assert_eq!(p.rules[0].caps, Caps(Caps::READ.0 | Caps::LIST.0));
    let p = Policy::parse("l", r#"path "secret/*" { policy = "write" }"#).unwrap();
    assert!(p.rules[0].caps.allows(Caps::UPDATE));
    assert!(!p.rules[0].caps.allows(Caps::SUDO));
}

#[test]
fn default_policy_parses() {
    let p = Policy::parse("default", DEFAULT_POLICY).unwrap();
    let a = Acl::new(false, [&p]);
    assert!(a.allows("auth/token/lookup-self", Caps::READ));
    assert!(!a.allows("auth/token/create", Caps::UPDATE));
    // As in Vault's default policy: a token holding a lease id may renew and look it up,
    // but not list leases or revoke them.
    assert!(a.allows("sys/leases/renew", Caps::UPDATE));
    assert!(a.allows("sys/renew", Caps::UPDATE));
    assert!(a.allows("sys/leases/lookup", Caps::UPDATE));
    assert!(!a.allows("sys/leases/lookup/", Caps::LIST));
    assert!(!a.allows("sys/leases/revoke", Caps::UPDATE));
}
