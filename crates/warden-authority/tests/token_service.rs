//! The token service over real sockets, on SQLite and PostgreSQL: every endpoint, each grant,
//! each client authentication method and failure, RFC 6749 errors, throttling, introspection,
//! revocation and its feed, key rotation, discovery, the admin API, and the audit log.

use crate::common;

use std::sync::Arc;

use common::*;
use serde_json::{json, Value};
use warden_crypto::jws::{Alg, Jwk, SigningKey};

// ---- client credentials and client authentication -----------------------------------------

async fn client_credentials_issues_rfc9068_tokens(b: Backend) {
    let h = Harness::start(b).await;
    let secret = h
        .basic_client(
            "orders",
            &["orders:read", "orders:write"],
            &["https://api.test"],
        )
        .await;
    let a = h
        .token("orders", &secret, &[("scope", "orders:read")])
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.header("cache-control"), Some("no-store"));
    assert_eq!(a.header("pragma"), Some("no-cache"));
    let v = a.json();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 300);
    assert_eq!(v["scope"], "orders:read");
    let (header, claims) = decode(v["access_token"].as_str().unwrap());
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(
        header["kid"],
        json!(h.handle.authority().current_kid().unwrap())
    );
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], "orders");
    assert_eq!(claims["client_id"], "orders");
    assert_eq!(claims["aud"], "https://api.test");
    assert_eq!(claims["scope"], "orders:read");
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(iat, h.now());
    assert_eq!(claims["exp"].as_i64().unwrap() - iat, 300);
    assert!(claims["jti"].as_str().unwrap().len() >= 16);
    // No scope asked: every scope of the client.
    let (_, c) = decode(&h.access_token("orders", &secret, &[]).await);
    assert_eq!(c["scope"], "orders:read orders:write");
    // client_secret_post for a client registered with it.
    let (id, post_secret) = h
        .client(json!({"client_id": "poster", "scopes": ["x"], "audiences": ["a"], "auth_method": "client_secret_post"}))
        .await;
    let post_secret = post_secret.unwrap();
    let a = h
        .form(
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &post_secret),
            ],
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    // A client uses the method it registered: Basic for a post client, post for a Basic one.
    assert_error(
        &h.token("poster", &post_secret, &[]).await,
        401,
        "invalid_client",
    );
    let a = h
        .form(
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "orders"),
                ("client_secret", &secret),
            ],
            None,
        )
        .await;
    assert_error(&a, 401, "invalid_client");
}
both_backends!(client_credentials_issues_rfc9068_tokens);

async fn scopes_and_audiences_can_only_be_what_the_client_has(b: Backend) {
    let h = Harness::start(b).await;
    let secret = h.basic_client("svc", &["a", "b"], &["aud1", "aud2"]).await;
    let (_, c) = decode(
        &h.access_token("svc", &secret, &[("audience", "aud2")])
            .await,
    );
    assert_eq!(c["aud"], "aud2");
    let (_, c) = decode(&h.access_token("svc", &secret, &[]).await);
    assert_eq!(c["aud"], json!(["aud1", "aud2"]));
    let (_, c) = decode(
        &h.access_token("svc", &secret, &[("resource", "aud1")])
            .await,
    );
    assert_eq!(c["aud"], "aud1");
    assert_error(
        &h.token("svc", &secret, &[("scope", "a c")]).await,
        400,
        "invalid_scope",
    );
    assert_error(
        &h.token("svc", &secret, &[("scope", "a\"")]).await,
        400,
        "invalid_scope",
    );
    assert_error(
        &h.token("svc", &secret, &[("audience", "other")]).await,
        400,
        "invalid_target",
    );
}
both_backends!(scopes_and_audiences_can_only_be_what_the_client_has);

async fn errors_follow_rfc6749(b: Backend) {
    let h = Harness::start(b).await;
    let secret = h.basic_client("svc", &["a"], &["aud"]).await;
    // Missing grant_type.
    assert_refusal(
        &h.form("/oauth2/token", &[], Some(("svc", &secret))).await,
        400,
        "invalid_request",
        "grant_type is missing",
    );
    // Unknown grant type.
    let a = h
        .form(
            "/oauth2/token",
            &[("grant_type", "password")],
            Some(("svc", &secret)),
        )
        .await;
    assert_refusal(
        &a,
        400,
        "unsupported_grant_type",
        "must be client_credentials or",
    );
    // A grant the client may not use.
    let a = h
        .form(
            "/oauth2/token",
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", "x"),
                ("subject_token_type", AT),
            ],
            Some(("svc", &secret)),
        )
        .await;
    assert_refusal(
        &a,
        400,
        "unauthorized_client",
        "not registered for this grant type",
    );
    // A repeated parameter.
    let req = hyper::Request::post("/oauth2/token")
        .header("host", "auth.test")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", basic_header("svc", &secret))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            "grant_type=client_credentials&scope=a&scope=a",
        )))
        .unwrap();
    assert_refusal(
        &warden_test_util::client::send_h1(h.addr(), req).await,
        400,
        "invalid_request",
        "appears more than once",
    );
    // Not a form.
    let req = hyper::Request::post("/oauth2/token")
        .header("host", "auth.test")
        .header("content-type", "application/json")
        .header("authorization", basic_header("svc", &secret))
        .body(http_body_util::Full::new(bytes::Bytes::from("{}")))
        .unwrap();
    assert_refusal(
        &warden_test_util::client::send_h1(h.addr(), req).await,
        400,
        "invalid_request",
        "application/x-www-form-urlencoded",
    );
    // Two authentication methods at once.
    let a = h
        .form(
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "svc"),
                ("client_secret", &secret),
            ],
            Some(("svc", &secret)),
        )
        .await;
    assert_refusal(&a, 400, "invalid_request", "more than one way");
    // No credentials, a wrong secret, an unknown client: the same 401.
    let none = h
        .form(
            "/oauth2/token",
            &[("grant_type", "client_credentials")],
            None,
        )
        .await;
    assert_refusal(&none, 401, "invalid_client", "no client credentials");
    let wrong = h
        .token("svc", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &[])
        .await;
    assert_refusal(
        &wrong,
        401,
        "invalid_client",
        "client authentication failed",
    );
    let unknown = h.token("nobody", &secret, &[]).await;
    assert_error(&unknown, 401, "invalid_client");
    // The description does not tell an unknown client from a wrong secret (nor from a method
    // the client is not registered for).
    assert_eq!(wrong.body, unknown.body);
    let post = token_post(h.addr(), "svc", &secret).await;
    assert_eq!(wrong.body, post.body);
    let malformed = hyper::Request::post("/oauth2/token")
        .header("host", "auth.test")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", "Basic !!!")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            "grant_type=client_credentials",
        )))
        .unwrap();
    assert_refusal(
        &warden_test_util::client::send_h1(h.addr(), malformed).await,
        401,
        "invalid_client",
        "not valid HTTP Basic",
    );
    // Scope and audience refusals say which rule was broken.
    assert_refusal(
        &h.token("svc", &secret, &[("scope", "a c")]).await,
        400,
        "invalid_scope",
        "not among the scopes registered for this client",
    );
    assert_refusal(
        &h.token("svc", &secret, &[("scope", "a\"")]).await,
        400,
        "invalid_scope",
        "section 3.3",
    );
    assert_refusal(
        &h.token("svc", &secret, &[("audience", "other")]).await,
        400,
        "invalid_target",
        "not registered for this client",
    );
    // Revocation and introspection name the missing parameter.
    assert_refusal(
        &h.form("/oauth2/revoke", &[], Some(("svc", &secret))).await,
        400,
        "invalid_request",
        "token parameter is missing",
    );
}
both_backends!(errors_follow_rfc6749);

