//! Audit devices: `sys/audit` enable/list/disable, `sys/audit-hash`, the file's JSON lines
//! (request and response entries, every secret HMAC'd), persistence, fail-closed.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::both_backends;
use crate::common::{errors, Backend, TestVault};

impl TestVault {
    async fn enable_file_device(&self, path: &str, file: &str, extra: Value) -> u16 {
        let mut options = json!({ "file_path": file });
        if let (Value::Object(o), Value::Object(e)) = (&mut options, extra) {
            o.extend(e);
        }
        self.post(
            &format!("sys/audit/{path}"),
            &self.root,
            json!({ "type": "file", "description": "test log", "options": options }),
        )
        .await
        .status
    }

    async fn audit_hash(&self, path: &str, input: &str) -> String {
        let a = self
            .post(
                &format!("sys/audit-hash/{path}"),
                &self.root,
                json!({ "input": input }),
            )
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        a.json()["data"]["hash"].as_str().unwrap().to_owned()
    }
}

fn lines(file: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

async fn file_device_logs_hashed_requests_and_responses(b: Backend) {
    let v = TestVault::start(b).await;
    let r = &v.root;
    v.enable_kv("secret", 2).await;
    let file = v.dir.path().join("audit.log");
    let f = file.to_str().unwrap();
    assert_eq!(v.enable_file_device("file", f, json!({})).await, 204);

    // Listed (the salt is never shown).
    let a = v.get("sys/audit", r).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let d = &a.json()["data"]["file/"];
    assert_eq!(d["type"], "file");
    assert_eq!(d["path"], "file/");
    assert_eq!(d["description"], "test log");
    assert_eq!(d["options"]["file_path"], f);
    assert!(!a.body.windows(4).any(|w| w == b"salt"));
    assert_eq!(
        a.json()["file/"]["type"],
        "file",
        "repeated at the top level"
    );

    let secret = "correct-horse-battery-staple";
    let a = v
        .post(
            "secret/data/app/db",
            r,
            json!({ "data": { "password": secret } }),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = v.get("secret/data/app/db", r).await;
    assert_eq!(a.json()["data"]["data"]["password"], secret);
    let child = v.token(r, json!({ "policies": ["default"] })).await;

    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains(secret),
        "a secret in clear in the audit file"
    );
    assert!(
        !text.contains(r.as_str()),
        "a token in clear in the audit file"
    );
    assert!(!text.contains(&child), "a created token in clear");
    let secret_hash = v.audit_hash("file", secret).await;
    assert!(secret_hash.starts_with("hmac-sha256:"));
    assert_eq!(secret_hash.len(), "hmac-sha256:".len() + 64);
    assert!(
        text.contains(&secret_hash),
        "the secret's audit hash is in the file"
    );
    assert!(text.contains(&v.audit_hash("file", r).await));
    assert!(text.contains(&v.audit_hash("file", &child).await));

    let entries = lines(&file);
    let write_req = entries
        .iter()
        .find(|e| e["type"] == "request" && e["request"]["path"] == "secret/data/app/db")
        .expect("the write's request entry");
    assert_eq!(write_req["request"]["operation"], "update");
    assert_eq!(write_req["request"]["mount_type"], "kv");
    assert_eq!(write_req["request"]["namespace"]["id"], "root");
    assert_eq!(write_req["request"]["remote_address"], "127.0.0.1");
    assert_eq!(
        write_req["request"]["data"]["data"]["password"],
        json!(secret_hash)
    );
    assert_eq!(write_req["auth"]["policies"], json!(["root"]));
    assert_eq!(write_req["auth"]["display_name"], "root");
    assert!(write_req["auth"]["client_token"]
        .as_str()
        .unwrap()
        .starts_with("hmac-sha256:"));
    assert!(write_req["time"].as_str().unwrap().ends_with('Z'));
    let id = write_req["request"]["id"].as_str().unwrap();
    let write_resp = entries
        .iter()
        .find(|e| e["type"] == "response" && e["request"]["id"] == id)
        .expect("the write's response entry, with the same request id");
    assert_eq!(write_resp["error"], "");
    assert_eq!(write_resp["response"]["data"]["version"], 1);
    let read_resp = entries
        .iter()
        .find(|e| {
            e["type"] == "response"
                && e["request"]["path"] == "secret/data/app/db"
                && e["request"]["operation"] == "read"
        })
        .expect("the read's response entry");
    assert_eq!(
        read_resp["response"]["data"]["data"]["password"],
        json!(secret_hash)
    );
    let create_resp = entries
        .iter()
        .find(|e| e["type"] == "response" && e["request"]["path"] == "auth/token/create")
        .unwrap();
    let logged_token = create_resp["response"]["auth"]["client_token"]
        .as_str()
        .unwrap();
    assert_eq!(logged_token, v.audit_hash("file", &child).await);

    // Failures are logged with their error.
    let a = v.get("secret/data/app/db", &child).await;
    assert_eq!(a.status, 403);
    let entries = lines(&file);
    let denied = entries
        .iter()
        .rev()
        .find(|e| e["type"] == "response" && e["request"]["path"] == "secret/data/app/db")
        .unwrap();
    assert_eq!(denied["error"], "permission denied");

    // Wrapped answers: the wrapping token is hashed, and so is the unwrapped secret.
    let a = v
        .raw(
            "GET",
            "secret/data/app/db",
            Some(r),
            &[("x-vault-wrap-ttl", "60")],
            Bytes::new(),
        )
        .await;
    let wrapping = a.json()["wrap_info"]["token"].as_str().unwrap().to_owned();
    let a = v
        .call("POST", "sys/wrapping/unwrap", Some(&wrapping), None)
        .await;
    assert_eq!(a.json()["data"]["data"]["password"], secret);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(secret));
    assert!(!text.contains(&wrapping));
    assert!(text.contains(&v.audit_hash("file", &wrapping).await));

    // Disabled: no more lines.
    assert_eq!(v.delete("sys/audit/file", r).await.status, 204);
    let before = lines(&file).len();
    v.get("secret/data/app/db", r).await;
    assert_eq!(lines(&file).len(), before);
    assert_eq!(v.get("sys/audit", r).await.json()["data"], json!({}));
    let a = v
        .post("sys/audit-hash/file", r, json!({ "input": "x" }))
        .await;
    assert_eq!(a.status, 400);
}
both_backends!(file_device_logs_hashed_requests_and_responses);

