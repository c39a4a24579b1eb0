//! `vault:` references against a real Warden authority (its vault, KV v2 at `secret/`, on
//! SQLite in a temp dir; the vault's storage has its own tests on both backends), with real
//! gateways, a real upstream and, for the Redis password, a private `redis-server`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{json, Value};
use warden_config::{SecretRef, VaultClientConfig};
use warden_test_util::client;
use warden_test_util::jwt::{hs256, now};
use warden_test_util::Upstream;

use super::{VaultClient, VaultSecrets};

/// A running authority with its vault unsealed, KV v2 at `secret/` and a root token.
struct Vault {
    handle: warden_authority::AuthorityHandle,
    root: VaultClient,
    root_token: String,
    dir: tempfile::TempDir,
}

impl Vault {
    async fn start() -> Vault {
        let dir = tempfile::tempdir().expect("temp dir");
        let kek = dir.path().join("authority.kek");
        std::fs::write(&kek, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").expect("kek");
        let cfg = warden_config::AuthorityConfig {
            enabled: true,
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: dir.path().to_path_buf(),
            key_encryption_key: Some(SecretRef::File(kek)),
            issuer: "https://authority.test".into(),
            ..Default::default()
        };
        let handle = warden_authority::start(&cfg).await.expect("authority");
        let live = handle.services().live().expect("unsealed");
        live.vault
            .enable_secrets_engine("secret", "kv", &[("version", "2")])
            .await
            .expect("KV v2 at secret/");
        let root_token = live
            .vault
            .create_root_token(None)
            .await
            .expect("root token");
        let token_file = dir.path().join("root.token");
        std::fs::write(&token_file, format!("{root_token}\n")).expect("token file");
        let root = VaultClient::new(&VaultClientConfig {
            address: Some(handle.url()),
            token: Some(SecretRef::File(token_file)),
            ..Default::default()
        })
        .expect("client");
        Vault {
            handle,
            root,
            root_token,
            dir,
        }
    }

    fn url(&self) -> String {
        self.handle.url()
    }

    /// A file holding `text`, in the vault's temp dir.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> Value {
        self.root
            .call(method, path, Some(&body))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Writes a new version of the KV v2 secret `secret/<path>`.
    async fn put(&self, path: &str, data: Value) {
        self.call(
            Method::PUT,
            &format!("secret/data/{path}"),
            json!({ "data": data }),
        )
        .await;
    }
}

/// A gateway started from `toml` (written to a file, so it reloads from it) with the vault
/// source and its watcher, as `warden serve` runs them.
struct Gateway {
    handle: warden_proxy::GatewayHandle,
    watcher: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl Gateway {
    async fn start(toml: &str) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("warden.toml");
        std::fs::write(&path, toml).expect("config");
        let config = warden_config::load(&path).map_err(|e| e.to_string())?;
        let secrets = VaultSecrets::new();
        let source: Arc<dyn warden_proxy::SecretSource> = secrets.clone();
        let handle = warden_proxy::start_with_secrets(config, Some(path), Some(source))
            .await
            .map_err(|e| e.to_string())?;
        let watcher = tokio::spawn(super::watch(secrets, handle.gateway().clone()));
        Ok(Gateway {
            handle,
            watcher,
            dir,
        })
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.handle.listener_addr("main").expect("listener")
    }

    async fn get(&self, bearer: Option<&str>) -> u16 {
        let mut req = http::Request::get("/x").header("host", "localhost");
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        client::send_h1(self.addr(), req).await.status
    }

    fn rewrite(&self, toml: &str) {
        let path = self.dir.path().join("warden.toml");
        std::fs::write(&path, toml).expect("config");
    }

