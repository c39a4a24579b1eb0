//! Shared helpers for the token-service tests: an authority on a real socket over SQLite or
//! PostgreSQL (`WARDEN_TEST_DATABASE_URL`, a fresh schema per test), a manual clock, and form
//! and admin clients.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use serde_json::{json, Map, Value};
use warden_authority::{AuthorityHandle, ManualClock};
use warden_config::{AuthorityConfig, SecretRef};
use warden_crypto::jws::b64url_decode;
use warden_store::Store;
use warden_test_util::client::{self, Answer};

pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
pub const FEED_TOKEN: &str = "feed-token-0123456789abcdef";
pub const ISSUER: &str = "https://auth.test";
pub const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

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

/// A running authority for one test.
pub struct Harness {
    pub handle: AuthorityHandle,
    pub clock: Arc<ManualClock>,
    pub store: Store,
    pub dir: tempfile::TempDir,
    pub config: AuthorityConfig,
    /// Where the store is (a SQLite path or a PostgreSQL URL with its schema).
    pub location: String,
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::fill(&mut b[..]);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The key-encryption key of every test store.
pub const KEK: [u8; 32] = [7u8; 32];

/// Where a fresh store on `backend` lives: a SQLite file in `dir`, or a new schema on
/// `WARDEN_TEST_DATABASE_URL`.
pub async fn fresh_location(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => dir.join("authority.db").to_str().unwrap().to_owned(),
        Backend::Postgres => {
            let url = std::env::var("WARDEN_TEST_DATABASE_URL").unwrap();
            let schema = format!("warden_authority_{}", random_hex(6));
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

/// Opens a fresh store on `backend`.
pub async fn fresh_store(backend: Backend, dir: &std::path::Path) -> Store {
    let location = fresh_location(backend, dir).await;
    Store::open(&location, &KEK).await.expect("open store")
}

fn secret_file(dir: &std::path::Path, name: &str, value: &str) -> SecretRef {
    let p = dir.join(name);
    std::fs::write(&p, value).unwrap();
    SecretRef::File(p)
}

/// The test config: issuer `https://auth.test`, admin and feed tokens, port 0.
pub fn config(dir: &std::path::Path) -> AuthorityConfig {
    AuthorityConfig {
        enabled: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        issuer: ISSUER.into(),
        admin_token: Some(secret_file(dir, "admin.secret", ADMIN_TOKEN)),
        revocation_feed_token: Some(secret_file(dir, "feed.secret", FEED_TOKEN)),
        ..AuthorityConfig::default()
    }
}

impl Harness {
    pub async fn start(backend: Backend) -> Harness {
        Self::start_with(backend, |_, _| {}).await
    }

    /// Starts with the test config changed by `tweak` (it gets the temp dir too).
    pub async fn start_with(
        backend: Backend,
        tweak: impl FnOnce(&mut AuthorityConfig, &std::path::Path),
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        tweak(&mut cfg, dir.path());
        let location = fresh_location(backend, dir.path()).await;
        let store = Store::open(&location, &KEK).await.expect("open store");
        let clock = Arc::new(ManualClock::new(warden_test_util::jwt::now()));
        let handle = warden_authority::start_with(&cfg, store.clone(), clock.clone())
            .await
            .expect("start authority");
        Harness {
            handle,
            clock,
            store,
            dir,
            config: cfg,
            location,
        }
    }

    /// A second authority on the same store (same database and key-encryption key, its own
    /// connection and memory), with the same config and clock: a scaled-out instance.
    pub async fn second_instance(&self) -> AuthorityHandle {
        let store = Store::open(&self.location, &KEK)
            .await
            .expect("open the shared store");
        warden_authority::start_with(&self.config, store, self.clock.clone())
            .await
            .expect("start the second authority")
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    pub fn now(&self) -> i64 {
        warden_authority::Clock::now(&*self.clock)
    }

    /// Registers a client through the admin API; returns (client_id, secret if any).
    pub async fn client(&self, spec: Value) -> (String, Option<String>) {
        let a = self.admin("POST", "/admin/clients", Some(spec)).await;
        assert_eq!(a.status, 201, "create client: {:?}", a.body);
        let v = a.json();
        (
            v["client"]["client_id"].as_str().unwrap().to_owned(),
            v["client_secret"].as_str().map(str::to_owned),
        )
    }

    /// A `client_secret_basic` client with scopes and audiences.
    pub async fn basic_client(&self, id: &str, scopes: &[&str], auds: &[&str]) -> String {
        let (_, secret) = self
            .client(json!({"client_id": id, "scopes": scopes, "audiences": auds}))
            .await;
        secret.unwrap()
    }

    /// A `client_secret_basic` client that may also introspect tokens (a resource server).
    pub async fn introspecting_client(&self, id: &str, scopes: &[&str], auds: &[&str]) -> String {
        let (_, secret) = self
            .client(json!({
                "client_id": id, "scopes": scopes, "audiences": auds, "introspect": true,
            }))
            .await;
        secret.unwrap()
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        admin_call(self.addr(), method, path, body, Some(ADMIN_TOKEN)).await
    }

    /// POSTs a form with optional Basic credentials.
    pub async fn form(
        &self,
        path: &str,
        params: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Answer {
        post_form(self.addr(), path, params, basic).await
    }

    /// Introspects `token` at `addr` as client `id`; returns the answer, asserting a 200.
    pub async fn introspect_at(addr: SocketAddr, token: &str, id: &str, secret: &str) -> Value {
        let a = post_form(
            addr,
            "/oauth2/introspect",
            &[("token", token)],
            Some((id, secret)),
        )
        .await;
        assert_eq!(a.status, 200, "introspect: {:?}", a.body);
        assert_eq!(a.header("cache-control"), Some("no-store"));
        a.json()
    }

    /// `client_credentials` with Basic.
    pub async fn token(&self, id: &str, secret: &str, extra: &[(&str, &str)]) -> Answer {
        let mut p = vec![("grant_type", "client_credentials")];
        p.extend_from_slice(extra);
        self.form("/oauth2/token", &p, Some((id, secret))).await
    }

    /// A token string, asserting success.
    pub async fn access_token(&self, id: &str, secret: &str, extra: &[(&str, &str)]) -> String {
        let a = self.token(id, secret, extra).await;
        assert_eq!(a.status, 200, "token: {:?}", a.body);
        a.json()["access_token"].as_str().unwrap().to_owned()
    }

    /// Every audit record so far, as JSON text.
    pub async fn audit_json(&self) -> Vec<Value> {
        self.store
            .audit_since(0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| serde_json::to_value(&r).unwrap())
            .collect()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn encode_form(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn basic_header(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    let raw = format!("{}:{}", form_encode(id), form_encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

pub fn form_request(
    path: &str,
    params: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Request<Full<Bytes>> {
    let mut req = Request::post(path)
        .header("host", "auth.test")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic {
        req = req.header("authorization", basic_header(id, secret));
    }
    req.body(Full::new(Bytes::from(encode_form(params))))
        .unwrap()
}

pub async fn post_form(
    addr: SocketAddr,
    path: &str,
    params: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Answer {
    client::send_h1(addr, form_request(path, params, basic)).await
}

pub async fn admin_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "auth.test")
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    client::send_h1(addr, req.body(Full::new(Bytes::from(body))).unwrap()).await
}

pub async fn get_bearer(addr: SocketAddr, path: &str, token: Option<&str>) -> Answer {
    let mut req = Request::get(path).header("host", "auth.test");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    client::send_h1(addr, req.body(Full::new(Bytes::new())).unwrap()).await
}

/// The header and claims of a compact JWS (not verified).
pub fn decode(token: &str) -> (Map<String, Value>, Map<String, Value>) {
    let mut parts = token.split('.');
    let h = b64url_decode(parts.next().unwrap().as_bytes()).unwrap();
    let c = b64url_decode(parts.next().unwrap().as_bytes()).unwrap();
    (
        serde_json::from_slice(&h).unwrap(),
        serde_json::from_slice(&c).unwrap(),
    )
}

/// Asserts an RFC 6749 error answer: status, `error`, `Cache-Control: no-store`.
pub fn assert_error(a: &Answer, status: u16, error: &str) {
    assert_eq!(a.status, status, "body: {:?}", a.body);
    assert_eq!(a.json()["error"], error, "body: {:?}", a.body);
    assert_eq!(a.header("cache-control"), Some("no-store"));
    if status == 401 {
        assert_eq!(a.header("www-authenticate"), Some("Basic realm=\"warden\""));
    }
    // RFC 6749 §5.2: a description a developer can act on (which never tells whether a
    // client exists: every failed client authentication reads the same).
    let d = a.json()["error_description"].as_str().map(str::to_owned);
    assert!(
        d.as_deref().is_some_and(|d| d.len() > 10),
        "no error_description: {:?}",
        a.body
    );
}

/// [`assert_error`], and the `error_description` contains `words`.
pub fn assert_refusal(a: &Answer, status: u16, error: &str, words: &str) {
    assert_error(a, status, error);
    let d = a.json()["error_description"].as_str().unwrap().to_owned();
    assert!(
        d.contains(words),
        "`{words}` not in error_description `{d}`"
    );
}

/// `client_credentials` with `client_secret_post` (id and secret in the body).
pub async fn token_post(addr: SocketAddr, id: &str, secret: &str) -> Answer {
    post_form(
        addr,
        "/oauth2/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ],
        None,
    )
    .await
}