async fn enabling_checks_its_input(b: Backend) {
    let v = TestVault::start(b).await;
    let r = &v.root;
    let file = v.dir.path().join("a.log");
    let f = file.to_str().unwrap();
    // log_raw is refused (secrets would be written in clear), as are unknown things.
    assert_eq!(
        v.enable_file_device("raw", f, json!({ "log_raw": "true" }))
            .await,
        400
    );
    assert_eq!(
        v.enable_file_device("x", f, json!({ "format": "jsonx" }))
            .await,
        400
    );
    assert_eq!(
        v.enable_file_device("x", "relative.log", json!({})).await,
        400
    );
    assert_eq!(
        v.enable_file_device("x", "/nonexistent-dir/a.log", json!({}))
            .await,
        400
    );
    let a = v
        .post("sys/audit/sock", r, json!({ "type": "syslog" }))
        .await;
    assert_eq!(a.status, 400);
    assert!(errors(&a)[0].contains("file"), "{:?}", a.body);
    assert_eq!(v.get("sys/audit", r).await.json()["data"], json!({}));
    assert!(!file.exists(), "refused devices open nothing");

    // With a prefix and accessors in clear.
    assert_eq!(
        v.enable_file_device(
            "file",
            f,
            json!({ "prefix": "@cee: ", "hmac_accessor": false })
        )
        .await,
        204
    );
    assert_eq!(v.enable_file_device("file", f, json!({})).await, 400);
    let child = v.token(r, json!({ "policies": ["default"] })).await;
    let a = v.get("auth/token/lookup-self", &child).await;
    let accessor = a.json()["data"]["accessor"].as_str().unwrap().to_owned();
    let text = std::fs::read_to_string(&file).unwrap();
    for l in text.lines() {
        assert!(l.starts_with("@cee: {"), "{l}");
    }
    assert!(text.contains(&format!("\"accessor\":\"{accessor}\"")));
    assert!(!text.contains(&child));

    // sudo is required, and a forbidden caller learns nothing.
    v.policy("reader", r#"path "sys/audit" { capabilities = ["read"] }"#)
        .await;
    let t = v.token(r, json!({ "policies": ["reader"] })).await;
    assert_eq!(v.get("sys/audit", &t).await.status, 403);
    assert_eq!(
        v.post(
            "sys/audit/other",
            &t,
            json!({ "type": "file", "options": { "file_path": "discard" } })
        )
        .await
        .status,
        403
    );
}
both_backends!(enabling_checks_its_input);

async fn devices_survive_a_restart(b: Backend) {
    let v = TestVault::start(b).await;
    let file = v.dir.path().join("p.log");
    assert_eq!(
        v.enable_file_device("file", file.to_str().unwrap(), json!({}))
            .await,
        204
    );
    let h = v.audit_hash("file", "value").await;
    let TestVault { location, dir, .. } = v;
    let v = TestVault::start_at(location, dir).await;
    assert_eq!(
        v.get("sys/audit", &v.root).await.json()["data"]["file/"]["type"],
        "file"
    );
    assert_eq!(v.audit_hash("file", "value").await, h, "the salt is kept");
    let before = lines(&file).len();
    v.get("auth/token/lookup-self", &v.root).await;
    assert_eq!(
        lines(&file).len(),
        before + 2,
        "a request and a response line"
    );
}
both_backends!(devices_survive_a_restart);

async fn requests_fail_closed_when_no_device_can_write(b: Backend) {
    let v = TestVault::start(b).await;
    let r = &v.root;
    v.enable_kv("secret", 2).await;
    let good = v.dir.path().join("good.log");
    // One device failing while another writes: served.
    assert_eq!(
        v.enable_file_device("good", good.to_str().unwrap(), json!({}))
            .await,
        204
    );
    assert_eq!(
        v.enable_file_device("full", "/dev/full", json!({})).await,
        204
    );
    let a = v
        .post("secret/data/a", r, json!({ "data": { "k": "v1" } }))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(v.delete("sys/audit/good", r).await.status, 204);

    // Now no device can write: refused with 500, nothing returned, nothing changed.
    let a = v
        .post("secret/data/a", r, json!({ "data": { "k": "v2" } }))
        .await;
    assert_eq!(a.status, 500, "{:?}", a.body);
    assert_eq!(errors(&a), vec!["internal error"]);
    let a = v.get("secret/data/a", r).await;
    assert_eq!(a.status, 500);
    assert!(!a.body.windows(2).any(|w| w == b"v1"), "no data returned");
    let a = v
        .post("auth/token/create", r, json!({ "policies": ["default"] }))
        .await;
    assert_eq!(a.status, 500);
    assert!(!a.body.windows(4).any(|w| w == b"hvs."));
    // The write above did not happen: the stored secret has version 1 only.
    let keys = v.store.list("vault/logical/").await.unwrap();
    assert!(keys.iter().any(|k| k.ends_with("v/a#1")), "{keys:?}");
    assert!(!keys.iter().any(|k| k.ends_with("v/a#2")), "{keys:?}");
    let tokens = v.store.list("vault/token/id/").await.unwrap();
    assert_eq!(tokens.len(), 1, "no token was created: {tokens:?}");
}
both_backends!(requests_fail_closed_when_no_device_can_write);

/// A collector for the socket device: accepts TCP connections and sends every line it reads
/// (parsed as JSON) to the channel; `stop` closes the listener and every connection.
struct Collector {
    addr: std::net::SocketAddr,
    lines: tokio::sync::mpsc::UnboundedReceiver<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Collector {
        Collector::start_at("127.0.0.1:0").await
    }

    async fn start_at(addr: impl tokio::net::ToSocketAddrs) -> Collector {
        use tokio::io::AsyncBufReadExt as _;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((s, _)) = listener.accept().await {
                let tx = tx.clone();
                conns.spawn(async move {
                    let mut r = tokio::io::BufReader::new(s).lines();
                    while let Ok(Some(l)) = r.next_line().await {
                        let _ = tx.send(serde_json::from_str(&l).expect("a JSON line"));
                    }
                });
            }
        });
        Collector { addr, lines, task }
    }

    async fn next(&mut self) -> Value {
        tokio::time::timeout(std::time::Duration::from_secs(5), self.lines.recv())
            .await
            .expect("a line within 5 s")
            .expect("collector running")
    }
}

