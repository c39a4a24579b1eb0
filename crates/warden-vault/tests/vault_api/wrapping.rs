//! Response wrapping: `X-Vault-Wrap-TTL` on any request, `sys/wrapping/wrap|unwrap|lookup|
//! rewrap`, single use, expiry, a wrapped AppRole secret-id reaching a new workload, a wrapped
//! token creation.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::both_backends;
use crate::common::{errors, Backend, TestVault};

const INVALID: &str = "wrapping token is not valid or does not exist";

impl TestVault {
    /// `method path` with `X-Vault-Wrap-TTL: ttl`.
    async fn wrapped(
        &self,
        method: &str,
        path: &str,
        token: &str,
        ttl: &str,
        body: Value,
    ) -> warden_test_util::client::Answer {
        self.raw(
            method,
            path,
            Some(token),
            &[("x-vault-wrap-ttl", ttl)],
            Bytes::from(body.to_string()),
        )
        .await
    }

    /// Unwraps with the wrapping token as the request's token.
    async fn unwrap_self(&self, wrapping: &str) -> warden_test_util::client::Answer {
        self.call("POST", "sys/wrapping/unwrap", Some(wrapping), None)
            .await
    }
}

fn wrap_token(a: &warden_test_util::client::Answer) -> String {
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.json()["wrap_info"]["token"].as_str().unwrap().to_owned()
}

async fn wrap_unwrap_lookup_rewrap(b: Backend) {
    let v = TestVault::start(b).await;
    let r = &v.root;

    let a = v
        .wrapped(
            "POST",
            "sys/wrapping/wrap",
            r,
            "5m",
            json!({ "password": "hunter2" }),
        )
        .await;
    let j = a.json();
    assert_eq!(a.status, 200, "{j}");
    assert_eq!(j["data"], Value::Null, "a wrapped answer carries no data");
    assert_eq!(j["auth"], Value::Null);
    assert!(!a.body.windows(7).any(|w| w == b"hunter2"));
    let info = &j["wrap_info"];
    assert_eq!(info["ttl"], 300);
    assert_eq!(info["creation_path"], "sys/wrapping/wrap");
    assert!(info["token"].as_str().unwrap().starts_with("hvs."));
    assert!(!info["accessor"].as_str().unwrap().is_empty());
    assert_eq!(info["creation_time"], "2027-01-15T08:00:00Z");
    let first = info["token"].as_str().unwrap().to_owned();

    // Lookup needs no token of its own and spends no use; twice is fine.
    for _ in 0..2 {
        let a = v
            .call(
                "POST",
                "sys/wrapping/lookup",
                None,
                Some(json!({ "token": first })),
            )
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.json()["data"]["creation_ttl"], 300);
        assert_eq!(a.json()["data"]["creation_path"], "sys/wrapping/wrap");
        assert_eq!(a.json()["data"]["creation_time"], "2027-01-15T08:00:00Z");
    }
    // The wrapping token is no ordinary token.
    assert_eq!(v.get("auth/token/lookup-self", &first).await.status, 403);

    // Rewrap: a new token with the same TTL and path, the old one dead.
    v.clock.advance(10);
    let a = v
        .post("sys/wrapping/rewrap", r, json!({ "token": first }))
        .await;
    let second = wrap_token(&a);
    assert_ne!(second, first);
    assert_eq!(a.json()["wrap_info"]["ttl"], 300);
    assert_eq!(a.json()["wrap_info"]["creation_path"], "sys/wrapping/wrap");
    let a = v.unwrap_self(&first).await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert_eq!(errors(&a), vec![INVALID]);

    // Unwrap with the wrapping token as the request's token: the original data, once.
    let a = v.unwrap_self(&second).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.json()["data"], json!({ "password": "hunter2" }));
    assert_eq!(a.json()["wrap_info"], Value::Null);
    let a = v.unwrap_self(&second).await;
    assert_eq!(a.status, 400);
    assert_eq!(errors(&a), vec![INVALID]);
    let a = v
        .call(
            "POST",
            "sys/wrapping/lookup",
            None,
            Some(json!({ "token": second })),
        )
        .await;
    assert_eq!(errors(&a), vec![INVALID]);

    // With the token in the body, by a token holding only the default policy.
    let plain = v.token(r, json!({ "policies": ["default"] })).await;
    let third = wrap_token(
        &v.wrapped("POST", "sys/wrapping/wrap", &plain, "60", json!({ "k": 1 }))
            .await,
    );
    let a = v
        .post("sys/wrapping/unwrap", &plain, json!({ "token": third }))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.json()["data"], json!({ "k": 1 }));
    let a = v
        .post("sys/wrapping/unwrap", &plain, json!({ "token": third }))
        .await;
    assert_eq!(errors(&a), vec![INVALID]);
    // Unknown and ordinary tokens are not wrapping tokens.
    let a = v
        .post(
            "sys/wrapping/unwrap",
            &plain,
            json!({ "token": "hvs.nope" }),
        )
        .await;
    assert_eq!(errors(&a), vec![INVALID]);
    let a = v.unwrap_self(&plain).await;
    assert_eq!(errors(&a), vec![INVALID]);
    assert_eq!(
        v.get("auth/token/lookup-self", &plain).await.status,
        200,
        "an ordinary token presented to unwrap is not spent"
    );
}
both_backends!(wrap_unwrap_lookup_rewrap);

