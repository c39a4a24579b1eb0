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
