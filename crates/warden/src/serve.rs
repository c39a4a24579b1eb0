//! `warden serve`: run from a config file until SIGTERM/SIGINT; SIGHUP reloads.

use std::path::PathBuf;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

pub(crate) async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = warden_config::load(&path).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?;
    let handle = warden_proxy::start(config, Some(path.clone())).await?;
    for (name, addr) in handle.listeners() {
        tracing::info!(listener = %name, %addr, "listening");
    }
    if let Some(a) = handle.admin_addr() {
        tracing::info!(%a, "admin listening");
    }
    run_until_signalled(handle).await
}

/// Waits for SIGHUP (reload) and SIGTERM/SIGINT (drain and exit).
pub(crate) async fn run_until_signalled(handle: warden_proxy::GatewayHandle) -> anyhow::Result<()> {
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading config");
                let _ = handle.reload().await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("draining connections");
    handle.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
