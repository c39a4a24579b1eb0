//! The authority's certificate authority for service identity (SPIFFE).
//!
//! - **Keys** ([`keys`]): a self-made P-256 root and an online intermediate that signs, both
//!   sealed in the store under `ca/roots/` and `ca/intermediates/`, rotated by [`Ca::tick`]:
//!   an intermediate at half its life (invisible to peers: SVID chains carry it), a root at
//!   half its life, published in the bundle `root_publish_ahead` before it signs and kept
//!   there until it expires, so a rotation never breaks a peer holding the old bundle.
//! - **Registration** ([`registry`]): which SPIFFE ID a workload may obtain. A workload
//!   proves itself first with a one-time join token (random, stored only as its SHA-256,
//!   short-lived, consumed by a conditional delete so two uses cannot both succeed), then with
//!   its current SVID to renew. Revoking a workload stops both.
//! - **Issuance** ([`Ca::issue_with_join_token`], [`Ca::renew`]): the workload's CSR is
//!   checked by `warden_identity::csr` and its key certified; the CA never makes or sees a
//!   workload key. Every issuance, renewal and refusal is an audit event in the store's chain.
//! - **Federation** ([`federation`]): the bundles of other trust domains, fetched by the
//!   authority from their bundle endpoints, checked, kept in the store and served to
//!   workloads, so their sidecars accept those domains' workloads.
//! - **HTTP** ([`http`]): the bundle, issuance and renewal, and admin handlers the authority
//!   mounts behind its admin token.
//!
//! No CRL and no OCSP: an SVID lives an hour by default, so a revoked workload's identity
//! lapses within that hour, and revocation stops renewal at once (see `docs/identity.md`).

pub mod error;
pub mod federation;
pub mod http;
pub mod keys;
pub mod registry;
mod service;

pub use error::CaServiceError;
pub use registry::{Entry, JoinToken};
pub use service::{Ca, Issued, RENEW_CONTEXT};
pub use warden_identity::CaSettings;
