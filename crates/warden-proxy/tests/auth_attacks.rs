//! Attacks on JWT authentication, over real sockets: every forged, broken, misplaced or
//! oversized credential gets 401 (400 for a malformed request), with the RFC 6750 error code,
//! and the upstream never sees the request. Each case also checks which check refused it, by
//! the reason label in `warden_auth_denied_requests_total`, so a case cannot pass by accident
//! (an `alg: none` token refused only for a wrong audience proves nothing).
//!
//! Positive controls (a valid token, a lowercase `bearer` scheme) run on the same gateways to
//! prove the setup accepts what it should.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warden_crypto::jws::{b64url, Alg, SigningKey};
use warden_test_util::authcfg::{self, bearer, cluster, issuer, route, Keys};
use warden_test_util::jwt::{hs256, now, unsigned, TestIssuer};
use warden_test_util::{base_toml, client, raw, Behaviour, Gateway, Pki, Upstream};

const ISS: &str = "https://issuer.test";

/// What a refused request must get.
#[derive(Clone, Copy, Debug)]
struct Want {
    status: u16,
    code: &'static str,
    reason: &'static str,
}

/// 401 `invalid_token` for `reason`.
fn invalid(reason: &'static str) -> Want {
    Want {
        status: 401,
        code: "invalid_token",
        reason,
    }
}

/// 401 without an error code: no credential the route accepts was presented.
const MISSING: Want = Want {
    status: 401,
    code: "unauthorized",
    reason: "missing_credential",
};

/// One gateway under attack, with the upstream it protects.
struct Target {
    gw: Gateway,
    up: Upstream,
    route: &'static str,
}

impl Target {
    /// A gateway with the given `[[auth.jwt]]` issuers and one route `api` for `/` accepting
    /// `accept` (a TOML list), plus `extra` TOML (e.g. a `[server]` table).
    async fn start(issuers: &str, accept: &str, extra: &str) -> Target {
        let up = Upstream::start("u").await;
        let toml = format!(
            "{extra}\n{}\n{issuers}\n{}\n{}",
            base_toml(),
            cluster("c", &up),
            route("api", "/", "c", Some(&format!("accept = {accept}")))
        );
        Target {
            gw: Gateway::start(&toml).await,
            up,
            route: "api",
        }
    }

    /// The standard target: one ES256 issuer with a JWK set file, route accepting `jwt`.
    async fn es256(iss: &TestIssuer) -> Target {
        let jwks = iss.jwks_file();
        Target::start(
            &issuer("main", &iss.iss, &["ES256"], Keys::JwksFile(&jwks), ""),
            "[\"jwt\"]",
            "",
        )
        .await
    }

    async fn send(&self, path: &str, headers: &[(&str, &str)]) -> client::Answer {
        let mut b = Request::get(path).header("host", "localhost");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        client::send_h1(
            self.gw.addr("main"),
            b.body(Full::new(Bytes::new())).unwrap(),
        )
        .await
    }

    /// Sends `headers` to `/attack` and checks the answer, the denial counter for the reason,
    /// and that nothing reached the upstream.
    async fn refused(&self, case: &str, headers: &[(&str, &str)], want: Want) {
        self.refused_at(case, "/attack", headers, want).await;
    }

    async fn refused_at(&self, case: &str, path: &str, headers: &[(&str, &str)], want: Want) {
        let before = authcfg::metrics(self.gw.admin()).await;
        let res = self.send(path, headers).await;
        let body = String::from_utf8_lossy(&res.body).into_owned();
        assert_eq!(
            res.status, want.status,
            "case `{case}`: status; body {body}"
        );
        assert_eq!(res.json()["error"], want.code, "case `{case}`: error code");
        let challenge = res.header("www-authenticate").unwrap_or("");
        match want.code {
            "invalid_token" => assert!(
                challenge.ends_with("error=\"invalid_token\""),
                "case `{case}`: WWW-Authenticate {challenge:?}"
            ),
            "invalid_request" => assert!(
                challenge.ends_with("error=\"invalid_request\""),
                "case `{case}`: WWW-Authenticate {challenge:?}"
            ),
            _ => assert!(
                challenge.starts_with("Bearer realm=\"warden\"") && !challenge.contains("error="),
                "case `{case}`: WWW-Authenticate {challenge:?}"
            ),
        }
        assert_eq!(
            res.header("cache-control"),
            Some("no-store"),
            "case `{case}`: auth answers must not be cached"
        );
        let after = authcfg::metrics(self.gw.admin()).await;
        assert_eq!(
            authcfg::denied(&after, self.route, want.reason)
                - authcfg::denied(&before, self.route, want.reason),
            1.0,
            "case `{case}`: expected one denial for reason `{}`; denials now:\n{}",
            want.reason,
            denials(&after)
        );
        assert!(
            self.up.requests().is_empty(),
            "case `{case}`: the upstream saw the request: {:?}",
            self.up.requests()
        );
    }

    /// Sends a request that must pass and be forwarded (a positive control).
    async fn allowed(&self, case: &str, path: &str, headers: &[(&str, &str)]) {
        let seen = self.up.requests().len();
        let res = self.send(path, headers).await;
        assert_eq!(
            res.status,
            200,
            "positive control `{case}` was refused: {}",
            String::from_utf8_lossy(&res.body)
        );
        let got = self.up.requests();
        assert_eq!(
            got.len(),
            seen + 1,
            "positive control `{case}` not forwarded"
        );
        assert_eq!(got[seen].uri, path, "positive control `{case}`");
    }

    /// Upstream paths seen (for tests that mix positive controls with attacks).
    fn forwarded(&self) -> Vec<String> {
        self.up.requests().into_iter().map(|r| r.uri).collect()
    }
}

