//! `warden client create|update|list|rotate-secret|remove-secret|disable|enable`: manages the token
//! service's clients directly in its store (the same state the admin API changes).
//!
//! The store is named by `--config` (its `[authority]` section) or by `--storage` and `--kek`.
//! A new secret is printed once, on stdout, as JSON; only its keyed hash is stored.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use warden_authority::audit::Audit;
use warden_authority::clients::{ClientSpec, ClientUpdate, OneOrMany, Registry, TlsIdentity};
use warden_config::{parse_duration, AuthorityConfig, SecretRef};

/// Where the token service keeps its state.
#[derive(Args)]
pub(crate) struct StoreArgs {
    /// Config file whose `[authority]` section names the store and key-encryption key.
    #[arg(long, short, conflicts_with_all = ["storage", "kek"])]
    config: Option<PathBuf>,
    /// The store: a SQLite file or a `postgres://` URL.
    #[arg(long, requires = "kek")]
    storage: Option<String>,
    /// The key-encryption key: `env:NAME` or `file:PATH`.
    #[arg(long, requires = "storage")]
    kek: Option<String>,
}

/// `warden client create`.
#[derive(Args)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The client id (default: generated).
    #[arg(long)]
    client_id: Option<String>,
    /// A scope the client may be given (repeat for more).
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// An audience its tokens may name (repeat for more).
    #[arg(long = "audience", value_name = "AUD")]
    audiences: Vec<String>,
    /// An audience it may obtain by token exchange (repeat for more).
    #[arg(long = "exchange-audience", value_name = "AUD")]
    exchange_audiences: Vec<String>,
    /// A grant type: `client_credentials` (default) or
    /// `urn:ietf:params:oauth:grant-type:token-exchange` (`token-exchange` for short).
    #[arg(long = "grant", value_name = "GRANT")]
    grants: Vec<String>,
    /// `client_secret_basic` (default), `client_secret_post`, `private_key_jwt`,
    /// `tls_client_auth`; repeat (or separate with commas) to allow several, e.g.
    /// `--auth-method client_secret_basic,client_secret_post`.
    #[arg(long = "auth-method", value_name = "METHOD", value_delimiter = ',')]
    auth_methods: Vec<String>,
    /// Allow the client to introspect tokens (`/oauth2/introspect`): for resource servers and
    /// gateways. Without it, introspection answers `{"active": false}`.
    #[arg(long)]
    introspect: bool,
    /// Token lifetime (`5m`); default: the authority's `token_lifetime`.
    #[arg(long, value_name = "DURATION")]
    lifetime: Option<String>,
    /// `private_key_jwt`: a JWK set file with the client's public keys.
    #[arg(long, value_name = "FILE")]
    jwks_file: Option<PathBuf>,
    /// `private_key_jwt`: where the client publishes its keys.
    #[arg(long, value_name = "URL")]
    jwks_uri: Option<String>,
    /// `tls_client_auth`: the certificate's subject DN (`CN=billing, O=Example`).
    #[arg(long, value_name = "DN")]
    tls_subject_dn: Option<String>,
    /// `tls_client_auth`: a DNS SAN the certificate must hold.
    #[arg(long, value_name = "NAME")]
    tls_san_dns: Option<String>,
    /// `tls_client_auth`: a URI SAN (e.g. a SPIFFE ID) the certificate must hold.
    #[arg(long, value_name = "URI")]
    tls_san_uri: Option<String>,
}

