//! Runs a Python interop script (scripts/interop/*.py) with the interop virtualenv that
//! scripts/interop/venv.sh creates (from PyPI, pinned, once), off the async runtime.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository's root.
fn repo() -> PathBuf {
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
