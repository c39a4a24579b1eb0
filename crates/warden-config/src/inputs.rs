//! The files a config reads: certificates, keys, CA bundles, JWKS and API-key files, Cedar
//! policies, and secrets given as `file:` references. A signed config's manifest lists each
//! with its hash (`warden-signed-config`), so that a reviewed config cannot run with a
//! certificate, a policy or a key swapped under it. What a config writes (its data and state
//! directories, the authority's SQLite store, logs, sockets) is not an input and is not listed.

use std::path::{Path, PathBuf};

use crate::model::{CertificateConfig, Config, TlsListenerConfig};
use crate::types::SecretRef;

/// One file a config reads: the field that names it (`listeners[0].tls.certificates[0].cert`)
/// and the path as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputFile {
    /// The field's path in the config.
    pub field: String,
    /// The path as written (relative paths are relative to the working directory).
    pub path: PathBuf,
    /// Whether it holds a secret (a `file:` reference: a key, a token, a password).
    pub secret: bool,
}

#[derive(Default)]
struct Inputs(Vec<InputFile>);

impl Inputs {
    fn path(&mut self, field: String, p: &Path) {
        self.0.push(InputFile {
            field,
            path: p.to_path_buf(),
            secret: false,
        });
    }

    fn opt(&mut self, field: String, p: Option<&PathBuf>) {
        if let Some(p) = p {
            self.path(field, p);
        }
    }

    fn secret(&mut self, field: String, s: Option<&SecretRef>) {
        if let Some(p) = s.and_then(SecretRef::path) {
            self.0.push(InputFile {
                field,
                path: p.to_path_buf(),
                secret: true,
            });
        }
    }

    fn tls(&mut self, p: &str, t: &TlsListenerConfig) {
        for (i, CertificateConfig { cert, key, .. }) in t.certificates.iter().enumerate() {
            self.path(format!("{p}.certificates[{i}].cert"), cert);
            self.secret(format!("{p}.certificates[{i}].key"), Some(key));
        }
        if let Some(c) = &t.client_auth {
            self.path(format!("{p}.client_auth.ca"), &c.ca);
        }
    }
}

impl Config {
    /// Every file this config reads, in a stable order (the order of the config's sections).
    pub fn input_files(&self) -> Vec<InputFile> {
        let mut f = Inputs::default();
        for (i, k) in self.config_signing.trusted_keys.iter().enumerate() {
            f.path(format!("config_signing.trusted_keys[{i}].key"), &k.key);
        }
        f.secret("admin.token".into(), self.admin.token.as_ref());
        for (i, l) in self.listeners.iter().enumerate() {
            if let Some(t) = &l.tls {
                f.tls(&format!("listeners[{i}].tls"), t);
            }
        }
        for (i, c) in self.clusters.iter().enumerate() {
            if let Some(t) = &c.tls {
                let p = format!("clusters[{i}].tls");
                f.path(format!("{p}.ca"), &t.ca);
                f.opt(format!("{p}.client_cert"), t.client_cert.as_ref());
                f.secret(format!("{p}.client_key"), t.client_key.as_ref());
            }
        }
        let a = &self.auth;
        for (i, j) in a.jwt.iter().enumerate() {
            let p = format!("auth.jwt[{i}]");
            f.opt(format!("{p}.jwks_file"), j.jwks_file.as_ref());
            f.opt(format!("{p}.public_key_file"), j.public_key_file.as_ref());
            f.secret(format!("{p}.hmac_secret"), j.hmac_secret.as_ref());
            f.opt(format!("{p}.jwks_ca"), j.jwks_ca.as_ref());
        }
        f.opt("auth.api_keys.file".into(), a.api_keys.file.as_ref());
        for (i, x) in a.introspection.iter().enumerate() {
            let p = format!("auth.introspection[{i}]");
            f.secret(format!("{p}.client_secret"), Some(&x.client_secret));
            f.opt(format!("{p}.ca"), x.ca.as_ref());
        }
        for (i, p) in a.policies.files.iter().enumerate() {
            f.path(format!("auth.policies.files[{i}]"), p);
        }
        f.secret(
            "auth.internal_token.signing_key".into(),
            a.internal_token.signing_key.as_ref(),
        );
        f.secret(
            "auth.revocation.feed_token".into(),
            a.revocation.feed_token.as_ref(),
        );
        f.opt("auth.revocation.ca".into(), a.revocation.ca.as_ref());
        f.secret(
            "auth.revocation.redis_password".into(),
            a.revocation.redis_password.as_ref(),
        );
        f.secret(
            "rate_limit_store.password".into(),
            self.rate_limit_store.password.as_ref(),
        );
        let v = &self.vault;
        f.secret("vault.token".into(), v.token.as_ref());
        if let Some(r) = &v.approle {
            f.secret("vault.approle.role_id".into(), Some(&r.role_id));
            f.secret("vault.approle.secret_id".into(), Some(&r.secret_id));
        }
        f.opt("vault.ca_file".into(), v.ca_file.as_ref());
        f.opt("tracing.ca_file".into(), self.tracing.ca_file.as_ref());
        if let Some(s) = &self.sidecar {
            f.opt("sidecar.authority_ca".into(), s.authority_ca.as_ref());
            f.secret("sidecar.join_token".into(), Some(&s.join_token));
        }
        let au = &self.authority;
        if au.enabled {
            if let Some(t) = &au.tls {
                f.tls("authority.tls", t);
            }
            f.secret(
                "authority.key_encryption_key".into(),
                au.key_encryption_key.as_ref(),
            );
            f.secret("authority.admin_token".into(), au.admin_token.as_ref());
            f.secret(
                "authority.revocation_feed_token".into(),
                au.revocation_feed_token.as_ref(),
            );
            f.secret(
                "authority.redis_password".into(),
                au.redis_password.as_ref(),
            );
            if let Some(ca) = &au.ca {
                if let Some(u) = &ca.upstream {
                    f.path("authority.ca.upstream.cert".into(), &u.cert);
                    f.secret("authority.ca.upstream.key".into(), Some(&u.key));
                }
                for (i, fed) in ca.federation.iter().enumerate() {
                    f.opt(
                        format!("authority.ca.federation[{i}].endpoint_ca"),
                        fed.endpoint_ca.as_ref(),
                    );
                }
            }
        }
        f.0
    }
}

/// A secret file that users other than its owner and group can read or write: the field, the
/// file and its mode. Warden refuses to start on one, as OpenSSH refuses such private keys.
pub fn exposed_secrets(config: &Config) -> Vec<(String, PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt as _;
    config
        .input_files()
        .into_iter()
        .filter(|f| f.secret)
        .filter_map(|f| {
            let mode = std::fs::metadata(&f.path).ok()?.permissions().mode() & 0o7777;
            (mode & 0o006 != 0).then_some((f.field, f.path, mode))
        })
        .collect()
}
