//! gRPC at the gateway: telling a gRPC call from other HTTP, its `grpc-timeout`, refusals
//! answered the way gRPC clients understand them (HTTP 200 with `grpc-status` and
//! `grpc-message` in a trailers-only response), the status a retry looks at, and the
//! `grpc.health.v1.Health/Check` messages of the active health check.
//!
//! Calls themselves pass through like any HTTP/2 exchange: bodies stream both ways without
//! buffering and trailers are carried as they come.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::error::Reject;

/// Whether a request (or response) is gRPC: `content-type: application/grpc`, bare or with a
/// `+proto`/`+json`/`;…` suffix.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// The `grpc-timeout` header.
pub(crate) const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// A gRPC call's service and method from its path (`/package.Service/Method`).
pub(crate) fn service_and_method(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// `grpc-timeout` (gRPC over HTTP/2: at most 8 digits and a unit, `H`, `M`, `S`, `m`, `u` or
/// `n`); `None` when malformed.
pub(crate) fn parse_timeout(v: &HeaderValue) -> Option<Duration> {
    let v = v.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit[0] {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// gRPC status codes used here.
pub(crate) mod code {
    pub(crate) const INVALID_ARGUMENT: u8 = 3;
    pub(crate) const DEADLINE_EXCEEDED: u8 = 4;
    pub(crate) const PERMISSION_DENIED: u8 = 7;
    pub(crate) const RESOURCE_EXHAUSTED: u8 = 8;
    pub(crate) const UNIMPLEMENTED: u8 = 12;
    pub(crate) const UNAVAILABLE: u8 = 14;
    pub(crate) const UNAUTHENTICATED: u8 = 16;
}

/// The gRPC status a refusal is sent as.
pub(crate) fn status_of(reject: Reject) -> u8 {
    use code::*;
    match reject {
        Reject::Auth(e) => match e.status() {
            401 => UNAUTHENTICATED,
            403 => PERMISSION_DENIED,
            400 => INVALID_ARGUMENT,
            // An authentication backend that is down (fail closed).
            _ => UNAVAILABLE,
        },
        Reject::Forbidden | Reject::CorsRejected | Reject::UpgradeNotAllowed => PERMISSION_DENIED,
        Reject::RateLimited(_) | Reject::PayloadTooLarge | Reject::TooManyWebSockets => {
            RESOURCE_EXHAUSTED
        }
        Reject::NoHealthyUpstream
        | Reject::CircuitOpen(_)
        | Reject::UpstreamBusy
        | Reject::BadGateway
        | Reject::Overloaded => UNAVAILABLE,
        Reject::GatewayTimeout | Reject::RequestTimeout => DEADLINE_EXCEEDED,
        Reject::NoRoute | Reject::MethodNotAllowed => UNIMPLEMENTED,
        Reject::BadRequest(_) | Reject::UriTooLong | Reject::WebSocketVersion => INVALID_ARGUMENT,
    }
}

/// A refusal as a gRPC client expects it: HTTP 200, trailers-only (no body), with the status
/// and the refusal's message.
pub(crate) fn refusal(reject: Reject) -> Response<Bytes> {
    let (_, _, message) = reject.parts();
    let mut res = Response::new(Bytes::new());
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(
        "grpc-status",
        HeaderValue::from(u16::from(status_of(reject))),
    );
    // Messages are ASCII without `%`, so they need no percent-encoding.
    h.insert("grpc-message", HeaderValue::from_static(message));
    if let Reject::RateLimited(secs) | Reject::CircuitOpen(secs) = reject {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

/// The `grpc-status` of a trailers-only answer (the status in the response head), if any.
pub(crate) fn head_status(headers: &HeaderMap) -> Option<u16> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The length-prefixed `HealthCheckRequest { service }` message.
pub(crate) fn health_request(service: &str) -> Bytes {
    let mut msg = Vec::with_capacity(service.len() + 3);
    if !service.is_empty() {
        // Field 1, wire type 2 (length-delimited).
        msg.push(0x0a);
        let mut len = service.len();
        while len >= 0x80 {
            msg.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        msg.push(len as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(msg.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    Bytes::from(framed)
}

/// Whether a length-prefixed `HealthCheckResponse` says `SERVING` (field 1 = 1).
pub(crate) fn health_serving(body: &[u8]) -> bool {
    let Some((&[0, a, b, c, d], msg)) = body.split_first_chunk::<5>() else {
        return false;
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    let Some(mut msg) = msg.get(..len) else {
        return false;
    };
    let mut serving = false;
    // Walk the fields; unknown ones are skipped (varints and length-delimited only).
    while let Some((&key, rest)) = msg.split_first() {
        let Some((value, rest)) = varint(rest) else {
            return false;
        };
        match key & 7 {
            0 => {
                if key >> 3 == 1 {
                    serving = value == 1;
                }
                msg = rest;
            }
            2 => {
                let Some(rest) = rest.get(usize::try_from(value).unwrap_or(usize::MAX)..) else {
                    return false;
                };
                msg = rest;
            }
            _ => return false,
        }
    }
    serving
}

fn varint(mut b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((v, b));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_is_told_by_its_content_type() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            is_grpc(&h)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(with("Application/GRPC;charset=utf-8"));
        assert!(!with("application/grpc-web"));
        assert!(!with("application/json"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn a_call_s_path_names_its_service_and_method() {
        assert_eq!(
            service_and_method("/orders.v1.Orders/GetOrder"),
            Some(("orders.v1.Orders", "GetOrder"))
        );
        for bad in ["/", "/svc", "/svc/", "//m", "/a/b/c", "svc/m"] {
            assert_eq!(service_and_method(bad), None, "{bad}");
        }
    }

    #[test]
    fn grpc_timeouts_parse_every_unit_and_refuse_the_malformed() {
        let t = |s: &str| parse_timeout(&HeaderValue::from_str(s).unwrap());
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        for bad in [
            "",
            "S",
            "10",
            "123456789S",
            "1.5S",
            "-1S",
            "10s ",
            "10x",
            "abc",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn refusals_map_to_the_grpc_statuses_clients_act_on() {
        use warden_auth::AuthError;
        let expired = AuthError::Invalid {
            api_key: false,
            reason: "expired",
        };
        assert_eq!(status_of(Reject::Auth(expired)), 16);
        let policy = AuthError::Forbidden {
            reason: "policy",
            insufficient_scope: false,
        };
        assert_eq!(status_of(Reject::Auth(policy)), 7);
        assert_eq!(status_of(Reject::Auth(AuthError::BadRequest("two"))), 3);
        assert_eq!(status_of(Reject::Auth(AuthError::Unavailable("down"))), 14);
        assert_eq!(status_of(Reject::RateLimited(3)), 8);
        assert_eq!(status_of(Reject::NoHealthyUpstream), 14);
        assert_eq!(status_of(Reject::CircuitOpen(2)), 14);
        assert_eq!(status_of(Reject::GatewayTimeout), 4);
        assert_eq!(status_of(Reject::BadRequest("x")), 3);
        let res = refusal(Reject::RateLimited(3));
        assert_eq!(res.status(), 200);
        assert!(res.body().is_empty());
        assert_eq!(res.headers()["grpc-status"], "8");
        assert_eq!(res.headers()["content-type"], "application/grpc");
        assert_eq!(
            res.headers()["grpc-message"],
            "too many requests, retry later"
        );
    }

    #[test]
    fn health_messages_round_trip() {
        assert_eq!(&health_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &health_request("a.B")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
        );
        assert!(health_serving(&[0, 0, 0, 0, 2, 0x08, 1]));
        assert!(!health_serving(&[0, 0, 0, 0, 2, 0x08, 2]), "NOT_SERVING");
        assert!(!health_serving(&[0, 0, 0, 0, 0]), "UNKNOWN (the default)");
        assert!(!health_serving(&[0, 0, 0, 0, 9, 0x08, 1]), "truncated");
        assert!(!health_serving(&[1, 0, 0, 0, 2, 0x08, 1]), "compressed");
    }
}
