//! API keys: `wdn_<id>_<secret>`.
//!
//! The id is public (it is how a key is found, and what logs and metrics name); the secret is
//! 40 random characters from `[A-Za-z0-9]` (about 238 bits), and only its SHA-256 is stored, as
//! `sha256:<hex>`. A fast hash is the right one here: the secret is generated, never chosen by
//! a person, so there is nothing for a slow hash to protect against brute force. Hashes are
//! compared in constant time; an unknown id may be answered quickly because ids are public.
//!
//! Keys come from the config (`[[auth.api_keys.keys]]`) and from a key file managed by
//! `warden apikey create|list|revoke` (`auth.api_keys.file`, TOML with `[[keys]]` tables).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use rand::rngs::OsRng;
use rand::{Rng, TryRngCore};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use warden_config::validate_auth::{self, valid_api_key_id};
use warden_config::{ApiKeyConfig, ApiKeysConfig, ConfigErrors, Timestamp};

use crate::identity::{AuthMethod, Identity};

/// What every key starts with.
pub const KEY_PREFIX: &str = "wdn_";
/// Length of a generated id.
pub const ID_LEN: usize = 10;
/// Length of a generated secret.
pub const SECRET_LEN: usize = 40;
/// Longest key accepted; anything longer is refused before it is looked at.
pub const MAX_KEY_BYTES: usize = 128;

const FILE_FIELD: &str = "auth.api_keys.file";
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const FILE_HEADER: &str = "\
# Warden API keys. Managed by `warden apikey create|list|revoke`; edit with care.
# Only a hash of each key's secret is stored here; the keys themselves were shown once, when
# they were created. Revoked keys are kept for the record.
";

/// Why a presented key was refused. The reasons are distinct for metrics and logs; clients are
/// shown one generic 401 whatever the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyError {
    /// Not of the form `wdn_<id>_<secret>`.
    Malformed,
    /// No key has this id.
    Unknown,
    /// The id is known but the secret does not match.
    WrongSecret,
    /// The key is past its `expires` time.
    Expired,
    /// The key has been revoked.
    Revoked,
}

impl ApiKeyError {
    /// The reason as metrics and logs name it.
    pub fn reason(self) -> &'static str {
        match self {
            ApiKeyError::Malformed => "malformed",
            ApiKeyError::Unknown => "unknown_key",
            ApiKeyError::WrongSecret => "wrong_secret",
            ApiKeyError::Expired => "expired",
            ApiKeyError::Revoked => "revoked",
        }
    }
}

impl fmt::Display for ApiKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ApiKeyError {}

/// The API keys the gateway accepts, by id. Built once per config (or key file) load.
pub struct ApiKeyStore {
    keys: HashMap<String, StoredKey>,
}

/// One key, ready to check: the decoded hash and the identity it grants.
struct StoredKey {
    hash: [u8; 32],
    revoked: bool,
    expires: Option<i64>,
    identity: Identity,
}

/// The key file: `[[keys]]` tables.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    keys: Vec<ApiKeyConfig>,
}

/// Collects keys and every problem with them, each error as (field, reason).
#[derive(Default)]
struct Builder {
    keys: HashMap<String, StoredKey>,
    /// Where each id was first seen, to name it in a duplicate error.
    seen: HashMap<String, String>,
    errors: Vec<(String, String)>,
}

/// Where a key entry came from, which decides how its errors are named.
#[derive(Clone, Copy)]
enum Origin<'a> {
    /// The config (or a list given directly): errors name the entry's own path.
    Config,
    /// The key file of this name: errors are on `auth.api_keys.file`, the entry's path in the
    /// reason.
    File(&'a str),
}

impl fmt::Debug for ApiKeyStore {
    /// Ids only: hashes stay out of logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        ids.sort_unstable();
        f.debug_struct("ApiKeyStore").field("ids", &ids).finish()
    }
}

impl ApiKeyStore {
    /// Builds the store from the config's inline keys plus the key file (if any). Errors are
    /// (field path, reason): inline keys are named by their config path
    /// (`auth.api_keys.keys[1].hash`), problems in the file as `("auth.api_keys.file",
    /// "keys.toml: [[keys]][2].hash: must be …")`. An id used twice, in the file, the config or
    /// across both, is an error.
    pub fn compile(cfg: &ApiKeysConfig) -> Result<ApiKeyStore, Vec<(String, String)>> {
        let mut b = Builder::default();
        for (i, k) in cfg.keys.iter().enumerate() {
            let p = format!("auth.api_keys.keys[{i}]");
            b.add(k, &p, Origin::Config);
        }
        if let Some(path) = &cfg.file {
            let name = path.display().to_string();
            let parsed = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read `{name}`: {e}"))
                .and_then(|text| parse_key_file(&text).map_err(|e| format!("{name}: {e}")));
            match parsed {
                Ok(keys) => {
                    for (i, k) in keys.iter().enumerate() {
                        b.add(k, &format!("[[keys]][{i}]"), Origin::File(&name));
                    }
                }
                Err(e) => b.errors.push((FILE_FIELD.to_owned(), e)),
            }
        }
        b.finish()
    }