/// Issue 15, item 10: a client registered for `client_secret_basic` alone is refused with
/// `client_secret_post`; one registered for both is accepted with either; the admin API
/// changes the set; records stored with one method (the old shape) still load; discovery
/// lists only what the server supports.
async fn a_client_may_register_several_auth_methods(b: Backend) {
    let h = Harness::start(b).await;
    let basic = h.basic_client("basic-only", &["a"], &["aud"]).await;
    assert_eq!(h.token("basic-only", &basic, &[]).await.status, 200);
    assert_error(
        &token_post(h.addr(), "basic-only", &basic).await,
        401,
        "invalid_client",
    );
    let (_, both) = h
        .client(json!({
            "client_id": "both", "scopes": ["a"], "audiences": ["aud"],
            "auth_method": ["client_secret_basic", "client_secret_post"],
        }))
        .await;
    let both = both.unwrap();
    let a = h.token("both", &both, &[]).await;
    assert_eq!(a.status, 200, "basic: {:?}", a.body);
    let a = token_post(h.addr(), "both", &both).await;
    assert_eq!(a.status, 200, "post: {:?}", a.body);
    assert_eq!(
        decode(a.json()["access_token"].as_str().unwrap()).1["client_id"],
        "both"
    );
    let v = h.admin("GET", "/admin/clients/both", None).await.json();
    assert_eq!(
        v["token_endpoint_auth_methods"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(v["token_endpoint_auth_method"], "client_secret_basic");
    // The admin API changes the set: post only now, so Basic is refused.
    let a = h
        .admin(
            "PATCH",
            "/admin/clients/basic-only",
            Some(json!({"auth_method": "client_secret_post"})),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        a.json()["client"]["token_endpoint_auth_methods"],
        json!(["client_secret_post"])
    );
    assert_eq!(token_post(h.addr(), "basic-only", &basic).await.status, 200);
    assert_error(
        &h.token("basic-only", &basic, &[]).await,
        401,
        "invalid_client",
    );
    // Nonsense is refused with the reason.
    for bad in [json!([]), json!(["client_secret_basic", "password"])] {
        let a = h
            .admin(
                "POST",
                "/admin/clients",
                Some(json!({"client_id": "bad", "audiences": ["aud"], "auth_method": bad})),
            )
            .await;
        assert_eq!(a.status, 400, "{bad}: {:?}", a.body);
    }
    let a = h
        .admin(
            "PATCH",
            "/admin/clients/both",
            Some(json!({"auth_method": ["private_key_jwt"]})),
        )
        .await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert!(a.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("private_key_jwt needs"));
    // One method is stored as one name, the shape records had before a client could hold
    // several; such a record (without the newer `introspect` field either) loads and works.
    let legacy = h.basic_client("legacy", &["a"], &["aud"]).await;
    let raw = h.store.get("tokens/clients/legacy").await.unwrap().unwrap();
    let mut rec: serde_json::Map<String, Value> = serde_json::from_slice(&raw).unwrap();
    assert_eq!(rec["auth_method"], "client_secret_basic");
    rec.remove("introspect");
    h.store
        .put("tokens/clients/legacy", &serde_json::to_vec(&rec).unwrap())
        .await
        .unwrap();
    assert_eq!(h.token("legacy", &legacy, &[]).await.status, 200);
    assert_error(
        &token_post(h.addr(), "legacy", &legacy).await,
        401,
        "invalid_client",
    );
    let raw = h.store.get("tokens/clients/both").await.unwrap().unwrap();
    let rec: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        rec["auth_method"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    // Discovery lists what this server supports: no tls_client_auth without a TLS listener
    // asking for client certificates (see tls_client_auth_binds_tokens_to_the_certificate).
    let meta = get_bearer(h.addr(), "/.well-known/oauth-authorization-server", None)
        .await
        .json();
    assert_eq!(
        meta["token_endpoint_auth_methods_supported"],
        json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt"
        ])
    );
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], false);
}
both_backends!(a_client_may_register_several_auth_methods);

