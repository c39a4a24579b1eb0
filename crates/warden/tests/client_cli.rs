//! `warden client`: several authentication methods and the introspection permission, set at
//! creation and changed later, on a store named by `--storage` and `--kek` (issue 15, items 10
//! and 12).

use crate::common;

use common::{json_out, warden};

#[test]
fn client_create_and_update_take_several_methods_and_introspect() {
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("kek");
    std::fs::write(&kek, [9u8; 32]).unwrap();
    let db = dir.path().join("authority.db");
    let store = [
        "--storage",
        db.to_str().unwrap(),
        "--kek",
        &format!("file:{}", kek.display()),
    ];
    let mut args = vec!["client", "create"];
    args.extend(store);
    args.extend([
        "--client-id",
        "rs",
        "--audience",
        "api",
        "--auth-method",
        "client_secret_basic,client_secret_post",
        "--introspect",
    ]);
    let v = json_out(&warden(&args));
    assert_eq!(
        v["token_endpoint_auth_methods"],
        serde_json::json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(v["introspect"], true);
    assert!(v["client_secret"].as_str().is_some_and(|s| s.len() > 20));

    let mut args = vec!["client", "update"];
    args.extend(store);
    args.extend([
        "--client-id",
        "rs",
        "--auth-method",
        "client_secret_post",
        "--introspect",
        "false",
    ]);
    let v = json_out(&warden(&args));
    assert_eq!(
        v["token_endpoint_auth_methods"],
        serde_json::json!(["client_secret_post"])
    );
    assert_eq!(v["introspect"], false);

    // An unknown method is refused with the reason.
    let mut args = vec!["client", "update"];
    args.extend(store);
    args.extend(["--client-id", "rs", "--auth-method", "password"]);
    let o = warden(&args);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("auth method `password`"));
}

/// A PostgreSQL store whose server wants a password takes it from `PGPASSWORD` (the URL holds
/// none: validation refuses one there). A throwaway cluster with SCRAM authentication, made
/// with the server's own `initdb` as the `postgres` user; skipped where that cannot be done.
#[test]
fn a_postgres_store_takes_its_password_from_pgpassword() {
    use std::process::Command;
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(Result::ok)
        .map(|e| e.path().join("bin"));
    let is_root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    let Some(bin) = bin.filter(|b| b.join("initdb").exists() && is_root) else {
        eprintln!("skipped: needs root and PostgreSQL's initdb (Debian's postgresql package)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let su = |cmd: String| {
        let o = Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c", &cmd])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    std::fs::write(d.join("pw"), "pw-from-env-0123\n").unwrap();
    Command::new("chown")
        .args(["-R", "postgres", d.to_str().unwrap()])
        .status()
        .unwrap();
    Command::new("chmod")
        .args(["755", d.to_str().unwrap()])
        .status()
        .unwrap();
    su(format!(
        "{}/initdb -D {}/data -U warden --pwfile={}/pw --auth=scram-sha-256 >/dev/null",
        bin.display(),
        d.display(),
        d.display()
    ));
    let port = common::free_port();
    su(format!(
        "{}/pg_ctl -D {}/data -o '-p {port} -k {}' -l {}/log -w start >/dev/null",
        bin.display(),
        d.display(),
        d.display(),
        d.display()
    ));
    struct Stop(String);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("su")
                .args(["postgres", "-s", "/bin/sh", "-c", &self.0])
                .output();
        }
    }
    let _stop = Stop(format!(
        "{}/pg_ctl -D {}/data -m immediate stop",
        bin.display(),
        d.display()
    ));
    let kek = d.join("kek");
    std::fs::write(&kek, [5u8; 32]).unwrap();
    let url = format!("postgres://warden@127.0.0.1:{port}/postgres");
    let create = |pw: &str, id: &str| {
        Command::new(common::BIN)
            .args(["client", "create", "--storage", &url, "--kek"])
            .arg(format!("file:{}", kek.display()))
            .args(["--client-id", id, "--audience", "api"])
            .env("PGPASSWORD", pw)
            .output()
            .unwrap()
    };
    let wrong = create("not-the-password", "a");
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let right = create("pw-from-env-0123", "b");
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    assert_eq!(json_out(&right)["client_id"], "b");
}
