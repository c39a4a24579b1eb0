//! Body limits: a declared `Content-Length` past `server.max_body_bytes` is refused with `413`
//! before anything is forwarded. A body without a length (chunked, HTTP/2) is cut at the same
//! limit while it streams (`crate::body::RequestBody`).

use http::header;

use super::Flow;
use crate::error::Reject;

/// The largest body accepted, in bytes.
pub(crate) struct BodyLimit(pub(crate) u64);

impl BodyLimit {
    pub(crate) fn request(&self, head: &http::request::Parts) -> Flow {
        let declared = head
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(cl) if cl > self.0 => Flow::Reject(Reject::PayloadTooLarge),
            _ => Flow::Continue,
        }
    }
}
