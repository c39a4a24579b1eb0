//! The vault's seal: the store's key-encryption key is the vault's root key.
//!
//! Two ways to unseal (`authority.seal.mode`):
//! - `auto`: the key comes from config (`env:`/`file:`) at start; the store is opened and
//!   initialized with it and starts unsealed. After `sys/seal` it stays sealed until the
//!   process restarts: `sys/unseal` does not re-read the key (that would let any caller undo
//!   an operator's seal).
//! - `shares`: `sys/init` makes a random 32-byte key, initializes the store under it and
//!   splits it into `secret_shares` shares, `secret_threshold` of which unseal ([`crate::shamir`]).
//!   The shares are returned once and never stored. After each start the store is sealed
//!   until `sys/unseal` has been given enough shares; the combined key is checked against the
//!   store's keyring, and a key that does not open it resets the progress and leaves the
//!   store sealed.
//!
//! Shares given so far are held in memory (zeroized when dropped), with a random nonce that
//! changes at each new attempt, as Vault reports it. Nothing here knows HTTP: the handlers
//! turn [`SealError`] into Vault's errors.

use std::sync::Mutex;

use rand::TryRngCore as _;
use serde::{Deserialize, Serialize};
use warden_config::SealMode;
use warden_store::{Store, StoreError};
use zeroize::Zeroizing;

use crate::shamir;

/// Length of the root key (the store's KEK).
pub const ROOT_KEY_LEN: usize = 32;
/// `sys/init` defaults, as Vault's CLI.
pub const DEFAULT_SHARES: u8 = 5;
/// See [`DEFAULT_SHARES`].
pub const DEFAULT_THRESHOLD: u8 = 3;

/// What the store records about the seal at initialization (plain JSON, not secret).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct SealRecord {
    /// `auto` or `shamir`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Shares made at init (0 for auto).
    #[serde(default)]
    pub secret_shares: u8,
    /// Shares needed to unseal (0 for auto).
    #[serde(default)]
    pub secret_threshold: u8,
}

/// What `sys/seal-status` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealStatus {
    /// `shamir` or `auto`.
    pub kind: &'static str,
    /// Whether the store was initialized.
    pub initialized: bool,
    /// Whether the store is sealed.
    pub sealed: bool,
    /// Shares needed.
    pub threshold: u8,
    /// Shares made.
    pub shares: u8,
    /// Shares given so far.
    pub progress: u8,
    /// Identifies the current unseal attempt (empty when none).
    pub nonce: String,
}

/// Why a seal operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// `sys/init` on an initialized vault.
    #[error("Vault is already initialized")]
    AlreadyInitialized,
    /// `sys/unseal` on a vault that was never initialized.
    #[error("Vault is not initialized")]
    NotInitialized,
    /// A request that cannot be served as given (bad parameters, malformed share, auto seal).
    #[error("{0}")]
    Invalid(String),
    /// The shares combine to a key that does not open the store.
    #[error(
        "the key shares do not unseal this vault (a wrong share, or shares of another \
         initialization); the unseal progress was reset"
    )]
    WrongShares,
    /// The store failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

#[derive(Default)]
struct Pending {
    shares: Vec<Zeroizing<Vec<u8>>>,
    nonce: String,
}

/// The unseal process over one store.
pub struct Unsealer {
    store: Store,
    mode: SealMode,
    pending: Mutex<Pending>,
}