async fn secrets_rotate_without_downtime_and_disabled_clients_are_refused(b: Backend) {
    let h = Harness::start(b).await;
    let old = h.basic_client("svc", &["a"], &["aud"]).await;
    let a = h.admin("POST", "/admin/clients/svc/secrets", None).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let new = a.json()["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(old, new);
    // Both work until the old one is removed.
    h.access_token("svc", &old, &[]).await;
    h.access_token("svc", &new, &[]).await;
    let view = h.admin("GET", "/admin/clients/svc", None).await.json();
    let secrets = view["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 2);
    assert!(!view.to_string().contains(&old) && !view.to_string().contains("hash"));
    let old_id = secrets[0]["id"].as_str().unwrap();
    let a = h
        .admin(
            "DELETE",
            &format!("/admin/clients/svc/secrets/{old_id}"),
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_error(&h.token("svc", &old, &[]).await, 401, "invalid_client");
    h.access_token("svc", &new, &[]).await;
    // A rotation that gives the old secrets a deadline.
    let a = h
        .admin(
            "POST",
            "/admin/clients/svc/secrets",
            Some(json!({"old_expires_in": 60})),
        )
        .await;
    let newer = a.json()["client_secret"].as_str().unwrap().to_owned();
    h.access_token("svc", &new, &[]).await;
    h.clock.advance(61);
    assert_error(&h.token("svc", &new, &[]).await, 401, "invalid_client");
    h.access_token("svc", &newer, &[]).await;
    // Disabled, then enabled again.
    assert_eq!(
        h.admin("POST", "/admin/clients/svc/disable", None)
            .await
            .status,
        200
    );
    assert_error(&h.token("svc", &newer, &[]).await, 401, "invalid_client");
    assert_eq!(
        h.admin("POST", "/admin/clients/svc/enable", None)
            .await
            .status,
        200
    );
    h.access_token("svc", &newer, &[]).await;
}
both_backends!(secrets_rotate_without_downtime_and_disabled_clients_are_refused);

fn assertion(key: &SigningKey, client: &str, aud: &str, jti: &str, now: i64, life: i64) -> String {
    key.sign_jwt(
        "JWT",
        &json!({"iss": client, "sub": client, "aud": aud, "jti": jti, "iat": now, "exp": now + life}),
    )
}

async fn jwt_token(
    h: &Harness,
    assertion: &str,
    client_id: Option<&str>,
) -> warden_test_util::client::Answer {
    let mut p = vec![
        ("grant_type", "client_credentials"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion),
    ];
    if let Some(id) = client_id {
        p.push(("client_id", id));
    }
    h.form("/oauth2/token", &p, None).await
}

async fn private_key_jwt_with_registered_keys_and_jwks_uri(b: Backend) {
    let h = Harness::start(b).await;
    let key = SigningKey::generate(Alg::ES256).unwrap();
    h.client(json!({
        "client_id": "signer", "scopes": ["a"], "audiences": ["aud"],
        "auth_method": "private_key_jwt", "jwks": {"keys": [key.public_jwk()]},
    }))
    .await;
    let token_endpoint = format!("{ISSUER}/oauth2/token");
    let now = h.now();
    let good = assertion(&key, "signer", &token_endpoint, "j1", now, 60);
    let a = jwt_token(&h, &good, Some("signer")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        decode(a.json()["access_token"].as_str().unwrap()).1["sub"],
        "signer"
    );
    // The same assertion again: replay.
    assert_error(&jwt_token(&h, &good, None).await, 401, "invalid_client");
    // The issuer is an accepted audience too; another audience is not.
    let a = jwt_token(&h, &assertion(&key, "signer", ISSUER, "j2", now, 60), None).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = jwt_token(
        &h,
        &assertion(&key, "signer", "https://elsewhere/token", "j3", now, 60),
        None,
    )
    .await;
    assert_error(&a, 401, "invalid_client");
    // Expired, too long-lived, signed by another key, naming another client.
    assert_error(
        &jwt_token(
            &h,
            &assertion(&key, "signer", ISSUER, "j4", now - 600, 60),
            None,
        )
        .await,
        401,
        "invalid_client",
    );
    assert_error(
        &jwt_token(
            &h,
            &assertion(&key, "signer", ISSUER, "j5", now, 7200),
            None,
        )
        .await,
        401,
        "invalid_client",
    );
    let other = SigningKey::generate(Alg::ES256).unwrap();
    assert_error(
        &jwt_token(
            &h,
            &assertion(&other, "signer", ISSUER, "j6", now, 60),
            None,
        )
        .await,
        401,
        "invalid_client",
    );
    assert_error(
        &jwt_token(
            &h,
            &assertion(&key, "signer", ISSUER, "j7", now, 60),
            Some("someone"),
        )
        .await,
        401,
        "invalid_client",
    );
    // Keys from a jwks_uri.
    let ed = SigningKey::generate(Alg::EdDSA).unwrap();
    let server =
        warden_test_util::servers::JwksServer::start(json!({"keys": [ed.public_jwk()]})).await;
    h.client(json!({
        "client_id": "remote", "scopes": ["a"], "audiences": ["aud"],
        "auth_method": "private_key_jwt", "jwks_uri": server.url(),
    }))
    .await;
    let a = jwt_token(
        &h,
        &assertion(&ed, "remote", &token_endpoint, "r1", now, 60),
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    // Expired replay records are cleaned up by the upkeep.
    let before = h.store.list("tokens/jti/").await.unwrap().len();
    assert!(before >= 3, "{before}");
    h.clock.advance(3600);
    h.handle.authority().tick().await.unwrap();
    assert_eq!(h.store.list("tokens/jti/").await.unwrap().len(), 0);
}
both_backends!(private_key_jwt_with_registered_keys_and_jwks_uri);

async fn tls_client_auth_binds_tokens_to_the_certificate(b: Backend) {
    let pki = warden_test_util::Pki::new("authority test CA");
    let (cert, key) = pki.server("authority", &["localhost"]);
    let ca = pki.ca_file();
    let h = Harness::start_with(b, |c, _| {
        c.tls = Some(warden_config::TlsListenerConfig {
            certificates: vec![warden_config::CertificateConfig {
                cert: cert.clone(),
                key: warden_config::SecretRef::File(key.clone()),
                server_names: vec![],
            }],
            client_auth: Some(warden_config::ClientAuthConfig {
                ca: ca.clone(),
                mode: warden_config::ClientAuthMode::Optional,
            }),
        });
    })
    .await;
    assert!(h.handle.url().starts_with("https://"));
    let spec = serde_json::from_value(json!({
        "client_id": "billing", "scopes": ["a"], "audiences": ["aud"],
        "auth_method": "tls_client_auth", "tls": {"san_dns": "billing.internal"},
    }))
    .unwrap();
    let authority = h.handle.authority();
    authority
        .registry()
        .create(spec, "test", h.now())
        .await
        .unwrap();
    let (good_cert, good_key) = pki.client("billing", &["billing.internal"], &[]);
    let (bad_cert, bad_key) = pki.client("intruder", &["intruder.internal"], &[]);
    let send = |cert: Option<(std::path::PathBuf, std::path::PathBuf)>| {
        let ca = ca.clone();
        let addr = h.addr();
        async move {
            let cfg = warden_test_util::client::tls_config(
                &ca,
                cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
                &[b"http/1.1"],
            );
            let req = form_request(
                "/oauth2/token",
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", "billing"),
                ],
                None,
            );
            warden_test_util::client::send_tls(addr, "localhost", cfg, req)
                .await
                .unwrap()
        }
    };
    let a = send(Some((good_cert.clone(), good_key))).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let (_, claims) = decode(a.json()["access_token"].as_str().unwrap());
    let der = rustls_pki_types::CertificateDer::from_pem_file(&good_cert).unwrap();
    use rustls_pki_types::pem::PemObject as _;
    assert_eq!(
        claims["cnf"]["x5t#S256"],
        warden_auth::cert::thumbprint(&der)
    );
    assert_error(
        &send(Some((bad_cert, bad_key))).await,
        401,
        "invalid_client",
    );
    assert_error(&send(None).await, 401, "invalid_client");
    // With client certificates asked for, discovery offers tls_client_auth.
    let cfg = warden_test_util::client::tls_config(&ca, None, &[b"http/1.1"]);
    let req = hyper::Request::get("/.well-known/oauth-authorization-server")
        .header("host", "auth.test")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let meta = warden_test_util::client::send_tls(h.addr(), "localhost", cfg, req)
        .await
        .unwrap()
        .json();
    assert_eq!(
        meta["token_endpoint_auth_methods_supported"],
        json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "tls_client_auth"
        ])
    );
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);
}
both_backends!(tls_client_auth_binds_tokens_to_the_certificate);

