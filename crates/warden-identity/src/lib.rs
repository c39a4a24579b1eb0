//! Service identity for the mesh, after the SPIFFE standards: SPIFFE IDs ([`spiffe`]), the
//! certificate authority that signs X.509-SVIDs for workloads' own keys ([`ca`], from CSRs
//! checked by [`csr`]), SPIFFE trust bundles ([`bundle`]) and checking a peer's X.509-SVID
//! against them ([`svid`]).
//!
//! This crate knows no sockets and no storage engine: the authority keeps the CA's keys
//! sealed in its store and serves issuance over HTTP; the sidecar checks peers with
//! [`svid::verify`].

pub mod bundle;
pub mod ca;
pub mod csr;
pub mod proof;
pub mod settings;
pub mod spiffe;
pub mod svid;
pub mod testing;
pub mod tls;

pub use ca::{CaError, CaKey, Signer, X509Svid};
pub use csr::{CheckedCsr, CsrError, KeyKind};
pub use settings::{CaSettings, UpstreamCa};
pub use spiffe::{IdError, SpiffeId, TrustDomain};