    /// Builds the store from a list of keys (a key file's contents); errors are named
    /// `[[keys]][i].field`.
    pub fn from_keys(keys: Vec<ApiKeyConfig>) -> Result<ApiKeyStore, Vec<(String, String)>> {
        let mut b = Builder::default();
        for (i, k) in keys.iter().enumerate() {
            b.add(k, &format!("[[keys]][{i}]"), Origin::Config);
        }
        b.finish()
    }

    /// Checks a presented key at time `now` (Unix seconds). Unknown id, wrong secret, revoked
    /// and expired are distinct errors (for metrics), but callers show one generic 401.
    ///
    /// The secret is checked before revocation and expiry, so only a holder of the key learns
    /// (through metrics or logs) that it is revoked or expired.
    pub fn verify(&self, presented: &str, now: i64) -> Result<Identity, ApiKeyError> {
        let (id, secret) = split_key(presented).ok_or(ApiKeyError::Malformed)?;
        let key = self.keys.get(id).ok_or(ApiKeyError::Unknown)?;
        let digest = warden_crypto::jws::sha256(secret.as_bytes());
        if !warden_crypto::ct_eq(&digest, &key.hash) {
            return Err(ApiKeyError::WrongSecret);
        }
        if key.revoked {
            return Err(ApiKeyError::Revoked);
        }
        if key.expires.is_some_and(|exp| now >= exp) {
            return Err(ApiKeyError::Expired);
        }
        Ok(key.identity.clone())
    }

    /// How many keys the store holds (revoked and expired ones included).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl Builder {
    /// Checks one entry (`p` is its path within `origin`) and adds it.
    fn add(&mut self, k: &ApiKeyConfig, p: &str, origin: Origin<'_>) {
        let mut errs = ConfigErrors::default();
        validate_auth::api_key(k, p, &mut errs);
        let valid = errs.is_empty();
        self.errors
            .extend(errs.0.into_iter().map(|e| origin.error(e.path, e.reason)));
        if let Some(first) = self.seen.get(&k.id) {
            let reason = format!("duplicate key id `{}` (also at {first})", k.id);
            self.errors.push(origin.error(format!("{p}.id"), reason));
            return;
        }
        self.seen.insert(k.id.clone(), origin.place(p));
        let Some(hash) = decode_hash(&k.hash).filter(|_| valid) else {
            return;
        };
        self.keys.insert(
            k.id.clone(),
            StoredKey {
                hash,
                revoked: k.revoked,
                expires: k.expires.map(|t| t.0),
                identity: identity_for(k),
            },
        );
    }

    fn finish(self) -> Result<ApiKeyStore, Vec<(String, String)>> {
        if self.errors.is_empty() {
            Ok(ApiKeyStore { keys: self.keys })
        } else {
            Err(self.errors)
        }
    }
}

/// The identity a key grants: its owner as subject, its scopes, and its attributes (plus
/// `key_id`) as claims.
fn identity_for(k: &ApiKeyConfig) -> Identity {
    let mut claims: Map<String, Value> = k
        .attributes
        .iter()
        .map(|(name, v)| (name.clone(), Value::String(v.clone())))
        .collect();
    // Last, so an attribute cannot pose as another key.
    claims.insert("key_id".into(), Value::String(k.id.clone()));
    let mut id = Identity::new(k.owner.clone(), AuthMethod::ApiKey);
    id.issuer = Some("api_key".into());
    id.scopes = k.scopes.clone();
    id.claims = claims;
    id.key_id = Some(k.id.clone());
    id.expires_at = k.expires.map(|t| t.0);
    id
}

impl Origin<'_> {
    fn error(self, field: String, reason: String) -> (String, String) {
        match self {
            Origin::Config => (field, reason),
            Origin::File(name) => (FILE_FIELD.to_owned(), format!("{name}: {field}: {reason}")),
        }
    }

    fn place(self, p: &str) -> String {
        match self {
            Origin::Config => p.to_owned(),
            Origin::File(name) => format!("{name} {p}"),
        }
    }
}

