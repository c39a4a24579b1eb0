//! `auth/token/…` over a real socket.

use serde_json::json;

use crate::both_backends;
use crate::common::{errors, Backend, TestVault};

async fn create_lookup_and_accessor(b: Backend) {
    let v = TestVault::start(b).await;
    let a = v
        .post(
            "auth/token/create",
            &v.root,
            json!({
                "policies": ["app"],
                "ttl": "1h",
                "explicit_max_ttl": "2h",
                "renewable": true,
                "num_uses": 0,
                "meta": { "team": "a" },
                "display_name": "My App",
            }),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let body = a.json();
    let auth = &body["auth"];
    let token = auth["client_token"].as_str().unwrap();
    assert!(token.starts_with("hvs."), "{token}");
    assert_eq!(auth["policies"], json!(["app", "default"]));
    assert_eq!(auth["lease_duration"], 3600);
    assert_eq!(auth["renewable"], true);
    assert_eq!(auth["orphan"], false);
    assert_eq!(auth["metadata"], json!({ "team": "a" }));
    let accessor = auth["accessor"].as_str().unwrap().to_owned();
    for key in [
        "request_id",
        "lease_id",
        "data",
        "wrap_info",
        "warnings",
        "mount_type",
    ] {
        assert!(body.get(key).is_some(), "envelope lacks {key}");
    }

    // lookup-self with the new token, via `Authorization: Bearer`.
    let a = v
        .raw(
            "GET",
            "auth/token/lookup-self",
            None,
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-vault-request", "true"),
            ],
            Default::default(),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let d = &a.json()["data"];
    assert_eq!(d["id"], token);
    assert_eq!(d["display_name"], "token-my-app");
    assert_eq!(d["ttl"], 3600);
    assert_eq!(d["explicit_max_ttl"], 7200);
    assert_eq!(d["path"], "auth/token/create");
    assert_eq!(d["meta"]["team"], "a");

    // lookup by token (root), lookup-accessor (no id revealed).
    let a = v
        .post("auth/token/lookup", &v.root, json!({ "token": token }))
        .await;
    assert_eq!(a.json()["data"]["accessor"], accessor.as_str());
    let a = v
        .post(
            "auth/token/lookup-accessor",
            &v.root,
            json!({ "accessor": accessor }),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["data"]["id"], "");
    assert_eq!(a.json()["data"]["policies"], json!(["app", "default"]));

    // The store holds no token in clear, in keys or in values.
    for key in v.store.list("vault/").await.unwrap() {
        assert!(!key.contains(token), "a store key holds the token: {key}");
        let value = v.store.get(&key).await.unwrap().unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&value).contains(token),
            "the value at {key} holds the token"
        );
    }
    // The audit log records the requests but not the token.
    let records = v.store.audit_since(0, 1000).await.unwrap();
    assert!(records
        .iter()
        .any(|r| r.event.subject.as_deref() == Some("auth/token/create")));
    let dump = serde_json::to_string(&records).unwrap();
    assert!(!dump.contains(token) && !dump.contains(&accessor));
    v.store.verify_audit().await.unwrap();
}
both_backends!(create_lookup_and_accessor);

async fn children_die_with_their_parent_and_orphans_survive(b: Backend) {
    let v = TestVault::start(b).await;
    v.policy(
        "p",
        r#"path "auth/token/*" { capabilities = ["update", "read"] }"#,
    )
    .await;
    let parent = v.token(&v.root, json!({ "policies": ["p"] })).await;
    let child = v.token(&parent, json!({})).await;
    let grandchild = v.token(&child, json!({})).await;
    let orphan = v
        .post(
            "auth/token/create-orphan",
            &v.root,
            json!({ "policies": ["p"] }),
        )
        .await
        .json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = v.get("auth/token/lookup-self", &orphan).await;
    assert_eq!(a.json()["data"]["orphan"], true);

    let a = v
        .post("auth/token/revoke", &v.root, json!({ "token": parent }))
        .await;
    assert_eq!(a.status, 204);
    for t in [&parent, &child, &grandchild] {
        let a = v.get("auth/token/lookup-self", t).await;
        assert_eq!(a.status, 403, "a revoked token still works");
        assert_eq!(errors(&a), vec!["permission denied"]);
    }
    assert_eq!(v.get("auth/token/lookup-self", &orphan).await.status, 200);

    // revoke-orphan: the parent goes, its children stay (as orphans); needs sudo (root here).
    let p2 = v.token(&v.root, json!({ "policies": ["p"] })).await;
    let c2 = v.token(&p2, json!({})).await;
    let a = v
        .post("auth/token/revoke-orphan", &p2, json!({ "token": p2 }))
        .await;
    assert_eq!(a.status, 403, "revoke-orphan needs sudo");
    let a = v
        .post("auth/token/revoke-orphan", &v.root, json!({ "token": p2 }))
        .await;
    assert_eq!(a.status, 204);
    assert_eq!(v.get("auth/token/lookup-self", &p2).await.status, 403);
    let a = v.get("auth/token/lookup-self", &c2).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["data"]["orphan"], true);

    // revoke-self and revoke-accessor.
    let a = v.post("auth/token/revoke-self", &c2, json!({})).await;
    assert_eq!(a.status, 204);
    assert_eq!(v.get("auth/token/lookup-self", &c2).await.status, 403);
    let acc = v.get("auth/token/lookup-self", &orphan).await.json()["data"]["accessor"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = v
        .post(
            "auth/token/revoke-accessor",
            &v.root,
            json!({ "accessor": acc }),
        )
        .await;
    assert_eq!(a.status, 204);
    assert_eq!(v.get("auth/token/lookup-self", &orphan).await.status, 403);
}
both_backends!(children_die_with_their_parent_and_orphans_survive);

