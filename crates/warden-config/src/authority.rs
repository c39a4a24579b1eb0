//! The `[authority]` section: the OAuth 2.0 token service (client credentials, token exchange,
//! JWKS, introspection, revocation) with its own listener and storage.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::TlsListenerConfig;
use crate::types::{Dur, SecretRef};

/// The authority role. Off unless `enabled = true`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorityConfig {
    /// Run the authority (its own listener, next to any gateway listeners).
    pub enabled: bool,
    /// Address of the authority's listener.
    pub listen: SocketAddr,
    /// TLS for the listener; plain HTTP when absent (for `warden dev` and loopback only).
    /// Certificates are chosen by SNI and reloaded when their files change, as a gateway
    /// listener's.
    /// With `client_auth`, clients may authenticate with `tls_client_auth` (RFC 8705) and get
    /// certificate-bound tokens.
    pub tls: Option<TlsListenerConfig>,
    /// Time a client has to finish the TLS handshake, and to send a complete request head
    /// (as the gateway's `server.header_read_timeout`).
    pub header_read_timeout: Dur,
    /// How long an idle keep-alive connection is kept open (as `server.idle_timeout`).
    pub idle_timeout: Dur,
    /// Directory for the authority's embedded database (the default `storage`).
    pub data_dir: PathBuf,
    /// Where the authority keeps its state: a SQLite file path, or a `postgres://…` URL
    /// (no password in it: use the `PGPASSWORD` environment variable). Unset:
    /// `<data_dir>/authority.db`.
    pub storage: Option<String>,
    /// The key-encryption key that seals everything the authority stores (signing keys,
    /// client records): `env:NAME` or `file:PATH` holding 32 bytes, or 32 bytes in base64 or
    /// hex (`openssl rand -base64 32`). Required when enabled.
    pub key_encryption_key: Option<SecretRef>,
    /// The `iss` of issued tokens and the base of the metadata's endpoint URLs
    /// (`https://auth.example.com`).
    pub issuer: String,
    /// Lifetime of access tokens when the client sets none.
    pub token_lifetime: Dur,
    /// Longest lifetime a client may be given.
    pub max_token_lifetime: Dur,
    /// Algorithm of the signing keys: `ES256` or `EdDSA`. (RS256 needs an RSA key that ring
    /// cannot generate; it is not offered yet.)
    pub signing_alg: String,
    /// How often a new signing key takes over. Old keys stay in the JWKS until every token
    /// they signed has expired.
    pub key_rotation: Dur,
    /// How long a new key is published in the JWKS before it signs anything; longer than any
    /// verifier's JWKS cache (see `jwks_max_age`).
    pub key_publish_ahead: Dur,
    /// `Cache-Control: max-age` of `/oauth2/jwks`.
    pub jwks_max_age: Dur,
    /// Bearer token for the admin API (`/admin/...`): `env:NAME` or `file:PATH`. Unset: the
    /// admin API answers 404.
    pub admin_token: Option<SecretRef>,
    /// Bearer credential for the revocation feed (`/oauth2/revocations`), for gateways
    /// (`auth.revocation.feed_token`): `env:NAME` or `file:PATH`. It can read the feed and
    /// nothing else; the admin token is accepted too. Unset: only the admin token.
    pub revocation_feed_token: Option<SecretRef>,
    /// Longest `exp - now` accepted in a `private_key_jwt` client assertion (its `jti` is
    /// remembered that long to refuse replays).
    pub assertion_max_lifetime: Dur,
    /// Throttling of failed client authentications.
    pub failed_auth: FailedAuthConfig,
    /// Redis to publish each revocation to as it happens (`redis://host[:port][/db]`, no
    /// credentials), so gateways subscribed to it (`auth.revocation.redis_url`) refuse the
    /// token at once rather than at their next feed poll. Best effort: a publish that fails is
    /// logged and dropped, never failing the revocation; the feed stays the record. Unset:
    /// gateways learn from the feed only.
    pub redis_url: Option<String>,
    /// Password for that Redis (`AUTH`), when it wants one: `env:NAME` or `file:PATH`.
    pub redis_password: Option<SecretRef>,
    /// The pub/sub channel revocations are published on.
    pub redis_channel: String,
    /// What the audit log keeps, and how issued tokens are recorded in it.
    pub audit: AuthorityAuditConfig,
    /// How the authority is unsealed: `auto` (from `key_encryption_key`, the default) or by
    /// key shares given to the vault's `sys/unseal`.
    pub seal: SealConfig,
    /// Active/standby between authorities sharing one PostgreSQL `storage`.
    pub ha: HaConfig,
    /// The certificate authority for service identity (SPIFFE X.509-SVIDs). Off unless the
    /// table is present.
    pub ca: Option<CaConfig>,
}

