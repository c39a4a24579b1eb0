//! Isolation between tenants, and bad input: each refusal has Vault's status and a clear
//! message, and changes nothing.

use serde_json::json;

use crate::both_backends;
use crate::common::{errors, Backend, TestVault};

async fn app_a_cannot_see_app_b(b: Backend) {
    let v = TestVault::start(b).await;
    v.enable_kv("secret", 2).await;
    v.policy(
        "app-a",
        r#"
        path "secret/data/app-a/*"     { capabilities = ["create", "read", "update", "delete"] }
        path "secret/metadata/app-a/*" { capabilities = ["list", "read"] }
        "#,
    )
    .await;
    v.post(
        "secret/data/app-b/db",
        &v.root,
        json!({ "data": { "pass": "b" } }),
    )
    .await;
    v.post(
        "secret/data/app-a/db",
        &v.root,
        json!({ "data": { "pass": "a" } }),
    )
    .await;
    let a_tok = v.token(&v.root, json!({ "policies": ["app-a"] })).await;

    assert_eq!(v.get("secret/data/app-a/db", &a_tok).await.status, 200);
    // Existing and missing app-b paths answer the same: 403 "permission denied".
    for path in ["secret/data/app-b/db", "secret/data/app-b/missing"] {
        let a = v.get(path, &a_tok).await;
        assert_eq!(
            (a.status, errors(&a)),
            (403, vec!["permission denied".to_owned()]),
            "{path}"
        );
    }
    for path in [
        "secret/metadata/app-b",
        "secret/metadata/app-b-missing",
        "secret/metadata",
    ] {
        let a = v.list(path, &a_tok).await;
        assert_eq!(a.status, 403, "{path}");
    }
    for path in ["secret/metadata/app-b/db", "secret/metadata/app-b/missing"] {
        assert_eq!(v.get(path, &a_tok).await.status, 403, "{path}");
    }
    let a = v
        .post(
            "secret/data/app-b/db",
            &a_tok,
            json!({ "data": { "pass": "x" } }),
        )
        .await;
    assert_eq!(a.status, 403);
    assert_eq!(v.delete("secret/data/app-b/db", &a_tok).await.status, 403);
    // An unknown mount says no more than a forbidden path.
    let a = v.get("nomount/data/x", &a_tok).await;
    assert_eq!(
        (a.status, errors(&a)),
        (403, vec!["permission denied".to_owned()])
    );
    // Nothing changed for app-b.
    let a = v.get("secret/data/app-b/db", &v.root).await;
    assert_eq!(a.json()["data"]["data"]["pass"], "b");
    assert_eq!(a.json()["data"]["metadata"]["version"], 1);
    // And a token cannot escape by creating a child with more policies.
    let a = v
        .post("auth/token/create", &a_tok, json!({ "policies": ["root"] }))
        .await;
    assert_eq!(a.status, 403, "app-a may not even create tokens");
}
both_backends!(app_a_cannot_see_app_b);

async fn bad_input_is_refused_and_changes_nothing(b: Backend) {
    let v = TestVault::start(b).await;
    v.enable_kv("secret", 2).await;
    let r = &v.root;
    v.post("secret/data/k", r, json!({ "data": { "a": "1" } }))
        .await;
    let check_unchanged = || async {
        let a = v.get("secret/data/k", r).await;
        assert_eq!(a.json()["data"]["metadata"]["version"], 1);
        assert_eq!(a.json()["data"]["data"], json!({ "a": "1" }));
    };

    // Malformed JSON.
    let a = v
        .raw("POST", "secret/data/k", Some(r), &[], "{\"data\": ".into())
        .await;
    assert_eq!(a.status, 400);
    assert!(
        errors(&a)[0].starts_with("failed to parse JSON input"),
        "{:?}",
        errors(&a)
    );
    let a = v
        .raw("POST", "secret/data/k", Some(r), &[], "[1, 2]".into())
        .await;
    assert_eq!(a.status, 400);
    // Wrong types.
    let a = v
        .post("secret/data/k", r, json!({ "data": "not an object" }))
        .await;
    assert_eq!(a.status, 400);
    assert!(errors(&a)[0].contains("\"data\""), "{:?}", errors(&a));
    let a = v
        .post(
            "secret/data/k",
            r,
            json!({ "data": { "a": "2" }, "options": { "cas": "x" } }),
        )
        .await;
    assert_eq!(a.status, 400);
    let a = v
        .post("auth/token/create", r, json!({ "ttl": "forever" }))
        .await;
    assert_eq!(a.status, 400);
    assert!(errors(&a)[0].contains("\"ttl\""));
    let a = v
        .post("auth/token/create", r, json!({ "num_uses": -1 }))
        .await;
    assert_eq!(a.status, 400);
    // CAS mismatch.
    let a = v
        .post(
            "secret/data/k",
            r,
            json!({ "data": { "a": "2" }, "options": { "cas": 7 } }),
        )
        .await;
    assert_eq!(a.status, 400);
    // Paths with `..` or NUL.
    for p in [
        "secret/data/../../sys/mounts",
        "secret/data/%2e%2e/k",
        "secret/data/k%00x",
    ] {
        let a = v.post(p, r, json!({ "data": { "a": "2" } })).await;
        assert_eq!(a.status, 400, "{p}");
        assert!(
            errors(&a)[0].starts_with("invalid path"),
            "{p}: {:?}",
            errors(&a)
        );
    }
    // Oversized body.
    let big = format!(
        "{{\"data\": {{\"a\": \"{}\"}}}}",
        "x".repeat(warden_vault::MAX_REQUEST_BYTES)
    );
    let a = v
        .raw("POST", "secret/data/k", Some(r), &[], big.into())
        .await;
    assert_eq!(a.status, 413);
    assert_eq!(errors(&a), vec!["request body too large"]);
    // Wrong, missing and malformed tokens.
    for t in [Some("hvs.wrong"), None, Some("x".repeat(5000).as_str())] {
        let a = v
            .call(
                "POST",
                "secret/data/k",
                t,
                Some(json!({ "data": { "a": "2" } })),
            )
            .await;
        assert_eq!(a.status, 403);
        assert_eq!(errors(&a), vec!["permission denied"]);
    }
    // Unknown mount (as root: 404 no handler), unknown method.
    let a = v.get("nomount/x", r).await;
    assert_eq!(a.status, 404);
    assert_eq!(
        errors(&a),
        vec!["no handler for route \"nomount/x\". route entry not found."]
    );
    let a = v.call("TRACE", "secret/data/k", Some(r), None).await;
    assert_eq!(a.status, 405);
    check_unchanged().await;
}
both_backends!(bad_input_is_refused_and_changes_nothing);
