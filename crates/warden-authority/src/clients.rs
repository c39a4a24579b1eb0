//! Clients (services that ask for tokens) and their secrets.
//!
//! A client secret is 32 random bytes, base64url: generated here, shown once, and stored only
//! as HMAC-SHA256 under a server key that lives (encrypted) in the store. A keyed fast hash is
//! right for generated high-entropy secrets: nobody can guess 256 bits, so a slow hash would
//! only slow every token request; the key means a stolen database alone does not even allow
//! checking a guess offline. (argon2id would be needed only for human-chosen secrets, which
//! are never accepted.)
//!
//! A client may hold several secrets at once, so a secret can be rotated without downtime:
//! add the new one, move the service to it, then remove (or let expire) the old one.
//!
//! Record changes are read-modify-write on one key; two admins changing the same client at
//! the same instant can lose one change (the store has no compare-and-swap yet).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use warden_crypto::jws::{b64url, b64url_decode, Jwk};
use warden_store::Store;
use zeroize::Zeroizing;

use crate::audit::{self, Audit};
use crate::error::{AuthorityError, Result};

/// The `client_credentials` grant type.
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// The RFC 8693 token-exchange grant type.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

const CLIENT_PREFIX: &str = "tokens/clients/";
const SERVER_KEY: &str = "tokens/server/secret-hash-key";

/// How a client proves who it is at the token endpoint (RFC 7591 names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// HTTP Basic with the client id and secret.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A JWT signed with the client's key (RFC 7523).
    PrivateKeyJwt,
    /// A TLS client certificate (RFC 8705).
    TlsClientAuth,
}

impl AuthMethod {
    /// The RFC 7591 name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
            AuthMethod::TlsClientAuth => "tls_client_auth",
        }
    }

    /// Parses an RFC 7591 name.
    pub fn parse(s: &str) -> Option<AuthMethod> {
        [
            AuthMethod::ClientSecretBasic,
            AuthMethod::ClientSecretPost,
            AuthMethod::PrivateKeyJwt,
            AuthMethod::TlsClientAuth,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }

    /// Whether the method uses client secrets.
    pub fn uses_secret(self) -> bool {
        matches!(
            self,
            AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost
        )
    }
}

/// The methods a client may authenticate with: at least one, no repeats, in registration
/// order.
///
/// Stored as one RFC 7591 name when there is one method (the shape records had before a
/// client could hold several, so those records load unchanged and an older build can still
/// read single-method clients) and as a list otherwise; both shapes are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthMethods(Vec<AuthMethod>);

impl AuthMethods {
    /// The set from a list; `None` when it is empty.
    pub fn new(methods: Vec<AuthMethod>) -> Option<AuthMethods> {
        let mut out: Vec<AuthMethod> = Vec::with_capacity(methods.len());
        for m in methods {
            if !out.contains(&m) {
                out.push(m);
            }
        }
        (!out.is_empty()).then_some(AuthMethods(out))
    }

    /// One method.
    pub fn one(m: AuthMethod) -> AuthMethods {
        AuthMethods(vec![m])
    }

    /// Whether `m` is registered.
    pub fn contains(&self, m: AuthMethod) -> bool {
        self.0.contains(&m)
    }

    /// The methods, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = AuthMethod> + '_ {
        self.0.iter().copied()
    }

    /// The first method registered (RFC 7591's single `token_endpoint_auth_method`).
    pub fn first(&self) -> AuthMethod {
        self.0[0]
    }

    /// Whether any method uses client secrets.
    pub fn uses_secret(&self) -> bool {
        self.0.iter().any(|m| m.uses_secret())
    }

    /// The RFC 7591 names.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|m| m.as_str()).collect()
    }
}

impl Serialize for AuthMethods {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for AuthMethods {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            One(AuthMethod),
            Many(Vec<AuthMethod>),
        }
        let list = match Shape::deserialize(d)? {
            Shape::One(m) => vec![m],
            Shape::Many(v) => v,
        };
        AuthMethods::new(list)
            .ok_or_else(|| serde::de::Error::custom("a client needs at least one auth method"))
    }
}

