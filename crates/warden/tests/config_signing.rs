//! Signed configuration (issue 14) with keys and certificates made by the `openssl` CLI:
//! `warden config sign|verify|key-id`, `serve` refusing an unsigned config or one signed by a
//! key it does not trust, and a reload refusing a config changed since signing (the running
//! one stays, the refusal is a security event with its reason) until it is signed again.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use warden_test_util::authcfg::series;
use warden_test_util::client;

use crate::common::{free_port, warden, Proc, BIN};

fn openssl(args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn sha256_of(path: &str) -> String {
    warden_crypto::jws::sha256(&std::fs::read(path).unwrap())
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A new ECDSA P-256 private key (PKCS#8 PEM) at `out`.
fn p256_key(out: &str) {
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        out,
    ]);
    owner_only(out);
}

fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A config directory: an Ed25519 signer (trusted by the config), a P-256 key nobody trusts,
/// a TLS listener's certificate and key, and the config.
struct Bundle {
    _dir: tempfile::TempDir,
    d: PathBuf,
    http: u16,
    tls: u16,
    admin: u16,
}

impl Bundle {
    fn new() -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        let d = std::fs::canonicalize(dir.path()).unwrap();
        let p = |n: &str| d.join(n).display().to_string();
        openssl(&["genpkey", "-algorithm", "ed25519", "-out", &p("signer.pem")]);
        openssl(&[
            "pkey",
            "-in",
            &p("signer.pem"),
            "-pubout",
            "-out",
            &p("signer.pub"),
        ]);
        p256_key(&p("other.pem"));
        openssl(&[
            "pkey",
            "-in",
            &p("other.pem"),
            "-pubout",
            "-out",
            &p("other.pub"),
        ]);
        self_signed(&p("tls.crt"), &p("tls.key"));
        let b = Bundle {
            _dir: dir,
            d,
            http: free_port(),
            tls: free_port(),
            admin: free_port(),
        };
        b.write_config(128);
        b
    }

    fn path(&self, n: &str) -> String {
        self.d.join(n).display().to_string()
    }

    fn config(&self) -> String {
        self.path("warden.toml")
    }

    fn write_config(&self, max_headers: u32) {
        std::fs::write(
            self.config(),
            format!(
                "[server]\nmax_headers = {max_headers}\n\
                 [admin]\naddress = \"127.0.0.1:{admin}\"\n[access_log]\nenabled = false\n\
                 [reload]\nwatch = false\n\
                 [security_events]\npath = \"{events}\"\n\
                 [config_signing]\ntrusted_keys = [{{ key = \"{signer}\" }}]\n\
                 [[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:{http}\"\n\
                 [[listeners]]\nname = \"tls\"\naddress = \"127.0.0.1:{tls}\"\n\
                 [listeners.tls]\ncertificates = [{{ cert = \"{crt}\", key = \"file:{key}\" }}]\n",
                admin = self.admin,
                http = self.http,
                tls = self.tls,
                events = self.path("events.jsonl"),
                signer = self.path("signer.pub"),
                crt = self.path("tls.crt"),
                key = self.path("tls.key"),
            ),
        )
        .unwrap();
    }

    fn sign(&self, key: &str) -> Output {
        warden(&["config", "sign", "--key", &self.path(key), &self.config()])
    }

    fn verify(&self, extra: &[&str]) -> Output {
        let mut args = vec!["config", "verify"];
        args.extend(extra);
        let config = self.config();
        args.push(&config);
        warden(&args)
    }

    fn serve(&self, extra: &[&str]) -> (Proc, PathBuf) {
        let log = self.d.join(format!("serve-{}.log", free_port()));
        let mut args = vec!["serve", "--allow-root", "--config"];
        let config = self.config();
        args.push(&config);
        args.extend(extra);
        let child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (Proc(child), log)
    }

    /// The security-event lines with `event`.
    fn events(&self, event: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.d.join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == event)
            .collect()
    }
}