/// `[authority.ca]`: the certificate authority issuing SPIFFE X.509-SVIDs to registered
/// workloads (see `docs/identity.md`). Its root and signing intermediate are made on first
/// start, sealed in the authority's store and rotated at half their lives.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CaConfig {
    /// The trust domain (`example.org`): every issued ID is `spiffe://<trust_domain>/...`.
    pub trust_domain: String,
    /// An SVID's lifetime unless the workload's registration sets one.
    pub svid_ttl: Dur,
    /// The longest SVID lifetime a registration may set.
    pub max_svid_ttl: Dur,
    /// The signing intermediate's lifetime (at least twice `max_svid_ttl`).
    pub intermediate_ttl: Dur,
    /// The root's lifetime (at least twice `intermediate_ttl`).
    pub root_ttl: Dur,
    /// How long a new root is in the trust bundle before it signs.
    pub root_publish_ahead: Dur,
    /// A join token's lifetime unless its creator sets one.
    pub join_token_ttl: Dur,
    /// The longest join-token lifetime.
    pub max_join_token_ttl: Dur,
    /// `spiffe_refresh_hint` of the bundle, and its `Cache-Control: max-age`.
    pub bundle_refresh_hint: Dur,
    /// An upstream CA (an enterprise PKI's root or intermediate) that signs the online
    /// intermediate instead of a root Warden makes. Unset: Warden makes and rotates its own.
    pub upstream: Option<UpstreamCaConfig>,
    /// Trust domains whose workloads this domain's sidecars accept (SPIFFE Federation):
    /// their bundles are fetched from their bundle endpoints and handed to the workloads.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub federation: Vec<FederationConfig>,
}

/// `[[authority.ca.federation]]`: another trust domain and where its bundle is published.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// The other trust domain (`partner.example`).
    pub trust_domain: String,
    /// Its bundle endpoint: an `https://` URL serving its SPIFFE bundle (a Warden authority's
    /// is `https://host:port/ca/v1/bundle`; SPIRE's is its federation endpoint). The
    /// endpoint is authenticated with Web PKI (SPIFFE's `https_web` profile).
    pub bundle_endpoint: String,
    /// PEM file with the CA that signed the endpoint's certificate, for a private PKI.
    /// Unset: the Mozilla root set.
    #[serde(default)]
    pub endpoint_ca: Option<PathBuf>,
}

impl FederationConfig {
    /// The trust domain, checked.
    pub fn trust_domain(&self) -> Result<warden_identity::TrustDomain, String> {
        warden_identity::TrustDomain::new(&self.trust_domain)
            .map_err(|e| format!("{:?} {e}", self.trust_domain))
    }
}

/// `[authority.ca.upstream]`: the CA certificate and key that sign Warden's intermediate.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamCaConfig {
    /// PEM file: the upstream CA's certificate first, then its chain up to and including
    /// the self-signed root (which becomes the trust bundle's X.509 authority).
    pub cert: PathBuf,
    /// Its private key (PKCS#8 PEM): `file:PATH` or `env:NAME`.
    pub key: SecretRef,
}

impl Default for CaConfig {
    fn default() -> Self {
        let td = warden_identity::TrustDomain::new("warden.local").expect("a valid trust domain");
        Self::from_settings(&warden_identity::CaSettings::new(td))
    }
}

