//! The database secrets engine against the real PostgreSQL of `WARDEN_TEST_DATABASE_URL`
//! (the vault's own storage on SQLite and on PostgreSQL): logins really work, and really
//! disappear. Every test uses its own role names and cleans up its logins.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::common::{errors, Backend, TestVault, T0};

/// The PostgreSQL the engine manages (the same server the PostgreSQL store tests use).
pub(crate) fn pg_url() -> Option<String> {
    std::env::var("WARDEN_TEST_DATABASE_URL").ok()
}

fn pg_config() -> tokio_postgres::Config {
    pg_url().unwrap().parse().unwrap()
}

fn db_name() -> String {
    pg_config().get_dbname().unwrap_or("postgres").to_owned()
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A connection as the configured (admin) user.
pub(crate) async fn admin() -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&pg_url().unwrap(), tokio_postgres::NoTls)
        .await
        .expect("connect to WARDEN_TEST_DATABASE_URL");
    tokio::spawn(conn);
    c
}

/// Whether a login role of that name exists.
pub(crate) async fn role_exists(name: &str) -> bool {
    admin()
        .await
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
        .await
        .unwrap()
        .is_some()
}

/// The role's `VALID UNTIL` as Unix seconds.
pub(crate) async fn valid_until(name: &str) -> Option<i64> {
    admin()
        .await
        .query_one(
            "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}

/// The stored password verifier of a role.
async fn rolpassword(pg: &tokio_postgres::Client, user: &str) -> Option<String> {
    pg.query_one(
        "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
        &[&user],
    )
    .await
    .unwrap()
    .get(0)
}

/// Logs in as `user`/`password` and asks who it is.
pub(crate) async fn login(user: &str, password: &str) -> Result<String, tokio_postgres::Error> {
    let mut cfg = pg_config();
    cfg.user(user).password(password);
    cfg.connect_timeout(Duration::from_secs(5));
    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let row = c.query_one("SELECT current_user::text", &[]).await?;
    Ok(row.get(0))
}

/// Waits (up to 10 s) until the role is gone; `false` if it is still there.
pub(crate) async fn gone_within(name: &str) -> bool {
    for _ in 0..100 {
        if !role_exists(name).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A database mount at `database/` with a connection `pg` (the admin URL, every role
/// allowed) and a role of a fresh name; returns the role name.
pub(crate) async fn setup(v: &TestVault, default_ttl: &str, max_ttl: &str) -> String {
    let a = v
        .post(
            "sys/mounts/database",
            &v.root,
            json!({ "type": "database" }),
        )
        .await;
    assert!(a.status == 204 || a.status == 400, "{:?}", a.body);
    let a = v
        .post(
            "database/config/pg",
            &v.root,
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": pg_url().unwrap(),
                "allowed_roles": ["*"],
            }),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    let role = format!("r{}", random_hex(4));
    let a = v
        .post(
            &format!("database/roles/{role}"),
            &v.root,
            json!({
                "db_name": "pg",
                "creation_statements": [format!(
                    "CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}' VALID UNTIL '{{{{expiration}}}}'; \
                     GRANT CONNECT ON DATABASE \"{}\" TO \"{{{{name}}}}\";", db_name()
                )],
                "default_ttl": default_ttl,
                "max_ttl": max_ttl,
            }),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    role
}

/// Reads creds for `role` with `token`: `(lease_id, username, password, body)`.
pub(crate) async fn creds(
    v: &TestVault,
    role: &str,
    token: &str,
) -> (String, String, String, Value) {
    let a = v.get(&format!("database/creds/{role}"), token).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let b = a.json();
    (
        b["lease_id"].as_str().unwrap().to_owned(),
        b["data"]["username"].as_str().unwrap().to_owned(),
        b["data"]["password"].as_str().unwrap().to_owned(),
        b,
    )
}

macro_rules! need_pg {
    () => {
        if pg_url().is_none() {
            eprintln!("WARDEN_TEST_DATABASE_URL is not set: the database engine tests need it");
            return;
        }
    };
}
pub(crate) use need_pg;

async fn creds_log_in_and_revoke_drops_them(b: Backend) {
    need_pg!();
    let v = TestVault::start(b).await;
    let role = setup(&v, "1h", "24h").await;
    let (lease_id, user, pw, body) = creds(&v, &role, &v.root).await;
    assert!(
        lease_id.starts_with(&format!("database/creds/{role}/")),
        "{lease_id}"
    );
    assert_eq!(body["renewable"], true);
    assert_eq!(body["lease_duration"], 3600);
    assert_eq!(body["mount_type"], "database");
    assert!(user.starts_with("v-root-"), "{user}");
    assert!(user.len() <= 63);
    assert!(pw.len() >= 20);

    // The login works, and expires in PostgreSQL when the lease does.
    assert_eq!(
        login(&user, &pw).await.expect("log in with the creds"),
        user
    );
    assert_eq!(valid_until(&user).await, Some(T0 + 3600));

    // Two reads, two different logins.
    let (lease2, user2, _, _) = creds(&v, &role, &v.root).await;
    assert_ne!(user, user2);
    assert_ne!(lease_id, lease2);

    // Revoke: the role is gone from pg_roles and cannot log in; the lease is gone.
    let a = v
        .post(
            "sys/leases/revoke",
            &v.root,
            json!({ "lease_id": lease_id }),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    assert!(!role_exists(&user).await, "revoked login still in pg_roles");
    assert!(
        login(&user, &pw).await.is_err(),
        "revoked login still logs in"
    );
    let a = v
        .post(
            "sys/leases/lookup",
            &v.root,
            json!({ "lease_id": lease_id }),
        )
        .await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    // Revoking again (unknown lease) succeeds, as in Vault; the other login is untouched.
    let a = v
        .post(&format!("sys/leases/revoke/{lease_id}"), &v.root, json!({}))
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    assert!(role_exists(&user2).await);

    // Disabling the mount revokes its remaining leases first.
    let a = v.delete("sys/mounts/database", &v.root).await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    assert!(
        !role_exists(&user2).await,
        "disabling the mount kept a login"
    );
}
both_backends!(creds_log_in_and_revoke_drops_them);

async fn config_hides_the_password_and_bad_input_is_400(b: Backend) {
    need_pg!();
    let v = TestVault::start(b).await;
    let a = v
        .post(
            "sys/mounts/database",
            &v.root,
            json!({ "type": "database" }),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    let url = pg_url().unwrap();
    // The connection the engine uses (the admin URL) with a username and a password that
    // must never be read back.
    let a = v
        .post(
            "database/config/main",
            &v.root,
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": url,
                "username": "postgres",
                "password": "s3cr3t-pa55word-never-shown",
                "allowed_roles": "app,other",
                "max_open_connections": 2,
            }),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    // A templated URL is kept as written (the password goes in only when connecting).
    let turl = "postgres://{{username}}:{{password}}@127.0.0.1:1/x";
    let a = v
        .post(
            "database/config/templated",
            &v.root,
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": turl,
                "username": "u",
                "password": "another-s3cr3t",
                "verify_connection": false,
            }),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    let a = v.get("database/config/templated", &v.root).await;
    assert_eq!(
        a.json()["data"]["connection_details"]["connection_url"],
        turl
    );
    assert_eq!(a.json()["data"]["verify_connection"], false);
    assert!(!String::from_utf8_lossy(&a.body).contains("s3cr3t"));
    assert_eq!(
        v.delete("database/config/templated", &v.root).await.status,
        204
    );
    let a = v.get("database/config/main", &v.root).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let text = String::from_utf8_lossy(&a.body).to_string();
    assert!(
        !text.contains("s3cr3t"),
        "config read shows the password: {text}"
    );
    let d = &a.json()["data"];
    assert_eq!(d["plugin_name"], "postgresql-database-plugin");
    assert_eq!(d["connection_details"]["username"], "postgres");
    assert_eq!(d["connection_details"]["connection_url"], url.as_str());
    assert_eq!(d["connection_details"]["max_open_connections"], 2);
    assert_eq!(d["allowed_roles"], json!(["app", "other"]));
    assert_eq!(d["verify_connection"], true);
    let a = v.list("database/config", &v.root).await;
    assert_eq!(a.json()["data"]["keys"], json!(["main"]));

    // Bad input: 400 with a message, nothing stored.
    for (body, what) in [
        (
            json!({ "plugin_name": "mysql-database-plugin", "connection_url": url }),
            "plugin_name",
        ),
        (
            json!({ "plugin_name": "postgresql-database-plugin" }),
            "connection_url",
        ),
        (
            json!({ "plugin_name": "postgresql-database-plugin", "connection_url": 5 }),
            "connection_url",
        ),
        (
            json!({ "plugin_name": "postgresql-database-plugin", "connection_url": url, "max_open_connections": 0 }),
            "max_open_connections",
        ),
        (
            json!({ "plugin_name": "postgresql-database-plugin", "connection_url": "postgres://127.0.0.1:1/x" }),
            "verifying connection",
        ),
        (
            json!({ "plugin_name": "postgresql-database-plugin", "connection_url": "postgres://127.0.0.1/x?sslmode=require" }),
            "sslmode",
        ),
    ] {
        let a = v.post("database/config/bad", &v.root, body).await;
        assert_eq!(a.status, 400, "{what}: {:?}", a.body);
        assert!(errors(&a)[0].contains(what), "{what}: {:?}", errors(&a));
    }
    assert_eq!(v.get("database/config/bad", &v.root).await.status, 404);
    let a = v
        .post("database/config/bad%20name", &v.root, json!({}))
        .await;
    assert_eq!(a.status, 400, "{:?}", a.body);

    // Roles: db_name and creation statements are required; TTLs are checked.
    for body in [
        json!({ "creation_statements": "CREATE ROLE x" }),
        json!({ "db_name": "main" }),
        json!({ "db_name": "main", "creation_statements": "x", "default_ttl": "2h", "max_ttl": "1h" }),
        json!({ "db_name": "main", "creation_statements": "x", "default_ttl": "soon" }),
        json!({ "db_name": "main", "creation_statements": "x", "credential_type": "rsa_private_key" }),
    ] {
        let a = v.post("database/roles/app", &v.root, body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {:?}", a.body);
    }
    assert_eq!(v.get("database/roles/app", &v.root).await.status, 404);
    let a = v
        .post(
            "database/roles/app",
            &v.root,
            json!({ "db_name": "main", "creation_statements": "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}'", "default_ttl": 300, "max_ttl": "1h" }),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    let a = v.get("database/roles/app", &v.root).await;
    let d = &a.json()["data"];
    assert_eq!(d["db_name"], "main");
    assert_eq!(d["default_ttl"], 300);
    assert_eq!(d["max_ttl"], 3600);
    assert_eq!(
        v.list("database/roles", &v.root).await.json()["data"]["keys"],
        json!(["app"])
    );

    // Creds: unknown role, and a role the connection does not allow, are 400.
    let a = v.get("database/creds/nope", &v.root).await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    let a = v
        .post(
            "database/roles/stranger",
            &v.root,
            json!({ "db_name": "main", "creation_statements": "CREATE ROLE \"{{name}}\"" }),
        )
        .await;
    assert_eq!(a.status, 204);
    let a = v.get("database/creds/stranger", &v.root).await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert!(
        errors(&a)[0].contains("not an allowed role"),
        "{:?}",
        a.body
    );
    assert_eq!(
        v.list("sys/leases/lookup/database/creds", &v.root)
            .await
            .status,
        404,
        "a refused creds read left a lease"
    );

    // A creation statement that fails leaves neither a login nor a lease.
    let a = v
        .post(
            "database/roles/app",
            &v.root,
            json!({ "creation_statements": "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}'; SELECT no_such_function()" }),
        )
        .await;
    assert_eq!(a.status, 204);
    let a = v.get("database/creds/app", &v.root).await;
    assert_eq!(a.status, 500, "{:?}", a.body);
    assert_eq!(
        v.list("sys/leases/lookup/database/creds/app", &v.root)
            .await
            .status,
        404
    );

    // Delete role and config.
    assert_eq!(v.delete("database/roles/app", &v.root).await.status, 204);
    assert_eq!(v.get("database/roles/app", &v.root).await.status, 404);
    assert_eq!(
        v.post("database/reset/main", &v.root, json!({}))
            .await
            .status,
        204
    );
    assert_eq!(v.delete("database/config/main", &v.root).await.status, 204);
    assert_eq!(v.get("database/config/main", &v.root).await.status, 404);
    assert_eq!(
        v.post("database/reset/main", &v.root, json!({}))
            .await
            .status,
        404
    );

    // A token without a policy for the engine is refused before anything is looked up.
    let t = v.token(&v.root, json!({ "policies": ["nothing"] })).await;
    assert_eq!(v.get("database/creds/app", &t).await.status, 403);
    assert_eq!(v.get("database/config/main", &t).await.status, 403);
}
both_backends!(config_hides_the_password_and_bad_input_is_400);

async fn rotate_root_changes_the_root_password(b: Backend) {
    need_pg!();
    let v = TestVault::start(b).await;
    let a = v
        .post("sys/mounts/db", &v.root, json!({ "type": "database" }))
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    let root_user = format!("wt_root_{}", random_hex(4));
    let pg = admin().await;
    pg.batch_execute(&format!(
        "CREATE ROLE \"{root_user}\" WITH LOGIN CREATEROLE PASSWORD 'initial-pw'"
    ))
    .await
    .unwrap();
    let before = rolpassword(&pg, &root_user).await;
    let port = pg_config().get_ports().first().copied().unwrap_or(5432);
    let a = v
        .post(
            "db/config/rot",
            &v.root,
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!("postgres://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{port}/{}", db_name()),
                "username": root_user,
                "password": "initial-pw",
                "allowed_roles": ["*"],
            }),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    let a = v.post("db/rotate-root/rot", &v.root, json!({})).await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    let after = rolpassword(&pg, &root_user).await;
    assert!(after.is_some());
    assert_ne!(
        before, after,
        "rotate-root did not change the password in PostgreSQL"
    );
    let a = v.get("db/config/rot", &v.root).await;
    let text = String::from_utf8_lossy(&a.body).to_string();
    assert!(
        !text.contains("initial-pw") && !text.contains("\"password\":"),
        "{text}"
    );

    // Does this server check passwords at all? (CI often trusts local connections.)
    let checks_passwords = login(&root_user, "definitely-wrong").await.is_err();
    if checks_passwords {
        assert!(
            login(&root_user, "initial-pw").await.is_err(),
            "the old root password still works after rotate-root"
        );
    } else {
        eprintln!("the server trusts local logins: the old-password check is by pg_authid only");
    }
    // The vault still works with the new password: a role and creds through this connection.
    let a = v
        .post(
            "db/roles/rr",
            &v.root,
            json!({ "db_name": "rot", "creation_statements": "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'", "default_ttl": "10m" }),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    let a = v.get("db/creds/rr", &v.root).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let user = a.json()["data"]["username"].as_str().unwrap().to_owned();
    assert!(role_exists(&user).await);
    // A second rotation changes it again.
    let a = v.post("db/rotate-root/rot", &v.root, json!({})).await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    assert_ne!(rolpassword(&pg, &root_user).await, after);

    // Rotation without a username is refused.
    let a = v
        .post(
            "db/config/nouser",
            &v.root,
            json!({ "plugin_name": "postgresql-database-plugin", "connection_url": pg_url().unwrap() }),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    let a = v.post("db/rotate-root/nouser", &v.root, json!({})).await;
    assert_eq!(a.status, 400, "{:?}", a.body);

    // Clean up: revoke the login (through the rotated connection), drop the root user.
    let a = v
        .post("sys/leases/revoke-prefix/db", &v.root, json!({}))
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    assert!(!role_exists(&user).await);
    pg.batch_execute(&format!("DROP ROLE \"{root_user}\""))
        .await
        .unwrap();
}
both_backends!(rotate_root_changes_the_root_password);

async fn scram_password_authentication_sends_a_verifier(b: Backend) {
    need_pg!();
    let v = TestVault::start(b).await;
    let role = setup(&v, "10m", "1h").await;
    let a = v
        .post(
            "database/config/pg",
            &v.root,
            json!({ "password_authentication": "scram-sha-256" }),
        )
        .await;
    assert_eq!(a.status, 204, "{:?}", a.body);
    let (lease, user, pw, _) = creds(&v, &role, &v.root).await;
    let stored: Option<String> = admin()
        .await
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    let stored = stored.unwrap();
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    assert!(!stored.contains(&pw));
    assert_eq!(login(&user, &pw).await.unwrap(), user);
    let a = v
        .post("sys/leases/revoke", &v.root, json!({ "lease_id": lease }))
        .await;
    assert_eq!(a.status, 204);
    assert!(!role_exists(&user).await);
}
both_backends!(scram_password_authentication_sends_a_verifier);
