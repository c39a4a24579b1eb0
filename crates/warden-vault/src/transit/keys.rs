//! Named keys: their types, versions and settings, how they are stored, and the in-memory
//! cache in front of the store.
//!
//! A key is one store record, `<mount data prefix>k/<name>`, holding every version's
//! material (sealed by the store's data key like every value) and the key's settings. A
//! change (create, rotate, config, delete) is one write under the key's stripe lock, and
//! drops the key from the cache, so the next use reads it again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use zeroize::Zeroize;

use super::crypto;
use crate::api::{Result, VaultError};
use crate::util::{fill_random, rfc3339};
use crate::Vault;

/// Most versions one key keeps (each is a few hundred bytes of the key's one record).
pub(crate) const MAX_VERSIONS: u32 = 1000;
/// Longest key name, in bytes.
const MAX_NAME: usize = 128;
/// Keys kept in the in-memory cache (across mounts); a full cache is emptied.
const CACHE_ENTRIES: usize = 1024;
/// Size of a new `hmac` key, and the bounds of its `key_size` (Vault's).
const HMAC_DEFAULT_SIZE: usize = 32;
const HMAC_MAX_SIZE: usize = 512;
/// The shortest `auto_rotate_period` (Vault's: one hour).
pub(crate) const MIN_AUTO_ROTATE: u64 = 3600;

/// The key types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum KeyType {
    /// AES-256 in GCM with a 96-bit nonce.
    #[serde(rename = "aes256-gcm96")]
    Aes256Gcm96,
    /// ChaCha20-Poly1305.
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
    /// Ed25519 signatures.
    #[serde(rename = "ed25519")]
    Ed25519,
    /// ECDSA on P-256 with SHA-256.
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// A bare HMAC key.
    #[serde(rename = "hmac")]
    Hmac,
}

impl KeyType {
    pub(crate) fn parse(s: &str) -> Result<KeyType> {
        Ok(match s {
            "aes256-gcm96" => KeyType::Aes256Gcm96,
            "chacha20-poly1305" => KeyType::ChaCha20Poly1305,
            "ed25519" => KeyType::Ed25519,
            "ecdsa-p256" => KeyType::EcdsaP256,
            "hmac" => KeyType::Hmac,
            other => {
                return Err(VaultError::BadRequest(format!(
                    "unknown key type {other:?}: Warden's transit has aes256-gcm96, \
                     chacha20-poly1305, ed25519, ecdsa-p256 and hmac"
                )))
            }
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            KeyType::Aes256Gcm96 => "aes256-gcm96",
            KeyType::ChaCha20Poly1305 => "chacha20-poly1305",
            KeyType::Ed25519 => "ed25519",
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::Hmac => "hmac",
        }
    }

    pub(crate) fn encrypts(self) -> bool {
        matches!(self, KeyType::Aes256Gcm96 | KeyType::ChaCha20Poly1305)
    }

    pub(crate) fn signs(self) -> bool {
        matches!(self, KeyType::Ed25519 | KeyType::EcdsaP256)
    }

    pub(crate) fn derives(self) -> bool {
        matches!(
            self,
            KeyType::Aes256Gcm96 | KeyType::ChaCha20Poly1305 | KeyType::Ed25519
        )
    }
}

/// One version's material. Zeroized when dropped; never printed.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Version {
    /// Unix seconds it was made.
    pub(crate) created: i64,
    /// The key: 32 bytes for the AEADs and as Ed25519's seed, PKCS#8 for ECDSA, the HMAC key
    /// for `hmac` keys.
    #[serde(with = "b64")]
    pub(crate) key: Vec<u8>,
    /// The key `hmac/` uses for this version (empty for `hmac` keys: see [`Key::hmac_key`]).
    #[serde(with = "b64")]
    pub(crate) hmac_key: Vec<u8>,
}

impl Drop for Version {
    fn drop(&mut self) {
        self.key.zeroize();
        self.hmac_key.zeroize();
    }
}

impl Version {
    fn generate(kind: KeyType, hmac_size: usize, now: i64) -> Result<Version> {
        let key = match kind {
            KeyType::Aes256Gcm96 | KeyType::ChaCha20Poly1305 | KeyType::Ed25519 => random(32),
            KeyType::EcdsaP256 => crypto::ecdsa_generate()?,
            KeyType::Hmac => random(hmac_size),
        };
        // An `hmac` key is its own HMAC key (not stored twice: its versions can be 512 bytes).
        let hmac_key = if kind == KeyType::Hmac {
            Vec::new()
        } else {
            random(32)
        };
        Ok(Version {
            created: now,
            key,
            hmac_key,
        })
    }
}

fn random(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    fill_random(&mut b);
    b
}

