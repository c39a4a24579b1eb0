//! `warden audit verify|export`: checks the authority's audit log and hands it to a SIEM.
//!
//! `verify` walks the store's hash chain (SQLite or PostgreSQL) from the genesis hash or the
//! retention checkpoint and reports the first broken link, or that it is whole; with
//! `--head FILE` it also checks a signed head kept earlier (from `GET /audit/v1/head`): its
//! signature with the store's audit key, and that the log still holds the record it names
//! with the hash it names, which is what shows that the newest records were deleted.
//! Exit codes: 0 whole, 2 broken (tampered, truncated, or a head that does not verify),
//! 1 could not check (no store, wrong key, unreadable file).
//!
//! `export` writes records as JSON lines, oldest first, each with everything its hash
//! covers, so a SIEM can store them and anyone can re-check the chain from the lines.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use serde_json::json;
use warden_authority::audit_head;
use warden_store::{Store, StoreError};

use crate::client_cmd::{authority_config, block_on, StoreArgs};

/// `warden audit …`.
#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the audit log's hash chain (and, with --head, a signed head kept earlier).
    Verify(VerifyArgs),
    /// Write audit records as JSON lines (for a SIEM), oldest first.
    Export(ExportArgs),
}

/// `warden audit verify`.
#[derive(Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A signed head kept earlier: the JSON `GET /audit/v1/head` answered, or its bare JWS.
    #[arg(long, value_name = "FILE")]
    head: Option<PathBuf>,
}

/// `warden audit export`.
#[derive(Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Only records appended at or after this time: RFC 3339 (`2026-12-05T00:00:00Z`) or a
    /// duration ago (`24h`).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only records after this seq (to resume an export: the last line's `seq`).
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    after_seq: u64,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Write here instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// What `verify` found wrong with the log (exit code 2), as opposed to an error (1).
struct Broken(String);

/// Runs one `warden audit` command.
pub(crate) fn run(cmd: AuditCommand) -> ExitCode {
    match cmd {
        AuditCommand::Verify(args) => {
            let mut broken = None;
            let code = block_on(async {
                broken = verify(args).await?.err();
                Ok(())
            });
            match broken {
                Some(Broken(why)) => {
                    eprintln!("audit log BROKEN: {why}");
                    ExitCode::from(2)
                }
                None => code,
            }
        }
        AuditCommand::Export(args) => block_on(export(args)),
    }
}

async fn open(a: &StoreArgs) -> anyhow::Result<Store> {
    let config = authority_config(a)?;
    let store = warden_authority::open_store(&config)
        .await
        .context("cannot open the authority's store")?;
    if store.is_sealed() {
        return Err(anyhow!(
            "the store is sealed (seal.mode = \"shares\"): the checkpoint and the audit key \
             need the key-encryption key, which only an unsealed authority holds"
        ));
    }
    Ok(store)
}

