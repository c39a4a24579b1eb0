//! `warden apikey create|list|revoke`: manages the key file the gateway reads through
//! `auth.api_keys.file`.
//!
//! The file is only ever replaced whole (a temporary file in the same directory, then a
//! rename), so a gateway reloading it sees the old keys or the new ones, never half a file. A
//! file that does not parse or holds an invalid entry is refused with its path and the reason,
//! and left as it is. Two commands run at the same moment on one file can lose one's change:
//! run them one at a time (as a deploy script naturally does).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use warden_auth::apikey::{self, ApiKeyStore};
use warden_config::{ApiKeyConfig, Timestamp};

/// What `warden apikey` does.
#[derive(Subcommand)]
pub(crate) enum ApikeyCommand {
    /// Make a new key, add it to the key file (created if missing) and print it once on stdout.
    Create {
        /// The key file (`auth.api_keys.file`).
        #[arg(long)]
        file: PathBuf,
        /// Who the key belongs to; becomes the request's subject.
        #[arg(long)]
        owner: String,
        /// A scope the key grants (repeat for more).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// When the key stops working: a duration from now (`30d`, `12h`) or an RFC 3339 time
        /// (`2027-01-01T00:00:00Z`). Default: never.
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        /// An attribute, `NAME=VALUE`, visible to route rules and policies (repeat for more).
        #[arg(long = "attr", value_name = "NAME=VALUE", value_parser = parse_attr)]
        attrs: Vec<(String, String)>,
    },
    /// Show the keys in the key file: id, owner, scopes, expiry and status (never hashes).
    List {
        /// The key file (`auth.api_keys.file`).
        #[arg(long)]
        file: PathBuf,
    },
    /// Mark a key revoked; the entry stays in the file for the record.
    Revoke {
        /// The key file (`auth.api_keys.file`).
        #[arg(long)]
        file: PathBuf,
        /// The key's id (the part after `wdn_`).
        #[arg(long)]
        id: String,
    },
}