/// One value or a list of them (admin API fields that used to take one value).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// One stored secret: its id and keyed hash, never the secret.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredSecret {
    /// Public id of the secret (to name it when removing it).
    pub id: String,
    /// base64url HMAC-SHA256 of the secret under the server key.
    pub hash: String,
    /// When it was made (Unix seconds).
    pub created: i64,
    /// When it stops working (Unix seconds); never when unset.
    #[serde(default)]
    pub expires: Option<i64>,
}

/// What a `tls_client_auth` client's certificate must carry (RFC 8705 §2.1.2); one is set.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TlsIdentity {
    /// The certificate's subject DN, as x509-parser prints it (`CN=billing, O=Example`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_dn: Option<String>,
    /// A DNS SAN the certificate must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub san_dns: Option<String>,
    /// A URI SAN (e.g. a SPIFFE ID) the certificate must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub san_uri: Option<String>,
}

/// A registered client as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Client {
    /// The client id.
    pub client_id: String,
    /// Scopes it may be given.
    pub scopes: Vec<String>,
    /// Audiences its tokens may name (client credentials).
    pub audiences: Vec<String>,
    /// Audiences it may obtain by token exchange.
    #[serde(default)]
    pub exchange_audiences: Vec<String>,
    /// Grant types it may use.
    pub grant_types: Vec<String>,
    /// How it may authenticate (one method or several; the field keeps its old name so
    /// records stored before it could hold several load unchanged).
    #[serde(rename = "auth_method")]
    pub auth_methods: AuthMethods,
    /// Token lifetime in seconds; the authority's default when unset.
    #[serde(default)]
    pub token_lifetime: Option<i64>,
    /// Secrets (for the `client_secret_*` methods).
    #[serde(default)]
    pub secrets: Vec<StoredSecret>,
    /// Registered public keys (`private_key_jwt`), a JWK set.
    #[serde(default)]
    pub jwks: Option<Value>,
    /// Where its public keys are published (`private_key_jwt`).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Expected certificate identity (`tls_client_auth`).
    #[serde(default)]
    pub tls: Option<TlsIdentity>,
    /// A disabled client cannot authenticate.
    #[serde(default)]
    pub disabled: bool,
    /// Whether it may introspect tokens (RFC 7662): resource servers and gateways that check
    /// opaque or JWT tokens at `/oauth2/introspect`. Other clients are answered
    /// `{"active": false}` whatever the token, so a client cannot read another's claims.
    #[serde(default)]
    pub introspect: bool,
    /// When it was registered.
    pub created: i64,
    /// When it last changed.
    pub updated: i64,
}

/// What a caller asks for when registering a client.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// Wanted id; generated when unset.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Audiences (at least one).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Audiences allowed by token exchange.
    #[serde(default)]
    pub exchange_audiences: Vec<String>,
    /// Grant types; default `client_credentials`.
    #[serde(default)]
    pub grant_types: Vec<String>,
    /// Authentication method, or a list of them (e.g. `["client_secret_basic",
    /// "client_secret_post"]`); default `client_secret_basic`. Also read as `auth_methods` or
    /// RFC 7591's `token_endpoint_auth_method`.
    #[serde(default, alias = "auth_methods", alias = "token_endpoint_auth_method")]
    pub auth_method: Option<OneOrMany>,
    /// Token lifetime in seconds.
    #[serde(default)]
    pub token_lifetime: Option<i64>,
    /// JWK set for `private_key_jwt`.
    #[serde(default)]
    pub jwks: Option<Value>,
    /// JWKS URL for `private_key_jwt`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Certificate identity for `tls_client_auth`.
    #[serde(default)]
    pub tls: Option<TlsIdentity>,
    /// May introspect tokens (see [`Client::introspect`]); default no.
    #[serde(default)]
    pub introspect: bool,
}

/// A change to an existing client: each field given replaces the client's.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientUpdate {
    /// New authentication methods (one or a list; same names as [`ClientSpec::auth_method`]).
    #[serde(default, alias = "auth_methods", alias = "token_endpoint_auth_method")]
    pub auth_method: Option<OneOrMany>,
    /// Grant or withdraw introspection.
    #[serde(default)]
    pub introspect: Option<bool>,
}