    async fn stop(self) {
        self.watcher.abort();
        self.handle.shutdown().await;
    }
}

fn base(vault: &str, client: &str) -> String {
    format!(
        "[admin]\nenabled = false\n[access_log]\nenabled = false\n[reload]\nwatch = false\n\
         [[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n\
         [vault]\naddress = \"{vault}\"\npoll_interval = \"1s\"\n{client}\n"
    )
}

fn jwt_route(upstream: &str, secret_ref: &str) -> String {
    format!(
        "[[auth.jwt]]\nname = \"svc\"\nissuer = \"https://issuer.test\"\naudiences = [\"api\"]\n\
         algorithms = [\"HS256\"]\nhmac_secret = \"{secret_ref}\"\n\
         [[clusters]]\nname = \"up\"\nendpoints = [\"{upstream}\"]\n\
         [[routes]]\nname = \"r\"\ncluster = \"up\"\npath_prefix = \"/\"\n\
         [routes.auth]\naccept = [\"jwt:svc\"]\n"
    )
}

fn token(secret: &str) -> String {
    let claims = json!({
        "iss": "https://issuer.test", "aud": "api", "sub": "svc-a",
        "iat": now(), "exp": now() + 600,
    });
    hs256(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims,
        secret.as_bytes(),
    )
}

/// Polls `f` until it returns `want`, for at most 20 s (the watcher polls every second).
async fn eventually<F, Fut>(want: u16, mut f: F) -> u16
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = f().await;
        if got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const SECRET_A: &str = "first-shared-secret-0123456789abcdef";
const SECRET_B: &str = "second-shared-secret-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_secret_from_the_vault_follows_a_new_version_without_restart() {
    let vault = Vault::start().await;
    let up = Upstream::start("up").await;
    vault.put("gw", json!({ "jwt": SECRET_A })).await;
    let token_file = vault.file("gw.token", &vault.root_token);
    let client = format!("token = \"file:{}\"", token_file.display());
    let toml = base(&vault.url(), &client) + &jwt_route(&up.url(), "vault:secret/gw#jwt");
    let gw = Gateway::start(&toml).await.expect("starts");

    assert_eq!(gw.get(Some(&token(SECRET_A))).await, 200);
    assert_eq!(gw.get(Some(&token(SECRET_B))).await, 401);
    assert_eq!(gw.get(None).await, 401);

    // A new version in the vault: the watcher sees it and reloads; no restart, no SIGHUP.
    vault.put("gw", json!({ "jwt": SECRET_B })).await;
    let new_token = token(SECRET_B);
    let b = eventually(200, || gw.get(Some(&new_token))).await;
    assert_eq!(b, 200, "a token signed with the new secret is accepted");
    assert_eq!(gw.get(Some(&token(SECRET_A))).await, 401);

