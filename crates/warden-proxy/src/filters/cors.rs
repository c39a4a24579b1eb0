//! CORS: answers a route's preflights (before authentication: browsers send no credentials on
//! them, and the answer reveals only the route's CORS policy) and, in the response phase, sets
//! the CORS headers of forwarded responses from the route's policy alone. The policy itself is
//! in `crate::cors`.

use bytes::Bytes;
use http::header;

use super::{Exchange, Flow};
use crate::cors::{Cors, Preflight};
use crate::error::Reject;

/// A route's CORS policy.
pub(crate) struct CorsFilter(pub(crate) Cors);

impl CorsFilter {
    pub(crate) fn request(&self, ex: &mut Exchange<'_>, head: &http::request::Parts) -> Flow {
        if ex.preflight {
            return match self.0.preflight(&head.headers) {
                Preflight::Allowed(res) => Flow::Respond(res.map(|()| Bytes::new())),
                Preflight::Denied => Flow::Reject(Reject::CorsRejected),
            };
        }
        ex.origin = head.headers.get(header::ORIGIN).cloned();
        Flow::Continue
    }

    /// Only forwarded responses: the gateway's own answers carry no CORS headers.
    pub(crate) fn response(&self, ex: &Exchange<'_>, head: &mut http::response::Parts) {
        if ex.from_upstream {
            self.0.apply(ex.origin.as_ref(), &mut head.headers);
        }
    }
}
