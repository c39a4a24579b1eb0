//! Two sidecars and an authority as separate `warden serve` processes: each sidecar gets
//! its SVID from the authority's CA with a one-time join token at start; a call into sidecar
//! A's outbound listener reaches the service behind sidecar B over mTLS, with A's SPIFFE ID
//! as the caller's identity. A sidecar whose token was already used does not start, and says
//! why.

use crate::common;

use common::{free_port, serve, wait_port};

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use serde_json::{json, Value};
use warden_test_util::client::{self, Answer};
use warden_test_util::Upstream;

const ADMIN: &str = "admin-token-0123456789abcdef";

async fn admin(port: u16, path: &str, body: Value) -> Value {
    let req = Request::post(path)
        .header("host", "authority")
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let a = client::send_h1(SocketAddr::from(([127, 0, 0, 1], port)), req).await;
    assert!(a.status < 300, "{path}: {} {:?}", a.status, a.body);
    a.json()
}

/// Registers `path` and writes a join token for it to `<dir>/<name>.token`.
async fn join_token(port: u16, dir: &Path, path: &str, name: &str) -> String {
    let e = admin(
        port,
        "/admin/workloads",
        json!({"spiffe_id": format!("spiffe://example.org{path}")}),
    )
    .await;
    let id = e["id"].as_str().unwrap();
    let t = admin(
        port,
        &format!("/admin/workloads/{id}/join-token"),
        json!({}),
    )
    .await;
    let file = dir.join(format!("{name}.token"));
    crate::common::write_secret(&file, t["token"].as_str().unwrap());
    file.to_str().unwrap().to_owned()
}

/// An authority with a CA for `example.org`, its store and secrets in `d`.
fn authority_toml(d: &Path, auth_port: u16, gw_port: u16) -> String {
    format!(
        "[reload]\nwatch = false\n[access_log]\nenabled = false\n[admin]\nenabled = false\n\
         [[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:{gw_port}\"\n\
         [authority]\nenabled = true\nlisten = \"127.0.0.1:{auth_port}\"\n\
         storage = \"{}\"\nkey_encryption_key = \"file:{}\"\nadmin_token = \"file:{}\"\n\
         [authority.ca]\ntrust_domain = \"example.org\"\n",
        d.join("authority.db").display(),
        d.join("kek").display(),
        d.join("admin").display(),
    )
}

fn sidecar_head(auth_port: u16, token_file: &str) -> String {
    format!(
        "[reload]\nwatch = false\n[access_log]\nenabled = false\n[admin]\nenabled = false\n\
         [sidecar]\nauthority = \"http://127.0.0.1:{auth_port}\"\ntrust_domain = \"example.org\"\n\
         join_token = \"file:{token_file}\"\n"
    )
}

/// Sidecar B: an inbound listener on `port` in front of `service`, allowing only A;
/// `sidecar_extra` goes into its `[sidecar]` section.
fn b_toml(
    auth_port: u16,
    token: &str,
    sidecar_extra: &str,
    port: u16,
    service: &Upstream,
) -> String {
    format!(
        "{}{sidecar_extra}[[listeners]]\nname = \"inbound\"\naddress = \"127.0.0.1:{port}\"\nrole = \"inbound\"\n\
         [[clusters]]\nname = \"local\"\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"svc\"\ncluster = \"local\"\npath_prefix = \"/\"\n\
         [routes.auth]\naccept = [\"client_cert\"]\nsubjects = [\"spiffe://example.org/a\"]\n",
        sidecar_head(auth_port, token),
        service.url()
    )
}