/// What `warden client` does.
#[derive(Subcommand)]
pub(crate) enum ClientCommand {
    /// Register a client; for secret methods, print its first secret once (JSON on stdout).
    Create(Box<CreateArgs>),
    /// Change a client's authentication methods or introspection permission.
    Update {
        #[command(flatten)]
        store: StoreArgs,
        /// The client.
        #[arg(long)]
        client_id: String,
        /// The new authentication methods (repeat, or separate with commas); unchanged when
        /// not given.
        #[arg(long = "auth-method", value_name = "METHOD", value_delimiter = ',')]
        auth_methods: Vec<String>,
        /// Allow (`true`) or forbid (`false`) introspection; unchanged when not given.
        #[arg(long, value_name = "BOOL")]
        introspect: Option<bool>,
    },
    /// Show the clients (never secrets or hashes).
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a new secret (printed once); the old ones keep working until removed, or until
    /// `--old-expires-in` has passed.
    RotateSecret {
        #[command(flatten)]
        store: StoreArgs,
        /// The client.
        #[arg(long)]
        client_id: String,
        /// Make the existing secrets stop working after this long (`1h`).
        #[arg(long, value_name = "DURATION")]
        old_expires_in: Option<String>,
    },
    /// Remove one secret by its id (see `list`).
    RemoveSecret {
        #[command(flatten)]
        store: StoreArgs,
        /// The client.
        #[arg(long)]
        client_id: String,
        /// The secret's id.
        #[arg(long)]
        secret_id: String,
    },
    /// Disable a client: it can no longer authenticate.
    Disable {
        #[command(flatten)]
        store: StoreArgs,
        /// The client.
        #[arg(long)]
        client_id: String,
    },
    /// Enable a disabled client again.
    Enable {
        #[command(flatten)]
        store: StoreArgs,
        /// The client.
        #[arg(long)]
        client_id: String,
    },
}

/// Who the audit log records for CLI changes.
const ACTOR: &str = "cli";

/// Runs one `warden client` command; exit code 1 on any error, with the reason on stderr.
pub(crate) fn run(cmd: ClientCommand) -> ExitCode {
    block_on(execute(cmd))
}

/// Runs a CLI command's future on a one-thread runtime; exit code 1 on any error, with the
/// reason on stderr.
pub(crate) fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
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
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn authority_config(a: &StoreArgs) -> anyhow::Result<AuthorityConfig> {
    if let Some(path) = &a.config {
        let config = warden_config::load(path).map_err(|e| anyhow!("{}:\n{e}", path.display()))?;
        return Ok(config.authority);
    }
    let (Some(storage), Some(kek)) = (&a.storage, &a.kek) else {
        return Err(anyhow!(
            "name the store with --config FILE, or with --storage and --kek"
        ));
    };
    Ok(AuthorityConfig {
        storage: Some(storage.clone()),
        key_encryption_key: Some(SecretRef::parse(kek).map_err(|e| anyhow!("--kek: {e}"))?),
        ..AuthorityConfig::default()
    })
}

async fn registry(a: &StoreArgs) -> anyhow::Result<Registry> {
    let config = authority_config(a)?;
    let store = warden_authority::open_store(&config)
        .await
        .context("cannot open the authority's store")?;
    Ok(Registry::open(store.clone(), Audit::new(store)).await?)
}

pub(crate) fn secs(s: &str) -> anyhow::Result<i64> {
    Ok(parse_duration(s).map_err(|e| anyhow!(e))?.as_secs() as i64)
}

