//! `[authority]` turned into the values requests read: secrets loaded, durations in seconds,
//! endpoint URLs built once.

use std::path::PathBuf;

use warden_config::AuthorityConfig;
use warden_crypto::jws::Alg;
use zeroize::Zeroizing;

use crate::error::{AuthorityError, Result};

/// The authority's compiled settings.
pub struct Settings {
    /// `iss` (no trailing slash).
    pub issuer: String,
    /// Default token lifetime, seconds.
    pub token_lifetime: i64,
    /// Longest token lifetime, seconds.
    pub max_token_lifetime: i64,
    /// Signing algorithm.
    pub alg: Alg,
    /// Seconds between key rotations.
    pub key_rotation: i64,
    /// Seconds a key is published before it signs.
    pub key_publish_ahead: i64,
    /// JWKS `max-age`, seconds.
    pub jwks_max_age: i64,
    /// Admin API bearer token.
    pub admin_token: Option<Zeroizing<Vec<u8>>>,
    /// Revocation-feed bearer token.
    pub feed_token: Option<Zeroizing<Vec<u8>>>,
    /// Longest client-assertion lifetime, seconds.
    pub assertion_max_lifetime: i64,
    /// Failed authentications allowed per client id per period.
    pub failed_per_client: u64,
    /// Failed authentications allowed per address per period.
    pub failed_per_address: u64,
    /// The failure-counting period.
    pub failed_period: std::time::Duration,
    /// Most keys each failure limiter holds.
    pub failed_max_keys: usize,
    /// Whether the listener asks for TLS client certificates, so `tls_client_auth` can work
    /// (discovery offers it only then).
    pub tls_client_auth: bool,
    /// What the audit log keeps (`authority.audit.max_age`, `max_records`).
    pub audit_retention: warden_store::AuditRetention,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("issuer", &self.issuer)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Clock skew allowed on client assertions and on tokens presented back to the authority.
pub(crate) const LEEWAY: i64 = 30;

fn secret(r: &Option<warden_config::SecretRef>, what: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
    match r {
        None => Ok(None),
        Some(r) => {
            let v = r
                .read()
                .map_err(|e| AuthorityError::Config(format!("authority.{what}: {e}")))?;
            Ok(Some(Zeroizing::new(v.trim_ascii().to_vec())))
        }
    }
}

impl Settings {
    /// Compiles the config section (secrets are read here).
    pub fn from_config(c: &AuthorityConfig) -> Result<Settings> {
        let alg = match c.signing_alg.as_str() {
            "ES256" => Alg::ES256,
            "EdDSA" => Alg::EdDSA,
            other => {
                return Err(AuthorityError::Config(format!(
                    "authority.signing_alg: `{other}` is not offered (ES256 or EdDSA)"
                )))
            }
        };
        Ok(Settings {
            issuer: c.issuer.trim_end_matches('/').to_owned(),
            token_lifetime: c.token_lifetime.0.as_secs() as i64,
            max_token_lifetime: c.max_token_lifetime.0.as_secs() as i64,
            alg,
            key_rotation: c.key_rotation.0.as_secs() as i64,
            key_publish_ahead: c.key_publish_ahead.0.as_secs() as i64,
            jwks_max_age: c.jwks_max_age.0.as_secs() as i64,
            admin_token: secret(&c.admin_token, "admin_token")?,
            feed_token: secret(&c.revocation_feed_token, "revocation_feed_token")?,
            assertion_max_lifetime: c.assertion_max_lifetime.0.as_secs() as i64,
            failed_per_client: c.failed_auth.per_client,
            failed_per_address: c.failed_auth.per_address,
            failed_period: c.failed_auth.period.0,
            failed_max_keys: c.failed_auth.max_keys,
            tls_client_auth: c.tls.as_ref().is_some_and(|t| t.client_auth.is_some()),
            audit_retention: warden_store::AuditRetention {
                max_age_ms: c
                    .audit
                    .max_age
                    .as_ref()
                    .map(|d| i64::try_from(d.0.as_millis()).unwrap_or(i64::MAX)),
                max_records: c.audit.max_records,
            },
        })
    }

    /// The token endpoint URL.
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth2/token", self.issuer)
    }

    /// An endpoint URL under the issuer.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}

/// Where the store lives: the configured `storage`, or `<data_dir>/authority.db`.
pub fn storage_location(c: &AuthorityConfig) -> String {
    match &c.storage {
        Some(s) => s.clone(),
        None => PathBuf::from(&c.data_dir)
            .join("authority.db")
            .display()
            .to_string(),
    }
}

/// Reads the key-encryption key: 32 raw bytes, or 32 bytes written as base64, base64url or
/// hex (what `openssl rand -base64 32` and `openssl rand -hex 32` print).
pub fn read_kek(c: &AuthorityConfig) -> Result<Zeroizing<Vec<u8>>> {
    let r = c
        .key_encryption_key
        .as_ref()
        .ok_or_else(|| AuthorityError::Config("authority.key_encryption_key is required".into()))?;
    // Not trimmed: 32 raw bytes may end in what looks like whitespace.
    let raw = r
        .read()
        .map_err(|e| AuthorityError::Config(format!("authority.key_encryption_key: {e}")))?;
    decode_kek(&raw).ok_or_else(|| {
        AuthorityError::Config(
            "authority.key_encryption_key must be 32 bytes, or 32 bytes in base64 or hex".into(),
        )
    })
}

/// Decodes a key-encryption key (see [`read_kek`]).
pub fn decode_kek(raw: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    use base64::Engine as _;
    if raw.len() == 32 {
        return Some(Zeroizing::new(raw.to_vec()));
    }
    let text = std::str::from_utf8(raw).ok()?.trim();
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
    ];
    let unpadded = text.trim_end_matches('=');
    let hex = || -> Option<Vec<u8>> {
        if text.len() != 64 {
            return None;
        }
        (0..32)
            .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
            .collect()
    };
    let candidates = [
        engines[0].decode(text).ok(),
        engines[1].decode(text).ok(),
        warden_crypto::jws::b64url_decode(unpadded.as_bytes()),
        hex(),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|v| v.len() == 32)
        .map(Zeroizing::new)
}
