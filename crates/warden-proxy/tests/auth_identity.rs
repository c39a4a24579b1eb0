//! Identity propagation over real sockets: what the upstream receives in `Authorization`
//! (`forward`, `remove`, or an `internal` token a service verifies with the gateway's JWKS),
//! the internal signing key across reloads, client-certificate identities (SPIFFE IDs, trust
//! domains, subject globs) and RFC 8705 certificate-bound tokens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use warden_crypto::jws::{Alg, Jwk};
use warden_test_util::authcfg::{self, bearer, cluster, issuer, q, route, Keys};
use warden_test_util::jwt::{now, TestIssuer};
use warden_test_util::{base_toml, client, Gateway, Pki, Upstream};

const ISS: &str = "https://issuer.test";
const GATEWAY_ISS: &str = "https://gateway.test";

async fn send(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> client::Answer {
    let mut b = Request::get(path).header("host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    client::send_h1(addr, b.body(Full::new(Bytes::new())).unwrap()).await
}

async fn post_reload(admin: SocketAddr) -> client::Answer {
    let req = Request::post("/reload")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    client::send_h1(admin, req).await
}

/// The gateway's internal-token keys, as a service would fetch them.
async fn gateway_jwks(admin: SocketAddr) -> (Value, Vec<Jwk>) {
    let res = client::get(admin, "/.well-known/jwks.json").await;
    assert_eq!(res.status, 200, "GET /.well-known/jwks.json");
    let doc = res.json();
    let (keys, skipped) = Jwk::set_from_json(&doc).expect("a JWK set");
    assert!(skipped.is_empty(), "unusable keys in {doc}: {skipped:?}");
    assert!(!keys.is_empty(), "no keys in {doc}");
    (doc, keys)
}

/// What a service behind the gateway does with `Authorization: Bearer <internal token>`:
/// checks the signature with the gateway's JWKS and returns the header's `kid` and the claims.
fn verify_internal(authorization: &str, keys: &[Jwk]) -> (String, serde_json::Map<String, Value>) {
    let token = authorization
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a bearer token: {authorization}"));
    let t = warden_auth::jwt::parse(token).expect("a well-formed JWS");
    assert_eq!(t.alg, Alg::ES256, "internal tokens are ES256");
    assert_eq!(t.typ.as_deref(), Some("at+jwt"));
    let kid = t.kid.clone().expect("internal tokens name their key");
    let key = keys
        .iter()
        .find(|k| k.kid.as_deref() == Some(kid.as_str()))
        .unwrap_or_else(|| panic!("kid {kid} is not in the gateway's JWKS"));
    assert!(
        key.key
            .verify(t.alg, t.signing_input.as_bytes(), &t.signature),
        "the internal token's signature does not verify"
    );
    let mut forged = t.signature.clone();
    forged[0] ^= 1;
    assert!(
        !key.key.verify(t.alg, t.signing_input.as_bytes(), &forged),
        "a changed signature verified: the check proves nothing"
    );
    (kid, t.claims)
}

// =============================================================================================
// upstream_token
// =============================================================================================

fn upstream_token_config(
    up: &Upstream,
    iss: &TestIssuer,
    key_toml: &str,
    lifetime: &str,
) -> String {
    let jwks = iss.jwks_file();
    format!(
        "{}\n[auth.internal_token]\nissuer = \"{GATEWAY_ISS}\"\nlifetime = \"{lifetime}\"\n{key_toml}\n{}\n{}\n{}{}{}{}",
        base_toml(),
        issuer("main", &iss.iss, &["ES256"], Keys::JwksFile(&jwks), ""),
        cluster("billing-svc", up),
        route(
            "internal",
            "/internal/",
            "billing-svc",
            Some("accept = [\"jwt\", \"api_key\"]\nupstream_token = \"internal\"")
        ),
        route(
            "remove",
            "/remove/",
            "billing-svc",
            Some("accept = [\"jwt\", \"api_key\"]\nupstream_token = \"remove\"")
        ),
        route("forward", "/forward/", "billing-svc", Some("accept = [\"jwt\"]")),
        route(
            "forward-explicit",
            "/forward-explicit/",
            "billing-svc",
            Some("accept = [\"jwt\"]\nupstream_token = \"forward\"")
        ),
    )
}

/// A configured API key: (the key a client presents, its TOML entry).
fn api_key(owner: &str) -> (String, String) {
    let id = "idkey0001";
    let secret = "Secret0123456789Secret0123456789Secret01";
    let hex: String = warden_crypto::jws::sha256(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (
        format!("wdn_{id}_{secret}"),
        format!(
            "[[auth.api_keys.keys]]\nid = \"{id}\"\nhash = \"sha256:{hex}\"\nowner = \"{owner}\"\nscopes = [\"invoices:read\"]\n"
        ),
    )
}

#[tokio::test]
async fn an_internal_token_replaces_the_callers_and_verifies_with_the_gateways_jwks() {
    let up = Upstream::start("billing").await;
    let iss = TestIssuer::new(ISS);
    let (key, key_toml) = api_key("svc-reports");
    let gw = Gateway::start(&upstream_token_config(&up, &iss, &key_toml, "45s")).await;
    let mut claims = iss.claims("alice", "api", "read write");
    claims["client_id"] = json!("web-app");
    let token = iss.token(&claims);
    let before = now();
    let a = send(
        gw.addr("main"),
        "/internal/a",
        &[("authorization", &bearer(&token))],
    )
    .await;
    let b = send(
        gw.addr("main"),
        "/internal/b",
        &[("authorization", &bearer(&token))],
    )
    .await;
    let k = send(gw.addr("main"), "/internal/k", &[("x-api-key", &key)]).await;
    let after = now();
    assert_eq!((a.status, b.status, k.status), (200, 200, 200));

    let (doc, keys) = gateway_jwks(gw.admin()).await;
    assert!(
        doc.to_string().find("\"d\"").is_none(),
        "the JWKS holds private key material: {doc}"
    );
    let seen = up.requests();
    assert_eq!(seen.len(), 3);
    let mut jtis = Vec::new();
    for r in &seen[..2] {
        let auth = &r.headers["authorization"];
        assert!(
            !auth.contains(&token),
            "the caller's token was forwarded: {auth}"
        );
        let (_, c) = verify_internal(auth, &keys);
        assert_eq!(c["iss"], GATEWAY_ISS, "{c:?}");
        assert_eq!(c["sub"], "alice", "{c:?}");
        assert_eq!(c["aud"], "billing-svc", "{c:?}");
        assert_eq!(c["warden_auth"], "jwt", "{c:?}");
        assert_eq!(c["warden_iss"], ISS, "{c:?}");
        assert_eq!(c["scope"], "read write", "{c:?}");
        assert_eq!(c["client_id"], "web-app", "{c:?}");
        let (iat, exp) = (c["iat"].as_i64().unwrap(), c["exp"].as_i64().unwrap());
        assert_eq!(exp - iat, 45, "lifetime: {c:?}");
        assert!((before..=after).contains(&iat), "iat {iat} not now: {c:?}");
        assert!(c["nbf"].as_i64().unwrap() <= iat, "{c:?}");
        jtis.push(c["jti"].as_str().expect("jti").to_owned());
        assert_eq!(r.headers["x-warden-subject"], "alice");
    }
    assert_ne!(jtis[0], jtis[1], "each internal token has its own jti");
    // An API-key caller gets an internal token too, and the key itself is not passed on.
    let r = &seen[2];
    assert!(!r.headers.contains_key("x-api-key"), "{:?}", r.headers);
    let (_, c) = verify_internal(&r.headers["authorization"], &keys);
    assert_eq!(c["sub"], "svc-reports", "{c:?}");
    assert_eq!(c["warden_auth"], "api_key", "{c:?}");
    assert_eq!(c["scope"], "invoices:read", "{c:?}");
    assert_eq!(c["aud"], "billing-svc", "{c:?}");
}

#[tokio::test]
async fn remove_sends_no_credential_and_forward_sends_the_callers_own() {
    let up = Upstream::start("billing").await;
    let iss = TestIssuer::new(ISS);
    let (key, key_toml) = api_key("svc-reports");
    let gw = Gateway::start(&upstream_token_config(&up, &iss, &key_toml, "45s")).await;
    let token = iss.token(&iss.claims("alice", "api", "read"));
    let auth = bearer(&token);
    for path in ["/remove/jwt", "/forward/jwt", "/forward-explicit/jwt"] {
        let res = send(gw.addr("main"), path, &[("authorization", &auth)]).await;
        assert_eq!(res.status, 200, "{path}");
    }
    let res = send(gw.addr("main"), "/remove/key", &[("x-api-key", &key)]).await;
    assert_eq!(res.status, 200);
    let seen = up.requests();
    let uris: Vec<&str> = seen.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(
        uris,
        [
            "/remove/jwt",
            "/forward/jwt",
            "/forward-explicit/jwt",
            "/remove/key"
        ]
    );
    assert!(
        !seen[0].headers.contains_key("authorization"),
        "remove: {:?}",
        seen[0].headers
    );
    assert_eq!(seen[0].headers["x-warden-subject"], "alice");
    assert_eq!(seen[1].headers["authorization"], auth, "forward (default)");
    assert_eq!(seen[2].headers["authorization"], auth, "forward");
    assert!(
        !seen[3].headers.contains_key("x-api-key")
            && !seen[3].headers.contains_key("authorization"),
        "remove with an API key: {:?}",
        seen[3].headers
    );
    assert_eq!(seen[3].headers["x-warden-subject"], "svc-reports");
}

#[tokio::test]
async fn a_generated_internal_signing_key_survives_a_reload() {
    let up = Upstream::start("billing").await;
    let iss = TestIssuer::new(ISS);
    let gw = Gateway::start(&upstream_token_config(&up, &iss, "", "45s")).await;
    let token = iss.token(&iss.claims("alice", "api", "read"));
    let auth = bearer(&token);
    let (doc_before, keys_before) = gateway_jwks(gw.admin()).await;
    let kid_before = keys_before[0].kid.clone().expect("kid");
    let res = send(
        gw.addr("main"),
        "/internal/before",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(res.status, 200);

    // A real change (the lifetime), so the reload is seen to take effect.
    gw.rewrite(&upstream_token_config(&up, &iss, "", "90s"));
    let res = post_reload(gw.admin()).await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(res.json(), json!({"status": "reloaded"}));

    let (doc_after, keys_after) = gateway_jwks(gw.admin()).await;
    assert_eq!(
        keys_after[0].kid.as_deref(),
        Some(kid_before.as_str()),
        "the signing key changed on reload: {doc_before} then {doc_after}"
    );
    assert_eq!(doc_before, doc_after);
    let res = send(
        gw.addr("main"),
        "/internal/after",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(res.status, 200);
    let seen = up.requests();
    // Tokens minted before and after verify with the JWKS a service fetched before the reload.
    let (kid1, c1) = verify_internal(&seen[0].headers["authorization"], &keys_before);
    let (kid2, c2) = verify_internal(&seen[1].headers["authorization"], &keys_before);
    assert_eq!(
        (kid1.as_str(), kid2.as_str()),
        (kid_before.as_str(), kid_before.as_str())
    );
    let lifetime = |c: &serde_json::Map<String, Value>| {
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap()
    };
    assert_eq!(
        (lifetime(&c1), lifetime(&c2)),
        (45, 90),
        "the reload took effect"
    );

    // Another gateway generates its own key: the kid is not a constant.
    let other = Gateway::start(&upstream_token_config(&up, &iss, "", "45s")).await;
    let (_, other_keys) = gateway_jwks(other.admin()).await;
    assert_ne!(other_keys[0].kid, keys_before[0].kid);
}

// =============================================================================================
// Client certificates
// =============================================================================================

/// A gateway with the plain listener `main` and a TLS listener `tls` that asks for (but does
/// not require) client certificates from `pki`'s CA.
struct TlsGateway {
    gw: Gateway,
    up: Upstream,
    ca: PathBuf,
}

impl TlsGateway {
    async fn start(pki: &Pki, iss: &TestIssuer, auth_section: &str, routes: &str) -> TlsGateway {
        let up = Upstream::start("u").await;
        let (cert, key) = pki.server("site", &["localhost"]);
        let ca = pki.ca_file();
        let jwks = iss.jwks_file();
        let toml = format!(
            "{}\n[[listeners]]\nname = \"tls\"\naddress = \"127.0.0.1:0\"\n\
             [[listeners.tls.certificates]]\ncert = {}\nkey = \"file:{}\"\n\
             [listeners.tls.client_auth]\nca = {}\nmode = \"optional\"\n\
             {auth_section}\n{}\n{}\n{routes}",
            base_toml(),
            q(&cert),
            key.display(),
            q(&ca),
            issuer("main", &iss.iss, &["ES256"], Keys::JwksFile(&jwks), ""),
            cluster("c", &up),
        );
        TlsGateway {
            gw: Gateway::start(&toml).await,
            up,
            ca,
        }
    }

    /// GET `path` over TLS, presenting `cert` (cert and key files) if given.
    async fn send(
        &self,
        cert: Option<&(PathBuf, PathBuf)>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> client::Answer {
        let cfg = client::tls_config(
            &self.ca,
            cert.map(|(c, k)| (c.as_path(), k.as_path())),
            &[b"h2", b"http/1.1"],
        );
        let mut b = Request::get(format!("https://localhost{path}")).header("host", "localhost");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::new())).unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            client::send_tls(self.gw.addr("tls"), "localhost", cfg, req),
        )
        .await
        .expect("TLS request timed out")
        .unwrap_or_else(|e| panic!("TLS request to {path} failed: {e}"))
    }

    async fn denied(&self, route: &str, reason: &str) -> f64 {
        authcfg::denied(&authcfg::metrics(self.gw.admin()).await, route, reason)
    }
}

fn der(cert: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(cert).expect("read issued certificate")
}

const CERT_ROUTES: &str =
    "[[routes]]\nname = \"cert\"\ncluster = \"c\"\npath_prefix = \"/cert/\"\n\
     [routes.auth]\naccept = [\"client_cert\"]\n\
     [[routes]]\nname = \"billing\"\ncluster = \"c\"\npath_prefix = \"/billing/\"\n\
     [routes.auth]\naccept = [\"client_cert\"]\nsubjects = [\"spiffe://prod.test/ns/billing/*\"]\n";

const BILLING_API: &str = "spiffe://prod.test/ns/billing/sa/api";

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificates_spiffe_id_is_the_callers_identity() {
    let pki = Pki::new("mesh ca");
    let iss = TestIssuer::new(ISS);
    let t = TlsGateway::start(&pki, &iss, "", CERT_ROUTES).await;
    let api = pki.client("api", &[], &[BILLING_API]);
    let other = pki.client("other", &[], &["spiffe://prod.test/ns/other/sa/x"]);

    let res = t
        .send(
            Some(&api),
            "/cert/a",
            &[("x-warden-subject", "spiffe://prod.test/ns/admin/sa/root")],
        )
        .await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    let res = t.send(Some(&api), "/billing/b", &[]).await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    let res = t.send(Some(&other), "/cert/c", &[]).await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    let seen = t.up.requests();
    assert_eq!(seen.len(), 3);
    for (r, subject) in
        seen.iter()
            .zip([BILLING_API, BILLING_API, "spiffe://prod.test/ns/other/sa/x"])
    {
        assert_eq!(r.headers["x-warden-subject"], subject, "{}", r.uri);
        assert_eq!(r.headers["x-warden-auth"], "client_cert", "{}", r.uri);
    }

    // Outside the subject glob: authenticated, but not allowed.
    let res = t.send(Some(&other), "/billing/d", &[]).await;
    assert_eq!(res.status, 403);
    assert_eq!(res.json()["error"], "forbidden");
    assert_eq!(t.denied("billing", "subject_not_allowed").await, 1.0);

    // No certificate, on TLS or on the plain listener: no credential.
    let res = t.send(None, "/cert/e", &[]).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.json()["error"], "unauthorized");
    let res = send(t.gw.addr("main"), "/cert/f", &[]).await;
    assert_eq!(res.status, 401);
    assert_eq!(t.denied("cert", "missing_credential").await, 2.0);
    assert_eq!(
        t.up.requests().len(),
        3,
        "refused requests reached the upstream"
    );
    let text = authcfg::metrics(t.gw.admin()).await;
    assert_eq!(
        authcfg::allowed(&text, "cert", "client_cert"),
        2.0,
        "{text}"
    );
    assert_eq!(
        authcfg::allowed(&text, "billing", "client_cert"),
        1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_without_one_acceptable_spiffe_id_are_refused() {
    let pki = Pki::new("mesh ca");
    let iss = TestIssuer::new(ISS);
    let t = TlsGateway::start(
        &pki,
        &iss,
        "[auth.client_cert]\ntrust_domains = [\"prod.test\"]\n",
        CERT_ROUTES,
    )
    .await;
    let good = pki.client("good", &[], &[BILLING_API]);
    let foreign = pki.client("foreign", &[], &["spiffe://evil.test/ns/billing/sa/api"]);
    let two = pki.client(
        "two",
        &[],
        &[BILLING_API, "spiffe://prod.test/ns/billing/sa/admin"],
    );
    let mixed = pki.client("mixed", &[], &[BILLING_API, "https://billing.prod.test/"]);
    let dns_only = pki.client("dns", &["api.billing.prod.test"], &[]);
    let bad_shape = pki.client("shape", &[], &["spiffe://prod.test/ns/../billing"]);

    for (case, cert, reason) in [
        (
            "a trust domain not listed",
            &foreign,
            "untrusted_trust_domain",
        ),
        ("two SPIFFE URI SANs", &two, "bad_spiffe_id"),
        ("a SPIFFE ID and another URI SAN", &mixed, "bad_spiffe_id"),
        ("a DNS name only", &dns_only, "no_certificate_identity"),
        (
            "a SPIFFE ID with a `..` segment",
            &bad_shape,
            "bad_spiffe_id",
        ),
    ] {
        let before = t.denied("cert", reason).await;
        let res = t.send(Some(cert), "/cert/x", &[]).await;
        assert_eq!(res.status, 401, "{case}");
        assert_eq!(res.json()["error"], "invalid_token", "{case}");
        assert_eq!(
            t.denied("cert", reason).await - before,
            1.0,
            "{case}: reason {reason}"
        );
        assert!(t.up.requests().is_empty(), "{case}: reached the upstream");
    }
    let res = t.send(Some(&good), "/cert/ok", &[]).await;
    assert_eq!(
        res.status, 200,
        "a certificate from the listed trust domain"
    );
    assert_eq!(t.up.requests()[0].headers["x-warden-subject"], BILLING_API);

    // Without trust_domains, any trust domain the CA vouches for is accepted: the refusal
    // above came from the setting.
    let open = TlsGateway::start(&pki, &iss, "", CERT_ROUTES).await;
    let res = open.send(Some(&foreign), "/cert/y", &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        open.up.requests()[0].headers["x-warden-subject"],
        "spiffe://evil.test/ns/billing/sa/api"
    );
}

// =============================================================================================
// RFC 8705 certificate-bound tokens
// =============================================================================================

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_bound_token_works_only_with_its_certificate() {
    let pki = Pki::new("mesh ca");
    let iss = TestIssuer::new(ISS);
    let routes = route("bound", "/", "c", Some("accept = [\"jwt\"]"));
    let t = TlsGateway::start(&pki, &iss, "", &routes).await;
    let a = pki.client("a", &["a.test"], &[]);
    let b = pki.client("b", &["b.test"], &[]);
    let thumb_a = warden_auth::cert::thumbprint(der(&a.0).as_ref());
    let bound = |sub: &str| {
        let mut c = iss.claims(sub, "api", "read");
        c["cnf"] = json!({"x5t#S256": thumb_a});
        iss.token(&c)
    };

    // First seen with the wrong certificate (so it is verified, then refused), then without
    // one, then with the right one (answered from the verified-token cache).
    let first = bearer(&bound("alice"));
    let h = [("authorization", first.as_str())];
    assert_eq!(t.send(Some(&b), "/1/wrong-cert", &h).await.status, 401);
    assert_eq!(t.send(None, "/1/no-cert", &h).await.status, 401);
    assert_eq!(send(t.gw.addr("main"), "/1/plain", &h).await.status, 401);
    let ok = t.send(Some(&a), "/1/right-cert", &h).await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));

    // First seen with the right certificate, then with the others.
    let second = bearer(&bound("bob"));
    let h = [("authorization", second.as_str())];
    assert_eq!(t.send(Some(&a), "/2/right-cert", &h).await.status, 200);
    let wrong = t.send(Some(&b), "/2/wrong-cert", &h).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"], "invalid_token");
    assert_eq!(
        wrong.header("www-authenticate"),
        Some("Bearer realm=\"warden\", error=\"invalid_token\"")
    );
    assert_eq!(t.send(None, "/2/no-cert", &h).await.status, 401);

    // A token bound to nothing works with or without a certificate.
    let free = bearer(&iss.token(&iss.claims("carol", "api", "read")));
    let h = [("authorization", free.as_str())];
    assert_eq!(t.send(Some(&b), "/3/any-cert", &h).await.status, 200);
    assert_eq!(t.send(None, "/3/no-cert", &h).await.status, 200);

    let uris: Vec<String> = t.up.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(
        uris,
        [
            "/1/right-cert",
            "/2/right-cert",
            "/3/any-cert",
            "/3/no-cert"
        ]
    );
    let seen = t.up.requests();
    assert_eq!(seen[0].headers["x-warden-subject"], "alice");
    assert_eq!(seen[0].headers["x-warden-auth"], "jwt");
    assert_eq!(
        t.denied("bound", "certificate_binding_mismatch").await,
        5.0,
        "{}",
        authcfg::metrics(t.gw.admin()).await
    );
}