impl std::fmt::Debug for Unsealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsealer")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Unsealer {
    /// The unseal process for `store` (opened sealed or not) in `mode`.
    pub fn new(store: Store, mode: SealMode) -> Unsealer {
        Unsealer {
            store,
            mode,
            pending: Mutex::new(Pending::default()),
        }
    }

    /// The seal mode.
    pub fn mode(&self) -> SealMode {
        self.mode
    }

    /// What the store recorded at init (`None` before init, or for auto stores made before
    /// it was recorded).
    async fn record(&self) -> Result<Option<SealRecord>, SealError> {
        match self.store.seal_config().await? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                SealError::Store(StoreError::Corrupt(format!(
                    "the seal configuration does not decode: {e}"
                )))
            }),
        }
    }

    /// The seal's state.
    pub async fn status(&self) -> Result<SealStatus, SealError> {
        let initialized = self.store.is_initialized().await?;
        let record = if initialized {
            self.record().await?
        } else {
            None
        };
        let (kind, threshold, shares) = match (&record, self.mode) {
            (Some(r), _) if r.kind == "shamir" => ("shamir", r.secret_threshold, r.secret_shares),
            (_, SealMode::Shares) => ("shamir", 0, 0),
            _ => ("auto", 1, 1),
        };
        let sealed = self.store.is_sealed();
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let progress = if sealed {
            u8::try_from(pending.shares.len()).unwrap_or(u8::MAX)
        } else {
            0
        };
        Ok(SealStatus {
            kind,
            initialized,
            sealed,
            threshold,
            shares,
            progress,
            nonce: if sealed && progress > 0 {
                pending.nonce.clone()
            } else {
                String::new()
            },
        })
    }

    /// `sys/init`: makes the root key, initializes the store under it (leaving it unsealed)
    /// and returns the key shares (Vault's format: the share bytes, then the `x` byte). Only
    /// with `shares` mode; once.
    pub async fn init(
        &self,
        shares: u8,
        threshold: u8,
    ) -> Result<Vec<Zeroizing<Vec<u8>>>, SealError> {
        if self.mode != SealMode::Shares {
            return Err(if self.store.is_initialized().await? {
                SealError::AlreadyInitialized
            } else {
                SealError::Invalid(
                    "this authority unseals automatically (authority.seal.mode = \"auto\")".into(),
                )
            });
        }
        if self.store.is_initialized().await? {
            return Err(SealError::AlreadyInitialized);
        }
        let mut key = Zeroizing::new([0u8; ROOT_KEY_LEN]);
        rand::rngs::OsRng
            .try_fill_bytes(&mut key[..])
            .map_err(|_| SealError::Invalid("the system random number generator failed".into()))?;
        // The coefficients come from the OS generator too; it failing mid-split is not
        // something to continue past (`unwrap_err` panics).
        let parts = shamir::split(
            &key[..],
            shares,
            threshold,
            &mut rand::rngs::OsRng.unwrap_err(),
        )
        .map_err(|e| SealError::Invalid(e.to_string()))?;
        let record = SealRecord {
            kind: "shamir".into(),
            secret_shares: shares,
            secret_threshold: threshold,
        };
        let config = serde_json::to_string(&record)
            .map_err(|e| SealError::Invalid(format!("seal configuration: {e}")))?;
        match self.store.initialize(&key[..], &config).await {
            Ok(()) => {}
            Err(StoreError::AlreadyInitialized) => return Err(SealError::AlreadyInitialized),
            Err(e) => return Err(e.into()),
        }
        self.reset();
        Ok(parts)
    }

    /// `sys/unseal` with one share. Returns whether the store is unsealed now. A share of the
    /// wrong length, or one already given in this attempt, is refused without changing the
    /// progress; enough shares that do not open the store reset it.
    pub async fn submit(&self, share: &[u8]) -> Result<bool, SealError> {
        if !self.store.is_sealed() {
            return Ok(true);
        }
        if self.mode != SealMode::Shares {
            return Err(SealError::Invalid(
                "this authority unseals automatically (authority.seal.mode = \"auto\"); \
                 once sealed it stays sealed until it is restarted"
                    .into(),
            ));
        }
        let record = match self.record().await? {
            Some(r) if r.kind == "shamir" => r,
            Some(_) | None if self.store.is_initialized().await? => {
                return Err(SealError::Invalid(
                    "this store was initialized with an auto seal; it cannot be unsealed with \
                     key shares"
                        .into(),
                ))
            }
            _ => return Err(SealError::NotInitialized),
        };
        if share.len() != ROOT_KEY_LEN + 1 {
            return Err(SealError::Invalid(format!(
                "an unseal key share is {} bytes, not {}",
                ROOT_KEY_LEN + 1,
                share.len()
            )));
        }
        let key = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if p.shares.is_empty() {
                p.nonce = new_nonce();
            }
            if p.shares.iter().any(|s| warden_crypto::ct_eq(&s[..], share)) {
                return Err(SealError::Invalid(
                    "this key share was already given in this unseal attempt".into(),
                ));
            }
            p.shares.push(Zeroizing::new(share.to_vec()));
            if p.shares.len() < usize::from(record.secret_threshold) {
                return Ok(false);
            }
            let parts: Vec<&[u8]> = p.shares.iter().map(|s| &s[..]).collect();
            let key = shamir::combine(&parts);
            *p = Pending::default();
            key.map_err(|e| SealError::Invalid(e.to_string()))?
        };
        match self.store.unseal(&key[..]).await {
            Ok(()) => Ok(true),
            Err(StoreError::Crypto(_)) => Err(SealError::WrongShares),
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets the shares given so far.
    pub fn reset(&self) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Pending::default();
    }
}

/// A nonce for an unseal attempt (random, hex; it names the attempt, it protects nothing).
fn new_nonce() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.try_fill_bytes(&mut b).ok();
    crate::seal::hex(&b)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Decodes an unseal key as Vault accepts it: hex, else standard base64.
pub fn decode_share(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    use base64::Engine as _;
    let t = text.trim();
    if t.len().is_multiple_of(2) && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        let out: Option<Vec<u8>> = (0..t.len() / 2)
            .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok())
            .collect();
        return out.map(Zeroizing::new);
    }
    base64::engine::general_purpose::STANDARD
        .decode(t)
        .ok()
        .map(Zeroizing::new)
}
