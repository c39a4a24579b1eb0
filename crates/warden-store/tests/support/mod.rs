//! Test contexts for both backends, raw access to the tables (to look at ciphertext and to
//! tamper), and the child process that writes then aborts.

use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;

use ring::digest::{digest, SHA256};
use serde_json::{json, Value};
use warden_store::{AuditEvent, AuditRecord, Store};

/// The KEK every test store is opened with.
pub(crate) const KEK: [u8; 32] = [0x11; 32];
/// How many acknowledged writes the aborting child makes.
pub(crate) const CHILD_WRITES: usize = 40;

const CHILD_LOCATION_ENV: &str = "WARDEN_STORE_TEST_CHILD_LOCATION";

/// A store on one backend, plus what the test needs to reach behind it.
pub(crate) struct Ctx {
    pub(crate) store: Store,
    pub(crate) location: String,
    raw: Raw,
    dir: tempfile::TempDir,
}

enum Raw {
    Sqlite {
        path: PathBuf,
    },
    Postgres {
        base_url: String,
        schema: String,
        extra_schemas: Mutex<Vec<String>>,
    },
}

impl Ctx {
    /// A new SQLite store in a temp dir (in a subdirectory that does not exist yet).
    pub(crate) async fn sqlite() -> Ctx {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("warden.db");
        let location = path.to_str().unwrap().to_owned();
        let store = Store::open(&location, &KEK).await.unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the database file is created 0600");
            let dmode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dmode & 0o777, 0o700, "its new directory is 0700");
        }
        Ctx {
            store,
            location,
            raw: Raw::Sqlite { path },
            dir,
        }
    }

    /// A new PostgreSQL store in a fresh schema, or `None` without `WARDEN_TEST_DATABASE_URL`.
    pub(crate) async fn postgres() -> Option<Ctx> {
        let base_url = std::env::var("WARDEN_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())?;
        let schema = create_schema(&base_url).await;
        let location = schema_url(&base_url, &schema);
        let store = Store::open(&location, &KEK).await.unwrap();
        Some(Ctx {
            store,
            location,
            raw: Raw::Postgres {
                base_url,
                schema,
                extra_schemas: Mutex::new(Vec::new()),
            },
            dir: tempfile::tempdir().unwrap(),
        })
    }

    pub(crate) fn backend_name(&self) -> &'static str {
        match self.raw {
            Raw::Sqlite { .. } => "sqlite",
            Raw::Postgres { .. } => "postgres",
        }
    }

    /// Another `Store` on the same database, as another process would open it.
    pub(crate) async fn reopen(&self) -> warden_store::Result<Store> {
        Store::open(&self.location, &KEK).await
    }

    /// The location of another, empty database on the same backend.
    pub(crate) async fn fresh_location(&self) -> String {
        match &self.raw {
            Raw::Sqlite { .. } => {
                let n = random_suffix();
                self.dir
                    .path()
                    .join(format!("fresh-{n}.db"))
                    .to_str()
                    .unwrap()
                    .to_owned()
            }
            Raw::Postgres {
                base_url,
                extra_schemas,
                ..
            } => {
                let schema = create_schema(base_url).await;
                extra_schemas.lock().unwrap().push(schema.clone());
                schema_url(base_url, &schema)
            }
        }
    }

    /// The sealed bytes stored for `key`, read straight from the table.
    pub(crate) async fn raw_value(&self, key: &str) -> Option<Vec<u8>> {
        match &self.raw {
            Raw::Sqlite { path } => {
                let c = rusqlite::Connection::open(path).unwrap();
                let mut st = c.prepare("SELECT value FROM kv WHERE key = ?1").unwrap();
                let mut rows = st.query([key]).unwrap();
                rows.next().unwrap().map(|r| r.get(0).unwrap())
            }
            Raw::Postgres { .. } => {
                let c = self.pg().await;
                c.query_opt("SELECT value FROM kv WHERE key = $1", &[&key])
                    .await
                    .unwrap()
                    .map(|r| r.get(0))
            }
        }
    }

    /// Flips one bit of the stored ciphertext of `key`, in place.
    pub(crate) async fn raw_flip_last_byte(&self, key: &str) {
        let mut v = self.raw_value(key).await.unwrap();
        *v.last_mut().unwrap() ^= 1;
        match &self.raw {
            Raw::Sqlite { path } => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
                c.execute(
                    "UPDATE kv SET value = ?2 WHERE key = ?1",
                    rusqlite::params![key, v],
                )
                .unwrap();
            }
            Raw::Postgres { .. } => {
                let c = self.pg().await;
                c.execute("UPDATE kv SET value = $2 WHERE key = $1", &[&key, &v])
                    .await
                    .unwrap();
            }
        }
    }

    /// Runs SQL straight on the database, bypassing the store.
    pub(crate) async fn raw_exec(&self, sql: &str) {
        if let Err(e) = self.raw_try_exec(sql).await {
            panic!("{sql}: {e}");
        }
    }

    pub(crate) async fn raw_try_exec(&self, sql: &str) -> Result<(), String> {
        match &self.raw {
            Raw::Sqlite { path } => {
                let c = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
                c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
                c.execute_batch(sql).map_err(|e| e.to_string())
            }
            Raw::Postgres { .. } => self
                .pg()
                .await
                .batch_execute(sql)
                .await
                .map_err(|e| format!("{e:?}")),
        }
    }

    /// The first column of the first row of `sql`, as a count.
    pub(crate) async fn raw_count(&self, sql: &str) -> i64 {
        match &self.raw {
            Raw::Sqlite { path } => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(sql, [], |r| r.get(0))
                .unwrap(),
            Raw::Postgres { .. } => self.pg().await.query_one(sql, &[]).await.unwrap().get(0),
        }
    }

    /// What an attacker with database access does first.
    pub(crate) async fn raw_disable_audit_triggers(&self) {
        match self.raw {
            Raw::Sqlite { .. } => {
                self.raw_exec(
                    "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;",
                )
                .await;
            }
            Raw::Postgres { .. } => {
                self.raw_exec("ALTER TABLE audit_log DISABLE TRIGGER USER")
                    .await
            }
        }
    }

    /// Every byte of the SQLite database and its WAL; `None` on PostgreSQL.
    pub(crate) fn raw_files(&self) -> Option<Vec<u8>> {
        let Raw::Sqlite { path } = &self.raw else {
            return None;
        };
        let mut bytes = std::fs::read(path).unwrap();
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        if let Ok(w) = std::fs::read(wal) {
            bytes.extend(w);
        }
        Some(bytes)
    }

    pub(crate) async fn pg(&self) -> tokio_postgres::Client {
        pg_connect(&self.location).await
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        let Raw::Postgres {
            base_url,
            schema,
            extra_schemas,
        } = &self.raw
        else {
            return;
        };
        let mut schemas = std::mem::take(&mut *extra_schemas.lock().unwrap());
        schemas.push(schema.clone());
        let base_url = base_url.clone();
        // Drop runs inside the test's runtime: clean up from a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let c = pg_connect(&base_url).await;
                for s in schemas {
                    let _ = c
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

async fn create_schema(base_url: &str) -> String {
    let schema = format!("wt_{}", random_suffix());
    pg_connect(base_url)
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    schema
}

fn schema_url(base_url: &str, schema: &str) -> String {
    let sep = if base_url.contains('?') { '&' } else { '?' };
    format!("{base_url}{sep}options=-csearch_path%3D{schema}")
}

async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn random_suffix() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// What the store's hash of `rec` would be after it was edited: recomputed independently
/// from the documented format, as a forger would.
pub(crate) fn rehash(rec: &AuditRecord) -> String {
    let body = json!({ "event": rec.event, "seq": rec.seq, "time": rec.time });
    let mut text = String::new();
    canonical(&body, &mut text);
    let mut input = rec.prev_hash.clone().into_bytes();
    input.extend_from_slice(text.as_bytes());
    digest(&SHA256, &input)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Runs this test binary's `child_writer` test in a child process against `location`;
/// returns how the child ended.
pub(crate) fn run_child_writer(location: &str, writes: usize) -> ExitStatus {
    assert_eq!(writes, CHILD_WRITES);
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_LOCATION_ENV, location)
        .stdout(Stdio::null())
        .status()
        .unwrap()
}

/// In the child: open, make acknowledged writes, then die without any clean-up.
pub(crate) fn child_writer_main() {
    let Ok(location) = std::env::var(CHILD_LOCATION_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = Store::open(&location, &KEK).await.unwrap();
        for i in 0..CHILD_WRITES {
            s.put(
                &format!("child/{i}"),
                format!("acknowledged {i}").as_bytes(),
            )
            .await
            .unwrap();
            let event = AuditEvent {
                component: "tokens".into(),
                action: "child.write".into(),
                actor: "child".into(),
                subject: None,
                outcome: "success".into(),
                detail: json!({ "i": i }),
                source: None,
            };
            // Half the events (the last among them) logged, not synced: a crash of the
            // process must not lose those either.
            if i % 2 == 1 || i + 1 == CHILD_WRITES {
                s.audit_logged(&event).await.unwrap();
            } else {
                s.audit(&event).await.unwrap();
            }
        }
        // Acknowledged: now die as a crash would, with the store still open.
        std::process::abort();
    });
}
