//! Security headers: the route's (or the global) `[security_headers]` added to every response
//! that does not already carry them; HSTS only over TLS. First in the chain, so its response
//! phase runs last and sees what every other filter set.

use std::sync::Arc;

use super::Exchange;
use crate::headers::SecurityHeaders;

/// The headers to add.
pub(crate) struct SecurityHeadersFilter(pub(crate) Arc<SecurityHeaders>);

impl SecurityHeadersFilter {
    pub(crate) fn response(&self, ex: &Exchange<'_>, head: &mut http::response::Parts) {
        self.0.apply(&mut head.headers, ex.tls);
    }
}
