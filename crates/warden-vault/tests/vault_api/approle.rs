//! AppRole: roles, role-id, secret-id (TTL, use limits, metadata, accessor lookup and
//! destroy), login, CIDR bindings.

use serde_json::json;

use crate::both_backends;
use crate::common::{errors, Backend, TestVault};

async fn approle_login_and_secret_ids(b: Backend) {
    let v = TestVault::start(b).await;
    let r = &v.root;
    v.enable_kv("secret", 2).await;
    v.post("secret/data/app/db", r, json!({ "data": { "pass": "s" } }))
        .await;
    v.policy(
        "app",
        r#"path "secret/data/app/*" { capabilities = ["read"] }"#,
    )
    .await;
    assert_eq!(
        v.post("sys/auth/approle", r, json!({ "type": "approle" }))
            .await
            .status,
        204
    );
    let a = v
        .post(
            "auth/approle/role/app",
            r,
            json!({ "token_policies": ["app"], "token_ttl": "20m", "secret_id_ttl": "10m" }),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    let a = v.get("auth/approle/role/app", r).await;
    assert_eq!(a.json()["data"]["token_policies"], json!(["app"]));
    let role_id = v.get("auth/approle/role/app/role-id", r).await.json()["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = v
        .post(
            "auth/approle/role/app/secret-id",
            r,
            json!({ "metadata": "{\"host\":\"web-1\"}", "num_uses": 2 }),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let secret = a.json()["data"]["secret_id"].as_str().unwrap().to_owned();
    let accessor = a.json()["data"]["secret_id_accessor"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(a.json()["data"]["secret_id_ttl"], 600);

    // Login (no token needed) gives a token with the role's policies and metadata.
    let login = json!({ "role_id": role_id, "secret_id": secret });
    let a = v
        .call("POST", "auth/approle/login", None, Some(login.clone()))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let auth = &a.json()["auth"];
    assert_eq!(auth["policies"], json!(["app", "default"]));
    assert_eq!(auth["lease_duration"], 1200);
    assert_eq!(auth["metadata"]["host"], "web-1");
    assert_eq!(auth["metadata"]["role_name"], "app");
    let token = auth["client_token"].as_str().unwrap().to_owned();
    assert_eq!(v.get("secret/data/app/db", &token).await.status, 200);
    assert_eq!(v.get("secret/metadata/app/db", &token).await.status, 403);

    // Accessor lookup shows what is left; the second login spends the last use.
    let a = v
        .post(
            "auth/approle/role/app/secret-id-accessor/lookup",
            r,
            json!({ "secret_id_accessor": accessor }),
        )
        .await;
    assert_eq!(a.json()["data"]["secret_id_num_uses"], 1);
    assert_eq!(a.json()["data"]["metadata"]["host"], "web-1");
    assert_eq!(
        v.call("POST", "auth/approle/login", None, Some(login.clone()))
            .await
            .status,
        200
    );
    let a = v
        .call("POST", "auth/approle/login", None, Some(login.clone()))
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(errors(&a), vec!["invalid role or secret ID"]);

    // A wrong secret and a wrong role id get the same answer.
    let a = v
        .call(
            "POST",
            "auth/approle/login",
            None,
            Some(json!({ "role_id": role_id, "secret_id": "nope" })),
        )
        .await;
    assert_eq!(errors(&a), vec!["invalid role or secret ID"]);
    let a = v
        .call(
            "POST",
            "auth/approle/login",
            None,
            Some(json!({ "role_id": "nope", "secret_id": "nope" })),
        )
        .await;
    assert_eq!(errors(&a), vec!["invalid role or secret ID"]);

    // TTL: a secret id expires.
    let s2 = v
        .post("auth/approle/role/app/secret-id", r, json!({}))
        .await
        .json()["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    v.clock.advance(601);
    let a = v
        .call(
            "POST",
            "auth/approle/login",
            None,
            Some(json!({ "role_id": role_id, "secret_id": s2 })),
        )
        .await;
    assert_eq!(a.status, 400);

    // Destroy by value and by accessor.
    let a = v
        .post("auth/approle/role/app/secret-id", r, json!({ "ttl": 0 }))
        .await;
    let s3 = a.json()["data"]["secret_id"].as_str().unwrap().to_owned();
    let acc3 = a.json()["data"]["secret_id_accessor"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        v.list("auth/approle/role/app/secret-id", r).await.json()["data"]["keys"],
        json!([acc3])
    );
    let a = v
        .post(
            "auth/approle/role/app/secret-id-accessor/destroy",
            r,
            json!({ "secret_id_accessor": acc3 }),
        )
        .await;
    assert_eq!(a.status, 204);
    let a = v
        .call(
            "POST",
            "auth/approle/login",
            None,
            Some(json!({ "role_id": role_id, "secret_id": s3 })),
        )
        .await;
    assert_eq!(a.status, 400);

    // Secret ids are stored only as keyed hashes.
    for key in v.store.list("vault/").await.unwrap() {
        assert!(!key.contains(&s3) && !key.contains(&secret), "{key}");
    }
    // Managing roles needs a token; login does not.
    assert_eq!(
        v.call("GET", "auth/approle/role/app", None, None)
            .await
            .status,
        403
    );
    assert_eq!(v.get("auth/approle/role/app", &token).await.status, 403);
}
both_backends!(approle_login_and_secret_ids);

async fn approle_cidr_bindings(b: Backend) {
    let v = TestVault::start(b).await;
    let r = &v.root;
    v.post("sys/auth/approle", r, json!({ "type": "approle" }))
        .await;
    for (role, cidr) in [("far", "10.0.0.0/8"), ("near", "127.0.0.0/8")] {
        let a = v
            .post(
                &format!("auth/approle/role/{role}"),
                r,
                json!({ "secret_id_bound_cidrs": [cidr] }),
            )
            .await;
        assert_eq!(a.status, 204, "{:?}", a.body);
    }
    let a = v
        .post(
            "auth/approle/role/bad",
            r,
            json!({ "secret_id_bound_cidrs": ["10.0.0.0/33"] }),
        )
        .await;
    assert_eq!(a.status, 400);
    for (role, expected) in [("far", 400), ("near", 200)] {
        let role_id = v
            .get(&format!("auth/approle/role/{role}/role-id"), r)
            .await
            .json()["data"]["role_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let secret = v
            .post(&format!("auth/approle/role/{role}/secret-id"), r, json!({}))
            .await
            .json()["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let a = v
            .call(
                "POST",
                "auth/approle/login",
                None,
                Some(json!({ "role_id": role_id, "secret_id": secret })),
            )
            .await;
        assert_eq!(a.status, expected, "{role}: {:?}", a.body);
    }
    // A secret id bound to a CIDR of its own.
    let role_id = v.get("auth/approle/role/near/role-id", r).await.json()["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret = v
        .post(
            "auth/approle/role/near/secret-id",
            r,
            json!({ "cidr_list": "192.168.0.0/16" }),
        )
        .await
        .json()["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = v
        .call(
            "POST",
            "auth/approle/login",
            None,
            Some(json!({ "role_id": role_id, "secret_id": secret })),
        )
        .await;
    assert_eq!(a.status, 400);
}
both_backends!(approle_cidr_bindings);