async fn socket_device_sends_hashed_lines_and_fails_closed_without_its_collector(b: Backend) {
    let v = TestVault::start(b).await;
    let r = &v.root;
    v.enable_kv("secret", 2).await;
    let mut c = Collector::start().await;
    let enable = |path: &'static str, options: Value| {
        let v = &v;
        async move {
            v.post(
                &format!("sys/audit/{path}"),
                &v.root,
                json!({ "type": "socket", "options": options }),
            )
            .await
        }
    };
    assert_eq!(
        enable("net", json!({ "address": c.addr.to_string() }))
            .await
            .status,
        204
    );
    // (The request that enabled it went to the devices enabled before it: none.)
    let a = v
        .post(
            "secret/data/app",
            r,
            json!({ "data": { "password": "hunter2" } }),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let req = c.next().await;
    let resp = c.next().await;
    assert_eq!(req["type"], "request");
    assert_eq!(req["request"]["path"], "secret/data/app");
    assert_eq!(resp["type"], "response");
    let hashed = resp["request"]["data"]["data"]["password"]
        .as_str()
        .unwrap();
    assert_eq!(hashed, v.audit_hash("net", "hunter2").await);
    assert!(!req.to_string().contains("hunter2") && !resp.to_string().contains("hunter2"));
    assert!(!req.to_string().contains(r.as_str()), "the token is hashed");
    let a = v.get("sys/audit", r).await;
    assert_eq!(a.json()["data"]["net/"]["type"], "socket");

    // Bad input: nothing listening, an unknown socket type, a file option.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let a = enable("dead", json!({ "address": closed })).await;
    assert_eq!(a.status, 400);
    assert!(
        errors(&a)[0].contains("cannot connect to the audit socket"),
        "{:?}",
        errors(&a)
    );
    let a = enable(
        "x",
        json!({ "address": c.addr.to_string(), "socket_type": "sctp" }),
    )
    .await;
    assert_eq!(a.status, 400);
    let a = enable(
        "x",
        json!({ "address": c.addr.to_string(), "file_path": "/tmp/a" }),
    )
    .await;
    assert_eq!(a.status, 400);

    // The collector goes away: with no other device, requests are refused, not served
    // unaudited; it comes back at the same address, and the device reconnects.
    c.task.abort();
    let _ = (&mut c.task).await;
    let a = v.get("secret/data/app", r).await;
    assert_eq!(a.status, 500, "{:?}", a.body);
    assert!(
        !a.body.windows(7).any(|w| w == b"hunter2"),
        "no data returned"
    );
    let mut again = Collector::start_at(c.addr).await;
    let a = v.get("secret/data/app", r).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let line = again.next().await;
    assert_eq!(line["type"], "request");
    assert_eq!(line["request"]["path"], "secret/data/app");
}
both_backends!(socket_device_sends_hashed_lines_and_fails_closed_without_its_collector);