impl CaConfig {
    fn from_settings(s: &warden_identity::CaSettings) -> Self {
        let d = |v: i64| Dur::secs(u64::try_from(v).unwrap_or(0));
        Self {
            trust_domain: s.trust_domain.to_string(),
            svid_ttl: d(s.svid_ttl),
            max_svid_ttl: d(s.max_svid_ttl),
            intermediate_ttl: d(s.intermediate_ttl),
            root_ttl: d(s.root_ttl),
            root_publish_ahead: d(s.root_publish_ahead),
            join_token_ttl: d(s.join_token_ttl),
            max_join_token_ttl: d(s.max_join_token_ttl),
            bundle_refresh_hint: Dur::secs(s.refresh_hint),
            upstream: None,
            federation: Vec::new(),
        }
    }

    /// The CA's settings; the error names the field and says why.
    pub fn settings(&self) -> Result<warden_identity::CaSettings, (String, String)> {
        let td = warden_identity::TrustDomain::new(&self.trust_domain).map_err(|e| {
            (
                "authority.ca.trust_domain".to_owned(),
                format!("{:?} {e}", self.trust_domain),
            )
        })?;
        let s = |d: Dur| i64::try_from(d.0.as_secs()).unwrap_or(i64::MAX);
        let settings = warden_identity::CaSettings {
            trust_domain: td,
            svid_ttl: s(self.svid_ttl),
            max_svid_ttl: s(self.max_svid_ttl),
            intermediate_ttl: s(self.intermediate_ttl),
            root_ttl: s(self.root_ttl),
            root_publish_ahead: s(self.root_publish_ahead),
            join_token_ttl: s(self.join_token_ttl),
            max_join_token_ttl: s(self.max_join_token_ttl),
            refresh_hint: self.bundle_refresh_hint.0.as_secs(),
            upstream: match &self.upstream {
                None => None,
                Some(u) => Some(
                    u.load()
                        .map_err(|why| ("authority.ca.upstream".to_owned(), why))?,
                ),
            },
        };
        settings.validate()?;
        self.check_federation(&settings.trust_domain)?;
        Ok(settings)
    }

    fn check_federation(&self, own: &warden_identity::TrustDomain) -> Result<(), (String, String)> {
        let mut seen = Vec::new();
        for (i, f) in self.federation.iter().enumerate() {
            let p = format!("authority.ca.federation[{i}]");
            let td = f
                .trust_domain()
                .map_err(|why| (format!("{p}.trust_domain"), why))?;
            if &td == own {
                return Err((
                    format!("{p}.trust_domain"),
                    "is this CA's own trust domain".into(),
                ));
            }
            if seen.contains(&td) {
                return Err((format!("{p}.trust_domain"), format!("{td} is listed twice")));
            }
            seen.push(td);
            let rest = f.bundle_endpoint.strip_prefix("https://").ok_or_else(|| {
                (
                    format!("{p}.bundle_endpoint"),
                    "must be an https:// URL (a bundle fetched in the clear could be swapped)"
                        .to_owned(),
                )
            })?;
            if rest.is_empty() || rest.starts_with('/') || rest.contains(['@', '#', ' ']) {
                return Err((
                    format!("{p}.bundle_endpoint"),
                    format!(
                        "{:?} is not an https://host[:port]/path URL",
                        f.bundle_endpoint
                    ),
                ));
            }
            if let Some(ca) = &f.endpoint_ca {
                std::fs::metadata(ca).map_err(|e| {
                    (
                        format!("{p}.endpoint_ca"),
                        format!("cannot read {}: {e}", ca.display()),
                    )
                })?;
            }
        }
        Ok(())
    }
}

impl UpstreamCaConfig {
    /// Reads and checks the certificate chain and key.
    fn load(&self) -> Result<warden_identity::UpstreamCa, String> {
        let cert = std::fs::read(&self.cert)
            .map_err(|e| format!("cannot read cert {}: {e}", self.cert.display()))?;
        let key = self.key.read().map_err(|e| format!("key: {e}"))?;
        let up = warden_identity::UpstreamCa::load(&cert, &key)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        if up.key.not_after() <= now {
            return Err("the upstream CA certificate has expired".into());
        }
        Ok(up)
    }
}

