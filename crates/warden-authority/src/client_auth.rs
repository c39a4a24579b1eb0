//! Client authentication at the token, introspection and revocation endpoints:
//! `client_secret_basic`, `client_secret_post`, `private_key_jwt` (RFC 7523) and
//! `tls_client_auth` (RFC 8705). A client must use one of the methods it registered (a client
//! may hold several, e.g. basic and post, for libraries that pick one); using two at once in a
//! request is `invalid_request` (RFC 6749 §2.3). Every failure is the same `invalid_client` to the
//! caller; the reason goes to the audit log. Failures are throttled (see [`crate::throttle`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use warden_auth::http_client::HttpClient;
use warden_auth::jwt;
use warden_crypto::jws::{b64url, sha256, Jwk};
use x509_parser::extensions::GeneralName;

use crate::audit::Event;
use crate::authority::Authority;
use crate::clients::{plausible_secret, registered_keys, AuthMethod, Client, TlsIdentity};
use crate::error::{ErrorCode, OAuthError, Refusal};
use crate::form::{decode_component, Params};
use crate::settings::LEEWAY;

/// The RFC 7523 client assertion type.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Where a request came from.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The remote address.
    pub ip: IpAddr,
    /// The verified TLS client certificate (DER), if one was presented.
    pub cert: Option<Arc<Vec<u8>>>,
}

impl warden_ca::http::PeerAddr for Peer {
    fn ip(&self) -> IpAddr {
        self.ip
    }
}

/// A client that proved who it is.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The client's record.
    pub client: Client,
    /// How it authenticated.
    pub method: AuthMethod,
    /// With `tls_client_auth`: the certificate's `x5t#S256`, to bind tokens to it.
    pub cert_thumbprint: Option<String>,
}

enum Presented {
    Secret {
        id: String,
        secret: String,
        method: AuthMethod,
    },
    Assertion {
        jwt: String,
        id: Option<String>,
    },
    Tls {
        id: String,
    },
}

/// Why authentication failed (audit only).
type Why = &'static str;

fn basic(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Refusal::SeveralAuthorizationHeaders.into());
    }
    let malformed = Refusal::MalformedBasic;
    let v = v.to_str().map_err(|_| malformed)?;
    let (scheme, rest) = v.split_once(' ').ok_or(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed.into());
    }
    let raw = rest.trim();
    // Standard base64, as HTTP Basic uses.
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| malformed)?;
    let text = String::from_utf8(decoded).map_err(|_| malformed)?;
    let (id, secret) = text.split_once(':').ok_or(malformed)?;
    // RFC 6749 §2.3.1: both parts are form-encoded before base64.
    let id = decode_component(id).ok_or(malformed)?;
    let secret = decode_component(secret).ok_or(malformed)?;
    Ok(Some((id, secret)))
}

