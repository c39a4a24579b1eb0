//! `sys/leases/…` with database logins as the leased secrets: expiry on the manual clock (by
//! `run_lease_expiry` and by the background task alone), expiry after a restart, renew and
//! its cap, revoke-prefix, lookup, and leases dying with their token.

use serde_json::json;

use crate::both_backends;
use crate::common::{errors, Backend, TestVault, T0};
use crate::database::{
    creds, gone_within, login, need_pg, pg_url, role_exists, setup, valid_until,
};

async fn expiry_drops_the_login(b: Backend) {
    need_pg!();
    let v = TestVault::start(b).await;
    let role = setup(&v, "1h", "2h").await;
    let (lease, user, pw, _) = creds(&v, &role, &v.root).await;
    let (_, user_b, _, _) = creds(&v, &role, &v.root).await;
    assert!(role_exists(&user).await);

    // Not yet due: nothing happens.
    v.clock.advance(3599);
    assert_eq!(v.vault.run_lease_expiry().await.unwrap(), 0);
    assert!(role_exists(&user).await);

    // Due: both logins are dropped, the leases are gone.
    v.clock.advance(1);
    // (The background task may get there first; either way it is done when this returns.)
    v.vault.run_lease_expiry().await.unwrap();
    assert!(!role_exists(&user).await, "expired login still in pg_roles");
    assert!(!role_exists(&user_b).await);
    assert!(login(&user, &pw).await.is_err());
    let a = v
        .post("sys/leases/lookup", &v.root, json!({ "lease_id": lease }))
        .await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert_eq!(
        v.list(&format!("sys/leases/lookup/database/creds/{role}"), &v.root)
            .await
            .status,
        404
    );
}
both_backends!(expiry_drops_the_login);

async fn the_background_task_expires_leases_by_itself(b: Backend) {
    need_pg!();
    let v = TestVault::start(b).await;
    let role = setup(&v, "10m", "1h").await;
    let (_, user, _, _) = creds(&v, &role, &v.root).await;
    v.clock.advance(601);
    // No call: the task wakes each second and reads the (manual) clock.
    assert!(
        gone_within(&user).await,
        "the expiry task did not drop the login"
    );
}
both_backends!(the_background_task_expires_leases_by_itself);

async fn leases_that_expire_while_down_are_revoked_after_a_restart(b: Backend) {
    need_pg!();
    let v = TestVault::start(b).await;
    let role = setup(&v, "1h", "2h").await;
    let (_, user, _, _) = creds(&v, &role, &v.root).await;
    let (_, user2, _, _) = creds(&v, &role, &v.root).await;
    // "Restart": a second vault opened on the same store, its clock past the expiry. (The
    // first one's clock stays at T0, so only the new one can revoke.)
    let again = TestVault::start_at(v.location.clone(), tempfile::tempdir().unwrap()).await;
    again.clock.advance(3600 * 3);
    assert!(
        gone_within(&user).await && gone_within(&user2).await,
        "leases that expired while down were not revoked after opening"
    );
    assert_eq!(again.vault.run_lease_expiry().await.unwrap(), 0);
}
both_backends!(leases_that_expire_while_down_are_revoked_after_a_restart);

