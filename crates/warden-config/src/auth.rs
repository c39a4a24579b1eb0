//! The `[auth]` section (credentials the gateway can verify) and a route's `auth` decision.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::defaults as d;
use crate::types::{ByteSize, Dur, SecretRef, Timestamp};

/// Credentials the gateway can verify. Routes name which of them they accept.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Request headers always removed from what clients send, in addition to every
    /// `x-warden-*` header, so a client can never pose as an authenticated identity.
    pub strip_headers: Vec<String>,
    /// JWT issuers (`[[auth.jwt]]`).
    pub jwt: Vec<JwtIssuerConfig>,
    /// API keys.
    pub api_keys: ApiKeysConfig,
    /// OAuth 2.0 token introspection endpoints for opaque tokens (`[[auth.introspection]]`).
    pub introspection: Vec<IntrospectionConfig>,
    /// How a verified client certificate becomes an identity.
    pub client_cert: ClientCertConfig,
    /// The cache of verified tokens.
    pub cache: TokenCacheConfig,
    /// Cedar policies for what per-route rules cannot say.
    pub policies: PolicyConfig,
    /// Short-lived tokens the gateway signs for upstreams (`upstream_token = "internal"`).
    pub internal_token: InternalTokenConfig,
    /// Where revoked token ids come from, so revoked tokens stop working before they expire.
    pub revocation: RevocationConfig,
}

/// The token service's revocation feed, polled by the gateway.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    /// The feed (`http://authority:8200/oauth2/revocations`); unset: no revocation feed.
    pub feed_url: Option<String>,
    /// Bearer credential for the feed (`env:NAME` or `file:PATH`).
    pub feed_token: Option<SecretRef>,
    /// How often the feed is polled (revocations reach the gateway within this plus one
    /// round trip).
    pub poll_interval: Dur,
    /// PEM bundle of CAs for an `https://` feed.
    pub ca: Option<PathBuf>,
    /// Redis the token service publishes revocations to (`redis://host[:port][/db]`, no
    /// credentials; the authority's `redis_url`). The gateway subscribes and applies each one
    /// as it arrives, instead of at the next poll. Pub/sub is lossy, so `feed_url` is required
    /// with it: the feed remains the record and covers what is missed while disconnected.
    /// Unset: the feed only.
    pub redis_url: Option<String>,
    /// Password for that Redis (`AUTH`), when it wants one: `env:NAME` or `file:PATH`.
    pub redis_password: Option<SecretRef>,
    /// The pub/sub channel (the authority's `redis_channel`).
    pub redis_channel: String,
    /// The `[[auth.jwt]]` issuer (by `name`) whose keys sign the messages on `redis_channel`:
    /// the token service, which signs each one with its current token-signing key. Required
    /// with `redis_url`, since anyone who can publish to the channel could otherwise revoke
    /// tokens; unsigned, badly signed and stale messages are dropped and counted.
    pub signed_by: Option<String>,
    /// How far a signed message's `iat` may be from this gateway's clock, either way; older
    /// (or later) messages are dropped as stale.
    pub max_message_age: Dur,
}

