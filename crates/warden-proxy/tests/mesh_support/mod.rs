//! What the mesh tests share: a test CA for `example.org`, a workload identity held in memory
//! (the agent's role, without an authority), and a sidecar started in process with it.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use warden_identity::testing::TestCa;
use warden_identity::tls::{BundleSource, WorkloadIdentity};
use warden_identity::{SpiffeId, TrustDomain};

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

pub fn ca() -> TestCa {
    TestCa::new(&td(), now() - 3 * 3600)
}

/// An SVID for `path`, issued at `at` for an hour.
pub fn svid(
    ca: &TestCa,
    path: &str,
    at: i64,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    ca.svid(path, at, 3600)
}

/// A workload identity held in memory (the agent's role, without an authority).
#[derive(Debug)]
pub struct Held {
    pub key: ArcSwap<CertifiedKey>,
    pub bundle: Arc<BundleSource>,
    pub id: SpiffeId,
    /// As the agent does once the SVID has expired: nothing to present.
    pub expired: std::sync::atomic::AtomicBool,
    /// As the agent reports while the authority is unreachable.
    pub failing: std::sync::Mutex<Option<(i64, String)>>,
}

impl Held {
    pub fn new(ca: &TestCa, path: &str) -> Arc<Self> {
        Arc::new(Self {
            key: ArcSwap::new(certified(svid(ca, path, now()))),
            bundle: BundleSource::new(td(), vec![ca.root.cert_der().to_vec()]),
            id: td().id(path).unwrap(),
            expired: Default::default(),
            failing: Default::default(),
        })
    }
}

pub fn certified(
    (chain, key): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
) -> Arc<CertifiedKey> {
    let key = warden_crypto::provider()
        .key_provider
        .load_private_key(key)
        .unwrap();
    Arc::new(CertifiedKey::new(chain, key))
}

impl WorkloadIdentity for Held {
    fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        (!self.expired.load(std::sync::atomic::Ordering::Relaxed)).then(|| self.key.load_full())
    }
    fn bundle(&self) -> Arc<BundleSource> {
        self.bundle.clone()
    }
    fn spiffe_id(&self) -> Option<SpiffeId> {
        Some(self.id.clone())
    }
    fn status(&self) -> warden_identity::tls::IdentityStatus {
        let failing = self.failing.lock().unwrap().clone();
        warden_identity::tls::IdentityStatus {
            not_after: Some(now() + 3600),
            renewal_failing_since: failing.as_ref().map(|f| f.0),
            last_error: failing.map(|f| f.1),
        }
    }
}

pub const HEAD: &str = r#"
[admin]
address = "127.0.0.1:0"
[access_log]
enabled = false
[reload]
watch = false
[sidecar]
authority = "http://127.0.0.1:1"
trust_domain = "example.org"
join_token = "env:WARDEN_TEST_UNUSED_JOIN_TOKEN"
"#;

pub struct Sidecar {
    pub handle: warden_proxy::GatewayHandle,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    pub async fn start(toml: &str, identity: Arc<Held>) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.toml");
        std::fs::write(&path, format!("{HEAD}{toml}")).unwrap();
        let config = warden_config::load(&path).unwrap_or_else(|e| panic!("config:\n{e}"));
        let handle = warden_proxy::Builder::new(config)
            .config_path(Some(path))
            .identity(identity)
            .start()
            .await
            .unwrap_or_else(|e| panic!("sidecar did not start: {e}"));
        Sidecar { handle, _dir: dir }
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.handle.listener_addr(name).unwrap()
    }
}

/// An inbound listener whose one route, `svc` (last in the text), sends to `endpoint` what
/// peers with the SPIFFE ID `allowed` call.
pub fn inbound_toml(endpoint: &str, allowed: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "inbound"
address = "127.0.0.1:0"
role = "inbound"
[[clusters]]
name = "local"
endpoints = ["{endpoint}"]
[[routes]]
name = "svc"
cluster = "local"
path_prefix = "/"
[routes.auth]
accept = ["client_cert"]
subjects = ["{allowed}"]
"#
    )
}