/// A newly made secret: shown once to whoever asked, never stored.
#[derive(Clone)]
pub struct IssuedSecret {
    /// The secret's id.
    pub id: String,
    /// The secret.
    pub secret: Zeroizing<String>,
}

impl std::fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IssuedSecret({}, **REDACTED**)", self.id)
    }
}

/// The client as shown by list and the admin API: no hashes.
pub fn public_view(c: &Client) -> Value {
    serde_json::json!({
        "client_id": c.client_id,
        "scopes": c.scopes,
        "audiences": c.audiences,
        "exchange_audiences": c.exchange_audiences,
        "grant_types": c.grant_types,
        "token_endpoint_auth_method": c.auth_methods.first().as_str(),
        "token_endpoint_auth_methods": c.auth_methods.names(),
        "introspect": c.introspect,
        "token_lifetime": c.token_lifetime,
        "secrets": c.secrets.iter().map(|s| serde_json::json!({
            "id": s.id, "created": s.created, "expires": s.expires,
        })).collect::<Vec<_>>(),
        "jwks": c.jwks,
        "jwks_uri": c.jwks_uri,
        "tls": c.tls,
        "disabled": c.disabled,
        "created": c.created,
        "updated": c.updated,
    })
}

fn random_b64(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::fill(&mut b[..]);
    b64url(&b)
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:@".contains(&b))
}

fn valid_token_word(s: &str) -> bool {
    // RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E.
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// How long a client record read for authentication is reused from memory. A change made by
/// this instance takes effect at once; one made by another instance on the same database
/// (PostgreSQL) within this time.
pub const CLIENT_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Most client records kept in that cache (it is emptied when full).
const CLIENT_CACHE_MAX: usize = 10_000;

type ClientCache =
    std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Client)>>;

/// The registry of clients, on the store. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    store: Store,
    key: Arc<ring::hmac::Key>,
    audit: Audit,
    /// Client records read for authentication, decrypted, for [`CLIENT_CACHE_TTL`]: the hot
    /// paths (token, introspection) then need no store read per request.
    cache: Arc<ClientCache>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

