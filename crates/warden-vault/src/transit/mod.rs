//! The transit secrets engine: encryption as a service, on Vault's HTTP API (`sys/mounts`
//! with `type = "transit"`).
//!
//! - [`keys`]: named keys (`aes256-gcm96`, `chacha20-poly1305`, `ed25519`, `ecdsa-p256`,
//!   `hmac`) with versions, `min_decryption_version`/`min_encryption_version`,
//!   `deletion_allowed` and `auto_rotate_period`; one store record per key under the mount's
//!   data prefix (`k/<name>`), sealed by the store's data key; parsed keys are cached in
//!   memory (bounded) and dropped from the cache on every change.
//! - [`crypto`]: the operations, all with `ring`: AEAD with random 96-bit nonces,
//!   HKDF-SHA256 derivation for derived keys, HMAC, digests, Ed25519 and ECDSA P-256.
//! - [`http`]: the endpoints (`keys`, `encrypt`, `decrypt`, `rewrap`, `datakey`, `hmac`,
//!   `sign`, `verify`, `random`, `hash`), with batch input and Vault's errors.
//!
//! Ciphertexts are `vault:v<N>:<base64(nonce ‖ ciphertext ‖ tag)>`, the shape Vault uses,
//! but derived keys use HKDF rather than Vault's KDF, so ciphertexts are not portable
//! between Warden and Vault (nor are keys: they cannot be exported).

mod crypto;
mod http;
mod keys;

pub(crate) use http::handle;
pub(crate) use keys::Cache;
