//! KV v2 and v1 over a real socket, and their data surviving a reopen of the store.

use serde_json::json;

use crate::both_backends;
use crate::common::{errors, Backend, TestVault};

async fn kv2_versions_cas_and_patch(b: Backend) {
    let v = TestVault::start(b).await;
    v.enable_kv("secret", 2).await;
    let r = &v.root;
    // Write, CAS 0 = create only.
    let a = v
        .post(
            "secret/data/app/db",
            r,
            json!({ "data": { "user": "u1", "pass": "p1" }, "options": { "cas": 0 } }),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.json()["data"]["version"], 1);
    assert_eq!(a.json()["mount_type"], "kv");
    let a = v
        .post(
            "secret/data/app/db",
            r,
            json!({ "data": { "user": "x" }, "options": { "cas": 0 } }),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        errors(&a),
        vec!["check-and-set parameter did not match the current version"]
    );
    // CAS with the right version.
    let a = v
        .post(
            "secret/data/app/db",
            r,
            json!({ "data": { "user": "u2", "pass": "p2" }, "options": { "cas": 1 } }),
        )
        .await;
    assert_eq!(a.json()["data"]["version"], 2);
    // Read latest and an old version.
    let a = v.get("secret/data/app/db", r).await;
    assert_eq!(
        a.json()["data"]["data"],
        json!({ "user": "u2", "pass": "p2" })
    );
    assert_eq!(a.json()["data"]["metadata"]["version"], 2);
    let a = v.get("secret/data/app/db?version=1", r).await;
    assert_eq!(a.json()["data"]["data"]["user"], "u1");
    // PATCH merges.
    let a = v
        .raw(
            "PATCH",
            "secret/data/app/db",
            Some(r),
            &[("content-type", "application/merge-patch+json")],
            json!({ "data": { "pass": "p3", "user": null, "host": "h" } })
                .to_string()
                .into(),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.json()["data"]["version"], 3);
    let a = v.get("secret/data/app/db", r).await;
    assert_eq!(
        a.json()["data"]["data"],
        json!({ "pass": "p3", "host": "h" })
    );
    // PATCH of a missing secret is 404.
    let a = v
        .raw(
            "PATCH",
            "secret/data/app/none",
            Some(r),
            &[("content-type", "application/merge-patch+json")],
            json!({ "data": { "a": "b" } }).to_string().into(),
        )
        .await;
    assert_eq!(a.status, 404);

    // Soft delete of the latest, then undelete; delete/destroy of given versions.
    assert_eq!(v.delete("secret/data/app/db", r).await.status, 204);
    let a = v.get("secret/data/app/db", r).await;
    assert_eq!(a.status, 404);
    // Vault's 404 for a deleted version still says which version and when it was deleted.
    assert_eq!(a.json()["data"]["data"], serde_json::Value::Null);
    assert_eq!(a.json()["data"]["metadata"]["version"], 3);
    assert_ne!(a.json()["data"]["metadata"]["deletion_time"], "");
    let a = v
        .post("secret/undelete/app/db", r, json!({ "versions": [3] }))
        .await;
    assert_eq!(a.status, 204);
    assert_eq!(v.get("secret/data/app/db", r).await.status, 200);
    let a = v
        .post("secret/delete/app/db", r, json!({ "versions": [2] }))
        .await;
    assert_eq!(a.status, 204);
    assert_eq!(v.get("secret/data/app/db?version=2", r).await.status, 404);
    let a = v
        .post("secret/destroy/app/db", r, json!({ "versions": [1] }))
        .await;
    assert_eq!(a.status, 204);
    assert_eq!(v.get("secret/data/app/db?version=1", r).await.status, 404);
    let a = v
        .post("secret/undelete/app/db", r, json!({ "versions": [1] }))
        .await;
    assert_eq!(a.status, 204);
    let a = v.get("secret/data/app/db?version=1", r).await;
    assert_eq!(a.status, 404, "destroyed stays");
    assert_eq!(a.json()["data"]["metadata"]["destroyed"], true);

    // Metadata shows the history.
    let a = v.get("secret/metadata/app/db", r).await;
    let m = &a.json()["data"];
    assert_eq!(m["current_version"], 3);
    assert_eq!(m["oldest_version"], 1);
    assert_eq!(m["versions"]["1"]["destroyed"], true);
    assert_ne!(m["versions"]["2"]["deletion_time"], "");
    assert_eq!(m["versions"]["3"]["deletion_time"], "");
}
both_backends!(kv2_versions_cas_and_patch);

