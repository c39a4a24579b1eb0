//! The authority's seal driven by the unmodified `hvac` Python client over a real socket:
//! runs scripts/interop/test_vault_hvac_seal.py (initialize, seal status, unseal by shares with
//! progress and reset, seal, health, leader, a secret after unsealing) against a new authority
//! with `seal.mode = "shares"`, with the interop virtualenv of scripts/interop/venv.sh.

use crate::common;

use std::sync::Arc;

use warden_authority::ManualClock;
use warden_config::SealMode;
use warden_store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hvac_initializes_unseals_and_seals_the_authority() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.seal.mode = SealMode::Shares;
    let location = common::fresh_location(common::Backend::Sqlite, dir.path()).await;
    let store = Store::open_sealed(&location).await.unwrap();
    let clock = Arc::new(ManualClock::new(warden_test_util::jwt::now()));
    let h = warden_authority::start_with(&cfg, store, clock)
        .await
        .expect("start a sealed authority");
    let addr = h.addr();
    let out = warden_test_util::interop::run_python(
        "test_vault_hvac_seal.py",
        vec![("VAULT_ADDR".into(), format!("http://{addr}"))],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hvac seal interop failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("hvac seal interop: all checks passed"),
        "{stdout}"
    );
    h.shutdown().await;
}