fn denials(metrics: &str) -> String {
    metrics
        .lines()
        .filter(|l| l.starts_with("warden_auth_denied_requests_total{"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn split(token: &str) -> (String, String, String) {
    let mut p = token.split('.');
    let (h, c, s) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
    assert!(p.next().is_none(), "{token} has more than three parts");
    (h.to_owned(), c.to_owned(), s.to_owned())
}

fn enc(v: &Value) -> String {
    b64url(v.to_string().as_bytes())
}

/// A token with `header`, signed by `key` whatever the header says.
fn signed_by(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", enc(header), enc(claims));
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}

/// A PEM `PUBLIC KEY` (SubjectPublicKeyInfo) for a P-256 public point `04 || x || y`.
fn p256_public_pem(point: &[u8]) -> String {
    assert_eq!(point.len(), 65, "uncompressed P-256 point");
    // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused bits) point }
    let mut der = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    der.extend_from_slice(point);
    pem("PUBLIC KEY", &der)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

// ---------------------------------------------------------------------------------------------
// Positive controls
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn positive_controls_a_valid_token_passes_with_either_scheme_case() {
    let iss = TestIssuer::new(ISS);
    let t = Target::es256(&iss).await;
    let token = iss.token(&iss.claims("alice", "api", "read"));
    t.allowed("Bearer", "/one", &[("authorization", &bearer(&token))])
        .await;
    t.allowed(
        "lowercase bearer",
        "/two",
        &[("authorization", &format!("bearer {token}"))],
    )
    .await;
    t.allowed(
        "upper-case BEARER",
        "/three",
        &[("authorization", &format!("BEARER {token}"))],
    )
    .await;
    // A fresh token each time, so the verified-token cache does not answer for it.
    let other = iss.token(&iss.claims("bob", "api", "read"));
    t.allowed(
        "lowercase bearer, uncached token",
        "/four",
        &[("authorization", &format!("bearer {other}"))],
    )
    .await;
    // Clock skew within the leeway (30 s) is tolerated.
    let mut skewed = iss.claims("carol", "api", "read");
    skewed["nbf"] = json!(now() + 10);
    skewed["iat"] = json!(now() + 10);
    t.allowed(
        "nbf/iat 10 s ahead, within leeway",
        "/five",
        &[("authorization", &bearer(&iss.token(&skewed)))],
    )
    .await;
    let seen = t.up.requests();
    assert_eq!(seen[0].headers["x-warden-subject"], "alice");
    assert_eq!(seen[3].headers["x-warden-subject"], "bob");
}

// ---------------------------------------------------------------------------------------------
// Missing and misplaced credentials
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn no_token_and_tokens_outside_the_authorization_header_get_401() {
    let iss = TestIssuer::new(ISS);
    let t = Target::es256(&iss).await;
    let token = iss.token(&iss.claims("alice", "api", "read"));
    t.refused("no Authorization header", &[], MISSING).await;
    t.refused(
        "Basic credentials on a bearer route",
        &[("authorization", "Basic YWxpY2U6c2VjcmV0")],
        MISSING,
    )
    .await;
    t.refused_at(
        "token only in ?access_token=",
        &format!("/attack?access_token={token}"),
        &[],
        MISSING,
    )
    .await;
    t.refused(
        "token in a cookie",
        &[("cookie", &format!("access_token={token}"))],
        MISSING,
    )
    .await;
    t.refused(
        "token in X-Access-Token",
        &[("x-access-token", &token)],
        MISSING,
    )
    .await;
    assert!(t.up.requests().is_empty());
}

#[tokio::test]
async fn two_authorization_headers_are_a_bad_request() {
    let iss = TestIssuer::new(ISS);
    let t = Target::es256(&iss).await;
    let good = iss.token(&iss.claims("alice", "api", "read"));
    let admin = iss.token(&iss.claims("admin", "api", "admin"));
    let want = Want {
        status: 400,
        code: "invalid_request",
        reason: "multiple_authorization_headers",
    };
    t.refused(
        "two valid bearer tokens",
        &[
            ("authorization", &bearer(&good)),
            ("authorization", &bearer(&admin)),
        ],
        want,
    )
    .await;
    t.refused(
        "valid bearer token and Basic",
        &[
            ("authorization", "Basic YWxpY2U6c2VjcmV0"),
            ("authorization", &bearer(&good)),
        ],
        want,
    )
    .await;
    t.refused(
        "bearer token and an empty Authorization",
        &[("authorization", &bearer(&good)), ("authorization", "")],
        want,
    )
    .await;
    assert!(t.up.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Algorithm attacks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn alg_none_in_any_spelling_is_refused() {
    let iss = TestIssuer::new(ISS);
    let t = Target::es256(&iss).await;
    let claims = iss.claims("admin", "api", "admin");
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "JWT"});
        let with_kid = json!({"alg": alg, "kid": iss.kid(), "typ": "at+jwt"});
        let empty_sig = format!("{}.{}.", enc(&header), enc(&claims));
        t.refused(
            &format!("alg `{alg}`, empty signature"),
            &[("authorization", &bearer(&empty_sig))],
            invalid("malformed_token"),
        )
        .await;
        let no_sig = format!("{}.{}", enc(&header), enc(&claims));
        t.refused(
            &format!("alg `{alg}`, no signature part"),
            &[("authorization", &bearer(&no_sig))],
            invalid("malformed_token"),
        )
        .await;
        let real_sig = iss.token_with_header(&with_kid, &claims);
        t.refused(
            &format!("alg `{alg}` with the issuer's kid and a real signature"),
            &[("authorization", &bearer(&real_sig))],
            invalid("algorithm_not_allowed"),
        )
        .await;
        let junk_sig = unsigned(&header, &claims, b"signature");
        t.refused(
            &format!("alg `{alg}` with a junk signature"),
            &[("authorization", &bearer(&junk_sig))],
            invalid("algorithm_not_allowed"),
        )
        .await;
    }
    t.refused(
        "no alg at all",
        &[(
            "authorization",
            &bearer(&unsigned(&json!({"typ": "JWT"}), &claims, b"sig")),
        )],
        invalid("algorithm_not_allowed"),
    )
    .await;
    assert!(t.up.requests().is_empty());
}

#[tokio::test]
async fn alg_names_outside_the_allow_list_or_in_another_case_are_refused() {
    let iss = TestIssuer::new(ISS);
    let t = Target::es256(&iss).await;
    let claims = iss.claims("admin", "api", "admin");
    let ed = SigningKey::generate(Alg::EdDSA).unwrap();
    for (case, alg, signer) in [
        (
            "EdDSA header on the ES256 key, signed by an Ed25519 key",
            "EdDSA",
            &ed,
        ),
        (
            "EdDSA header on the ES256 key, signed by the ES256 key",
            "EdDSA",
            &iss.key,
        ),
        ("ES384 header on the ES256 key", "ES384", &iss.key),
        ("RS256 header on the ES256 key", "RS256", &iss.key),
        ("PS256 header on the ES256 key", "PS256", &iss.key),
        ("lower-case es256", "es256", &iss.key),
        ("ES256 with a trailing space", "ES256 ", &iss.key),
    ] {
        let header = json!({"alg": alg, "kid": iss.kid(), "typ": "at+jwt"});
        t.refused(
            case,
            &[(
                "authorization",
                &bearer(&signed_by(signer, &header, &claims)),
            )],
            invalid("algorithm_not_allowed"),
        )
        .await;
    }
    assert!(t.up.requests().is_empty());
}

#[tokio::test]
async fn an_alg_that_the_allow_list_has_but_the_named_key_does_not_fit_is_refused() {
    // Allow-list ES256 and EdDSA; the key set has one key of each. A token naming the ES256
    // key but saying EdDSA (signed with an Ed25519 key) must not verify against anything.
    let iss = TestIssuer::new(ISS);
    let ed_iss = TestIssuer::with_alg(ISS, Alg::EdDSA);
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("both.json");
    std::fs::write(
        &jwks,
        json!({"keys": [iss.key.public_jwk(), ed_iss.key.public_jwk()]}).to_string(),
    )
    .unwrap();
    let t = Target::start(
        &issuer("main", ISS, &["ES256", "EdDSA"], Keys::JwksFile(&jwks), ""),
        "[\"jwt\"]",
        "",
    )
    .await;
    let claims = iss.claims("admin", "api", "admin");
    let forged = signed_by(
        &ed_iss.key,
        &json!({"alg": "EdDSA", "kid": iss.kid(), "typ": "at+jwt"}),
        &claims,
    );
    t.refused(
        "EdDSA token naming the ES256 key's kid",
        &[("authorization", &bearer(&forged))],
        invalid("key_type_mismatch"),
    )
    .await;
    let forged = signed_by(
        &iss.key,
        &json!({"alg": "ES256", "kid": ed_iss.kid(), "typ": "at+jwt"}),
        &claims,
    );
    t.refused(
        "ES256 token naming the Ed25519 key's kid",
        &[("authorization", &bearer(&forged))],
        invalid("key_type_mismatch"),
    )
    .await;
    let attacker = SigningKey::generate(Alg::EdDSA).unwrap();
    let forged = signed_by(
        &attacker,
        &json!({"alg": "EdDSA", "typ": "at+jwt"}),
        &claims,
    );
    t.refused(
        "EdDSA token without kid, signed by an unknown Ed25519 key",
        &[("authorization", &bearer(&forged))],
        invalid("bad_signature"),
    )
    .await;
    assert!(t.up.requests().is_empty());
    // Both keys work for their own algorithm.
    t.allowed(
        "ES256 key",
        "/es256",
        &[(
            "authorization",
            &bearer(&iss.token(&iss.claims("a", "api", ""))),
        )],
    )
    .await;
    t.allowed(
        "EdDSA key",
        "/eddsa",
        &[(
            "authorization",
            &bearer(&ed_iss.token(&ed_iss.claims("b", "api", ""))),
        )],
    )
    .await;
    assert_eq!(t.forwarded(), ["/es256", "/eddsa"]);
}

#[tokio::test]
async fn hs256_signed_with_the_issuers_public_key_is_refused() {
    // Key confusion: an HS256 token whose HMAC secret is the issuer's published key material.
    let iss = TestIssuer::new(ISS);
    let pem_iss = TestIssuer::new("https://pem-issuer.test");
    let jwks_file = iss.jwks_file();
    let dir = tempfile::tempdir().unwrap();
    let pem_file = dir.path().join("public.pem");
    let pem_text = p256_public_pem(match &pem_iss.key.verifying_key() {
        warden_crypto::jws::VerifyingKey::P256(p) => p,
        other => panic!("not P-256: {other:?}"),
    });
    std::fs::write(&pem_file, &pem_text).unwrap();
    let issuers = format!(
        "{}{}",
        issuer("jwks", ISS, &["ES256"], Keys::JwksFile(&jwks_file), ""),
        issuer(
            "pem",
            &pem_iss.iss,
            &["ES256"],
            Keys::PublicKeyFile(&pem_file),
            ""
        )
    );
    let t = Target::start(&issuers, "[\"jwt\"]", "").await;

    let jwks_text = std::fs::read(&jwks_file).unwrap();
    let jwk_text = iss.key.public_jwk().to_string();
    let claims = iss.claims("admin", "api", "admin");
    let pem_claims = pem_iss.claims("admin", "api", "admin");
    let cases: Vec<(&str, Value, &Value, Vec<u8>)> = vec![
        (
            "HS256, JWKS file bytes as secret, issuer's kid",
            json!({"alg": "HS256", "kid": iss.kid(), "typ": "JWT"}),
            &claims,
            jwks_text.clone(),
        ),
        (
            "HS256, JWKS file bytes as secret, no kid",
            json!({"alg": "HS256", "typ": "JWT"}),
            &claims,
            jwks_text,
        ),
        (
            "HS256, the single JWK as secret",
            json!({"alg": "HS256", "kid": iss.kid()}),
            &claims,
            jwk_text.into_bytes(),
        ),
        (
            "HS256, public key PEM text as secret",
            json!({"alg": "HS256", "typ": "JWT"}),
            &pem_claims,
            pem_text.clone().into_bytes(),
        ),
        (
            "HS256, public key PEM text without trailing newline as secret",
            json!({"alg": "HS256", "typ": "JWT"}),
            &pem_claims,
            pem_text.trim_end().as_bytes().to_vec(),
        ),
        (
            "HS512, public key PEM text as secret",
            json!({"alg": "HS512", "typ": "JWT"}),
            &pem_claims,
            pem_text.clone().into_bytes(),
        ),
    ];
    for (case, header, claims, secret) in cases {
        let token = if header["alg"] == "HS512" {
            hmac(ring::hmac::HMAC_SHA512, &header, claims, &secret)
        } else {
            hs256(&header, claims, &secret)
        };
        t.refused(
            case,
            &[("authorization", &bearer(&token))],
            invalid("algorithm_not_allowed"),
        )
        .await;
    }
    assert!(t.up.requests().is_empty());
    // Both issuers accept their real tokens.
    t.allowed(
        "JWKS-file issuer",
        "/jwks",
        &[(
            "authorization",
            &bearer(&iss.token(&iss.claims("a", "api", ""))),
        )],
    )
    .await;
    // (Without `kid`: see `a_public_key_file_issuer_accepts_tokens_that_carry_a_kid`.)
    t.allowed(
        "PEM-file issuer, token without kid",
        "/pem-nokid",
        &[(
            "authorization",
            &bearer(&pem_iss.token_with_header(
                &json!({"alg": "ES256", "typ": "at+jwt"}),
                &pem_iss.claims("b", "api", ""),
            )),
        )],
    )
    .await;
    assert_eq!(t.forwarded(), ["/jwks", "/pem-nokid"]);
}

fn hmac(alg: ring::hmac::Algorithm, header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", enc(header), enc(claims));
    let tag = ring::hmac::sign(&ring::hmac::Key::new(alg, secret), input.as_bytes());
    format!("{input}.{}", b64url(tag.as_ref()))
}

/// An RSA key made with the `openssl` command (ring cannot generate RSA keys): the PKCS#8
/// private key file and the `PUBLIC KEY` PEM file. `None` when `openssl` is not installed.
fn openssl_rsa_key(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let key = dir.join("rsa.key");
    let public = dir.join("rsa.pub.pem");
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let made = run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        key.to_str()?,
    ]) && run(&[
        "pkey",
        "-in",
        key.to_str()?,
        "-pubout",
        "-out",
        public.to_str()?,
    ]);
    made.then_some((key, public))
}

fn rs256(key: &ring::signature::RsaKeyPair, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", enc(header), enc(claims));
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .expect("RSA signature");
    format!("{input}.{}", b64url(&sig))
}

#[tokio::test]
async fn hs256_signed_with_an_rsa_issuers_public_key_pem_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some((key_file, pub_file)) = openssl_rsa_key(dir.path()) else {
        eprintln!("SKIPPED: the `openssl` command is needed to make an RSA key");
        return;
    };
    let der = PrivatePkcs8KeyDer::from_pem_file(&key_file).expect("PKCS#8 RSA key");
    let rsa = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("RSA key");
    let t = Target::start(
        &issuer("rsa", ISS, &["RS256"], Keys::PublicKeyFile(&pub_file), ""),
        "[\"jwt\"]",
        "",
    )
    .await;
    let claims = json!({
        "iss": ISS, "sub": "admin", "aud": "api", "scope": "admin",
        "iat": now(), "exp": now() + 300,
    });
    let pem_text = std::fs::read(&pub_file).unwrap();
    let trimmed = String::from_utf8(pem_text.clone())
        .unwrap()
        .trim_end()
        .to_owned();
    for (case, secret) in [
        ("HS256, RSA public key PEM as secret", pem_text.clone()),
        (
            "HS256, RSA public key PEM without trailing newline as secret",
            trimmed.into_bytes(),
        ),
    ] {
        let token = hs256(&json!({"alg": "HS256", "typ": "JWT"}), &claims, &secret);
        t.refused(
            case,
            &[("authorization", &bearer(&token))],
            invalid("algorithm_not_allowed"),
        )
        .await;
    }
    let ps256_header = json!({"alg": "PS256", "typ": "JWT"});
    t.refused(
        "PS256 header over an RS256 signature",
        &[(
            "authorization",
            &bearer(&{
                let (_, c, s) = split(&rs256(&rsa, &ps256_header, &claims));
                format!("{}.{c}.{s}", enc(&ps256_header))
            }),
        )],
        invalid("algorithm_not_allowed"),
    )
    .await;
    let mut tampered = claims.clone();
    tampered["sub"] = json!("root");
    let good = rs256(&rsa, &json!({"alg": "RS256", "typ": "JWT"}), &claims);
    let (h, _, s) = split(&good);
    t.refused(
        "RS256 token with the payload changed after signing",
        &[(
            "authorization",
            &bearer(&format!("{h}.{}.{s}", enc(&tampered))),
        )],
        invalid("bad_signature"),
    )
    .await;
    assert!(t.up.requests().is_empty());
    t.allowed(
        "RS256 token",
        "/rs256",
        &[("authorization", &bearer(&good))],
    )
    .await;
    assert_eq!(t.forwarded(), ["/rs256"]);
}