async fn verify(a: VerifyArgs) -> anyhow::Result<Result<(), Broken>> {
    let store = open(&a.store).await?;
    // Read the kept head first: a file that cannot be read is an error before any work.
    let head = match &a.head {
        None => None,
        Some(path) => {
            let text = read_bounded(path, audit_head::MAX_HEAD_BYTES)?;
            let jws =
                audit_head::parse_saved(&text).map_err(|e| anyhow!("`{}`: {e}", path.display()))?;
            Some((path, jws))
        }
    };
    let records = match store.verify_audit().await {
        Ok(n) => n,
        Err(StoreError::Corrupt(why)) => return Ok(Err(Broken(why))),
        Err(e) => return Err(anyhow!(e).context("cannot read the audit log")),
    };
    let (_, head_hash) = store.audit_head().await?;
    println!("audit log whole: {records} records, head {head_hash}");
    let Some((path, jws)) = head else {
        return Ok(Ok(()));
    };
    let Some(key) = audit_head::stored_public_jwk(&store).await? else {
        return Ok(Err(Broken(format!(
            "`{}`: this store has no audit key, so no authority on it ever signed a head",
            path.display()
        ))));
    };
    let claims = match audit_head::verify(&jws, &key) {
        Ok(c) => c,
        Err(why) => {
            return Ok(Err(Broken(format!(
                "the signed head in `{}` does not verify: {why}",
                path.display()
            ))))
        }
    };
    let signed = warden_telemetry::format_time(
        UNIX_EPOCH + Duration::from_secs(u64::try_from(claims.iat).unwrap_or(0)),
    );
    match store.audit_holds_head(claims.seq, &claims.hash).await {
        Ok(true) => {
            println!(
                "signed head of {signed} (record {}) holds: the log still has it, and grew by \
                 {} records since",
                claims.seq,
                records.saturating_sub(claims.seq)
            );
            Ok(Ok(()))
        }
        Ok(false) => {
            println!(
                "signed head of {signed} (record {}) not checked: retention has pruned that \
                 record (the checkpoint is past it)",
                claims.seq
            );
            Ok(Ok(()))
        }
        Err(StoreError::Corrupt(why)) => Ok(Err(Broken(format!(
            "against the signed head of {signed}: {why}"
        )))),
        Err(e) => Err(anyhow!(e).context("cannot read the audit log")),
    }
}

async fn export(a: ExportArgs) -> anyhow::Result<()> {
    let since_ms = match &a.since {
        None => None,
        Some(s) => Some(parse_since(s).map_err(|e| anyhow!("--since: {e}"))?),
    };
    let store = open(&a.store).await?;
    let mut out: Box<dyn Write> = match &a.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create `{}`", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let limit = a.limit.unwrap_or(u64::MAX);
    let mut after = a.after_seq;
    let mut written = 0u64;
    'pages: while written < limit {
        let page = store
            .audit_since(after, warden_store::MAX_AUDIT_PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for rec in &page {
            if since_ms.is_some_and(|s| rec.time < s) {
                continue;
            }
            let time = warden_telemetry::format_time(
                UNIX_EPOCH + Duration::from_millis(u64::try_from(rec.time).unwrap_or(0)),
            );
            let line = json!({
                "seq": rec.seq,
                "time": time,
                "time_ms": rec.time,
                "component": rec.event.component,
                "action": rec.event.action,
                "actor": rec.event.actor,
                "subject": rec.event.subject,
                "outcome": rec.event.outcome,
                "detail": rec.event.detail,
                "source": rec.event.source,
                "prev_hash": rec.prev_hash,
                "hash": rec.hash,
            });
            writeln!(out, "{line}").context("cannot write the export")?;
            written += 1;
            if written >= limit {
                break 'pages;
            }
        }
    }
    out.flush().context("cannot write the export")?;
    if a.output.is_some() {
        eprintln!("exported {written} records (last seq {after})");
    }
    Ok(())
}

/// `--since`: RFC 3339, or a duration before now. Unix milliseconds.
fn parse_since(s: &str) -> Result<i64, String> {
    if let Some(ms) = warden_telemetry::parse_time(s) {
        return Ok(ms);
    }
    let ago = warden_config::parse_duration(s).map_err(|_| {
        format!("`{s}` is neither an RFC 3339 time (2026-12-05T00:00:00Z) nor a duration (24h)")
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Ok(i64::try_from(now.saturating_sub(ago).as_millis()).unwrap_or(i64::MAX))
}

/// A small file's text, refused when larger than `max` bytes.
fn read_bounded(path: &std::path::Path, max: usize) -> anyhow::Result<String> {
    use std::io::Read;
    let f =
        std::fs::File::open(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let mut text = String::new();
    f.take(max as u64 + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    if text.len() > max {
        return Err(anyhow!(
            "`{}` is larger than a signed head ({max} bytes at most)",
            path.display()
        ));
    }
    Ok(text)
}
