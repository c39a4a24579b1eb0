//! `warden vault …`: the operator's seal tasks, over HTTP to the authority's Vault API (the
//! same calls the Vault CLI makes): `init`, `unseal`, `seal`, `status`, `rotate`.
//!
//! The address comes from `--address` or `VAULT_ADDR` (default `http://127.0.0.1:8200`), the
//! token from `VAULT_TOKEN` (never from an argument, which other users can see in `ps`).
//! `unseal` reads key shares from the terminal without echo, or, when stdin is not a
//! terminal, one share per line from stdin (for scripts), until the vault is unsealed.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use warden_auth::http_client::HttpClient;
use zeroize::Zeroizing;

const TIMEOUT: Duration = Duration::from_secs(30);
const MAX_RESPONSE: usize = 1024 * 1024;

/// `warden vault` subcommands.
#[derive(Subcommand)]
pub(crate) enum VaultCommand {
    /// Initialize the vault: print the unseal key shares and the initial root token (once).
    Init {
        #[command(flatten)]
        conn: Conn,
        /// Key shares to make.
        #[arg(long, default_value_t = 5)]
        key_shares: u8,
        /// Key shares needed to unseal.
        #[arg(long, default_value_t = 3)]
        key_threshold: u8,
    },
    /// Give key shares until the vault is unsealed (from the terminal without echo, or one
    /// per line on stdin).
    Unseal {
        #[command(flatten)]
        conn: Conn,
        /// Forget the shares given so far instead.
        #[arg(long)]
        reset: bool,
    },
    /// Seal the vault (and the whole authority); needs a root token in `VAULT_TOKEN`.
    Seal {
        #[command(flatten)]
        conn: Conn,
    },
    /// Print the seal status; exits 2 while sealed (as the Vault CLI does).
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// Add a data-encryption key term (new writes use it); needs a root token in `VAULT_TOKEN`.
    Rotate {
        #[command(flatten)]
        conn: Conn,
    },
}

