//! Signed configuration (issue 14): a detached signature over a config file and every file it
//! reads, and its verification.
//!
//! **The signature** (`warden config sign --key KEY CONFIG`, written to `CONFIG.sig`) is a
//! compact JWS (`typ` [`TYP`], `alg` `EdDSA` or `ES256`, `kid` the RFC 7638 thumbprint of the
//! signing key) whose payload is a [`Manifest`]: the config's SHA-256 and, for each file the
//! config reads ([`warden_config::Config::input_files`]: certificates, keys, CA bundles,
//! policies, JWKS and API-key files, `file:` secrets), the field naming it, its path relative
//! to the config's directory and its SHA-256. Every such file must sit in the config's
//! directory or below it, so that a reviewed bundle is one directory.
//!
//! **Verification** ([`verify`]) takes the config's bytes as read once (the caller then parses
//! those same bytes), the keys trusted ([`Trust`]) and the time, and refuses with a stable
//! [`Reason`]: no signature, a malformed or truncated one, a key not trusted, revoked or past
//! its `not_after`, a bad signature, a config that is not the one signed, a manifest that
//! names a path outside the config's directory or does not list exactly the files the config
//! reads, and a file changed since signing. This crate reads files; it knows no sockets.
//!
//! The manifest holds the SHA-256 of secret files too (a swapped admin token or key must be
//! refused like a swapped certificate). Those are random keys and tokens; a short password in
//! a `file:` reference would be exposed to guessing by its hash, so keep them long and random.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use warden_config::Config;
use warden_crypto::jws::{b64url_decode, sha256, Alg, SigningKey, VerifyingKey};

/// The JWS `typ` of a config signature.
pub const TYP: &str = "warden-config+jws";

/// Largest signature file read.
pub const MAX_SIGNATURE_BYTES: u64 = 1 << 20;

/// Largest input file hashed.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// Where the signature of `config` is kept by default: `CONFIG.sig` next to it.
pub fn signature_path(config: &Path) -> PathBuf {
    let mut name = config.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// What is signed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The config file's name.
    pub config: String,
    /// Its SHA-256 (hex).
    pub config_sha256: String,
    /// Every file it reads.
    pub files: Vec<FileHash>,
    /// When it was signed (Unix seconds).
    pub iat: i64,
}

/// One file of a manifest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct FileHash {
    /// The config field that names it.
    pub field: String,
    /// Its path relative to the config's directory.
    pub path: String,
    /// Its SHA-256 (hex).
    pub sha256: String,
}

/// Why a config could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The config is not valid (each error with its field).
    #[error("the config is not valid:\n{0}")]
    Config(String),
    /// The signing key cannot be used.
    #[error("signing key: {0}")]
    Key(String),
    /// A file the config reads.
    #[error("{0}")]
    File(String),
}

/// Why a config was refused: a stable code for events and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No signature file.
    Unsigned,
    /// The signature or its manifest does not parse (truncated, not a JWS, wrong `typ`).
    Malformed,
    /// Signed by a key not trusted here.
    UnknownKey,
    /// Signed by a revoked key.
    KeyRevoked,
    /// Signed by a key past its `not_after`.
    KeyExpired,
    /// The signature does not verify.
    BadSignature,
    /// The config is not the one signed.
    ConfigChanged,
    /// The manifest does not list exactly the files the config reads.
    FilesDiffer,
    /// A file changed (or is missing) since signing.
    FileChanged,
    /// A path outside the config's directory.
    FileOutside,
}

impl Reason {
    /// The code (`unsigned`, `bad_signature`, `file_changed`, ...).
    pub fn code(self) -> &'static str {
        match self {
            Reason::Unsigned => "unsigned",
            Reason::Malformed => "malformed_signature",
            Reason::UnknownKey => "unknown_key",
            Reason::KeyRevoked => "key_revoked",
            Reason::KeyExpired => "key_expired",
            Reason::BadSignature => "bad_signature",
            Reason::ConfigChanged => "config_changed",
            Reason::FilesDiffer => "files_differ",
            Reason::FileChanged => "file_changed",
            Reason::FileOutside => "file_outside",
        }
    }
}

/// A refusal: its reason and what to tell the operator.
#[derive(Debug, thiserror::Error)]
#[error("config signature refused ({}): {message}", reason.code())]
pub struct Refused {
    /// Why.
    pub reason: Reason,
    /// What exactly.
    pub message: String,
}