fn presented(headers: &HeaderMap, p: &Params, peer: &Peer) -> Result<Presented, OAuthError> {
    let basic = basic(headers)?;
    let post_secret = p.get("client_secret");
    let assertion = p.get("client_assertion");
    let form_id = p.get("client_id");
    let methods = [basic.is_some(), post_secret.is_some(), assertion.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if methods > 1 {
        return Err(Refusal::SeveralAuthMethods.into());
    }
    if let Some((id, secret)) = basic {
        if form_id.is_some_and(|f| f != id) {
            return Err(Refusal::ClientIdMismatch.into());
        }
        return Ok(Presented::Secret {
            id,
            secret,
            method: AuthMethod::ClientSecretBasic,
        });
    }
    if let Some(secret) = post_secret {
        let id = form_id.ok_or(Refusal::SecretWithoutClientId)?;
        return Ok(Presented::Secret {
            id: id.to_owned(),
            secret: secret.to_owned(),
            method: AuthMethod::ClientSecretPost,
        });
    }
    if let Some(a) = assertion {
        if p.get("client_assertion_type") != Some(ASSERTION_TYPE) {
            return Err(Refusal::BadAssertionType.into());
        }
        return Ok(Presented::Assertion {
            jwt: a.to_owned(),
            id: form_id.map(str::to_owned),
        });
    }
    match (form_id, &peer.cert) {
        (Some(id), Some(_)) => Ok(Presented::Tls { id: id.to_owned() }),
        _ => Err(Refusal::NoClientCredentials.into()),
    }
}

fn claimed_id(p: &Presented) -> Option<String> {
    match p {
        Presented::Secret { id, .. } | Presented::Tls { id } => Some(id.clone()),
        Presented::Assertion { jwt, id } => id.clone().or_else(|| {
            jwt::parse(jwt).ok().and_then(|t| {
                t.claims
                    .get("sub")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
        }),
    }
    .map(|mut id| {
        id.truncate(128);
        id
    })
}

impl Authority {
    /// Authenticates the client of a request to `endpoint` (its URL is accepted as a client
    /// assertion audience, besides the issuer and the token endpoint).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        p: &Params,
        peer: &Peer,
        endpoint: &str,
    ) -> Result<Authenticated, OAuthError> {
        let presented = match presented(headers, p, peer) {
            Ok(x) => x,
            Err(e) => {
                if e.code == ErrorCode::InvalidClient {
                    if let Some(wait) = self.throttle.blocked(None, peer.ip) {
                        self.throttled(None, peer);
                        return Err(too_many(wait));
                    }
                    self.auth_failed(None, peer, "no_credentials").await?;
                }
                return Err(e);
            }
        };
        let claimed = claimed_id(&presented);
        if let Some(wait) = self.throttle.blocked(claimed.as_deref(), peer.ip) {
            self.throttled(claimed.as_deref(), peer);
            return Err(too_many(wait));
        }
        match self.verify(presented, peer, endpoint).await? {
            Ok(a) => Ok(a),
            Err(why) => {
                self.auth_failed(claimed.as_deref(), peer, why).await?;
                Err(Refusal::ClientAuthFailed.into())
            }
        }
    }

    /// Records a failed authentication; 429 when it emptied a throttle bucket.
    /// A request refused unseen because its address or claimed client failed too often.
    fn throttled(&self, claimed: Option<&str>, peer: &Peer) {
        self.events.emit(&warden_telemetry::SecurityEvent {
            event: "client_auth.throttled",
            reason: "too_many_failures",
            client: Some(peer.ip),
            status: Some(429),
            detail: Some(json!({ "client_id": claimed })),
            ..Default::default()
        });
    }

    async fn auth_failed(
        &self,
        claimed: Option<&str>,
        peer: &Peer,
        why: Why,
    ) -> Result<(), OAuthError> {
        let wait = self.throttle.failure(claimed, peer.ip);
        // The claimed id is what the caller sent: not verified, but never a secret.
        self.events.emit(&warden_telemetry::SecurityEvent {
            event: "client_auth.failure",
            reason: why,
            client: Some(peer.ip),
            status: Some(if wait.is_some() { 429 } else { 401 }),
            detail: Some(json!({ "client_id": claimed })),
            ..Default::default()
        });
        self.audit
            .record_lossy(
                Event::new("client.authenticate", claimed.unwrap_or("-"), "failure")
                    .detail(json!({ "reason": why }))
                    .source(Some(peer.ip.to_string())),
            )
            .await;
        match wait {
            Some(w) => Err(too_many(w)),
            None => Ok(()),
        }
    }

    async fn verify(
        &self,
        presented: Presented,
        peer: &Peer,
        endpoint: &str,
    ) -> Result<Result<Authenticated, Why>, OAuthError> {
        let now = self.now();
        match presented {
            Presented::Secret { id, secret, method } => {
                let Some(c) = self.registry.get_for_auth(&id).await? else {
                    return Ok(Err("unknown_client"));
                };
                if c.disabled {
                    return Ok(Err("client_disabled"));
                }
                if !c.auth_methods.contains(method) {
                    return Ok(Err("wrong_auth_method"));
                }
                if !plausible_secret(&secret) || !self.registry.check_secret(&c, &secret, now) {
                    return Ok(Err("bad_secret"));
                }
                Ok(Ok(Authenticated {
                    client: c,
                    method,
                    cert_thumbprint: None,
                }))
            }
            Presented::Tls { id } => {
                let Some(c) = self.registry.get_for_auth(&id).await? else {
                    return Ok(Err("unknown_client"));
                };
                if c.disabled {
                    return Ok(Err("client_disabled"));
                }
                if !c.auth_methods.contains(AuthMethod::TlsClientAuth) {
                    return Ok(Err("wrong_auth_method"));
                }
                let Some(der) = &peer.cert else {
                    return Ok(Err("no_certificate"));
                };
                if !cert_matches(der, c.tls.as_ref()) {
                    return Ok(Err("certificate_mismatch"));
                }
                Ok(Ok(Authenticated {
                    client: c,
                    method: AuthMethod::TlsClientAuth,
                    cert_thumbprint: Some(warden_auth::cert::thumbprint(der)),
                }))
            }
            Presented::Assertion { jwt, id } => {
                self.verify_assertion(&jwt, id, endpoint, now).await
            }
        }
    }

    async fn verify_assertion(
        &self,
        token: &str,
        form_id: Option<String>,
        endpoint: &str,
        now: i64,
    ) -> Result<Result<Authenticated, Why>, OAuthError> {
        let Ok(t) = jwt::parse(token) else {
            return Ok(Err("malformed_assertion"));
        };
        if t.alg.is_hmac() {
            return Ok(Err("assertion_algorithm"));
        }
        let c = &t.claims;
        let (Some(iss), Some(sub)) = (
            c.get("iss").and_then(Value::as_str),
            c.get("sub").and_then(Value::as_str),
        ) else {
            return Ok(Err("assertion_claims"));
        };
        if iss != sub || form_id.as_deref().is_some_and(|f| f != sub) {
            return Ok(Err("assertion_issuer"));
        }
        let Some(client) = self.registry.get_for_auth(sub).await? else {
            return Ok(Err("unknown_client"));
        };
        if client.disabled {
            return Ok(Err("client_disabled"));
        }
        if !client.auth_methods.contains(AuthMethod::PrivateKeyJwt) {
            return Ok(Err("wrong_auth_method"));
        }
        let keys = match &client.jwks_uri {
            Some(uri) => self.client_keys.get(uri, t.kid.as_deref()).await,
            None => Arc::new(registered_keys(&client)),
        };
        let key = match t.kid.as_deref() {
            Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None => {
                let mut fit = keys.iter().filter(|k| k.key.fits(t.alg));
                match (fit.next(), fit.next()) {
                    (Some(k), None) => Some(k),
                    _ => None,
                }
            }
        };
        let Some(key) = key else {
            return Ok(Err("assertion_unknown_key"));
        };
        if key.alg.is_some_and(|a| a != t.alg)
            || !key
                .key
                .verify(t.alg, t.signing_input.as_bytes(), &t.signature)
        {
            return Ok(Err("assertion_signature"));
        }
        let s = &self.settings;
        let accepted = [s.issuer.as_str(), &s.token_endpoint(), endpoint];
        let aud_ok = match c.get("aud") {
            Some(Value::String(a)) => accepted.contains(&a.as_str()),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .any(|a| accepted.contains(&a)),
            _ => false,
        };
        if !aud_ok {
            return Ok(Err("assertion_audience"));
        }
        let Some(exp) = c.get("exp").and_then(Value::as_i64) else {
            return Ok(Err("assertion_exp"));
        };
        if now >= exp + LEEWAY || exp - now > s.assertion_max_lifetime + LEEWAY {
            return Ok(Err("assertion_exp"));
        }
        for claim in ["iat", "nbf"] {
            if c.get(claim)
                .and_then(Value::as_i64)
                .is_some_and(|t| t > now + LEEWAY)
            {
                return Ok(Err("assertion_not_yet_valid"));
            }
        }
        let Some(jti) = c
            .get("jti")
            .and_then(Value::as_str)
            .filter(|j| !j.is_empty() && j.len() <= 256)
        else {
            return Ok(Err("assertion_jti"));
        };
        // Replay: the first use of a jti records it until the assertion expires. The expiry
        // is part of the key (it is part of the signed assertion, so a replay names the same
        // key) so that clean-up can find expired records by listing alone.
        let key = format!(
            "{}{:020}/{}/{}",
            crate::revocation::JTI_PREFIX,
            exp + LEEWAY,
            client.client_id,
            b64url(&sha256(jti.as_bytes()))
        );
        if !self.store.put_if_absent(&key, b"1").await? {
            return Ok(Err("assertion_replayed"));
        }
        Ok(Ok(Authenticated {
            client,
            method: AuthMethod::PrivateKeyJwt,
            cert_thumbprint: None,
        }))
    }
}

fn too_many(wait: u64) -> OAuthError {
    OAuthError::throttled(wait)
}

/// Whether a certificate carries the identity a client registered.
fn cert_matches(der: &[u8], want: Option<&TlsIdentity>) -> bool {
    let Some(want) = want else { return false };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    if let Some(dn) = &want.subject_dn {
        return &cert.subject().to_string() == dn;
    }
    let sans: Vec<GeneralName<'_>> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| s.value.general_names.clone())
        .unwrap_or_default();
    if let Some(dns) = &want.san_dns {
        return sans
            .iter()
            .any(|n| matches!(n, GeneralName::DNSName(d) if d.eq_ignore_ascii_case(dns)));
    }
    if let Some(uri) = &want.san_uri {
        return sans
            .iter()
            .any(|n| matches!(n, GeneralName::URI(u) if u == uri));
    }
    false
}

/// Public keys fetched from clients' `jwks_uri`, cached for five minutes; a token with an
/// unknown `kid` may refresh a set at most every 30 seconds.
pub struct ClientKeys {
    http: Option<HttpClient>,
    cache: Mutex<HashMap<String, CachedSet>>,
}

/// A fetched key set and when it was fetched.
type CachedSet = (Instant, Arc<Vec<Jwk>>);

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKeys")
    }
}