/// A JWT issuer whose tokens are accepted.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// Name routes use in `accept` (`jwt:NAME`), and in metrics.
    pub name: String,
    /// The exact `iss` value tokens must carry.
    pub issuer: String,
    /// Accepted audiences: a token's `aud` must contain at least one.
    pub audiences: Vec<String>,
    /// Algorithms accepted from this issuer (e.g. `["ES256"]`). `HS*` only with `hmac_secret`,
    /// and never together with public keys.
    pub algorithms: Vec<String>,
    /// Where the issuer publishes its keys (`https://…/jwks`); fetched in the background.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A JWK set on disk; reloaded with the config.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A PEM public key (or certificate) on disk, for issuers with one fixed key.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// Shared secret for `HS256/384/512` (`env:NAME` or `file:PATH`).
    #[serde(default)]
    pub hmac_secret: Option<SecretRef>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "d::jwt_leeway")]
    pub leeway: Dur,
    /// Longest token accepted; longer ones are refused before any parsing.
    #[serde(default = "d::jwt_max_token_bytes")]
    pub max_token_bytes: ByteSize,
    /// Required `typ` header (e.g. `at+jwt` for RFC 9068 access tokens); unset: not checked.
    #[serde(default)]
    pub require_typ: Option<String>,
    /// PEM bundle of CAs for an `https://` `jwks_url` with a private CA; default: the system's
    /// web PKI roots are not bundled, so a CA must be given for `https://`.
    #[serde(default)]
    pub jwks_ca: Option<PathBuf>,
    /// Shortest time between scheduled JWKS refreshes (a `Cache-Control: max-age` below it is
    /// raised to it).
    #[serde(default = "d::jwks_refresh_min")]
    pub jwks_refresh_min: Dur,
    /// Longest time between scheduled JWKS refreshes (a larger `max-age` is cut to it). Without
    /// `Cache-Control` the key set is refreshed every 5 minutes, within these bounds.
    #[serde(default = "d::jwks_refresh_max")]
    pub jwks_refresh_max: Dur,
    /// A token with an unknown `kid` triggers a re-fetch at most this often.
    #[serde(default = "d::jwks_unknown_kid_interval")]
    pub jwks_unknown_kid_interval: Dur,
    /// Largest JWKS document accepted.
    #[serde(default = "d::jwks_max_bytes")]
    pub jwks_max_bytes: ByteSize,
    /// Time allowed for one JWKS fetch.
    #[serde(default = "d::jwks_timeout")]
    pub jwks_timeout: Dur,
}

/// API keys: `wdn_<id>_<secret>`, looked up by id, checked against a stored hash.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeysConfig {
    /// Header that carries the key; `Authorization: ApiKey <key>` is always accepted too.
    pub header: String,
    /// A key file managed by `warden apikey create|list|revoke` (TOML, `[[keys]]` entries as
    /// below); reloaded when it changes.
    pub file: Option<PathBuf>,
    /// Keys written in the config itself.
    pub keys: Vec<ApiKeyConfig>,
}

/// One API key. Only the hash of its secret is stored.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The public id (the part after `wdn_`), used for lookup and in logs.
    pub id: String,
    /// `sha256:<hex>` of the secret part.
    pub hash: String,
    /// Who the key belongs to; becomes the request's subject.
    pub owner: String,
    /// Scopes the key grants.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// When the key stops working (RFC 3339); never when unset.
    #[serde(default)]
    pub expires: Option<Timestamp>,
    /// Extra attributes (e.g. `tier = "gold"`), visible to policies.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// A revoked key is refused.
    #[serde(default)]
    pub revoked: bool,
    /// When the key was made (informational).
    #[serde(default)]
    pub created: Option<Timestamp>,
}

/// An RFC 7662 introspection endpoint.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// Name routes use in `accept` (`introspection:NAME`).
    pub name: String,
    /// The endpoint (`https://…/introspect`).
    pub url: String,
    /// Client id the gateway authenticates with (HTTP Basic).
    pub client_id: String,
    /// Its secret (`env:NAME` or `file:PATH`).
    pub client_secret: SecretRef,
    /// PEM bundle of CAs for an `https://` url.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Time allowed for one call; past it the request is refused (fail closed).
    #[serde(default = "d::introspection_timeout")]
    pub timeout: Dur,
    /// Longest time an active result is cached (never past the token's `exp`).
    #[serde(default = "d::introspection_cache_ttl")]
    pub cache_ttl: Dur,
    /// How long an inactive result is cached.
    #[serde(default = "d::introspection_negative_ttl")]
    pub negative_ttl: Dur,
    /// Most results cached.
    #[serde(default = "d::introspection_cache_entries")]
    pub cache_entries: usize,
    /// When set, an active token's `aud` must contain one of these.
    #[serde(default)]
    pub audiences: Vec<String>,
}

/// Client-certificate identities.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClientCertConfig {
    /// Where the identity comes from, first that is present wins: `spiffe` (the certificate's
    /// one `spiffe://` URI SAN), `dns` (its first DNS SAN), `cn` (subject common name).
    pub identity: Vec<CertIdentitySource>,
    /// SPIFFE trust domains accepted (empty: any the CA vouches for).
    pub trust_domains: Vec<String>,
}