async fn bad_wrap_ttls_are_refused(b: Backend) {
    let v = TestVault::start(b).await;
    let r = &v.root;
    for ttl in ["0", "abc", "-5", "1000h", "5x"] {
        let a = v
            .wrapped("POST", "sys/wrapping/wrap", r, ttl, json!({ "a": "b" }))
            .await;
        assert_eq!(a.status, 400, "ttl {ttl:?}: {:?}", a.body);
        assert!(errors(&a)[0].contains("X-Vault-Wrap-TTL"), "{:?}", a.body);
    }
    // A bad TTL on an ordinary request changes nothing: no token is created.
    let a = v
        .wrapped(
            "POST",
            "auth/token/create",
            r,
            "0s",
            json!({ "policies": ["default"] }),
        )
        .await;
    assert_eq!(a.status, 400);
    let a = v.list("auth/token/accessors", r).await;
    assert_eq!(a.json()["data"]["keys"].as_array().unwrap().len(), 1);
    // `sys/wrapping/wrap` needs the header, and data.
    let a = v.post("sys/wrapping/wrap", r, json!({ "a": "b" })).await;
    assert_eq!(a.status, 400);
    let a = v
        .wrapped("POST", "sys/wrapping/wrap", r, "30s", json!({}))
        .await;
    assert_eq!(a.status, 400);
    // The wrapping policy is reserved.
    let a = v
        .post(
            "sys/policies/acl/response-wrapping",
            r,
            json!({ "policy": "path \"*\" { capabilities = [\"read\"] }" }),
        )
        .await;
    assert_eq!(a.status, 400, "{:?}", a.body);
}
both_backends!(bad_wrap_ttls_are_refused);

async fn wrapping_tokens_expire(b: Backend) {
    let v = TestVault::start(b).await;
    let r = &v.root;
    let t = wrap_token(
        &v.wrapped("POST", "sys/wrapping/wrap", r, "30s", json!({ "a": "b" }))
            .await,
    );
    let u = wrap_token(
        &v.wrapped("POST", "sys/wrapping/wrap", r, "30s", json!({ "a": "c" }))
            .await,
    );
    v.clock.advance(29);
    let a = v
        .call(
            "POST",
            "sys/wrapping/lookup",
            None,
            Some(json!({ "token": t })),
        )
        .await;
    assert_eq!(a.status, 200);
    v.clock.advance(2);
    let a = v
        .call(
            "POST",
            "sys/wrapping/lookup",
            None,
            Some(json!({ "token": t })),
        )
        .await;
    assert_eq!(errors(&a), vec![INVALID]);
    let a = v.unwrap_self(&u).await;
    assert_eq!(a.status, 400);
    assert_eq!(errors(&a), vec![INVALID]);
    // The expired token's cubbyhole was removed with it.
    let left = v.store.list("vault/wrapping/").await.unwrap();
    assert!(left.is_empty(), "{left:?}");
}
both_backends!(wrapping_tokens_expire);

async fn tidy_removes_expired_tokens_never_seen_again(b: Backend) {
    let v = TestVault::start(b).await;
    let r = &v.root;
    // Two wrapping tokens nobody presents again, one that outlives the tidy, and a plain
    // token with a short TTL.
    for ttl in ["30s", "30s", "1h"] {
        wrap_token(
            &v.wrapped(
                "POST",
                "sys/wrapping/wrap",
                r,
                ttl,
                json!({ "k": "secret" }),
            )
            .await,
        );
    }
    v.token(r, json!({ "ttl": "20s", "policies": ["default"] }))
        .await;
    let user = v
        .token(r, json!({ "ttl": "1h", "policies": ["default"] }))
        .await;
    assert_eq!(v.store.list("vault/wrapping/").await.unwrap().len(), 3);
    v.clock.advance(31);

    // Only update on auth/token/tidy is needed; the default policy does not grant it.
    let a = v.post("auth/token/tidy", &user, json!({})).await;
    assert_eq!(a.status, 403, "{:?}", a.body);
    let a = v.post("auth/token/tidy", r, json!({})).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    let warning = a.json()["warnings"][0].as_str().unwrap().to_owned();
    assert!(warning.contains("3 expired token(s)"), "{warning}");
    // The expired cubbyholes are gone; the live one stays and still unwraps.
    assert_eq!(v.store.list("vault/wrapping/").await.unwrap().len(), 1);
    let a = v.get("auth/token/lookup-self", r).await;
    assert_eq!(a.status, 200, "the root token (no expiry) survives a tidy");
    let a = v.post("auth/token/tidy", r, json!({})).await;
    assert!(a.json()["warnings"][0]
        .as_str()
        .unwrap()
        .contains("0 expired"));
    let a = v.call("GET", "auth/token/tidy", Some(r), None).await;
    assert_eq!(a.status, 405);
}
both_backends!(tidy_removes_expired_tokens_never_seen_again);