/// `sha256:<64 hex digits>` to bytes.
fn decode_hash(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// `sha256:<hex>` of a secret, as stored.
fn hash_secret(secret: &str) -> String {
    let digest = warden_crypto::jws::sha256(secret.as_bytes());
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Splits `wdn_<id>_<secret>` into (id, secret), refusing anything else: the id must be 4 to 32
/// characters from `[a-z0-9]`, the secret one or more from `[A-Za-z0-9]`, and the whole at most
/// [`MAX_KEY_BYTES`] bytes.
pub fn split_key(s: &str) -> Option<(&str, &str)> {
    if s.len() > MAX_KEY_BYTES {
        return None;
    }
    let (id, secret) = s.strip_prefix(KEY_PREFIX)?.split_once('_')?;
    let secret_ok = !secret.is_empty() && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    (valid_api_key_id(id) && secret_ok).then_some((id, secret))
}

/// Parses the key file format: TOML with `[[keys]]` tables, each an [`ApiKeyConfig`]. Only the
/// syntax and types are checked here; [`ApiKeyStore::from_keys`] checks the entries' meaning.
pub fn parse_key_file(text: &str) -> Result<Vec<ApiKeyConfig>, String> {
    toml::from_str::<KeyFile>(text)
        .map(|f| f.keys)
        .map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: ")
                })
                .unwrap_or_default();
            format!("{at}{}", e.message().trim())
        })
}

/// Writes keys in the key file format, under a header saying the file is managed by
/// `warden apikey`.
pub fn write_key_file(keys: &[ApiKeyConfig]) -> String {
    let s = |v: &str| toml::Value::String(v.to_owned()).to_string();
    let mut out = String::from(FILE_HEADER);
    for k in keys {
        out.push_str("\n[[keys]]\n");
        out.push_str(&format!("id = {}\n", s(&k.id)));
        out.push_str(&format!("owner = {}\n", s(&k.owner)));
        out.push_str(&format!("hash = {}\n", s(&k.hash)));
        let scopes: Vec<String> = k.scopes.iter().map(|v| s(v)).collect();
        out.push_str(&format!("scopes = [{}]\n", scopes.join(", ")));
        if let Some(t) = k.created {
            out.push_str(&format!("created = {}\n", s(&t.to_rfc3339())));
        }
        if let Some(t) = k.expires {
            out.push_str(&format!("expires = {}\n", s(&t.to_rfc3339())));
        }
        out.push_str(&format!("revoked = {}\n", k.revoked));
        if !k.attributes.is_empty() {
            let attrs: Vec<String> = k
                .attributes
                .iter()
                .map(|(name, v)| format!("{} = {}", toml_key(name), s(v)))
                .collect();
            out.push_str(&format!("attributes = {{ {} }}\n", attrs.join(", ")));
        }
    }
    out
}

/// A TOML key: bare when it can be, quoted otherwise.
fn toml_key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        k.to_owned()
    } else {
        toml::Value::String(k.to_owned()).to_string()
    }
}

