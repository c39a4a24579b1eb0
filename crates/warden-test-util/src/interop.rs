//! Runs a Python interop script (scripts/interop/*.py) with the interop virtualenv that
//! scripts/interop/venv.sh creates (from PyPI, pinned, once), off the async runtime.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The interop virtualenv's python (made first if needed); panics when it cannot be made.
pub async fn venv_python() -> String {
    tokio::task::spawn_blocking(|| {
        let venv = Command::new(repo().join("scripts/interop/venv.sh"))
            .output()
            .expect("run scripts/interop/venv.sh");
        assert!(
            venv.status.success(),
            "creating the interop virtualenv failed:\n{}",
            String::from_utf8_lossy(&venv.stderr)
        );
        String::from_utf8(venv.stdout).unwrap().trim().to_owned()
    })
    .await
    .expect("the virtualenv's thread")
}

/// Runs `scripts/interop/<script>` with `env` set; panics when the virtualenv cannot be made.
pub async fn run_python(script: &str, env: Vec<(String, String)>) -> Output {
    let script = repo().join("scripts/interop").join(script);
    let python = venv_python().await;
    tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(&script)
            .envs(env)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()))
    })
    .await
    .expect("the interop script's thread")
}

/// A Python interop script the test talks to while it runs, one line each way (stdin and
/// stdout; its stderr goes to the test's). Killed when dropped.
pub struct Script {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Script {
    /// Starts `scripts/interop/<script>` with the interop virtualenv, without proxy settings.
    pub async fn start(script: &str) -> Script {
        use tokio::io::AsyncBufReadExt;
        let python = venv_python().await;
        let mut child = tokio::process::Command::new(python)
            .arg(repo().join("scripts/interop").join(script))
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("grpc_proxy")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let lines = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Script {
            child,
            stdin,
            lines,
        }
    }

    /// The script's next line (panics after two minutes, or if it ended: its stderr says why).
    pub async fn line(&mut self) -> String {
        tokio::time::timeout(std::time::Duration::from_secs(120), self.lines.next_line())
            .await
            .expect("the script answers within two minutes")
            .expect("reading the script's output")
            .expect("the script ended early (its stderr is above)")
    }

    /// The next line, which must start with `prefix`; what follows it.
    pub async fn expect(&mut self, prefix: &str) -> String {
        let line = self.line().await;
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected `{prefix}...` from the script, got {line:?}"))
            .to_owned()
    }

    /// Sends the script one line.
    pub async fn send(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to the script");
    }

    /// Waits for the script to exit.
    pub async fn finish(mut self) {
        let _ = self.child.wait().await;
    }
}
