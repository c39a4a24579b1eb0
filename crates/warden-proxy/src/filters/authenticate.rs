//! Authentication: the route's credentials (JWT, API key, introspected token, client
//! certificate) turned into an identity by the `[auth]` section's verifiers. A refusal is a
//! [`Reject::Auth`].

use std::sync::Arc;

use super::{Exchange, Flow};
use crate::error::Reject;

/// A route's auth policy, for authentication.
pub(crate) struct Authenticate(pub(crate) Arc<warden_auth::RoutePolicy>);

impl Authenticate {
    pub(crate) async fn request(&self, ex: &mut Exchange<'_>, head: &http::request::Parts) -> Flow {
        match ex
            .snap
            .auth
            .authenticate(&self.0, &head.headers, ex.peer_cert, ex.now)
            .await
        {
            Ok(id) => {
                ex.identity = Some(id);
                Flow::Continue
            }
            Err(e) => Flow::Reject(Reject::Auth(e)),
        }
    }
}
