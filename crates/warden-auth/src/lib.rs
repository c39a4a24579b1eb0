//! Credential verification and authorization for the gateway.
//!
//! The proxy calls this crate; it never calls back. A compiled [`Authenticator`] holds every
//! verifier the `[auth]` section configures (JWT issuers with their key sets, API keys,
//! introspection endpoints, client-certificate identities) and the verified-token cache; a
//! compiled [`RoutePolicy`] holds one route's rules. Every refusal is an [`AuthError`] with a
//! reason for metrics and logs, and an RFC 6750 error code for the client.

pub mod apikey;
pub mod identity;
pub mod policy;

pub use identity::{AuthMethod, Identity};
