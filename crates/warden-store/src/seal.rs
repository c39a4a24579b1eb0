//! Encryption at rest: the key hierarchy and the sealed-value format.
//!
//! ```text
//! KEK (32 bytes, from config: env:/file:)          never stored
//!  └─ wraps DEK n (random 32 bytes), one row per n in `keyring`
//!      └─ seals values: AES-256-GCM, random 96-bit nonce, AAD = domain || key path
//! ```
//!
//! A sealed value is `0x01 || dek id (u32 BE) || nonce (12) || ciphertext || tag (16)`.
//! The key path is the associated data, so a value copied or moved to another key does not
//! open. The DEK id lets the DEK rotate: new writes use the newest DEK, old values keep naming
//! the DEK that sealed them.
//!
//! Random nonces bound each DEK to about 2^32 seals before the collision risk matters
//! (NIST SP 800-38D §8.3); `Store::rotate_data_key` is how an operator stays far below that.
//!
//! Raw key bytes live in `Zeroizing` buffers and are wiped as soon as ring has expanded them.
//! ring's expanded AES key schedules are not wiped on drop (ring offers no hook for it); they
//! live as long as the `Store`.

use std::collections::BTreeMap;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::error::{Result, StoreError};

/// Version byte of the sealed-value format.
const FORMAT_V1: u8 = 1;
/// Version byte + DEK id + nonce.
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub(crate) const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Length of the KEK and of every DEK.
pub(crate) const KEY_LEN: usize = 32;

const VALUE_AAD_DOMAIN: &[u8] = b"warden-store/value/v1\0";
const DEK_AAD_DOMAIN: &[u8] = b"warden-store/dek/v1\0";

/// The message for a KEK that does not open the keyring; the same whatever the cause
/// (wrong key, or a keyring row that was tampered with), so it tells an attacker nothing.
pub(crate) const WRONG_KEK: &str = "the key-encryption key does not open this store's keyring";

/// The key-encryption key, expanded for AES-256-GCM.
pub(crate) struct Kek(LessSafeKey);

/// The data-encryption keys this store knows, by id, and the one new writes use.
pub(crate) struct Keyring {
    keys: BTreeMap<u32, LessSafeKey>,
    active: u32,
}

/// Why a sealed value did not open.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Sealed with a DEK this keyring does not hold (yet): another process may have rotated.
    UnknownDek(u32),
    /// Anything else: the value is not what this store sealed for this key.
    Corrupt(StoreError),
}

