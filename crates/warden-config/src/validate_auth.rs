//! Meaning checks for `[auth]` and each route's `auth` rules.

use std::collections::HashSet;

use crate::auth::*;
use crate::model::Config;
use crate::ConfigErrors;

/// JOSE names of the algorithms Warden implements.
pub(crate) const ALGORITHMS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

fn readable(path: &std::path::Path, at: String, e: &mut ConfigErrors) {
    if let Err(err) = std::fs::metadata(path) {
        e.push(at, format!("cannot read `{}`: {err}", path.display()));
    }
}

fn http_url(u: &str) -> bool {
    (u.starts_with("https://") || u.starts_with("http://")) && u.parse::<http::Uri>().is_ok()
}

/// Checks a Redis password reference (`redis_password`): it needs the Redis URL beside it, and
/// must read as non-empty UTF-8 text on one line.
pub(crate) fn redis_password(
    pw: Option<&crate::SecretRef>,
    url: Option<&String>,
    path: String,
    e: &mut ConfigErrors,
) {
    let Some(pw) = pw else { return };
    if url.is_none() {
        e.push(path.clone(), "needs redis_url beside it");
    }
    if pw.is_local() {
        if let Err(why) = pw.read_line() {
            e.push(path, why);
        }
    }
}

/// What is wrong with a Redis URL, if anything. The parser is the one the Redis clients use
/// (`warden_resp::Endpoint::parse`: `redis://host[:port][/db]`, IPv6 hosts in brackets), so
/// what passes here connects there. Credentials are refused in favour of `password_field`,
/// where secrets are read from `env:`/`file:` references.
pub(crate) fn redis_url_problem(u: &str, password_field: &str) -> Option<String> {
    match warden_resp::Endpoint::parse(u) {
        Ok(_) => None,
        Err(warden_resp::UrlError::Credentials) => {
            Some(format!("must not hold credentials; use {password_field}"))
        }
        Err(e) => Some(e.to_string()),
    }
}