/// Where the authority is.
#[derive(Args)]
pub(crate) struct Conn {
    /// The authority's URL (default: `VAULT_ADDR`, else `http://127.0.0.1:8200`).
    #[arg(long)]
    address: Option<String>,
    /// CA certificates (PEM) to trust for an `https://` address (default: `VAULT_CACERT`,
    /// else the Mozilla roots).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}

struct Api {
    client: HttpClient,
    base: String,
    token: Option<Zeroizing<String>>,
}

impl Api {
    fn new(c: &Conn) -> anyhow::Result<Api> {
        let base = c
            .address
            .clone()
            .or_else(|| std::env::var("VAULT_ADDR").ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| "http://127.0.0.1:8200".into());
        let ca = c
            .ca_cert
            .clone()
            .or_else(|| std::env::var_os("VAULT_CACERT").map(PathBuf::from));
        let client =
            HttpClient::new(ca.as_deref(), Duration::from_secs(5)).map_err(|e| anyhow!(e))?;
        let token = std::env::var("VAULT_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(Zeroizing::new);
        Ok(Api {
            client,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let url = format!("{}/v1/{path}", self.base);
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("x-vault-token", t.as_str());
        }
        let bytes = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .with_context(|| format!("bad address `{url}`"))?;
        let (status, _, body) = self
            .client
            .send(req, TIMEOUT, MAX_RESPONSE)
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let v = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };
        if !status.is_success() {
            let errors = v["errors"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            bail!("{path}: {status}: {errors}");
        }
        Ok((status, v))
    }

    fn need_token(&self) -> anyhow::Result<()> {
        if self.token.is_none() {
            bail!("set VAULT_TOKEN to a root token");
        }
        Ok(())
    }
}

pub(crate) fn run(cmd: VaultCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(execute(cmd)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(cmd: VaultCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        VaultCommand::Init {
            conn,
            key_shares,
            key_threshold,
        } => {
            let api = Api::new(&conn)?;
            let (_, v) = api
                .call(
                    Method::PUT,
                    "sys/init",
                    Some(json!({ "secret_shares": key_shares, "secret_threshold": key_threshold })),
                )
                .await?;
            let keys = v["keys"].as_array().cloned().unwrap_or_default();
            let b64 = v["keys_base64"].as_array().cloned().unwrap_or_default();
            for (i, k) in keys.iter().enumerate() {
                println!(
                    "Unseal Key {}: {}",
                    i + 1,
                    b64.get(i)
                        .and_then(Value::as_str)
                        .unwrap_or(k.as_str().unwrap_or(""))
                );
            }
            println!();
            println!(
                "Initial Root Token: {}",
                v["root_token"].as_str().unwrap_or("")
            );
            println!();
            println!(
                "The vault is initialized and unsealed. After each restart, {key_threshold} of \
                 these {key_shares} key shares unseal it (`warden vault unseal`). They are shown \
                 once and stored nowhere: keep them apart."
            );
            Ok(ExitCode::SUCCESS)
        }
        VaultCommand::Unseal { conn, reset } => {
            let api = Api::new(&conn)?;
            if reset {
                let (_, v) = api
                    .call(Method::PUT, "sys/unseal", Some(json!({ "reset": true })))
                    .await?;
                print_status(&v);
                return Ok(ExitCode::SUCCESS);
            }
            let (_, mut v) = api.call(Method::GET, "sys/seal-status", None).await?;
            let tty = std::io::stdin().is_terminal();
            let mut lines = std::io::stdin().lock().lines();
            while v["sealed"].as_bool() == Some(true) {
                let share = if tty {
                    eprint!(
                        "Unseal key share ({} of {}): ",
                        v["progress"].as_u64().unwrap_or(0) + 1,
                        v["t"].as_u64().unwrap_or(0)
                    );
                    read_hidden()?
                } else {
                    match lines.next() {
                        Some(l) => Zeroizing::new(l.context("reading stdin")?),
                        None => bail!("stdin ended before the vault was unsealed"),
                    }
                };
                let share = share.trim();
                if share.is_empty() {
                    continue;
                }
                v = api
                    .call(Method::PUT, "sys/unseal", Some(json!({ "key": share })))
                    .await?
                    .1;
            }
            print_status(&v);
            Ok(ExitCode::SUCCESS)
        }
        VaultCommand::Seal { conn } => {
            let api = Api::new(&conn)?;
            api.need_token()?;
            api.call(Method::PUT, "sys/seal", None).await?;
            println!("Sealed.");
            Ok(ExitCode::SUCCESS)
        }
        VaultCommand::Status { conn } => {
            let api = Api::new(&conn)?;
            let (_, v) = api.call(Method::GET, "sys/seal-status", None).await?;
            print_status(&v);
            Ok(if v["sealed"].as_bool() == Some(false) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        VaultCommand::Rotate { conn } => {
            let api = Api::new(&conn)?;
            api.need_token()?;
            api.call(Method::PUT, "sys/rotate", None).await?;
            let (_, v) = api.call(Method::GET, "sys/key-status", None).await?;
            println!(
                "Rotated: key term {} installed {}",
                v["term"],
                v["install_time"].as_str().unwrap_or("?")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_status(v: &Value) {
    println!("Seal Type       {}", v["type"].as_str().unwrap_or("?"));
    println!("Initialized     {}", v["initialized"]);
    println!("Sealed          {}", v["sealed"]);
    println!("Total Shares    {}", v["n"]);
    println!("Threshold       {}", v["t"]);
    if v["sealed"].as_bool() == Some(true) {
        println!("Unseal Progress {}/{}", v["progress"], v["t"]);
        println!("Unseal Nonce    {}", v["nonce"].as_str().unwrap_or(""));
    }
    println!(
        "Storage Type    {}",
        v["storage_type"].as_str().unwrap_or("?")
    );
}

/// Reads a line from the terminal with echo off (`stty -echo`; restored even on error).
fn read_hidden() -> anyhow::Result<Zeroizing<String>> {
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
    };
    let off = stty("-echo").map(|s| s.success()).unwrap_or(false);
    if !off {
        bail!("cannot turn off terminal echo (stty); pipe the key shares on stdin instead");
    }
    let mut line = Zeroizing::new(String::new());
    let read = std::io::stdin().lock().read_line(&mut line);
    let _ = stty("echo");
    eprintln!();
    let _ = std::io::stderr().flush();
    read.context("reading the key share")?;
    Ok(line)
}