/// `[authority.ha]`: several authorities on one PostgreSQL database, one active (it holds a
/// lock in the database, lost within seconds of its death), the others standbys that answer
/// `sys/health` with 429 and redirect every other request (307) to the active one.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// Take part in active/standby. Needs `storage` to be a `postgres://` URL.
    pub enabled: bool,
    /// The URL clients use to reach this authority (`https://auth-1.example.com:8200`): what
    /// standbys redirect to and `sys/leader` reports while this one is active. Required when
    /// enabled.
    pub api_addr: Option<String>,
}

/// `[authority.seal]`: where the key-encryption key (the vault's root key) comes from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SealConfig {
    /// `auto`: the key is `key_encryption_key` (`env:`/`file:`), read at start, and the
    /// authority starts unsealed. `shares`: the authority starts sealed; `sys/init` makes a
    /// random key, splits it into key shares (Shamir) and returns them once, and `sys/unseal`
    /// takes enough of them after every start. `key_encryption_key` must be unset then.
    pub mode: SealMode,
}

/// How the authority is unsealed (see [`SealConfig::mode`]).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SealMode {
    /// From `authority.key_encryption_key` at start.
    #[default]
    Auto,
    /// By key shares, through `sys/init` and `sys/unseal`.
    Shares,
}

/// The audit log's retention and the level at which token issuance is audited. Failed
/// authentications, refused introspections, revocations, token exchanges, key and client
/// changes are always audited one record each, whatever `issuance` says.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorityAuditConfig {
    /// Delete records older than this (checked every 30 s), behind a MACed checkpoint from
    /// which the rest still verifies. Unset: no age limit.
    pub max_age: Option<Dur>,
    /// Keep at most this many of the newest records. Unset: no count limit.
    pub max_records: Option<u64>,
    /// How issued tokens (`client_credentials`) are audited: `every` (one record per token),
    /// `sampled` (one record per `sample_every` tokens, with the rate in it) or `aggregated`
    /// (one record per client per `aggregate_interval`, with the count).
    pub issuance: IssuanceAudit,
    /// With `issuance = "sampled"`: one issued token in this many is recorded.
    pub sample_every: u64,
    /// With `issuance = "aggregated"`: how often the per-client counts are written.
    pub aggregate_interval: Dur,
    /// How often the authority signs the chain's head (its newest record's seq and hash) with
    /// its audit key and publishes it (`GET /audit/v1/head`, and a log line): anyone who
    /// keeps a signed head can later tell whether newer records were deleted.
    pub head_interval: Dur,
}

/// How token issuance is audited (see [`AuthorityAuditConfig::issuance`]).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IssuanceAudit {
    /// One record per issued token (the token's `jti`, audience, scope, expiry).
    #[default]
    Every,
    /// One record per `sample_every` issued tokens.
    Sampled,
    /// One record per client per `aggregate_interval`, counting its tokens.
    Aggregated,
}

/// Failed client authentications allowed before the authority answers 429 with `Retry-After`.
/// Each limit is a GCRA bucket (`burst` at once, refilled at `burst` per `period`); only
/// failures are counted.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FailedAuthConfig {
    /// Failures allowed per `client_id` per `period`.
    pub per_client: u64,
    /// Failures allowed per source address per `period`.
    pub per_address: u64,
    /// The period the failures are counted over.
    pub period: Dur,
    /// Most distinct client ids and addresses remembered (each limit).
    pub max_keys: usize,
}