/// Whether `s` is a valid API key id: 4 to 32 lowercase letters and digits.
pub fn valid_api_key_id(s: &str) -> bool {
    (4..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Checks one API key entry (`p` is its path).
pub fn api_key(k: &ApiKeyConfig, p: &str, e: &mut ConfigErrors) {
    if !valid_api_key_id(&k.id) {
        e.push(
            format!("{p}.id"),
            "must be 4 to 32 lowercase letters and digits",
        );
    }
    let hex = k.hash.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        e.push(
            format!("{p}.hash"),
            "must be `sha256:` and 64 hex digits (the hash of the key's secret part)",
        );
    }
    if k.owner.trim().is_empty() {
        e.push(format!("{p}.owner"), "must not be empty");
    }
}

pub(crate) fn auth(c: &Config, e: &mut ConfigErrors) {
    let a = &c.auth;
    for (i, h) in a.strip_headers.iter().enumerate() {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            e.push(
                format!("auth.strip_headers[{i}]"),
                "not a valid header name",
            );
        }
    }
    let mut names = HashSet::new();
    for (i, j) in a.jwt.iter().enumerate() {
        let p = format!("auth.jwt[{i}]");
        if j.name.is_empty() || j.name.contains(':') {
            e.push(format!("{p}.name"), "must be non-empty, without `:`");
        }
        if !names.insert(j.name.as_str()) {
            e.push(
                format!("{p}.name"),
                format!("duplicate issuer name `{}`", j.name),
            );
        }
        if j.issuer.is_empty() {
            e.push(format!("{p}.issuer"), "must not be empty");
        }
        if j.audiences.is_empty() {
            e.push(
                format!("{p}.audiences"),
                "at least one audience: a token meant for another service must not pass",
            );
        }
        if j.algorithms.is_empty() {
            e.push(
                format!("{p}.algorithms"),
                "list the algorithms this issuer uses",
            );
        }
        let mut hmac = false;
        let mut public = false;
        for alg in &j.algorithms {
            if !ALGORITHMS.contains(&alg.as_str()) {
                e.push(
                    format!("{p}.algorithms"),
                    format!("`{alg}` is not one of {}", ALGORITHMS.join(", ")),
                );
            } else if alg.starts_with("HS") {
                hmac = true;
            } else {
                public = true;
            }
        }
        let sources = [
            j.jwks_url.is_some(),
            j.jwks_file.is_some(),
            j.public_key_file.is_some(),
            j.hmac_secret.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            e.push(
                p.clone(),
                "give exactly one of jwks_url, jwks_file, public_key_file, hmac_secret",
            );
        }
        if hmac && public {
            e.push(
                format!("{p}.algorithms"),
                "HS* algorithms cannot be mixed with public-key algorithms for one issuer",
            );
        }
        if hmac && j.hmac_secret.is_none() {
            e.push(format!("{p}.algorithms"), "HS* algorithms need hmac_secret");
        }
        if public && j.hmac_secret.is_some() {
            e.push(
                format!("{p}.hmac_secret"),
                "an issuer with a shared secret may only use HS* algorithms",
            );
        }
        if let Some(s) = j.hmac_secret.as_ref().filter(|s| s.is_local()) {
            match s.read() {
                Ok(v) if v.len() < 32 => e.push(
                    format!("{p}.hmac_secret"),
                    "must be at least 32 bytes (256 bits)",
                ),
                Ok(_) => {}
                Err(err) => e.push(format!("{p}.hmac_secret"), err.to_string()),
            }
        }
        if let Some(u) = &j.jwks_url {
            if !http_url(u) {
                e.push(
                    format!("{p}.jwks_url"),
                    "must be an http:// or https:// URL",
                );
            }
        }
        if let Some(f) = &j.jwks_file {
            readable(f, format!("{p}.jwks_file"), e);
        }
        if let Some(f) = &j.public_key_file {
            readable(f, format!("{p}.public_key_file"), e);
        }
        if let Some(f) = &j.jwks_ca {
            readable(f, format!("{p}.jwks_ca"), e);
        }
        if j.leeway.0 > std::time::Duration::from_secs(300) {
            e.push(format!("{p}.leeway"), "at most 5m");
        }
        if !(256..=65536).contains(&j.max_token_bytes.0) {
            e.push(
                format!("{p}.max_token_bytes"),
                "must be between 256 bytes and 64KiB",
            );
        }
        if j.jwks_refresh_min.0.is_zero() || j.jwks_refresh_min > j.jwks_refresh_max {
            e.push(
                format!("{p}.jwks_refresh_min"),
                "must be more than zero and at most jwks_refresh_max",
            );
        }
        if j.jwks_unknown_kid_interval.0.is_zero() {
            e.push(
                format!("{p}.jwks_unknown_kid_interval"),
                "must be more than zero",
            );
        }
        if j.jwks_max_bytes.0 < 1024 || j.jwks_max_bytes.0 > 16 * 1024 * 1024 {
            e.push(
                format!("{p}.jwks_max_bytes"),
                "must be between 1KiB and 16MiB",
            );
        }
        if j.jwks_timeout.0.is_zero() {
            e.push(format!("{p}.jwks_timeout"), "must be more than zero");
        }
    }
    if http::HeaderName::from_bytes(a.api_keys.header.as_bytes()).is_err() {
        e.push("auth.api_keys.header", "not a valid header name");
    }
    if let Some(f) = &a.api_keys.file {
        readable(f, "auth.api_keys.file".into(), e);
    }
    let mut ids = HashSet::new();
    for (i, k) in a.api_keys.keys.iter().enumerate() {
        let p = format!("auth.api_keys.keys[{i}]");
        api_key(k, &p, e);
        if !ids.insert(k.id.as_str()) {
            e.push(format!("{p}.id"), format!("duplicate key id `{}`", k.id));
        }
    }
    let mut inames = HashSet::new();
    for (i, t) in a.introspection.iter().enumerate() {
        let p = format!("auth.introspection[{i}]");
        if t.name.is_empty() || t.name.contains(':') {
            e.push(format!("{p}.name"), "must be non-empty, without `:`");
        }
        if !inames.insert(t.name.as_str()) {
            e.push(format!("{p}.name"), format!("duplicate name `{}`", t.name));
        }
        if !http_url(&t.url) {
            e.push(format!("{p}.url"), "must be an http:// or https:// URL");
        }
        if t.client_id.is_empty() || t.client_id.contains(':') {
            e.push(format!("{p}.client_id"), "must be non-empty, without `:`");
        }
        if let Err(err) = t.client_secret.check_local() {
            e.push(format!("{p}.client_secret"), err.to_string());
        }
        if let Some(f) = &t.ca {
            readable(f, format!("{p}.ca"), e);
        }
        if t.timeout.0.is_zero() {
            e.push(format!("{p}.timeout"), "must be more than zero");
        }
        if t.cache_entries == 0 {
            e.push(format!("{p}.cache_entries"), "must be at least 1");
        }
    }
    if a.client_cert.identity.is_empty() {
        e.push("auth.client_cert.identity", "name at least one source");
    }
    if a.cache.max_entries == 0 {
        e.push("auth.cache.max_entries", "must be at least 1");
    }
    for (i, f) in a.policies.files.iter().enumerate() {
        readable(f, format!("auth.policies.files[{i}]"), e);
    }
    let r = &a.revocation;
    if let Some(u) = &r.feed_url {
        if !http_url(u) {
            e.push(
                "auth.revocation.feed_url",
                "must be an http:// or https:// URL",
            );
        }
    }
    if let Some(t) = &r.feed_token {
        if let Err(err) = t.check_local() {
            e.push("auth.revocation.feed_token", err.to_string());
        }
    }
    if r.poll_interval.0 < std::time::Duration::from_millis(100) {
        e.push("auth.revocation.poll_interval", "at least 100ms");
    }
    if let Some(f) = &r.ca {
        readable(f, "auth.revocation.ca".into(), e);
    }
    if let Some(u) = &r.redis_url {
        if let Some(why) = redis_url_problem(u, "auth.revocation.redis_password") {
            e.push("auth.revocation.redis_url", why);
        }
        if r.feed_url.is_none() {
            e.push(
                "auth.revocation.redis_url",
                "needs feed_url: pub/sub drops what is sent while disconnected, the feed has it",
            );
        }
    }
    redis_password(
        r.redis_password.as_ref(),
        r.redis_url.as_ref(),
        "auth.revocation.redis_password".into(),
        e,
    );
    if r.redis_channel.is_empty() {
        e.push("auth.revocation.redis_channel", "must not be empty");
    }
    revocation_signer(a, e);
    if a.internal_token.issuer.is_empty() {
        e.push("auth.internal_token.issuer", "must not be empty");
    }
    if a.internal_token.lifetime.0 < std::time::Duration::from_secs(5) {
        e.push("auth.internal_token.lifetime", "at least 5s");
    }
    if let Some(k) = &a.internal_token.signing_key {
        if let Err(err) = k.check_local() {
            e.push("auth.internal_token.signing_key", err.to_string());
        }
    }
}

