//! RFC 7662 token introspection: opaque bearer tokens checked by asking the authorization
//! server.
//!
//! - The call is a `POST` of `token=…&token_type_hint=access_token`, authenticated with HTTP
//!   Basic (client id and secret each form-urlencoded first, RFC 6749 §2.3.1), within the
//!   endpoint's `timeout`, reading at most 64 KiB of JSON.
//! - Fail closed: when the endpoint cannot be asked (connect error, timeout, a status other
//!   than 200, a body that is not a JSON object) the request is refused with 503, never let
//!   through.
//! - Verdicts are cached by SHA-256 of the token (the token itself is never stored): active
//!   tokens until their `exp` or `cache_ttl`, whichever is first; inactive ones (and wrong
//!   audiences) for `negative_ttl`; an endpoint that could not be asked is never cached. The
//!   cache holds at most `cache_entries` verdicts, in shards whose locks are never held across
//!   an await. TTLs count whole seconds (the caller's clock), rounded up.
//! - Tokens and the client secret are never logged.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::Full;
use serde_json::{Map, Value};
use warden_config::IntrospectionConfig;
use warden_crypto::jws::{b64url, sha256};
use zeroize::Zeroizing;

use crate::http_client::HttpClient;
use crate::identity::{scopes_from_claims, AuthMethod, Identity};

/// Largest introspection response read.
const MAX_RESPONSE: usize = 64 * 1024;
const SHARDS: usize = 16;

/// Why introspection refused a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntrospectError {
    /// The endpoint says the token is not active.
    Inactive,
    /// Active, but for another audience.
    Audience,
    /// The endpoint could not be asked (fail closed).
    Unavailable,
}

impl IntrospectError {
    /// The reason label.
    pub fn reason(self) -> &'static str {
        match self {
            IntrospectError::Inactive => "inactive_token",
            IntrospectError::Audience => "wrong_audience",
            IntrospectError::Unavailable => "introspection_unavailable",
        }
    }
}

/// One introspection endpoint with its cache.
pub struct Introspector {
    /// Its name.
    pub name: String,
    /// The config it was built from.
    pub config: IntrospectionConfig,
    uri: Uri,
    client: HttpClient,
    /// `Basic …`, marked sensitive.
    basic: HeaderValue,
    cache: VerdictCache,
    /// Whether the last call failed (to log an outage once, not per request).
    failing: AtomicBool,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("name", &self.name)
            .field("url", &self.uri)
            .finish_non_exhaustive()
    }
}

/// A cached verdict.
#[derive(Clone)]
enum Verdict {
    Active(Arc<Identity>),
    Refused(IntrospectError),
}

struct Entry {
    verdict: Verdict,
    expires: i64,
}

/// Verdicts by token hash: bounded, sharded, each shard under a short-held mutex.
struct VerdictCache {
    shards: Vec<Mutex<HashMap<[u8; 32], Entry>>>,
    per_shard: usize,
}

impl Introspector {
    /// Whether `other` authenticates exactly as this one (same client id and secret), so this
    /// one (and its cache) may be kept across a reload.
    pub(crate) fn same_credentials(&self, other: &Introspector) -> bool {
        warden_crypto::ct_eq(self.basic.as_bytes(), other.basic.as_bytes())
    }

    /// Builds the client: reads the client secret, checks the URL and the CA bundle.
    pub fn new(
        cfg: &IntrospectionConfig,
        secrets: &dyn warden_config::SecretResolver,
    ) -> Result<Introspector, String> {
        let uri = crate::jwks::endpoint_uri(&cfg.url)?;
        let secret = secrets
            .resolve(&cfg.client_secret)
            .map_err(|e| format!("client_secret: {e}"))?;
        let basic = basic_authorization(cfg.client_id.as_bytes(), trim_line_end(&secret))?;
        let client = HttpClient::new(cfg.ca.as_deref(), cfg.timeout.0)?;
        Ok(Introspector {
            name: cfg.name.clone(),
            config: cfg.clone(),
            uri,
            client,
            basic,
            cache: VerdictCache::new(cfg.cache_entries),
            failing: AtomicBool::new(false),
        })
    }