// ---------------------------------------------------------------------------------------------
// Signature attacks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tampered_stripped_and_forged_signatures_are_refused() {
    let iss = TestIssuer::new(ISS);
    let t = Target::es256(&iss).await;
    let claims = iss.claims("alice", "api", "read");
    let token = iss.token(&claims);
    let (h, c, s) = split(&token);

    let mut admin = claims.clone();
    admin["sub"] = json!("admin");
    t.refused(
        "sub changed after signing",
        &[(
            "authorization",
            &bearer(&format!("{h}.{}.{s}", enc(&admin))),
        )],
        invalid("bad_signature"),
    )
    .await;
    let mut scoped = claims.clone();
    scoped["scope"] = json!("read admin");
    t.refused(
        "scope widened after signing",
        &[(
            "authorization",
            &bearer(&format!("{h}.{}.{s}", enc(&scoped))),
        )],
        invalid("bad_signature"),
    )
    .await;
    t.refused(
        "signature stripped, trailing dot kept",
        &[("authorization", &bearer(&format!("{h}.{c}.")))],
        invalid("malformed_token"),
    )
    .await;
    t.refused(
        "signature stripped with its dot",
        &[("authorization", &bearer(&format!("{h}.{c}")))],
        invalid("malformed_token"),
    )
    .await;
    t.refused(
        "ES256 signature of 64 zero bytes (CVE-2022-21449)",
        &[(
            "authorization",
            &bearer(&unsigned(&iss.header(), &admin, &[0u8; 64])),
        )],
        invalid("bad_signature"),
    )
    .await;
    t.refused(
        "ES256 signature of one zero byte",
        &[(
            "authorization",
            &bearer(&unsigned(&iss.header(), &admin, &[0u8])),
        )],
        invalid("bad_signature"),
    )
    .await;
    let attacker = TestIssuer::new(ISS);
    t.refused(
        "signed by an unknown key reusing the issuer's kid",
        &[(
            "authorization",
            &bearer(&attacker.token_with_header(&iss.header(), &admin)),
        )],
        invalid("bad_signature"),
    )
    .await;
    t.refused(
        "signed by an unknown key, no kid",
        &[(
            "authorization",
            &bearer(&attacker.token_with_header(&json!({"alg": "ES256", "typ": "at+jwt"}), &admin)),
        )],
        invalid("bad_signature"),
    )
    .await;
    t.refused(
        "signed by an unknown key with its own kid",
        &[("authorization", &bearer(&attacker.token(&admin)))],
        invalid("unknown_kid"),
    )
    .await;
    let other = TestIssuer::new(ISS);
    let (_, _, other_sig) = split(&other.token(&claims));
    t.refused(
        "a signature from another token of the same shape",
        &[("authorization", &bearer(&format!("{h}.{c}.{other_sig}")))],
        invalid("bad_signature"),
    )
    .await;
    assert!(t.up.requests().is_empty());
}