async fn execute(cmd: ClientCommand) -> anyhow::Result<()> {
    let now = unix_now();
    match cmd {
        ClientCommand::Create(args) => {
            let CreateArgs {
                store,
                client_id,
                scopes,
                audiences,
                exchange_audiences,
                grants,
                auth_methods,
                introspect,
                lifetime,
                jwks_file,
                jwks_uri,
                tls_subject_dn,
                tls_san_dns,
                tls_san_uri,
            } = *args;
            let jwks = match jwks_file {
                Some(f) => {
                    let text = std::fs::read(&f)
                        .with_context(|| format!("cannot read `{}`", f.display()))?;
                    Some(
                        serde_json::from_slice(&text)
                            .with_context(|| format!("`{}` is not JSON", f.display()))?,
                    )
                }
                None => None,
            };
            let tls = (tls_subject_dn.is_some() || tls_san_dns.is_some() || tls_san_uri.is_some())
                .then_some(TlsIdentity {
                    subject_dn: tls_subject_dn,
                    san_dns: tls_san_dns,
                    san_uri: tls_san_uri,
                });
            let spec = ClientSpec {
                client_id,
                scopes,
                audiences,
                exchange_audiences,
                grant_types: grants
                    .into_iter()
                    .map(|g| match g.as_str() {
                        "token-exchange" | "token_exchange" => {
                            warden_authority::clients::GRANT_TOKEN_EXCHANGE.to_owned()
                        }
                        _ => g,
                    })
                    .collect(),
                auth_method: (!auth_methods.is_empty()).then_some(OneOrMany::Many(auth_methods)),
                token_lifetime: lifetime.as_deref().map(secs).transpose()?,
                jwks,
                jwks_uri,
                tls,
                introspect,
            };
            let reg = registry(&store).await?;
            let (c, secret) = reg.create(spec, ACTOR, now).await?;
            let mut out = serde_json::json!({
                "client_id": c.client_id,
                "token_endpoint_auth_method": c.auth_methods.first().as_str(),
                "token_endpoint_auth_methods": c.auth_methods.names(),
                "introspect": c.introspect,
            });
            if let Some(s) = secret {
                out["client_secret"] = s.secret.as_str().into();
                out["secret_id"] = s.id.into();
                eprintln!("The secret is shown only now; store it safely.");
            }
            println!("{out}");
        }
        ClientCommand::Update {
            store,
            client_id,
            auth_methods,
            introspect,
        } => {
            let update = ClientUpdate {
                auth_method: (!auth_methods.is_empty()).then_some(OneOrMany::Many(auth_methods)),
                introspect,
            };
            let reg = registry(&store).await?;
            let (c, secret) = reg.update(&client_id, update, ACTOR, now).await?;
            let mut out = warden_authority::clients::public_view(&c);
            if let Some(s) = secret {
                out["client_secret"] = s.secret.as_str().into();
                out["secret_id"] = s.id.into();
                eprintln!("The client's first secret is shown only now; store it safely.");
            }
            println!("{out}");
        }
        ClientCommand::List { store, json } => {
            let reg = registry(&store).await?;
            let clients = reg.list().await?;
            if json {
                let v: Vec<_> = clients
                    .iter()
                    .map(warden_authority::clients::public_view)
                    .collect();
                println!("{}", serde_json::Value::from(v));
                return Ok(());
            }
            println!(
                "{:<24} {:<40} {:<8} {:<8} {:<30} AUDIENCES",
                "CLIENT_ID", "AUTH_METHODS", "STATUS", "SECRETS", "SCOPES"
            );
            for c in clients {
                let live = c
                    .secrets
                    .iter()
                    .filter(|s| s.expires.is_none_or(|e| now < e))
                    .count();
                println!(
                    "{:<24} {:<40} {:<8} {:<8} {:<30} {}",
                    c.client_id,
                    c.auth_methods.names().join(","),
                    if c.disabled { "disabled" } else { "active" },
                    live,
                    c.scopes.join(" "),
                    c.audiences.join(" ")
                );
            }
        }
        ClientCommand::RotateSecret {
            store,
            client_id,
            old_expires_in,
        } => {
            let old = old_expires_in
                .as_deref()
                .map(secs)
                .transpose()?
                .map(|s| now + s);
            let reg = registry(&store).await?;
            let s = reg.add_secret(&client_id, old, ACTOR, now).await?;
            println!(
                "{}",
                serde_json::json!({
                    "client_id": client_id,
                    "secret_id": s.id,
                    "client_secret": s.secret.as_str(),
                })
            );
            eprintln!("The secret is shown only now; the old secrets keep working until removed.");
        }
        ClientCommand::RemoveSecret {
            store,
            client_id,
            secret_id,
        } => {
            registry(&store)
                .await?
                .remove_secret(&client_id, &secret_id, ACTOR, now)
                .await?;
            println!("removed secret {secret_id} of {client_id}");
        }
        ClientCommand::Disable { store, client_id } => {
            registry(&store)
                .await?
                .set_disabled(&client_id, true, ACTOR, now)
                .await?;
            println!("disabled {client_id}");
        }
        ClientCommand::Enable { store, client_id } => {
            registry(&store)
                .await?
                .set_disabled(&client_id, false, ACTOR, now)
                .await?;
            println!("enabled {client_id}");
        }
    }
    Ok(())
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
