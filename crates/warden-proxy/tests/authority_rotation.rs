//! Key rotation seen through the gateway: the authority rotates its signing key every 4 s
//! (published 2 s ahead, JWKS cached 1 s) while a client keeps fetching fresh tokens over HTTP
//! and calling the gateway with them, and keeps reusing older tokens until they expire. No
//! request may fail because of a rotation; a token signed by a superseded key keeps working
//! until its `exp` (its key stays in the JWKS) and is refused after it.
//!
//! The schedule is shorter than `[authority]` validation allows (`key_rotation` ≥ 1m), so the
//! config is built as a struct, and the test runs the authority's upkeep (`tick`) itself every
//! 200 ms instead of waiting for the built-in 30 s timer. Time is the real clock: the gateway
//! checks `exp` against it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use warden_authority::clients::ClientSpec;
use warden_authority::AuthorityHandle;
use warden_config::{AuthorityConfig, Dur, SecretRef};
use warden_test_util::{base_toml, client, Gateway, Upstream};

const ISSUER: &str = "https://auth.test";
/// How long traffic runs: more than two rotations.
const DRIVE: Duration = Duration::from_secs(13);
/// Token lifetime (seconds): longer than one rotation, so tokens outlive their key's turn.
const LIFETIME: i64 = 6;

/// Now, in seconds with a fraction (the gateway compares whole seconds of the same clock).
fn now_f() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// The JOSE header and the claims of a compact JWS (not verified).
fn decode(token: &str) -> (Value, Value) {
    let mut parts = token.split('.').map(|p| {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .expect("base64url");
        serde_json::from_slice::<Value>(&raw).expect("JSON")
    });
    (parts.next().unwrap(), parts.next().unwrap())
}

async fn start_authority(dir: &std::path::Path) -> AuthorityHandle {
    let kek = dir.join("authority.kek");
    std::fs::write(&kek, b64(&[7u8; 32])).unwrap();
    let cfg = AuthorityConfig {
        enabled: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        key_encryption_key: Some(SecretRef::File(kek)),
        issuer: ISSUER.into(),
        token_lifetime: Dur::secs(LIFETIME as u64),
        max_token_lifetime: Dur::secs(10),
        key_rotation: Dur::secs(4),
        key_publish_ahead: Dur::secs(2),
        jwks_max_age: Dur::secs(1),
        ..AuthorityConfig::default()
    };
    warden_authority::start(&cfg)
        .await
        .expect("start authority")
}

/// Registers a `client_secret_basic` client; returns its secret.
async fn register(h: &AuthorityHandle, id: &str) -> String {
    let spec: ClientSpec =
        serde_json::from_value(json!({"client_id": id, "scopes": ["read"], "audiences": ["api"]}))
            .unwrap();
    let a = h.authority();
    let (_, secret) = a.registry().create(spec, "test", a.now()).await.unwrap();
    secret.expect("a secret").secret.to_string()
}

/// `client_credentials` over HTTP; returns the access token.
async fn fetch_token(auth: SocketAddr, id: &str, secret: &str) -> String {
    // Ids and secrets here are URL-safe, so form-encoding leaves them as they are.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let req = Request::post("/oauth2/token")
        .header("host", "auth.test")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Basic {basic}"))
        .body(Full::new(Bytes::from_static(
            b"grant_type=client_credentials",
        )))
        .unwrap();
    let a = client::send_h1(auth, req).await;
    assert_eq!(a.status, 200, "token: {:?}", a.body);
    a.json()["access_token"].as_str().unwrap().to_owned()
}

async fn call(gw: &Gateway, token: &str) -> u16 {
    let req = Request::get("/x")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    client::send_h1(gw.addr("main"), req).await.status
}

