//! Build facts for `warden version --json`: the git revision the binary was built from, the
//! build profile, the compiler, the target, the enabled features and the number of crates
//! from the registry in `Cargo.lock`. Nothing time-dependent, so two builds of one tree are
//! the same bytes (`scripts/reproducible-build.sh`).

use std::path::Path;
use std::process::Command;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let lock = root.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let git = root.join(".git");
    // A new commit moves HEAD or the branch it names. (Whether the work tree has changes is
    // not recorded: watching the index would rebuild the binary after every `git status`.)
    println!("cargo:rerun-if-changed={}", git.join("HEAD").display());
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
        if let Some(r) = head.trim().strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed={}", git.join(r).display());
        }
    }

    let revision = output(
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["rev-parse", "HEAD"]),
    )
    .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version =
        output(Command::new(rustc).arg("--version")).unwrap_or_else(|| "unknown".into());
    let registry_crates = std::fs::read_to_string(&lock)
        .map(|t| {
            t.split("[[package]]")
                .skip(1)
                .filter(|p| p.contains("\nsource = \"registry+"))
                .count()
        })
        .unwrap_or(0);
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(|f| f.to_lowercase()))
        .collect();
    features.sort();

    let env = |k: &str| std::env::var(k).unwrap_or_default();
    println!("cargo:rustc-env=WARDEN_GIT_REVISION={revision}");
    println!("cargo:rustc-env=WARDEN_BUILD_PROFILE={}", env("PROFILE"));
    println!("cargo:rustc-env=WARDEN_RUSTC_VERSION={rustc_version}");
    println!("cargo:rustc-env=WARDEN_TARGET={}", env("TARGET"));
    println!("cargo:rustc-env=WARDEN_FEATURES={}", features.join(","));
    println!("cargo:rustc-env=WARDEN_REGISTRY_CRATES={registry_crates}");
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