/// Makes a new key from the operating system's random source. Returns the full key, to show
/// once, and its entry for the key file (hash, owner, scopes, expiry, creation time).
///
/// # Panics
/// If the operating system cannot supply random bytes: there is no safe key to make then.
pub fn generate(
    owner: &str,
    scopes: Vec<String>,
    expires: Option<Timestamp>,
    attributes: BTreeMap<String, String>,
    now: i64,
) -> (String, ApiKeyConfig) {
    let mut rng = OsRng.unwrap_err();
    let mut pick = |alphabet: &[u8], n: usize| -> String {
        (0..n)
            .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
            .collect()
    };
    let id = pick(ID_ALPHABET, ID_LEN);
    let secret = zeroize::Zeroizing::new(pick(SECRET_ALPHABET, SECRET_LEN));
    let key = format!("{KEY_PREFIX}{id}_{}", secret.as_str());
    let entry = ApiKeyConfig {
        hash: hash_secret(&secret),
        id,
        owner: owner.to_owned(),
        scopes,
        expires,
        attributes,
        revoked: false,
        created: Some(Timestamp(now)),
    };
    (key, entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn store_with(entries: Vec<ApiKeyConfig>) -> ApiKeyStore {
        ApiKeyStore::from_keys(entries).expect("valid keys")
    }

    fn key(owner: &str) -> (String, ApiKeyConfig) {
        let attrs = BTreeMap::from([("tier".to_owned(), "gold".to_owned())]);
        generate(owner, vec!["read".into(), "write".into()], None, attrs, NOW)
    }

    #[test]
    fn generated_key_has_the_documented_shape_and_verifies() {
        let (k, entry) = key("billing");
        assert_eq!(k.len(), 4 + ID_LEN + 1 + SECRET_LEN);
        let (id, secret) = split_key(&k).expect("well-formed");
        assert_eq!(id, entry.id);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(!entry.hash.contains(secret));
        assert_eq!(entry.created, Some(Timestamp(NOW)));

        let store = store_with(vec![entry.clone()]);
        let who = store.verify(&k, NOW).expect("key verifies");
        assert_eq!(who.subject, "billing");
        assert_eq!(who.method, AuthMethod::ApiKey);
        assert_eq!(who.issuer.as_deref(), Some("api_key"));
        assert_eq!(who.key_id.as_deref(), Some(entry.id.as_str()));
        assert_eq!(who.scopes, ["read", "write"]);
        assert_eq!(who.claims["tier"], "gold");
        assert_eq!(who.claims["key_id"], entry.id.as_str());
        assert_eq!(who.expires_at, None);
    }

    #[test]
    fn two_generated_keys_differ() {
        let (a, ea) = key("x");
        let (b, eb) = key("x");
        assert_ne!(a, b);
        assert_ne!(ea.id, eb.id);
        assert_ne!(ea.hash, eb.hash);
    }

    #[test]
    fn wrong_secret_and_unknown_id_are_refused() {
        let (k, entry) = key("a");
        let store = store_with(vec![entry.clone()]);
        let (id, secret) = split_key(&k).unwrap();
        let mut other = secret.to_owned().into_bytes();
        other[0] = if other[0] == b'A' { b'B' } else { b'A' };
        let wrong = format!("wdn_{id}_{}", String::from_utf8(other).unwrap());
        assert_eq!(store.verify(&wrong, NOW), Err(ApiKeyError::WrongSecret));
        // Same secret, shorter: still the wrong secret, not a crash.
        let short = format!("wdn_{id}_{}", &secret[..10]);
        assert_eq!(store.verify(&short, NOW), Err(ApiKeyError::WrongSecret));
        let unknown = format!("wdn_zzzzzzzzzz_{secret}");
        assert_eq!(store.verify(&unknown, NOW), Err(ApiKeyError::Unknown));
        assert_eq!(ApiKeyError::Unknown.reason(), "unknown_key");
        assert_eq!(ApiKeyError::WrongSecret.reason(), "wrong_secret");
    }

    #[test]
    fn malformed_keys_are_refused_before_lookup() {
        let (k, entry) = key("a");
        let store = store_with(vec![entry]);
        let (id, secret) = split_key(&k).unwrap();
        let too_long = format!("wdn_{id}_{}", "A".repeat(MAX_KEY_BYTES));
        let cases = [
            "".to_owned(),
            "wdn_".to_owned(),
            "wdn_abc".to_owned(),
            format!("wdn_{id}_"),
            format!("wdn_{id}"),
            too_long,
            format!("wdx_{id}_{secret}"),
            format!("WDN_{id}_{secret}"),
            format!("{id}_{secret}"),
            format!("wdn_{id}_{}_{}", &secret[..20], &secret[20..]),
            format!("wdn_{id}_{secret}_"),
            format!("wdn_{}_{secret}", id.to_uppercase()),
            format!("wdn_abc_{secret}"),
            format!("wdn_{id}_{secret} "),
            format!("wdn_{id}_{}-", &secret[..39]),
            format!(" {k}"),
        ];
        for c in &cases {
            assert_eq!(split_key(c), None, "{c:?}");
            assert_eq!(store.verify(c, NOW), Err(ApiKeyError::Malformed), "{c:?}");
        }
        assert_eq!(ApiKeyError::Malformed.reason(), "malformed");
    }

    #[test]
    fn expired_key_is_refused_from_its_expiry_time() {
        let exp = Timestamp(NOW + 60);
        let (k, entry) = generate("a", vec![], Some(exp), BTreeMap::new(), NOW);
        let store = store_with(vec![entry]);
        let who = store.verify(&k, NOW + 59).expect("not yet expired");
        assert_eq!(who.expires_at, Some(NOW + 60));
        assert_eq!(store.verify(&k, NOW + 60), Err(ApiKeyError::Expired));
        assert_eq!(store.verify(&k, NOW + 3600), Err(ApiKeyError::Expired));
        assert_eq!(ApiKeyError::Expired.reason(), "expired");
    }

    #[test]
    fn revoked_key_is_refused_but_only_to_its_holder() {
        let (k, mut entry) = key("a");
        entry.revoked = true;
        let id = entry.id.clone();
        let store = store_with(vec![entry]);
        assert_eq!(store.verify(&k, NOW), Err(ApiKeyError::Revoked));
        let guess = format!("wdn_{id}_{}", "A".repeat(SECRET_LEN));
        assert_eq!(store.verify(&guess, NOW), Err(ApiKeyError::WrongSecret));
        assert_eq!(ApiKeyError::Revoked.reason(), "revoked");
    }

    #[test]
    fn key_file_round_trips() {
        let (_, a) = key("billing \"team\"\nline 'two'");
        let (_, mut b) = generate(
            "ops",
            vec![],
            Some(Timestamp(NOW + 86_400)),
            BTreeMap::from([
                ("odd key".to_owned(), "v=1".to_owned()),
                ("tier".to_owned(), "gold".to_owned()),
            ]),
            NOW,
        );
        b.revoked = true;
        let text = write_key_file(&[a.clone(), b.clone()]);
        assert!(text.starts_with("# Warden API keys. Managed by `warden apikey"));
        assert_eq!(parse_key_file(&text).unwrap(), vec![a, b]);
        assert_eq!(parse_key_file(&write_key_file(&[])).unwrap(), vec![]);
        assert_eq!(parse_key_file("").unwrap(), vec![]);
    }

    #[test]
    fn key_file_syntax_errors_name_the_line() {
        let err = parse_key_file("[[keys]]\nid = \"abcd\"\nhash = 5\n").unwrap_err();
        assert!(err.starts_with("line 3: "), "{err}");
        let err = parse_key_file("[[key]]\n").unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn debug_never_shows_hashes() {
        let (_, entry) = key("a");
        let hash = entry.hash.clone();
        let store = store_with(vec![entry.clone()]);
        let shown = format!("{store:?}");
        assert!(shown.contains(&entry.id), "{shown}");
        assert!(!shown.contains(&hash[7..]), "{shown}");
    }

    #[test]
    fn compile_reports_bad_file_entries_with_their_path_and_duplicate_ids() {
        let dir =
            std::env::temp_dir().join(format!("warden-apikey-test-{}-{}", std::process::id(), NOW));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys.toml");
        let (_, inline) = key("inline");
        let (_, good) = key("good");
        let (_, mut bad) = key("bad");
        bad.hash = "md5:1234".into();
        let mut dup = good.clone();
        dup.id = inline.id.clone();
        std::fs::write(&file, write_key_file(&[good, bad, dup])).unwrap();
        let cfg = ApiKeysConfig {
            header: "x-api-key".into(),
            file: Some(file.clone()),
            keys: vec![inline],
        };
        let errors = ApiKeyStore::compile(&cfg).unwrap_err();
        let name = file.display().to_string();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, "auth.api_keys.file");
        assert!(
            errors[0]
                .1
                .starts_with(&format!("{name}: [[keys]][1].hash: must be `sha256:`")),
            "{errors:?}"
        );
        assert_eq!(errors[1].0, "auth.api_keys.file");
        assert!(
            errors[1]
                .1
                .starts_with(&format!("{name}: [[keys]][2].id: duplicate key id")),
            "{errors:?}"
        );
        assert!(errors[1].1.contains("auth.api_keys.keys[0]"), "{errors:?}");

        // Fixed, the file and the inline key make one store.
        let (k, good) = key("good");
        std::fs::write(&file, write_key_file(&[good])).unwrap();
        let store = ApiKeyStore::compile(&cfg).expect("valid");
        assert_eq!(store.len(), 2);
        assert_eq!(store.verify(&k, NOW).unwrap().subject, "good");

        std::fs::write(&file, "[[keys]\n").unwrap();
        let errors = ApiKeyStore::compile(&cfg).unwrap_err();
        assert_eq!(errors[0].0, "auth.api_keys.file");
        assert!(
            errors[0].1.starts_with(&format!("{name}: line 1: ")),
            "{errors:?}"
        );

        std::fs::remove_dir_all(&dir).unwrap();
        let errors = ApiKeyStore::compile(&cfg).unwrap_err();
        assert!(
            errors[0].1.starts_with(&format!("cannot read `{name}`")),
            "{errors:?}"
        );
    }

    #[test]
    fn duplicate_ids_within_one_list_are_errors() {
        let (_, a) = key("a");
        let errors = ApiKeyStore::from_keys(vec![a.clone(), a]).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "[[keys]][1].id");
        assert!(errors[0].1.contains("also at [[keys]][0]"), "{errors:?}");
        let empty = ApiKeyStore::from_keys(vec![]).unwrap();
        assert!(empty.is_empty());
    }
}