async fn published_kids(auth: SocketAddr) -> BTreeSet<String> {
    let jwks = client::get(auth, "/oauth2/jwks").await.json();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the gateway has the issuer's keys (`/readyz` answers 200).
async fn wait_ready(gw: &Gateway) {
    let start = Instant::now();
    while client::get(gw.admin(), "/readyz").await.status != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "gateway not ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A token reused until it expires, and whether it was seen refused after.
struct Kept {
    token: String,
    exp: i64,
    refused: bool,
}

impl Kept {
    fn new(token: String) -> Self {
        let exp = decode(&token).1["exp"].as_i64().unwrap();
        Self {
            token,
            exp,
            refused: false,
        }
    }

    /// Calls the gateway with it: while valid it must be accepted, once expired refused
    /// (checked once). The margins keep off the second boundary that the gateway's
    /// whole-second clock may straddle. `None` when not called.
    async fn check(
        &mut self,
        gw: &Gateway,
        label: &str,
        failures: &mut Vec<String>,
    ) -> Option<u16> {
        let now = now_f();
        if now < self.exp as f64 - 0.3 {
            let s = call(gw, &self.token).await;
            if s != 200 {
                failures.push(format!("{label} before its exp: {s}"));
            }
            Some(s)
        } else if now >= self.exp as f64 + 0.1 && !self.refused {
            let s = call(gw, &self.token).await;
            if s != 401 {
                failures.push(format!("{label} after its exp: {s}, want 401"));
            }
            self.refused = true;
            Some(s)
        } else {
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_keep_working_across_key_rotations_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let auth = start_authority(dir.path()).await;
    let secret = register(&auth, "svc").await;
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&format!(
        r#"{}
[[auth.jwt]]
name = "authority"
issuer = "{ISSUER}"
audiences = ["api"]
algorithms = ["ES256"]
jwks_url = "{}/oauth2/jwks"
jwks_refresh_min = "1s"
require_typ = "at+jwt"
leeway = "0s"
[[clusters]]
name = "c"
endpoints = ["{}"]
[[routes]]
name = "api"
cluster = "c"
path_prefix = "/"
[routes.auth]
accept = ["jwt:authority"]
"#,
        base_toml(),
        auth.url(),
        up.url()
    ))
    .await;
    wait_ready(&gw).await;

    // The authority's upkeep, on the test's schedule.
    let upkeep = {
        let a = auth.authority().clone();
        tokio::spawn(async move {
            loop {
                a.tick().await.expect("tick");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let addr = auth.addr();
    // Obtained before any rotation, and reused until it expires.
    let mut first = Kept::new(fetch_token(addr, "svc", &secret).await);
    let (h, _) = decode(&first.token);
    assert_eq!(h["typ"], "at+jwt");
    let first_kid = h["kid"].as_str().unwrap().to_owned();
    let mut kids_in_order = vec![first_kid.clone()];
    // The newest token of each kid, reused on every round until it expires.
    let mut newest: BTreeMap<String, Kept> = BTreeMap::new();
    let (mut requests, mut fresh) = (0u32, 0u32);
    let mut failures: Vec<String> = Vec::new();
    let (mut first_used_after_rotation, mut first_refused) = (false, false);

    let start = Instant::now();
    while start.elapsed() < DRIVE {
        // A fresh token, used at once: a key that just started signing must already be known.
        let token = fetch_token(addr, "svc", &secret).await;
        let kid = decode(&token).0["kid"].as_str().unwrap().to_owned();
        if kids_in_order.last() != Some(&kid) {
            kids_in_order.push(kid.clone());
        }
        let status = call(&gw, &token).await;
        requests += 1;
        fresh += 1;
        if status != 200 {
            failures.push(format!("fresh token of {kid}: {status}"));
        }
        newest.insert(kid, Kept::new(token));
        for (kid, k) in newest.iter_mut() {
            let label = format!("newest token of {kid}");
            requests += u32::from(k.check(&gw, &label, &mut failures).await.is_some());
        }
        let rotated = kids_in_order.len() > 1;
        let status = first.check(&gw, "pre-rotation token", &mut failures).await;
        requests += u32::from(status.is_some());
        match status {
            Some(200) if rotated => {
                first_used_after_rotation = true;
                // Its key is still published while the token is valid.
                assert!(
                    published_kids(addr).await.contains(&first_kid),
                    "the first key left the JWKS before its token expired"
                );
            }
            Some(401) => first_refused = true,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    upkeep.abort();

    println!(
        "rotation: {} kids in order {:?}; {requests} gateway requests with {fresh} fresh \
         tokens; {} failures",
        kids_in_order.len(),
        kids_in_order,
        failures.len()
    );
    assert!(failures.is_empty(), "failures: {failures:#?}");
    assert!(
        kids_in_order.len() >= 3,
        "expected at least two rotations in {DRIVE:?}: {kids_in_order:?}"
    );
    let distinct: BTreeSet<_> = kids_in_order.iter().collect();
    assert_eq!(distinct.len(), kids_in_order.len(), "a kid came back");
    assert!(
        first_used_after_rotation,
        "the pre-rotation token was not used after the rotation"
    );
    assert!(first_refused, "the pre-rotation token was never refused");
    assert_eq!(
        call(&gw, &first.token).await,
        401,
        "the pre-rotation token after its exp"
    );
    // Every key that signed a token seen here is still published (none has retired yet).
    let published = published_kids(addr).await;
    for kid in &kids_in_order {
        assert!(published.contains(kid), "{kid} not in {published:?}");
    }
    auth.shutdown().await;
}