impl Registry {
    /// Opens the registry, creating the secret-hashing key on first use.
    pub async fn open(store: Store, audit: Audit) -> Result<Registry> {
        let mut fresh = Zeroizing::new([0u8; 32]);
        rand::fill(&mut fresh[..]);
        // Two instances starting at once: put_if_absent makes one key win, both read it.
        store.put_if_absent(SERVER_KEY, &fresh[..]).await?;
        let raw = Zeroizing::new(store.get(SERVER_KEY).await?.ok_or_else(|| {
            AuthorityError::Corrupt {
                key: SERVER_KEY.into(),
                reason: "missing after creation".into(),
            }
        })?);
        if raw.len() != 32 {
            return Err(AuthorityError::Corrupt {
                key: SERVER_KEY.into(),
                reason: "not 32 bytes".into(),
            });
        }
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw);
        Ok(Registry {
            store,
            key: Arc::new(key),
            audit,
            cache: Arc::default(),
        })
    }

    fn hash(&self, client_id: &str, secret: &str) -> String {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(client_id.as_bytes());
        ctx.update(&[0]);
        ctx.update(secret.as_bytes());
        b64url(ctx.sign().as_ref())
    }

    fn new_secret(&self, client_id: &str, now: i64) -> (StoredSecret, IssuedSecret) {
        let secret = Zeroizing::new(random_b64(32));
        let id = random_b64(6);
        let stored = StoredSecret {
            id: id.clone(),
            hash: self.hash(client_id, &secret),
            created: now,
            expires: None,
        };
        (stored, IssuedSecret { id, secret })
    }

    /// Whether `secret` is one of the client's live secrets (constant time per secret).
    pub fn check_secret(&self, c: &Client, secret: &str, now: i64) -> bool {
        let presented = self.hash(&c.client_id, secret);
        let mut ok = false;
        for s in &c.secrets {
            let live = s.expires.is_none_or(|e| now < e);
            // Every stored secret is compared, so timing does not tell which one matched.
            let eq = warden_crypto::ct_eq(presented.as_bytes(), s.hash.as_bytes());
            ok |= eq && live;
        }
        ok
    }

    fn key_of(client_id: &str) -> String {
        format!("{CLIENT_PREFIX}{client_id}")
    }

    /// A client by id.
    pub async fn get(&self, client_id: &str) -> Result<Option<Client>> {
        if !valid_id(client_id) {
            return Ok(None);
        }
        let key = Self::key_of(client_id);
        match self.store.get(&key).await? {
            None => Ok(None),
            Some(raw) => {
                serde_json::from_slice(&raw)
                    .map(Some)
                    .map_err(|e| AuthorityError::Corrupt {
                        key,
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// A client by id for authentication: from the short-lived cache when fresh, else from
    /// the store. Read-modify-write paths use [`Registry::get`], which always reads the store.
    pub async fn get_for_auth(&self, client_id: &str) -> Result<Option<Client>> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, c)) = cache.get(client_id) {
                if at.elapsed() < CLIENT_CACHE_TTL {
                    return Ok(Some(c.clone()));
                }
            }
        }
        let c = self.get(client_id).await?;
        if let Some(c) = &c {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CLIENT_CACHE_MAX {
                cache.clear();
            }
            cache.insert(c.client_id.clone(), (std::time::Instant::now(), c.clone()));
        }
        Ok(c)
    }

    async fn save(&self, c: &Client) -> Result<()> {
        let raw = serde_json::to_vec(c).map_err(|e| AuthorityError::Invalid(e.to_string()))?;
        // Forget the cached copy first: a change here is seen by the next request.
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&c.client_id);
        self.store.put(&Self::key_of(&c.client_id), &raw).await?;
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&c.client_id);
        Ok(())
    }

    /// Every client, by id.
    pub async fn list(&self) -> Result<Vec<Client>> {
        let mut out = Vec::new();
        for key in self.store.list(CLIENT_PREFIX).await? {
            if let Some(id) = key.strip_prefix(CLIENT_PREFIX) {
                if let Some(c) = self.get(id).await? {
                    out.push(c);
                }
            }
        }
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Ok(out)
    }

    fn build(&self, spec: ClientSpec, now: i64) -> Result<Client> {
        let bad = |m: String| Err(AuthorityError::Invalid(m));
        let client_id = spec.client_id.unwrap_or_else(|| random_b64(12));
        if !valid_id(&client_id) {
            return bad(format!(
                "client_id `{client_id}`: 1-128 characters of letters, digits and -._:@"
            ));
        }
        let auth_methods = match spec.auth_method {
            None => AuthMethods::one(AuthMethod::ClientSecretBasic),
            Some(m) => parse_methods(m)?,
        };
        let grant_types = if spec.grant_types.is_empty() {
            vec![GRANT_CLIENT_CREDENTIALS.to_owned()]
        } else {
            spec.grant_types
        };
        for g in &grant_types {
            if g != GRANT_CLIENT_CREDENTIALS && g != GRANT_TOKEN_EXCHANGE {
                return bad(format!(
                    "grant type `{g}`: expected client_credentials or {GRANT_TOKEN_EXCHANGE}"
                ));
            }
        }
        if spec.audiences.is_empty() && spec.exchange_audiences.is_empty() {
            return bad("at least one audience (or exchange audience) is needed".into());
        }
        for w in spec.scopes.iter() {
            if !valid_token_word(w) {
                return bad(format!("scope `{w}` is not a valid scope token"));
            }
        }
        for a in spec.audiences.iter().chain(&spec.exchange_audiences) {
            if a.is_empty() || a.len() > 512 {
                return bad("audiences must be 1-512 characters".into());
            }
        }
        if let Some(l) = spec.token_lifetime {
            if l < 1 {
                return bad("token lifetime must be at least 1 second".into());
            }
        }
        check_method_needs(&auth_methods, &spec.jwks, &spec.jwks_uri, &spec.tls)?;
        Ok(Client {
            client_id,
            scopes: spec.scopes,
            audiences: spec.audiences,
            exchange_audiences: spec.exchange_audiences,
            grant_types,
            auth_methods,
            token_lifetime: spec.token_lifetime,
            secrets: Vec::new(),
            jwks: spec.jwks,
            jwks_uri: spec.jwks_uri,
            tls: spec.tls,
            disabled: false,
            introspect: spec.introspect,
            created: now,
            updated: now,
        })
    }

    /// Registers a client; for the secret methods, makes its first secret (returned once).
    pub async fn create(
        &self,
        spec: ClientSpec,
        actor: &str,
        now: i64,
    ) -> Result<(Client, Option<IssuedSecret>)> {
        let mut c = self.build(spec, now)?;
        let issued = if c.auth_methods.uses_secret() {
            let (stored, issued) = self.new_secret(&c.client_id, now);
            c.secrets.push(stored);
            Some(issued)
        } else {
            None
        };
        let raw = serde_json::to_vec(&c).map_err(|e| AuthorityError::Invalid(e.to_string()))?;
        if !self
            .store
            .put_if_absent(&Self::key_of(&c.client_id), &raw)
            .await?
        {
            return Err(AuthorityError::Invalid(format!(
                "client `{}` already exists",
                c.client_id
            )));
        }
        self.audit
            .record(
                audit::Event::new("client.create", actor, "success")
                    .subject(&c.client_id)
                    .detail(serde_json::json!({
                        "auth_methods": c.auth_methods.names(),
                        "introspect": c.introspect,
                        "scopes": c.scopes,
                        "audiences": c.audiences,
                        "grant_types": c.grant_types,
                    })),
            )
            .await?;
        Ok((c, issued))
    }

    async fn modify(
        &self,
        client_id: &str,
        action: &str,
        actor: &str,
        now: i64,
        f: impl FnOnce(&mut Client) -> Result<Value>,
    ) -> Result<Client> {
        let mut c = self
            .get(client_id)
            .await?
            .ok_or_else(|| AuthorityError::NoClient(client_id.to_owned()))?;
        let detail = f(&mut c)?;
        c.updated = now;
        self.save(&c).await?;
        self.audit
            .record(
                audit::Event::new(action, actor, "success")
                    .subject(client_id)
                    .detail(detail),
            )
            .await?;
        Ok(c)
    }

    /// Adds a secret to a client; existing secrets keep working (until `old_expire_at`,
    /// when given).
    pub async fn add_secret(
        &self,
        client_id: &str,
        old_expire_at: Option<i64>,
        actor: &str,
        now: i64,
    ) -> Result<IssuedSecret> {
        let mut issued = None;
        self.modify(client_id, "client.rotate_secret", actor, now, |c| {
            if !c.auth_methods.uses_secret() {
                return Err(AuthorityError::Invalid(format!(
                    "client `{}` authenticates with {}, not a secret",
                    c.client_id,
                    c.auth_methods.names().join(", ")
                )));
            }
            if c.secrets.len() >= 8 {
                return Err(AuthorityError::Invalid(
                    "a client holds at most 8 secrets; remove an old one first".into(),
                ));
            }
            if let Some(at) = old_expire_at {
                for s in &mut c.secrets {
                    s.expires = Some(s.expires.map_or(at, |e| e.min(at)));
                }
            }
            let (stored, i) = self.new_secret(&c.client_id, now);
            let id = stored.id.clone();
            c.secrets.push(stored);
            issued = Some(i);
            Ok(serde_json::json!({ "secret_id": id, "old_expire_at": old_expire_at }))
        })
        .await?;
        issued.ok_or_else(|| AuthorityError::Invalid("no secret made".into()))
    }

    /// Removes one secret by id.
    pub async fn remove_secret(
        &self,
        client_id: &str,
        secret_id: &str,
        actor: &str,
        now: i64,
    ) -> Result<Client> {
        self.modify(client_id, "client.remove_secret", actor, now, |c| {
            let before = c.secrets.len();
            c.secrets.retain(|s| s.id != secret_id);
            if c.secrets.len() == before {
                return Err(AuthorityError::Invalid(format!(
                    "client `{}` has no secret `{secret_id}`",
                    c.client_id
                )));
            }
            Ok(serde_json::json!({ "secret_id": secret_id }))
        })
        .await
    }

    /// Disables (or re-enables) a client.
    pub async fn set_disabled(
        &self,
        client_id: &str,
        disabled: bool,
        actor: &str,
        now: i64,
    ) -> Result<Client> {
        let action = if disabled {
            "client.disable"
        } else {
            "client.enable"
        };
        self.modify(client_id, action, actor, now, |c| {
            c.disabled = disabled;
            Ok(Value::Null)
        })
        .await
    }

    /// Changes a client's authentication methods or introspection permission. A change that
    /// gives a client without a secret a secret method makes its first secret (returned once).
    pub async fn update(
        &self,
        client_id: &str,
        update: ClientUpdate,
        actor: &str,
        now: i64,
    ) -> Result<(Client, Option<IssuedSecret>)> {
        let methods = update.auth_method.map(parse_methods).transpose()?;
        let mut issued = None;
        let c = self
            .modify(client_id, "client.update", actor, now, |c| {
                let mut detail = serde_json::Map::new();
                if let Some(m) = methods {
                    check_method_needs(&m, &c.jwks, &c.jwks_uri, &c.tls)?;
                    if m.uses_secret() && c.secrets.is_empty() {
                        let (stored, i) = self.new_secret(&c.client_id, now);
                        detail.insert("secret_id".into(), stored.id.clone().into());
                        c.secrets.push(stored);
                        issued = Some(i);
                    }
                    detail.insert("auth_methods".into(), m.names().into());
                    c.auth_methods = m;
                }
                if let Some(i) = update.introspect {
                    c.introspect = i;
                    detail.insert("introspect".into(), i.into());
                }
                Ok(Value::Object(detail))
            })
            .await?;
        Ok((c, issued))
    }
}

