//! `warden serve`: run from a config file until SIGTERM/SIGINT; SIGHUP reloads.

use std::path::PathBuf;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};
use warden_signed_config::Trust;

/// `serve`'s signed-configuration options.
pub(crate) struct Signing {
    /// `--trusted-config-key` files.
    pub anchors: Vec<PathBuf>,
    /// `--require-signed`.
    pub require: bool,
    /// `--config-url`, `--config-url-ca` and `--config-poll`.
    pub url: Option<(String, Option<PathBuf>, std::time::Duration)>,
}

pub(crate) async fn serve(path: PathBuf, signing: Signing) -> anyhow::Result<()> {
    // Handlers first: a SIGHUP that arrives while listeners are binding must not kill us.
    let signals = Signals::install()?;
    let mut fetcher = match &signing.url {
        None => None,
        Some((url, ca, _)) => Some(first_fetch(url, ca.as_deref(), &path, &signing).await?),
    };
    let (config, gate) = load_checked(&path, &signing)?;
    let security_log = security_log(&config)?;
    // One exporter for the process: the authority's spans and the gateway's share it.
    let tracer = warden_otel::Tracer::start(
        &config.tracing,
        warden_telemetry::metrics::ExportCounters::default(),
    )
    .map_err(anyhow::Error::msg)?;
    if tracer.enabled() {
        tracing::info!(endpoint = %config.tracing.endpoint, ratio = config.tracing.sampling_ratio, "exporting spans over OTLP");
    }
    // The authority first: a gateway that trusts it finds its keys sooner.
    let authority = if config.authority.enabled {
        let out = security_log
            .clone()
            .map(|log| (log, config.security_events.max_lines_per_second));
        let a = warden_authority::start_with_telemetry(
            &config.authority,
            out,
            tracer.clone(),
            warden_proxy::ConfigGate::pins_files(&*gate),
        )
        .await
        .map_err(|e| anyhow::anyhow!("authority: {e}"))?;
        tracing::info!(addr = %a.addr(), "authority listening");
        Some(a)
    } else {
        None
    };
    // Every config's `vault:` references are fetched before it is compiled, and watched.
    let secrets = crate::vault_secrets::VaultSecrets::new();
    let source: std::sync::Arc<dyn warden_proxy::SecretSource> = secrets.clone();
    let mut builder = warden_proxy::Builder::new(config.clone())
        .config_path(Some(path.clone()))
        .secrets(source)
        .config_gate(gate.clone())
        .tracer(tracer.clone());
    if let Some(log) = security_log.clone() {
        builder = builder.security_log(log);
    }
    if let Some(a) = &authority {
        builder = crate::console::with_authority(builder, a);
    }
    if let Some(sc) = &config.sidecar {
        builder = builder.identity(sidecar_identity(sc).await?);
    }
    let handle = builder.start().await?;
    if let (Some(fetcher), Some((_, _, every))) = (fetcher.take(), &signing.url) {
        tokio::spawn(crate::config_url::poll(
            fetcher,
            gate.clone(),
            handle.gateway().clone(),
            *every,
        ));
    }
    tokio::spawn(crate::vault_secrets::watch(
        secrets,
        handle.gateway().clone(),
    ));
    for (name, addr) in handle.listeners() {
        tracing::info!(listener = %name, %addr, "listening");
    }
    if let Some(a) = handle.admin_addr() {
        tracing::info!(addr = %a, "admin listening");
    }
    let stopped = signals.run_until_stopped(handle, authority).await;
    // What the last requests recorded, written and sent before the process ends.
    if let Some(log) = &security_log {
        log.flush(std::time::Duration::from_secs(2));
    }
    tracer.flush(std::time::Duration::from_secs(5));
    stopped
}

/// Reads the config once and, when a signature is required (trusted keys on the command line
/// or in the config, or `--require-signed`), checks it and every file it reads against its
/// signature before parsing the same bytes. Returns the config and the check every reload
/// will pass (against the keys of the config that runs).
fn load_checked(
    path: &std::path::Path,
    signing: &Signing,
) -> anyhow::Result<(warden_config::Config, std::sync::Arc<SignedConfigGate>)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow::anyhow!("{}: not UTF-8", path.display()))?;
    let config =
        warden_config::parse(text).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?;
    refuse_exposed_secrets(&config)?;
    let mut anchors = Trust::anchors(&signing.anchors).map_err(anyhow::Error::msg)?;
    if signing.require || signing.url.is_some() {
        anchors = anchors.require();
    }
    let own = Trust::of_config(&config).map_err(anyhow::Error::msg)?;
    // At start, keys from the command line are the anchor: the config's own keys cannot
    // vouch for it then (whoever edits it could add theirs), only its revocations count.
    // Without them the config's own keys check that nothing it reads was swapped.
    let at_start = if anchors.kids().is_empty() {
        anchors.and(&own)
    } else {
        anchors.and(&own.revocations())
    };
    if at_start.required() {
        match warden_signed_config::verify(path, &bytes, &at_start, crate::config_cmd::now()) {
            Ok(v) => {
                tracing::info!(kid = %v.kid, files = v.manifest.files.len(), "config signature holds")
            }
            Err(r) => {
                refused_at_start(&config, &bytes, r.reason.code(), &r.to_string());
                anyhow::bail!("refusing to start ({}): {}", r.reason.code(), r)
            }
        }
    }
    let gate = std::sync::Arc::new(SignedConfigGate {
        anchors,
        running: std::sync::Mutex::new(own),
    });
    Ok((config, gate))
}