    // A reload whose reference cannot be read is refused, naming the field and the
    // reference; the running config (and its secret) stays.
    gw.rewrite(&(base(&vault.url(), &client) + &jwt_route(&up.url(), "vault:secret/gone#jwt")));
    let err = gw.handle.reload().await.expect_err("refused").to_string();
    assert!(
        err.contains("auth.jwt[0].hmac_secret") && err.contains("`vault:secret/gone#jwt`"),
        "{err}"
    );
    assert!(err.contains("no such secret"), "{err}");
    assert_eq!(gw.get(Some(&token(SECRET_B))).await, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_password_from_the_vault_is_used_and_a_corrected_one_is_picked_up() {
    let test = "vault_redis_password";
    let Some(redis) =
        warden_test_util::redis::RedisServer::start_with_password(test, "right-password").await
    else {
        return;
    };
    let vault = Vault::start().await;
    let up = Upstream::start("up").await;
    // Wrong at first: with on_store_failure = "closed" a store that cannot log in refuses.
    vault
        .put("gw/redis", json!({ "password": "wrong-password" }))
        .await;
    let token_file = vault.file("gw.token", &vault.root_token);
    let toml = base(
        &vault.url(),
        &format!("token = \"file:{}\"", token_file.display()),
    ) + &format!(
        "[rate_limit_store]\nredis_url = \"{}\"\npassword = \"vault:secret/gw/redis#password\"\n\
         timeout = \"200ms\"\nkey_prefix = \"{}\"\n\
         [[clusters]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"r\"\ncluster = \"up\"\npath_prefix = \"/\"\nauth = \"none\"\n\
         [[routes.rate_limits]]\nkey = \"client_ip\"\nrequests = 1000\nstore = \"redis\"\n\
         on_store_failure = \"closed\"\n",
        redis.url(),
        warden_test_util::redis::unique_prefix(test),
        up.url()
    );
    let gw = Gateway::start(&toml).await.expect("starts");
    assert_eq!(gw.get(None).await, 429, "Redis refuses the wrong password");
    vault
        .put("gw/redis", json!({ "password": "right-password" }))
        .await;
    let status = eventually(200, || gw.get(None)).await;
    assert_eq!(status, 200, "the corrected password from the vault logs in");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_field_or_a_wrong_token_is_a_clear_start_up_error() {
    let vault = Vault::start().await;
    let up = Upstream::start("up").await;
    vault.put("gw", json!({ "jwt": SECRET_A })).await;
    let good = vault.file("good.token", &vault.root_token);
    let with = |token: &Path, r: &str| {
        base(
            &vault.url(),
            &format!("token = \"file:{}\"", token.display()),
        ) + &jwt_route(&up.url(), r)
    };
    for (r, why) in [
        ("vault:secret/nothing-here#jwt", "no such secret"),
        ("vault:secret/gw#other", "the secret has no field `other`"),
        ("vault:nomount/gw#jwt", "403"),
    ] {
        let err = Gateway::start(&with(&good, r))
            .await
            .err()
            .expect("refused");
        assert!(
            err.contains(&format!("auth.jwt[0].hmac_secret: `{r}`")) && err.contains(why),
            "{r}: {err}"
        );
    }
    // A wrong token: the server's refusal, never the token itself.
    let bad = vault.file("bad.token", "hvs.not-a-real-token-0123456789");
    let err = Gateway::start(&with(&bad, "vault:secret/gw#jwt"))
        .await
        .err()
        .expect("refused");
    assert!(
        err.contains("403") && err.contains("permission denied"),
        "{err}"
    );
    assert!(!err.contains("not-a-real-token"), "{err}");
    // And the values never appear in an error either.
    assert!(!err.contains(SECRET_A));
    // Unreachable: names the address.
    let err = Gateway::start(
        &(base(
            "http://127.0.0.1:9",
            &format!("token = \"file:{}\"", good.display()),
        ) + &jwt_route(&up.url(), "vault:secret/gw#jwt")),
    )
    .await
    .err()
    .expect("refused");
    assert!(
        err.contains("cannot reach the vault at http://127.0.0.1:9"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_login_reads_what_its_policy_allows_and_nothing_else() {
    let vault = Vault::start().await;
    let up = Upstream::start("up").await;
    vault.put("gw", json!({ "jwt": SECRET_A })).await;
    vault.put("other", json!({ "jwt": SECRET_B })).await;
    vault
        .call(
            Method::PUT,
            "sys/auth/approle",
            json!({ "type": "approle" }),
        )
        .await;
    gateway_policy(&vault).await;
    vault
        .call(
            Method::PUT,
            "auth/approle/role/gateway",
            json!({ "token_policies": ["gateway"], "token_ttl": "1h" }),
        )
        .await;
    let role_id = vault
        .call(
            Method::GET,
            "auth/approle/role/gateway/role-id",
            Value::Null,
        )
        .await["data"]["role_id"]
        .as_str()
        .expect("role_id")
        .to_owned();
    let secret_id = vault
        .call(
            Method::PUT,
            "auth/approle/role/gateway/secret-id",
            json!({}),
        )
        .await["data"]["secret_id"]
        .as_str()
        .expect("secret_id")
        .to_owned();
    let role_file = vault.file("role-id", &role_id);
    let secret_file = vault.file("secret-id", &secret_id);
    let client = format!(
        "[vault.approle]\nrole_id = \"file:{}\"\nsecret_id = \"file:{}\"\n",
        role_file.display(),
        secret_file.display()
    );
    let gw = Gateway::start(
        &(base(&vault.url(), &client) + &jwt_route(&up.url(), "vault:secret/gw#jwt")),
    )
    .await
    .expect("AppRole login and read");
    assert_eq!(gw.get(Some(&token(SECRET_A))).await, 200);
    // The login's token follows changes too (its policy allows the metadata).
    vault.put("gw", json!({ "jwt": SECRET_B })).await;
    let new_token = token(SECRET_B);
    assert_eq!(eventually(200, || gw.get(Some(&new_token))).await, 200);
    gw.stop().await;

    // Outside the role's policy: refused, named.
    let err = Gateway::start(
        &(base(&vault.url(), &client) + &jwt_route(&up.url(), "vault:secret/other#jwt")),
    )
    .await
    .err()
    .expect("refused");
    assert!(
        err.contains("auth.jwt[0].hmac_secret: `vault:secret/other#jwt`") && err.contains("403"),
        "{err}"
    );
    // A wrong secret id: the login fails, clearly.
    let wrong = vault.file("wrong-secret-id", "00000000-0000-0000-0000-000000000000");
    let client = format!(
        "[vault.approle]\nrole_id = \"file:{}\"\nsecret_id = \"file:{}\"\n",
        role_file.display(),
        wrong.display()
    );
    let err = Gateway::start(
        &(base(&vault.url(), &client) + &jwt_route(&up.url(), "vault:secret/gw#jwt")),
    )
    .await
    .err()
    .expect("refused");
    assert!(err.contains("AppRole login failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_v1_secrets_are_read_as_is_and_changes_are_seen() {
    let vault = Vault::start().await;
    vault
        .call(
            Method::PUT,
            "sys/mounts/kv1",
            json!({ "type": "kv", "options": { "version": "1" } }),
        )
        .await;
    vault
        .call(Method::PUT, "kv1/gw", json!({ "jwt": SECRET_A }))
        .await;
    let token_file = vault.file("gw.token", &vault.root_token);
    let up = Upstream::start("up").await;
    let toml = base(
        &vault.url(),
        &format!("token = \"file:{}\"", token_file.display()),
    ) + &jwt_route(&up.url(), "vault:kv1/gw#jwt");
    let config = warden_config::parse(&toml).expect("config");
    let source = VaultSecrets::new();
    let resolver = source.fetch(&config).await.expect("fetched");
    let r = SecretRef::parse("vault:kv1/gw#jwt").expect("ref");
    let value = warden_config::SecretResolver::resolve(&*resolver, &r).expect("value");
    assert_eq!(value.as_slice(), SECRET_A.as_bytes());
    assert!(source.changed().await.is_empty(), "nothing changed yet");
    vault
        .call(Method::PUT, "kv1/gw", json!({ "jwt": SECRET_B }))
        .await;
    assert_eq!(source.changed().await, ["kv1/gw"]);
}

/// Writes the `gateway` policy: read on `secret/data/gw` and its metadata.
async fn gateway_policy(vault: &Vault) {
    vault
        .call(
            Method::PUT,
            "sys/policies/acl/gateway",
            json!({ "policy": "path \"secret/data/gw\" { capabilities = [\"read\"] }\n\
                              path \"secret/metadata/gw\" { capabilities = [\"read\"] }\n" }),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_token_is_renewed_and_an_approle_token_replaced_by_a_new_login() {
    let vault = Vault::start().await;
    let up = Upstream::start("up").await;
    vault.put("gw", json!({ "jwt": SECRET_A })).await;
    gateway_policy(&vault).await;

    // A renewable token that lives 6 s unless renewed (renewed at two thirds, on a poll: a
    // 2 s window, wide enough for a loaded CI machine).
    let short = vault
        .call(
            Method::PUT,
            "auth/token/create",
            json!({ "policies": ["gateway"], "ttl": "6s", "renewable": true }),
        )
        .await["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let token_file = vault.file("short.token", &short);
    let client = format!("token = \"file:{}\"", token_file.display());
    let gw = Gateway::start(
        &(base(&vault.url(), &client) + &jwt_route(&up.url(), "vault:secret/gw#jwt")),
    )
    .await
    .expect("starts");
    // Well past its first TTL: only renewals keep it working, so the change is still seen.
    tokio::time::sleep(Duration::from_secs(9)).await;
    vault.put("gw", json!({ "jwt": SECRET_B })).await;
    let new_token = token(SECRET_B);
    assert_eq!(
        eventually(200, || gw.get(Some(&new_token))).await,
        200,
        "the renewed token still reads the secret"
    );
    gw.stop().await;

    // AppRole whose tokens cannot outlive 3 s: the client logs in again.
    vault
        .call(
            Method::PUT,
            "sys/auth/approle",
            json!({ "type": "approle" }),
        )
        .await;
    vault
        .call(
            Method::PUT,
            "auth/approle/role/gateway",
            json!({ "token_policies": ["gateway"], "token_ttl": "3s", "token_max_ttl": "3s" }),
        )
        .await;
    let role_id = vault
        .call(
            Method::GET,
            "auth/approle/role/gateway/role-id",
            Value::Null,
        )
        .await["data"]["role_id"]
        .as_str()
        .expect("role_id")
        .to_owned();
    let secret_id = vault
        .call(
            Method::PUT,
            "auth/approle/role/gateway/secret-id",
            json!({}),
        )
        .await["data"]["secret_id"]
        .as_str()
        .expect("secret_id")
        .to_owned();
    let client = format!(
        "[vault.approle]\nrole_id = \"file:{}\"\nsecret_id = \"file:{}\"\n",
        vault.file("role-id", &role_id).display(),
        vault.file("secret-id", &secret_id).display()
    );
    let gw = Gateway::start(
        &(base(&vault.url(), &client) + &jwt_route(&up.url(), "vault:secret/gw#jwt")),
    )
    .await
    .expect("starts");
    assert_eq!(gw.get(Some(&new_token)).await, 200);
    tokio::time::sleep(Duration::from_secs(5)).await;
    vault.put("gw", json!({ "jwt": SECRET_A })).await;
    let old_token = token(SECRET_A);
    assert_eq!(
        eventually(200, || gw.get(Some(&old_token))).await,
        200,
        "a new login reads the secret after the first token ran out"
    );
    gw.stop().await;
}

/// The logins in PostgreSQL whose names start with `prefix`, with their `VALID UNTIL`.
fn pg_logins(url: &str, prefix: &str) -> Vec<(String, String)> {
    let out = std::process::Command::new("psql")
        .args([
            url,
            "-X",
            "-At",
            "-F",
            "|",
            "-c",
            &format!(
                "SELECT rolname, rolvaliduntil FROM pg_roles WHERE rolname LIKE '{prefix}%' \
                 ORDER BY rolname"
            ),
        ])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "psql: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

/// A leased secret (a database login from the vault's database engine, on the PostgreSQL of
/// `WARDEN_TEST_DATABASE_URL`) as a gateway's JWT secret: read once at start, its lease
/// renewed at two thirds of its TTL while it lives, and read again (a new login, applied like
/// a reload) once the lease is revoked. What the gateway holds is only visible in PostgreSQL:
/// one login while renewed, its `VALID UNTIL` moved on; after the revocation, a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_secret_is_renewed_then_read_again_once_its_lease_is_revoked() {
    let Ok(pg) = std::env::var("WARDEN_TEST_DATABASE_URL") else {
        eprintln!("WARDEN_TEST_DATABASE_URL is not set: leased-secret test skipped");
        return;
    };
    let vault = Vault::start().await;
    let up = Upstream::start("up").await;
    // A role name of its own, so the logins of this run are told apart from any other's.
    let role = {
        let mut b = [0u8; 4];
        rand::fill(&mut b[..]);
        format!(
            "g{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        )
    };
    let role = role[..8].to_owned();
    let prefix = format!("v-root-{role}-");
    vault
        .call(
            Method::POST,
            "sys/mounts/database",
            json!({ "type": "database" }),
        )
        .await;
    vault
        .call(
            Method::POST,
            "database/config/pg",
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": pg,
                "allowed_roles": [role],
            }),
        )
        .await;
    vault
        .call(
            Method::POST,
            &format!("database/roles/{role}"),
            json!({
                "db_name": "pg",
                "creation_statements": [
                    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
                ],
                "default_ttl": "4s",
                "max_ttl": "1h",
            }),
        )
        .await;
    let token_file = vault.file("gw.token", &vault.root_token);
    let toml = base(
        &vault.url(),
        &format!("token = \"file:{}\"", token_file.display()),
    ) + &jwt_route(&up.url(), &format!("vault:database/creds/{role}#password"));
    let gw = Gateway::start(&toml).await.expect("starts");
    assert_eq!(
        gw.get(None).await,
        401,
        "serving, with the route's JWT check"
    );

    let first = pg_logins(&pg, &prefix);
    assert_eq!(first.len(), 1, "one login read at start: {first:?}");
    let (login, valid_until) = first[0].clone();

    // Renewed, not re-read: the same login, valid for longer.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = pg_logins(&pg, &prefix);
        assert_eq!(now.len(), 1, "renewal must not create logins: {now:?}");
        assert_eq!(now[0].0, login);
        if now[0].1 != valid_until {
            break;
        }
        assert!(Instant::now() < deadline, "the lease was never renewed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Revoked in the vault: the login is dropped, and the gateway reads a new one.
    vault
        .call(
            Method::POST,
            &format!("sys/leases/revoke-prefix/database/creds/{role}"),
            json!({}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        let now = pg_logins(&pg, &prefix);
        if now.len() == 1 && now[0].0 != login {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "no new login after the revocation: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        !second.iter().any(|(n, _)| *n == login),
        "the revoked login is gone"
    );
    assert_eq!(gw.get(None).await, 401, "still serving after the re-read");
    gw.stop().await;
    // Its lease is revoked with the vault's token at the end of the test run; drop it now.
    vault
        .call(
            Method::POST,
            &format!("sys/leases/revoke-prefix/database/creds/{role}"),
            json!({}),
        )
        .await;
}
