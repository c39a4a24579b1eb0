//! `sys/policies/acl`, `sys/policy`, `sys/capabilities-self`, and policies enforced on
//! requests.

use serde_json::json;

use crate::both_backends;
use crate::common::{errors, Backend, TestVault};

async fn policy_crud_and_legacy_endpoint(b: Backend) {
    let v = TestVault::start(b).await;
    let hcl = r#"path "secret/data/app/*" { capabilities = ["read"] }"#;
    v.policy("App", hcl).await;
    let a = v.get("sys/policies/acl/app", &v.root).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["data"]["name"], "app", "names are lower-cased");
    assert_eq!(a.json()["data"]["policy"], hcl);
    let a = v.list("sys/policies/acl", &v.root).await;
    assert_eq!(a.json()["data"]["keys"], json!(["app", "default", "root"]));
    // Legacy: `rules`, GET lists.
    let a = v.get("sys/policy/app", &v.root).await;
    assert_eq!(a.json()["data"]["rules"], hcl);
    let a = v.get("sys/policy", &v.root).await;
    assert_eq!(
        a.json()["data"]["policies"],
        json!(["app", "default", "root"])
    );
    let a = v
        .call(
            "PUT",
            "sys/policy/legacy",
            Some(&v.root),
            Some(json!({ "rules": hcl })),
        )
        .await;
    assert_eq!(a.status, 204);
    // Bad HCL and templated paths: 400 with what is wrong; nothing stored.
    let a = v
        .post(
            "sys/policies/acl/bad",
            &v.root,
            json!({ "policy": "path \"x\" {" }),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(
        errors(&a)[0].starts_with("failed to parse policy"),
        "{:?}",
        errors(&a)
    );
    let a = v
        .post(
            "sys/policies/acl/tmpl",
            &v.root,
            json!({ "policy": r#"path "secret/data/{{identity.entity.id}}/*" { capabilities = ["read"] }"# }),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(errors(&a)[0].contains("templated"));
    assert_eq!(v.get("sys/policies/acl/tmpl", &v.root).await.status, 404);
    // root and default cannot be deleted; root cannot be changed.
    assert_eq!(v.delete("sys/policies/acl/root", &v.root).await.status, 400);
    assert_eq!(
        v.delete("sys/policies/acl/default", &v.root).await.status,
        400
    );
    let a = v
        .post("sys/policies/acl/root", &v.root, json!({ "policy": hcl }))
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(v.delete("sys/policies/acl/app", &v.root).await.status, 204);
    assert_eq!(v.get("sys/policies/acl/app", &v.root).await.status, 404);
}
both_backends!(policy_crud_and_legacy_endpoint);

async fn policies_take_effect_and_changes_apply_at_once(b: Backend) {
    let v = TestVault::start(b).await;
    v.enable_kv("secret", 2).await;
    v.policy("p", r#"path "secret/data/a" { capabilities = ["read"] }"#)
        .await;
    let t = v.token(&v.root, json!({ "policies": ["p"] })).await;
    v.post("secret/data/a", &v.root, json!({ "data": { "k": "v" } }))
        .await;
    assert_eq!(v.get("secret/data/a", &t).await.status, 200);
    let a = v
        .post("secret/data/a", &t, json!({ "data": { "k": "w" } }))
        .await;
    assert_eq!(a.status, 403);
    // Add deny over a broader grant: deny wins.
    v.policy(
        "p",
        r#"
        path "secret/data/*" { capabilities = ["read", "update", "create"] }
        path "secret/data/a" { capabilities = ["deny"] }
        "#,
    )
    .await;
    assert_eq!(
        v.get("secret/data/a", &t).await.status,
        403,
        "the cache was not invalidated"
    );
    let a = v
        .post("secret/data/b", &t, json!({ "data": { "k": "v" } }))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    // A second policy granting the same path does not override the deny in the other.
    v.policy("q", r#"path "secret/data/a" { capabilities = ["read"] }"#)
        .await;
    let t2 = v.token(&v.root, json!({ "policies": ["p", "q"] })).await;
    assert_eq!(v.get("secret/data/a", &t2).await.status, 403);
}
both_backends!(policies_take_effect_and_changes_apply_at_once);

async fn capabilities_self_reports_vault_precedence(b: Backend) {
    let v = TestVault::start(b).await;
    v.policy(
        "p",
        r#"
        path "secret/*"          { capabilities = ["read"] }
        path "secret/+/*"        { capabilities = ["update"] }
        path "secret/a/*"        { capabilities = ["list"] }
        path "secret/+/teamb"    { capabilities = ["create"] }
        path "secret/x/y"        { capabilities = ["delete", "sudo"] }
        "#,
    )
    .await;
    let t = v.token(&v.root, json!({ "policies": ["p"] })).await;
    let a = v
        .post(
            "sys/capabilities-self",
            &t,
            json!({ "paths": ["secret/q/r", "secret/a/b", "secret/z/teamb", "secret/x/y", "other/x"] }),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let d = &a.json()["data"];
    // "secret/*" beats "secret/+/*" (same first wildcard; more `+` loses).
    assert_eq!(d["secret/q/r"], json!(["read"]));
    // "secret/a/*" beats both: its first wildcard comes later.
    assert_eq!(d["secret/a/b"], json!(["list"]));
    // "secret/+/teamb" beats "secret/*": the first wildcards tie (both at 7), then not
    // ending in `*` wins.
    assert_eq!(d["secret/z/teamb"], json!(["create"]));
    assert_eq!(d["secret/x/y"], json!(["delete", "sudo"]));
    assert_eq!(d["other/x"], json!(["deny"]));
    let a = v
        .post(
            "sys/capabilities-self",
            &v.root,
            json!({ "path": "anything" }),
        )
        .await;
    assert_eq!(a.json()["data"]["capabilities"], json!(["root"]));
}
both_backends!(capabilities_self_reports_vault_precedence);