/// Runs one `warden apikey` command; exit code 1 on any error, with the reason on stderr.
pub(crate) fn run(cmd: ApikeyCommand) -> ExitCode {
    let now = unix_now();
    let result = match cmd {
        ApikeyCommand::Create {
            file,
            owner,
            scopes,
            expires,
            attrs,
        } => create(&file, &owner, scopes, expires.as_deref(), attrs, now),
        ApikeyCommand::List { file } => list(&file, now),
        ApikeyCommand::Revoke { file, id } => revoke(&file, &id),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn create(
    file: &Path,
    owner: &str,
    scopes: Vec<String>,
    expires: Option<&str>,
    attrs: Vec<(String, String)>,
    now: i64,
) -> anyhow::Result<()> {
    if owner.trim().is_empty() {
        bail!("--owner must not be empty");
    }
    if let Some(s) = scopes
        .iter()
        .find(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        bail!("--scope `{s}`: a scope is one word, without spaces");
    }
    let expires = expires.map(|s| parse_expires(s, now)).transpose()?;
    let mut attributes = BTreeMap::new();
    for (name, value) in attrs {
        if attributes.insert(name.clone(), value).is_some() {
            bail!("--attr `{name}` is given twice");
        }
    }
    let mut keys = load(file, true)?;
    let (key, entry) = loop {
        let (key, entry) =
            apikey::generate(owner, scopes.clone(), expires, attributes.clone(), now);
        // Ids are random and 10 characters long; a clash is all but impossible, but cheap to rule out.
        if keys.iter().all(|k| k.id != entry.id) {
            break (key, entry);
        }
    };
    let id = entry.id.clone();
    keys.push(entry);
    save(file, &keys)?;
    println!("{key}");
    eprintln!(
        "created key `{id}` for {} in {}; it is shown only this once",
        printable(owner),
        file.display()
    );
    Ok(())
}

fn list(file: &Path, now: i64) -> anyhow::Result<()> {
    let keys = load(file, false)?;
    let header = ["ID", "OWNER", "SCOPES", "EXPIRES", "STATUS"].map(str::to_owned);
    let rows: Vec<[String; 5]> = keys
        .iter()
        .map(|k| {
            let scopes = if k.scopes.is_empty() {
                "-".to_owned()
            } else {
                k.scopes.join(",")
            };
            [
                k.id.clone(),
                printable(&k.owner),
                printable(&scopes),
                k.expires
                    .map_or_else(|| "never".to_owned(), Timestamp::to_rfc3339),
                status(k, now).to_owned(),
            ]
        })
        .collect();
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

fn revoke(file: &Path, id: &str) -> anyhow::Result<()> {
    let mut keys = load(file, false)?;
    let Some(key) = keys.iter_mut().find(|k| k.id == id) else {
        bail!("no key with id `{}` in {}", printable(id), file.display());
    };
    if key.revoked {
        eprintln!("key `{id}` is already revoked");
        return Ok(());
    }
    key.revoked = true;
    let owner = printable(&key.owner);
    save(file, &keys)?;
    eprintln!("revoked key `{id}` of {owner} in {}", file.display());
    Ok(())
}

/// Reads and checks the key file. A missing file is an empty one when `missing_ok` (create).
fn load(file: &Path, missing_ok: bool) -> anyhow::Result<Vec<ApiKeyConfig>> {
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => bail!("cannot read {}: {e}", file.display()),
    };
    let keys = apikey::parse_key_file(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    if let Err(errors) = ApiKeyStore::from_keys(keys.clone()) {
        let lines: Vec<String> = errors
            .iter()
            .map(|(path, reason)| format!("  {path}: {reason}"))
            .collect();
        bail!(
            "{} has {} error(s); it was left as it is:\n{}",
            file.display(),
            errors.len(),
            lines.join("\n")
        );
    }
    Ok(keys)
}

/// Replaces the key file atomically: a new file beside it (mode 0600, or the old file's
/// permissions), synced, then renamed over it.
fn save(file: &Path, keys: &[ApiKeyConfig]) -> anyhow::Result<()> {
    // Write through a symlink to its target rather than replacing the link.
    let target = fs::canonicalize(file).unwrap_or_else(|_| file.to_owned());
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .with_context(|| format!("{} is not a file name", file.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = write_new(&tmp, &target, apikey::write_key_file(keys).as_bytes())
        .and_then(|()| fs::rename(&tmp, &target));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        bail!("cannot write {}: {e}", file.display());
    }
    // Make the rename itself durable; not every platform can open a directory, so best effort.
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates `tmp` (never an existing file), with `like`'s permissions when it exists, and writes
/// `bytes` to disk.
fn write_new(tmp: &Path, like: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(tmp)?;
    if let Ok(meta) = fs::metadata(like) {
        f.set_permissions(meta.permissions())?;
    }
    f.write_all(bytes)?;
    f.sync_all()
}

/// `--attr NAME=VALUE`.
fn parse_attr(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: write NAME=VALUE, e.g. tier=gold"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("`{s}`: the attribute name is empty"));
    }
    if name == "key_id" {
        return Err("`key_id` is set by Warden to the key's id".into());
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// `--expires`: a duration from now (`30d`) or an RFC 3339 time; it must be in the future.
fn parse_expires(s: &str, now: i64) -> anyhow::Result<Timestamp> {
    let at = match Timestamp::parse(s) {
        Ok(t) => t,
        Err(_) if s.starts_with(|c: char| c.is_ascii_digit()) && s.len() < 20 => {
            let d = warden_config::parse_duration(s).map_err(|e| anyhow!("--expires {e}"))?;
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            Timestamp(now.saturating_add(secs))
        }
        Err(e) => bail!("--expires {e}, or a duration such as `30d`"),
    };
    if at.0 <= now {
        bail!("--expires {s}: {} is not in the future", at.to_rfc3339());
    }
    Ok(at)
}

/// The status `list` shows; revocation wins over expiry.
fn status(k: &ApiKeyConfig, now: i64) -> &'static str {
    if k.revoked {
        "revoked"
    } else if k.expires.is_some_and(|t| now >= t.0) {
        "expired"
    } else {
        "active"
    }
}

/// Text from the file, with control characters escaped so it cannot play tricks on a terminal.
fn printable(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.escape_default().to_string()
    } else {
        s.to_owned()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn expires_takes_a_duration_or_a_time_in_the_future() {
        assert_eq!(parse_expires("30d", NOW).unwrap().0, NOW + 30 * 86_400);
        assert_eq!(
            parse_expires("2030-01-01T00:00:00Z", NOW).unwrap(),
            Timestamp::parse("2030-01-01T00:00:00Z").unwrap()
        );
        let past = parse_expires("2020-01-01T00:00:00Z", NOW).unwrap_err();
        assert!(past.to_string().contains("not in the future"), "{past}");
        assert!(parse_expires("0s", NOW).is_err());
        let bad = parse_expires("soon", NOW).unwrap_err().to_string();
        assert!(bad.contains("RFC 3339") && bad.contains("30d"), "{bad}");
        assert!(parse_expires("30x", NOW)
            .unwrap_err()
            .to_string()
            .contains("unit"));
    }

    #[test]
    fn attributes_are_name_value_pairs() {
        assert_eq!(
            parse_attr("tier=gold").unwrap(),
            ("tier".into(), "gold".into())
        );
        assert_eq!(parse_attr("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_attr("tier").is_err());
        assert!(parse_attr("=x").is_err());
        assert!(parse_attr("key_id=x").is_err());
    }
}