const JWKS_TTL: Duration = Duration::from_secs(300);
const JWKS_REFRESH_MIN: Duration = Duration::from_secs(30);
const JWKS_MAX_BYTES: usize = 64 * 1024;
const JWKS_CACHED_SETS: usize = 1024;

impl ClientKeys {
    /// An empty cache (with an HTTP client when one can be made).
    pub fn new() -> Self {
        Self {
            http: HttpClient::new(None, Duration::from_secs(3)).ok(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn get(&self, uri: &str, kid: Option<&str>) -> Arc<Vec<Jwk>> {
        let cached = {
            let map = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            map.get(uri).cloned()
        };
        if let Some((at, keys)) = &cached {
            let known = kid.is_none_or(|k| keys.iter().any(|j| j.kid.as_deref() == Some(k)));
            let age = at.elapsed();
            if age < JWKS_TTL && (known || age < JWKS_REFRESH_MIN) {
                return keys.clone();
            }
        }
        match self.fetch(uri).await {
            Some(keys) => {
                let keys = Arc::new(keys);
                let mut map = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if map.len() >= JWKS_CACHED_SETS {
                    map.clear();
                }
                map.insert(uri.to_owned(), (Instant::now(), keys.clone()));
                keys
            }
            None => cached.map(|(_, k)| k).unwrap_or_default(),
        }
    }

    async fn fetch(&self, uri: &str) -> Option<Vec<Jwk>> {
        let http = self.http.as_ref()?;
        let req = http::Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .ok()?;
        match http.send(req, Duration::from_secs(3), JWKS_MAX_BYTES).await {
            Ok((status, _, body)) if status.is_success() => {
                let v: Value = serde_json::from_slice(&body).ok()?;
                Jwk::set_from_json(&v).ok().map(|(k, _)| k)
            }
            Ok((status, _, _)) => {
                tracing::warn!(%uri, %status, "client jwks_uri fetch failed");
                None
            }
            Err(e) => {
                tracing::warn!(%uri, error = %e, "client jwks_uri fetch failed");
                None
            }
        }
    }
}

impl Default for ClientKeys {
    fn default() -> Self {
        Self::new()
    }
}
