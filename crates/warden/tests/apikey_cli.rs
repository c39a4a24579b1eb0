//! `warden apikey create|list|revoke` as an operator runs it: keys printed once, a list that
//! never shows a hash or secret, revocation that keeps the entry, and a broken file refused
//! and left untouched.

use std::path::Path;
use std::process::{Command, Output};

use warden_auth::apikey::{parse_key_file, split_key, ApiKeyError, ApiKeyStore};

const BIN: &str = env!("CARGO_BIN_EXE_warden");

fn warden(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run warden")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Runs `warden apikey create` and returns the key it printed.
fn create(file: &Path, extra: &[&str]) -> String {
    let mut args = vec!["apikey", "create", "--file", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = warden(&args);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout is the key alone: {stdout:?}");
    let (id, _) = split_key(lines[0]).expect("a wdn_<id>_<secret> key");
    assert!(text(&out.stderr).contains(id), "{}", text(&out.stderr));
    lines[0].to_owned()
}

fn list(file: &Path) -> String {
    let out = warden(&["apikey", "list", "--file", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    text(&out.stdout)
}

fn store(file: &Path) -> ApiKeyStore {
    let keys = parse_key_file(&std::fs::read_to_string(file).unwrap()).expect("key file parses");
    ApiKeyStore::from_keys(keys).expect("key file is valid")
}

/// The line of `list` output for a key id.
fn row<'a>(listing: &'a str, id: &str) -> &'a str {
    listing
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("no row for {id} in\n{listing}"))
}

#[test]
fn create_list_revoke_and_the_gateway_store_agree() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    let gold = create(
        &file,
        &[
            "--owner",
            "billing",
            "--scope",
            "read",
            "--scope",
            "write",
            "--expires",
            "30d",
            "--attr",
            "tier=gold",
        ],
    );
    let ops = create(
        &file,
        &["--owner", "ops", "--expires", "2999-01-01T00:00:00Z"],
    );
    let (gold_id, gold_secret) = split_key(&gold).unwrap();
    let (ops_id, ops_secret) = split_key(&ops).unwrap();
    assert_ne!(gold_id, ops_id);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    }
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(stored.starts_with("# Warden API keys. Managed by `warden apikey"));
    assert!(!stored.contains(gold_secret) && !stored.contains(ops_secret));

    let listing = list(&file);
    assert!(listing.starts_with("ID "), "{listing}");
    let gold_row = row(&listing, gold_id);
    assert!(
        gold_row.contains("billing") && gold_row.contains("read,write"),
        "{gold_row}"
    );
    assert!(gold_row.ends_with("active"), "{gold_row}");
    let ops_row = row(&listing, ops_id);
    assert!(
        ops_row.contains("ops") && ops_row.contains("2999-01-01T00:00:00Z"),
        "{ops_row}"
    );
    assert!(ops_row.ends_with("active"), "{ops_row}");
    assert!(!listing.contains("sha256"), "{listing}");
    assert!(!listing.contains(gold_secret) && !listing.contains(ops_secret));

    let who = store(&file)
        .verify(&gold, now())
        .expect("printed key verifies");
    assert_eq!(who.subject, "billing");
    assert_eq!(who.scopes, ["read", "write"]);
    assert_eq!(who.claims["tier"], "gold");
    let expires = who.expires_at.expect("30d expiry");
    assert!((expires - now() - 30 * 86_400).abs() < 120, "{expires}");

    let out = warden(&[
        "apikey",
        "revoke",
        "--file",
        file.to_str().unwrap(),
        "--id",
        ops_id,
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));

    let listing = list(&file);
    assert!(row(&listing, ops_id).ends_with("revoked"), "{listing}");
    assert!(row(&listing, gold_id).ends_with("active"), "{listing}");

    let store = store(&file);
    assert_eq!(store.len(), 2, "the revoked entry is kept");
    assert_eq!(store.verify(&ops, now()), Err(ApiKeyError::Revoked));
    assert_eq!(store.verify(&gold, now()).unwrap().subject, "billing");
}

#[test]
fn revoke_of_an_unknown_id_exits_1_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    create(&file, &["--owner", "a"]);
    let before = std::fs::read(&file).unwrap();
    let out = warden(&[
        "apikey",
        "revoke",
        "--file",
        file.to_str().unwrap(),
        "--id",
        "nosuchkey1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nosuchkey1"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn an_invalid_key_file_is_refused_with_its_path_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    let path = file.to_str().unwrap();
    let broken = "[[keys]]\nid = \"abcd1234\"\nowner = \"x\"\nhash = \"md5:00\"\n";
    std::fs::write(&file, broken).unwrap();
    for args in [
        &["apikey", "create", "--file", path, "--owner", "a"][..],
        &["apikey", "list", "--file", path],
        &["apikey", "revoke", "--file", path, "--id", "abcd1234"],
    ] {
        let out = warden(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains(path) && err.contains("[[keys]][0].hash"),
            "{err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    }
    std::fs::write(&file, "[[keys]\n").unwrap();
    let out = warden(&["apikey", "create", "--file", path, "--owner", "a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("{path}: line 1")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "[[keys]\n");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file left behind: {names:?}");

    let missing = dir.path().join("missing.toml");
    let out = warden(&["apikey", "list", "--file", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("missing.toml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_options_are_refused_before_the_file_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    let path = file.to_str().unwrap();
    for (args, says) in [
        (
            &["--owner", "a", "--expires", "2001-01-01T00:00:00Z"][..],
            "not in the future",
        ),
        (&["--owner", "a", "--expires", "soon"], "--expires"),
        (&["--owner", " "], "--owner"),
        (&["--owner", "a", "--scope", "two words"], "--scope"),
    ] {
        let mut all = vec!["apikey", "create", "--file", path];
        all.extend_from_slice(args);
        let out = warden(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = warden(&[
        "apikey", "create", "--file", path, "--owner", "a", "--attr", "tier",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a usage error: {}",
        text(&out.stderr)
    );
    assert!(!file.exists());
}
