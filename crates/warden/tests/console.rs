//! The admin console in a real browser (issue 13): a `warden serve` process with the gateway,
//! the authority and its CA, the admin listener behind `admin.token`, and some traffic; then
//! `scripts/interop/test_console.py` drives Debian's Chromium through every page with
//! Playwright (the token prompt, each page's content, a refused request arriving live on the
//! Events page, no console error, no CSP violation) and saves a screenshot of each page.
//!
//! The screenshots go to a temporary directory, or to `WARDEN_CONSOLE_SCREENSHOTS` (relative
//! to the repository) when it is set: `scripts/console-screenshots.sh` regenerates
//! `docs/console/` that way. Chromium comes from Debian (`scripts/test` installs it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use warden_test_util::Upstream;

use crate::common::{free_port, send, serve, wait_port, write_secret};

const ADMIN_TOKEN: &str = "console-admin-token-0123456789abcdef";
const AUTHORITY_ADMIN: &str = "console-authority-admin-0123456789";
const CHROMIUM: &str = "/usr/bin/chromium";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `GET path` on the admin listener with the admin token, as JSON.
async fn admin_json(admin: SocketAddr, path: &str) -> Value {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let a = send(admin, "GET", path, &[("authorization", &bearer)], "").await;
    assert_eq!(a.status, 200, "{path}: {:?}", a.body);
    a.json()
}

/// A client of the authority with scope `api:read`, and a token for it.
async fn token(authority: SocketAddr) -> String {
    let admin = format!("Bearer {AUTHORITY_ADMIN}");
    let created = send(
        authority,
        "POST",
        "/admin/clients",
        &[
            ("authorization", &admin),
            ("content-type", "application/json"),
        ],
        &json!({"client_id": "billing", "audiences": ["api"], "scopes": ["api:read"],
                "grant_types": ["client_credentials"]})
        .to_string(),
    )
    .await;
    assert!(created.status < 300, "{:?}", created.body);
    let secret = created.json()["client_secret"].as_str().unwrap().to_owned();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("billing:{secret}"))
    );
    let issued = send(
        authority,
        "POST",
        "/oauth2/token",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &basic),
        ],
        "grant_type=client_credentials&scope=api:read",
    )
    .await;
    assert_eq!(issued.status, 200, "{:?}", issued.body);
    issued.json()["access_token"].as_str().unwrap().to_owned()
}