/// `signed_by`: required with `redis_url` (an unsigned channel lets anyone who can publish to
/// it revoke tokens), and it must name an issuer with public keys: with a shared HMAC secret
/// every holder of the secret could sign revocations.
fn revocation_signer(a: &AuthConfig, e: &mut ConfigErrors) {
    let r = &a.revocation;
    let at = "auth.revocation.signed_by";
    match (&r.signed_by, &r.redis_url) {
        (None, Some(_)) => e.push(
            at,
            "required with redis_url: name the [[auth.jwt]] issuer of the token service, whose \
             keys sign revocation messages (unsigned ones are refused)",
        ),
        (Some(_), None) => e.push(at, "needs redis_url beside it"),
        (Some(name), Some(_)) => match a.jwt.iter().find(|j| &j.name == name) {
            None => e.push(at, format!("no [[auth.jwt]] issuer is named `{name}`")),
            Some(j) if j.hmac_secret.is_some() => e.push(
                at,
                format!(
                    "`{name}` verifies with a shared secret; name an issuer with public keys \
                     (jwks_url, jwks_file or public_key_file)"
                ),
            ),
            Some(_) => {}
        },
        (None, None) => {}
    }
    if r.max_message_age.0 < std::time::Duration::from_secs(1) {
        e.push("auth.revocation.max_message_age", "at least 1s");
    }
}