fn refused(reason: Reason, message: impl Into<String>) -> Refused {
    Refused {
        reason,
        message: message.into(),
    }
}

/// A signature that held.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The key that signed.
    pub kid: String,
    /// The manifest.
    pub manifest: Manifest,
}

/// Reads a PEM PKCS#8 private key: Ed25519 or ECDSA P-256 (as `openssl genpkey` writes them).
pub fn signing_key(pem: &[u8]) -> Result<SigningKey, SignError> {
    SigningKey::from_pem(Alg::EdDSA, pem)
        .or_else(|_| SigningKey::from_pem(Alg::ES256, pem))
        .map_err(|e| {
            SignError::Key(format!(
                "not an Ed25519 or ECDSA P-256 PKCS#8 private key: {e}"
            ))
        })
}

/// Reads a PEM public key (Ed25519 or ECDSA P-256) and its key id.
pub fn public_key(pem: &[u8]) -> Result<(String, VerifyingKey), String> {
    match VerifyingKey::from_pem(pem).map_err(|e| e.to_string())? {
        k @ (VerifyingKey::Ed25519(_) | VerifyingKey::P256(_)) => Ok((k.thumbprint(), k)),
        _ => Err("an Ed25519 or ECDSA P-256 public key is needed".into()),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The SHA-256 of `bytes` in lower-case hex, as manifests (and `sha256sum`) write it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha256(bytes))
}

fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut out = Vec::new();
    f.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(out)
}

/// The config's directory, resolved (symbolic links followed). The config file itself need
/// not exist yet (a fetched config is checked before it is written).
fn config_dir(config: &Path) -> std::io::Result<PathBuf> {
    match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => std::fs::canonicalize(p),
        _ => std::fs::canonicalize("."),
    }
}

/// A problem with one of the config's files: outside the directory, or unreadable.
enum FileProblem {
    Outside(String),
    Unreadable(String),
}

/// The config's input files as manifest entries: each resolved, inside `dir`, hashed.
fn hash_inputs(config: &Config, dir: &Path) -> Result<Vec<FileHash>, FileProblem> {
    let mut out = Vec::new();
    for input in config.input_files() {
        let resolved = std::fs::canonicalize(&input.path).map_err(|e| {
            FileProblem::Unreadable(format!("{}: {}: {e}", input.field, input.path.display()))
        })?;
        let rel = resolved.strip_prefix(dir).map_err(|_| {
            FileProblem::Outside(format!(
                "{}: {} is outside the config's directory {} (keep every file a signed \
                 config reads in its directory)",
                input.field,
                input.path.display(),
                dir.display()
            ))
        })?;
        let bytes = read_bounded(&resolved, MAX_FILE_BYTES).map_err(|e| {
            FileProblem::Unreadable(format!("{}: {}: {e}", input.field, input.path.display()))
        })?;
        out.push(FileHash {
            field: input.field,
            path: rel.to_string_lossy().into_owned(),
            sha256: sha256_hex(&bytes),
        });
    }
    Ok(out)
}

