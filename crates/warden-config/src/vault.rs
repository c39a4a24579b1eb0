//! `vault:` secret references: every secret reference of a config with its field path (what
//! the vault client fetches before a config is compiled), and the checks of the `[vault]`
//! client section.

use crate::model::{Config, TlsListenerConfig, VaultClientConfig};
use crate::types::SecretRef;
use crate::ConfigErrors;

/// Every secret reference the gateway side of a config reads, with its field path
/// (`rate_limit_store.password`). `[authority]` and `[vault]` are left out: the authority's
/// secrets are read before any vault client exists, and the client's own credentials cannot
/// come from the vault.
pub fn secret_refs(c: &Config) -> Vec<(String, &SecretRef)> {
    let mut out = Vec::new();
    for (i, l) in c.listeners.iter().enumerate() {
        if let Some(t) = &l.tls {
            tls_keys(t, &format!("listeners[{i}].tls"), &mut out);
        }
    }
    for (i, cl) in c.clusters.iter().enumerate() {
        if let Some(k) = cl.tls.as_ref().and_then(|t| t.client_key.as_ref()) {
            out.push((format!("clusters[{i}].tls.client_key"), k));
        }
    }
    if let Some(p) = &c.rate_limit_store.password {
        out.push(("rate_limit_store.password".into(), p));
    }
    let a = &c.auth;
    for (i, j) in a.jwt.iter().enumerate() {
        if let Some(s) = &j.hmac_secret {
            out.push((format!("auth.jwt[{i}].hmac_secret"), s));
        }
    }
    for (i, t) in a.introspection.iter().enumerate() {
        out.push((
            format!("auth.introspection[{i}].client_secret"),
            &t.client_secret,
        ));
    }
    if let Some(t) = &a.revocation.feed_token {
        out.push(("auth.revocation.feed_token".into(), t));
    }
    if let Some(p) = &a.revocation.redis_password {
        out.push(("auth.revocation.redis_password".into(), p));
    }
    if let Some(k) = &a.internal_token.signing_key {
        out.push(("auth.internal_token.signing_key".into(), k));
    }
    out
}

fn tls_keys<'a>(t: &'a TlsListenerConfig, p: &str, out: &mut Vec<(String, &'a SecretRef)>) {
    for (i, c) in t.certificates.iter().enumerate() {
        out.push((format!("{p}.certificates[{i}].key"), &c.key));
    }
}

/// References that may not be `vault:` ones, with their paths, and why.
fn local_only(c: &Config) -> Vec<(String, &SecretRef, &'static str)> {
    const AUTHORITY: &str = "`vault:` is not supported in [authority]: the authority starts \
                             before the vault client, and may be the vault itself; use env: or file:";
    const CLIENT: &str = "the vault client's own credentials must be env: or file:";
    let a = &c.authority;
    let mut out = Vec::new();
    for (path, r) in [
        ("authority.key_encryption_key", &a.key_encryption_key),
        ("authority.admin_token", &a.admin_token),
        ("authority.revocation_feed_token", &a.revocation_feed_token),
        ("authority.redis_password", &a.redis_password),
    ] {
        if let Some(r) = r {
            out.push((path.to_owned(), r, AUTHORITY));
        }
    }
    if let Some(t) = &a.tls {
        let mut keys = Vec::new();
        tls_keys(t, "authority.tls", &mut keys);
        out.extend(keys.into_iter().map(|(p, r)| (p, r, AUTHORITY)));
    }
    if let Some(t) = &c.admin.token {
        out.push((
            "admin.token".into(),
            t,
            "the [admin] section is read once, at start: use env: or file:",
        ));
    }
    let v = &c.vault;
    if let Some(t) = &v.token {
        out.push(("vault.token".into(), t, CLIENT));
    }
    if let Some(r) = &v.approle {
        out.push(("vault.approle.role_id".into(), &r.role_id, CLIENT));
        out.push(("vault.approle.secret_id".into(), &r.secret_id, CLIENT));
    }
    out
}