async fn wrapped_secret_id_reaches_a_workload(b: Backend) {
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
    v.post("sys/auth/approle", r, json!({ "type": "approle" }))
        .await;
    v.post(
        "auth/approle/role/app",
        r,
        json!({ "token_policies": ["app"], "secret_id_num_uses": 1 }),
    )
    .await;
    let role_id = v.get("auth/approle/role/app/role-id", r).await.json()["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The deployer asks for a wrapped secret id: it never sees the secret id itself.
    let a = v
        .wrapped(
            "POST",
            "auth/approle/role/app/secret-id",
            r,
            "120",
            json!({}),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.json()["data"], Value::Null);
    assert_eq!(
        a.json()["wrap_info"]["creation_path"],
        "auth/approle/role/app/secret-id"
    );
    let wrapping = wrap_token(&a);
    // The workload unwraps once and logs in.
    let a = v.unwrap_self(&wrapping).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let secret_id = a.json()["data"]["secret_id"].as_str().unwrap().to_owned();
    assert!(!a.json()["data"]["secret_id_accessor"]
        .as_str()
        .unwrap()
        .is_empty());
    let a = v
        .call(
            "POST",
            "auth/approle/login",
            None,
            Some(json!({ "role_id": role_id, "secret_id": secret_id })),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let token = a.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = v.get("secret/data/app/db", &token).await;
    assert_eq!(a.json()["data"]["data"]["pass"], "s");
    // An intercepted (already unwrapped) token gives nothing.
    assert_eq!(errors(&v.unwrap_self(&wrapping).await), vec![INVALID]);
}
both_backends!(wrapped_secret_id_reaches_a_workload);

async fn wrapped_token_creation_and_reads(b: Backend) {
    let v = TestVault::start(b).await;
    let r = &v.root;
    let a = v
        .wrapped(
            "POST",
            "auth/token/create",
            r,
            "5m",
            json!({ "policies": ["default"], "ttl": "1h" }),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.json()["auth"], Value::Null);
    let wrapped_accessor = a.json()["wrap_info"]["wrapped_accessor"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!wrapped_accessor.is_empty());
    let wrapping = wrap_token(&a);
    let a = v
        .post("sys/wrapping/unwrap", r, json!({ "token": wrapping }))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let auth = &a.json()["auth"];
    assert_eq!(auth["accessor"], json!(wrapped_accessor));
    assert_eq!(auth["lease_duration"], 3600);
    let token = auth["client_token"].as_str().unwrap().to_owned();
    let a = v.get("auth/token/lookup-self", &token).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["data"]["accessor"], json!(wrapped_accessor));

    // A KV read, wrapped; unwrapping with a wrap TTL wraps again.
    v.enable_kv("secret", 2).await;
    v.post("secret/data/x", r, json!({ "data": { "v": "1" } }))
        .await;
    let w = wrap_token(&v.wrapped("GET", "secret/data/x", r, "1m", json!({})).await);
    let a = v
        .wrapped(
            "POST",
            "sys/wrapping/unwrap",
            r,
            "1m",
            json!({ "token": w }),
        )
        .await;
    let w2 = wrap_token(&a);
    assert_eq!(
        a.json()["wrap_info"]["creation_path"],
        "sys/wrapping/unwrap"
    );
    let a = v.unwrap_self(&w2).await;
    assert_eq!(a.json()["data"]["data"], json!({ "v": "1" }));
    assert_eq!(a.json()["mount_type"], "kv");
    // Errors are not wrapped.
    let a = v
        .wrapped("GET", "secret/data/none", r, "1m", json!({}))
        .await;
    assert_eq!(a.status, 404);
    // Nor are answers without content.
    let a = v
        .wrapped(
            "POST",
            "sys/policies/acl/p",
            r,
            "1m",
            json!({ "policy": "path \"a\" { capabilities = [\"read\"] }" }),
        )
        .await;
    assert_eq!(a.status, 204);
}
both_backends!(wrapped_token_creation_and_reads);

async fn concurrent_unwraps_one_wins(b: Backend) {
    let v = TestVault::start(b).await;
    let t = wrap_token(
        &v.wrapped(
            "POST",
            "sys/wrapping/wrap",
            &v.root,
            "1m",
            json!({ "once": "only" }),
        )
        .await,
    );
    let (a1, a2, a3, a4, a5, a6) = tokio::join!(
        v.unwrap_self(&t),
        v.unwrap_self(&t),
        v.unwrap_self(&t),
        v.post("sys/wrapping/unwrap", &v.root, json!({ "token": t })),
        v.post("sys/wrapping/unwrap", &v.root, json!({ "token": t })),
        v.post("sys/wrapping/unwrap", &v.root, json!({ "token": t })),
    );
    let answers = [a1, a2, a3, a4, a5, a6];
    let won: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
    assert_eq!(won.len(), 1, "exactly one unwrap gets the content");
    assert_eq!(won[0].json()["data"], json!({ "once": "only" }));
    for a in answers.iter().filter(|a| a.status != 200) {
        assert_eq!(a.status, 400);
        assert_eq!(errors(a), vec![INVALID]);
    }
}
both_backends!(concurrent_unwraps_one_wins);
