//! Workload registrations and join tokens, in the store.
//!
//! - `ca/entries/<entry id>`: a registration, [`Entry`]. The entry id is derived from the
//!   SPIFFE ID (the first 16 bytes of its SHA-256, hex), so an ID is registered at most once.
//! - `ca/join/<SHA-256 of the token, hex>`: an unused join token, [`JoinRecord`]. The token
//!   itself (`wjt_` and 32 random bytes, base64url) is shown once, to whoever created it.
//!
//! Attestation is pluggable by design: a join token is one way to prove a registration; an
//! attestor for Kubernetes projected service-account tokens (as SPIRE's `k8s_psat`) would
//! verify the token with the cluster's TokenReview API or its OIDC keys, map the namespace
//! and service account to a registration by its selectors, and then call the same
//! [`crate::Ca::issue_for_entry`]: issuance does not care how the workload proved itself.

use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use warden_identity::SpiffeId;

/// Store prefix of registrations.
pub(crate) const ENTRIES: &str = "ca/entries/";
/// Store prefix of unused join tokens.
pub(crate) const JOIN: &str = "ca/join/";

/// A workload registration: the SPIFFE ID a workload may obtain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// Derived from the SPIFFE ID.
    pub id: String,
    /// The identity it grants.
    pub spiffe_id: SpiffeId,
    /// The SVID lifetime for this workload, seconds (the CA's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svid_ttl: Option<i64>,
    /// When it was registered (Unix seconds). SVIDs issued before this cannot renew it.
    pub created: i64,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

impl Entry {
    /// Whether it is revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// A stored join token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JoinRecord {
    pub(crate) entry: String,
    pub(crate) expires_at: i64,
}

/// A join token as handed to its creator (its `Debug` hides the token).
#[derive(Clone, Serialize)]
pub struct JoinToken {
    /// The token: shown once.
    pub token: String,
    /// The registration it proves.
    pub entry: String,
    /// The SPIFFE ID it obtains.
    pub spiffe_id: SpiffeId,
    /// When it stops working (Unix seconds).
    pub expires_at: i64,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("token", &"**REDACTED**")
            .field("entry", &self.entry)
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The entry id of `id`.
pub fn entry_id(id: &SpiffeId) -> String {
    hex(&digest(&SHA256, id.as_str().as_bytes()).as_ref()[..16])
}

/// The store key of a join token.
pub(crate) fn join_key(token: &str) -> String {
    format!("{JOIN}{}", hex(digest(&SHA256, token.as_bytes()).as_ref()))
}

/// A new join token's text.
pub(crate) fn new_token() -> Option<String> {
    use base64::Engine;
    let mut b = [0u8; 32];
    SystemRandom::new().fill(&mut b).ok()?;
    Some(format!(
        "wjt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    ))
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