/// A refusal to start on a config whose signature does not hold, as a security event
/// (`config.start`, `signature_refused`, with the code and the config's SHA-256), written out
/// before the process ends. Reload refusals are `config.reload` events (the proxy's gate).
fn refused_at_start(config: &warden_config::Config, bytes: &[u8], code: &str, why: &str) {
    let Ok(Some(log)) = security_log(config) else {
        return;
    };
    let events = warden_telemetry::SecurityEvents::new(Default::default(), Default::default());
    events.write_to(log.clone(), config.security_events.max_lines_per_second);
    let sha = warden_signed_config::sha256_hex(bytes);
    events.emit(&warden_telemetry::SecurityEvent {
        event: "config.start",
        reason: "signature_refused",
        detail: Some(serde_json::json!({"signature": code, "config_sha256": sha, "error": why})),
        ..Default::default()
    });
    log.flush(std::time::Duration::from_secs(2));
}

/// `--config-url`: fetches the config once before anything starts, checked against the
/// command line's keys only (a fetched config must be signed by one). When the server cannot
/// be reached or its config is refused, the local copy from an earlier fetch is used if there
/// is one.
async fn first_fetch(
    url: &str,
    ca: Option<&std::path::Path>,
    path: &std::path::Path,
    signing: &Signing,
) -> anyhow::Result<crate::config_url::ConfigUrl> {
    let anchors = Trust::anchors(&signing.anchors).map_err(anyhow::Error::msg)?;
    if anchors.kids().is_empty() {
        anyhow::bail!("--config-url needs --trusted-config-key: a fetched config must be signed by a key given here");
    }
    let mut source = crate::config_url::ConfigUrl::new(url, path, ca)?;
    let now = crate::config_cmd::now();
    let result = source
        .fetch(|p, bytes, sig| {
            warden_signed_config::verify_signature(p, bytes, sig, &anchors, now)
                .map(drop)
                .map_err(|r| (r.reason.code(), r.to_string()))
        })
        .await;
    match result {
        Ok(f) => tracing::info!(%url, fetched = ?f, "config fetched"),
        Err((reason, message)) if path.exists() => {
            tracing::warn!(%url, reason, %message, "config fetch failed; starting on the local copy");
        }
        Err((reason, message)) => {
            anyhow::bail!(
                "--config-url {url}: {reason}: {message} (and no local copy at {})",
                path.display()
            )
        }
    }
    Ok(source)
}

/// Refuses secret files other users can read or write (as OpenSSH refuses such private
/// keys), naming each with its field and mode.
pub(crate) fn refuse_exposed_secrets(config: &warden_config::Config) -> anyhow::Result<()> {
    let exposed = exposed_secrets(config);
    if exposed.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = exposed.iter().map(|l| format!("  {l}")).collect();
    anyhow::bail!(
        "refusing to start: secret files are readable or writable by other users:\n{}\n\
         make them 0600 (or 0640 for a group the service is in): chmod o-rwx FILE",
        list.join("\n")
    )
}

/// Each secret file other users may read or write, as `field: FILE has mode NNNN`.
fn exposed_secrets(config: &warden_config::Config) -> Vec<String> {
    warden_config::inputs::exposed_secrets(config)
        .iter()
        .map(|(field, path, mode)| format!("{field}: {} has mode {mode:04o}", path.display()))
        .collect()
}

/// Every reload's signature check: the command line's keys and those of the config that
/// runs (a new config cannot vouch for itself), then the new config's keys once it runs.
pub(crate) struct SignedConfigGate {
    anchors: Trust,
    running: std::sync::Mutex<Trust>,
}

impl SignedConfigGate {
    /// The command line's keys and those of the config that runs.
    fn trust(&self) -> Trust {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        self.anchors.and(&running)
    }

    fn verify(&self, path: &std::path::Path, bytes: &[u8]) -> Result<(), (&'static str, String)> {
        let trust = self.trust();
        if !trust.required() {
            return Ok(());
        }
        match warden_signed_config::verify(path, bytes, &trust, crate::config_cmd::now()) {
            Ok(v) => {
                tracing::info!(kid = %v.kid, files = v.manifest.files.len(), "config signature holds");
                Ok(())
            }
            Err(r) => Err((r.reason.code(), r.to_string())),
        }
    }
}

impl SignedConfigGate {
    /// A fetched config and its signature, checked before they are written (always: a
    /// fetched config must be signed).
    pub(crate) fn verify_signature(
        &self,
        path: &std::path::Path,
        bytes: &[u8],
        signature: &str,
    ) -> Result<(), (&'static str, String)> {
        let trust = self.trust();
        warden_signed_config::verify_signature(
            path,
            bytes,
            signature,
            &trust,
            crate::config_cmd::now(),
        )
        .map(drop)
        .map_err(|r| (r.reason.code(), r.to_string()))
    }
}

