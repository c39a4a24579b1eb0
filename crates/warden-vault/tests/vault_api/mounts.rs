//! `sys/mounts`, `sys/auth`, `sys/internal/ui/mounts`.

use serde_json::json;

use crate::both_backends;
use crate::common::{errors, Backend, TestVault};

async fn enable_list_tune_disable(b: Backend) {
    let v = TestVault::start(b).await;
    let r = &v.root;
    let a = v
        .post(
            "sys/mounts/team/kv",
            r,
            json!({ "type": "kv-v2", "description": "team secrets" }),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    v.enable_kv("old", 1).await;
    let a = v.get("sys/mounts", r).await;
    assert_eq!(a.status, 200);
    let body = a.json();
    assert_eq!(body["data"]["team/kv/"]["type"], "kv");
    assert_eq!(body["data"]["team/kv/"]["options"]["version"], "2");
    assert_eq!(body["data"]["old/"]["options"]["version"], "1");
    assert_eq!(
        body["team/kv/"]["description"], "team secrets",
        "top-level copy for old clients"
    );
    assert_eq!(body["data"]["sys/"]["type"], "system");
    // Conflicts and reserved paths.
    let a = v.post("sys/mounts/team", r, json!({ "type": "kv" })).await;
    assert_eq!(a.status, 400);
    assert!(errors(&a)[0].contains("already in use"));
    let a = v.post("sys/mounts/sys/x", r, json!({ "type": "kv" })).await;
    assert_eq!(a.status, 400);
    let a = v.post("sys/mounts/pki", r, json!({ "type": "pki" })).await;
    assert_eq!(a.status, 400);
    assert!(errors(&a)[0].contains("not available"), "{:?}", errors(&a));
    // Tune.
    let a = v
        .post(
            "sys/mounts/team/kv/tune",
            r,
            json!({ "default_lease_ttl": "1h", "description": "d2" }),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    let a = v.get("sys/mounts/team/kv/tune", r).await;
    assert_eq!(a.json()["data"]["default_lease_ttl"], 3600);
    assert_eq!(a.json()["data"]["description"], "d2");
    let a = v
        .post(
            "sys/mounts/team/kv/tune",
            r,
            json!({ "options": { "version": "1" } }),
        )
        .await;
    assert_eq!(a.status, 400);
    // The UI endpoint tells v2 from v1.
    let a = v.get("sys/internal/ui/mounts/team/kv/data/x", r).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.json()["data"]["path"], "team/kv/");
    assert_eq!(a.json()["data"]["options"]["version"], "2");
    assert_eq!(v.get("sys/internal/ui/mounts/nowhere", r).await.status, 403);
    // Data goes with the mount.
    v.post("team/kv/data/a", r, json!({ "data": { "k": "v" } }))
        .await;
    assert_eq!(v.delete("sys/mounts/team/kv", r).await.status, 204);
    let a = v.get("team/kv/data/a", r).await;
    assert_eq!(a.status, 404);
    assert!(
        errors(&a)[0].starts_with("no handler for route"),
        "{:?}",
        errors(&a)
    );
    v.post("sys/mounts/team/kv", r, json!({ "type": "kv-v2" }))
        .await;
    assert_eq!(
        v.get("team/kv/data/a", r).await.status,
        404,
        "a new mount starts empty"
    );
    assert!(v
        .store
        .list("vault/logical/")
        .await
        .unwrap()
        .iter()
        .all(|k| !k.contains("/v/a#")));
}
both_backends!(enable_list_tune_disable);

async fn auth_methods(b: Backend) {
    let v = TestVault::start(b).await;
    let a = v.get("sys/auth", &v.root).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["data"]["token/"]["type"], "token");
    let a = v
        .post("sys/auth/ldap", &v.root, json!({ "type": "ldap" }))
        .await;
    assert_eq!(a.status, 400);
    assert!(errors(&a)[0].contains("not available"));
    assert_eq!(v.delete("sys/auth/token", &v.root).await.status, 400);
    // Without the policy, no table.
    let t = v.token(&v.root, json!({ "policies": ["nothing"] })).await;
    assert_eq!(v.get("sys/auth", &t).await.status, 403);
    assert_eq!(v.get("sys/mounts", &t).await.status, 403);
}
both_backends!(auth_methods);
