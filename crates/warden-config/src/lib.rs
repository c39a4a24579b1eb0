//! Warden's configuration: the TOML schema ([`model`]), value types that parse once
//! ([`types`]), every default in one place ([`defaults`]), and validation that reports every
//! error at once, each with the field path it concerns ([`validate`]).
//!
//! Loading is two steps so that one mistake does not hide the next: each section and each
//! array element is deserialised on its own (a type error in `routes[2]` does not stop
//! `routes[5]` from being checked), then the whole is checked for meaning (references,
//! duplicates, files that must exist).

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;

pub mod auth;
pub mod authority;
pub mod defaults;
pub mod inputs;
pub mod model;
pub mod types;
mod validate;
pub mod validate_auth;
mod validate_limits;
pub mod vault;

pub use auth::*;
pub use authority::{
    AuthorityAuditConfig, AuthorityConfig, CaConfig, FailedAuthConfig, HaConfig, IssuanceAudit,
    SealConfig, SealMode,
};
pub use model::*;
pub use types::{
    parse_duration, ByteSize, Cidr, Dur, HeaderNameText, LimitKeys, LocalSecrets, MethodName,
    Parsed, RegexStr, SecretError, SecretRef, SecretResolver, Timestamp, VaultRef,
};
pub use validate::{parse_endpoint, Endpoint, Scheme};
/// What [`SecretResolver`]s return: bytes wiped from memory when dropped.
pub use zeroize::Zeroizing;

/// One problem in a config: where (`routes[2].cluster`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path, e.g. `listeners[0].tls.certificates[1].key`.
    pub path: String,
    /// What is wrong, in words a person can act on.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Every problem found in a config.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    pub(crate) fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            reason: reason.into(),
        });
    }

    /// True when nothing was found wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: path.display().to_string(),
            reason: format!("cannot read config file: {e}"),
        }])
    })?;
    parse(&text)
}

/// Parses and validates config text. Relative file paths in it are taken as they are
/// (relative to the working directory).
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: "(file)".into(),
            reason: format!("not valid TOML: {}", e.to_string().trim()),
        }])
    })?;
    let mut config = Config::default();
    // File index of each array element that decoded, so that meaning errors name the element
    // as it is in the file even when an earlier one failed to decode and was left out.
    let mut kept: Vec<(String, Vec<usize>)> = Vec::new();
    for (key, value) in table {
        match key.as_str() {
            "server" => section(value, &key, &mut errors, &mut config.server),
            "forwarding" => section(value, &key, &mut errors, &mut config.forwarding),
            "security_headers" => section(value, &key, &mut errors, &mut config.security_headers),
            "admin" => section(value, &key, &mut errors, &mut config.admin),
            "access_log" => section(value, &key, &mut errors, &mut config.access_log),
            "security_events" => section(value, &key, &mut errors, &mut config.security_events),
            "tracing" => section(value, &key, &mut errors, &mut config.tracing),
            "reload" => section(value, &key, &mut errors, &mut config.reload),
            "config_signing" => section(value, &key, &mut errors, &mut config.config_signing),
            "auth" => section(value, &key, &mut errors, &mut config.auth),
            "authority" => section(value, &key, &mut errors, &mut config.authority),
            "rate_limit_store" => section(value, &key, &mut errors, &mut config.rate_limit_store),
            "vault" => section(value, &key, &mut errors, &mut config.vault),
            "sidecar" => section(value, &key, &mut errors, &mut config.sidecar),
            "listeners" => config.listeners = elements(value, &key, &mut errors, &mut kept),
            "clusters" => config.clusters = elements(value, &key, &mut errors, &mut kept),
            "routes" => config.routes = elements(value, &key, &mut errors, &mut kept),
            _ => errors.push(
                key.clone(),
                "unknown section; expected one of server, forwarding, security_headers, admin, \
                 access_log, security_events, tracing, reload, config_signing, auth, authority, rate_limit_store, vault, sidecar, listeners, \
                 clusters, routes",
            ),
        }
    }
    let mut meaning = ConfigErrors::default();
    validate::validate(&config, &mut meaning);
    for mut e in meaning.0 {
        e.path = file_index_path(&e.path, &kept);
        errors.0.push(e);
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

fn section<T: DeserializeOwned>(
    value: toml::Value,
    path: &str,
    errors: &mut ConfigErrors,
    out: &mut T,
) {
    match decode(value, path) {
        Ok(v) => *out = v,
        Err(e) => errors.0.push(e),
    }
}

/// Rewrites a leading `name[i]` (an index into the decoded elements) to the element's index
/// in the file.
fn file_index_path(path: &str, kept: &[(String, Vec<usize>)]) -> String {
    for (name, indices) in kept {
        let Some(rest) = path
            .strip_prefix(name.as_str())
            .and_then(|r| r.strip_prefix('['))
        else {
            continue;
        };
        let Some((n, tail)) = rest.split_once(']') else {
            continue;
        };
        if let Some(orig) = n.parse::<usize>().ok().and_then(|i| indices.get(i)) {
            return format!("{name}[{orig}]{tail}");
        }
    }
    path.to_owned()
}

fn elements<T: DeserializeOwned>(
    value: toml::Value,
    path: &str,
    errors: &mut ConfigErrors,
    kept: &mut Vec<(String, Vec<usize>)>,
) -> Vec<T> {
    let toml::Value::Array(items) = value else {
        errors.push(path, "must be an array of tables (`[[name]]`)");
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    let mut indices = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match decode(item, &format!("{path}[{i}]")) {
            Ok(v) => {
                out.push(v);
                indices.push(i);
            }
            Err(e) => errors.0.push(e),
        }
    }
    kept.push((path.to_owned(), indices));
    out
}

fn decode<T: DeserializeOwned>(value: toml::Value, path: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let full = if inner == "." || inner.is_empty() {
            path.to_owned()
        } else {
            format!("{path}.{inner}")
        };
        ConfigError {
            path: full,
            // The message alone: the error's Display adds "in `key`" lines the path already says.
            reason: e.inner().message().trim().to_owned(),
        }
    })
}

/// The config as JSON for `/config`: secrets appear as their references (`env:…`, `file:…`),
/// never as values, because the config never holds a value.
pub fn to_redacted_json(config: &Config) -> serde_json::Value {
    serde_json::to_value(config).unwrap_or(serde_json::Value::Null)
}
