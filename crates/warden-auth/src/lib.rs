//! Credential verification and authorization for the gateway.
//!
//! The proxy calls this crate; it never calls back. A compiled [`Authenticator`] holds every
//! verifier the `[auth]` section configures (JWT issuers with their key sets, API keys,
//! introspection endpoints, client-certificate identities) and the verified-token cache; a
//! compiled [`RoutePolicy`] holds one route's rules. Every refusal is an [`AuthError`] with a
//! reason for metrics and logs, and an RFC 6750 error code for the client.

pub mod apikey;
mod authn;
pub mod cache;
pub mod cert;
mod error;
pub mod events;
pub mod http_client;
pub mod identity;
pub mod internal;
pub mod introspect;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod policy;
pub mod revocation;
pub mod rules;

pub use authn::{Authenticator, CompileProblem};
pub use error::{AuthError, Challenges};
pub use identity::{AuthMethod, Identity};
pub use rules::RoutePolicy;
