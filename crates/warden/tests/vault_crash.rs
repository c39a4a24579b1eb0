//! Crash test: an acknowledged vault write survives `kill -9`.
//!
//! `warden serve` runs the authority with the vault on SQLite (auto-unseal from a key file).
//! Concurrent clients write KV v2 secrets, each to a new path, and record every write the
//! server acknowledged (a 200). At a random moment the process is killed with SIGKILL; it is
//! started again on the same store, and every acknowledged write must read back with its
//! value. Several rounds, about 30 s in all. At the end the store's audit chain must verify
//! (`Store::verify_audit`) and hold, for every acknowledged write, the success event that was
//! committed with it.
//!
//! A longer soak: `WARDEN_CRASH_ROUNDS=50 cargo nextest run -p warden -E 'test(vault_crash)'`.

use crate::common;

use common::free_port;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rand::Rng;
use serde_json::{json, Value};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_warden");
const ROOT_TOKEN: &str = "hvs.crashtestroottoken0000000000000000000";
const CLIENTS: usize = 8;

struct Setup {
    dir: tempfile::TempDir,
    db: PathBuf,
    kek: [u8; 32],
    config: PathBuf,
    addr: SocketAddr,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("authority.db");
        let kek: [u8; 32] = rand::rng().random();
        let kek_file = dir.path().join("kek");
        crate::common::write_secret(&kek_file, kek);
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("warden.toml");
        std::fs::write(
            &config,
            format!(
                "[admin]\nenabled = false\n[access_log]\nenabled = false\n[reload]\nwatch = false\n\
                 [[listeners]]\nname = \"unused\"\naddress = \"127.0.0.1:{gw}\"\n\
                 [authority]\nenabled = true\nlisten = \"{addr}\"\ndata_dir = \"{d}\"\n\
                 storage = \"{db}\"\nkey_encryption_key = \"file:{k}\"\nissuer = \"http://{addr}\"\n",
                gw = free_port(),
                d = dir.path().display(),
                db = db.display(),
                k = kek_file.display(),
            ),
        )
        .unwrap();
        Setup {
            dir,
            db,
            kek,
            config,
            addr,
        }
    }

    /// What `warden dev` does at start: a KV v2 engine at `secret/` and a root token with a
    /// known id, here done on the store before the server first runs.
    async fn seed(&self) {
        let store = warden_store::Store::open(self.db.to_str().unwrap(), &self.kek)
            .await
            .unwrap();
        let vault = warden_vault::Vault::open(store, Default::default())
            .await
            .unwrap();
        vault
            .enable_secrets_engine("secret", "kv", &[("version", "2")])
            .await
            .unwrap();
        assert_eq!(
            vault.create_root_token(Some(ROOT_TOKEN)).await.unwrap(),
            ROOT_TOKEN
        );
    }

    async fn start(&self, round: usize) -> Child {
        let log = self.dir.path().join(format!("serve-{round}.log"));
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--allow-root",
                "--config",
                self.config.to_str().unwrap(),
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn warden serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "warden serve exited at start ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if let Ok(a) = request(self.addr, "GET", "/v1/sys/health", None).await {
                if a.0 == 200 {
                    return child;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the vault did not answer within 30 s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One request on a new connection: `(status, body)`, or an error if the connection failed
/// (the server was killed, or is not up yet).
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("x-vault-token", ROOT_TOKEN)
        .header("content-type", "application/json")
        .body(Full::new(bytes))
        .unwrap();
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| format!("{e}: {body:?}"))?
    };
    Ok((status, json))
}

/// Writes until `stop`, each to a new path; pushes `(path, value)` of every acknowledged
/// write to `acked`. Returns how many writes failed (connection errors at the kill).
async fn writer(
    addr: SocketAddr,
    round: usize,
    client: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
) -> usize {
    let mut failed = 0;
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let path = format!("crash/r{round}/c{client}/s{i}");
        let value = format!("value-{round}-{client}-{i}-{}", rand::rng().random::<u32>());
        let body = json!({ "data": { "v": value } });
        match request(
            addr,
            "POST",
            &format!("/v1/secret/data/{path}"),
            Some(&body),
        )
        .await
        {
            Ok((200, b)) => {
                assert_eq!(b["data"]["version"], 1, "{b}");
                acked.lock().unwrap().push((path, value));
            }
            Ok((status, b)) => panic!("write {path}: {status} {b}"),
            Err(_) => {
                failed += 1;
                // The server is gone: stop at once rather than spin on refused connections.
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    failed
}

async fn check_readable(addr: SocketAddr, writes: &[(String, String)]) {
    // A few readers at once, so checking thousands of writes stays quick.
    let chunks: Vec<Vec<(String, String)>> = writes.chunks(256).map(<[_]>::to_vec).collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        tasks.push(tokio::spawn(async move {
            for (path, value) in chunk {
                let (status, body) = request(addr, "GET", &format!("/v1/secret/data/{path}"), None)
                    .await
                    .unwrap_or_else(|e| panic!("read {path}: {e}"));
                assert_eq!(status, 200, "acknowledged write {path} lost: {body}");
                assert_eq!(body["data"]["data"]["v"], value.as_str(), "{path}: {body}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn kill9(child: &mut Child) {
    // `Child::kill` is SIGKILL on Unix: no shutdown code runs.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not exited: {status}");
}

fn rounds() -> usize {
    std::env::var("WARDEN_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_crash_acknowledged_kv_writes_survive_sigkill() {
    let setup = Setup::new();
    setup.seed().await;
    let mut all: Vec<(String, String)> = Vec::new();
    let mut rng = rand::rng();
    let mut lost_in_flight = 0;
    for round in 0..rounds() {
        let mut child = setup.start(round).await;
        // What the previous rounds had acknowledged is still there after the restart.
        let recent_from = all.len().saturating_sub(2000);
        check_readable(setup.addr, &all[recent_from..]).await;

        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|c| {
                tokio::spawn(writer(
                    setup.addr,
                    round,
                    c,
                    Arc::clone(&stop),
                    Arc::clone(&acked),
                ))
            })
            .collect();
        // Kill at a random moment, while the writers are busy.
        let after = Duration::from_millis(rng.random_range(300..1800));
        tokio::time::sleep(after).await;
        kill9(&mut child);
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            lost_in_flight += t.await.unwrap();
        }
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        assert!(
            !acked.is_empty(),
            "round {round}: no write was acknowledged in {after:?}"
        );
        all.extend(acked);
    }

    // The last round's writes, and every earlier one, after a final restart.
    let mut child = setup.start(rounds()).await;
    check_readable(setup.addr, &all).await;
    kill9(&mut child);

    // The audit chain verifies, and each acknowledged write has its success event: the
    // event commits in the write's transaction, so a crash cannot separate them.
    let store = warden_store::Store::open(setup.db.to_str().unwrap(), &setup.kek)
        .await
        .unwrap();
    let head = store.verify_audit().await.unwrap();
    let mut audited = HashSet::new();
    let mut after = 0;
    while after < head {
        let page = store.audit_since(after, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        for rec in page {
            if rec.event.action == "vault.update" && rec.event.outcome == "success" {
                audited.insert(rec.event.subject.unwrap_or_default());
            }
        }
    }
    for (path, _) in &all {
        assert!(
            audited.contains(&format!("secret/data/{path}")),
            "acknowledged write {path} has no audit event"
        );
    }
    eprintln!(
        "{} rounds: {} acknowledged writes all read back; {} writes cut off by the kill; \
         audit chain of {head} records verifies",
        rounds(),
        all.len(),
        lost_in_flight
    );
}