/// Parses authentication method names into a set.
fn parse_methods(names: OneOrMany) -> Result<AuthMethods> {
    let mut out = Vec::new();
    for m in names.into_vec() {
        match AuthMethod::parse(&m) {
            Some(m) => out.push(m),
            None => {
                return Err(AuthorityError::Invalid(format!(
                    "auth method `{m}`: expected client_secret_basic, client_secret_post, \
                     private_key_jwt or tls_client_auth"
                )))
            }
        }
    }
    AuthMethods::new(out)
        .ok_or_else(|| AuthorityError::Invalid("at least one auth method is needed".into()))
}

/// Checks that each method has what it needs: keys for `private_key_jwt`, a certificate
/// identity for `tls_client_auth`.
fn check_method_needs(
    methods: &AuthMethods,
    jwks: &Option<Value>,
    jwks_uri: &Option<String>,
    tls: &Option<TlsIdentity>,
) -> Result<()> {
    let bad = |m: &str| Err(AuthorityError::Invalid(m.to_owned()));
    if methods.contains(AuthMethod::PrivateKeyJwt) {
        match (jwks, jwks_uri) {
            (Some(j), None) => {
                let (keys, skipped) = Jwk::set_from_json(j)
                    .map_err(|e| AuthorityError::Invalid(format!("jwks: {e}")))?;
                if let Some((i, e)) = skipped.first() {
                    return bad(&format!("jwks: keys[{i}]: {e}"));
                }
                if keys.is_empty() {
                    return bad("jwks holds no keys");
                }
            }
            (None, Some(u)) => {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    return bad("jwks_uri must be an http:// or https:// URL");
                }
            }
            _ => return bad("private_key_jwt needs exactly one of jwks, jwks_uri"),
        }
    }
    if methods.contains(AuthMethod::TlsClientAuth) {
        let t = tls.clone().unwrap_or_default();
        let n = [&t.subject_dn, &t.san_dns, &t.san_uri]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if n != 1 {
            return bad("tls_client_auth needs exactly one of subject_dn, san_dns, san_uri");
        }
    }
    Ok(())
}

/// Decodes the JWK set a client registered.
pub(crate) fn registered_keys(c: &Client) -> Vec<Jwk> {
    c.jwks
        .as_ref()
        .and_then(|j| Jwk::set_from_json(j).ok())
        .map(|(k, _)| k)
        .unwrap_or_default()
}

/// Whether a presented string decodes as base64url (cheap shape check before hashing).
pub(crate) fn plausible_secret(s: &str) -> bool {
    s.len() <= 256 && b64url_decode(s.as_bytes()).is_some()
}