/// Meaning checks for `[authority]` (TLS files are checked with the listeners' rules).
pub(crate) fn validate(c: &crate::Config, e: &mut crate::ConfigErrors) {
    let a = &c.authority;
    let p = "authority";
    if a.enabled {
        match &a.key_encryption_key {
            Some(_) if a.seal.mode == SealMode::Shares => e.push(
                format!("{p}.key_encryption_key"),
                "must be unset with seal.mode = \"shares\" (the key comes from the key shares)",
            ),
            None if a.seal.mode == SealMode::Shares => {}
            None => e.push(
                format!("{p}.key_encryption_key"),
                "required when the authority is enabled (`env:NAME` or `file:PATH`)",
            ),
            Some(k) => match k.read() {
                Err(err) => e.push(format!("{p}.key_encryption_key"), err.to_string()),
                Ok(v) if !(v.len() == 32 || [43, 44, 64].contains(&v.trim_ascii().len())) => e
                    .push(
                        format!("{p}.key_encryption_key"),
                        "must be 32 bytes, or 32 bytes in base64 or hex \
                         (`openssl rand -base64 32`)",
                    ),
                Ok(_) => {}
            },
        }
        if let Some(t) = &a.admin_token {
            crate::validate::bearer_token(t, format!("{p}.admin_token"), e);
        }
        if let Some(t) = &a.revocation_feed_token {
            crate::validate::bearer_token(t, format!("{p}.revocation_feed_token"), e);
        }
        if a.listen.port() != 0 {
            if c.admin.enabled && a.listen == c.admin.address {
                e.push(format!("{p}.listen"), "same address as the admin listener");
            }
            if c.listeners.iter().any(|l| l.address == a.listen) {
                e.push(format!("{p}.listen"), "same address as a gateway listener");
            }
        }
    }
    if let Some(ca) = &a.ca {
        if let Err((field, why)) = ca.settings() {
            e.push(field, why);
        }
    }
    if a.ha.enabled {
        let pg = a
            .storage
            .as_deref()
            .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"));
        if !pg {
            e.push(
                format!("{p}.ha.enabled"),
                "active/standby needs `storage` to be a postgres:// URL shared by the authorities",
            );
        }
        match a.ha.api_addr.as_deref() {
            None => e.push(
                format!("{p}.ha.api_addr"),
                "required with ha.enabled: the URL clients use to reach this authority",
            ),
            Some(u) => {
                let ok = (u.starts_with("https://") || u.starts_with("http://"))
                    && !u.contains(['?', '#', ' '])
                    && u.split("://").nth(1).is_some_and(|h| !h.is_empty());
                if !ok {
                    e.push(
                        format!("{p}.ha.api_addr"),
                        "must be an http:// or https:// URL without query or fragment",
                    );
                }
            }
        }
    }
    if let Some(s) = &a.storage {
        if s.is_empty() {
            e.push(format!("{p}.storage"), "a file path or a postgres:// URL");
        }
        let userinfo = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"))
            .and_then(|r| r.split_once('@'))
            .map(|(u, _)| u);
        if userinfo.is_some_and(|u| u.contains(':')) {
            e.push(
                format!("{p}.storage"),
                "no password in the URL: set PGPASSWORD in the environment instead",
            );
        }
    }
    let issuer_ok = (a.issuer.starts_with("https://") || a.issuer.starts_with("http://"))
        && !a.issuer.contains(['?', '#'])
        && a.issuer.split("://").nth(1).is_some_and(|h| !h.is_empty());
    if !issuer_ok {
        e.push(
            format!("{p}.issuer"),
            "must be an http:// or https:// URL without query or fragment",
        );
    }
    match a.signing_alg.as_str() {
        "ES256" | "EdDSA" => {}
        "RS256" => e.push(
            format!("{p}.signing_alg"),
            "RS256 is not offered yet (it needs an RSA key file); use ES256 or EdDSA",
        ),
        other => e.push(
            format!("{p}.signing_alg"),
            format!("`{other}`: expected ES256 or EdDSA"),
        ),
    }
    if a.token_lifetime.0.as_secs() < 1 {
        e.push(format!("{p}.token_lifetime"), "must be at least 1s");
    }
    if a.token_lifetime > a.max_token_lifetime {
        e.push(
            format!("{p}.token_lifetime"),
            "must be at most max_token_lifetime",
        );
    }
    if a.max_token_lifetime.0.as_secs() > 86_400 {
        e.push(format!("{p}.max_token_lifetime"), "at most 1d");
    }
    if a.key_rotation.0.as_secs() < 60 {
        e.push(format!("{p}.key_rotation"), "must be at least 1m");
    }
    if a.key_publish_ahead >= a.key_rotation {
        e.push(
            format!("{p}.key_publish_ahead"),
            "must be shorter than key_rotation",
        );
    }
    if a.key_publish_ahead < a.jwks_max_age {
        e.push(
            format!("{p}.key_publish_ahead"),
            "must be at least jwks_max_age, so verifiers have the new key before it signs",
        );
    }
    if let Some(u) = &a.redis_url {
        if let Some(why) =
            crate::validate_auth::redis_url_problem(u, &format!("{p}.redis_password"))
        {
            e.push(format!("{p}.redis_url"), why);
        }
    }
    crate::validate_auth::redis_password(
        a.redis_password.as_ref(),
        a.redis_url.as_ref(),
        format!("{p}.redis_password"),
        e,
    );
    if a.redis_channel.is_empty() {
        e.push(format!("{p}.redis_channel"), "must not be empty");
    }
    if a.assertion_max_lifetime.0.as_secs() < 1 {
        e.push(format!("{p}.assertion_max_lifetime"), "must be at least 1s");
    }
    for (field, d) in [
        ("header_read_timeout", a.header_read_timeout),
        ("idle_timeout", a.idle_timeout),
    ] {
        if d.0 < std::time::Duration::from_millis(100) {
            e.push(format!("{p}.{field}"), "must be at least 100ms");
        }
    }
    let f = &a.failed_auth;
    for (name, v) in [("per_client", f.per_client), ("per_address", f.per_address)] {
        if v == 0 {
            e.push(format!("{p}.failed_auth.{name}"), "must be at least 1");
        }
    }
    if f.period.0.is_zero() {
        e.push(format!("{p}.failed_auth.period"), "must be more than zero");
    }
    if f.max_keys == 0 {
        e.push(format!("{p}.failed_auth.max_keys"), "must be at least 1");
    }
    let au = &a.audit;
    if au.max_age.as_ref().is_some_and(|d| d.0.as_secs() < 60) {
        e.push(format!("{p}.audit.max_age"), "must be at least 1m");
    }
    if au.max_records == Some(0) {
        e.push(format!("{p}.audit.max_records"), "must be at least 1");
    }
    if au.sample_every == 0 {
        e.push(format!("{p}.audit.sample_every"), "must be at least 1");
    }
    if au.aggregate_interval.0.as_secs() < 1 {
        e.push(
            format!("{p}.audit.aggregate_interval"),
            "must be at least 1s",
        );
    }
    if au.head_interval.0.as_secs() < 1 {
        e.push(format!("{p}.audit.head_interval"), "must be at least 1s");
    }
}

