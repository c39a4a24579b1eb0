//! Normalisation, before routing: refuses what cannot be routed safely (CONNECT, a missing,
//! duplicate or malformed Host, underscored header names when configured to, transfer codings
//! other than `chunked` on HTTP/1, a request target past `max_uri_bytes`, a path that does not
//! normalise) and yields the host and normalised path that routing sees.
//!
//! It runs before a route is known, so it is the snapshot's entry stage rather than part of a
//! route's chain; its refusals get the fallback chain's response phase.

use http::header::{self, HeaderValue};
use http::{Method, Version};
use warden_config::UnderscoreHeaders;

use crate::error::Reject;
use crate::normalize::normalize_path;
use crate::snapshot::Snapshot;

/// What routing needs from the request.
pub(crate) struct Normalized {
    /// Lower-cased, without port or trailing dot.
    pub(crate) host: String,
    /// As sent, to forward.
    pub(crate) host_value: HeaderValue,
    pub(crate) path: String,
}

/// The request phase of normalisation.
pub(crate) fn request(
    head: &http::request::Parts,
    http1: bool,
    snap: &Snapshot,
) -> Result<Normalized, Reject> {
    let limits = &snap.limits;
    if head.method == Method::CONNECT && !crate::websocket::is_extended_connect(head) {
        return Err(Reject::BadRequest("CONNECT is not supported"));
    }
    let (host, host_value) = request_host(head)?;
    if snap.underscore_headers == UnderscoreHeaders::Reject
        && head.headers.keys().any(|k| k.as_str().contains('_'))
    {
        return Err(Reject::BadRequest("header name with underscore"));
    }
    if http1 {
        let mut te = head.headers.get_all(header::TRANSFER_ENCODING).iter();
        if let Some(v) = te.next() {
            let chunked_only = v.as_bytes().eq_ignore_ascii_case(b"chunked");
            if !chunked_only || te.next().is_some() {
                return Err(Reject::BadRequest("unsupported transfer coding"));
            }
        }
    }
    let pq_len = head.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if pq_len > limits.max_uri_bytes {
        return Err(Reject::UriTooLong);
    }
    let path = normalize_path(head.uri.path(), limits.allow_encoded_slash)
        .map_err(|_| Reject::BadRequest("invalid path"))?;
    Ok(Normalized {
        host,
        host_value,
        path,
    })
}

fn request_host(head: &http::request::Parts) -> Result<(String, HeaderValue), Reject> {
    let mut hosts = head.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(Reject::BadRequest("duplicate Host header"));
    }
    let raw = match (head.uri.authority(), first) {
        (Some(a), _) => {
            HeaderValue::from_str(a.as_str()).map_err(|_| Reject::BadRequest("invalid host"))?
        }
        (None, Some(h)) => h.clone(),
        (None, None) if head.version == Version::HTTP_10 => HeaderValue::from_static(""),
        (None, None) => return Err(Reject::BadRequest("missing Host header")),
    };
    if raw.is_empty() {
        return Ok((String::new(), raw));
    }
    let authority: http::uri::Authority = raw
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Reject::BadRequest("invalid Host header"))?;
    if authority.as_str().contains('@') {
        return Err(Reject::BadRequest("invalid Host header"));
    }
    Ok((
        authority.host().trim_end_matches('.').to_ascii_lowercase(),
        raw,
    ))
}
