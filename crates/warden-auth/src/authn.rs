//! The compiled `[auth]` section: every verifier, the token cache, policies and the internal
//! signer; and the request-time steps the proxy calls: strip, authenticate, authorize, add
//! identity.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use warden_config::{AuthConfig, ClientCertConfig, SecretResolver, UpstreamToken};
use warden_crypto::jws::sha256;

use crate::apikey::ApiKeyStore;
use crate::cache::TokenCache;
use crate::error::{AuthError, Challenges};
use crate::identity::{AuthMethod, Identity};
use crate::internal::InternalSigner;
use crate::introspect::Introspector;
use crate::jwt::{self, Issuer};
use crate::keys::KeySet;
use crate::policy::{Policies, PolicyRequest};
use crate::rules::{Accept, RoutePolicy};

/// A compile problem: field path and reason.
pub type CompileProblem = (String, String);

struct IssuerSlot {
    issuer: Arc<Issuer>,
    _fetcher: Option<crate::jwks::Fetcher>,
}

/// Everything the `[auth]` section configures, ready for requests.
pub struct Authenticator {
    issuers: Vec<Arc<IssuerSlot>>,
    api_keys: ApiKeyStore,
    api_key_header: HeaderName,
    introspectors: Vec<Arc<Introspector>>,
    cert: ClientCertConfig,
    /// Identities of client certificates already seen (by DER), so a keep-alive connection's
    /// requests do not parse and hash its certificate each time; emptied when full. A
    /// reload builds a new authenticator, so a changed `client_cert` config starts afresh.
    cert_ids: std::sync::Mutex<std::collections::HashMap<Box<[u8]>, Arc<Identity>>>,
    cache: Arc<TokenCache>,
    policies: Option<Policies>,
    internal: InternalSigner,
    strip: Vec<HeaderName>,
    config: AuthConfig,
    /// Shared with the next snapshot while the cache and the feed are unchanged.
    poller: Option<Arc<crate::revocation::Poller>>,
    /// SHA-256 over the revocation client's secrets (feed token, Redis password): a reload
    /// whose secrets changed starts a new poller.
    revocation_secrets: [u8; 32],
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuers", &self.issuers.len())
            .field("api_keys", &self.api_keys.len())
            .finish()
    }
}

const X_WARDEN: &str = "x-warden-";
static SUBJECT: HeaderName = HeaderName::from_static("x-warden-subject");
static SCOPES: HeaderName = HeaderName::from_static("x-warden-scopes");
static METHOD: HeaderName = HeaderName::from_static("x-warden-auth");
static CLIENT: HeaderName = HeaderName::from_static("x-warden-client-id");

/// A credential found in a request.
enum Bearer<'a> {
    None,
    Token(&'a str),
    ApiKey(&'a str),
}

/// RFC 6750 `b64token`: letters, digits, `-._~+/`, then `=` padding.
fn is_b64token(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fn authorization(headers: &HeaderMap) -> Result<Bearer<'_>, AuthError> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let Some(v) = all.next() else {
        return Ok(Bearer::None);
    };
    if all.next().is_some() {
        return Err(AuthError::BadRequest("multiple_authorization_headers"));
    }
    let v = v
        .to_str()
        .map_err(|_| AuthError::BadRequest("malformed_authorization"))?;
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    let cred = rest.trim_start_matches(' ');
    if scheme.eq_ignore_ascii_case("bearer") {
        if !is_b64token(cred) {
            return Err(AuthError::Invalid {
                api_key: false,
                reason: "malformed_token",
            });
        }
        Ok(Bearer::Token(cred))
    } else if scheme.eq_ignore_ascii_case("apikey") {
        Ok(Bearer::ApiKey(cred))
    } else {
        // Basic, Digest, …: not a credential the gateway checks.
        Ok(Bearer::None)
    }
}