#[cfg(test)]
mod tests {
    fn errors(authority: &str) -> Vec<String> {
        let text = format!(
            "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n[authority]\n{authority}"
        );
        match crate::parse(&text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn ha_needs_postgres_and_an_api_address() {
        let base = "enabled = true\nseal = { mode = \"shares\" }\n";
        let sqlite = errors(&format!(
            "{base}ha = {{ enabled = true, api_addr = \"https://a:8200\" }}\n"
        ));
        assert!(
            sqlite
                .iter()
                .any(|e| e.contains("authority.ha.enabled") && e.contains("postgres")),
            "{sqlite:?}"
        );
        let pg = "storage = \"postgres://u@db/warden\"\n";
        let no_addr = errors(&format!("{base}{pg}ha = {{ enabled = true }}\n"));
        assert!(
            no_addr
                .iter()
                .any(|e| e.contains("authority.ha.api_addr") && e.contains("required")),
            "{no_addr:?}"
        );
        let bad_addr = errors(&format!(
            "{base}{pg}ha = {{ enabled = true, api_addr = \"a:8200\" }}\n"
        ));
        assert!(
            bad_addr
                .iter()
                .any(|e| e.contains("authority.ha.api_addr") && e.contains("URL")),
            "{bad_addr:?}"
        );
        assert_eq!(
            errors(&format!(
                "{base}{pg}ha = {{ enabled = true, api_addr = \"https://a:8200\" }}\n"
            )),
            Vec::<String>::new()
        );
    }

    #[test]
    fn federation_mistakes_are_named_with_their_field() {
        let base = "enabled = true\nseal = { mode = \"shares\" }\n\
                    [authority.ca]\ntrust_domain = \"example.org\"\n";
        let fed = |entries: &[(&str, &str, &str)]| {
            let mut t = base.to_owned();
            for (td, url, extra) in entries {
                t.push_str(&format!(
                    "[[authority.ca.federation]]\ntrust_domain = \"{td}\"\n\
                     bundle_endpoint = \"{url}\"\n{extra}"
                ));
            }
            errors(&t)
        };
        let ok = "https://auth.partner.org:8200/ca/v1/bundle";
        assert_eq!(fed(&[("partner.org", ok, "")]), Vec::<String>::new());
        for (entries, want) in [
            (
                vec![("partner.org", "http://auth.partner.org/ca/v1/bundle", "")],
                "authority.ca.federation[0].bundle_endpoint: must be an https:// URL",
            ),
            (
                vec![("example.org", ok, "")],
                "authority.ca.federation[0].trust_domain: is this CA's own trust domain",
            ),
            (
                vec![("partner.org", ok, ""), ("partner.org", ok, "")],
                "authority.ca.federation[1].trust_domain: partner.org is listed twice",
            ),
            (
                vec![("Partner.org", ok, "")],
                "authority.ca.federation[0].trust_domain: \"Partner.org\"",
            ),
            (
                vec![(
                    "partner.org",
                    ok,
                    "endpoint_ca = \"/nonexistent/warden-partner-ca.pem\"\n",
                )],
                "authority.ca.federation[0].endpoint_ca: cannot read /nonexistent/",
            ),
            (
                vec![("partner.org", "https:///ca/v1/bundle", "")],
                "authority.ca.federation[0].bundle_endpoint: \"https:///ca/v1/bundle\" is not",
            ),
        ] {
            let errs = fed(&entries);
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{want} not in {errs:#?}"
            );
        }
    }

    #[test]
    fn seal_mode_decides_whether_a_key_encryption_key_is_wanted() {
        // Key shares: no key in config (it comes from the shares), and none required.
        assert_eq!(
            errors("enabled = true\nseal = { mode = \"shares\" }\n"),
            Vec::<String>::new()
        );
        let both = errors(
            "enabled = true\nkey_encryption_key = \"env:X\"\nseal = { mode = \"shares\" }\n",
        );
        assert!(
            both.iter()
                .any(|e| e.starts_with("authority.key_encryption_key: must be unset")),
            "{both:#?}"
        );
        let unknown = errors("enabled = true\nseal = { mode = \"kms\" }\n");
        assert!(
            !unknown.is_empty() && unknown[0].contains("authority.seal"),
            "{unknown:#?}"
        );
        // Auto (the default, and configs without the section): the key stays required.
        assert!(errors("enabled = true\nseal = { mode = \"auto\" }\n")
            .iter()
            .any(|e| e.starts_with("authority.key_encryption_key: required")));
    }

    #[test]
    fn authority_mistakes_are_reported_with_their_paths() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.kek");
        std::fs::write(&short, "tooshort").unwrap();
        let errs = errors(&format!(
            "enabled = true\nkey_encryption_key = \"file:{}\"\nissuer = \"auth.example\"\n\
             signing_alg = \"RS256\"\nkey_rotation = \"30s\"\ntoken_lifetime = \"2h\"\n\
             storage = \"postgres://u:pw@db/warden\"\nfailed_auth = {{ per_client = 0 }}\n\
             redis_url = \"redis://u:pw@cache\"\nredis_channel = \"\"\n\
             redis_password = \"env:WARDEN_TEST_NO_SUCH_VARIABLE\"\n\
             audit = {{ max_records = 0, max_age = \"10s\", sample_every = 0, \
             issuance = \"aggregated\" }}\n",
            short.display()
        ));
        for want in [
            "authority.key_encryption_key: must be 32 bytes",
            "authority.issuer: must be an http:// or https:// URL",
            "authority.signing_alg: RS256 is not offered yet",
            "authority.key_rotation: must be at least 1m",
            "authority.token_lifetime: must be at most max_token_lifetime",
            "authority.storage: no password in the URL",
            "authority.failed_auth.per_client: must be at least 1",
            "authority.redis_url: must not hold credentials",
            "authority.redis_channel: must not be empty",
            "authority.redis_password: environment variable `WARDEN_TEST_NO_SUCH_VARIABLE` is not set",
            "authority.audit.max_age: must be at least 1m",
            "authority.audit.max_records: must be at least 1",
            "authority.audit.sample_every: must be at least 1",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{want} not in {errs:#?}"
            );
        }
        let missing = errors("enabled = true\n");
        assert!(missing
            .iter()
            .any(|e| e.starts_with("authority.key_encryption_key: required")));
        // Pushed revocations need the gateway to keep the feed (pub/sub is lossy).
        let gateway = |revocation: &str| match crate::parse(&format!(
            "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n\
             [auth.revocation]\n{revocation}"
        )) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        };
        assert_eq!(
            gateway("redis_url = \"rediss://cache\"\n"),
            [
                "auth.revocation.redis_url: TLS to Redis (`rediss://`) is not supported yet; \
                 use redis://",
                "auth.revocation.redis_url: needs feed_url: pub/sub drops what is sent while \
                 disconnected, the feed has it",
                "auth.revocation.signed_by: required with redis_url: name the [[auth.jwt]] \
                 issuer of the token service, whose keys sign revocation messages (unsigned \
                 ones are refused)",
            ]
        );
        assert!(gateway(
            "feed_url = \"http://auth:8200/oauth2/revocations\"\n\
             redis_url = \"redis://[::1]:6380/2\"\nsigned_by = \"authority\"\n\
             [[auth.jwt]]\nname = \"authority\"\nissuer = \"http://auth:8200\"\n\
             audiences = [\"api\"]\nalgorithms = [\"ES256\"]\n\
             jwks_url = \"http://auth:8200/oauth2/jwks\"\n"
        )
        .is_empty());
        let pw = dir.path().join("redis.pw");
        std::fs::write(&pw, "one\ntwo\n").unwrap();
        assert_eq!(
            gateway(&format!("redis_password = \"file:{}\"\n", pw.display())),
            [
                "auth.revocation.redis_password: needs redis_url beside it",
                "auth.revocation.redis_password: must be one line of text",
            ]
        );
        // The channel's signer: an issuer that exists and verifies with public keys.
        let secret = dir.path().join("hmac.secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
        let signer = |signed_by: &str| {
            gateway(&format!(
                "feed_url = \"http://auth:8200/oauth2/revocations\"\n\
                 redis_url = \"redis://cache\"\n{signed_by}max_message_age = \"0s\"\n\
                 [[auth.jwt]]\nname = \"shared\"\nissuer = \"s\"\naudiences = [\"api\"]\n\
                 algorithms = [\"HS256\"]\nhmac_secret = \"file:{}\"\n",
                secret.display()
            ))
        };
        assert_eq!(
            signer("signed_by = \"nobody\"\n"),
            [
                "auth.revocation.signed_by: no [[auth.jwt]] issuer is named `nobody`",
                "auth.revocation.max_message_age: at least 1s",
            ]
        );
        assert_eq!(
            signer("signed_by = \"shared\"\n"),
            [
                "auth.revocation.signed_by: `shared` verifies with a shared secret; name an \
                 issuer with public keys (jwks_url, jwks_file or public_key_file)",
                "auth.revocation.max_message_age: at least 1s",
            ]
        );
        assert_eq!(
            gateway("signed_by = \"x\"\n"),
            ["auth.revocation.signed_by: needs redis_url beside it"]
        );
        // Disabled, the defaults are valid and nothing is read.
        assert!(errors("enabled = false\n").is_empty());
    }
}