impl Kek {
    /// Takes the 32 raw bytes of the KEK.
    pub(crate) fn new(bytes: &[u8]) -> Result<Kek> {
        if bytes.len() != KEY_LEN {
            return Err(StoreError::Crypto(format!(
                "the key-encryption key must be {KEY_LEN} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(Kek(aes_key(bytes)))
    }

    /// Wraps a fresh random DEK for id `id`; returns the row to store.
    pub(crate) fn new_wrapped_dek(&self, rng: &SystemRandom, id: u32) -> Result<Vec<u8>> {
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill(&mut dek[..]).map_err(|_| rng_failed())?;
        let nonce = random_nonce(rng)?;
        let mut out = Vec::with_capacity(NONCE_LEN + KEY_LEN + TAG_LEN);
        out.extend_from_slice(&nonce);
        let mut body = Zeroizing::new(dek.to_vec());
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                dek_aad(id).as_aad(),
                &mut *body,
            )
            .map_err(|_| StoreError::Crypto("sealing a data-encryption key failed".into()))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn unwrap_dek(&self, id: u32, wrapped: &[u8]) -> Result<LessSafeKey> {
        if wrapped.len() != NONCE_LEN + KEY_LEN + TAG_LEN {
            return Err(StoreError::Crypto(WRONG_KEK.into()));
        }
        let (nonce, body) = wrapped.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| StoreError::Crypto(WRONG_KEK.into()))?;
        let mut body = Zeroizing::new(body.to_vec());
        let dek = self
            .0
            .open_in_place(nonce, dek_aad(id).as_aad(), &mut body)
            .map_err(|_| StoreError::Crypto(WRONG_KEK.into()))?;
        Ok(aes_key(dek))
    }
}

impl Keyring {
    /// Opens every wrapped DEK (`(id, wrapped)` rows). Fails if any does not open under `kek`:
    /// a keyring that partly opens is a wrong KEK or tampering, and both must stop the start.
    pub(crate) fn open(kek: &Kek, rows: &[(u32, Vec<u8>)]) -> Result<Keyring> {
        let mut keys = BTreeMap::new();
        for (id, wrapped) in rows {
            keys.insert(*id, kek.unwrap_dek(*id, wrapped)?);
        }
        let active = *keys
            .keys()
            .next_back()
            .ok_or_else(|| StoreError::Corrupt("the keyring is empty".into()))?;
        Ok(Keyring { keys, active })
    }

    /// The id of the DEK new writes use.
    pub(crate) fn active_id(&self) -> u32 {
        self.active
    }

    /// Seals `plaintext` for the key path `key` with the active DEK.
    pub(crate) fn seal(&self, rng: &SystemRandom, key: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let dek = &self.keys[&self.active];
        let nonce = random_nonce(rng)?;
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.push(FORMAT_V1);
        out.extend_from_slice(&self.active.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = dek
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                value_aad(key).as_aad(),
                &mut out[HEADER_LEN..],
            )
            .map_err(|_| StoreError::Crypto("sealing a value failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens a value sealed for the key path `key`.
    pub(crate) fn open_value(
        &self,
        key: &str,
        sealed: &[u8],
    ) -> std::result::Result<Vec<u8>, OpenError> {
        if sealed.len() < SEAL_OVERHEAD || sealed[0] != FORMAT_V1 {
            return Err(OpenError::Corrupt(StoreError::Corrupt(format!(
                "the value at {key:?} is not in a format this store writes"
            ))));
        }
        let id = u32::from_be_bytes([sealed[1], sealed[2], sealed[3], sealed[4]]);
        let dek = self.keys.get(&id).ok_or(OpenError::UnknownDek(id))?;
        let nonce = Nonce::try_assume_unique_for_key(&sealed[5..HEADER_LEN])
            .map_err(|_| OpenError::Corrupt(StoreError::Corrupt("bad nonce".into())))?;
        let mut body = sealed[HEADER_LEN..].to_vec();
        let len = dek
            .open_in_place(nonce, value_aad(key).as_aad(), &mut body)
            .map_err(|_| {
                OpenError::Corrupt(StoreError::Corrupt(format!(
                    "the value at {key:?} does not authenticate (altered, or moved from another key)"
                )))
            })?
            .len();
        body.truncate(len);
        Ok(body)
    }
}

/// The DEK id a sealed value names, if it is in a format this store writes.
pub(crate) fn dek_id(sealed: &[u8]) -> Option<u32> {
    match sealed {
        [FORMAT_V1, a, b, c, d, ..] if sealed.len() >= SEAL_OVERHEAD => {
            Some(u32::from_be_bytes([*a, *b, *c, *d]))
        }
        _ => None,
    }
}

fn aes_key(bytes: &[u8]) -> LessSafeKey {
    // Only fails for a wrong length, which every caller has checked.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("AES-256 keys are 32 bytes"))
}

fn random_nonce(rng: &SystemRandom) -> Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| rng_failed())?;
    Ok(nonce)
}

fn rng_failed() -> StoreError {
    StoreError::Crypto("the system random number generator failed".into())
}

struct AadBuf(Vec<u8>);

impl AadBuf {
    fn as_aad(&self) -> Aad<&[u8]> {
        Aad::from(&self.0[..])
    }
}

fn value_aad(key: &str) -> AadBuf {
    let mut aad = Vec::with_capacity(VALUE_AAD_DOMAIN.len() + key.len());
    aad.extend_from_slice(VALUE_AAD_DOMAIN);
    aad.extend_from_slice(key.as_bytes());
    AadBuf(aad)
}

fn dek_aad(id: u32) -> AadBuf {
    let mut aad = DEK_AAD_DOMAIN.to_vec();
    aad.extend_from_slice(&id.to_be_bytes());
    AadBuf(aad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(kek: &Kek, rng: &SystemRandom, ids: &[u32]) -> Keyring {
        let rows: Vec<_> = ids
            .iter()
            .map(|&id| (id, kek.new_wrapped_dek(rng, id).unwrap()))
            .collect();
        Keyring::open(kek, &rows).unwrap()
    }

    #[test]
    fn seal_open_round_trip_and_binding_to_key() {
        let rng = SystemRandom::new();
        let kek = Kek::new(&[7u8; 32]).unwrap();
        let ring = keyring(&kek, &rng, &[1]);
        let sealed = ring.seal(&rng, "a/b", b"secret").unwrap();
        assert_eq!(sealed.len(), 6 + SEAL_OVERHEAD);
        assert_eq!(ring.open_value("a/b", &sealed).unwrap(), b"secret");
        assert!(matches!(
            ring.open_value("a/c", &sealed),
            Err(OpenError::Corrupt(_))
        ));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            ring.open_value("a/b", &flipped),
            Err(OpenError::Corrupt(_))
        ));
    }

    #[test]
    fn wrong_kek_and_wrong_lengths_refused() {
        let rng = SystemRandom::new();
        let kek = Kek::new(&[7u8; 32]).unwrap();
        let row = (1, kek.new_wrapped_dek(&rng, 1).unwrap());
        let other = Kek::new(&[8u8; 32]).unwrap();
        let err = Keyring::open(&other, std::slice::from_ref(&row))
            .err()
            .unwrap();
        assert_eq!(err.to_string(), format!("crypto: {WRONG_KEK}"));
        // A wrapped DEK moved to another id does not open either.
        assert!(Keyring::open(&kek, &[(2, row.1)]).is_err());
        assert!(Kek::new(&[0u8; 16]).is_err());
    }

    #[test]
    fn newest_dek_is_active_and_old_values_still_open() {
        let rng = SystemRandom::new();
        let kek = Kek::new(&[1u8; 32]).unwrap();
        let row1 = (1, kek.new_wrapped_dek(&rng, 1).unwrap());
        let old = Keyring::open(&kek, std::slice::from_ref(&row1)).unwrap();
        let sealed = old.seal(&rng, "k", b"v").unwrap();
        let row2 = (2, kek.new_wrapped_dek(&rng, 2).unwrap());
        let both = Keyring::open(&kek, &[row1, row2]).unwrap();
        assert_eq!(both.active_id(), 2);
        assert_eq!(
            both.open_value("k", &both.seal(&rng, "k", b"w").unwrap())
                .unwrap(),
            b"w"
        );
        assert_eq!(both.open_value("k", &sealed).unwrap(), b"v");
        assert!(matches!(
            keyring(&kek, &rng, &[3]).open_value("k", &sealed),
            Err(OpenError::UnknownDek(1))
        ));
    }
}
