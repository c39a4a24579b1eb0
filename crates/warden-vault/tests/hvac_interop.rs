//! The unmodified `hvac` Python client against the vault on a real socket: runs
//! scripts/interop/test_vault_hvac.py (tokens, policies, mounts, KV v1 and v2, AppRole with a
//! wrapped secret-id, audit devices, isolation, and with `WARDEN_TEST_DATABASE_URL` the
//! database engine and leases) with the interop virtualenv that scripts/interop/venv.sh
//! creates (from PyPI, once).

use warden_store::Store;
use warden_vault::{Vault, VaultOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hvac_against_the_vault() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("vault.db").to_str().unwrap(), &[3u8; 32])
        .await
        .unwrap();
    let vault = Vault::open(store, VaultOptions::default()).await.unwrap();
    let root = vault.create_root_token(None).await.unwrap();
    let app = axum::Router::new().nest("/v1", vault.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let out = warden_test_util::interop::run_python(
        "test_vault_hvac.py",
        vec![
            ("VAULT_ADDR".into(), format!("http://{addr}")),
            ("VAULT_TOKEN".into(), root.to_string()),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hvac interop failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("hvac interop: all checks passed"),
        "{stdout}"
    );
    // The logins hvac revoked are really gone from PostgreSQL.
    if let Ok(url) = std::env::var("WARDEN_TEST_DATABASE_URL") {
        let users: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("database login: "))
            .collect();
        assert_eq!(users.len(), 2, "{stdout}");
        let (pg, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        for u in users {
            let row = pg
                .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&u])
                .await
                .unwrap();
            assert!(
                row.is_none(),
                "{u} is still in pg_roles after hvac revoked it"
            );
        }
    }
}