#[tokio::test]
async fn key_location_headers_pointing_at_attacker_keys_are_ignored() {
    let iss = TestIssuer::new(ISS);
    let t = Target::es256(&iss).await;
    let attacker = TestIssuer::new(ISS);
    // A server the attacker controls, publishing the attacker's keys: the gateway must never
    // fetch from it.
    let evil = Upstream::start("evil").await;
    evil.set(Behaviour {
        body: Some(attacker.jwks().to_string()),
        headers: vec![("content-type".into(), "application/json".into())],
        ..Behaviour::default()
    });
    let jku = format!("{}/.well-known/jwks.json", evil.url());
    // An attacker certificate (from the attacker's own CA) whose key signs the token.
    let pki = Pki::new("attacker ca");
    let (cert, key) = pki.client("attacker", &["attacker.test"], &[]);
    let cert_key = SigningKey::from_pem(Alg::ES256, &std::fs::read(key).unwrap()).unwrap();
    let x5c = STANDARD.encode(CertificateDer::from_pem_file(&cert).unwrap());
    let ca_x5c =
        STANDARD.encode(CertificateDer::from_pem_slice(pki.ca.cert_pem().as_bytes()).unwrap());

    let claims = iss.claims("admin", "api", "admin");
    let akid = attacker.kid().to_owned();
    let cases: Vec<(&str, Value, &SigningKey, &str)> = vec![
        (
            "jwk header with the attacker's key and kid",
            json!({"alg": "ES256", "typ": "at+jwt", "kid": akid, "jwk": attacker.key.public_jwk()}),
            &attacker.key,
            "unknown_kid",
        ),
        (
            "jwk header with the attacker's key, no kid",
            json!({"alg": "ES256", "typ": "at+jwt", "jwk": attacker.key.public_jwk()}),
            &attacker.key,
            "bad_signature",
        ),
        (
            "jwk header with the attacker's key under the issuer's kid",
            json!({"alg": "ES256", "typ": "at+jwt", "kid": iss.kid(), "jwk": attacker.key.public_jwk()}),
            &attacker.key,
            "bad_signature",
        ),
        (
            "jku header at the attacker's JWKS, attacker kid",
            json!({"alg": "ES256", "typ": "at+jwt", "kid": akid, "jku": jku}),
            &attacker.key,
            "unknown_kid",
        ),
        (
            "jku header at the attacker's JWKS, issuer's kid",
            json!({"alg": "ES256", "typ": "at+jwt", "kid": iss.kid(), "jku": jku}),
            &attacker.key,
            "bad_signature",
        ),
        (
            "x5u header at the attacker's server",
            json!({"alg": "ES256", "typ": "at+jwt", "x5u": format!("{}/cert.pem", evil.url())}),
            &attacker.key,
            "bad_signature",
        ),
        (
            "x5c header with the attacker's certificate chain",
            json!({"alg": "ES256", "typ": "at+jwt", "x5c": [x5c, ca_x5c]}),
            &cert_key,
            "bad_signature",
        ),
        (
            "x5c header with the attacker's certificate, issuer's kid",
            json!({"alg": "ES256", "typ": "at+jwt", "kid": iss.kid(), "x5c": [x5c]}),
            &cert_key,
            "bad_signature",
        ),
    ];
    for (case, header, key, reason) in cases {
        t.refused(
            case,
            &[("authorization", &bearer(&signed_by(key, &header, &claims)))],
            invalid(reason),
        )
        .await;
    }
    assert!(t.up.requests().is_empty());
    // Give any background fetch a moment to show itself.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        evil.requests().is_empty(),
        "the gateway fetched from a URL named in a token header: {:?}",
        evil.requests()
    );
}