    /// Asks about `token` (or answers from the cache). `now` is Unix seconds.
    pub async fn check(&self, token: &str, now: i64) -> Result<Identity, IntrospectError> {
        let key = sha256(token.as_bytes());
        if let Some(v) = self.cache.get(&key, now) {
            return v.into_result();
        }
        let verdict = match self.ask(token).await {
            Ok(answer) => match verdict(answer, &self.name, &self.config.audiences, now) {
                Ok(id) => Verdict::Active(Arc::new(id)),
                Err(e) => Verdict::Refused(e),
            },
            Err(e) => return Err(e),
        };
        let expires = match &verdict {
            Verdict::Active(id) => {
                let ttl = now.saturating_add(whole_secs(self.config.cache_ttl.0));
                id.expires_at.map_or(ttl, |exp| exp.min(ttl))
            }
            Verdict::Refused(_) => now.saturating_add(whole_secs(self.config.negative_ttl.0)),
        };
        self.cache.insert(key, verdict.clone(), expires, now);
        verdict.into_result()
    }

    /// One call to the endpoint: its JSON object, or `Unavailable`.
    async fn ask(&self, token: &str) -> Result<Map<String, Value>, IntrospectError> {
        let mut body = String::with_capacity(token.len() + 40);
        body.push_str("token=");
        form_encode(&mut body, token.as_bytes());
        body.push_str("&token_type_hint=access_token");
        let req = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, "warden")
            .header(AUTHORIZATION, self.basic.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| IntrospectError::Unavailable)?;
        let answer = match self
            .client
            .send(req, self.config.timeout.0, MAX_RESPONSE)
            .await
        {
            Err(e) => Err(e.to_string()),
            Ok((StatusCode::OK, _, body)) => serde_json::from_slice::<Map<String, Value>>(&body)
                .map_err(|e| format!("the answer is not a JSON object: {e}")),
            Ok((s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN), _, _)) => {
                Err(format!("answered {s}: check client_id and client_secret"))
            }
            Ok((s, _, _)) => Err(format!("answered {s}")),
        };
        match &answer {
            Ok(_) => {
                if self.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!(endpoint = %self.name, "introspection endpoint answers again");
                }
            }
            Err(error) => {
                if self.failing.swap(true, Ordering::AcqRel) {
                    tracing::debug!(endpoint = %self.name, %error, "introspection failed again");
                } else {
                    tracing::warn!(
                        endpoint = %self.name,
                        %error,
                        "introspection failed; its tokens are refused with 503 until it answers"
                    );
                }
            }
        }
        answer.map_err(|_| IntrospectError::Unavailable)
    }
}