async fn kv2_metadata_config_and_listing(b: Backend) {
    let v = TestVault::start(b).await;
    v.enable_kv("secret", 2).await;
    let r = &v.root;
    let a = v
        .post(
            "secret/metadata/app/cfg",
            r,
            json!({ "max_versions": 2, "cas_required": true, "custom_metadata": { "owner": "team-a" } }),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    let a = v
        .post("secret/data/app/cfg", r, json!({ "data": { "v": "1" } }))
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        errors(&a),
        vec!["check-and-set parameter required for this call"]
    );
    for i in 0..3 {
        let a = v
            .post(
                "secret/data/app/cfg",
                r,
                json!({ "data": { "v": i.to_string() }, "options": { "cas": i } }),
            )
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.json()["data"]["custom_metadata"]["owner"], "team-a");
    }
    let a = v.get("secret/metadata/app/cfg", r).await;
    let m = &a.json()["data"];
    assert_eq!(m["current_version"], 3);
    assert_eq!(
        m["oldest_version"], 2,
        "max_versions = 2 keeps versions 2 and 3"
    );
    assert_eq!(v.get("secret/data/app/cfg?version=1", r).await.status, 404);
    assert_eq!(m["custom_metadata"]["owner"], "team-a");

    // Engine config.
    let a = v
        .post(
            "secret/config",
            r,
            json!({ "max_versions": 5, "delete_version_after": "1h" }),
        )
        .await;
    assert_eq!(a.status, 204);
    let a = v.get("secret/config", r).await;
    assert_eq!(a.json()["data"]["max_versions"], 5);
    assert_eq!(a.json()["data"]["delete_version_after"], "1h0m0s");
    // delete_version_after: a new version reads as deleted once it has passed.
    v.post("secret/data/tmp", r, json!({ "data": { "a": "b" } }))
        .await;
    assert_eq!(v.get("secret/data/tmp", r).await.status, 200);
    v.clock.advance(3601);
    assert_eq!(v.get("secret/data/tmp", r).await.status, 404);

    // Listing: one level, folders end in `/`; LIST and GET ?list=true alike.
    v.post("secret/data/app/x/deep", r, json!({ "data": { "a": "b" } }))
        .await;
    let a = v.list("secret/metadata/app", r).await;
    assert_eq!(a.json()["data"]["keys"], json!(["cfg", "x/"]));
    let a = v.get("secret/metadata/app/?list=true", r).await;
    assert_eq!(a.json()["data"]["keys"], json!(["cfg", "x/"]));
    let a = v.list("secret/metadata/", r).await;
    assert_eq!(a.json()["data"]["keys"], json!(["app/", "tmp"]));
    assert_eq!(v.list("secret/metadata/nothing", r).await.status, 404);

    // Delete all versions and the metadata.
    assert_eq!(v.delete("secret/metadata/app/cfg", r).await.status, 204);
    assert_eq!(v.get("secret/metadata/app/cfg", r).await.status, 404);
    assert_eq!(v.get("secret/data/app/cfg", r).await.status, 404);
    let a = v.list("secret/metadata/app", r).await;
    assert_eq!(a.json()["data"]["keys"], json!(["x/"]));
}
both_backends!(kv2_metadata_config_and_listing);

async fn kv1_read_write_list_delete(b: Backend) {
    let v = TestVault::start(b).await;
    v.enable_kv("kv", 1).await;
    let r = &v.root;
    let a = v
        .post("kv/app/db", r, json!({ "password": "s3cret", "n": 3 }))
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    let a = v.get("kv/app/db", r).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["data"], json!({ "password": "s3cret", "n": 3 }));
    assert_eq!(a.json()["lease_duration"], 768 * 3600);
    v.call("PUT", "kv/app/other", Some(r), Some(json!({ "a": "b" })))
        .await;
    let a = v.list("kv/app", r).await;
    assert_eq!(a.json()["data"]["keys"], json!(["db", "other"]));
    assert_eq!(v.delete("kv/app/db", r).await.status, 204);
    assert_eq!(v.get("kv/app/db", r).await.status, 404);
    assert_eq!(errors(&v.get("kv/app/db", r).await), Vec::<String>::new());
}
both_backends!(kv1_read_write_list_delete);