/// Sidecar A: an outbound listener on `port` forwarding everything to B over mTLS.
fn a_toml(auth_port: u16, token: &str, port: u16, b_port: u16) -> String {
    format!(
        "{}[[listeners]]\nname = \"outbound\"\naddress = \"127.0.0.1:{port}\"\nrole = \"outbound\"\n\
         [[clusters]]\nname = \"b\"\nendpoints = [\"https://127.0.0.1:{b_port}\"]\n\
         spiffe_ids = [\"spiffe://example.org/b\"]\n\
         [[routes]]\nname = \"to-b\"\ncluster = \"b\"\npath_prefix = \"/\"\nauth = \"none\"\n",
        sidecar_head(auth_port, token)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_get_svids_from_the_authority_and_carry_calls_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crate::common::write_secret(d.join("kek"), [3u8; 32]);
    crate::common::write_secret(d.join("admin"), ADMIN);
    let (auth_port, gw_port) = (free_port(), free_port());
    let mut authority = serve(d, "authority", &authority_toml(d, auth_port, gw_port));
    wait_port(&mut authority, auth_port, d, "authority").await;

    let service = Upstream::start("service-b").await;
    let (b_port, a_port) = (free_port(), free_port());
    let b_token = join_token(auth_port, d, "/b", "b").await;
    let mut b = serve(d, "b", &b_toml(auth_port, &b_token, "", b_port, &service));
    wait_port(&mut b, b_port, d, "b").await;
    let a_token = join_token(auth_port, d, "/a", "a").await;
    let mut a = serve(d, "a", &a_toml(auth_port, &a_token, a_port, b_port));
    wait_port(&mut a, a_port, d, "a").await;

    let res: Answer = client::get(SocketAddr::from(([127, 0, 0, 1], a_port)), "/hello").await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    let seen = service.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers["x-warden-subject"],
        "spiffe://example.org/a"
    );

    // The same token again: the second sidecar does not start, and says why.
    let again = Command::new(common::BIN)
        .args([
            "serve",
            "--allow-root",
            "--config",
            d.join("a.toml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("no workload identity"), "{stderr}");
    assert!(stderr.contains("invalid_token"), "{stderr}");
}

/// A GET through A right after B restarted: A's pooled connection to the old B died with it,
/// and a request that meets the dead connection is retried (at most three times).
async fn get_after_restart(a: SocketAddr, path: &str) -> u16 {
    let mut status = 0;
    for _ in 0..3 {
        status = client::get(a, path).await.status;
        if status == 200 {
            break;
        }
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_killed_and_restarted_keeps_its_identity_even_with_the_authority_down() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crate::common::write_secret(d.join("kek"), [3u8; 32]);
    crate::common::write_secret(d.join("admin"), ADMIN);
    let (auth_port, gw_port) = (free_port(), free_port());
    let mut authority = serve(d, "authority", &authority_toml(d, auth_port, gw_port));
    wait_port(&mut authority, auth_port, d, "authority").await;

    let service = Upstream::start("service-b").await;
    let (b_port, a_port) = (free_port(), free_port());
    let b_token = join_token(auth_port, d, "/b", "b").await;
    let state = format!("state_dir = \"{}\"\n", d.join("b-state").display());
    let b_toml = b_toml(auth_port, &b_token, &state, b_port, &service);
    let mut b = serve(d, "b", &b_toml);
    wait_port(&mut b, b_port, d, "b").await;
    let a_token = join_token(auth_port, d, "/a", "a").await;
    let mut a = serve(d, "a", &a_toml(auth_port, &a_token, a_port, b_port));
    wait_port(&mut a, a_port, d, "a").await;
    let a_addr = SocketAddr::from(([127, 0, 0, 1], a_port));
    assert_eq!(client::get(a_addr, "/one").await.status, 200);

    // kill -9 and start again with the same config: its join token is used up, so only the
    // stored SVID can bring it back.
    drop(b);
    let mut b = serve(d, "b", &b_toml);
    wait_port(&mut b, b_port, d, "b").await;
    assert_eq!(get_after_restart(a_addr, "/two").await, 200);

    // Again with the authority down: B serves with its stored SVID.
    drop(authority);
    drop(b);
    let mut b = serve(d, "b", &b_toml);
    wait_port(&mut b, b_port, d, "b").await;
    assert_eq!(get_after_restart(a_addr, "/three").await, 200);
    let log = std::fs::read_to_string(d.join("b.log")).unwrap();
    assert!(log.contains("serving with the stored SVID"), "{log}");
    // Every call that reached the service carried A's identity, verified by the restarted B.
    let seen = service.requests();
    let paths: Vec<&str> = seen.iter().map(|r| r.uri.as_str()).collect();
    assert!(
        paths.contains(&"/two") && paths.contains(&"/three"),
        "{paths:?}"
    );
    assert!(seen
        .iter()
        .all(|r| r.headers["x-warden-subject"] == "spiffe://example.org/a"));
}
