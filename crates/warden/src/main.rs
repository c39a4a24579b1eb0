//! The `warden` binary: parses the command line and hands over to the crates that do the work.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the request paths allocate many small, short-lived
/// objects (headers, JSON values), where glibc's allocator measured about a fifth of the
/// vault's CPU time under load (`bench/vault.sh`, `perf`). Built with `no_thp`: mimalloc
/// otherwise asks for transparent huge pages on its arenas, and a sidecar's few MiB of heap
/// then sat in 2 MiB pages, 10 of its 11 MiB of anonymous memory (`bench/sidecar.sh`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod apikey_cmd;
mod audit_cmd;
mod client_cmd;
mod config_cmd;
mod config_url;
mod console;
mod dev;
mod serve;
mod vault_cmd;
mod vault_secrets;
mod workload_cmd;

/// Warden: a security plane for microservices (gateway, sidecar, authority) in one binary.
#[derive(Parser)]
#[command(name = "warden", version, about, disable_version_flag = false)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the roles the config enables.
    Serve {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Run even as root. Warden needs no privilege beyond binding its ports: run it as
        /// a user of its own (with CAP_NET_BIND_SERVICE for ports below 1024).
        #[arg(long)]
        allow_root: bool,
        /// A public key (PEM) that may sign the config (repeatable): the config and every
        /// file it reads must carry a signature by one of these, at start and on reload.
        #[arg(long = "trusted-config-key", value_name = "PUB")]
        trusted_config_keys: Vec<PathBuf>,
        /// Refuse an unsigned config even without trusted keys given here (the config's
        /// [config_signing] keys then decide).
        #[arg(long)]
        require_signed: bool,
        /// Take the config from this https:// URL (its signature from URL.sig), written over
        /// --config when it is new and verified; needs --trusted-config-key.
        #[arg(long, value_name = "URL")]
        config_url: Option<String>,
        /// CA certificates (PEM) for --config-url (default: the Mozilla roots).
        #[arg(long, value_name = "FILE")]
        config_url_ca: Option<PathBuf>,
        /// How often --config-url is polled.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = warden_config::parse_duration)]
        config_poll: std::time::Duration,
    },
    /// Validate a config file: print every error with its field path, exit 1 if any.
    Check {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run every role on this machine with safe demo defaults, and print how to use it.
    Dev {
        /// Where to keep generated keys, certificates and config (default: a new temp dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The vault's root token (default: the one from an earlier run with this data dir,
        /// else a new one).
        #[arg(long)]
        root_token: Option<String>,
    },
    /// Manage API keys in a key file (`auth.api_keys.file`).
    Apikey {
        #[command(subcommand)]
        command: apikey_cmd::ApikeyCommand,
    },
    /// Manage the token service's clients in its store (`[authority]`).
    Client {
        #[command(subcommand)]
        command: client_cmd::ClientCommand,
    },
    /// Manage the certificate authority's workload registrations (`[authority.ca]`).
    Workload {
        #[command(subcommand)]
        command: workload_cmd::WorkloadCommand,
    },
    /// Operate the authority's vault over HTTP: init, unseal, seal, status, rotate.
    Vault {
        #[command(subcommand)]
        command: vault_cmd::VaultCommand,
    },
    /// Check the authority's audit log (hash chain, signed heads) and export it for a SIEM.
    Audit {
        #[command(subcommand)]
        command: audit_cmd::AuditCommand,
    },
    /// Sign configs and check their signatures.
    Config {
        #[command(subcommand)]
        command: config_cmd::ConfigCommand,
    },
    /// Print the version; with `--json`, what the binary was built from.
    Version {
        /// Version, git revision, build profile, compiler, target, features and the number
        /// of crates from the registry, as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version { json: false } => {
            println!("warden {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Version { json: true } => {
            println!("{:#}", build_info());
            ExitCode::SUCCESS
        }
        Command::Check { config } => check(&config),
        Command::Serve {
            config,
            allow_root,
            trusted_config_keys,
            require_signed,
            config_url,
            config_url_ca,
            config_poll,
        } => {
            if !allow_root && effective_uid() == Some(0) {
                eprintln!(
                    "error: refusing to run as root: a compromised process would own the \
                     machine, and Warden needs no privilege beyond binding its ports. Run it \
                     as a user of its own (systemd: DynamicUser=yes; for ports below 1024 \
                     grant CAP_NET_BIND_SERVICE), or pass --allow-root to run as root anyway"
                );
                return ExitCode::FAILURE;
            }
            run(serve::serve(
                config,
                serve::Signing {
                    anchors: trusted_config_keys,
                    require: require_signed,
                    url: config_url.map(|u| (u, config_url_ca, config_poll)),
                },
            ))
        }
        Command::Dev {
            data_dir,
            root_token,
        } => run(dev::dev(data_dir, root_token)),
        Command::Apikey { command } => apikey_cmd::run(command),
        Command::Audit { command } => audit_cmd::run(command),
        Command::Client { command } => client_cmd::run(command),
        Command::Config { command } => config_cmd::run(command),
        Command::Vault { command } => vault_cmd::run(command),
        Command::Workload { command } => workload_cmd::run(command),
    }
}

/// This process's effective user id (Linux: the second `Uid:` field of `/proc/self/status`),
/// or `None` where that cannot be read.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// What `warden version --json` prints (set by `build.rs`).
fn build_info() -> serde_json::Value {
    let features: Vec<&str> = env!("WARDEN_FEATURES")
        .split(',')
        .filter(|f| !f.is_empty())
        .collect();
    serde_json::json!({
        "name": "warden",
        "version": env!("CARGO_PKG_VERSION"),
        "git_revision": env!("WARDEN_GIT_REVISION"),
        "profile": env!("WARDEN_BUILD_PROFILE"),
        "rustc": env!("WARDEN_RUSTC_VERSION"),
        "target": env!("WARDEN_TARGET"),
        "features": features,
        "dependencies": env!("WARDEN_REGISTRY_CRATES").parse::<u64>().unwrap_or(0),
    })
}

fn run(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    warden_telemetry::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let config = match warden_config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{} has {} error(s):", path.display(), errors.0.len());
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    // Compiling needs a runtime context (clients are built on it); nothing is bound.
    let compiled = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            vec![warden_proxy::CompileError {
                path: "(runtime)".into(),
                reason: e.to_string(),
            }]
        })
        .and_then(|rt| {
            rt.block_on(async {
                // `vault:` references are fetched, so check also shows they resolve.
                let secrets = vault_secrets::VaultSecrets::new().fetch(&config).await?;
                warden_proxy::check_with(config, secrets)
            })
        });
    match compiled {
        Ok(()) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{} has {} error(s):", path.display(), errors.len());
            for e in &errors {
                eprintln!("  {e}");
            }
            ExitCode::FAILURE
        }
    }
}