async fn failed_authentications_are_throttled(b: Backend) {
    let h = Harness::start_with(b, |c, _| {
        c.failed_auth.per_client = 3;
        c.failed_auth.per_address = 6;
    })
    .await;
    let secret = h.basic_client("svc", &["a"], &["aud"]).await;
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for _ in 0..3 {
        assert_error(&h.token("svc", wrong, &[]).await, 401, "invalid_client");
    }
    let a = h.token("svc", wrong, &[]).await;
    assert_eq!(a.status, 429, "{:?}", a.body);
    assert!(a.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    // While blocked, even the right secret is not checked.
    assert_eq!(h.token("svc", &secret, &[]).await.status, 429);
    // Per address: other client ids from the same address run out too.
    let other = h.basic_client("other", &["a"], &["aud"]).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(h.token("ghost", wrong, &[]).await.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(h.token("other", &other, &[]).await.status, 429);
}
both_backends!(failed_authentications_are_throttled);

// ---- token exchange ------------------------------------------------------------------------

async fn token_exchange_narrows_and_chains_actors(b: Backend) {
    let h = Harness::start(b).await;
    let front = h
        .basic_client("frontend", &["orders:read", "orders:write"], &["orders"])
        .await;
    let (_, orders) = h
        .client(json!({
            "client_id": "orders", "scopes": [], "audiences": ["orders"],
            "exchange_audiences": ["inventory", "billing"], "grant_types": [EXCHANGE],
        }))
        .await;
    let orders = orders.unwrap();
    let (_, inventory) = h
        .client(json!({
            "client_id": "inventory", "audiences": ["inventory"],
            "exchange_audiences": ["warehouse"], "grant_types": [EXCHANGE],
        }))
        .await;
    let inventory = inventory.unwrap();
    let t = h.access_token("frontend", &front, &[]).await;
    let exchange = |id: &'static str,
                    secret: String,
                    subject: String,
                    extra: Vec<(&'static str, &'static str)>| {
        let h = &h;
        async move {
            let mut p = vec![
                ("grant_type", EXCHANGE),
                ("subject_token", subject.as_str()),
                ("subject_token_type", AT),
            ];
            p.extend(extra);
            h.form("/oauth2/token", &p, Some((id, &secret))).await
        }
    };
    let a = exchange(
        "orders",
        orders.clone(),
        t.clone(),
        vec![("audience", "inventory"), ("scope", "orders:read")],
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.header("cache-control"), Some("no-store"));
    let v = a.json();
    assert_eq!(v["issued_token_type"], AT);
    let t2 = v["access_token"].as_str().unwrap().to_owned();
    let (_, c) = decode(&t2);
    assert_eq!(c["sub"], "frontend");
    assert_eq!(c["client_id"], "orders");
    assert_eq!(c["aud"], "inventory");
    assert_eq!(c["scope"], "orders:read");
    assert_eq!(c["act"], json!({"sub": "orders"}));
    // The next hop: the chain grows, the scopes stay at most what the subject token had.
    let a = exchange(
        "inventory",
        inventory.clone(),
        t2.clone(),
        vec![("audience", "warehouse")],
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let (_, c) = decode(a.json()["access_token"].as_str().unwrap());
    assert_eq!(
        c["act"],
        json!({"sub": "inventory", "act": {"sub": "orders"}})
    );
    assert_eq!(c["scope"], "orders:read");
    assert!(c["exp"].as_i64() <= decode(&t2).1["exp"].as_i64());
    // Widening scopes, an audience the client may not exchange for, a bad subject token.
    let a = exchange(
        "inventory",
        inventory.clone(),
        t2.clone(),
        vec![("audience", "warehouse"), ("scope", "orders:write")],
    )
    .await;
    assert_error(&a, 400, "invalid_scope");
    let a = exchange(
        "orders",
        orders.clone(),
        t.clone(),
        vec![("audience", "warehouse")],
    )
    .await;
    assert_error(&a, 400, "invalid_target");
    let a = exchange(
        "orders",
        orders.clone(),
        "not.a.token".into(),
        vec![("audience", "inventory")],
    )
    .await;
    assert_error(&a, 400, "invalid_grant");
    let foreign = warden_test_util::jwt::TestIssuer::new(ISSUER);
    let forged = foreign.token(&foreign.claims("frontend", "orders", "orders:read"));
    let a = exchange(
        "orders",
        orders.clone(),
        forged,
        vec![("audience", "inventory")],
    )
    .await;
    assert_error(&a, 400, "invalid_grant");
    let a = h
        .form(
            "/oauth2/token",
            &[("grant_type", EXCHANGE), ("subject_token", &t)],
            Some(("orders", &orders)),
        )
        .await;
    assert_error(&a, 400, "invalid_request");
    // A revoked subject token cannot be exchanged; an expired one neither.
    let r = h
        .form(
            "/oauth2/revoke",
            &[("token", &t)],
            Some(("frontend", &front)),
        )
        .await;
    assert_eq!(r.status, 200);
    let a = exchange(
        "orders",
        orders.clone(),
        t.clone(),
        vec![("audience", "inventory")],
    )
    .await;
    assert_error(&a, 400, "invalid_grant");
    h.clock.advance(301);
    let a = exchange("inventory", inventory, t2, vec![("audience", "warehouse")]).await;
    assert_error(&a, 400, "invalid_grant");
}
both_backends!(token_exchange_narrows_and_chains_actors);

// ---- introspection, revocation, feed -------------------------------------------------------

async fn introspection_revocation_and_the_feed(b: Backend) {
    let h = Harness::start(b).await;
    let secret = h.basic_client("svc", &["a"], &["aud"]).await;
    let other = h.introspecting_client("other", &["a"], &["aud"]).await;
    let t = h.access_token("svc", &secret, &[]).await;
    let jti = decode(&t).1["jti"].as_str().unwrap().to_owned();
    // Introspection needs an authenticated caller.
    assert_error(
        &h.form("/oauth2/introspect", &[("token", &t)], None).await,
        401,
        "invalid_client",
    );
    let a = h
        .form(
            "/oauth2/introspect",
            &[("token", &t)],
            Some(("other", &other)),
        )
        .await;
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(v["active"], true);
    assert_eq!(v["client_id"], "svc");
    assert_eq!(v["sub"], "svc");
    assert_eq!(v["scope"], "a");
    assert_eq!(v["jti"], json!(jti));
    assert_eq!(v["iss"], ISSUER);
    let a = h
        .form(
            "/oauth2/introspect",
            &[("token", "garbage")],
            Some(("other", &other)),
        )
        .await;
    assert_eq!(a.json(), json!({"active": false}));
    assert_error(
        &h.form("/oauth2/introspect", &[], Some(("other", &other)))
            .await,
        400,
        "invalid_request",
    );
    // The feed needs its token (or the admin token).
    assert_eq!(
        get_bearer(h.addr(), "/oauth2/revocations", None)
            .await
            .status,
        401
    );
    assert_eq!(
        get_bearer(h.addr(), "/oauth2/revocations", Some("nope"))
            .await
            .status,
        401
    );
    let feed = get_bearer(h.addr(), "/oauth2/revocations?after=0", Some(FEED_TOKEN)).await;
    assert_eq!(feed.json(), json!({"revocations": [], "next": 0}));
    // Only the client the token was issued to may revoke it.
    let a = h
        .form("/oauth2/revoke", &[("token", &t)], Some(("other", &other)))
        .await;
    assert_error(&a, 400, "unauthorized_client");
    let a = h
        .form(
            "/oauth2/revoke",
            &[("token", &t), ("token_type_hint", "id_token")],
            Some(("svc", &secret)),
        )
        .await;
    assert_error(&a, 400, "unsupported_token_type");
    let mut pushed = h.handle.authority().subscribe_revocations();
    let a = h
        .form(
            "/oauth2/revoke",
            &[("token", &t), ("token_type_hint", "access_token")],
            Some(("svc", &secret)),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(pushed.try_recv().unwrap().jti, jti);
    assert!(a.body.is_empty());
    // Unknown tokens: 200 as well (RFC 7009 §2.2).
    assert_eq!(
        h.form(
            "/oauth2/revoke",
            &[("token", "junk")],
            Some(("svc", &secret))
        )
        .await
        .status,
        200
    );
    let a = h
        .form(
            "/oauth2/introspect",
            &[("token", &t)],
            Some(("other", &other)),
        )
        .await;
    assert_eq!(a.json(), json!({"active": false}));
    // The feed has it, once, with its expiry.
    let feed = get_bearer(h.addr(), "/oauth2/revocations?after=0", Some(FEED_TOKEN))
        .await
        .json();
    let entries = feed["revocations"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{feed}");
    assert_eq!(entries[0]["jti"], json!(jti));
    assert_eq!(entries[0]["exp"], decode(&t).1["exp"]);
    let next = feed["next"].as_u64().unwrap();
    assert_eq!(entries[0]["seq"].as_u64(), Some(next));
    let again = get_bearer(
        h.addr(),
        &format!("/oauth2/revocations?after={next}"),
        Some(ADMIN_TOKEN),
    )
    .await
    .json();
    assert_eq!(again, json!({"revocations": [], "next": next}));
    // Revoking twice is one entry; a second token gets the next number.
    h.form("/oauth2/revoke", &[("token", &t)], Some(("svc", &secret)))
        .await;
    let t2 = h.access_token("svc", &secret, &[]).await;
    h.form("/oauth2/revoke", &[("token", &t2)], Some(("svc", &secret)))
        .await;
    let feed = get_bearer(
        h.addr(),
        &format!("/oauth2/revocations?after={next}"),
        Some(FEED_TOKEN),
    )
    .await
    .json();
    assert_eq!(feed["revocations"].as_array().unwrap().len(), 1, "{feed}");
    assert_eq!(feed["next"].as_u64(), Some(next + 1));
    // Kept until the tokens expire, then cleaned up (the newest feed number is kept).
    h.clock.advance(301);
    h.handle.authority().tick().await.unwrap();
    assert!(h.store.list("tokens/revoked/").await.unwrap().is_empty());
    assert_eq!(h.store.list("tokens/revocations/").await.unwrap().len(), 1);
}
both_backends!(introspection_revocation_and_the_feed);

/// Issue 15, item 12: only clients granted `introspect` see token claims; any other client is
/// answered `{"active": false}` (even for its own token), and the refusal is audited.
async fn introspection_needs_the_introspect_grant(b: Backend) {
    let h = Harness::start(b).await;
    let secret = h.basic_client("svc", &["a"], &["aud"]).await;
    let nosy = h.basic_client("nosy", &["a"], &["aud"]).await;
    let rs = h
        .introspecting_client("resource-server", &[], &["aud"])
        .await;
    let t = h.access_token("svc", &secret, &[]).await;
    let inactive = json!({"active": false});
    assert_eq!(introspect_at(h.addr(), &t, "nosy", &nosy).await, inactive);
    assert_eq!(introspect_at(h.addr(), &t, "svc", &secret).await, inactive);
    let v = introspect_at(h.addr(), &t, "resource-server", &rs).await;
    assert_eq!(v["active"], true);
    assert_eq!(v["client_id"], "svc");
    // Still refused after a granted client's answer was cached.
    assert_eq!(introspect_at(h.addr(), &t, "nosy", &nosy).await, inactive);
    let refusals: Vec<Value> = h
        .audit_json()
        .await
        .into_iter()
        .filter(|r| r["event"]["action"] == "token.introspect")
        .collect();
    assert_eq!(refusals.len(), 3, "{refusals:#?}");
    assert_eq!(refusals[0]["event"]["actor"], "nosy");
    assert_eq!(refusals[0]["event"]["outcome"], "failure");
    assert_eq!(refusals[0]["event"]["detail"]["reason"], "not_permitted");
    // The admin API grants it (and shows it).
    let a = h
        .admin(
            "PATCH",
            "/admin/clients/nosy",
            Some(json!({"introspect": true})),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.json()["client"]["introspect"], true);
    assert_eq!(
        introspect_at(h.addr(), &t, "nosy", &nosy).await["active"],
        true
    );
    assert_eq!(
        h.admin("GET", "/admin/clients/svc", None).await.json()["introspect"],
        false
    );
}
both_backends!(introspection_needs_the_introspect_grant);

/// Introspects `token` at `addr` as `id`.
async fn introspect_at(addr: std::net::SocketAddr, token: &str, id: &str, secret: &str) -> Value {
    Harness::introspect_at(addr, token, id, secret).await
}

async fn a_token_revoked_here_is_inactive_at_once(b: Backend) {
    let h = Harness::start(b).await;
    let secret = h.basic_client("svc", &["a"], &["aud"]).await;
    let (_, other) = h
        .client(json!({
            "client_id": "other", "audiences": ["aud"], "exchange_audiences": ["aud"],
            "grant_types": [EXCHANGE], "introspect": true,
        }))
        .await;
    let other = other.unwrap();
    let t = h.access_token("svc", &secret, &[]).await;
    let kept = h.access_token("svc", &secret, &[]).await;
    // Introspected repeatedly: the later answers come from memory and say the same.
    let first = introspect_at(h.addr(), &t, "other", &other).await;
    assert_eq!(first["active"], true);
    assert_eq!(first["jti"], decode(&t).1["jti"]);
    for _ in 0..3 {
        assert_eq!(introspect_at(h.addr(), &t, "other", &other).await, first);
    }
    assert_eq!(
        introspect_at(h.addr(), &kept, "other", &other).await["active"],
        true
    );
    let a = h
        .form("/oauth2/revoke", &[("token", &t)], Some(("svc", &secret)))
        .await;
    assert_eq!(a.status, 200);
    // The very next introspection, on the same instance, refuses it; another token is
    // untouched.
    assert_eq!(
        introspect_at(h.addr(), &t, "other", &other).await,
        json!({"active": false})
    );
    assert_eq!(
        introspect_at(h.addr(), &kept, "other", &other).await["active"],
        true
    );
    // Token exchange, which shares the revocation check, refuses it too.
    let exchange = |subject: String| {
        let (addr, other) = (h.addr(), other.clone());
        async move {
            let p = [
                ("grant_type", EXCHANGE),
                ("subject_token", subject.as_str()),
                ("subject_token_type", AT),
            ];
            post_form(addr, "/oauth2/token", &p, Some(("other", &other))).await
        }
    };
    assert_error(&exchange(t.clone()).await, 400, "invalid_grant");
    let a = exchange(kept.clone()).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
}
both_backends!(a_token_revoked_here_is_inactive_at_once);

/// Two authority instances on one PostgreSQL database (same key-encryption key): a token
/// revoked through the second is refused by the first within
/// `warden_authority::revocation::REVOCATION_CACHE_TTL` (plus a margin for scheduling).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_through_another_instance_is_inactive_within_the_bound() {
    if std::env::var("WARDEN_TEST_DATABASE_URL").is_err() {
        eprintln!("WARDEN_TEST_DATABASE_URL is not set: skipped (needs a shared PostgreSQL)");
        return;
    }
    let bound = warden_authority::revocation::REVOCATION_CACHE_TTL;
    let margin = std::time::Duration::from_millis(1000);
    let h = Harness::start(Backend::Postgres).await;
    let second = h.second_instance().await;
    let secret = h.basic_client("svc", &["a"], &["aud"]).await;
    let other = h.introspecting_client("other", &["a"], &["aud"]).await;
    let t = h.access_token("svc", &secret, &[]).await;
    // Both instances know the token (shared keys); the first has it in memory as active and
    // not revoked, read just now.
    assert_eq!(
        introspect_at(second.addr(), &t, "other", &other).await["active"],
        true
    );
    for _ in 0..3 {
        assert_eq!(
            introspect_at(h.addr(), &t, "other", &other).await["active"],
            true
        );
    }
    // Revoked through the second instance (the client authenticates there from the shared
    // store): the second refuses it at once.
    let a = post_form(
        second.addr(),
        "/oauth2/revoke",
        &[("token", &t)],
        Some(("svc", &secret)),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let revoked = std::time::Instant::now();
    assert_eq!(
        introspect_at(second.addr(), &t, "other", &other).await,
        json!({"active": false})
    );
    // The first refuses it within the bound.
    let took = loop {
        let v = introspect_at(h.addr(), &t, "other", &other).await;
        let took = revoked.elapsed();
        if v == json!({"active": false}) {
            break took;
        }
        assert_eq!(v["active"], true, "{v}");
        assert!(
            took <= bound + margin,
            "still active {took:?} after the revocation on another instance (bound {bound:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    eprintln!("revocation through the other instance honoured after {took:?} (bound {bound:?})");
    assert!(took <= bound + margin, "{took:?}");
    // And stays refused.
    assert_eq!(
        introspect_at(h.addr(), &t, "other", &other).await,
        json!({"active": false})
    );
    second.shutdown().await;
}

async fn an_expired_token_is_inactive_even_when_cached(b: Backend) {
    let h = Harness::start(b).await;
    let secret = h.introspecting_client("svc", &["a"], &["aud"]).await;
    let t = h.access_token("svc", &secret, &[]).await;
    let exp = decode(&t).1["exp"].as_i64().unwrap();
    assert_eq!(
        introspect_at(h.addr(), &t, "svc", &secret).await["active"],
        true
    );
    // The last second of its life: still active (from memory).
    h.clock.set(exp - 1);
    assert_eq!(
        introspect_at(h.addr(), &t, "svc", &secret).await["active"],
        true
    );
    // At `exp`: inactive, although it was remembered as active.
    h.clock.set(exp);
    assert_eq!(
        introspect_at(h.addr(), &t, "svc", &secret).await,
        json!({"active": false})
    );
    // With the clock set back, it verifies afresh, as it would never having been cached.
    h.clock.set(exp - 1);
    assert_eq!(
        introspect_at(h.addr(), &t, "svc", &secret).await["active"],
        true
    );
}
both_backends!(an_expired_token_is_inactive_even_when_cached);

async fn a_token_whose_key_left_the_ring_is_inactive_even_when_cached(b: Backend) {
    let h = Harness::start(b).await;
    let secret = h.introspecting_client("svc", &["a"], &["aud"]).await;
    let t = h.access_token("svc", &secret, &[]).await;
    assert_eq!(
        introspect_at(h.addr(), &t, "svc", &secret).await["active"],
        true
    );
    // The key is removed (as another instance retiring it would); the next upkeep reloads
    // the ring, which now holds only a new key.
    for k in h.store.list("tokens/keys/").await.unwrap() {
        h.store.delete(&k).await.unwrap();
    }
    h.handle.authority().tick().await.unwrap();
    assert_ne!(
        h.handle.authority().current_kid(),
        decode(&t).0["kid"].as_str().map(str::to_owned)
    );
    assert_eq!(
        introspect_at(h.addr(), &t, "svc", &secret).await,
        json!({"active": false})
    );
    // Tokens of the new key are active.
    let fresh = h.access_token("svc", &secret, &[]).await;
    assert_eq!(
        introspect_at(h.addr(), &fresh, "svc", &secret).await["active"],
        true
    );
}
both_backends!(a_token_whose_key_left_the_ring_is_inactive_even_when_cached);

// ---- keys, JWKS, discovery, the gateway's verifier ----------------------------------------

async fn gateway_issuer(h: &Harness) -> warden_auth::jwt::Issuer {
    let jwks = get_bearer(h.addr(), "/oauth2/jwks", None).await.json();
    let (keys, skipped) = Jwk::set_from_json(&jwks).unwrap();
    assert!(skipped.is_empty());
    let cfg: warden_config::JwtIssuerConfig = toml::from_str(&format!(
        "name = \"authority\"\nissuer = \"{ISSUER}\"\naudiences = [\"aud\"]\nalgorithms = [\"ES256\"]\nrequire_typ = \"at+jwt\"\njwks_url = \"{}/oauth2/jwks\"",
        h.handle.url()
    ))
    .unwrap();
    warden_auth::jwt::Issuer::new(&cfg, warden_auth::keys::KeySet::fixed(keys))
}

async fn verify_at_gateway(
    h: &Harness,
    token: &str,
) -> Result<warden_auth::Identity, warden_auth::jwt::JwtError> {
    let issuer = gateway_issuer(h).await;
    let parsed = warden_auth::jwt::parse(token)?;
    issuer.verify(&parsed, h.now()).await
}

async fn the_gateway_verifier_trusts_issued_tokens(b: Backend) {
    let h = Harness::start(b).await;
    let secret = h.basic_client("svc", &["a", "b"], &["aud"]).await;
    let t = h.access_token("svc", &secret, &[]).await;
    let id = verify_at_gateway(&h, &t)
        .await
        .expect("gateway accepts the token");
    assert_eq!(id.subject, "svc");
    assert_eq!(id.client_id.as_deref(), Some("svc"));
    assert_eq!(id.scopes, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(id.jti.as_deref(), decode(&t).1["jti"].as_str());
}
both_backends!(the_gateway_verifier_trusts_issued_tokens);

async fn keys_are_published_before_they_sign_and_kept_until_their_tokens_expire(b: Backend) {
    let h = Harness::start_with(b, |c, _| {
        c.key_rotation = warden_config::Dur::secs(1800);
        c.key_publish_ahead = warden_config::Dur::secs(600);
        c.token_lifetime = warden_config::Dur::secs(3600);
        c.max_token_lifetime = warden_config::Dur::secs(3600);
    })
    .await;
    let secret = h.basic_client("svc", &["a"], &["aud"]).await;
    let jwks = |h: &Harness| {
        let addr = h.addr();
        async move { get_bearer(addr, "/oauth2/jwks", None).await }
    };
    let first = jwks(&h).await;
    assert_eq!(first.header("cache-control"), Some("public, max-age=300"));
    let kids = |v: &Value| -> Vec<String> {
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    let k1 = kids(&first.json());
    assert_eq!(k1.len(), 1);
    let old = h.access_token("svc", &secret, &[]).await;
    assert_eq!(decode(&old).0["kid"], json!(k1[0]));
    // Within publish-ahead of the rotation: the next key is published, the old one signs.
    h.clock.advance(1200);
    h.handle.authority().tick().await.unwrap();
    let both = kids(&jwks(&h).await.json());
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(both[0], k1[0]);
    let t = h.access_token("svc", &secret, &[]).await;
    assert_eq!(
        decode(&t).0["kid"],
        json!(k1[0]),
        "the new key must not sign before its time"
    );
    // At the rotation time the new key signs; tokens of the old one still verify.
    h.clock.advance(600);
    h.handle.authority().tick().await.unwrap();
    let new = h.access_token("svc", &secret, &[]).await;
    assert_eq!(decode(&new).0["kid"], json!(both[1]));
    verify_at_gateway(&h, &old)
        .await
        .expect("old token still verifies");
    verify_at_gateway(&h, &new)
        .await
        .expect("new token verifies");
    // Every key made is audited.
    let created = h
        .audit_json()
        .await
        .iter()
        .filter(|r| r["event"]["action"] == "key.create")
        .count();
    assert_eq!(created, 2);
    // Once every token of the old key has expired, it leaves the JWKS.
    h.clock.advance(3600 + 31);
    h.handle.authority().tick().await.unwrap();
    let now = kids(&jwks(&h).await.json());
    assert!(!now.contains(&k1[0]), "{now:?}");
    assert!(now.contains(&both[1]), "{now:?}");
}
both_backends!(keys_are_published_before_they_sign_and_kept_until_their_tokens_expire);

async fn discovery_metadata(b: Backend) {
    let h = Harness::start(b).await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let a = get_bearer(h.addr(), path, None).await;
        assert_eq!(a.status, 200);
        let v = a.json();
        assert_eq!(v["issuer"], ISSUER);
        assert_eq!(v["token_endpoint"], format!("{ISSUER}/oauth2/token"));
        assert_eq!(v["jwks_uri"], format!("{ISSUER}/oauth2/jwks"));
        assert_eq!(
            v["introspection_endpoint"],
            format!("{ISSUER}/oauth2/introspect")
        );
        assert_eq!(v["revocation_endpoint"], format!("{ISSUER}/oauth2/revoke"));
        assert_eq!(
            v["grant_types_supported"],
            json!(["client_credentials", EXCHANGE])
        );
        // No TLS client certificates on this listener: no tls_client_auth.
        let methods = json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt"
        ]);
        assert_eq!(v["token_endpoint_auth_methods_supported"], methods);
        assert_eq!(v["introspection_endpoint_auth_methods_supported"], methods);
        assert_eq!(v["revocation_endpoint_auth_methods_supported"], methods);
        assert_eq!(v["tls_client_certificate_bound_access_tokens"], false);
        if path.contains("openid") {
            assert_eq!(v["subject_types_supported"], json!(["public"]));
        }
    }
    assert_eq!(get_bearer(h.addr(), "/healthz", None).await.status, 200);
}
both_backends!(discovery_metadata);

// ---- admin API and audit ------------------------------------------------------------------

async fn the_admin_api_needs_the_admin_token(b: Backend) {
    let h = Harness::start(b).await;
    assert_eq!(
        admin_call(h.addr(), "GET", "/admin/clients", None, None)
            .await
            .status,
        401
    );
    assert_eq!(
        admin_call(h.addr(), "GET", "/admin/clients", None, Some("wrong"))
            .await
            .status,
        401
    );
    assert_eq!(
        admin_call(h.addr(), "GET", "/admin/clients", None, Some(FEED_TOKEN))
            .await
            .status,
        401
    );
    h.basic_client("svc", &["a"], &["aud"]).await;
    let list = h.admin("GET", "/admin/clients", None).await.json();
    assert_eq!(list["clients"][0]["client_id"], "svc");
    assert_eq!(
        h.admin("GET", "/admin/clients/none", None).await.status,
        404
    );
    let dup = h
        .admin(
            "POST",
            "/admin/clients",
            Some(json!({"client_id": "svc", "audiences": ["a"]})),
        )
        .await;
    assert_eq!(dup.status, 400);
    let bad = h
        .admin(
            "POST",
            "/admin/clients",
            Some(json!({"client_id": "x", "audiences": ["a"], "auth_method": "magic"})),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        h.admin("POST", "/admin/clients/none/disable", None)
            .await
            .status,
        404
    );
    // Without a configured admin token, there is no admin API.
    let h2 = Harness::start_with(b, |c, _| c.admin_token = None).await;
    assert_eq!(
        admin_call(h2.addr(), "GET", "/admin/clients", None, Some(ADMIN_TOKEN))
            .await
            .status,
        404
    );
}
both_backends!(the_admin_api_needs_the_admin_token);

async fn audit_records_every_action_and_no_secret(b: Backend) {
    let h = Harness::start(b).await;
    let secret = h.basic_client("svc", &["a"], &["aud"]).await;
    let (_, ex) = h
        .client(json!({"client_id": "ex", "audiences": ["x"], "exchange_audiences": ["next"], "grant_types": [EXCHANGE]}))
        .await;
    let ex = ex.unwrap();
    let t = h.access_token("svc", &secret, &[]).await;
    let e = h
        .form(
            "/oauth2/token",
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", &t),
                ("subject_token_type", AT),
                ("audience", "next"),
            ],
            Some(("ex", &ex)),
        )
        .await;
    assert_eq!(e.status, 200, "{:?}", e.body);
    let t2 = e.json()["access_token"].as_str().unwrap().to_owned();
    h.form("/oauth2/revoke", &[("token", &t)], Some(("svc", &secret)))
        .await;
    h.token("svc", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &[])
        .await;
    let rotated = h
        .admin("POST", "/admin/clients/svc/secrets", None)
        .await
        .json();
    let new_secret = rotated["client_secret"].as_str().unwrap().to_owned();
    h.admin("POST", "/admin/clients/svc/disable", None).await;
    let records = h.audit_json().await;
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["event"]["action"].as_str().unwrap())
        .collect();
    for want in [
        "key.create",
        "client.create",
        "token.issue",
        "token.exchange",
        "token.revoke",
        "client.authenticate",
        "client.rotate_secret",
        "client.disable",
    ] {
        assert!(actions.contains(&want), "no {want} in {actions:?}");
    }
    let issue = records
        .iter()
        .find(|r| r["event"]["action"] == "token.issue")
        .unwrap();
    assert_eq!(issue["event"]["subject"], decode(&t).1["jti"]);
    assert_eq!(issue["event"]["actor"], "svc");
    let failed = records
        .iter()
        .find(|r| r["event"]["action"] == "client.authenticate")
        .unwrap();
    assert_eq!(failed["event"]["outcome"], "failure");
    assert_eq!(failed["event"]["source"], "127.0.0.1");
    let text = serde_json::to_string(&records).unwrap();
    for secret_text in [
        secret.as_str(),
        ex.as_str(),
        new_secret.as_str(),
        t.as_str(),
        t2.as_str(),
        ADMIN_TOKEN,
    ] {
        assert!(
            !text.contains(secret_text),
            "audit log holds a secret or token"
        );
    }
    // Token signatures, not only whole tokens.
    assert!(!text.contains(t.rsplit('.').next().unwrap()));
    assert_eq!(
        h.store.verify_audit().await.unwrap() as usize,
        records.len()
    );
}
both_backends!(audit_records_every_action_and_no_secret);

/// Issue 15, item 13: issuance audited one token in N (`sampled`) or as per-client counts
/// (`aggregated`), while failures, revocations and client changes are still recorded one
/// by one.
async fn issuance_audit_can_be_sampled_or_aggregated(b: Backend) {
    use warden_config::IssuanceAudit;
    let actions = |records: &[Value], action: &str| -> Vec<Value> {
        records
            .iter()
            .filter(|r| r["event"]["action"] == action)
            .cloned()
            .collect()
    };
    // Sampled: 7 tokens, one in 3 recorded (the 1st, 4th and 7th).
    let h = Harness::start_with(b, |c, _| {
        c.audit.issuance = IssuanceAudit::Sampled;
        c.audit.sample_every = 3;
    })
    .await;
    let secret = h.basic_client("svc", &["a"], &["aud"]).await;
    let mut tokens = Vec::new();
    for _ in 0..7 {
        tokens.push(h.access_token("svc", &secret, &[]).await);
    }
    h.token("svc", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &[])
        .await;
    h.form(
        "/oauth2/revoke",
        &[("token", &tokens[1])],
        Some(("svc", &secret)),
    )
    .await;
    let records = h.audit_json().await;
    let issued = actions(&records, "token.issue");
    assert_eq!(issued.len(), 3, "{issued:#?}");
    assert_eq!(issued[0]["event"]["subject"], decode(&tokens[0]).1["jti"]);
    assert_eq!(issued[1]["event"]["subject"], decode(&tokens[3]).1["jti"]);
    assert_eq!(issued[0]["event"]["detail"]["sample_every"], 3);
    assert_eq!(actions(&records, "client.authenticate").len(), 1);
    assert_eq!(actions(&records, "token.revoke").len(), 1);
    assert_eq!(actions(&records, "client.create").len(), 1);
    h.handle.shutdown().await;

    // Aggregated: no record per token; one per client with its count when flushed.
    let h = Harness::start_with(b, |c, _| c.audit.issuance = IssuanceAudit::Aggregated).await;
    let svc = h.basic_client("svc", &["a"], &["aud"]).await;
    let other = h.basic_client("other", &["a"], &["aud"]).await;
    for _ in 0..5 {
        h.access_token("svc", &svc, &[]).await;
    }
    let t = h.access_token("other", &other, &[]).await;
    h.access_token("other", &other, &[]).await;
    h.token("other", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &[])
        .await;
    h.form("/oauth2/revoke", &[("token", &t)], Some(("other", &other)))
        .await;
    let records = h.audit_json().await;
    assert!(actions(&records, "token.issue").is_empty());
    assert!(actions(&records, "token.issue.aggregate").is_empty());
    assert_eq!(actions(&records, "client.authenticate").len(), 1);
    assert_eq!(actions(&records, "token.revoke").len(), 1);
    h.handle.authority().flush_issuance_audit().await;
    let records = h.audit_json().await;
    let mut counts: Vec<(String, u64)> = actions(&records, "token.issue.aggregate")
        .iter()
        .map(|r| {
            (
                r["event"]["actor"].as_str().unwrap().to_owned(),
                r["event"]["detail"]["count"].as_u64().unwrap(),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(counts, [("other".into(), 2), ("svc".into(), 5)]);
    // Nothing more to flush.
    h.handle.authority().flush_issuance_audit().await;
    assert_eq!(h.audit_json().await.len(), records.len());
    assert_eq!(
        h.store.verify_audit().await.unwrap() as usize,
        records.len()
    );
}
both_backends!(issuance_audit_can_be_sampled_or_aggregated);

/// Issue 15, item 13: the upkeep tick prunes the audit log to `max_records` (and by age),
/// and what is left still verifies from the checkpoint.
async fn audit_retention_prunes_and_the_rest_verifies(b: Backend) {
    let h = Harness::start_with(b, |c, _| c.audit.max_records = Some(10)).await;
    let secret = h.basic_client("svc", &["a"], &["aud"]).await;
    for _ in 0..25 {
        h.access_token("svc", &secret, &[]).await;
    }
    let before = h.store.verify_audit().await.unwrap();
    assert!(before > 25, "{before}");
    h.handle.authority().tick().await.unwrap();
    let left = h.audit_json().await;
    assert!(left.len() <= 11, "{} records left", left.len());
    let cp = h.store.audit_checkpoint().await.unwrap().unwrap();
    assert_eq!(left[0]["seq"].as_u64().unwrap(), cp.seq + 1);
    assert!(h.store.verify_audit().await.unwrap() >= before);
    // By age: everything older than a minute goes once the clock has moved on.
    let h = Harness::start_with(b, |c, _| {
        c.audit.max_age = Some(warden_config::Dur::secs(60))
    })
    .await;
    let secret = h.basic_client("svc", &["a"], &["aud"]).await;
    h.access_token("svc", &secret, &[]).await;
    h.handle.authority().tick().await.unwrap();
    assert!(h.store.audit_checkpoint().await.unwrap().is_none());
    let n = h.audit_json().await.len();
    assert!(n >= 3, "{n}");
    h.clock.advance(120);
    h.handle.authority().tick().await.unwrap();
    let left = h.audit_json().await;
    assert!(left.len() < n, "{} of {n} records left", left.len());
    assert!(h.store.verify_audit().await.is_ok());
}
both_backends!(audit_retention_prunes_and_the_rest_verifies);

#[tokio::test]
async fn a_restarted_authority_keeps_clients_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let clock = Arc::new(warden_authority::ManualClock::new(
        warden_test_util::jwt::now(),
    ));
    let store = fresh_store(Backend::Sqlite, dir.path()).await;
    let h = warden_authority::start_with(&cfg, store, clock.clone())
        .await
        .unwrap();
    let created = admin_call(
        h.addr(),
        "POST",
        "/admin/clients",
        Some(json!({"client_id": "svc", "audiences": ["aud"]})),
        Some(ADMIN_TOKEN),
    )
    .await
    .json();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    let kid = h.authority().current_kid();
    h.shutdown().await;
    let store = fresh_store(Backend::Sqlite, dir.path()).await;
    let h = warden_authority::start_with(&cfg, store, clock)
        .await
        .unwrap();
    assert_eq!(h.authority().current_kid(), kid);
    let a = post_form(
        h.addr(),
        "/oauth2/token",
        &[("grant_type", "client_credentials")],
        Some(("svc", &secret)),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
}