/// A named key with all its versions.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Key {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) kind: KeyType,
    pub(crate) derived: bool,
    pub(crate) latest_version: u32,
    pub(crate) min_decryption_version: u32,
    pub(crate) min_encryption_version: u32,
    pub(crate) deletion_allowed: bool,
    /// Seconds; 0 = never.
    pub(crate) auto_rotate_period: u64,
    /// `hmac` keys: the size of each version, bytes.
    pub(crate) key_size: usize,
    pub(crate) versions: BTreeMap<u32, Version>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the material.
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("type", &self.kind)
            .field("latest_version", &self.latest_version)
            .finish_non_exhaustive()
    }
}

/// What a new key is.
pub(crate) struct NewKey {
    pub(crate) kind: KeyType,
    pub(crate) derived: bool,
    pub(crate) key_size: Option<u64>,
    pub(crate) auto_rotate_period: u64,
}

impl Key {
    pub(crate) fn create(name: &str, spec: NewKey, now: i64) -> Result<Key> {
        if spec.derived && !spec.kind.derives() {
            return Err(VaultError::BadRequest(format!(
                "key derivation is not supported for keys of type {}",
                spec.kind.name()
            )));
        }
        let key_size = match (spec.kind, spec.key_size) {
            (KeyType::Hmac, None | Some(0)) => HMAC_DEFAULT_SIZE,
            (KeyType::Hmac, Some(n)) if (32..=HMAC_MAX_SIZE as u64).contains(&n) => n as usize,
            (KeyType::Hmac, Some(_)) => {
                return Err(VaultError::BadRequest(format!(
                    "invalid key_size: an hmac key is 32 to {HMAC_MAX_SIZE} bytes"
                )))
            }
            (_, None | Some(0)) => 0,
            (k, Some(_)) => {
                return Err(VaultError::BadRequest(format!(
                    "key_size is only valid for hmac keys, not {}",
                    k.name()
                )))
            }
        };
        let mut versions = BTreeMap::new();
        versions.insert(1, Version::generate(spec.kind, key_size, now)?);
        Ok(Key {
            name: name.to_owned(),
            kind: spec.kind,
            derived: spec.derived,
            latest_version: 1,
            min_decryption_version: 1,
            min_encryption_version: 0,
            deletion_allowed: false,
            auto_rotate_period: spec.auto_rotate_period,
            key_size,
            versions,
        })
    }

    /// Adds a version and makes it the latest.
    pub(crate) fn rotate(&mut self, now: i64) -> Result<()> {
        if self.latest_version >= MAX_VERSIONS {
            return Err(VaultError::BadRequest(format!(
                "key {:?} has {MAX_VERSIONS} versions, the most Warden keeps: create a new key",
                self.name
            )));
        }
        let v = Version::generate(self.kind, self.key_size, now)?;
        self.latest_version += 1;
        self.versions.insert(self.latest_version, v);
        Ok(())
    }

    /// Whether `auto_rotate_period` says the latest version is due for replacement.
    pub(crate) fn rotation_due(&self, now: i64) -> bool {
        self.auto_rotate_period > 0
            && self
                .versions
                .get(&self.latest_version)
                .is_some_and(|v| now.saturating_sub(v.created) >= self.auto_rotate_period as i64)
    }

    /// The version to encrypt, sign or HMAC with: `requested` (0 = the latest) within
    /// `[min_encryption_version, latest_version]`.
    pub(crate) fn version_for_use(&self, requested: u64) -> Result<(u32, &Version)> {
        let n = if requested == 0 {
            u64::from(self.latest_version)
        } else {
            requested
        };
        if n > u64::from(self.latest_version) {
            return Err(VaultError::BadRequest(
                "requested version for encryption is higher than the latest key version".into(),
            ));
        }
        if n < u64::from(self.min_encryption_version) {
            return Err(VaultError::BadRequest(
                "requested version for encryption is less than the minimum encryption key \
                 version"
                    .into(),
            ));
        }
        self.version(n as u32)
    }

    /// The version a ciphertext, signature or HMAC names, if policy still allows it.
    pub(crate) fn version_for_check(&self, n: u32) -> Result<&Version> {
        if n > self.latest_version || n == 0 {
            return Err(VaultError::BadRequest(
                "invalid ciphertext: version is too new or unknown".into(),
            ));
        }
        if n < self.min_decryption_version {
            return Err(VaultError::BadRequest(
                "ciphertext or signature version is disallowed by policy (too old)".into(),
            ));
        }
        self.version(n).map(|(_, v)| v)
    }

    fn version(&self, n: u32) -> Result<(u32, &Version)> {
        self.versions
            .get(&n)
            .map(|v| (n, v))
            .ok_or_else(|| VaultError::Internal(format!("transit key version {n} missing")))
    }

