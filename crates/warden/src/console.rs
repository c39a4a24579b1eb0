//! The admin console's view of the authority in this process: the gateway's data plane
//! never links the authority, so the binary hands it the authority's status (the Authority
//! page) and a ring its security events go to as well as the gateway's (the Events page).

use std::sync::Arc;

use warden_authority::{AuthorityHandle, Services};
use warden_telemetry::RecentEvents;

struct AuthorityStatus(Arc<Services>);

impl warden_proxy::StatusSource for AuthorityStatus {
    fn status(&self) -> warden_proxy::StatusFuture {
        let services = self.0.clone();
        Box::pin(async move { warden_authority::status::console_status(&services).await })
    }
}

/// `builder`, with the authority's status and its events shown in the console.
pub(crate) fn with_authority(
    builder: warden_proxy::Builder,
    authority: &AuthorityHandle,
) -> warden_proxy::Builder {
    let ring = Arc::new(RecentEvents::new());
    let services = authority.services();
    services.metrics().security_events().record_to(ring.clone());
    builder
        .recent_events(ring)
        .status_source(Arc::new(AuthorityStatus(services.clone())))
}