impl warden_proxy::ConfigGate for SignedConfigGate {
    fn check(&self, path: &std::path::Path, bytes: &[u8]) -> Result<(), (&'static str, String)> {
        self.verify(path, bytes)
    }
    fn applied(&self, config: &warden_config::Config) {
        match Trust::of_config(config) {
            Ok(t) => *self.running.lock().unwrap_or_else(|p| p.into_inner()) = t,
            Err(e) => {
                tracing::error!(error = %e, "the new config's signing keys cannot be read; the previous ones stay")
            }
        }
    }

    /// A reload is held to what `serve` checks at start: no secret file others can read.
    fn admit(&self, config: &warden_config::Config) -> Result<(), Vec<String>> {
        let exposed = exposed_secrets(config);
        if exposed.is_empty() {
            return Ok(());
        }
        Err(exposed
            .into_iter()
            .map(|l| format!("{l}: secret files must not be readable or writable by other users (chmod o-rwx)"))
            .collect())
    }

    fn pins_files(&self) -> bool {
        self.trust().required()
    }

    fn watched(&self, config_path: &std::path::Path) -> Vec<PathBuf> {
        vec![warden_signed_config::signature_path(config_path)]
    }
}

/// One writer for the security events of the gateway (or sidecar) and the authority, when
/// `[security_events]` is on: their lines go through one queue, never interleaved.
pub(crate) fn security_log(
    config: &warden_config::Config,
) -> anyhow::Result<Option<warden_telemetry::AccessLog>> {
    let events = &config.security_events;
    if !events.enabled {
        return Ok(None);
    }
    warden_telemetry::AccessLog::open(&events.path, Default::default())
        .map(Some)
        .with_context(|| format!("security_events.path: cannot open {}", events.path))
}

/// The sidecar's identity: the first SVID from the authority with the join token (a sidecar
/// that cannot get one does not start), then renewed by the agent.
pub(crate) async fn sidecar_identity(
    sc: &warden_config::SidecarConfig,
) -> anyhow::Result<warden_proxy::Identity> {
    use rustls_pki_types::pem::PemObject;
    let roots = match &sc.authority_ca {
        Some(path) => Some(
            rustls_pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("sidecar.authority_ca: cannot read {}", path.display()))?,
        ),
        None => None,
    };
    // With a state directory the token is only needed for the first start: a restart
    // renews the stored SVID, so an unreadable token is not fatal yet.
    let token = match sc.join_token.read() {
        Ok(t) => String::from_utf8(t.trim_ascii().to_vec())
            .map_err(|_| anyhow::anyhow!("sidecar.join_token: not UTF-8"))?,
        Err(e) if sc.state_dir.is_some() => {
            tracing::warn!(error = %e, "sidecar.join_token cannot be read; relying on the stored identity");
            String::new()
        }
        Err(e) => anyhow::bail!("sidecar.join_token: {e}"),
    };
    let opts = warden_agent::AgentOptions {
        authority: warden_agent::AuthorityClient::new(&sc.authority, roots, sc.timeout.0)
            .map_err(|e| anyhow::anyhow!("sidecar.authority: {e}"))?,
        trust_domain: warden_identity::TrustDomain::new(&sc.trust_domain)
            .map_err(|e| anyhow::anyhow!("sidecar.trust_domain: {e}"))?,
        join_token: zeroize::Zeroizing::new(token),
        renew_at: 0.5,
        state_dir: sc.state_dir.clone(),
    };
    let agent = warden_agent::Agent::start(opts)
        .await
        .map_err(|e| anyhow::anyhow!("sidecar: no workload identity: {e}"))?;
    tracing::info!(spiffe_id = %agent.current().id, "sidecar identity obtained");
    if let Some(path) = &sc.workload_api_socket {
        // The task serves until the process ends.
        drop(
            warden_agent::workload_api::serve(agent.clone(), path)
                .await
                .with_context(|| {
                    format!(
                        "sidecar.workload_api_socket: cannot listen on {}",
                        path.display()
                    )
                })?,
        );
        tracing::info!(socket = %path.display(), "SPIFFE Workload API listening");
    }
    Ok(agent)
}

/// The process signals Warden acts on.
pub(crate) struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers (from then on, these signals no longer end the process).
    pub(crate) fn install() -> anyhow::Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup()).context("installing SIGHUP handler")?,
            term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
        })
    }

    /// Waits for SIGHUP (reload) and SIGTERM/SIGINT (drain and exit).
    pub(crate) async fn run_until_stopped(
        mut self,
        handle: warden_proxy::GatewayHandle,
        authority: Option<warden_authority::AuthorityHandle>,
    ) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading config");
                    let _ = handle.reload().await;
                }
                _ = self.term.recv() => break,
                _ = self.int.recv() => break,
            }
        }
        tracing::info!("draining connections");
        handle.shutdown().await;
        if let Some(a) = authority {
            a.shutdown().await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}