impl Authenticator {
    /// Compiles the section. Issuers whose config is unchanged keep their key sets and
    /// fetchers; the token cache is kept while every verifier it holds results of is
    /// unchanged; a generated internal signing key is kept. `on_drop` counts messages the
    /// revocation channel drops (a kept subscription keeps the hook it started with). Secret
    /// references are read through `secrets`.
    pub fn compile(
        cfg: &AuthConfig,
        previous: Option<&Authenticator>,
        on_drop: &crate::revocation::DropHook,
        on_event: &crate::events::EventHook,
        secrets: &dyn SecretResolver,
    ) -> Result<Authenticator, Vec<CompileProblem>> {
        let mut errors = Vec::new();
        let mut issuers = Vec::new();
        for (i, j) in cfg.jwt.iter().enumerate() {
            let p = format!("auth.jwt[{i}]");
            if let Some(prev) = previous.and_then(|pr| {
                pr.issuers
                    .iter()
                    .find(|s| s.issuer.config == *j && s.issuer.keys.is_remote())
            }) {
                issuers.push(prev.clone());
                continue;
            }
            match Issuer::static_keys(j, secrets) {
                Ok(Some(keys)) => issuers.push(Arc::new(IssuerSlot {
                    issuer: Arc::new(Issuer::new(j, KeySet::fixed(keys))),
                    _fetcher: None,
                })),
                Ok(None) => {
                    let keys = KeySet::remote(j.jwks_unknown_kid_interval.0, j.jwks_timeout.0);
                    match crate::jwks::spawn(j, &keys, on_event.clone()) {
                        Ok(fetcher) => issuers.push(Arc::new(IssuerSlot {
                            issuer: Arc::new(Issuer::new(j, keys)),
                            _fetcher: fetcher,
                        })),
                        Err(e) => errors.push((format!("{p}.jwks_url"), e)),
                    }
                }
                Err(e) => errors.push((p, e)),
            }
        }
        let api_keys = match ApiKeyStore::compile(&cfg.api_keys) {
            Ok(k) => Some(k),
            Err(e) => {
                errors.extend(e);
                None
            }
        };
        let mut introspectors = Vec::new();
        for (i, t) in cfg.introspection.iter().enumerate() {
            match Introspector::new(t, secrets) {
                // Kept (with its cache) while its config and secret are unchanged.
                Ok(x) => match previous.and_then(|pr| {
                    pr.introspectors
                        .iter()
                        .find(|p| p.config == *t && p.same_credentials(&x))
                }) {
                    Some(prev) => introspectors.push(prev.clone()),
                    None => introspectors.push(Arc::new(x)),
                },
                Err(e) => errors.push((format!("auth.introspection[{i}]"), e)),
            }
        }
        let policies = if cfg.policies.files.is_empty() {
            None
        } else {
            match Policies::load(&cfg.policies.files) {
                Ok(p) => Some(p),
                Err(e) => {
                    errors.extend(e.into_iter().map(|r| ("auth.policies.files".to_owned(), r)));
                    None
                }
            }
        };
        let internal = match InternalSigner::new(
            &cfg.internal_token,
            previous.map(|p| &p.internal),
            secrets,
        ) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(("auth.internal_token.signing_key".into(), e));
                None
            }
        };
        let (Some(api_keys), Some(internal), true) = (api_keys, internal, errors.is_empty()) else {
            return Err(errors);
        };
        let cache = match previous {
            Some(p) if p.config.jwt == cfg.jwt && p.config.cache == cfg.cache => p.cache.clone(),
            _ => Arc::new(TokenCache::new(cfg.cache.max_entries)),
        };
        // The issuer whose keys sign the revocation channel's messages.
        let signer = cfg.revocation.signed_by.as_deref().and_then(|name| {
            issuers
                .iter()
                .find(|s| &*s.issuer.name == name)
                .map(|s| s.issuer.clone())
        });
        // The revocation client's secrets, fingerprinted: a kept poller must have the same ones.
        let revocation_secrets =
            match crate::revocation::secrets_fingerprint(&cfg.revocation, secrets) {
                Ok(f) => f,
                Err(e) => return Err(vec![("auth.revocation".into(), e)]),
            };
        let poller = match previous {
            Some(p)
                if Arc::ptr_eq(&p.cache, &cache)
                    && p.config.revocation == cfg.revocation
                    && p.revocation_secrets == revocation_secrets =>
            {
                if let (Some(poller), Some(signer)) = (&p.poller, &signer) {
                    poller.set_signer(signer.clone());
                }
                p.poller.clone()
            }
            _ => match crate::revocation::spawn(
                &cfg.revocation,
                &cache,
                signer,
                on_drop.clone(),
                on_event.clone(),
                secrets,
            ) {
                Ok(p) => p.map(Arc::new),
                Err(e) => return Err(vec![("auth.revocation".into(), e)]),
            },
        };
        let strip = cfg
            .strip_headers
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        Ok(Authenticator {
            issuers,
            api_keys,
            api_key_header: HeaderName::from_bytes(cfg.api_keys.header.as_bytes())
                .unwrap_or_else(|_| HeaderName::from_static("x-api-key")),
            introspectors,
            cert: cfg.client_cert.clone(),
            cert_ids: Default::default(),
            cache,
            policies,
            internal,
            strip,
            config: cfg.clone(),
            poller,
            revocation_secrets,
        })
    }

    /// The identity a verified client certificate carries, from the cache when seen before.
    /// The handshake checked the certificate's validity; a keep-alive connection can outlive
    /// it, so each request checks its end again (a mesh SVID lives an hour).
    fn cert_identity(&self, der: &[u8], now: i64) -> Result<Arc<Identity>, AuthError> {
        const MAX_CACHED: usize = 1024;
        let unexpired = |id: Arc<Identity>| {
            if id.expires_at.is_some_and(|end| end <= now) {
                return Err(AuthError::Invalid {
                    api_key: false,
                    reason: "certificate_expired",
                });
            }
            Ok(id)
        };
        let lock = || self.cert_ids.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = lock().get(der) {
            return unexpired(id.clone());
        }
        let id = crate::cert::identity(der, &self.cert)
            .map(Arc::new)
            .map_err(|e| AuthError::Invalid {
                api_key: false,
                reason: e.reason(),
            })?;
        let mut ids = lock();
        if ids.len() >= MAX_CACHED {
            ids.clear();
        }
        ids.insert(der.into(), id.clone());
        drop(ids);
        unexpired(id)
    }

    /// Whether every issuer has its keys (`/readyz`).
    pub fn ready(&self) -> bool {
        self.issuers.iter().all(|s| s.issuer.keys.is_ready())
    }

    /// Issuers still waiting for their first key set.
    pub fn not_ready(&self) -> Vec<String> {
        self.issuers
            .iter()
            .filter(|s| !s.issuer.keys.is_ready())
            .map(|s| s.issuer.name.to_string())
            .collect()
    }

    /// The verified-token cache (revocation evicts from it).
    pub fn cache(&self) -> &Arc<TokenCache> {
        &self.cache
    }

    /// The Cedar policies' ids and effects (none without `auth.policies`).
    pub fn policy_summary(&self) -> Vec<(String, &'static str)> {
        self.policies
            .as_ref()
            .map_or_else(Vec::new, Policies::summary)
    }

    /// The internal signer's JWK set.
    pub fn internal_jwks(&self) -> serde_json::Value {
        self.internal.jwks()
    }

    /// Files this section reads, to watch for changes (key files, policies, API key file).
    pub fn watched_files(&self) -> Vec<std::path::PathBuf> {
        let c = &self.config;
        let mut v: Vec<std::path::PathBuf> = c
            .jwt
            .iter()
            .flat_map(|j| {
                [j.jwks_file.clone(), j.public_key_file.clone()]
                    .into_iter()
                    .flatten()
                    .chain(
                        j.hmac_secret
                            .as_ref()
                            .and_then(|s| s.path().map(Into::into)),
                    )
            })
            .collect();
        v.extend(c.api_keys.file.clone());
        v.extend(
            c.revocation
                .feed_token
                .as_ref()
                .and_then(|s| s.path().map(Into::into)),
        );
        v.extend(c.policies.files.iter().cloned());
        v.extend(
            c.internal_token
                .signing_key
                .as_ref()
                .and_then(|s| s.path().map(Into::into)),
        );
        v
    }

    /// Removes every `x-warden-*` header and the configured spoofable ones. Done on every
    /// request, public routes included. Names are compared with `_` read as `-` (and case
    /// ignored), because many upstream stacks (CGI, PHP, WSGI, Rails, nginx with
    /// `underscores_in_headers`) fold the two together: `x_warden_subject` would reach them
    /// as `x-warden-subject`.
    pub fn strip_identity_headers(&self, headers: &mut HeaderMap) {
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| self.is_reserved(k.as_str()))
            .cloned()
            .collect();
        for h in &spoofed {
            headers.remove(h);
        }
    }

    /// Whether a request header named `name` must never reach an upstream from a client:
    /// it reads as an `x-warden-*` header or one of `strip_headers` once `_` is read as `-`.
    fn is_reserved(&self, name: &str) -> bool {
        let name = name.as_bytes();
        name.get(..X_WARDEN.len())
            .is_some_and(|p| folded_eq(p, X_WARDEN.as_bytes()))
            || self
                .strip
                .iter()
                .any(|s| folded_eq(name, s.as_str().as_bytes()))
    }

    /// Finds and verifies the first credential the route accepts. A credential that is
    /// present but invalid is refused, never passed over for the next; so is one whose
    /// identity could not be forwarded intact ([`Identity::check_forwardable`]).
    pub async fn authenticate(
        &self,
        route: &RoutePolicy,
        headers: &HeaderMap,
        peer_cert: Option<&[u8]>,
        now: i64,
    ) -> Result<Arc<Identity>, AuthError> {
        let id = self.credential(route, headers, peer_cert, now).await?;
        id.check_forwardable()
            .map_err(|reason| AuthError::Invalid {
                api_key: id.method == AuthMethod::ApiKey,
                reason,
            })?;
        Ok(id)
    }

    async fn credential(
        &self,
        route: &RoutePolicy,
        headers: &HeaderMap,
        peer_cert: Option<&[u8]>,
        now: i64,
    ) -> Result<Arc<Identity>, AuthError> {
        let auth = authorization(headers)?;
        let mut challenges = Challenges {
            bearer: false,
            api_key: false,
        };
        // A bearer token without dots is opaque: it goes to introspection when the route
        // accepts that; otherwise it is an invalid JWT, never a reason to try the next kind.
        let opaque_goes_to_introspection = route
            .accept
            .iter()
            .any(|a| matches!(a, Accept::Introspection(_)));
        for accept in &route.accept {
            match accept {
                Accept::Jwt(name) => {
                    challenges.bearer = true;
                    if let Bearer::Token(t) = auth {
                        if t.contains('.') || !opaque_goes_to_introspection {
                            return self.verify_jwt(t, name.as_deref(), peer_cert, now).await;
                        }
                    }
                }
                Accept::Introspection(name) => {
                    challenges.bearer = true;
                    if let Bearer::Token(t) = auth {
                        let Some(x) = self.introspectors.iter().find(|x| x.name == *name) else {
                            return Err(AuthError::Unavailable("introspection_not_configured"));
                        };
                        let id = x.check(t, now).await.map_err(|e| match e {
                            crate::introspect::IntrospectError::Unavailable => {
                                AuthError::Unavailable(e.reason())
                            }
                            _ => AuthError::Invalid {
                                api_key: false,
                                reason: e.reason(),
                            },
                        })?;
                        return bound_to_cert(Arc::new(id), peer_cert);
                    }
                }
                Accept::ApiKey => {
                    challenges.api_key = true;
                    let mut in_header = headers.get_all(&self.api_key_header).iter();
                    let presented = match (in_header.next(), &auth) {
                        (Some(_), _) if in_header.next().is_some() => {
                            return Err(AuthError::BadRequest("multiple_api_keys"))
                        }
                        (Some(_), Bearer::ApiKey(_)) => {
                            return Err(AuthError::BadRequest("multiple_api_keys"))
                        }
                        (Some(v), _) => Some(v.to_str().unwrap_or("")),
                        (None, Bearer::ApiKey(k)) => Some(*k),
                        (None, _) => None,
                    };
                    if let Some(k) = presented {
                        return self.api_keys.verify(k, now).map(Arc::new).map_err(|e| {
                            AuthError::Invalid {
                                api_key: true,
                                reason: e.reason(),
                            }
                        });
                    }
                }
                Accept::ClientCert => {
                    if let Some(der) = peer_cert {
                        return self.cert_identity(der, now);
                    }
                }
            }
        }
        Err(AuthError::Missing(challenges))
    }

    async fn verify_jwt(
        &self,
        token: &str,
        only: Option<&str>,
        peer_cert: Option<&[u8]>,
        now: i64,
    ) -> Result<Arc<Identity>, AuthError> {
        let invalid = |e: jwt::JwtError| AuthError::Invalid {
            api_key: false,
            reason: e.reason(),
        };
        let allowed = |s: &IssuerSlot| only.is_none_or(|n| *s.issuer.name == *n);
        let max = self
            .issuers
            .iter()
            .filter(|s| allowed(s))
            .map(|s| s.issuer.max_token_bytes())
            .max()
            .unwrap_or(0);
        if token.len() > max {
            return Err(invalid(jwt::JwtError::TooLarge));
        }
        let key = sha256(token.as_bytes());
        if let Some((id, issuer)) = self.cache.get(&key, now) {
            if only.is_none_or(|n| *issuer == *n) {
                return bound_to_cert(id, peer_cert);
            }
        }
        let parsed = jwt::parse(token).map_err(invalid)?;
        let iss = jwt::unverified_issuer(&parsed).ok_or(invalid(jwt::JwtError::Issuer))?;
        let slot = self
            .issuers
            .iter()
            .find(|s| allowed(s) && s.issuer.is(iss))
            .ok_or(invalid(jwt::JwtError::Issuer))?;
        let id = slot.issuer.verify(&parsed, now).await.map_err(invalid)?;
        if let Some(jti) = &id.jti {
            if self.cache.is_revoked(jti, now) {
                return Err(invalid(jwt::JwtError::Revoked));
            }
        }
        let id = Arc::new(id);
        let exp = id.expires_at.unwrap_or(now);
        self.cache
            .insert(key, id.clone(), slot.issuer.name.clone(), exp, now);
        bound_to_cert(id, peer_cert)
    }

    /// Applies the route's rules and, where it asks, the Cedar policies. `grpc` is a gRPC
    /// call's service and method (Cedar's `context.grpc_service` and `context.grpc_method`).
    /// A refusal comes with, for a policy denial, which Cedar policies decided (`forbidden by
    /// p1, p2` or `no policy permits`): policy ids, never the request's values.
    #[allow(clippy::too_many_arguments)]
    pub fn authorize(
        &self,
        route: &RoutePolicy,
        id: &Identity,
        method: &Method,
        route_name: &str,
        path: &str,
        host: &str,
        client_ip: IpAddr,
        grpc: Option<(&str, &str)>,
    ) -> Result<(), (AuthError, Option<String>)> {
        route.check(id, method).map_err(|d| {
            (
                AuthError::Forbidden {
                    reason: d.reason,
                    insufficient_scope: d.insufficient_scope,
                },
                None,
            )
        })?;
        if route.policy {
            let Some(p) = &self.policies else {
                return Err((
                    AuthError::Forbidden {
                        reason: "no_policies_loaded",
                        insufficient_scope: false,
                    },
                    None,
                ));
            };
            let d = p.is_authorized(&PolicyRequest {
                identity: id,
                method: method.as_str(),
                route: route_name,
                path,
                host,
                client_ip,
                grpc,
            });
            if !d.allowed {
                return Err((
                    AuthError::Forbidden {
                        reason: "policy_denied",
                        insufficient_scope: false,
                    },
                    Some(d.reason),
                ));
            }
        }
        Ok(())
    }

    /// Adds the identity headers and sets `Authorization` as the route asks. Never drops one
    /// silently: an identity whose values cannot be header values (which
    /// [`Self::authenticate`] already refuses) is an error, so the request is refused rather
    /// than forwarded without its subject.
    pub fn add_identity_headers(
        &self,
        route: &RoutePolicy,
        id: &Identity,
        audience: &str,
        headers: &mut HeaderMap,
        now: i64,
    ) -> Result<(), AuthError> {
        let invalid = |_| AuthError::Invalid {
            api_key: id.method == AuthMethod::ApiKey,
            reason: "invalid_claim",
        };
        headers.insert(
            SUBJECT.clone(),
            HeaderValue::from_bytes(id.subject.as_bytes()).map_err(invalid)?,
        );
        headers.insert(
            SCOPES.clone(),
            HeaderValue::from_bytes(id.scopes.join(" ").as_bytes()).map_err(invalid)?,
        );
        headers.insert(METHOD.clone(), HeaderValue::from_static(id.method.as_str()));
        if let Some(c) = &id.client_id {
            headers.insert(
                CLIENT.clone(),
                HeaderValue::from_bytes(c.as_bytes()).map_err(invalid)?,
            );
        }
        match route.upstream_token {
            UpstreamToken::Forward => {}
            UpstreamToken::Remove => {
                headers.remove(AUTHORIZATION);
                headers.remove(&self.api_key_header);
            }
            UpstreamToken::Internal => {
                headers.remove(&self.api_key_header);
                let token = self.internal.mint(id, audience, now);
                let v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(invalid)?;
                headers.insert(AUTHORIZATION, v);
            }
        }
        Ok(())
    }
}

/// Header names equal when ASCII case is ignored and `_` is read as `-`.
fn folded_eq(a: &[u8], b: &[u8]) -> bool {
    let fold = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold(*x) == fold(*y))
}

/// RFC 8705: a token bound to a certificate (`cnf.x5t#S256`) must come with that certificate.
fn bound_to_cert(id: Arc<Identity>, peer_cert: Option<&[u8]>) -> Result<Arc<Identity>, AuthError> {
    if id.method == AuthMethod::ClientCert {
        return Ok(id);
    }
    if let Some(want) = &id.cert_thumbprint {
        let ok = peer_cert.is_some_and(|der| {
            warden_crypto::ct_eq(crate::cert::thumbprint(der).as_bytes(), want.as_bytes())
        });
        if !ok {
            return Err(AuthError::Invalid {
                api_key: false,
                reason: "certificate_binding_mismatch",
            });
        }
    }
    Ok(id)
}
