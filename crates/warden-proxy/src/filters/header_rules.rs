//! Header rules, on the request as it will be forwarded: hop-by-hop headers (and those that
//! `Connection` names) removed, identity headers a client tried to send removed (only the
//! gateway sets them), and underscored header names dropped when
//! `forwarding.headers_with_underscores = "drop"`. A gRPC call keeps `te: trailers`, which
//! gRPC servers require (the gateway carries trailers back, so it is true of this hop too).

use warden_config::UnderscoreHeaders;

use super::{Exchange, Flow};
use crate::headers;

/// What to do with underscored header names.
pub(crate) struct HeaderRules(pub(crate) UnderscoreHeaders);

impl HeaderRules {
    pub(crate) fn request(&self, ex: &Exchange<'_>, head: &mut http::request::Parts) -> Flow {
        let te_trailers = head
            .headers
            .get_all(http::header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            && crate::grpc::is_grpc(&head.headers);
        headers::strip_hop_by_hop(&mut head.headers);
        if te_trailers {
            head.headers
                .insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        }
        ex.snap.auth.strip_identity_headers(&mut head.headers);
        if self.0 == UnderscoreHeaders::Drop {
            headers::drop_underscored(&mut head.headers);
        }
        Flow::Continue
    }
}
