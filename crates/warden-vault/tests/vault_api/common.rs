//! A vault on a real socket for each test: `Vault::router()` nested at `/v1` with axum on
//! 127.0.0.1:0, over SQLite in a temp dir or PostgreSQL (`WARDEN_TEST_DATABASE_URL`, a fresh
//! schema per test), with a manual clock and a root token.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use serde_json::{json, Value};
use warden_store::Store;
use warden_test_util::client::{send_h1, Answer};
use warden_vault::{ManualClock, Vault, VaultOptions};

/// Which store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a test body on SQLite and, when `WARDEN_TEST_DATABASE_URL` is set, on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if std::env::var("WARDEN_TEST_DATABASE_URL").is_err() {
                    eprintln!("WARDEN_TEST_DATABASE_URL is not set: PostgreSQL case skipped");
                    return;
                }
                super::$name($crate::common::Backend::Postgres).await;
            }
        }
    };
}

pub const KEK: [u8; 32] = [9u8; 32];
/// Where the manual clock starts (2027-01-15).
pub const T0: i64 = 1_800_000_000;

/// A vault serving on a socket.
pub struct TestVault {
    pub addr: SocketAddr,
    pub vault: Vault,
    pub store: Store,
    pub clock: Arc<ManualClock>,
    pub root: String,
    pub location: String,
    pub dir: tempfile::TempDir,
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub async fn fresh_location(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => dir.join("vault.db").to_str().unwrap().to_owned(),
        Backend::Postgres => {
            let url = std::env::var("WARDEN_TEST_DATABASE_URL").unwrap();
            let schema = format!("wt_vcore_{}", random_hex(6));
            let (pg, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect to WARDEN_TEST_DATABASE_URL");
            tokio::spawn(conn);
            pg.batch_execute(&format!("CREATE SCHEMA {schema}"))
                .await
                .expect("create schema");
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}options=-csearch_path%3D{schema}")
        }
    }
}

impl TestVault {
    pub async fn start(backend: Backend) -> TestVault {
        let dir = tempfile::tempdir().unwrap();
        let location = fresh_location(backend, dir.path()).await;
        Self::start_at(location, dir).await
    }

    /// Opens (or reopens) the vault at `location` and serves it.
    pub async fn start_at(location: String, dir: tempfile::TempDir) -> TestVault {
        let store = Store::open(&location, &KEK).await.expect("open store");
        let clock = Arc::new(ManualClock::new(T0));
        let vault = Vault::open(
            store.clone(),
            VaultOptions {
                clock: clock.clone(),
            },
        )
        .await
        .expect("open vault");
        let root = vault
            .create_root_token(Some("root-token-for-tests"))
            .await
            .expect("root token");
        let app = axum::Router::new().nest("/v1", vault.router());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        TestVault {
            addr,
            vault,
            store,
            clock,
            root,
            location,
            dir,
        }
    }

    /// Sends `method path` (below `/v1/`) with `token` and an optional JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.raw(method, path, token, &[], Bytes::from(body)).await
    }

    /// Sends raw bytes with extra headers.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Answer {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("/v1/{path}"))
            .header("host", "vault.test");
        if let Some(t) = token {
            b = b.header("x-vault-token", t);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        send_h1(self.addr, b.body(Full::new(body)).unwrap()).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call("POST", path, Some(token), Some(body)).await
    }

    pub async fn list(&self, path: &str, token: &str) -> Answer {
        self.call("LIST", path, Some(token), None).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Answer {
        self.call("DELETE", path, Some(token), None).await
    }

    /// Writes a policy as root.
    pub async fn policy(&self, name: &str, hcl: &str) {
        let a = self
            .post(
                &format!("sys/policies/acl/{name}"),
                &self.root,
                json!({ "policy": hcl }),
            )
            .await;
        assert_eq!(a.status, 204, "policy {name}: {:?}", a.body);
    }

    /// Creates a token as `parent` with `body`; returns the client token.
    pub async fn token(&self, parent: &str, body: Value) -> String {
        let a = self.post("auth/token/create", parent, body).await;
        assert_eq!(a.status, 200, "token create: {:?}", a.body);
        a.json()["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Enables a KV engine (version 1 or 2) at `path` as root.
    pub async fn enable_kv(&self, path: &str, version: u8) {
        let a = self
            .post(
                &format!("sys/mounts/{path}"),
                &self.root,
                json!({ "type": "kv", "options": { "version": version.to_string() } }),
            )
            .await;
        assert_eq!(a.status, 204, "enable kv: {:?}", a.body);
    }
}

/// The `errors` of an error body.
pub fn errors(a: &Answer) -> Vec<String> {
    a.json()["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {:?}", a.body))
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect()
}