async fn renew_extends_and_is_capped_by_max_ttl(b: Backend) {
    need_pg!();
    let v = TestVault::start(b).await;
    let role = setup(&v, "1h", "2h").await;
    let (lease, user, _, _) = creds(&v, &role, &v.root).await;
    assert_eq!(valid_until(&user).await, Some(T0 + 3600));

    v.clock.advance(1800);
    let a = v
        .post(
            "sys/leases/renew",
            &v.root,
            json!({ "lease_id": lease, "increment": "1h" }),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let body = a.json();
    assert_eq!(body["lease_id"], lease.as_str());
    assert_eq!(body["renewable"], true);
    assert_eq!(body["lease_duration"], 3600);
    assert_eq!(
        valid_until(&user).await,
        Some(T0 + 5400),
        "VALID UNTIL not extended"
    );

    // Past the old expiry, the login survives.
    v.clock.advance(1900);
    assert_eq!(v.vault.run_lease_expiry().await.unwrap(), 0);
    assert!(role_exists(&user).await);

    // The legacy path; an increment past max_ttl is capped at issue + 2h.
    let a = v
        .post(
            "sys/renew",
            &v.root,
            json!({ "lease_id": lease, "increment": 86400 }),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.json()["lease_duration"], 7200 - 3700);
    assert_eq!(valid_until(&user).await, Some(T0 + 7200));
    let a = v
        .post("sys/leases/lookup", &v.root, json!({ "lease_id": lease }))
        .await;
    let d = &a.json()["data"];
    assert_eq!(d["ttl"], 3500);
    assert_eq!(d["expire_time"], "2027-01-15T10:00:00Z");
    assert!(d["last_renewal"].is_string());

    // At the cap: nothing left to renew.
    v.clock.advance(3500);
    v.vault.run_lease_expiry().await.unwrap();
    assert!(!role_exists(&user).await);
    let a = v
        .post("sys/leases/renew", &v.root, json!({ "lease_id": lease }))
        .await;
    assert_eq!(a.status, 400, "{:?}", a.body);

    // Bad input.
    for body in [
        json!({}),
        json!({ "lease_id": 7 }),
        json!({ "lease_id": "database/../x" }),
        json!({ "lease_id": "database/creds/x/y", "increment": "soon" }),
    ] {
        let a = v.post("sys/leases/renew", &v.root, body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {:?}", a.body);
        assert!(!errors(&a).is_empty());
    }
    assert_eq!(v.get("sys/leases/renew", &v.root).await.status, 405);
}
both_backends!(renew_extends_and_is_capped_by_max_ttl);

async fn revoke_prefix_and_lookup(b: Backend) {
    need_pg!();
    let v = TestVault::start(b).await;
    let role_a = setup(&v, "1h", "2h").await;
    let role_b = setup(&v, "1h", "2h").await;
    let (la1, ua1, _, _) = creds(&v, &role_a, &v.root).await;
    let (la2, ua2, _, _) = creds(&v, &role_a, &v.root).await;
    let (lb, ub, _, _) = creds(&v, &role_b, &v.root).await;

    // Lookup.
    let a = v
        .post("sys/leases/lookup", &v.root, json!({ "lease_id": la1 }))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let d = &a.json()["data"];
    assert_eq!(d["id"], la1.as_str());
    assert_eq!(d["issue_time"], "2027-01-15T08:00:00Z");
    assert_eq!(d["expire_time"], "2027-01-15T09:00:00Z");
    assert_eq!(d["ttl"], 3600);
    assert_eq!(d["renewable"], true);
    assert!(d["last_renewal"].is_null());
    // LIST one level.
    let a = v
        .list(
            &format!("sys/leases/lookup/database/creds/{role_a}/"),
            &v.root,
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let mut keys: Vec<String> = a.json()["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    let mut want = vec![
        la1.rsplit('/').next().unwrap().to_owned(),
        la2.rsplit('/').next().unwrap().to_owned(),
    ];
    want.sort();
    assert_eq!(keys, want);
    let a = v.list("sys/leases/lookup/database/", &v.root).await;
    assert_eq!(a.json()["data"]["keys"], json!(["creds/"]));

    // Listing and revoke-prefix need sudo; renew and lookup do not.
    v.policy(
        "leaser",
        r#"
path "sys/leases/*" { capabilities = ["update", "list"] }
path "sys/leases/lookup" { capabilities = ["update"] }
"#,
    )
    .await;
    let t = v.token(&v.root, json!({ "policies": ["leaser"] })).await;
    assert_eq!(
        v.post(
            &format!("sys/leases/revoke-prefix/database/creds/{role_a}"),
            &t,
            json!({})
        )
        .await
        .status,
        403
    );
    assert_eq!(v.list("sys/leases/lookup/database/", &t).await.status, 403);
    assert_eq!(
        v.post("sys/leases/lookup", &t, json!({ "lease_id": lb }))
            .await
            .status,
        200
    );

    // revoke-prefix of role A: both its logins go, role B's stays. (`…/role` does not match
    // a role whose name merely starts with it.)
    let a = v
        .post(
            &format!("sys/leases/revoke-prefix/database/creds/{role_a}"),
            &v.root,
            json!({}),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    assert!(!role_exists(&ua1).await && !role_exists(&ua2).await);
    assert!(role_exists(&ub).await);
    // The legacy path.
    let a = v
        .post("sys/revoke-prefix/database/creds", &v.root, json!({}))
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    assert!(!role_exists(&ub).await);
    let a = v
        .post("sys/leases/revoke-prefix/", &v.root, json!({}))
        .await;
    assert_eq!(a.status, 400, "{:?}", a.body);
}
both_backends!(revoke_prefix_and_lookup);

async fn leases_die_with_their_token(b: Backend) {
    need_pg!();
    let v = TestVault::start(b).await;
    let role = setup(&v, "1h", "2h").await;
    v.policy(
        "creds",
        r#"path "database/creds/*" { capabilities = ["read"] }
path "auth/token/create" { capabilities = ["update"] }"#,
    )
    .await;
    // parent → child; the child reads creds; revoking the parent revokes the child and so
    // the child's lease.
    let parent = v.token(&v.root, json!({ "policies": ["creds"] })).await;
    let child = v.token(&parent, json!({ "policies": ["creds"] })).await;
    let (_, user, _, _) = creds(&v, &role, &child).await;
    let (_, user_root, _, _) = creds(&v, &role, &v.root).await;
    assert!(user.starts_with("v-token-"), "{user}");
    let a = v
        .post("auth/token/revoke", &v.root, json!({ "token": parent }))
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    assert!(
        gone_within(&user).await,
        "the login of a revoked token's child was not dropped"
    );
    assert!(
        role_exists(&user_root).await,
        "another token's lease was revoked"
    );

    // A token that expires takes its leases with it, even when the lease would live longer.
    let short = v
        .token(&v.root, json!({ "policies": ["creds"], "ttl": "60s" }))
        .await;
    let (_, user_short, _, _) = creds(&v, &role, &short).await;
    v.clock.advance(61);
    v.vault.run_lease_expiry().await.unwrap();
    assert!(!role_exists(&user_short).await);
    assert!(role_exists(&user_root).await);

    // revoke-self works the same way.
    let t = v.token(&v.root, json!({ "policies": ["creds"] })).await;
    let (_, user_self, _, _) = creds(&v, &role, &t).await;
    let a = v.post("auth/token/revoke-self", &t, json!({})).await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    assert!(gone_within(&user_self).await);

    let a = v
        .post("sys/leases/revoke-prefix/database", &v.root, json!({}))
        .await;
    assert_eq!(a.status, 204);
    assert!(!role_exists(&user_root).await);
    let _ = pg_url();
}
both_backends!(leases_die_with_their_token);
