//! Redis for tests: the shared instance named by `WARDEN_TEST_REDIS_URL`, and private
//! `redis-server` processes that a test may kill and restart (on the same port) to play an
//! outage.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The shared test Redis (`WARDEN_TEST_REDIS_URL`, e.g. `redis://127.0.0.1:6379`), or `None`
/// with a notice on stderr so a skipped test says why.
pub fn test_url(test: &str) -> Option<String> {
    match std::env::var("WARDEN_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("SKIPPED {test}: WARDEN_TEST_REDIS_URL is not set (CI sets it to redis://127.0.0.1:6379)");
            None
        }
    }
}

/// A key prefix no other test (or run) uses, so tests sharing one Redis never collide.
pub fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("warden-test:{test}:{}:{nanos}:", std::process::id())
}

/// A private `redis-server` on a free port, without persistence. Killed when dropped.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `requirepass`, when set.
    password: Option<String>,
}

impl RedisServer {
    /// Starts one, or `None` (with a notice) when `redis-server` is not installed.
    pub async fn start(test: &str) -> Option<Self> {
        Self::start_with(test, None).await
    }

    /// Starts one that wants `password` (`requirepass`) from every client.
    pub async fn start_with_password(test: &str, password: &str) -> Option<Self> {
        Self::start_with(test, Some(password.to_owned())).await
    }

    async fn start_with(test: &str, password: Option<String>) -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!("SKIPPED {test}: redis-server is not installed");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut s = Self {
            port,
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
            password,
        };
        s.restart().await;
        Some(s)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it at once (SIGKILL), as a crash would; its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A paused server must not stay paused for the next start.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing answers, as with a hung server.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws it (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid} failed");
    }

    /// Starts it again on the same port (empty), and waits until it answers `PING`.
    pub async fn restart(&mut self) {
        self.kill();
        let child = spawn(self.port, self.dir.path(), self.password.as_deref());
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ping(self.port).await {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer within 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(port: u16, dir: &Path, password: Option<&str>) -> Child {
    let mut cmd = Command::new("redis-server");
    if let Some(pw) = password {
        cmd.args(["--requirepass", pw]);
    }
    cmd.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--dir", &dir.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server")
}

/// True when a Redis answers `PING` on the port (`+PONG`, or `-NOAUTH` from one that wants a
/// password: either way it is up).
async fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await,
        Ok(Ok(_))
    ) && (&buf == b"+PONG\r\n" || &buf == b"-NOAUTH")
}
