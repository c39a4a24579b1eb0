//! `warden workload register|list|show|revoke|token`: manages the certificate authority's
//! workload registrations (`[authority.ca]`) directly in the authority's store, as the admin
//! API's `/admin/workloads` does. A join token is printed once, as JSON on stdout.

use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Subcommand;
use serde_json::json;
use warden_ca::Ca;

use crate::client_cmd::{authority_config, secs, unix_now, StoreArgs};

/// `warden workload ...`.
#[derive(Subcommand)]
pub(crate) enum WorkloadCommand {
    /// Register a SPIFFE ID a workload may obtain.
    Register {
        #[command(flatten)]
        store: StoreArgs,
        /// The SPIFFE ID (`spiffe://<trust domain>/...`).
        #[arg(long)]
        spiffe_id: String,
        /// The SVID lifetime for this workload (`30m`); default: `authority.ca.svid_ttl`.
        #[arg(long, value_name = "DURATION")]
        svid_ttl: Option<String>,
    },
    /// List the registrations.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show one registration (by entry id or SPIFFE ID).
    Show {
        #[command(flatten)]
        store: StoreArgs,
        /// Entry id or SPIFFE ID.
        id: String,
    },
    /// Revoke a registration: no join token and no renewal from now on.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        /// Entry id or SPIFFE ID.
        id: String,
    },
    /// Make a one-time join token for a registration (printed once).
    Token {
        #[command(flatten)]
        store: StoreArgs,
        /// Entry id or SPIFFE ID.
        id: String,
        /// How long it works (`10m`); default: `authority.ca.join_token_ttl`.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },
}

/// Who the audit log records for CLI changes.
const ACTOR: &str = "cli";

async fn ca(store: &StoreArgs) -> anyhow::Result<std::sync::Arc<Ca>> {
    let config = authority_config(store)?;
    let ca_config = config.ca.as_ref().ok_or_else(|| {
        anyhow!("the config has no [authority.ca] section: the certificate authority is off")
    })?;
    let settings = ca_config
        .settings()
        .map_err(|(field, why)| anyhow!("{field}: {why}"))?;
    let store = warden_authority::open_store(&config)
        .await
        .context("cannot open the authority's store")?;
    Ok(Ca::open(store, settings, unix_now()).await?)
}

fn print(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn execute(cmd: WorkloadCommand) -> anyhow::Result<()> {
    let now = unix_now();
    match cmd {
        WorkloadCommand::Register {
            store,
            spiffe_id,
            svid_ttl,
        } => {
            let ttl = svid_ttl.as_deref().map(secs).transpose()?;
            let entry = ca(&store)
                .await?
                .register(&spiffe_id, ttl, now, ACTOR, None)
                .await?;
            print(&entry)
        }
        WorkloadCommand::List { store } => {
            print(&json!({ "workloads": ca(&store).await?.list().await? }))
        }
        WorkloadCommand::Show { store, id } => print(&ca(&store).await?.get(&id).await?),
        WorkloadCommand::Revoke { store, id } => {
            print(&ca(&store).await?.revoke(&id, now, ACTOR, None).await?)
        }
        WorkloadCommand::Token { store, id, ttl } => {
            let ttl = ttl.as_deref().map(secs).transpose()?;
            print(
                &ca(&store)
                    .await?
                    .join_token(&id, ttl, now, ACTOR, None)
                    .await?,
            )
        }
    }
}

/// Runs one `warden workload` command; exit code 1 on any error, with the reason on stderr.
pub(crate) fn run(cmd: WorkloadCommand) -> ExitCode {
    crate::client_cmd::block_on(execute(cmd))
}