    /// The HMAC key of version `v`: the key itself for `hmac` keys, a separate random key for
    /// the others (as in Vault).
    pub(crate) fn hmac_key<'v>(&self, v: &'v Version) -> &'v [u8] {
        if self.kind == KeyType::Hmac {
            &v.key
        } else {
            &v.hmac_key
        }
    }

    /// The key material of `v` for an operation: derived from `context` for derived keys
    /// (which then need one), the version's key otherwise.
    pub(crate) fn material(&self, v: &Version, context: Option<&[u8]>) -> Result<Material> {
        if self.derived {
            match context {
                Some(c) if !c.is_empty() => Ok(Material(crypto::derive(&v.key, c)?)),
                _ => Err(VaultError::BadRequest(
                    "missing 'context' for key derivation; the key was created using a \
                     derived key, which means additional, per-request information must be \
                     included in order to perform operations with the key"
                        .into(),
                )),
            }
        } else {
            Ok(Material(v.key.clone()))
        }
    }

    /// Vault's read of a key (`GET keys/:name`).
    pub(crate) fn to_json(&self) -> Value {
        let mut keys = Map::new();
        for (n, v) in self.versions.range(self.min_decryption_version..) {
            let entry = match self.kind {
                KeyType::Ed25519 | KeyType::EcdsaP256 => json!({
                    "name": if self.kind == KeyType::Ed25519 { "ed25519" } else { "P-256" },
                    "creation_time": rfc3339(v.created),
                    // A derived key's public key depends on the context: Vault leaves it out.
                    "public_key": if self.derived {
                        String::new()
                    } else {
                        crypto::public_key(self.kind, &v.key).unwrap_or_default()
                    },
                    "certificate_chain": "",
                }),
                _ => json!(v.created),
            };
            keys.insert(n.to_string(), entry);
        }
        let mut out = json!({
            "name": self.name,
            "type": self.kind.name(),
            "keys": keys,
            "latest_version": self.latest_version,
            "min_available_version": 0,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "deletion_allowed": self.deletion_allowed,
            "derived": self.derived,
            "exportable": false,
            "allow_plaintext_backup": false,
            "imported_key": false,
            "convergent_encryption": false,
            "auto_rotate_period": self.auto_rotate_period,
            "supports_encryption": self.kind.encrypts(),
            "supports_decryption": self.kind.encrypts(),
            "supports_derivation": self.kind.derives(),
            "supports_signing": self.kind.signs(),
        });
        if self.derived {
            out["kdf"] = json!("hkdf_sha256");
        }
        if self.kind == KeyType::Hmac {
            out["key_size"] = json!(self.key_size);
        }
        out
    }
}

/// Key bytes for one operation; zeroized when dropped.
pub(crate) struct Material(pub(crate) Vec<u8>);

impl Drop for Material {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Refuses names that are empty, too long, or not `[A-Za-z0-9._-]` (they become store keys
/// and path segments).
pub(crate) fn check_name(name: &str) -> Result<&str> {
    if name.is_empty() {
        return Err(VaultError::BadRequest("missing key name".into()));
    }
    if name.len() > MAX_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(VaultError::BadRequest(format!(
            "invalid key name: at most {MAX_NAME} characters of a-z A-Z 0-9 - _ ."
        )));
    }
    Ok(name)
}

/// The keys of one mount in the store, and the cache in front of them.
pub(crate) struct Keys<'a> {
    vault: &'a Vault,
    base: String,
}

impl<'a> Keys<'a> {
    pub(crate) fn new(vault: &'a Vault, data_prefix: String) -> Keys<'a> {
        Keys {
            vault,
            base: data_prefix,
        }
    }

    pub(crate) fn prefix(&self) -> String {
        format!("{}k/", self.base)
    }

    fn store_key(&self, name: &str) -> String {
        format!("{}k/{name}", self.base)
    }

    /// Serialises changes to one key (in this process).
    pub(crate) async fn lock(&self, name: &str) -> tokio::sync::MutexGuard<'a, ()> {
        self.vault
            .inner
            .kv_locks
            .lock(&self.base, &format!("transit/{name}"))
            .await
    }

    /// The key, from the cache or the store.
    pub(crate) async fn load(&self, name: &str) -> Result<Option<Arc<Key>>> {
        let sk = self.store_key(name);
        let cache = &self.vault.inner.transit_cache;
        let generation = match cache.get(&sk) {
            Ok(k) => return Ok(Some(k)),
            Err(g) => g,
        };
        let Some(bytes) = self.vault.inner.store.get(&sk).await? else {
            return Ok(None);
        };
        let key: Key = serde_json::from_slice(&bytes)
            .map_err(|e| VaultError::Internal(format!("transit key unreadable: {e}")))?;
        let key = Arc::new(key);
        cache.put(sk, Arc::clone(&key), generation);
        Ok(Some(key))
    }

