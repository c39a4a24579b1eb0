//! Events the auth layer reports about the sources it fetches from (an issuer's JWKS, the
//! revocation feed), for the embedder's security-event stream: one when a source starts
//! failing, one when it recovers, never one per retry.

use std::sync::Arc;

/// A source failing or recovering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceEvent<'a> {
    /// `jwks.fetch_failed`, `jwks.fetch_recovered`, `revocation_feed.failed`,
    /// `revocation_feed.recovered`.
    pub event: &'static str,
    /// A stable code (`unreachable`, `bad_status`, `not_jwks`, `no_usable_key`, `recovered`).
    pub reason: &'static str,
    /// Which source: the issuer's name, or the feed's URL.
    pub source: &'a str,
}

/// Called for each [`SourceEvent`]; must not block.
pub type EventHook = Arc<dyn Fn(SourceEvent<'_>) + Send + Sync>;

/// A hook that drops every event.
pub fn ignore() -> EventHook {
    Arc::new(|_| {})
}