/// Checks a route's `auth` rules against the `[auth]` section.
pub(crate) fn route_auth(c: &Config, r: &AuthRules, p: &str, e: &mut ConfigErrors) {
    if r.accept.is_empty() {
        e.push(
            format!("{p}.accept"),
            "list the credentials this route accepts (e.g. [\"jwt\"]), or write auth = \"none\"",
        );
    }
    // A sidecar's inbound listener always verifies its peers' SVIDs.
    let client_cert_listener = c.listeners.iter().any(|l| {
        l.role == crate::model::ListenerRole::Inbound
            || l.tls.as_ref().is_some_and(|t| t.client_auth.is_some())
    });
    for (i, a) in r.accept.iter().enumerate() {
        let ap = format!("{p}.accept[{i}]");
        let ok = match a.split_once(':') {
            None => match a.as_str() {
                "jwt" => {
                    if c.auth.jwt.is_empty() {
                        e.push(ap.clone(), "no JWT issuer is configured in [[auth.jwt]]");
                    }
                    true
                }
                "api_key" => true,
                "client_cert" => {
                    if !client_cert_listener {
                        e.push(
                            ap.clone(),
                            "no listener verifies client certificates (tls.client_auth, or a \
                             sidecar's inbound listener)",
                        );
                    }
                    true
                }
                _ => false,
            },
            Some(("jwt", name)) => {
                if !c.auth.jwt.iter().any(|j| j.name == name) {
                    e.push(ap.clone(), format!("no JWT issuer named `{name}`"));
                }
                true
            }
            Some(("introspection", name)) => {
                if !c.auth.introspection.iter().any(|j| j.name == name) {
                    e.push(
                        ap.clone(),
                        format!("no introspection endpoint named `{name}`"),
                    );
                }
                true
            }
            Some(_) => false,
        };
        if !ok {
            e.push(
                ap,
                format!(
                    "`{a}`: expected jwt, jwt:NAME, api_key, introspection:NAME or client_cert"
                ),
            );
        }
    }
    for (i, rule) in r.claims.iter().enumerate() {
        let cp = format!("{p}.claims[{i}]");
        if rule.claim.is_empty() {
            e.push(format!("{cp}.claim"), "must not be empty");
        }
        let n = usize::from(rule.equals.is_some())
            + usize::from(!rule.one_of.is_empty())
            + usize::from(rule.glob.is_some());
        if n != 1 {
            e.push(cp, "give exactly one of equals, one_of, glob");
        }
    }
    for m in &r.allow_methods {
        if http::Method::from_bytes(m.as_bytes()).is_err()
            || m.chars().any(|c| c.is_ascii_lowercase())
        {
            e.push(
                format!("{p}.allow_methods"),
                format!("`{m}` is not a method (write it in capitals)"),
            );
        }
    }
    if r.policy && c.auth.policies.files.is_empty() {
        e.push(
            format!("{p}.policy"),
            "policy = true needs Cedar policy files in auth.policies.files",
        );
    }
}