    /// Writes the key (create or change) and drops it from the cache.
    pub(crate) async fn save(&self, key: &Key) -> Result<()> {
        let sk = self.store_key(&key.name);
        let bytes = serde_json::to_vec(key).map_err(|e| VaultError::Internal(e.to_string()))?;
        self.vault.inner.transit_cache.remove(&sk);
        let r = self.vault.inner.store.put(&sk, &bytes).await;
        self.vault.inner.transit_cache.remove(&sk);
        r.map_err(Into::into)
    }

    /// Deletes the key; `false` if there was none.
    pub(crate) async fn delete(&self, name: &str) -> Result<bool> {
        let sk = self.store_key(name);
        self.vault.inner.transit_cache.remove(&sk);
        let r = self.vault.inner.store.delete(&sk).await;
        self.vault.inner.transit_cache.remove(&sk);
        r.map_err(Into::into)
    }
}

/// Parsed keys by store key, bounded. Every change bumps a generation, and a key read from
/// the store is cached only if no change happened since the read began, so a read racing a
/// rotate, config or delete never leaves the old key in the cache.
#[derive(Default)]
pub(crate) struct Cache(Mutex<CacheState>);

#[derive(Default)]
struct CacheState {
    keys: HashMap<String, Arc<Key>>,
    generation: u64,
}

impl Cache {
    /// The cached key, or the generation to hand to [`Cache::put`] after a store read.
    fn get(&self, k: &str) -> std::result::Result<Arc<Key>, u64> {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.keys.get(k).cloned().ok_or(s.generation)
    }

    fn put(&self, k: String, v: Arc<Key>, generation: u64) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if s.generation != generation {
            return;
        }
        if s.keys.len() >= CACHE_ENTRIES {
            s.keys.clear();
        }
        s.keys.insert(k, v);
    }

    fn remove(&self, k: &str) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.generation += 1;
        s.keys.remove(k);
    }
}

/// Base64 (standard) for key material in the stored record.
mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: KeyType) -> Key {
        Key::create(
            "k",
            NewKey {
                kind,
                derived: false,
                key_size: None,
                auto_rotate_period: 0,
            },
            100,
        )
        .unwrap()
    }

    #[test]
    fn versions_are_bounded_by_policy() {
        let mut k = key(KeyType::Aes256Gcm96);
        k.rotate(200).unwrap();
        k.rotate(300).unwrap();
        assert_eq!(k.version_for_use(0).unwrap().0, 3);
        assert_eq!(k.version_for_use(2).unwrap().0, 2);
        assert!(k.version_for_use(4).is_err());
        k.min_encryption_version = 3;
        assert!(k.version_for_use(2).is_err());
        k.min_decryption_version = 2;
        assert!(k.version_for_check(1).is_err());
        assert!(k.version_for_check(2).is_ok());
        assert!(k.version_for_check(0).is_err());
        assert!(k.version_for_check(4).is_err());
    }

    #[test]
    fn derivation_only_where_vault_has_it() {
        for (kind, ok) in [
            (KeyType::Aes256Gcm96, true),
            (KeyType::ChaCha20Poly1305, true),
            (KeyType::Ed25519, true),
            (KeyType::EcdsaP256, false),
            (KeyType::Hmac, false),
        ] {
            let r = Key::create(
                "k",
                NewKey {
                    kind,
                    derived: true,
                    key_size: None,
                    auto_rotate_period: 0,
                },
                0,
            );
            assert_eq!(r.is_ok(), ok, "{}", kind.name());
        }
    }

    #[test]
    fn a_read_racing_a_change_is_not_cached() {
        let c = Cache::default();
        let k = Arc::new(key(KeyType::Hmac));
        // A read began (miss, generation g), then a change happened: its result is dropped.
        let g = c.get("a").unwrap_err();
        c.remove("a");
        c.put("a".into(), Arc::clone(&k), g);
        assert!(c.get("a").is_err());
        // A read with no change in between is cached.
        let g = c.get("a").unwrap_err();
        c.put("a".into(), Arc::clone(&k), g);
        assert!(c.get("a").is_ok());
        c.remove("a");
        assert!(c.get("a").is_err());
    }

    #[test]
    fn hmac_keys_are_their_own_hmac_key() {
        let k = key(KeyType::Hmac);
        let v = &k.versions[&1];
        assert_eq!(k.hmac_key(v), &v.key[..]);
        assert_eq!(v.key.len(), 32);
        let a = key(KeyType::Aes256Gcm96);
        let v = &a.versions[&1];
        assert_ne!(a.hmac_key(v), &v.key[..]);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("orders-1.key_a").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"x".repeat(129)).is_err());
    }

    #[test]
    fn stored_record_round_trips() {
        let k = key(KeyType::EcdsaP256);
        let bytes = serde_json::to_vec(&k).unwrap();
        let back: Key = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.versions[&1].key, k.versions[&1].key);
        assert_eq!(back.kind, KeyType::EcdsaP256);
    }
}