/// Until `/api/` accepts the token (the gateway fetches the authority's JWKS at start).
async fn until_accepted(gw: SocketAddr, auth: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let a = send(gw, "GET", "/api/orders", &[("authorization", auth)], "").await;
        if a.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the token is still refused: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn config(d: &Path, up: &Upstream, ports: [u16; 3]) -> String {
    let [gw, admin, authority] = ports;
    format!(
        "[admin]\naddress = \"127.0.0.1:{admin}\"\ntoken = \"file:{d}/admin-token\"\n\
         [access_log]\nenabled = false\n[reload]\nwatch = false\n\
         [security_events]\npath = \"{d}/events.jsonl\"\n\
         [[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:{gw}\"\n\
         [authority]\nenabled = true\nlisten = \"127.0.0.1:{authority}\"\n\
         issuer = \"http://127.0.0.1:{authority}\"\ndata_dir = \"{d}\"\n\
         storage = \"{d}/authority.db\"\nkey_encryption_key = \"file:{d}/authority.kek\"\n\
         admin_token = \"file:{d}/authority-admin\"\n\
         [authority.ca]\ntrust_domain = \"example.org\"\n\
         [[auth.jwt]]\nname = \"authority\"\nissuer = \"http://127.0.0.1:{authority}\"\n\
         audiences = [\"api\"]\nalgorithms = [\"ES256\"]\n\
         jwks_url = \"http://127.0.0.1:{authority}/oauth2/jwks\"\n\
         [auth.policies]\nfiles = [\"{d}/policy.cedar\"]\n\
         [[clusters]]\nname = \"orders\"\nendpoints = [\"{up}\"]\n\
         [[routes]]\nname = \"public\"\nauth = \"none\"\ncluster = \"orders\"\npath_prefix = \"/public/\"\n\
         [[routes]]\nname = \"api\"\ncluster = \"orders\"\npath_prefix = \"/api/\"\n\
         [routes.auth]\naccept = [\"jwt:authority\"]\nscopes_all = [\"api:read\"]\npolicy = true\n\
         [[routes.rate_limits]]\nkey = \"subject\"\nrequests = 50\nper = \"1s\"\nburst = 100\n",
        d = d.display(),
        up = up.url(),
    )
}

#[tokio::test]
async fn the_console_loads_every_page_in_chromium_and_shows_a_refused_request_live() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is needed for the console's browser test: `apt-get install chromium` \
         (scripts/test installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_secret(d.join("admin-token"), ADMIN_TOKEN);
    write_secret(d.join("authority-admin"), AUTHORITY_ADMIN);
    write_secret(
        d.join("authority.kek"),
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    );
    std::fs::write(
        d.join("policy.cedar"),
        "@id(\"readers\")\npermit (principal, action == Warden::Action::\"GET\", resource)\n  \
         when { principal.scopes.contains(\"api:read\") };\n",
    )
    .unwrap();
    let up = Upstream::start("orders").await;
    let ports = [free_port(), free_port(), free_port()];
    let [gw_port, admin_port, authority_port] = ports;
    let mut p = serve(d, "console", &config(d, &up, ports));
    for port in ports {
        wait_port(&mut p, port, d, "console").await;
    }
    let gw: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let authority: SocketAddr = format!("127.0.0.1:{authority_port}").parse().unwrap();

    // The authority's status reaches the console through the binary.
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let status = admin_json(admin, "/console/api/authority").await;
    assert_eq!(status["enabled"], true, "{status}");
    assert_eq!(status["seal"]["sealed"], false, "{status}");
    assert!(status["signing_keys"][0]["kid"].is_string(), "{status}");
    assert_eq!(status["ca"]["trust_domain"], "example.org", "{status}");
    let before = status["clients"].as_u64().unwrap();

    // Traffic for the overview's chart (two 10-second buckets), allowed and refused.
    let auth = format!("Bearer {}", token(authority).await);
    until_accepted(gw, &auth).await;
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        assert_eq!(
            send(gw, "GET", "/public/catalog", &[], "").await.status,
            200
        );
        assert_eq!(
            send(gw, "GET", "/api/orders", &[("authorization", &auth)], "")
                .await
                .status,
            200
        );
        assert_eq!(send(gw, "GET", "/api/orders", &[], "").await.status, 401);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let status = admin_json(admin, "/console/api/authority").await;
    assert_eq!(status["clients"].as_u64().unwrap(), before + 1, "{status}");

    // A refused reload, then an accepted one: the Config page's history shows both.
    let cfg = d.join("console.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        good.replace(
            "cluster = \"orders\"\npath_prefix = \"/public/\"",
            "cluster = \"nosuch\"\npath_prefix = \"/public/\"",
        ),
    )
    .unwrap();
    let refused = send(admin, "POST", "/reload", &[("authorization", &bearer)], "").await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    std::fs::write(&cfg, &good).unwrap();
    let accepted = send(admin, "POST", "/reload", &[("authorization", &bearer)], "").await;
    assert_eq!(accepted.status, 200, "{:?}", accepted.body);
    let history = admin_json(admin, "/console/api/config").await;
    let outcomes: Vec<&str> = history["reloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["accepted", "refused", "started"], "{history}");

    let shots_tmp = tempfile::tempdir().unwrap();
    let shots = match std::env::var("WARDEN_CONSOLE_SCREENSHOTS") {
        Ok(p) if !p.is_empty() => repo().join(p),
        _ => shots_tmp.path().to_path_buf(),
    };
    let out = warden_test_util::interop::run_python(
        "test_console.py",
        vec![
            (
                "WARDEN_CONSOLE_URL".into(),
                format!("http://{admin}/console/"),
            ),
            ("WARDEN_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
            (
                "WARDEN_REFUSED_URL".into(),
                format!("http://{gw}/api/orders"),
            ),
            ("WARDEN_EXPECT_ROUTE".into(), "api".into()),
            (
                "WARDEN_CONSOLE_SCREENSHOTS".into(),
                shots.display().to_string(),
            ),
            ("CHROMIUM".into(), CHROMIUM.into()),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "test_console.py failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "token",
        "overview",
        "routes",
        "upstreams",
        "events",
        "authority",
        "config",
    ] {
        let png = std::fs::read(shots.join(format!("{page}.png")))
            .unwrap_or_else(|e| panic!("no screenshot of {page}: {e}"));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{page}.png is not a PNG"
        );
        assert!(
            png.len() > 10_000,
            "{page}.png is nearly empty ({} bytes)",
            png.len()
        );
    }
    drop(p);
}