#[tokio::test]
async fn odd_kids_and_crit_headers_are_refused() {
    let iss = TestIssuer::new(ISS);
    let t = Target::es256(&iss).await;
    let claims = iss.claims("admin", "api", "admin");
    for kid in [
        "../../etc/passwd",
        "../../../../../../dev/null",
        "/etc/passwd",
        "' OR '1'='1",
        "",
    ] {
        let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": kid});
        t.refused(
            &format!("kid {kid:?}, signed by the issuer's key"),
            &[(
                "authorization",
                &bearer(&iss.token_with_header(&header, &claims)),
            )],
            invalid("unknown_kid"),
        )
        .await;
    }
    t.refused(
        "kid that is not a string",
        &[(
            "authorization",
            &bearer(&iss.token_with_header(&json!({"alg": "ES256", "kid": 1}), &claims)),
        )],
        invalid("malformed_token"),
    )
    .await;
    let mut crit = iss.header();
    crit["crit"] = json!(["exp"]);
    crit["exp"] = json!(now() + 300);
    t.refused(
        "crit [\"exp\"] with the field present",
        &[(
            "authorization",
            &bearer(&iss.token_with_header(&crit, &claims)),
        )],
        invalid("unsupported_crit"),
    )
    .await;
    let mut crit = iss.header();
    crit["crit"] = json!(["b64"]);
    crit["b64"] = json!(false);
    t.refused(
        "crit [\"b64\"] (unencoded payload)",
        &[(
            "authorization",
            &bearer(&iss.token_with_header(&crit, &claims)),
        )],
        invalid("unsupported_crit"),
    )
    .await;
    let mut crit = iss.header();
    crit["crit"] = json!([]);
    t.refused(
        "empty crit list",
        &[(
            "authorization",
            &bearer(&iss.token_with_header(&crit, &claims)),
        )],
        invalid("unsupported_crit"),
    )
    .await;
    assert!(t.up.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Claim attacks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn time_issuer_and_audience_claims_are_enforced() {
    let iss = TestIssuer::new(ISS);
    let t = Target::es256(&iss).await;
    let base = iss.claims("alice", "api", "read");
    let n = now();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = base.clone();
        f(&mut c);
        iss.token(&c)
    };
    let cases = [
        (
            "expired an hour ago",
            with(&|c| c["exp"] = json!(n - 3600)),
            "expired",
        ),
        (
            "expired just past the 30 s leeway",
            with(&|c| c["exp"] = json!(n - 31)),
            "expired",
        ),
        (
            "nbf an hour ahead",
            with(&|c| c["nbf"] = json!(n + 3600)),
            "not_yet_valid",
        ),
        (
            "nbf just past the 30 s leeway",
            with(&|c| c["nbf"] = json!(n + 60)),
            "not_yet_valid",
        ),
        (
            "iat an hour ahead",
            with(&|c| c["iat"] = json!(n + 3600)),
            "issued_in_future",
        ),
        (
            "no exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "missing_exp",
        ),
        (
            "exp as a string",
            with(&|c| c["exp"] = json!((n + 300).to_string())),
            "malformed_token",
        ),
        (
            "exp null",
            with(&|c| c["exp"] = Value::Null),
            "malformed_token",
        ),
        (
            "another issuer's iss (signed by this issuer's key)",
            with(&|c| c["iss"] = json!("https://evil.test")),
            "wrong_issuer",
        ),
        (
            "iss with a trailing slash",
            with(&|c| c["iss"] = json!(format!("{ISS}/"))),
            "wrong_issuer",
        ),
        (
            "no iss",
            with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
            "wrong_issuer",
        ),
        (
            "iss as an array holding the issuer",
            with(&|c| c["iss"] = json!([ISS])),
            "wrong_issuer",
        ),
        (
            "another audience",
            with(&|c| c["aud"] = json!("billing")),
            "wrong_audience",
        ),
        (
            "audience list without ours",
            with(&|c| c["aud"] = json!(["billing", "API", "api "])),
            "wrong_audience",
        ),
        (
            "no aud",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            "wrong_audience",
        ),
        (
            "no sub",
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
            "missing_sub",
        ),
        ("empty sub", with(&|c| c["sub"] = json!("")), "missing_sub"),
    ];
    for (case, token, reason) in cases {
        t.refused(case, &[("authorization", &bearer(&token))], invalid(reason))
            .await;
    }
    assert!(t.up.requests().is_empty());
}

#[tokio::test]
async fn a_cached_token_stops_working_when_it_expires() {
    let iss = TestIssuer::new(ISS);
    let jwks = iss.jwks_file();
    let t = Target::start(
        &issuer(
            "main",
            ISS,
            &["ES256"],
            Keys::JwksFile(&jwks),
            "leeway = \"0s\"",
        ),
        "[\"jwt\"]",
        "",
    )
    .await;
    let mut claims = iss.claims("alice", "api", "read");
    let exp = now() + 2;
    claims["exp"] = json!(exp);
    let token = iss.token(&claims);
    t.allowed(
        "fresh token",
        "/fresh",
        &[("authorization", &bearer(&token))],
    )
    .await;
    // Wait until the wall clock is past `exp` (the verified-token cache now holds it).
    while now() < exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.up.clear();
    t.refused(
        "the same token once expired",
        &[("authorization", &bearer(&token))],
        invalid("expired"),
    )
    .await;
    assert!(t.up.requests().is_empty());
}

#[tokio::test]
async fn a_route_pinned_to_one_issuer_refuses_another_issuers_token_even_once_cached() {
    let a = TestIssuer::new("https://a.test");
    let b = TestIssuer::new("https://b.test");
    let (ja, jb) = (a.jwks_file(), b.jwks_file());
    let up = Upstream::start("u").await;
    let toml = format!(
        "{}\n{}{}\n{}\n{}{}",
        base_toml(),
        issuer("a", &a.iss, &["ES256"], Keys::JwksFile(&ja), ""),
        issuer("b", &b.iss, &["ES256"], Keys::JwksFile(&jb), ""),
        cluster("c", &up),
        route("a-only", "/a-only/", "c", Some("accept = [\"jwt:a\"]")),
        route("api", "/", "c", Some("accept = [\"jwt\"]")),
    );
    let t = Target {
        gw: Gateway::start(&toml).await,
        up,
        route: "a-only",
    };
    let from_b = bearer(&b.token(&b.claims("bob", "api", "read")));
    let h = [("authorization", from_b.as_str())];
    t.refused_at(
        "issuer b's token, not yet cached",
        "/a-only/1",
        &h,
        invalid("wrong_issuer"),
    )
    .await;
    // Verified (and cached) on a route that takes any issuer ...
    t.allowed("issuer b's token on an any-issuer route", "/any", &h)
        .await;
    t.up.clear();
    // ... and still refused where only issuer a is accepted.
    t.refused_at(
        "issuer b's token, cached",
        "/a-only/2",
        &h,
        invalid("wrong_issuer"),
    )
    .await;
    t.allowed(
        "issuer a's token on its route",
        "/a-only/3",
        &[(
            "authorization",
            &bearer(&a.token(&a.claims("alice", "api", "read"))),
        )],
    )
    .await;
    assert_eq!(t.forwarded(), ["/a-only/3"]);
}

// ---------------------------------------------------------------------------------------------
// Shape attacks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let iss = TestIssuer::new(ISS);
    let t = Target::es256(&iss).await;
    let claims = iss.claims("alice", "api", "read");
    let token = iss.token(&claims);
    let (h, c, s) = split(&token);
    let jwe_header = enc(&json!({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": iss.kid()}));
    let cases: Vec<(&str, String)> = vec![
        (
            "five parts (a valid JWS with two more)",
            format!("{token}.{c}.{s}"),
        ),
        (
            "five parts in JWE shape",
            format!("{jwe_header}.AAAA.BBBB.CCCC.DDDD"),
        ),
        ("four parts", format!("{token}.{s}")),
        ("only dots", "..".into()),
        ("empty header part", format!(".{c}.{s}")),
        ("empty payload part", format!("{h}..{s}")),
        (
            "`%` percent-encoding in the header",
            format!("{h}%3D.{c}.{s}"),
        ),
        (
            "`%` characters in the payload",
            format!("{h}.%7B%22sub%22.{s}"),
        ),
        (
            "`=` padding inside the header part",
            format!("{h}=.{c}.{s}"),
        ),
        (
            "`=` padding inside the payload part",
            format!("{h}.{c}==.{s}"),
        ),
        ("`=` padding after the signature", format!("{h}.{c}.{s}=")),
        (
            "standard base64 (`+`/`/`) signature",
            format!("{h}.{c}.{}", s.replace('-', "+").replace('_', "/") + "+/"),
        ),
        (
            "non-JSON header",
            format!("{}.{c}.{s}", b64url(b"not json")),
        ),
        ("JSON array header", format!("{}.{c}.{s}", b64url(b"[]"))),
        (
            "non-JSON payload",
            format!("{h}.{}.{s}", b64url(b"{\"sub\":")),
        ),
        ("header that is not base64", format!("!!!.{c}.{s}")),
        ("a space inside the token", format!("{h}. {c}.{s}")),
        ("a comma-joined second token", format!("{token},{token}")),
    ];
    for (case, bad) in cases {
        t.refused(
            case,
            &[("authorization", &bearer(&bad))],
            invalid("malformed_token"),
        )
        .await;
    }
    // A single part (no dot) is not taken for a JWT at all: still 401, never forwarded (see
    // `a_bearer_token_that_is_not_a_jwt_is_refused_as_invalid_not_skipped`).
    let res = t.send("/attack", &[("authorization", &bearer(&h))]).await;
    assert_eq!(res.status, 401, "case `a single part`");
    assert!(t.up.requests().is_empty(), "case `a single part`");
    for (case, value) in [
        ("`Bearer` with nothing after it", "Bearer".to_owned()),
        ("`Bearer` and spaces", "Bearer    ".to_owned()),
        (
            "`Bearer` with a quoted token",
            format!("Bearer \"{token}\""),
        ),
    ] {
        t.refused(
            case,
            &[("authorization", &value)],
            invalid("malformed_token"),
        )
        .await;
    }
    assert!(t.up.requests().is_empty());
}

/// Sends one raw HTTP/1.1 request and reads until the gateway closes or goes quiet.
async fn raw_request(addr: std::net::SocketAddr, head: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // The gateway may answer and close before reading everything; a failed write is fine.
    let _ = s.write_all(head.as_bytes()).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn oversized_tokens_are_refused_before_verification() {
    let iss = TestIssuer::new(ISS);
    let t = Target::es256(&iss).await;
    // Validly signed, but past the issuer's max_token_bytes (8 KiB) and within the 16 KiB
    // header limit: refused by the auth layer.
    let mut claims = iss.claims("alice", "api", "read");
    claims["pad"] = json!("x".repeat(9 * 1024));
    let big = iss.token(&claims);
    t.refused(
        "validly signed 12 KiB token",
        &[("authorization", &bearer(&big))],
        invalid("token_too_large"),
    )
    .await;

    // 100 KB: past the header limit, which answers first (431) or the auth layer (401).
    claims["pad"] = json!("x".repeat(100 * 1024));
    let huge = iss.token(&claims);
    let head = format!(
        "GET /attack HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {huge}\r\nConnection: close\r\n\r\n"
    );
    let text = raw_request(t.gw.addr("main"), &head).await;
    let statuses = raw::statuses(&text);
    assert!(
        statuses == [431] || statuses == [401],
        "100 KB token: expected one 431 or 401, got {statuses:?}: {}",
        &text[..text.len().min(500)]
    );
    // Still serving, and nothing went through.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(t.up.requests().is_empty());
    t.refused("no token after the big ones", &[], MISSING).await;
}

#[tokio::test]
async fn a_huge_token_within_a_raised_header_limit_is_refused_by_size() {
    let iss = TestIssuer::new(ISS);
    let jwks = iss.jwks_file();
    let t = Target::start(
        &issuer("main", ISS, &["ES256"], Keys::JwksFile(&jwks), ""),
        "[\"jwt\"]",
        "[server]\nmax_header_bytes = \"256KiB\"\n",
    )
    .await;
    let mut claims = iss.claims("alice", "api", "read");
    for (case, pad) in [
        ("60 KB token (over max_token_bytes)", 60 * 1024),
        ("100 KB token (over the 64 KiB hard limit)", 100 * 1024),
    ] {
        claims["pad"] = json!("x".repeat(pad));
        let token = iss.token(&claims);
        t.refused(
            case,
            &[("authorization", &bearer(&token))],
            invalid("token_too_large"),
        )
        .await;
    }
    assert!(t.up.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Several accepted credentials
// ---------------------------------------------------------------------------------------------

/// A configured API key: (the key a client presents, its TOML entry).
fn api_key(owner: &str) -> (String, String) {
    let id = "k3y1d0001";
    let secret = "Secret0123456789Secret0123456789Secret01";
    let hex: String = warden_crypto::jws::sha256(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (
        format!("wdn_{id}_{secret}"),
        format!(
            "[[auth.api_keys.keys]]\nid = \"{id}\"\nhash = \"sha256:{hex}\"\nowner = \"{owner}\"\n"
        ),
    )
}

#[tokio::test]
async fn a_present_but_invalid_credential_is_never_skipped_for_another() {
    let iss = TestIssuer::new(ISS);
    let jwks = iss.jwks_file();
    let (key, key_toml) = api_key("svc-billing");
    let t = Target::start(
        &format!(
            "{}{key_toml}",
            issuer("main", ISS, &["ES256"], Keys::JwksFile(&jwks), "")
        ),
        "[\"jwt\", \"api_key\"]",
        "",
    )
    .await;
    let claims = iss.claims("alice", "api", "read");
    let (h, _, s) = split(&iss.token(&claims));
    let mut admin = claims.clone();
    admin["sub"] = json!("admin");
    let forged = format!("{h}.{}.{s}", enc(&admin));
    let expired = {
        let mut c = claims.clone();
        c["exp"] = json!(now() - 3600);
        iss.token(&c)
    };
    t.refused(
        "forged JWT with a valid API key in x-api-key",
        &[("authorization", &bearer(&forged)), ("x-api-key", &key)],
        invalid("bad_signature"),
    )
    .await;
    t.refused(
        "expired JWT with a valid API key in x-api-key",
        &[("authorization", &bearer(&expired)), ("x-api-key", &key)],
        invalid("expired"),
    )
    .await;
    t.refused(
        "alg none JWT with a valid API key in x-api-key",
        &[(
            "authorization",
            &bearer(&format!(
                "{}.{}.",
                enc(&json!({"alg": "none"})),
                enc(&admin)
            )),
        )],
        invalid("malformed_token"),
    )
    .await;
    t.refused(
        "wrong API key, with a valid JWT only in a cookie the route does not read",
        &[
            ("x-api-key", "wdn_k3y1d0001_WrongWrongWrong"),
            ("cookie", &format!("token={}", iss.token(&claims))),
        ],
        Want {
            status: 401,
            code: "invalid_token",
            reason: "wrong_secret",
        },
    )
    .await;
    assert!(t.up.requests().is_empty());
    // Each credential alone works.
    t.allowed("valid API key", "/key", &[("x-api-key", &key)])
        .await;
    t.allowed(
        "valid JWT",
        "/jwt",
        &[("authorization", &bearer(&iss.token(&claims)))],
    )
    .await;
    assert_eq!(t.forwarded(), ["/key", "/jwt"]);

    // The other order: the API key comes first, so a wrong one is refused even with a valid
    // JWT next to it.
    let t = Target::start(
        &format!(
            "{}{key_toml}",
            issuer("main", ISS, &["ES256"], Keys::JwksFile(&jwks), "")
        ),
        "[\"api_key\", \"jwt\"]",
        "",
    )
    .await;
    t.refused(
        "wrong API key with a valid JWT, api_key accepted first",
        &[
            ("x-api-key", "wdn_k3y1d0001_WrongWrongWrong"),
            ("authorization", &bearer(&iss.token(&claims))),
        ],
        Want {
            status: 401,
            code: "invalid_token",
            reason: "wrong_secret",
        },
    )
    .await;
    assert!(t.up.requests().is_empty());
    t.allowed(
        "valid JWT alone, api_key accepted first",
        "/jwt",
        &[("authorization", &bearer(&iss.token(&claims)))],
    )
    .await;
}

#[tokio::test]
async fn a_bearer_token_that_is_not_a_jwt_is_refused_as_invalid_not_skipped() {
    let iss = TestIssuer::new(ISS);
    let jwks = iss.jwks_file();
    let (key, key_toml) = api_key("svc-billing");
    let t = Target::start(
        &format!(
            "{}{key_toml}",
            issuer("main", ISS, &["ES256"], Keys::JwksFile(&jwks), "")
        ),
        "[\"jwt\", \"api_key\"]",
        "",
    )
    .await;
    t.refused(
        "opaque bearer token with a valid API key in x-api-key",
        &[("authorization", "Bearer not-a-jwt"), ("x-api-key", &key)],
        invalid("malformed_token"),
    )
    .await;
    t.refused(
        "opaque bearer token on a jwt route",
        &[("authorization", "Bearer not-a-jwt")],
        invalid("malformed_token"),
    )
    .await;
    assert!(t.up.requests().is_empty());
}

#[tokio::test]
async fn a_public_key_file_issuer_accepts_tokens_that_carry_a_kid() {
    let iss = TestIssuer::new(ISS);
    let dir = tempfile::tempdir().unwrap();
    let pem_file = dir.path().join("public.pem");
    let point = match iss.key.verifying_key() {
        warden_crypto::jws::VerifyingKey::P256(p) => p,
        other => panic!("not P-256: {other:?}"),
    };
    std::fs::write(&pem_file, p256_public_pem(&point)).unwrap();
    let t = Target::start(
        &issuer("pem", ISS, &["ES256"], Keys::PublicKeyFile(&pem_file), ""),
        "[\"jwt\"]",
        "",
    )
    .await;
    // The standard header: alg, kid (the key's RFC 7638 thumbprint) and typ.
    let token = iss.token(&iss.claims("alice", "api", "read"));
    let res = t.send("/kid", &[("authorization", &bearer(&token))]).await;
    let text = authcfg::metrics(t.gw.admin()).await;
    assert_eq!(res.status, 200, "denials:\n{}", denials(&text));
    assert_eq!(t.forwarded(), ["/kid"]);
}