fn parse_config(bytes: &[u8]) -> Result<Config, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the config is not UTF-8".to_owned())?;
    warden_config::parse(text).map_err(|errs| {
        errs.0
            .iter()
            .map(|e| format!("  {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Signs the config at `config_path` and every file it reads with `key` at `now` (Unix
/// seconds): the compact JWS to write to [`signature_path`]. Refuses an invalid config, and a
/// file outside the config's directory or unreadable, naming its field.
pub fn sign(config_path: &Path, key: &SigningKey, now: i64) -> Result<String, SignError> {
    let bytes = read_bounded(config_path, MAX_FILE_BYTES)
        .map_err(|e| SignError::File(format!("{}: {e}", config_path.display())))?;
    let config = parse_config(&bytes).map_err(SignError::Config)?;
    let dir = config_dir(config_path)
        .map_err(|e| SignError::File(format!("{}: {e}", config_path.display())))?;
    let files = hash_inputs(&config, &dir).map_err(|p| match p {
        FileProblem::Outside(m) | FileProblem::Unreadable(m) => SignError::File(m),
    })?;
    let manifest = Manifest {
        config: config_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        config_sha256: sha256_hex(&bytes),
        files,
        iat: now,
    };
    let claims = serde_json::to_value(&manifest).map_err(|e| SignError::Key(e.to_string()))?;
    Ok(key.sign_jwt(TYP, &claims))
}

/// One trusted signing key.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    /// Its id.
    pub kid: String,
    key: VerifyingKey,
    /// Signatures by it are refused after this (Unix seconds).
    pub not_after: Option<i64>,
    /// Where it came from (a file, for messages).
    pub source: String,
}

/// The keys a config's signature is checked against, and whether one is required.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    keys: Vec<TrustedKey>,
    revoked: BTreeSet<String>,
    required: bool,
}

impl Trust {
    /// Keys given outside the config (`serve --trusted-config-key`): a signature is required
    /// when there is at least one.
    pub fn anchors(paths: &[PathBuf]) -> Result<Trust, String> {
        let mut t = Trust {
            required: !paths.is_empty(),
            ..Trust::default()
        };
        for p in paths {
            let pem = read_bounded(p, MAX_SIGNATURE_BYTES)
                .map_err(|e| format!("trusted config key {}: {e}", p.display()))?;
            let (kid, key) =
                public_key(&pem).map_err(|e| format!("trusted config key {}: {e}", p.display()))?;
            t.keys.push(TrustedKey {
                kid,
                key,
                not_after: None,
                source: p.display().to_string(),
            });
        }
        Ok(t)
    }

    /// The config's `[config_signing]`: a signature is required when it lists a key or says
    /// `require = true`.
    pub fn of_config(config: &Config) -> Result<Trust, String> {
        let c = &config.config_signing;
        let mut t = Trust {
            required: c.require || !c.trusted_keys.is_empty(),
            revoked: c.revoked_keys.iter().cloned().collect(),
            keys: Vec::new(),
        };
        for (i, k) in c.trusted_keys.iter().enumerate() {
            let field = format!("config_signing.trusted_keys[{i}].key");
            let pem = read_bounded(&k.key, MAX_SIGNATURE_BYTES)
                .map_err(|e| format!("{field}: {}: {e}", k.key.display()))?;
            let (kid, key) = public_key(&pem).map_err(|e| format!("{field}: {e}"))?;
            t.keys.push(TrustedKey {
                kid,
                key,
                not_after: k.not_after.map(|t| t.0),
                source: k.key.display().to_string(),
            });
        }
        Ok(t)
    }

    /// Both sets of keys and revocations; required if either requires.
    pub fn and(&self, other: &Trust) -> Trust {
        let mut keys = self.keys.clone();
        keys.extend(other.keys.iter().cloned());
        Trust {
            keys,
            revoked: self.revoked.union(&other.revoked).cloned().collect(),
            required: self.required || other.required,
        }
    }

    /// Only the revocations (a config's revoked keys apply even where its own trusted keys
    /// do not, as at a start with keys from the command line).
    pub fn revocations(&self) -> Trust {
        Trust {
            revoked: self.revoked.clone(),
            ..Trust::default()
        }
    }

    /// Requires a signature (`--require-signed`).
    pub fn require(mut self) -> Trust {
        self.required = true;
        self
    }

    /// Whether a config must be signed.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The keys' ids.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }
}

/// Checks `config_bytes` (the config at `config_path`, as read once) against its signature
/// file ([`signature_path`]).
pub fn verify(
    config_path: &Path,
    config_bytes: &[u8],
    trust: &Trust,
    now: i64,
) -> Result<Verified, Refused> {
    let sig_path = signature_path(config_path);
    let signature = match read_bounded(&sig_path, MAX_SIGNATURE_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refused(
                Reason::Unsigned,
                format!(
                    "{} has no signature ({} is missing; sign it with `warden config sign`)",
                    config_path.display(),
                    sig_path.display()
                ),
            ))
        }
        Err(e) => {
            return Err(refused(
                Reason::Malformed,
                format!("{}: {e}", sig_path.display()),
            ))
        }
    };
    let signature = String::from_utf8(signature)
        .map_err(|_| refused(Reason::Malformed, "the signature is not text"))?;
    verify_signature(config_path, config_bytes, signature.trim(), trust, now)
}

