//! `warden workload`: register, list, show, make a join token, revoke, on the store a config's
//! `[authority]` names, and clear errors without `[authority.ca]` or for a bad SPIFFE ID.

use crate::common;

use common::{json_out, warden};

fn config(dir: &std::path::Path, ca: bool) -> String {
    let kek = dir.join("kek");
    std::fs::write(&kek, [5u8; 32]).unwrap();
    let path = dir.join(if ca { "ca.toml" } else { "noca.toml" });
    let mut text = format!(
        "[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n\n[authority]\nenabled = true\nlisten = \"127.0.0.1:0\"\nstorage = {:?}\nkey_encryption_key = \"file:{}\"\n",
        dir.join("authority.db").to_str().unwrap(),
        kek.display()
    );
    if ca {
        text.push_str("\n[authority.ca]\ntrust_domain = \"example.org\"\nsvid_ttl = \"30m\"\n");
    }
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn workloads_are_registered_listed_given_join_tokens_and_revoked_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), true);
    let web = "spiffe://example.org/web";
    let v = json_out(&warden(&[
        "workload",
        "register",
        "--config",
        &cfg,
        "--spiffe-id",
        web,
        "--svid-ttl",
        "10m",
    ]));
    assert_eq!(v["spiffe_id"], web);
    assert_eq!(v["svid_ttl"], 600);
    let entry = v["id"].as_str().unwrap().to_owned();

    let list = json_out(&warden(&["workload", "list", "--config", &cfg]));
    assert_eq!(list["workloads"][0]["id"], entry.as_str());
    let shown = json_out(&warden(&["workload", "show", "--config", &cfg, web]));
    assert_eq!(shown["id"], entry.as_str());

    let tok = json_out(&warden(&[
        "workload", "token", "--config", &cfg, &entry, "--ttl", "5m",
    ]));
    assert!(tok["token"].as_str().unwrap().starts_with("wjt_"));
    assert_eq!(tok["spiffe_id"], web);

    let revoked = json_out(&warden(&["workload", "revoke", "--config", &cfg, &entry]));
    assert!(revoked["revoked_at"].is_i64());
    let refused = warden(&["workload", "token", "--config", &cfg, &entry]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("revoked"));

    let bad = warden(&[
        "workload",
        "register",
        "--config",
        &cfg,
        "--spiffe-id",
        "spiffe://Example.org/x",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("trust domain"));

    let noca = config(dir.path(), false);
    let off = warden(&["workload", "list", "--config", &noca]);
    assert!(!off.status.success());
    assert!(String::from_utf8_lossy(&off.stderr).contains("[authority.ca]"));
}