async fn expiry_renewal_and_use_limits(b: Backend) {
    let v = TestVault::start(b).await;
    let t = v
        .token(&v.root, json!({ "ttl": "10m", "explicit_max_ttl": "25m" }))
        .await;
    v.clock.advance(9 * 60);
    let a = v
        .post("auth/token/renew-self", &t, json!({ "increment": "20m" }))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        a.json()["auth"]["lease_duration"],
        16 * 60,
        "capped by explicit_max_ttl"
    );
    v.clock.advance(15 * 60);
    assert_eq!(v.get("auth/token/lookup-self", &t).await.status, 200);
    v.clock.advance(60);
    let a = v.get("auth/token/lookup-self", &t).await;
    assert_eq!(a.status, 403, "an expired token is refused");
    assert_eq!(errors(&a), vec!["permission denied"]);

    // A child never outlives its parent.
    let parent = v.token(&v.root, json!({ "ttl": "5m" })).await;
    let child = v.token(&parent, json!({ "ttl": "1h" })).await;
    let a = v.get("auth/token/lookup-self", &child).await;
    assert_eq!(a.json()["data"]["ttl"], 300);
    v.clock.advance(301);
    assert_eq!(v.get("auth/token/lookup-self", &child).await.status, 403);

    // Not renewable.
    let nr = v
        .token(&v.root, json!({ "ttl": "5m", "renewable": false }))
        .await;
    let a = v.post("auth/token/renew-self", &nr, json!({})).await;
    assert_eq!(a.status, 400);
    assert!(errors(&a)[0].contains("not renewable"));

    // num_uses: two uses, then refused.
    let limited = v.token(&v.root, json!({ "num_uses": 2 })).await;
    let a = v.get("auth/token/lookup-self", &limited).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["data"]["num_uses"], 1);
    assert_eq!(v.get("auth/token/lookup-self", &limited).await.status, 200);
    assert_eq!(v.get("auth/token/lookup-self", &limited).await.status, 403);

    // Periodic tokens renew to their period.
    let p = v.token(&v.root, json!({ "period": "1h" })).await;
    v.clock.advance(3000);
    let a = v
        .post("auth/token/renew", &v.root, json!({ "token": p }))
        .await;
    assert_eq!(a.json()["auth"]["lease_duration"], 3600);
}
both_backends!(expiry_renewal_and_use_limits);

async fn a_token_cannot_raise_its_own_policies(b: Backend) {
    let v = TestVault::start(b).await;
    v.policy(
        "creator",
        r#"path "auth/token/create*" { capabilities = ["update"] }"#,
    )
    .await;
    v.policy(
        "admin",
        r#"path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }"#,
    )
    .await;
    let t = v.token(&v.root, json!({ "policies": ["creator"] })).await;
    let a = v
        .post("auth/token/create", &t, json!({ "policies": ["admin"] }))
        .await;
    assert_eq!(a.status, 400);
    assert!(errors(&a)[0].contains("subset"), "{:?}", errors(&a));
    let a = v
        .post("auth/token/create", &t, json!({ "policies": ["root"] }))
        .await;
    assert_eq!(a.status, 400);
    // An orphan (no parent) needs root or sudo; create-orphan needs only the path.
    let a = v
        .post("auth/token/create", &t, json!({ "no_parent": true }))
        .await;
    assert_eq!(a.status, 400);
    let a = v
        .post(
            "auth/token/create-orphan",
            &t,
            json!({ "policies": ["admin"] }),
        )
        .await;
    assert_eq!(a.status, 400, "create-orphan does not lift the subset rule");
    // A subset is fine, and inherits by default.
    let a = v.post("auth/token/create", &t, json!({})).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["auth"]["policies"], json!(["creator", "default"]));
    // Choosing the token's value needs root.
    let a = v
        .post("auth/token/create", &t, json!({ "id": "hvs.chosen" }))
        .await;
    assert_eq!(a.status, 400);
}
both_backends!(a_token_cannot_raise_its_own_policies);

async fn token_roles(b: Backend) {
    let v = TestVault::start(b).await;
    let a = v
        .post(
            "auth/token/roles/ci",
            &v.root,
            json!({ "allowed_policies": ["ci", "reader"], "orphan": true, "token_period": "30m" }),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    let a = v.get("auth/token/roles/ci", &v.root).await;
    assert_eq!(
        a.json()["data"]["allowed_policies"],
        json!(["ci", "reader"])
    );
    assert_eq!(
        v.list("auth/token/roles", &v.root).await.json()["data"]["keys"],
        json!(["ci"])
    );
    let a = v
        .post(
            "auth/token/create/ci",
            &v.root,
            json!({ "policies": ["reader"] }),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let auth = &a.json()["auth"];
    assert_eq!(auth["policies"], json!(["default", "reader"]));
    assert_eq!(auth["orphan"], true);
    assert_eq!(auth["lease_duration"], 1800);
    let a = v
        .post(
            "auth/token/create/ci",
            &v.root,
            json!({ "policies": ["admin"] }),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(v.delete("auth/token/roles/ci", &v.root).await.status, 204);
    assert_eq!(v.get("auth/token/roles/ci", &v.root).await.status, 404);
}
both_backends!(token_roles);