/// [`verify`] with the signature given.
pub fn verify_signature(
    config_path: &Path,
    config_bytes: &[u8],
    signature: &str,
    trust: &Trust,
    now: i64,
) -> Result<Verified, Refused> {
    let malformed = |what: &str| refused(Reason::Malformed, what.to_owned());
    let parts: Vec<&str> = signature.split('.').collect();
    let [h, p, s] = parts[..] else {
        return Err(malformed(
            "not a compact JWS (three base64url parts): truncated or not a signature",
        ));
    };
    let header: Value = b64url_decode(h.as_bytes())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| malformed("the signature's header does not decode"))?;
    if header.get("typ").and_then(Value::as_str) != Some(TYP) {
        return Err(malformed(&format!(
            "not a config signature (typ must be {TYP})"
        )));
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::parse)
        .filter(|a| matches!(a, Alg::EdDSA | Alg::ES256))
        .ok_or_else(|| malformed("alg must be EdDSA or ES256"))?;
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("the signature names no key (kid)"))?;
    if trust.revoked.contains(kid) {
        return Err(refused(
            Reason::KeyRevoked,
            format!("signed by key {kid}, which is revoked (config_signing.revoked_keys)"),
        ));
    }
    let Some(key) = trust.keys.iter().find(|k| k.kid == kid) else {
        return Err(refused(
            Reason::UnknownKey,
            format!(
                "signed by key {kid}, which is not trusted here (trusted: {})",
                if trust.keys.is_empty() {
                    "none".to_owned()
                } else {
                    trust.kids().join(", ")
                }
            ),
        ));
    };
    let sig = b64url_decode(s.as_bytes())
        .ok_or_else(|| malformed("the signature part does not decode"))?;
    let signing_input = &signature[..h.len() + 1 + p.len()];
    if !key.key.fits(alg) || !key.key.verify(alg, signing_input.as_bytes(), &sig) {
        return Err(refused(
            Reason::BadSignature,
            format!(
                "the signature does not verify with key {kid} ({})",
                key.source
            ),
        ));
    }
    if let Some(limit) = key.not_after {
        if now > limit {
            return Err(refused(
                Reason::KeyExpired,
                format!(
                    "key {kid} ({}) is trusted only until {limit} (Unix time)",
                    key.source
                ),
            ));
        }
    }
    let manifest: Manifest = b64url_decode(p.as_bytes())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| malformed("the signed manifest does not decode"))?;
    let actual_sha = sha256_hex(config_bytes);
    if actual_sha != manifest.config_sha256 {
        return Err(refused(
            Reason::ConfigChanged,
            format!(
                "{} is not the config that was signed (SHA-256 {actual_sha}, signed {})",
                config_path.display(),
                manifest.config_sha256
            ),
        ));
    }
    for f in &manifest.files {
        let p = Path::new(&f.path);
        if p.is_absolute()
            || p.components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(refused(
                Reason::FileOutside,
                format!(
                    "the manifest names {} ({}), outside the config's directory",
                    f.path, f.field
                ),
            ));
        }
    }
    let config = parse_config(config_bytes).map_err(|e| {
        refused(
            Reason::Malformed,
            format!("the signed config does not parse:\n{e}"),
        )
    })?;
    let dir = config_dir(config_path).map_err(|e| {
        refused(
            Reason::FileChanged,
            format!("{}: {e}", config_path.display()),
        )
    })?;
    let actual = hash_inputs(&config, &dir).map_err(|p| match p {
        FileProblem::Outside(m) => refused(Reason::FileOutside, m),
        FileProblem::Unreadable(m) => refused(Reason::FileChanged, m),
    })?;
    let named = |v: &[FileHash]| -> BTreeSet<(String, String)> {
        v.iter()
            .map(|f| (f.field.clone(), f.path.clone()))
            .collect()
    };
    let (signed, reads) = (named(&manifest.files), named(&actual));
    if signed != reads {
        let list = |s: BTreeSet<&(String, String)>| {
            s.iter()
                .map(|(f, p)| format!("{f} = {p}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(refused(
            Reason::FilesDiffer,
            format!(
                "the manifest does not list the files the config reads; not signed: [{}]; \
                 signed but not read: [{}]",
                list(reads.difference(&signed).collect()),
                list(signed.difference(&reads).collect()),
            ),
        ));
    }
    for a in &actual {
        let s = manifest
            .files
            .iter()
            .find(|f| f.field == a.field && f.path == a.path);
        if s.map(|s| &s.sha256) != Some(&a.sha256) {
            return Err(refused(
                Reason::FileChanged,
                format!(
                    "{}: {} changed since the config was signed",
                    a.field, a.path
                ),
            ));
        }
    }
    Ok(Verified {
        kid: kid.to_owned(),
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bundle {
        dir: tempfile::TempDir,
        key: SigningKey,
        pub_path: PathBuf,
    }

    impl Bundle {
        /// A config dir with a config naming one JWKS file, and an Ed25519 signing key whose
        /// public half the config trusts (`extra` goes into `[config_signing]`).
        fn new(extra: &str) -> Bundle {
            let dir = tempfile::tempdir().unwrap();
            let d = std::fs::canonicalize(dir.path()).unwrap();
            let key = SigningKey::generate(Alg::EdDSA).unwrap();
            let pub_path = d.join("signer.pub");
            std::fs::write(&pub_path, spki_pem(&key)).unwrap();
            std::fs::write(d.join("jwks.json"), r#"{"keys":[]}"#).unwrap();
            let b = Bundle { dir, key, pub_path };
            b.write_config(extra);
            b
        }

        fn d(&self) -> PathBuf {
            std::fs::canonicalize(self.dir.path()).unwrap()
        }

        fn config(&self) -> PathBuf {
            self.d().join("warden.toml")
        }

        fn write_config(&self, extra: &str) {
            let d = self.d();
            std::fs::write(
                self.config(),
                format!(
                    "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n\
                     [[auth.jwt]]\nname = \"idp\"\nissuer = \"https://idp.example\"\n\
                     audiences = [\"api\"]\nalgorithms = [\"ES256\"]\njwks_file = \"{}\"\n\
                     [config_signing]\ntrusted_keys = [{{ key = \"{}\" }}]\n{extra}",
                    d.join("jwks.json").display(),
                    self.pub_path.display()
                ),
            )
            .unwrap();
        }

        fn trust(&self) -> Trust {
            let cfg = warden_config::load(&self.config()).unwrap();
            Trust::of_config(&cfg).unwrap()
        }

        fn check(&self, sig: &str, now: i64) -> Result<Verified, Refused> {
            let bytes = std::fs::read(self.config()).unwrap();
            verify_signature(&self.config(), &bytes, sig, &self.trust(), now)
        }

        fn sign_manifest(&self, m: &Manifest) -> String {
            self.key.sign_jwt(TYP, &serde_json::to_value(m).unwrap())
        }

        fn manifest(&self) -> Manifest {
            let sig = sign(&self.config(), &self.key, 1).unwrap();
            let p = sig.split('.').nth(1).unwrap();
            serde_json::from_slice(&b64url_decode(p.as_bytes()).unwrap()).unwrap()
        }
    }

    /// The PEM SubjectPublicKeyInfo of an Ed25519 key.
    fn spki_pem(k: &SigningKey) -> String {
        let VerifyingKey::Ed25519(raw) = k.verifying_key() else {
            unreachable!()
        };
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend(raw);
        use base64::Engine as _;
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        )
    }

    #[test]
    fn a_signed_bundle_verifies_and_lists_every_file_it_reads() {
        let b = Bundle::new("");
        let sig = sign(&b.config(), &b.key, 100).unwrap();
        let v = b.check(&sig, 200).unwrap();
        assert_eq!(v.kid, b.key.kid());
        let fields: Vec<_> = v
            .manifest
            .files
            .iter()
            .map(|f| (f.field.as_str(), f.path.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("config_signing.trusted_keys[0].key", "signer.pub"),
                ("auth.jwt[0].jwks_file", "jwks.json")
            ]
        );
    }

    #[test]
    fn each_tampering_is_refused_with_its_reason() {
        let b = Bundle::new("");
        let sig = sign(&b.config(), &b.key, 100).unwrap();
        let code = |r: Result<Verified, Refused>| r.unwrap_err().reason;

        // A file the config reads changed.
        std::fs::write(b.d().join("jwks.json"), r#"{"keys":[{}]}"#).unwrap();
        let e = b.check(&sig, 200).unwrap_err();
        assert_eq!(e.reason, Reason::FileChanged);
        assert!(e.message.contains("auth.jwt[0].jwks_file"), "{e}");
        std::fs::write(b.d().join("jwks.json"), r#"{"keys":[]}"#).unwrap();
        assert!(b.check(&sig, 200).is_ok());

        // Truncated, or not a signature at all.
        for cut in [4, 7, 8] {
            let r = code(b.check(&sig[..sig.len() - cut], 200));
            assert!(
                matches!(r, Reason::BadSignature | Reason::Malformed),
                "{cut}: {r:?}"
            );
        }
        assert_eq!(
            code(b.check(&sig[..sig.rfind('.').unwrap()], 200)),
            Reason::Malformed
        );
        assert_eq!(code(b.check("hello", 200)), Reason::Malformed);

        // A manifest naming a path outside the directory, even if signed.
        let mut m = b.manifest();
        m.files[1].path = "../etc/jwks.json".into();
        assert_eq!(
            code(b.check(&b.sign_manifest(&m), 200)),
            Reason::FileOutside
        );
        let mut m = b.manifest();
        m.files[1].path = "/etc/passwd".into();
        assert_eq!(
            code(b.check(&b.sign_manifest(&m), 200)),
            Reason::FileOutside
        );

        // A manifest that leaves a file out.
        let mut m = b.manifest();
        m.files.pop();
        let e = b.check(&b.sign_manifest(&m), 200).unwrap_err();
        assert_eq!(e.reason, Reason::FilesDiffer);
        assert!(
            e.message.contains("auth.jwt[0].jwks_file = jwks.json"),
            "{e}"
        );

        // Another key's signature.
        let other = SigningKey::generate(Alg::EdDSA).unwrap();
        let forged = sign(&b.config(), &other, 100).unwrap();
        assert_eq!(code(b.check(&forged, 200)), Reason::UnknownKey);
        // Our kid on another key's signature.
        let parts: Vec<&str> = sig.split('.').collect();
        let forged_parts: Vec<&str> = forged.split('.').collect();
        let spliced = format!("{}.{}.{}", parts[0], parts[1], forged_parts[2]);
        assert_eq!(code(b.check(&spliced, 200)), Reason::BadSignature);

        // The config itself changed.
        b.write_config("require = true\n");
        assert_eq!(code(b.check(&sig, 200)), Reason::ConfigChanged);
    }

    #[test]
    fn an_expired_or_revoked_key_is_refused() {
        let b = Bundle::new("");
        let kid = b.key.kid().to_owned();
        // not_after in the config's trusted key.
        b.write_config("");
        let text = std::fs::read_to_string(b.config())
            .unwrap()
            .replace("\" }]", "\", not_after = \"2020-01-01T00:00:00Z\" }]");
        std::fs::write(b.config(), text).unwrap();
        let sig = sign(&b.config(), &b.key, 100).unwrap();
        assert!(b.check(&sig, 1_577_836_000).is_ok(), "before not_after");
        assert_eq!(
            b.check(&sig, 1_577_836_801).unwrap_err().reason,
            Reason::KeyExpired
        );

        b.write_config(&format!("revoked_keys = [\"{kid}\"]\n"));
        let sig = sign(&b.config(), &b.key, 100).unwrap();
        assert_eq!(b.check(&sig, 200).unwrap_err().reason, Reason::KeyRevoked);
    }

    #[test]
    fn signing_refuses_a_file_outside_the_directory_and_an_invalid_config() {
        let b = Bundle::new("");
        let elsewhere = tempfile::tempdir().unwrap();
        let outside = elsewhere.path().join("jwks.json");
        std::fs::write(&outside, r#"{"keys":[]}"#).unwrap();
        let text = std::fs::read_to_string(b.config()).unwrap().replace(
            &b.d().join("jwks.json").display().to_string(),
            &outside.display().to_string(),
        );
        std::fs::write(b.config(), text).unwrap();
        let e = sign(&b.config(), &b.key, 1).unwrap_err().to_string();
        assert!(
            e.contains("auth.jwt[0].jwks_file") && e.contains("outside the config's directory"),
            "{e}"
        );

        std::fs::write(b.config(), "[[listeners]]\nname = 3\n").unwrap();
        let e = sign(&b.config(), &b.key, 1).unwrap_err().to_string();
        assert!(e.contains("listeners[0]"), "{e}");
    }
}
