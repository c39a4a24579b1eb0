//! The Workload API on a Unix socket, driven by py-spiffe's `WorkloadApiClient`, unmodified:
//! the X.509-SVID, bundles and JWT bundles; the security header enforced; a renewal pushed
//! on the open stream. Also: the socket is only for the sidecar's user (mode 0600).

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use common::{authority, options, register};
use http_body_util::Full;
use hyper::Request;
use tokio::io::{AsyncBufReadExt, BufReader};
use warden_agent::Agent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_spiffe_gets_the_svid_and_bundles_and_sees_a_rotation_on_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (auth, cfg) = authority(dir.path()).await;
    let addr = auth.addr();
    let (_, token) = register(addr, "spiffe://example.org/web").await;
    let agent = Agent::start(options(addr, &token)).await.unwrap();

    let socket = dir.path().join("run/agent.sock");
    let _server = warden_agent::workload_api::serve(agent.clone(), &socket)
        .await
        .unwrap();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);

    let python = warden_test_util::interop::venv_python().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/interop/test_workload_api.py");
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", socket.display()),
        )
        .env("EXPECTED_SPIFFE_ID", "spiffe://example.org/web")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut jwt = None;
    let first = loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("py-spiffe printed nothing in 60 s")
            .unwrap();
        match line {
            Some(l) if l.starts_with("jwt ") => jwt = Some(l[4..].to_owned()),
            Some(l) if l.starts_with("first ") => break l,
            _ => {
                let out = child.wait_with_output().await.unwrap();
                panic!(
                    "py-spiffe failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    };
    agent.renew().await.unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(40), child.wait_with_output())
        .await
        .expect("py-spiffe did not finish")
        .unwrap();
    let mut out = Vec::new();
    while let Ok(Some(l)) = lines.next_line().await {
        out.push(l);
    }
    assert!(
        rest.status.success(),
        "py-spiffe failed ({first}, {out:?}):\n{}",
        String::from_utf8_lossy(&rest.stderr)
    );
    assert!(out.iter().any(|l| l.starts_with("rotated ")), "{out:?}");
    assert_eq!(out.last().map(String::as_str), Some("ok"));

    // The JWT-SVID the workload got is a bearer credential the gateway accepts: its JWT
    // verification against the authority's JWKS, audience `payments`, the SPIFFE ID as the
    // caller.
    let jwt = jwt.expect("py-spiffe printed its JWT-SVID");
    let up = warden_test_util::Upstream::start("payments").await;
    let toml = format!(
        "{}[[auth.jwt]]\nname = \"authority\"\nissuer = \"{}\"\naudiences = [\"payments\"]\n\
         algorithms = [\"ES256\"]\njwks_url = \"http://{addr}/oauth2/jwks\"\n{}{}",
        warden_test_util::base_toml(),
        cfg.issuer,
        warden_test_util::authcfg::cluster("c", &up),
        warden_test_util::authcfg::route(
            "pay",
            "/",
            "c",
            Some("accept = [\"jwt\"]\nsubjects = [\"spiffe://example.org/*\"]")
        ),
    );
    let gw = warden_test_util::Gateway::start(&toml).await;
    let call = |token: String| {
        let addr = gw.addr("main");
        async move {
            let req = Request::get("/pay")
                .header("host", "gw")
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            warden_test_util::client::send_h1(addr, req).await
        }
    };
    let res = call(jwt.clone()).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    assert_eq!(
        up.requests()[0].headers["x-warden-subject"],
        "spiffe://example.org/web"
    );
    // For another audience: refused.
    let other = agent.fetch_jwt_svid(&["billing".to_owned()]).await.unwrap();
    assert_eq!(call(other).await.status, 401);
}
