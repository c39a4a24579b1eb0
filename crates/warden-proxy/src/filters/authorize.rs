//! Authorization: the route's rules (scopes, claims, methods, paths, hosts, addresses) checked
//! against the authenticated identity. In the response phase, a refusal for missing scopes
//! gets a `WWW-Authenticate` naming the scopes the route requires (RFC 6750 §3.1).

use std::sync::Arc;

use http::header::{self, HeaderValue};

use super::{Exchange, Flow};
use crate::error::Reject;

/// A route's auth policy, for authorization.
pub(crate) struct Authorize(pub(crate) Arc<warden_auth::RoutePolicy>);

impl Authorize {
    pub(crate) fn request(&self, ex: &mut Exchange<'_>) -> Flow {
        let (Some(id), Some(route)) = (&ex.identity, ex.route) else {
            // Authentication runs first and sets the identity; without one, deny.
            return Flow::Reject(Reject::Forbidden);
        };
        match ex.snap.auth.authorize(
            &self.0,
            id,
            &ex.method,
            &route.name,
            &ex.path,
            &ex.host,
            ex.client_ip,
            ex.grpc
                .then(|| crate::grpc::service_and_method(&ex.path))
                .flatten(),
        ) {
            Ok(()) => {
                ex.authorized = true;
                Flow::Continue
            }
            Err((e, by)) => {
                ex.denied_by = by;
                Flow::Reject(Reject::Auth(e))
            }
        }
    }

    pub(crate) fn response(&self, ex: &Exchange<'_>, head: &mut http::response::Parts) {
        let Some(Reject::Auth(e)) = ex.rejected else {
            return;
        };
        if e.code() != "insufficient_scope" {
            return;
        }
        if let Some(v) = e
            .www_authenticate(&self.0.required_scopes())
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            head.headers.insert(header::WWW_AUTHENTICATE, v);
        }
    }
}