/// A source of a certificate identity.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CertIdentitySource {
    /// The `spiffe://` URI SAN (exactly one allowed).
    Spiffe,
    /// The first DNS SAN.
    Dns,
    /// The subject common name.
    Cn,
}

/// The verified-token cache.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenCacheConfig {
    /// Most verified tokens remembered (each entry expires no later than its token).
    pub max_entries: usize,
}

/// Cedar policies.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Cedar policy files, validated against Warden's schema (see `docs/auth.md`) at load and
    /// reloaded with the config. Routes opt in with `policy = true`.
    pub files: Vec<PathBuf>,
}

/// Tokens the gateway signs for upstreams.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InternalTokenConfig {
    /// `iss` of internal tokens.
    pub issuer: String,
    /// How long an internal token is valid.
    pub lifetime: Dur,
    /// ES256 signing key (PKCS#8 PEM, `env:` or `file:`). Unset: a key is generated at start,
    /// so every gateway of a fleet has its own; give one key to share it.
    pub signing_key: Option<SecretRef>,
}

/// A route's authentication decision: `auth = "none"` (public) or a table of rules.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RouteAuth {
    /// Public: anyone may call. Written `auth = "none"`.
    #[serde(serialize_with = "none_str")]
    None,
    /// Who may call, and with what.
    Rules(Box<AuthRules>),
}

fn none_str<S: serde::Serializer>(s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("none")
}

impl<'de> Deserialize<'de> for RouteAuth {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RouteAuth;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"none\" or a table of auth rules (accept = [...], ...)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RouteAuth, E> {
                if v == "none" {
                    Ok(RouteAuth::None)
                } else {
                    Err(E::custom(format!(
                        "`{v}`: write \"none\" for a public route, or a table such as \
                         {{ accept = [\"jwt\"] }}"
                    )))
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RouteAuth, A::Error> {
                AuthRules::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|r| RouteAuth::Rules(Box::new(r)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Who may call a route. Every condition must hold.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthRules {
    /// Credentials accepted, tried in order: `jwt` (any issuer), `jwt:NAME`, `api_key`,
    /// `introspection:NAME`, `client_cert`. The first one present is checked; a present but
    /// invalid credential is refused, never skipped for the next.
    pub accept: Vec<String>,
    /// Scopes the caller must all have.
    #[serde(default)]
    pub scopes_all: Vec<String>,
    /// Scopes of which the caller must have at least one.
    #[serde(default)]
    pub scopes_any: Vec<String>,
    /// Conditions on token claims (or API-key attributes).
    #[serde(default)]
    pub claims: Vec<ClaimRule>,
    /// Subjects allowed (glob patterns with `*`, e.g. `spiffe://prod/ns/billing/*`); empty: any.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Methods the caller may use on this route; empty: any the route matches.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// Also require the Cedar policies (`auth.policies`) to permit the request.
    #[serde(default)]
    pub policy: bool,
    /// What the upstream receives in `Authorization`: `forward` the caller's token, an
    /// `internal` token signed by the gateway, or `remove` it.
    #[serde(default)]
    pub upstream_token: UpstreamToken,
}

/// A condition on one claim. Exactly one of `equals`, `one_of`, `glob`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClaimRule {
    /// Claim name; a dotted path (`org.id`) reaches into objects. For an array claim, one
    /// element must satisfy the condition.
    pub claim: String,
    /// The claim must equal this.
    #[serde(default)]
    pub equals: Option<String>,
    /// The claim must be one of these.
    #[serde(default)]
    pub one_of: Vec<String>,
    /// The claim must match this pattern (`*` matches any run of characters).
    #[serde(default)]
    pub glob: Option<String>,
}

/// What the upstream gets in `Authorization`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamToken {
    /// The caller's own credential header, unchanged.
    #[default]
    Forward,
    /// A short-lived JWT signed by the gateway (`auth.internal_token`), whose JWKS the admin
    /// listener serves at `/.well-known/jwks.json`.
    Internal,
    /// No `Authorization` header.
    Remove,
}