/// Checks `[vault]` and every `vault:` reference: a reference needs the client configured,
/// and the client needs a way to authenticate.
pub(crate) fn validate(c: &Config, e: &mut ConfigErrors) {
    let v: &VaultClientConfig = &c.vault;
    for (path, r, why) in local_only(c) {
        if !r.is_local() {
            e.push(path, why);
        }
    }
    if v.address.is_none() {
        for (path, r) in secret_refs(c) {
            if !r.is_local() {
                e.push(
                    path,
                    format!(
                        "`{r}` needs the vault client: set [vault] address and token or approle"
                    ),
                );
            }
        }
        if v.token.is_some() || v.approle.is_some() || v.ca_file.is_some() {
            e.push(
                "vault.address",
                "required when [vault] sets token, approle or ca_file",
            );
        }
        return;
    }
    if let Some(a) = &v.address {
        let ok = (a.starts_with("http://") || a.starts_with("https://"))
            && a.parse::<http::Uri>().is_ok_and(|u| {
                u.host().is_some() && u.query().is_none() && matches!(u.path(), "" | "/")
            });
        if !ok {
            e.push(
                "vault.address",
                "must be an http:// or https:// URL without a path (`https://vault:8200`)",
            );
        }
    }
    if v.token.is_none() && v.approle.is_none() {
        e.push("vault", "give token or approle (or both) to authenticate");
    }
    if let Some(t) = &v.token {
        if let Err(err) = t.check_local() {
            e.push("vault.token", err.to_string());
        }
    }
    if let Some(r) = &v.approle {
        for (path, s) in [
            ("vault.approle.role_id", &r.role_id),
            ("vault.approle.secret_id", &r.secret_id),
        ] {
            if let Err(err) = s.check_local() {
                e.push(path, err.to_string());
            }
        }
        let mount_ok = !r.mount.is_empty()
            && r.mount.len() <= 128
            && r.mount.split('/').all(|s| {
                !s.is_empty()
                    && s != "."
                    && s != ".."
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            });
        if !mount_ok {
            e.push(
                "vault.approle.mount",
                "must be a mount path such as `approle` (letters, digits, `-`, `_`, `.`, `/`)",
            );
        }
    }
    if let Some(f) = &v.ca_file {
        if let Err(err) = std::fs::metadata(f) {
            e.push(
                "vault.ca_file",
                format!("cannot read `{}`: {err}", f.display()),
            );
        }
    }
    if v.poll_interval.0 < std::time::Duration::from_secs(1) {
        e.push("vault.poll_interval", "at least 1s");
    }
    if v.timeout.0.is_zero() || v.timeout.0 > std::time::Duration::from_secs(60) {
        e.push("vault.timeout", "must be more than zero and at most 60s");
    }
}

#[cfg(test)]
mod tests {
    fn errors(toml: &str) -> Vec<String> {
        match crate::parse(toml) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    const BASE: &str = "[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n\
        [[clusters]]\nname = \"c\"\nendpoints = [\"http://127.0.0.1:9\"]\n\
        [[routes]]\nname = \"r\"\ncluster = \"c\"\nauth = \"none\"\n";

    #[test]
    fn a_vault_reference_without_the_client_is_an_error_naming_its_field() {
        let errs = errors(&format!(
            "{BASE}[rate_limit_store]\nredis_url = \"redis://127.0.0.1:6379\"\n\
             password = \"vault:secret/gw#redis\"\n"
        ));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(
                "rate_limit_store.password: `vault:secret/gw#redis` needs the vault client"
            ),
            "{errs:?}"
        );
    }

    #[test]
    fn the_client_section_is_checked_and_its_refs_are_not_read_at_validation() {
        // A vault reference is not read by validation (no env var, no file: still valid).
        let ok = format!(
            "{BASE}[rate_limit_store]\nredis_url = \"redis://127.0.0.1:6379\"\n\
             password = \"vault:secret/gw#redis\"\n\
             [vault]\naddress = \"http://127.0.0.1:8200\"\ntoken = \"env:PATH\"\n"
        );
        assert_eq!(errors(&ok), Vec::<String>::new());
        let errs = errors(&format!(
            "{BASE}[vault]\naddress = \"ftp://x/y\"\npoll_interval = \"10ms\"\n\
             timeout = \"2m\"\ntoken = \"vault:secret/a#b\"\n\
             [authority]\nadmin_token = \"vault:secret/a#admin\"\n"
        ));
        for want in [
            "vault.address: must be",
            "vault.poll_interval: at least 1s",
            "vault.timeout: must be",
            "vault.token: the vault client's own credentials must be env: or file:",
            "authority.admin_token: `vault:` is not supported in [authority]",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{want} not in {errs:?}"
            );
        }
        let errs = errors(&format!(
            "{BASE}[vault]\naddress = \"http://127.0.0.1:8200\"\n"
        ));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("vault: give token or approle")),
            "{errs:?}"
        );
        let errs = errors(&format!("{BASE}[vault]\ntoken = \"env:PATH\"\n"));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("vault.address: required")),
            "{errs:?}"
        );
    }
}