/// Turns an introspection answer into an identity, or says why the token is refused.
fn verdict(
    answer: Map<String, Value>,
    endpoint: &str,
    audiences: &[String],
    now: i64,
) -> Result<Identity, IntrospectError> {
    if answer.get("active") != Some(&Value::Bool(true)) {
        return Err(IntrospectError::Inactive);
    }
    let exp = match answer.get("exp") {
        None => None,
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .ok_or(IntrospectError::Inactive)?,
        ),
        // An `exp` that cannot be read is no proof the token is still valid.
        Some(_) => return Err(IntrospectError::Inactive),
    };
    if exp.is_some_and(|e| e <= now) {
        return Err(IntrospectError::Inactive);
    }
    if !audiences.is_empty() {
        let ok = match answer.get("aud") {
            Some(Value::String(a)) => audiences.contains(a),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .any(|a| audiences.iter().any(|x| x == a)),
            _ => false,
        };
        if !ok {
            return Err(IntrospectError::Audience);
        }
    }
    let text = |k: &str| {
        answer
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let subject = text("sub")
        .or_else(|| text("username"))
        .or_else(|| text("client_id"))
        .ok_or(IntrospectError::Inactive)?;
    let mut id = Identity::new(subject, AuthMethod::Introspection);
    id.issuer = Some(text("iss").unwrap_or_else(|| endpoint.to_owned()));
    id.scopes = scopes_from_claims(&answer);
    id.client_id = text("client_id");
    id.expires_at = exp;
    id.jti = text("jti");
    id.cert_thumbprint = answer
        .get("cnf")
        .and_then(|c| c.get("x5t#S256"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    id.claims = answer;
    Ok(id)
}

/// `Basic base64(form(id) ":" form(secret))` (RFC 6749 §2.3.1), marked sensitive.
fn basic_authorization(client_id: &[u8], secret: &[u8]) -> Result<HeaderValue, String> {
    let mut pair = Zeroizing::new(String::new());
    form_encode(&mut pair, client_id);
    pair.push(':');
    form_encode(&mut pair, secret);
    // Standard base64 with padding, from the base64url alphabet.
    let mut encoded = Zeroizing::new(b64url(pair.as_bytes()).into_bytes());
    for b in encoded.iter_mut() {
        match *b {
            b'-' => *b = b'+',
            b'_' => *b = b'/',
            _ => {}
        }
    }
    let mut value = Zeroizing::new(Vec::with_capacity(6 + encoded.len() + 3));
    value.extend_from_slice(b"Basic ");
    value.extend_from_slice(&encoded);
    while (value.len() - 6) % 4 != 0 {
        value.push(b'=');
    }
    let mut header = HeaderValue::from_bytes(&value)
        .map_err(|_| "client credentials do not make a header".to_owned())?;
    header.set_sensitive(true);
    Ok(header)
}

/// `application/x-www-form-urlencoded` serialisation of `bytes` (WHATWG URL §5.2).
fn form_encode(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
}

/// A secret read from a file usually ends with a newline that is not part of it.
fn trim_line_end(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .rposition(|b| !matches!(b, b'\n' | b'\r'))
        .map_or(0, |i| i + 1);
    &s[..end]
}

/// A TTL in whole seconds, rounded up (the cache's clock counts seconds).
fn whole_secs(d: Duration) -> i64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(s).unwrap_or(i64::MAX)
}

impl Verdict {
    fn into_result(self) -> Result<Identity, IntrospectError> {
        match self {
            Verdict::Active(id) => Ok(Identity::clone(&id)),
            Verdict::Refused(e) => Err(e),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl VerdictCache {
    /// A cache of at most `max_entries` verdicts (at least one).
    fn new(max_entries: usize) -> VerdictCache {
        let max = max_entries.max(1);
        let shards = max.min(SHARDS);
        VerdictCache {
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max / shards,
        }
    }

    fn shard(&self, key: &[u8; 32]) -> &Mutex<HashMap<[u8; 32], Entry>> {
        &self.shards[usize::from(key[0]) % self.shards.len()]
    }

    fn get(&self, key: &[u8; 32], now: i64) -> Option<Verdict> {
        let mut shard = lock(self.shard(key));
        match shard.get(key) {
            Some(e) if now < e.expires => Some(e.verdict.clone()),
            Some(_) => {
                shard.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&self, key: [u8; 32], verdict: Verdict, expires: i64, now: i64) {
        if expires <= now {
            return;
        }
        let mut shard = lock(self.shard(&key));
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, e| now < e.expires);
            if shard.len() >= self.per_shard {
                if let Some(k) = shard.keys().next().copied() {
                    shard.remove(&k);
                }
            }
        }
        shard.insert(key, Entry { verdict, expires });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use warden_config::{Dur, SecretRef};

    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn answer(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn only_active_true_is_active() {
        for a in [
            json!({"sub": "a"}),
            json!({"active": false, "sub": "a"}),
            json!({"active": "true", "sub": "a"}),
            json!({"active": 1, "sub": "a"}),
        ] {
            assert_eq!(
                verdict(answer(a), "idp", &[], NOW),
                Err(IntrospectError::Inactive)
            );
        }
        assert!(verdict(answer(json!({"active": true, "sub": "a"})), "idp", &[], NOW).is_ok());
    }

    #[test]
    fn a_past_or_unreadable_exp_is_inactive() {
        let v = |exp: Value| {
            verdict(
                answer(json!({"active": true, "sub": "a", "exp": exp})),
                "i",
                &[],
                NOW,
            )
        };
        assert_eq!(v(json!(NOW)), Err(IntrospectError::Inactive));
        assert_eq!(v(json!(NOW - 1)), Err(IntrospectError::Inactive));
        assert_eq!(v(json!("soon")), Err(IntrospectError::Inactive));
        assert_eq!(v(json!(NOW + 1)).unwrap().expires_at, Some(NOW + 1));
        assert_eq!(
            v(json!(NOW as f64 + 60.5)).unwrap().expires_at,
            Some(NOW + 60)
        );
    }

    #[test]
    fn audiences_must_match_when_configured() {
        let aud = ["api".to_owned(), "admin".to_owned()];
        let v = |a: Value| verdict(answer(a), "i", &aud, NOW);
        assert_eq!(
            v(json!({"active": true, "sub": "a"})),
            Err(IntrospectError::Audience)
        );
        assert_eq!(
            v(json!({"active": true, "sub": "a", "aud": "other"})),
            Err(IntrospectError::Audience)
        );
        assert_eq!(
            v(json!({"active": true, "sub": "a", "aud": ["x", 3]})),
            Err(IntrospectError::Audience)
        );
        assert!(v(json!({"active": true, "sub": "a", "aud": "api"})).is_ok());
        assert!(v(json!({"active": true, "sub": "a", "aud": ["x", "admin"]})).is_ok());
        // Not configured: not checked.
        assert!(verdict(
            answer(json!({"active": true, "sub": "a", "aud": "x"})),
            "i",
            &[],
            NOW
        )
        .is_ok());
    }

    #[test]
    fn the_identity_comes_from_the_answer() {
        let a = json!({
            "active": true, "sub": "alice", "iss": "https://as.test", "scope": "read write",
            "client_id": "app", "exp": NOW + 60, "jti": "j1", "cnf": {"x5t#S256": "thumb"},
            "tier": "gold",
        });
        let id = verdict(answer(a.clone()), "idp", &[], NOW).unwrap();
        assert_eq!(id.subject, "alice");
        assert_eq!(id.method, AuthMethod::Introspection);
        assert_eq!(id.issuer.as_deref(), Some("https://as.test"));
        assert_eq!(id.scopes, ["read", "write"]);
        assert_eq!(id.client_id.as_deref(), Some("app"));
        assert_eq!(id.expires_at, Some(NOW + 60));
        assert_eq!(id.jti.as_deref(), Some("j1"));
        assert_eq!(id.cert_thumbprint.as_deref(), Some("thumb"));
        assert_eq!(Value::Object(id.claims), a);
    }

    #[test]
    fn the_subject_falls_back_to_username_then_client_id() {
        let v = |a: Value| verdict(answer(a), "idp", &[], NOW);
        let id = v(json!({"active": true, "username": "bob", "client_id": "app"})).unwrap();
        assert_eq!(id.subject, "bob");
        assert_eq!(id.issuer.as_deref(), Some("idp"));
        assert_eq!(
            v(json!({"active": true, "sub": "", "client_id": "app"}))
                .unwrap()
                .subject,
            "app"
        );
        assert_eq!(v(json!({"active": true})), Err(IntrospectError::Inactive));
        assert_eq!(
            v(json!({"active": true, "sub": 7})),
            Err(IntrospectError::Inactive)
        );
    }

    #[test]
    fn client_credentials_are_form_encoded_then_base64() {
        // RFC 6749 §2.3.1's example.
        let h = basic_authorization(b"s6BhdRkqt3", b"gX1fBat3bV").unwrap();
        assert_eq!(h.to_str().unwrap(), "Basic czZCaGRSa3F0MzpnWDFmQmF0M2JW");
        assert!(h.is_sensitive());
        // "a b:c" -> "a+b%3Ac", then padding.
        let h = basic_authorization(b"a b", b"c:").unwrap();
        assert_eq!(h.to_str().unwrap(), "Basic YStiOmMlM0E=");
        let mut s = String::new();
        form_encode(&mut s, "a b&c=d/é~*".as_bytes());
        assert_eq!(s, "a+b%26c%3Dd%2F%C3%A9%7E*");
    }

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(whole_secs(Duration::ZERO), 0);
        assert_eq!(whole_secs(Duration::from_millis(300)), 1);
        assert_eq!(whole_secs(Duration::from_secs(10)), 10);
        assert_eq!(trim_line_end(b"secret\r\n"), b"secret");
        assert_eq!(trim_line_end(b"\n"), b"");
    }

    #[test]
    fn the_cache_expires_and_stays_bounded() {
        let c = VerdictCache::new(40);
        let active = Verdict::Active(Arc::new(Identity::new("a", AuthMethod::Introspection)));
        c.insert([1; 32], active.clone(), NOW + 5, NOW);
        c.insert(
            [2; 32],
            Verdict::Refused(IntrospectError::Inactive),
            NOW + 1,
            NOW,
        );
        c.insert([3; 32], active.clone(), NOW, NOW);
        assert!(matches!(c.get(&[1; 32], NOW + 4), Some(Verdict::Active(_))));
        assert!(c.get(&[1; 32], NOW + 5).is_none());
        assert!(matches!(
            c.get(&[2; 32], NOW),
            Some(Verdict::Refused(IntrospectError::Inactive))
        ));
        assert!(c.get(&[2; 32], NOW + 1).is_none());
        assert!(
            c.get(&[3; 32], NOW).is_none(),
            "already expired: not stored"
        );
        for i in 0..=255u8 {
            for j in 0..4u8 {
                let mut k = [0; 32];
                (k[0], k[1]) = (i, j);
                c.insert(k, active.clone(), NOW + 100, NOW);
            }
        }
        assert!(c.len() <= 40, "{}", c.len());
        let tiny = VerdictCache::new(3);
        for i in 0..=255u8 {
            tiny.insert([i; 32], active.clone(), NOW + 100, NOW);
        }
        assert!(tiny.len() <= 3);
    }

    #[test]
    fn an_unreadable_secret_or_bad_url_is_a_build_error() {
        let dir = std::env::temp_dir().join(format!("warden-introspect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let cfg = IntrospectionConfig {
            name: "idp".into(),
            url: "http://127.0.0.1:9/introspect".into(),
            client_id: "gw".into(),
            client_secret: SecretRef::File(secret.clone()),
            ca: None,
            timeout: Dur::secs(1),
            cache_ttl: Dur::secs(60),
            negative_ttl: Dur::secs(5),
            cache_entries: 10,
            audiences: Vec::new(),
        };
        let x = Introspector::new(&cfg, &warden_config::LocalSecrets).unwrap();
        assert_eq!(x.basic.to_str().unwrap(), "Basic Z3c6czNjcmV0");
        assert!(!format!("{x:?}").contains("Z3c6"));
        let missing = IntrospectionConfig {
            client_secret: SecretRef::File(dir.join("missing")),
            ..cfg.clone()
        };
        assert!(Introspector::new(&missing, &warden_config::LocalSecrets).is_err());
        let relative = IntrospectionConfig {
            url: "introspect".into(),
            ..cfg
        };
        assert!(Introspector::new(&relative, &warden_config::LocalSecrets).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_endpoint_that_cannot_be_asked_is_unavailable_and_not_cached() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let dir = std::env::temp_dir().join(format!("warden-introspect-u-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret"), "s").unwrap();
        let x = Introspector::new(
            &IntrospectionConfig {
                name: "idp".into(),
                url: format!("http://{addr}/introspect"),
                client_id: "gw".into(),
                client_secret: SecretRef::File(dir.join("secret")),
                ca: None,
                timeout: Dur(Duration::from_millis(500)),
                cache_ttl: Dur::secs(60),
                negative_ttl: Dur::secs(5),
                cache_entries: 10,
                audiences: Vec::new(),
            },
            &warden_config::LocalSecrets,
        )
        .unwrap();
        assert_eq!(x.check("tok", NOW).await, Err(IntrospectError::Unavailable));
        assert_eq!(x.cache.len(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
