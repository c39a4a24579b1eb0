//! Identity propagation: the authenticated caller, told to the upstream in the headers the
//! route's policy configures (subject, claims, a signed identity token for the cluster).

use std::sync::Arc;

use super::{Exchange, Flow};
use crate::error::Reject;

/// A route's auth policy, for the identity headers.
pub(crate) struct Identity(pub(crate) Arc<warden_auth::RoutePolicy>);

impl Identity {
    pub(crate) fn request(&self, ex: &Exchange<'_>, head: &mut http::request::Parts) -> Flow {
        let (Some(id), Some(route)) = (&ex.identity, ex.route) else {
            return Flow::Continue;
        };
        match ex.snap.auth.add_identity_headers(
            &self.0,
            id,
            &route.cluster.name,
            &mut head.headers,
            ex.now,
        ) {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::Reject(Reject::Auth(e)),
        }
    }
}
