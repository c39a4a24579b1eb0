//! Running the `warden` binary from CLI tests.

#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::process::{Command, Output};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_warden");

/// Runs `warden` with `args`.
pub fn warden(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run warden")
}

/// The JSON a successful run printed on stdout.
pub fn json_out(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "warden failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

/// Sends `method path` with `headers` and `body` to `addr` (HTTP/1.1), and reads the answer.
pub async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> warden_test_util::client::Answer {
    warden_test_util::client::request(addr, method, path, headers, body.to_owned()).await
}

/// A port free on 127.0.0.1 a moment ago (for `warden serve` configs that need a fixed one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `warden serve` process, killed (SIGKILL) when dropped.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `warden serve` with `toml` written to `<dir>/<name>.toml`, its stderr to `<name>.log`.
pub fn serve(dir: &std::path::Path, name: &str, toml: &str) -> Proc {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, toml).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Proc(
        Command::new(BIN)
            .args(["serve", "--allow-root", "--config", cfg.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// What `name` logged so far.
pub fn log_of(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// Waits until 127.0.0.1:`port` accepts connections; panics with the log if `p` exits.
pub async fn wait_port(p: &mut Proc, port: u16, dir: &std::path::Path, name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        if let Ok(Some(status)) = p.0.try_wait() {
            panic!("{name} exited ({status}):\n{}", log_of(dir, name));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} did not listen on {port}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A new schema in `WARDEN_TEST_DATABASE_URL`'s database (panics without it), as a store URL
/// whose `search_path` is that schema.
pub fn fresh_schema(prefix: &str) -> String {
    let url = std::env::var("WARDEN_TEST_DATABASE_URL")
        .expect("WARDEN_TEST_DATABASE_URL (a PostgreSQL URL) is needed");
    let mut b = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    let schema = format!(
        "wt_{prefix}_{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    );
    let ok = Command::new("psql")
        .args([url.as_str(), "-q", "-c", &format!("CREATE SCHEMA {schema}")])
        .status()
        .expect("run psql")
        .success();
    assert!(ok, "could not create schema {schema}");
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

/// Writes a secret file as a deployment should: readable by its owner only (`warden serve`
/// refuses secrets other users can read).
pub fn write_secret(path: impl AsRef<std::path::Path>, contents: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = path.as_ref();
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
