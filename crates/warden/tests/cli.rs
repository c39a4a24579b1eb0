//! The `warden` binary as a user runs it: `version`, `check` (every error with its field
//! path), `serve` with SIGHUP (reload) and SIGTERM (drain, exit 0), and the annotated example
//! config (valid, and covering every option of the schema).

use crate::common;

use common::free_port;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use warden_test_util::{client, Behaviour, Upstream};

const BIN: &str = env!("CARGO_BIN_EXE_warden");

fn warden(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run warden")
}

fn check(path: &Path) -> Output {
    warden(&["check", "--config", path.to_str().unwrap()])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn workspace_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

#[test]
fn version_prints_the_package_version() {
    let out = warden(&["version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        format!("warden {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn version_json_says_what_the_binary_was_built_from() {
    let out = warden(&["version", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    // The revision checked out here (the tests run from the repository).
    let head = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .unwrap();
    if head.status.success() {
        assert_eq!(v["git_revision"], text(&head.stdout).trim(), "{v}");
    }
    assert!(
        matches!(v["profile"].as_str(), Some("debug" | "release")),
        "{v}"
    );
    assert!(v["rustc"].as_str().unwrap().starts_with("rustc 1."), "{v}");
    assert!(v["target"].as_str().unwrap().contains("linux"), "{v}");
    assert!(v["features"].is_array(), "{v}");
    // Every crate from the registry in Cargo.lock.
    let lock = std::fs::read_to_string(workspace_file("Cargo.lock")).unwrap();
    let registry = lock
        .split("[[package]]")
        .filter(|p| p.contains("\nsource = \"registry+"))
        .count();
    assert!(registry > 100, "{registry}");
    assert_eq!(v["dependencies"], registry, "{v}");
}

/// Starts `warden serve --allow-root --config path`, waits until it listens on `port`
/// (panicking if it exits first), and kills it.
fn serves_until_killed(path: &Path, port: u16) {
    let mut child = Command::new(BIN)
        .args(["serve", "--allow-root", "--config", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "serve exited");
        assert!(Instant::now() < deadline, "serve did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn serve_refuses_to_run_as_root_unless_told_to() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().nth(1).map(str::to_owned))
        .unwrap();
    if euid != "0" {
        eprintln!("skipped: the tests do not run as root here (uid {euid}), so there is no root to refuse");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    let port = free_port();
    std::fs::write(
        &path,
        format!(
            "[admin]\nenabled = false\n[reload]\nwatch = false\n\
             [[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    let out = warden(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("refusing to run as root"), "{err}");
    assert!(err.contains("--allow-root"), "{err}");
    // With the flag it serves (and is stopped here).
    serves_until_killed(&path, port);
}

#[test]
fn serve_refuses_secret_files_other_users_can_read() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = warden_crypto::dev_ca::DevCa::new("test CA").unwrap();
    let leaf = ca.server_cert(&["localhost"]).unwrap();
    std::fs::write(d.join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(d.join("tls.key"), &leaf.key_pem).unwrap();
    let mode = |m: u32| {
        std::fs::set_permissions(d.join("tls.key"), std::fs::Permissions::from_mode(m)).unwrap()
    };
    let port = free_port();
    let path = d.join("warden.toml");
    std::fs::write(
        &path,
        format!(
            "[admin]\nenabled = false\n[reload]\nwatch = false\n\
             [[listeners]]\nname = \"tls\"\naddress = \"127.0.0.1:{port}\"\n\
             [listeners.tls]\ncertificates = [{{ cert = \"{}\", key = \"file:{}\" }}]\n",
            d.join("tls.crt").display(),
            d.join("tls.key").display()
        ),
    )
    .unwrap();
    for m in [0o644, 0o604, 0o602] {
        mode(m);
        let out = warden(&["serve", "--allow-root", "--config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "mode {m:o}");
        let err = text(&out.stderr);
        assert!(
            err.contains("listeners[0].tls.certificates[0].key")
                && err.contains(&format!("has mode {m:04o}"))
                && err.contains("chmod o-rwx"),
            "{err}"
        );
    }
    // Owner only, or a group: it serves.
    mode(0o640);
    serves_until_killed(&path, port);
}

#[tokio::test]
async fn a_reload_is_refused_while_a_secret_file_is_exposed_and_the_running_config_stays() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crate::common::write_secret(d.join("hmac"), "a-shared-secret-of-32-bytes-or-more!!");
    let (port, admin) = (free_port(), free_port());
    let toml = format!(
        "[admin]\naddress = \"127.0.0.1:{admin}\"\n[reload]\nwatch = false\n\
         [[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:{port}\"\n\
         [[auth.jwt]]\nname = \"batch\"\nissuer = \"batch\"\naudiences = [\"api\"]\n\
         algorithms = [\"HS256\"]\nhmac_secret = \"file:{}\"\n",
        d.join("hmac").display()
    );
    let mut p = crate::common::serve(d, "w", &toml);
    crate::common::wait_port(&mut p, admin, d, "w").await;
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let web: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let reload = || async {
        warden_test_util::client::request(admin, "POST", "/reload", &[], String::new()).await
    };
    // The new config adds a route; the key file becomes readable by everyone.
    let up = Upstream::start("new").await;
    std::fs::write(
        d.join("w.toml"),
        format!(
            "{toml}[[clusters]]\nname = \"new\"\nendpoints = [\"{}\"]\n\
             [[routes]]\nname = \"new\"\ncluster = \"new\"\npath_prefix = \"/new\"\nauth = \"none\"\n",
            up.url()
        ),
    )
    .unwrap();
    std::fs::set_permissions(d.join("hmac"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let a = reload().await;
    assert_eq!(a.status, 422, "{:?}", String::from_utf8_lossy(&a.body));
    let body = String::from_utf8_lossy(&a.body).into_owned();
    assert!(
        body.contains("auth.jwt[0].hmac_secret") && body.contains("has mode 0644"),
        "{body}"
    );
    // The running config stays: the new route is not served.
    assert_eq!(client::get(web, "/new/x").await.status, 404);
    assert!(up.requests().is_empty());
    // Owner-only again: the same config applies.
    std::fs::set_permissions(d.join("hmac"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(reload().await.status, 200);
    assert_eq!(client::get(web, "/new/x").await.status, 200);
    assert_eq!(up.requests().len(), 1);
}

#[test]
fn check_accepts_a_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    std::fs::write(
        &path,
        r#"
[[listeners]]
name = "web"
address = "127.0.0.1:8080"

[[clusters]]
name = "app"
endpoints = ["http://127.0.0.1:9000"]

[[routes]]
name = "all"
auth = "none"
cluster = "app"
path_prefix = "/"
"#,
    )
    .unwrap();
    let out = check(&path);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains(": ok"), "{}", text(&out.stdout));
}

#[test]
fn check_reports_every_error_with_its_field_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let path = dir.path().join("broken.toml");
    let toml = format!(
        r#"
[server]
request_timeout = "30"

[forwarding]
trusted_proxies = ["10.0.0.0/33"]

[bogus_section]
x = 1

[[listeners]]
name = "web"
address = "127.0.0.1:8080"

[[listeners]]
name = "web"
address = "127.0.0.1:8443"
[[listeners.tls.certificates]]
cert = "{missing}/cert.pem"
key = "file:{missing}/key.pem"

[[listeners]]
name = "inline"
address = "127.0.0.1:8444"
[[listeners.tls.certificates]]
cert = "{missing}/cert.pem"
key = "-----BEGIN PRIVATE KEY-----"

[[clusters]]
name = "hashy"
endpoints = ["http://127.0.0.1:9000"]
load_balancer = "consistent_hash"

[[clusters]]
name = "secure"
endpoints = ["https://127.0.0.1:9443"]

[[routes]]
name = "typo"
auth = "none"
cluster = "hashy"
path_prefx = "/a/"

[[routes]]
name = "noauth"
cluster = "hashy"
path_prefix = "/b/"

[[routes]]
name = "ghost"
auth = "none"
cluster = "missing"
path_prefix = "/c/"

[[routes]]
name = "badre"
auth = "none"
cluster = "hashy"
path_regex = "^/d/(unclosed$"

[[routes]]
name = "twokinds"
auth = "none"
cluster = "hashy"
path_exact = "/e"
path_prefix = "/e/"

[[routes]]
name = "tracer"
auth = "none"
cluster = "hashy"
path_prefix = "/f/"
methods = ["GET", "TRACE"]
"#,
        missing = missing.display()
    );
    std::fs::write(&path, toml).unwrap();
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    // (field path, part of the reason). Paths index elements as they are in the file.
    let expected = [
        ("routes[0].path_prefx", "unknown field `path_prefx`"),
        ("routes[1].auth", "every route must say who may call it"),
        ("routes[2].cluster", "no cluster named `missing`"),
        ("server.request_timeout", "`30` has no unit"),
        (
            "forwarding.trusted_proxies[0]",
            "`10.0.0.0/33` is not an IP address or CIDR block",
        ),
        ("listeners[1].name", "duplicate listener name `web`"),
        (
            "clusters[0].hash_header",
            "required by load_balancer = \"consistent_hash\"",
        ),
        ("clusters[1].tls", "https:// endpoints need a [tls] section"),
        ("listeners[1].tls.certificates[0].cert", "cannot read"),
        (
            "listeners[2].tls.certificates[0].key",
            "secrets are referenced, not written inline",
        ),
        ("bogus_section", "unknown section"),
        ("routes[3].path_regex", "invalid regex"),
        (
            "routes[4]",
            "use only one of path_exact, path_prefix, path_regex",
        ),
        ("routes[5].methods", "`TRACE` is refused with 405 unless"),
    ];
    let mut absent = Vec::new();
    for (field, reason) in expected {
        let prefix = format!("  {field}: ");
        if !stderr
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains(reason))
        {
            absent.push(format!("{field}: {reason}"));
        }
    }
    assert!(
        absent.is_empty(),
        "not reported: {absent:#?}\nstderr:\n{stderr}"
    );
    // One error per line: serde's "in `key`" trailers would repeat what the path says.
    assert!(!stderr.contains("\nin `"), "{stderr}");
}

#[test]
fn check_names_the_line_of_a_toml_syntax_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("syntax.toml");
    std::fs::write(
        &path,
        "[server]\nmax_headers = 10\n\n[[listeners]\nname = \"web\"\n",
    )
    .unwrap();
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not valid TOML") && stderr.contains("line 4"),
        "{stderr}"
    );
}

// ---- warden serve -----------------------------------------------------------------------

/// A `warden serve` child process, killed if a test ends without stopping it.
struct Served {
    child: std::process::Child,
    log: PathBuf,
}

impl Served {
    async fn start(config: &Path) -> Self {
        let log = config.with_extension("stderr.log");
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
        let mut s = Self { child, log };
        // "admin listening" is logged right before the signal handlers are installed.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if s.stderr().contains("admin listening") {
                break;
            }
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("warden serve exited early ({status}):\n{}", s.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "warden serve did not start:\n{}",
                s.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        s
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "warden serve still running after {within:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn serve_config(port: u16, admin: u16, up: &Upstream, routes: &[(&str, &str)]) -> String {
    let mut t = format!(
        "[admin]\naddress = \"127.0.0.1:{admin}\"\n[access_log]\nenabled = false\n[reload]\nwatch = false\n\
         [[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:{port}\"\n\
         [[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n",
        up.url()
    );
    for (name, prefix) in routes {
        t.push_str(&format!(
            "[[routes]]\nname = \"{name}\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"{prefix}\"\n"
        ));
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_drains_in_flight_requests_and_exits_zero_on_sigterm() {
    let up = Upstream::start("slow").await;
    up.set(Behaviour {
        delay: Duration::from_secs(1),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warden.toml");
    let (port, admin) = (free_port(), free_port());
    std::fs::write(&config, serve_config(port, admin, &up, &[("all", "/")])).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut served = Served::start(&config).await;
    // Every start-up line names its address with the same field, so one log query finds them.
    let log = served.stderr();
    for line in ["listening", "admin listening"] {
        let l = log
            .lines()
            .find(|l| l.contains(line))
            .unwrap_or_else(|| panic!("no `{line}` line:\n{log}"));
        assert!(l.contains("\"addr\":\"127.0.0.1:"), "{l}");
    }

    let slow = tokio::spawn(async move { client::get(addr, "/slow").await.status });
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    served.signal("-TERM");
    assert_eq!(
        slow.await.unwrap(),
        200,
        "the in-flight request must complete during the drain"
    );
    let status = served.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", served.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reloads_on_sighup() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warden.toml");
    let (port, admin) = (free_port(), free_port());
    std::fs::write(&config, serve_config(port, admin, &up, &[("one", "/one/")])).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut served = Served::start(&config).await;
    assert_eq!(client::get(addr, "/one/x").await.status, 200);
    assert_eq!(client::get(addr, "/two/x").await.status, 404);

    // File watching is off: only the signal can make this change take effect.
    std::fs::write(
        &config,
        serve_config(port, admin, &up, &[("one", "/one/"), ("two", "/two/")]),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        client::get(addr, "/two/x").await.status,
        404,
        "changed without a reload"
    );
    served.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while client::get(addr, "/two/x").await.status != 200 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            served.stderr()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        served.child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the process"
    );

    served.signal("-TERM");
    let status = served.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", served.stderr());
}

// ---- examples/gateway.toml ----------------------------------------------------------------

#[test]
fn example_config_is_valid() {
    let example = std::fs::read_to_string(workspace_file("examples/gateway.toml"))
        .expect("examples/gateway.toml");
    let dir = tempfile::tempdir().unwrap();
    let root = format!("{}/", dir.path().display());
    // Every file the example names under /etc/warden/ (plain paths and `file:` keys).
    let files: BTreeSet<String> = example
        .split('"')
        .map(|s| s.strip_prefix("file:").unwrap_or(s))
        .filter(|s| s.starts_with("/etc/warden/"))
        .map(|s| s.replacen("/etc/warden/", "", 1))
        .collect();
    assert!(
        files.len() >= 5,
        "expected the example to name certificate, key and CA files: {files:?}"
    );
    let ca = warden_crypto::DevCa::new("example test CA").unwrap();
    // The upstream CA of [authority.ca.upstream]: a CA certificate and its own key.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let upstream = warden_identity::testing::TestCa::new(
        &warden_identity::TrustDomain::new("example.org").unwrap(),
        now,
    );
    for f in &files {
        let path = dir.path().join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if f == "upstream-ca-chain.pem" {
            let root = warden_identity::ca::pem_cert(upstream.root.cert_der());
            std::fs::write(&path, root).unwrap();
        } else if f == "upstream-ca.p8" {
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                base64_lines(upstream.root.key_pkcs8())
            );
            std::fs::write(&path, pem).unwrap();
        } else if let Some(stem) = f.strip_suffix(".pem") {
            if files.contains(&format!("{stem}.key")) {
                let leaf = ca.server_cert(&["localhost", "api.example.com"]).unwrap();
                std::fs::write(&path, &leaf.cert_pem).unwrap();
                std::fs::write(dir.path().join(format!("{stem}.key")), &leaf.key_pem).unwrap();
            } else {
                std::fs::write(&path, ca.cert_pem()).unwrap();
            }
        } else if let Some(stem) = f.strip_suffix(".key") {
            assert!(
                files.contains(&format!("{stem}.pem")),
                "{f} has no certificate `{stem}.pem` beside it"
            );
        } else if f.ends_with(".json") {
            let key =
                warden_crypto::jws::SigningKey::generate(warden_crypto::jws::Alg::ES256).unwrap();
            let jwks = serde_json::json!({ "keys": [key.public_jwk()] });
            std::fs::write(&path, jwks.to_string()).unwrap();
        } else if f.ends_with(".kek") {
            // A key-encryption key: 32 bytes in base64.
            std::fs::write(&path, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
        } else if f.ends_with(".secret") {
            std::fs::write(&path, "0123456789abcdef0123456789abcdef-example").unwrap();
        } else if f.ends_with(".toml") {
            std::fs::write(&path, "# API keys, managed by `warden apikey`.\n").unwrap();
        } else if f.ends_with(".cedar") {
            std::fs::write(
                &path,
                "permit(principal, action == Warden::Action::\"GET\", resource)\n  \
                 when { principal.scopes.contains(\"orders:read\") };\n",
            )
            .unwrap();
        } else if f.ends_with(".p8") {
            let key =
                warden_crypto::jws::SigningKey::generate(warden_crypto::jws::Alg::ES256).unwrap();
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                base64_lines(key.pkcs8())
            );
            std::fs::write(&path, pem).unwrap();
        } else if f.ends_with(".pub") {
            // An Ed25519 public key (SubjectPublicKeyInfo).
            let key =
                warden_crypto::jws::SigningKey::generate(warden_crypto::jws::Alg::EdDSA).unwrap();
            let warden_crypto::jws::VerifyingKey::Ed25519(raw) = key.verifying_key() else {
                unreachable!()
            };
            let mut der = vec![
                0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
            ];
            der.extend(raw);
            let pem = format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                base64_lines(&der)
            );
            std::fs::write(&path, pem).unwrap();
        } else {
            panic!("the test does not know what to put in /etc/warden/{f}");
        }
    }
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, example.replace("/etc/warden/", &root)).unwrap();
    let out = check(&config);
    assert_eq!(
        out.status.code(),
        Some(0),
        "examples/gateway.toml does not pass `warden check`:\n{}",
        text(&out.stderr)
    );
}

/// Structs of model.rs and their `pub name: Type` fields.
/// Standard base64 in 64-character lines, for PEM.
fn base64_lines(der: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn model_structs() -> BTreeMap<String, Vec<(String, String)>> {
    // The schema lives in model.rs and, for `[auth]` and `[authority]`, auth.rs and authority.rs.
    let model = ["model.rs", "auth.rs", "authority.rs"]
        .map(|f| {
            std::fs::read_to_string(workspace_file(&format!("crates/warden-config/src/{f}")))
                .unwrap()
        })
        .join("\n");
    let mut structs = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in model.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("pub struct ") {
            let name = rest.trim_end_matches('{').trim().to_owned();
            structs.insert(name.clone(), Vec::new());
            current = Some(name);
        } else if t == "}" {
            current = None;
        } else if let (Some(s), Some(rest)) = (&current, t.strip_prefix("pub ")) {
            if let Some((field, ty)) = rest.split_once(':') {
                let ty = ty.trim().trim_end_matches(',').to_owned();
                structs
                    .get_mut(s)
                    .unwrap()
                    .push((field.trim().to_owned(), ty));
            }
        }
    }
    structs
}

/// `Option<Vec<T>>` → `T`.
fn inner_type(mut ty: &str) -> &str {
    loop {
        match ty
            .strip_prefix("Option<")
            .or_else(|| ty.strip_prefix("Vec<"))
        {
            Some(rest) => ty = rest.strip_suffix('>').unwrap_or(rest),
            None => {
                return ty
                    .trim_start_matches("crate::authority::")
                    .trim_start_matches("crate::auth::")
            }
        }
    }
}

/// Every dotted field path of the schema, from `Config` down (`routes.cors.max_age`).
fn schema_paths(
    structs: &BTreeMap<String, Vec<(String, String)>>,
    ty: &str,
    prefix: &str,
    out: &mut Vec<String>,
) {
    assert!(
        prefix.matches('.').count() < 8,
        "schema nests too deep at {prefix}"
    );
    for (field, fty) in &structs[ty] {
        let path = if prefix.is_empty() {
            field.clone()
        } else {
            format!("{prefix}.{field}")
        };
        out.push(path.clone());
        let inner = inner_type(fty);
        if structs.contains_key(inner) {
            schema_paths(structs, inner, &path, out);
        }
    }
}

fn example_paths(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        out.insert(path.clone());
        match v {
            toml::Value::Table(t) => example_paths(t, &path, out),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(t) = item {
                        example_paths(t, &path, out);
                    }
                }
            }
            _ => {}
        }
    }
}

#[test]
fn example_config_sets_every_schema_field_with_a_comment() {
    let structs = model_structs();
    assert!(
        structs.len() >= 15 && structs.contains_key("Config"),
        "model.rs parse found {:?}",
        structs.keys()
    );
    let mut expected = Vec::new();
    schema_paths(&structs, "Config", "", &mut expected);
    assert!(
        expected.len() >= 80,
        "model.rs parse found only {} fields: {expected:?}",
        expected.len()
    );

    let example = std::fs::read_to_string(workspace_file("examples/gateway.toml")).unwrap();
    let table: toml::Table = toml::from_str(&example).expect("examples/gateway.toml is TOML");
    let mut present = BTreeSet::new();
    example_paths(&table, "", &mut present);
    let missing: Vec<_> = expected.iter().filter(|p| !present.contains(*p)).collect();
    assert!(
        missing.is_empty(),
        "examples/gateway.toml does not set these options: {missing:#?}"
    );

    // Each option set in the example has a comment right above it that gives its default
    // (or says it is required).
    let fields: BTreeSet<&str> = structs
        .values()
        .flatten()
        .map(|(f, _)| f.as_str())
        .collect();
    let lines: Vec<&str> = example.lines().collect();
    let mut uncommented = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        let Some((key, _)) = t.split_once('=') else {
            continue;
        };
        if t.starts_with('#') || !fields.contains(key.trim()) {
            continue;
        }
        let comment: String = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with('#'))
            .map(|l| l.to_ascii_lowercase())
            .collect();
        if !(comment.contains("default") || comment.contains("required")) {
            uncommented.push(format!("line {}: {t}", i + 1));
        }
    }
    assert!(
        uncommented.is_empty(),
        "options without a comment giving the default: {uncommented:#?}"
    );
}

#[test]
fn check_reports_auth_mistakes_with_their_paths_including_bad_policies_and_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.cedar");
    std::fs::write(
        &policy,
        "permit (principal, action, resource) when { principal.nosuch == \"x\" };\n",
    )
    .unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        "[[keys]]\nid = \"abcd1234\"\nhash = \"md5:00\"\nowner = \"x\"\n",
    )
    .unwrap();
    let path = dir.path().join("auth.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[listeners]]
name = "web"
address = "127.0.0.1:0"
[[auth.jwt]]
name = "idp"
issuer = "https://idp"
audiences = []
algorithms = ["none", "HS256", "ES256"]
jwks_url = "ftp://idp/keys"
[auth.api_keys]
file = "{keys}"
[auth.policies]
files = ["{policy}"]
[[clusters]]
name = "c"
endpoints = ["http://127.0.0.1:1"]
[[routes]]
name = "r"
cluster = "c"
[routes.auth]
accept = ["jwt:other", "password"]
claims = [{{ claim = "x", equals = "a", glob = "b*" }}]
[[routes.rate_limits]]
key = "subject"
requests = 1
[[routes]]
name = "open"
cluster = "c"
auth = "public"
"#,
            keys = keys.display(),
            policy = policy.display()
        ),
    )
    .unwrap();
    let out = check(&path);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    for needle in [
        "auth.jwt[0].audiences: at least one audience",
        "auth.jwt[0].algorithms: `none` is not one of",
        "auth.jwt[0].algorithms: HS* algorithms cannot be mixed",
        "auth.jwt[0].jwks_url: must be an http:// or https:// URL",
        "routes[0].auth.accept[0]: no JWT issuer named `other`",
        "routes[0].auth.accept[1]: `password`: expected jwt",
        "routes[0].auth.claims[0]: give exactly one of equals, one_of, glob",
        "routes[1].auth: `public`: write \"none\" for a public route",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }

    // With the field errors fixed, compile-time problems in the files it names are reported.
    let fixed = std::fs::read_to_string(&path)
        .unwrap()
        .replace("audiences = []", "audiences = [\"api\"]")
        .replace("[\"none\", \"HS256\", \"ES256\"]", "[\"ES256\"]")
        .replace("ftp://idp/keys", "https://idp/keys")
        .replace("[\"jwt:other\", \"password\"]", "[\"jwt:idp\"]")
        .replace(", glob = \"b*\"", "")
        .replace("auth = \"public\"", "auth = \"none\"");
    std::fs::write(&path, fixed).unwrap();
    let out = check(&path);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("auth.policies.files") && err.contains("p.cedar") && err.contains("nosuch"),
        "{err}"
    );
    assert!(
        err.contains("auth.api_keys.file") && err.contains("hash"),
        "{err}"
    );
}