async fn acknowledged_writes_survive_a_reopen(b: Backend) {
    let v = TestVault::start(b).await;
    v.enable_kv("secret", 2).await;
    v.policy("p", r#"path "secret/data/*" { capabilities = ["read"] }"#)
        .await;
    let t = v.token(&v.root, json!({ "policies": ["p"] })).await;
    for i in 0..5 {
        let a = v
            .post("secret/data/k", &v.root, json!({ "data": { "i": i } }))
            .await;
        assert_eq!(a.status, 200);
    }
    let TestVault { location, dir, .. } = v;
    let v2 = TestVault::start_at(location, dir).await;
    let a = v2.get("secret/data/k", &t).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.json()["data"]["data"]["i"], 4);
    assert_eq!(a.json()["data"]["metadata"]["version"], 5);
}
both_backends!(acknowledged_writes_survive_a_reopen);

async fn concurrent_cas_writes_have_one_winner(b: Backend) {
    let v = std::sync::Arc::new(TestVault::start(b).await);
    v.enable_kv("secret", 2).await;
    v.post(
        "secret/data/race",
        &v.root,
        json!({ "data": { "w": "init" } }),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let v = v.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({ "data": { "w": i.to_string() }, "options": { "cas": 1 } });
            v.post("secret/data/race", &v.root, body).await.status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        7,
        "{statuses:?}"
    );
    let a = v.get("secret/metadata/race", &v.root).await;
    assert_eq!(a.json()["data"]["current_version"], 2);
}
both_backends!(concurrent_cas_writes_have_one_winner);

/// Every request leaves exactly one event in the store's audit chain: a KV write's is
/// committed with the write itself (one transaction), a refused write's (a CAS mismatch, no
/// data) is appended after it as a failure, and a read's after the read.
async fn kv_writes_and_their_audit_events_commit_together(b: Backend) {
    let v = TestVault::start(b).await;
    v.enable_kv("secret", 2).await;
    v.enable_kv("old", 1).await;
    let r = &v.root;
    let head = v.store.verify_audit().await.unwrap();
    let a = v
        .post("secret/data/app/x", r, json!({ "data": { "k": "v1" } }))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = v
        .post(
            "secret/data/app/x",
            r,
            json!({ "data": { "k": "v2" }, "options": { "cas": 0 } }),
        )
        .await;
    assert_eq!(a.status, 400);
    let a = v.post("secret/data/app/x", r, json!({})).await;
    assert_eq!(a.status, 400);
    let a = v.post("old/app/y", r, json!({ "k": "v" })).await;
    assert_eq!(a.status, 204);
    let a = v.get("secret/data/app/x", r).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["data"]["data"]["k"], "v1");

    let records = v.store.audit_since(head, 100).await.unwrap();
    let seen: Vec<(String, String, String, serde_json::Value)> = records
        .iter()
        .map(|r| {
            (
                r.event.action.clone(),
                r.event.subject.clone().unwrap_or_default(),
                r.event.outcome.clone(),
                r.event.detail["status"].clone(),
            )
        })
        .collect();
    let want = |a: &str, s: &str, o: &str, st: u16| (a.into(), s.into(), o.into(), json!(st));
    assert_eq!(
        seen,
        vec![
            want("vault.update", "secret/data/app/x", "success", 200),
            want("vault.update", "secret/data/app/x", "failure", 400),
            want("vault.update", "secret/data/app/x", "failure", 400),
            want("vault.update", "old/app/y", "success", 204),
            want("vault.read", "secret/data/app/x", "success", 200),
        ]
    );
    assert_eq!(v.store.verify_audit().await.unwrap(), head + 5);
}
both_backends!(kv_writes_and_their_audit_events_commit_together);