/// Waits for `p` to exit; its status and log.
fn exit_of(p: &mut Proc, log: &Path) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            return (s.code(), std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "serve did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn wait_listening(p: &mut Proc, port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Some(s) = p.0.try_wait().unwrap() {
            panic!(
                "serve exited ({s}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "serve did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_cli_signs_verifies_and_names_what_was_tampered_with() {
    if !have_openssl() {
        eprintln!("skipped: the openssl CLI is missing (scripts/test installs it)");
        return;
    }
    let b = Bundle::new();
    let o = b.sign("signer.pem");
    assert!(o.status.success(), "{}", text(&o));
    assert!(Path::new(&format!("{}.sig", b.config())).exists());
    let kid = warden(&["config", "key-id", &b.path("signer.pub")]);
    let kid = String::from_utf8_lossy(&kid.stdout).trim().to_owned();
    assert_eq!(kid.len(), 43, "{kid}");

    // Checked with the config's own keys, or with a key given.
    let o = b.verify(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("signature by {kid} holds")),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("its 3 files"), "{}", text(&o));
    let o = b.verify(&["--trusted-key", &b.path("signer.pub")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // A key nobody trusts; a P-256 signature is checked the same way.
    let o = b.verify(&["--trusted-key", &b.path("other.pub")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("(unknown_key)"), "{}", text(&o));
    let o = b.sign("other.pem");
    assert!(o.status.success(), "{}", text(&o));
    let o = b.verify(&["--trusted-key", &b.path("other.pub")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(b.sign("signer.pem").status.success());

    // The private key of the listener changed since signing.
    let key = std::fs::read(b.path("tls.key")).unwrap();
    p256_key(&b.path("tls.key"));
    let o = b.verify(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("(file_changed)")
            && text(&o).contains("listeners[1].tls.certificates[0].key"),
        "{}",
        text(&o)
    );
    std::fs::write(b.path("tls.key"), key).unwrap();

    // A truncated signature, another config's signature, no signature.
    let sig_path = format!("{}.sig", b.config());
    let sig = std::fs::read_to_string(&sig_path).unwrap();
    std::fs::write(&sig_path, &sig[..sig.trim().len() - 10]).unwrap();
    let o = b.verify(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("(bad_signature)") || text(&o).contains("(malformed_signature)"),
        "{}",
        text(&o)
    );
    b.write_config(64);
    assert!(b.sign("signer.pem").status.success());
    b.write_config(128);
    let o = b.verify(&[]);
    assert!(text(&o).contains("(config_changed)"), "{}", text(&o));
    std::fs::remove_file(&sig_path).unwrap();
    let o = b.verify(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("(unsigned)"), "{}", text(&o));
    drop(sig);

    // Files outside the config's directory are refused at signing, naming the field.
    let elsewhere = tempfile::tempdir().unwrap();
    let moved = elsewhere.path().join("tls.crt");
    std::fs::copy(b.path("tls.crt"), &moved).unwrap();
    let t = std::fs::read_to_string(b.config())
        .unwrap()
        .replace(&b.path("tls.crt"), &moved.display().to_string());
    std::fs::write(b.config(), t).unwrap();
    let o = b.sign("signer.pem");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("listeners[1].tls.certificates[0].cert")
            && text(&o).contains("outside the config's directory"),
        "{}",
        text(&o)
    );
}

#[tokio::test]
async fn serve_starts_only_on_a_trusted_signature_and_a_reload_needs_one_too() {
    if !have_openssl() {
        eprintln!("skipped: the openssl CLI is missing (scripts/test installs it)");
        return;
    }
    let b = Bundle::new();

    // Unsigned: no start.
    let (mut p, log) = b.serve(&[]);
    let (code, out) = exit_of(&mut p, &log);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("refusing to start (unsigned)"), "{out}");

    // Signed, but the key given on the command line is another: the config cannot vouch for
    // itself then.
    assert!(b.sign("signer.pem").status.success());
    let other = b.path("other.pub");
    let (mut p, log) = b.serve(&["--trusted-config-key", &other]);
    let (code, out) = exit_of(&mut p, &log);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("refusing to start (unknown_key)"), "{out}");
    // Each refusal to start is a security event too, with the signature's code.
    let refused = b.events("config.start");
    let codes: Vec<&str> = refused
        .iter()
        .map(|e| {
            assert_eq!(e["reason"], "signature_refused", "{e}");
            assert_eq!(
                e["detail"]["config_sha256"].as_str().map(str::len),
                Some(64),
                "{e}"
            );
            e["detail"]["signature"].as_str().unwrap()
        })
        .collect();
    assert_eq!(codes, ["unsigned", "unknown_key"]);

    // Signed by the trusted key: it serves.
    let signer = b.path("signer.pub");
    let (mut p, log) = b.serve(&["--trusted-config-key", &signer]);
    wait_listening(&mut p, b.http, &log).await;
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", b.admin).parse().unwrap();

    let signed_sha = sha256_of(&b.config());
    let info = |sha: &str| format!("warden_config_info{{sha256=\"{sha}\"}}");
    let m = String::from_utf8_lossy(&client::get(admin, "/metrics").await.body).into_owned();
    assert_eq!(series(&m, &info(&signed_sha)), Some(1.0), "{m}");

    // A change not signed again is refused on reload; the running config stays.
    b.write_config(100);
    let pid = p.0.id().to_string();
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    };
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.events("config.reload").is_empty() {
        assert!(Instant::now() < deadline, "no reload event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = &b.events("config.reload")[0];
    assert_eq!(e["reason"], "signature_refused", "{e}");
    assert_eq!(e["detail"]["signature"], "config_changed", "{e}");
    let m = String::from_utf8_lossy(&client::get(admin, "/metrics").await.body).into_owned();
    assert_eq!(
        series(
            &m,
            "warden_security_events_total{event=\"config.reload\",reason=\"signature_refused\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        series(&m, "warden_config_last_reload_success"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        series(&m, &info(&signed_sha)),
        Some(1.0),
        "still the signed one: {m}"
    );
    assert!(p.0.try_wait().unwrap().is_none(), "still serving");
    let a = client::get(format!("127.0.0.1:{}", b.http).parse().unwrap(), "/").await;
    assert_eq!(a.status, 404, "the old config still answers");

    // Signed again: the reload applies.
    assert!(b.sign("signer.pem").status.success());
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.events("config.reload").len() < 2 {
        assert!(Instant::now() < deadline, "no second reload event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.events("config.reload")[1]["reason"], "accepted");
    let m = String::from_utf8_lossy(&client::get(admin, "/metrics").await.body).into_owned();
    assert_eq!(series(&m, &info(&sha256_of(&b.config()))), Some(1.0), "{m}");
    assert_eq!(
        series(&m, &info(&signed_sha)),
        None,
        "the old hash is gone: {m}"
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("config signature holds"), "{log_text}");

    // A certificate swapped in place is not served: the listener's store does not watch its
    // files while signing is enforced. Signed again and reloaded, it is.
    let served = || served_fingerprint(b.tls);
    let old_fp = fingerprint(&b.path("tls.crt"));
    assert_eq!(served(), old_fp);
    self_signed(&b.path("tls.crt"), &b.path("tls.key"));
    let new_fp = fingerprint(&b.path("tls.crt"));
    assert_ne!(new_fp, old_fp);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(served(), old_fp, "an unsigned certificate was picked up");
    assert!(b.sign("signer.pem").status.success());
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.events("config.reload").len() < 3 {
        assert!(Instant::now() < deadline, "no third reload event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.events("config.reload")[2]["reason"], "accepted");
    let deadline = Instant::now() + Duration::from_secs(10);
    while served() != new_fp {
        assert!(
            Instant::now() < deadline,
            "the signed certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Makes a key file owner-only, as `warden serve` wants secrets.
fn owner_only(path: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A new self-signed P-256 certificate and key for localhost.
fn self_signed(crt: &str, key: &str) {
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        crt,
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
    ]);
    owner_only(key);
}

/// The SHA-256 fingerprint of a PEM certificate file.
fn fingerprint(crt: &str) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in", crt])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// The fingerprint of the certificate served on 127.0.0.1:`port` (openssl s_client).
fn served_fingerprint(port: u16) -> String {
    let s = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let mut x = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    x.stdin.take().unwrap().write_all(&s.stdout).unwrap();
    String::from_utf8_lossy(&x.wait_with_output().unwrap().stdout)
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_config_from_an_https_url_applies_when_it_changes_and_only_when_signed_by_a_trusted_key()
{
    if !have_openssl() {
        eprintln!("skipped: the openssl CLI is missing (scripts/test installs it)");
        return;
    }
    let b = Bundle::new();
    // The publisher signs warden.toml in the bundle's directory and publishes the config and
    // its signature; the gateway keeps its copy as running.toml beside the same files.
    let publish = tempfile::tempdir().unwrap();
    let publish_as = |key: &str, sig_from: Option<&str>| {
        if let Some(sig) = sig_from {
            std::fs::write(publish.path().join("warden.toml.sig"), sig).unwrap();
        } else {
            let o = b.sign(key);
            assert!(o.status.success(), "{}", text(&o));
            std::fs::copy(
                format!("{}.sig", b.config()),
                publish.path().join("warden.toml.sig"),
            )
            .unwrap();
        }
        std::fs::copy(b.config(), publish.path().join("warden.toml")).unwrap();
    };
    publish_as("signer.pem", None);
    let first_sig = std::fs::read_to_string(publish.path().join("warden.toml.sig")).unwrap();
    let ca = warden_crypto::dev_ca::DevCa::new("config server CA").unwrap();
    let leaf = ca.server_cert(&["localhost"]).unwrap();
    std::fs::write(b.path("server-ca.pem"), ca.cert_pem()).unwrap();
    let server = warden_test_util::files::FileServer::start(
        publish.path().to_path_buf(),
        &leaf.cert_pem,
        &leaf.key_pem,
    )
    .await;

    let running = b.path("running.toml");
    let log = b.d.join("fleet.log");
    let child = Command::new(BIN)
        .args(["serve", "--allow-root", "--config", &running])
        .args(["--config-url", &server.url("warden.toml")])
        .args(["--config-url-ca", &b.path("server-ca.pem")])
        .args(["--trusted-config-key", &b.path("signer.pub")])
        .args(["--config-poll", "200ms"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut p = Proc(child);
    wait_listening(&mut p, b.http, &log).await;
    assert_eq!(
        std::fs::read(&running).unwrap(),
        std::fs::read(b.config()).unwrap(),
        "fetched before the start"
    );
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", b.admin).parse().unwrap();
    let info = |sha: &str| format!("warden_config_info{{sha256=\"{sha}\"}}");
    let metrics = || async {
        String::from_utf8_lossy(&client::get(admin, "/metrics").await.body).into_owned()
    };
    // Polls that find nothing new are answered 304 (If-None-Match with the last ETag).
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.not_modified() < 2 {
        assert!(
            Instant::now() < deadline,
            "no conditional polls: {}",
            server.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A new config, signed: fetched, written, reloaded.
    b.write_config(100);
    publish_as("signer.pem", None);
    let new_sha = sha256_of(&b.config());
    let deadline = Instant::now() + Duration::from_secs(10);
    while series(&metrics().await, &info(&new_sha)) != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the new config never ran: {}",
            metrics().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        std::fs::read_to_string(&running).unwrap(),
        std::fs::read_to_string(b.config()).unwrap()
    );
    assert_eq!(
        b.events("config.reload").last().unwrap()["reason"],
        "accepted"
    );

    // A changed config under an old signature, then one signed by a key nobody trusts: both
    // refused before they touch the disk; the running config stays.
    b.write_config(90);
    publish_as("", Some(&first_sig));
    let wait_fetch_event = |reason: &'static str| {
        let b = &b;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if b.events("config.fetch")
                    .iter()
                    .any(|e| e["reason"] == reason)
                {
                    return;
                }
                assert!(Instant::now() < deadline, "no config.fetch/{reason}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_fetch_event("config_changed").await;
    publish_as("other.pem", None);
    wait_fetch_event("unknown_key").await;
    let m = metrics().await;
    assert_eq!(series(&m, &info(&new_sha)), Some(1.0), "{m}");
    assert_eq!(
        sha256_of(&running),
        new_sha,
        "the local copy was not replaced"
    );
    assert!(
        series(
            &m,
            "warden_security_events_total{event=\"config.fetch\",reason=\"unknown_key\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );
    // The server gone: refused as unreachable, the gateway serves on.
    drop(server);
    wait_fetch_event("unreachable").await;
    assert!(p.0.try_wait().unwrap().is_none(), "still serving");
    assert_eq!(sha256_of(&running), new_sha);
}

#[test]
fn a_config_url_with_credentials_is_refused_without_echoing_them() {
    if !have_openssl() {
        eprintln!("skipped: the openssl CLI is missing (scripts/test installs it)");
        return;
    }
    let b = Bundle::new();
    for url in [
        "https://deploy:hunter2-pw@configs.example/warden.toml",
        "http://configs.example/warden.toml",
    ] {
        let (mut p, log) = b.serve(&[
            "--config-url",
            url,
            "--trusted-config-key",
            &b.path("signer.pub"),
        ]);
        let (code, out) = exit_of(&mut p, &log);
        assert_eq!(code, Some(1), "{url}: {out}");
        assert!(out.contains("--config-url must"), "{url}: {out}");
        assert!(
            !out.contains("hunter2-pw"),
            "the password was echoed: {out}"
        );
    }
}
