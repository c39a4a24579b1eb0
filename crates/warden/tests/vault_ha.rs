//! Active/standby authorities on one PostgreSQL database, as operators run them: two
//! `warden serve` processes with `[authority.ha]`; one is active, the other a standby that
//! answers `sys/health` with 429, names the active one in `sys/leader` and redirects (307)
//! everything else to it. When the active one is killed with SIGKILL, the standby takes over
//! within seconds and serves what the old one had acknowledged; the old one, restarted and
//! unsealed, comes back as a standby.

use crate::common;

use common::free_port;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_warden");

/// One HTTP/1.1 exchange (`Connection: close`): status, lower-cased headers, body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn call(port: u16, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("x-vault-token: {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

struct Authority {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Authority {
    fn start(dir: &Path, name: &str, port: u16, admin: u16, storage: &str) -> Authority {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[admin]\naddress = \"127.0.0.1:{admin}\"\n[access_log]\nenabled = false\n\
                 [reload]\nwatch = false\n\
                 [[listeners]]\nname = \"edge\"\naddress = \"127.0.0.1:{edge}\"\n\
                 [authority]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n\
                 data_dir = \"{dir}\"\nstorage = \"{storage}\"\n\
                 issuer = \"http://127.0.0.1:{port}\"\n\
                 seal = {{ mode = \"shares\" }}\n\
                 ha = {{ enabled = true, api_addr = \"http://127.0.0.1:{port}\" }}\n",
                dir = dir.display(),
                edge = free_port(),
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.{port}.log"));
        let child = Command::new(BIN)
            .args([
                "serve",
                "--allow-root",
                "--config",
                config.to_str().unwrap(),
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn warden serve");
        let mut a = Authority { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !a.stderr().contains("authority listening") {
            if let Some(status) = a.child.try_wait().unwrap() {
                panic!("{name} exited early ({status}):\n{}", a.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not start:\n{}",
                a.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        a
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn health(&self) -> u16 {
        call(self.port, "GET", "/v1/sys/health", None, None).status
    }

    /// Waits until `sys/health` answers `want`; how long it took.
    fn wait_health(&self, want: u16, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let got = self.health();
            if got == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "sys/health on :{} is {got}, not {want}, after {within:?}:\n{}",
                self.port,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_standby_takes_over_within_seconds_when_the_active_authority_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::fresh_schema("ha");
    let (pa, pb) = (free_port(), free_port());
    let mut a = Authority::start(dir.path(), "a", pa, free_port(), &storage);

    // Initialized once (one share), through the first authority, which becomes active.
    let init = call(
        pa,
        "PUT",
        "/v1/sys/init",
        None,
        Some(json!({"secret_shares": 1, "secret_threshold": 1})),
    );
    assert_eq!(init.status, 200, "{}", init.body);
    let init = init.json();
    let key = init["keys"][0].as_str().unwrap().to_owned();
    let root = init["root_token"].as_str().unwrap().to_owned();
    a.wait_health(200, Duration::from_secs(10));

    // The second one, unsealed with the same share, is a standby.
    let b = Authority::start(dir.path(), "b", pb, free_port(), &storage);
    assert_eq!(b.health(), 503, "sealed before its unseal");
    let u = call(
        pb,
        "PUT",
        "/v1/sys/unseal",
        None,
        Some(json!({ "key": key })),
    );
    assert_eq!(u.status, 200, "{}", u.body);
    assert_eq!(u.json()["sealed"], false);
    b.wait_health(429, Duration::from_secs(10));
    let h = call(pb, "GET", "/v1/sys/health", None, None).json();
    assert_eq!(
        (h["sealed"].clone(), h["standby"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(
        call(pb, "GET", "/v1/sys/health?standbyok=true", None, None).status,
        200
    );
    let lb = call(pb, "GET", "/v1/sys/leader", None, None).json();
    assert_eq!(lb["ha_enabled"], true);
    assert_eq!(lb["is_self"], false);
    assert_eq!(lb["leader_address"], format!("http://127.0.0.1:{pa}"));
    let la = call(pa, "GET", "/v1/sys/leader", None, None).json();
    assert_eq!(
        (la["is_self"].clone(), la["leader_address"].clone()),
        (json!(true), lb["leader_address"].clone())
    );

    // A secret written on the active one.
    let m = call(
        pa,
        "POST",
        "/v1/sys/mounts/secret",
        Some(&root),
        Some(json!({"type": "kv", "options": {"version": "2"}})),
    );
    assert_eq!(m.status, 204, "{}", m.body);
    let w = call(
        pa,
        "POST",
        "/v1/secret/data/app",
        Some(&root),
        Some(json!({"data": {"password": "before-the-kill"}})),
    );
    assert_eq!(w.status, 200, "{}", w.body);

    // The standby sends requests to the active one: the vault and the token service alike.
    let r = call(
        pb,
        "GET",
        "/v1/secret/data/app?version=1",
        Some(&root),
        None,
    );
    assert_eq!(r.status, 307, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some(format!("http://127.0.0.1:{pa}/v1/secret/data/app?version=1").as_str())
    );
    let t = call(pb, "POST", "/oauth2/token", None, None);
    assert_eq!(t.status, 307);
    assert_eq!(
        t.header("location"),
        Some(format!("http://127.0.0.1:{pa}/oauth2/token").as_str())
    );
    // A standby does not seal itself on a token it cannot check.
    assert_eq!(
        call(pb, "PUT", "/v1/sys/seal", Some(&root), None).status,
        400
    );

    // The active one dies; the standby takes over within seconds.
    let killed = Instant::now();
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    b.wait_health(200, Duration::from_secs(15));
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(15), "took over after {took:?}");
    let lb = call(pb, "GET", "/v1/sys/leader", None, None).json();
    assert_eq!(
        (lb["is_self"].clone(), lb["leader_address"].clone()),
        (json!(true), json!(format!("http://127.0.0.1:{pb}")))
    );
    let r = call(pb, "GET", "/v1/secret/data/app", Some(&root), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["data"]["password"], "before-the-kill");
    // It serves writes too.
    let w = call(
        pb,
        "POST",
        "/v1/secret/data/app",
        Some(&root),
        Some(json!({"data": {"password": "after-the-kill"}})),
    );
    assert_eq!(w.status, 200, "{}", w.body);

    // The old one, restarted and unsealed, is a standby pointing at the new active one.
    drop(a);
    let a = Authority::start(dir.path(), "a", pa, free_port(), &storage);
    let u = call(
        pa,
        "PUT",
        "/v1/sys/unseal",
        None,
        Some(json!({ "key": key })),
    );
    assert_eq!(u.status, 200, "{}", u.body);
    a.wait_health(429, Duration::from_secs(10));
    let r = call(pa, "GET", "/v1/secret/data/app", Some(&root), None);
    assert_eq!(r.status, 307);
    assert_eq!(
        r.header("location"),
        Some(format!("http://127.0.0.1:{pb}/v1/secret/data/app").as_str())
    );
}
