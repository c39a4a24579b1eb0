//! `warden config sign|verify|key-id`: signed configuration (see `warden-signed-config`).
//!
//! `sign --key KEY CONFIG` writes `CONFIG.sig`: a detached signature (Ed25519 or ECDSA P-256,
//! keys as `openssl genpkey` writes them) over the config and the hash of every file it reads.
//! `verify CONFIG` checks it with `--trusted-key` files, or else with the config's own
//! `[config_signing] trusted_keys`; exit 0 when it holds, 2 when it is refused (the reason is
//! printed), 1 when it could not be checked. `key-id PUB` prints the id a key signs with (the
//! RFC 7638 thumbprint), for `config_signing.revoked_keys`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use warden_signed_config::{self as signed, Trust};

/// `warden config …`.
#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Sign a config and every file it reads (writes CONFIG.sig).
    Sign(SignArgs),
    /// Check a config's signature and the files it reads.
    Verify(VerifyArgs),
    /// Print the id of a public key (what a signature names, and revoked_keys lists).
    KeyId {
        /// PEM public key.
        key: PathBuf,
    },
}

/// `warden config sign`.
#[derive(Args)]
pub(crate) struct SignArgs {
    /// PEM PKCS#8 private key, Ed25519 or ECDSA P-256.
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// Where to write the signature (default: CONFIG.sig).
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The config file.
    config: PathBuf,
}

/// `warden config verify`.
#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// A trusted PEM public key (repeatable); default: the config's own trusted_keys.
    #[arg(long = "trusted-key", value_name = "PUB")]
    trusted: Vec<PathBuf>,
    /// The signature (default: CONFIG.sig).
    #[arg(long, value_name = "FILE")]
    signature: Option<PathBuf>,
    /// The config file.
    config: PathBuf,
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(crate) fn run(cmd: ConfigCommand) -> ExitCode {
    match cmd {
        ConfigCommand::Sign(a) => match sign(&a) {
            Ok(out) => {
                println!("signed {} -> {}", a.config.display(), out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        ConfigCommand::Verify(a) => verify(&a),
        ConfigCommand::KeyId { key } => match std::fs::read(&key)
            .map_err(|e| e.to_string())
            .and_then(|pem| signed::public_key(&pem))
        {
            Ok((kid, _)) => {
                println!("{kid}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}: {e}", key.display());
                ExitCode::FAILURE
            }
        },
    }
}

fn sign(a: &SignArgs) -> anyhow::Result<PathBuf> {
    let pem =
        std::fs::read(&a.key).map_err(|e| anyhow::anyhow!("--key {}: {e}", a.key.display()))?;
    let key = signed::signing_key(&pem)?;
    let jws = signed::sign(&a.config, &key, now())?;
    let out = a
        .output
        .clone()
        .unwrap_or_else(|| signed::signature_path(&a.config));
    std::fs::write(&out, format!("{jws}\n"))
        .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    Ok(out)
}

fn verify(a: &VerifyArgs) -> ExitCode {
    let bytes = match std::fs::read(&a.config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {}: {e}", a.config.display());
            return ExitCode::FAILURE;
        }
    };
    let trust = match trust_for(&a.config, &bytes, &a.trusted) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match &a.signature {
        None => signed::verify(&a.config, &bytes, &trust, now()),
        Some(p) => match std::fs::read_to_string(p) {
            Ok(s) => signed::verify_signature(&a.config, &bytes, s.trim(), &trust, now()),
            Err(e) => {
                eprintln!("error: {}: {e}", p.display());
                return ExitCode::FAILURE;
            }
        },
    };
    match result {
        Ok(v) => {
            println!(
                "{}: signature by {} holds; the config and its {} files are as signed",
                a.config.display(),
                v.kid,
                v.manifest.files.len()
            );
            ExitCode::SUCCESS
        }
        Err(r) => {
            println!("{}: {r}", a.config.display());
            ExitCode::from(2)
        }
    }
}

/// `--trusted-key` files, or else the config's own `[config_signing]` keys.
fn trust_for(config: &Path, bytes: &[u8], trusted: &[PathBuf]) -> anyhow::Result<Trust> {
    if !trusted.is_empty() {
        return Trust::anchors(trusted).map_err(anyhow::Error::msg);
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{}: not UTF-8", config.display()))?;
    let cfg =
        warden_config::parse(text).map_err(|e| anyhow::anyhow!("{}:\n{e}", config.display()))?;
    let t = Trust::of_config(&cfg).map_err(anyhow::Error::msg)?;
    if t.kids().is_empty() {
        anyhow::bail!(
            "no key to check with: give --trusted-key, or list config_signing.trusted_keys"
        );
    }
    Ok(t)
}
