//! SPIFFE Federation between two trust domains, each with its own authority, as separate
//! `warden serve` processes over real sockets: each authority fetches the other's bundle
//! from its HTTPS bundle endpoint (`[[authority.ca.federation]]`) and hands it to its
//! sidecars, so a workload of `partner.org` calls one of `example.org` over mTLS, each side
//! verifying the other's SVID against that domain's roots. A third trust domain that nobody
//! federates with is refused in the handshake.

use crate::common;

use common::{free_port, log_of, serve, wait_port, Proc};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use serde_json::{json, Value};
use warden_test_util::client::{self, Answer};
use warden_test_util::{Pki, Upstream};

const ADMIN: &str = "admin-token-0123456789abcdef";

/// One trust domain's authority, serving HTTPS with a certificate of the shared web PKI.
struct Domain {
    name: &'static str,
    td: &'static str,
    port: u16,
    proc: Proc,
}

impl Domain {
    async fn start(
        d: &Path,
        pki: &Pki,
        name: &'static str,
        td: &'static str,
        port: u16,
        federates_with: &[(&str, u16)],
    ) -> Domain {
        let (cert, key) = pki.server(name, &["localhost"]);
        let mut federation = String::new();
        for (other, other_port) in federates_with {
            federation.push_str(&format!(
                "[[authority.ca.federation]]\ntrust_domain = \"{other}\"\n\
                 bundle_endpoint = \"https://localhost:{other_port}/ca/v1/bundle\"\n\
                 endpoint_ca = \"{}\"\n",
                pki.ca_file().display()
            ));
        }
        crate::common::write_secret(d.join(format!("{name}.kek")), [7u8; 32]);
        let mut proc = serve(
            d,
            name,
            &format!(
                "[reload]\nwatch = false\n[access_log]\nenabled = false\n[admin]\nenabled = false\n\
                 [[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:{}\"\n\
                 [authority]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n\
                 storage = \"{}\"\nkey_encryption_key = \"file:{}\"\nadmin_token = \"file:{}\"\n\
                 [[authority.tls.certificates]]\ncert = \"{}\"\nkey = \"file:{}\"\n\
                 [authority.ca]\ntrust_domain = \"{td}\"\n{federation}",
                free_port(),
                d.join(format!("{name}.db")).display(),
                d.join(format!("{name}.kek")).display(),
                d.join("admin").display(),
                cert.display(),
                key.display(),
            ),
        );
        wait_port(&mut proc, port, d, name).await;
        Domain {
            name,
            td,
            port,
            proc,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    async fn call(&self, pki: &Pki, req: Request<Full<Bytes>>) -> Answer {
        let tls = client::tls_config(&pki.ca_file(), None, &[]);
        client::send_tls(self.addr(), "localhost", tls, req)
            .await
            .unwrap()
    }

    async fn admin(&self, pki: &Pki, path: &str, body: Value) -> Value {
        let req = Request::post(path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let a = self.call(pki, req).await;
        assert!(a.status < 300, "{path}: {} {:?}", a.status, a.body);
        a.json()
    }

    /// Registers `path` and writes a join token for it; returns the token file.
    async fn join_token(&self, pki: &Pki, d: &Path, path: &str) -> PathBuf {
        let e = self
            .admin(
                pki,
                "/admin/workloads",
                json!({"spiffe_id": format!("spiffe://{}{path}", self.td)}),
            )
            .await;
        let id = e["id"].as_str().unwrap();
        let t = self
            .admin(pki, &format!("/admin/workloads/{id}/join-token"), json!({}))
            .await;
        let file = d.join(format!("{}{}.token", self.name, path.replace('/', "-")));
        crate::common::write_secret(&file, t["token"].as_str().unwrap());
        file
    }

    /// The trust domains whose bundles this authority serves to its workloads.
    async fn federated(&self, pki: &Pki) -> Vec<String> {
        let req = Request::get("/ca/v1/bundles/federated")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let a = self.call(pki, req).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        let v = a.json();
        v["bundles"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Waits until this authority holds `td`'s bundle (fetches retry with back-off).
    async fn wait_federated(&mut self, pki: &Pki, d: &Path, td: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.federated(pki).await.iter().any(|t| t == td) {
            if let Ok(Some(status)) = self.proc.0.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, log_of(d, self.name));
            }
            assert!(
                Instant::now() < deadline,
                "{} never fetched {td}'s bundle:\n{}",
                self.name,
                log_of(d, self.name)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn sidecar_head(&self, pki: &Pki, token: &Path) -> String {
        format!(
            "[reload]\nwatch = false\n[access_log]\nenabled = false\n[admin]\nenabled = false\n\
             [sidecar]\nauthority = \"https://localhost:{}\"\nauthority_ca = \"{}\"\n\
             trust_domain = \"{}\"\njoin_token = \"file:{}\"\n",
            self.port,
            pki.ca_file().display(),
            self.td,
            token.display()
        )
    }

    /// Starts an outbound sidecar for `path` calling `peer_port` and expecting `peer_id`.
    async fn outbound(
        &self,
        pki: &Pki,
        d: &Path,
        path: &str,
        peer_port: u16,
        peer_id: &str,
    ) -> (Proc, u16) {
        let token = self.join_token(pki, d, path).await;
        let port = free_port();
        let name = format!("{}{}", self.name, path.replace('/', "-"));
        let mut p = serve(
            d,
            &name,
            &format!(
                "{}[[listeners]]\nname = \"outbound\"\naddress = \"127.0.0.1:{port}\"\nrole = \"outbound\"\n\
                 [[clusters]]\nname = \"peer\"\nendpoints = [\"https://127.0.0.1:{peer_port}\"]\n\
                 spiffe_ids = [\"{peer_id}\"]\n\
                 [[routes]]\nname = \"to-peer\"\ncluster = \"peer\"\npath_prefix = \"/\"\nauth = \"none\"\n",
                self.sidecar_head(pki, &token)
            ),
        );
        wait_port(&mut p, port, d, &name).await;
        (p, port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_of_federated_trust_domains_call_each_other_and_strangers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crate::common::write_secret(d.join("admin"), ADMIN);
    let pki = Pki::new("web");

    // Two trust domains that federate with each other, and a stranger nobody federates
    // with. example.org names partner.org's endpoint before it listens: its fetches retry
    // until it answers.
    let (port_a, port_b) = (free_port(), free_port());
    let mut example = Domain::start(
        d,
        &pki,
        "example",
        "example.org",
        port_a,
        &[("partner.org", port_b)],
    )
    .await;
    let mut partner = Domain::start(
        d,
        &pki,
        "partner",
        "partner.org",
        port_b,
        &[("example.org", port_a)],
    )
    .await;
    example.wait_federated(&pki, d, "partner.org").await;
    partner.wait_federated(&pki, d, "example.org").await;
    assert_eq!(
        example.federated(&pki).await,
        vec!["partner.org".to_owned()]
    );
    // Operators see when each federated bundle was last fetched.
    let req = Request::get("/metrics")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let metrics = String::from_utf8(example.call(&pki, req).await.body.to_vec()).unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("warden_authority_ca_federated_bundle_fetched_timestamp_seconds{")
                && l.contains("trust_domain=\"partner.org\"")
        })
        .unwrap_or_else(|| panic!("no federation gauge in:\n{metrics}"));
    let at: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - at).abs() < 120.0, "{line}");
    let stranger = Domain::start(d, &pki, "stranger", "stranger.org", free_port(), &[]).await;

    // The service of example.org, behind its inbound sidecar, allows partner.org's caller.
    let service = Upstream::start("api").await;
    let api_token = example.join_token(&pki, d, "/api").await;
    let api_port = free_port();
    let mut api = serve(
        d,
        "api",
        &format!(
            "{}[[listeners]]\nname = \"inbound\"\naddress = \"127.0.0.1:{api_port}\"\nrole = \"inbound\"\n\
             [[clusters]]\nname = \"local\"\nendpoints = [\"{}\"]\n\
             [[routes]]\nname = \"svc\"\ncluster = \"local\"\npath_prefix = \"/\"\n\
             [routes.auth]\naccept = [\"client_cert\"]\n\
             subjects = [\"spiffe://partner.org/caller\", \"spiffe://stranger.org/caller\"]\n",
            example.sidecar_head(&pki, &api_token),
            service.url()
        ),
    );
    wait_port(&mut api, api_port, d, "api").await;

    // partner.org's caller reaches it over mTLS: each side verified the other against the
    // other domain's roots, and the service sees the caller's SPIFFE ID.
    let (_caller, caller_port) = partner
        .outbound(&pki, d, "/caller", api_port, "spiffe://example.org/api")
        .await;
    let res = client::get(SocketAddr::from(([127, 0, 0, 1], caller_port)), "/orders").await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    let seen = service.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers["x-warden-subject"],
        "spiffe://partner.org/caller"
    );

    // The same caller expecting another ID of example.org: the server's SVID is refused.
    let (_wrong, wrong_port) = partner
        .outbound(
            &pki,
            d,
            "/caller2",
            api_port,
            "spiffe://example.org/billing",
        )
        .await;
    let res = client::get(SocketAddr::from(([127, 0, 0, 1], wrong_port)), "/orders").await;
    assert!(res.status >= 500, "{} {:?}", res.status, res.body);

    // stranger.org is allowed by the route, but nobody federates with it: example.org's
    // sidecar has no bundle for it and refuses it in the handshake (and the stranger's
    // sidecar cannot verify example.org's SVID either).
    let (_s, stranger_port) = stranger
        .outbound(&pki, d, "/caller", api_port, "spiffe://example.org/api")
        .await;
    let res = client::get(SocketAddr::from(([127, 0, 0, 1], stranger_port)), "/orders").await;
    assert!(res.status >= 500, "{} {:?}", res.status, res.body);
    assert_eq!(
        service.requests().len(),
        1,
        "only the federated call got through"
    );
}
