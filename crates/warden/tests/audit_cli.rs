//! `warden audit verify|export` (issue 13, "a verifiable audit trail"): the chain check finds
//! an edited, a deleted and a reordered record on SQLite and PostgreSQL; a head signed and
//! published by a running authority shows that the newest records were deleted, which the
//! chain alone cannot; the export is JSON lines from which anyone re-checks the chain and
//! the head (PyJWT, plain SHA-256 in Python: `scripts/interop/test_audit_export.py`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_store::{AuditEvent, Store};
use warden_test_util::client;

use crate::common;

use common::{free_port, serve, wait_port, warden};

const KEK: [u8; 32] = [7; 32];

/// A store named on the command line, and raw SQL on it (what an attacker with database
/// access does).
struct Db {
    _dir: tempfile::TempDir,
    location: String,
    kek_file: PathBuf,
    sqlite: Option<PathBuf>,
}

impl Db {
    fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authority.db");
        Db::new(dir, path.display().to_string(), Some(path))
    }

    fn postgres() -> Db {
        Db::new(
            tempfile::tempdir().unwrap(),
            common::fresh_schema("audit"),
            None,
        )
    }

    fn new(dir: tempfile::TempDir, location: String, sqlite: Option<PathBuf>) -> Db {
        let kek_file = dir.path().join("kek");
        crate::common::write_secret(&kek_file, KEK);
        Db {
            _dir: dir,
            location,
            kek_file,
            sqlite,
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--storage".into(),
            self.location.clone(),
            "--kek".into(),
            format!("file:{}", self.kek_file.display()),
        ]
    }

    fn audit(&self, sub: &str, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec!["audit".into(), sub.into()];
        args.extend(self.args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        warden(&refs)
    }

    fn sql(&self, sql: &str) {
        match &self.sqlite {
            Some(path) => rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            None => {
                let out = Command::new("psql")
                    .args([
                        self.location.as_str(),
                        "-q",
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-c",
                        sql,
                    ])
                    .output()
                    .expect("run psql");
                assert!(
                    out.status.success(),
                    "{sql}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// Drops the append-only triggers, as anyone who can write the database can.
    fn disable_triggers(&self) {
        if self.sqlite.is_some() {
            self.sql("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;");
        } else {
            self.sql("ALTER TABLE audit_log DISABLE TRIGGER USER");
        }
    }
}

async fn fill(db: &Db, n: u64) {
    let store = Store::open(&db.location, &KEK).await.unwrap();
    for i in 1..=n {
        store
            .audit(&AuditEvent {
                component: "tokens".into(),
                action: "token.issue".into(),
                actor: format!("client-{i}"),
                subject: Some(format!("jti-{i}")),
                outcome: "success".into(),
                detail: json!({"scope": "read", "n": i}),
                source: Some("127.0.0.1".into()),
            })
            .await
            .unwrap();
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `verify` exits 2 and names `record` in its report.
fn assert_broken(o: &Output, says: &str) {
    assert_eq!(o.status.code(), Some(2), "{}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("audit log BROKEN"), "{}", text(o));
    assert!(err.contains(says), "wanted {says:?}: {}", text(o));
}

async fn tampering_is_found(db: impl Fn() -> Db) {
    // Whole.
    let d = db();
    fill(&d, 8).await;
    let o = d.audit("verify", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("audit log whole: 8 records"),
        "{}",
        text(&o)
    );

    // An edited record.
    let d = db();
    fill(&d, 8).await;
    d.disable_triggers();
    d.sql("UPDATE audit_log SET actor = 'mallory' WHERE seq = 4");
    assert_broken(&d.audit("verify", &[]), "audit record 4 was altered");

    // A deleted record.
    let d = db();
    fill(&d, 8).await;
    d.disable_triggers();
    d.sql("DELETE FROM audit_log WHERE seq = 5");
    assert_broken(&d.audit("verify", &[]), "audit record 5 is missing");

    // Two records swapped (each keeps its own hashes, under the other's seq).
    let d = db();
    fill(&d, 8).await;
    d.disable_triggers();
    d.sql(
        "UPDATE audit_log SET seq = 1000 WHERE seq = 3; \
         UPDATE audit_log SET seq = 3 WHERE seq = 4; \
         UPDATE audit_log SET seq = 4 WHERE seq = 1000;",
    );
    assert_broken(&d.audit("verify", &[]), "audit record 3");
}

#[tokio::test]
async fn audit_verify_finds_an_edited_a_deleted_and_a_reordered_record_on_sqlite() {
    tampering_is_found(Db::sqlite).await;
}

#[tokio::test]
async fn audit_verify_finds_an_edited_a_deleted_and_a_reordered_record_on_postgres() {
    if std::env::var("WARDEN_TEST_DATABASE_URL").is_err() {
        eprintln!("skipped: WARDEN_TEST_DATABASE_URL is not set");
        return;
    }
    tampering_is_found(Db::postgres).await;
}

#[tokio::test]
async fn audit_export_writes_json_lines_by_seq_and_time_with_what_the_hash_covers() {
    let d = Db::sqlite();
    fill(&d, 6).await;
    let o = d.audit("export", &["--after-seq", "2", "--limit", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [3, 4, 5]
    );
    let l = &lines[0];
    assert_eq!(l["actor"], "client-3");
    assert_eq!(l["detail"], json!({"scope": "read", "n": 3}));
    assert_eq!(lines[1]["prev_hash"], l["hash"]);
    assert!(l["time"].as_str().unwrap().ends_with('Z'), "{l}");
    assert!(l["time_ms"].as_i64().unwrap() > 1_700_000_000_000, "{l}");

    // By time: an hour ago takes everything; a future time nothing.
    let o = d.audit("export", &["--since", "1h"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 6);
    let o = d.audit("export", &["--since", "2999-01-01T00:00:00Z"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(o.stdout.len(), 0, "{}", text(&o));

    // A time that is neither form is refused with the reason, before anything is written.
    let o = d.audit("export", &["--since", "yesterday"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--since: `yesterday` is neither"),
        "{}",
        text(&o)
    );
}

/// The number of records `verify` reports in a whole log.
fn count(db: &Db) -> u64 {
    let o = db.audit("verify", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.split("whole: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"))
}

async fn head_of(addr: SocketAddr) -> Value {
    let res = client::get(addr, "/audit/v1/head").await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    serde_json::from_slice(&res.body).unwrap()
}

/// Creates a token-service client through the CLI (two audit records: the client, its secret).
fn create_client(config: &Path, id: &str) {
    let o = warden(&[
        "client",
        "create",
        "--config",
        config.to_str().unwrap(),
        "--client-id",
        id,
        "--audience",
        "api",
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

#[tokio::test]
async fn a_signed_head_from_the_running_authority_shows_that_the_newest_records_were_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(
        tempfile::tempdir().unwrap(),
        dir.path().join("authority.db").display().to_string(),
        Some(dir.path().join("authority.db")),
    );
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let toml = format!(
        "[admin]\nenabled = false\n[access_log]\nenabled = false\n[reload]\nwatch = false\n\
         [[listeners]]\nname = \"unused\"\naddress = \"127.0.0.1:{gw}\"\n\
         [authority]\nenabled = true\nlisten = \"{addr}\"\ndata_dir = \"{d}\"\n\
         storage = \"{store}\"\nkey_encryption_key = \"file:{k}\"\nissuer = \"http://{addr}\"\n\
         [authority.audit]\nhead_interval = \"1s\"\n",
        gw = free_port(),
        d = dir.path().display(),
        store = db.location,
        k = db.kek_file.display(),
    );
    let mut p = serve(dir.path(), "authority", &toml);
    wait_port(&mut p, port, dir.path(), "authority").await;
    let config = dir.path().join("authority.toml");
    create_client(&config, "billing");
    create_client(&config, "orders");

    // The published head catches up with the log within its interval.
    let records = count(&db);
    let deadline = Instant::now() + Duration::from_secs(10);
    let head = loop {
        let h = head_of(addr).await;
        if h["seq"] == records {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "head never reached {records}: {h}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(head["key"]["kty"], "OKP", "{head}");
    assert_eq!(head["key"]["crv"], "Ed25519", "{head}");
    assert!(common::log_of(dir.path(), "authority").contains("audit head signed"));
    let head_file = dir.path().join("head.json");
    std::fs::write(&head_file, head.to_string()).unwrap();

    // The log grows: the kept head still holds.
    create_client(&config, "search");
    let grown = count(&db) - records;
    assert!(grown > 0);
    let o = db.audit("verify", &["--head", head_file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("(record {records}) holds")),
        "{}",
        text(&o)
    );
    assert!(
        out.contains(&format!("grew by {grown} records")),
        "{}",
        text(&o)
    );
    drop(p);

    // Without Warden: the export and the published head, checked by PyJWT and hashlib.
    let export = dir.path().join("audit.jsonl");
    let o = db.audit("export", &["--output", export.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let check = |export: &Path| {
        let env = vec![
            ("EXPORT".to_owned(), export.display().to_string()),
            ("HEAD".to_owned(), head_file.display().to_string()),
        ];
        async move { warden_test_util::interop::run_python("test_audit_export.py", env).await }
    };
    let o = check(&export).await;
    assert!(o.status.success(), "{}", text(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["records"], records + grown, "{summary}");
    assert_eq!(summary["head_seq"], records, "{summary}");
    // An export line edited on its way to the SIEM is caught there too.
    let edited = std::fs::read_to_string(&export).unwrap().replacen(
        "\"actor\":\"cli\"",
        "\"actor\":\"mallory\"",
        1,
    );
    assert!(edited.contains("mallory"));
    let edited_file = dir.path().join("edited.jsonl");
    std::fs::write(&edited_file, edited).unwrap();
    let o = check(&edited_file).await;
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("its hash does not match its content"),
        "{}",
        text(&o)
    );

    // Someone with the database deletes the newest records, the one the head names among
    // them, and moves the head back: the chain alone is whole again...
    let keep = records - 1;
    let store = Store::open(&db.location, &KEK).await.unwrap();
    let last_kept = store.audit_since(keep - 1, 1).await.unwrap().remove(0);
    drop(store);
    db.disable_triggers();
    db.sql(&format!(
        "DELETE FROM audit_log WHERE seq > {keep}; \
         UPDATE audit_head SET seq = {keep}, hash = '{}' WHERE id = 1;",
        last_kept.hash
    ));
    let o = db.audit("verify", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("whole: {keep} records")),
        "{}",
        text(&o)
    );
    // ... but not against the head kept before.
    let o = db.audit("verify", &["--head", head_file.to_str().unwrap()]);
    assert_broken(
        &o,
        &format!("the log ends at record {keep}, but a signed head names record {records}"),
    );

    // A head whose claims were changed does not verify, nor does a truncated one.
    let jws = head["head"].as_str().unwrap();
    let parts: Vec<&str> = jws.split('.').collect();
    let claims =
        json!({"iss": format!("http://{addr}"), "iat": 1, "seq": keep, "hash": last_kept.hash});
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        warden_crypto::jws::b64url(claims.to_string().as_bytes()),
        parts[2]
    );
    let forged_file = dir.path().join("forged.jws");
    std::fs::write(&forged_file, forged).unwrap();
    assert_broken(
        &db.audit("verify", &["--head", forged_file.to_str().unwrap()]),
        "does not verify with the audit key",
    );
    std::fs::write(&forged_file, &jws[..jws.len() - 4]).unwrap();
    assert_broken(
        &db.audit("verify", &["--head", forged_file.to_str().unwrap()]),
        "does not verify",
    );
    // A file that is not a head is an error (1), not a verdict.
    std::fs::write(&forged_file, "{\"seq\": 3}").unwrap();
    let o = db.audit("verify", &["--head", forged_file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no \"head\""),
        "{}",
        text(&o)
    );
}
