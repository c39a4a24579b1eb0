//! Refusals made below the handler: what hyper answers itself (431, 414, 400 on a head it
//! cannot parse), the header-read timeout's 408, HTTP/2 connection errors (GOAWAY) and failed
//! TLS handshakes. None of them reaches [`crate::handler`], so none would otherwise leave an
//! access-log line or a count; an operator must see every refused request and every probe.
//!
//! Each is classified into a [`Refusal`] from what the connection's end tells (hyper's and h2's
//! error kinds, the connection's timers, the framing inspector), never from an error message,
//! so the reasons are a fixed set of words and the metrics' label values stay bounded. Nothing
//! here runs for a request the handler serves: good traffic pays nothing.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use warden_telemetry::metrics::Reason;
use warden_telemetry::AccessRecord;

use crate::gateway::Gateway;

/// Why a connection or a request head was refused below the handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The head was larger than `server.max_header_bytes` or had more than `max_headers`
    /// fields: hyper answered 431.
    HeaderTooLarge,
    /// The request target was longer than hyper accepts at all: hyper answered 414.
    UriTooLong,
    /// hyper could not parse the head (method, target, version, a field): it answered 400.
    Malformed,
    /// The head did not arrive within `server.header_read_timeout`: 408 on HTTP/1 (`answered`);
    /// on HTTP/2 the client never spoke, and nothing is sent.
    HeaderReadTimeout {
        /// A 408 was sent.
        answered: bool,
    },
    /// The client closed the connection in the middle of a request head; nothing was sent.
    IncompleteHead,
    /// An HTTP/2 preface on a listener with `http2 = false`; nothing was sent.
    Http2Disabled,
    /// The gateway ended an HTTP/2 connection with GOAWAY and this error code.
    H2(h2::Reason),
    /// The TLS handshake failed (not TLS, no shared version or cipher, a bad client
    /// certificate, an alert from the client).
    TlsHandshakeFailed,
    /// The TLS handshake did not finish within `server.header_read_timeout`.
    TlsHandshakeTimeout,
}

/// Every reason word a [`Refusal`] can have, for initialising their counters at 0.
pub(crate) const REASONS: &[&str] = &[
    "header_too_large",
    "uri_too_long",
    "malformed_request",
    "header_read_timeout",
    "incomplete_request",
    "http2_disabled",
    "h2_protocol_error",
    "h2_internal_error",
    "h2_flow_control_error",
    "h2_settings_timeout",
    "h2_stream_closed",
    "h2_frame_size_error",
    "h2_refused_stream",
    "h2_cancel",
    "h2_compression_error",
    "h2_connect_error",
    "h2_enhance_your_calm",
    "h2_inadequate_security",
    "h2_http_1_1_required",
    "h2_unknown_error",
    "tls_handshake_failed",
    "tls_handshake_timeout",
];

impl Refusal {
    /// The status sent to the client, or 0 when nothing was.
    pub(crate) fn status(self) -> u16 {
        match self {
            Refusal::HeaderTooLarge => 431,
            Refusal::UriTooLong => 414,
            Refusal::Malformed => 400,
            Refusal::HeaderReadTimeout { answered: true } => 408,
            Refusal::HeaderReadTimeout { answered: false }
            | Refusal::IncompleteHead
            | Refusal::Http2Disabled
            | Refusal::H2(_)
            | Refusal::TlsHandshakeFailed
            | Refusal::TlsHandshakeTimeout => 0,
        }
    }

    /// A stable word for the access log and the `reason` label (one of [`REASONS`]).
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::HeaderTooLarge => "header_too_large",
            Refusal::UriTooLong => "uri_too_long",
            Refusal::Malformed => "malformed_request",
            Refusal::HeaderReadTimeout { .. } => "header_read_timeout",
            Refusal::IncompleteHead => "incomplete_request",
            Refusal::Http2Disabled => "http2_disabled",
            Refusal::H2(r) => h2_reason(r),
            Refusal::TlsHandshakeFailed => "tls_handshake_failed",
            Refusal::TlsHandshakeTimeout => "tls_handshake_timeout",
        }
    }

    /// What an HTTP/1 connection's error says, if it refused a request head. `mid_head`: the
    /// framing inspector had part of a head when the connection ended. Errors in the middle of
    /// a request the handler took (a body cut short, a reset) are that request's, and logged
    /// with it.
    pub(crate) fn from_h1(e: &hyper::Error, mid_head: bool) -> Option<Self> {
        if e.is_parse_version_h2() {
            Some(Refusal::Http2Disabled)
        } else if e.is_parse_too_large() {
            // hyper has no method telling its two "too large" kinds apart; its Debug form names
            // the kind (`Parse(UriTooLong)`). Only the word chosen here reaches logs and labels.
            if format!("{e:?}").contains("UriTooLong") {
                Some(Refusal::UriTooLong)
            } else {
                Some(Refusal::HeaderTooLarge)
            }
        } else if e.is_parse() {
            Some(Refusal::Malformed)
        } else if e.is_timeout() && mid_head {
            // hyper's own header timeout (30 s) when `header_read_timeout` is set longer.
            Some(Refusal::HeaderReadTimeout { answered: false })
        } else if e.is_incomplete_message() && mid_head {
            Some(Refusal::IncompleteHead)
        } else {
            None
        }
    }

    /// What an HTTP/2 connection's error says, if the gateway ended it with an error code. A
    /// GOAWAY from the client, or a connection that just dropped, is not a refusal.
    pub(crate) fn from_h2(e: &hyper::Error) -> Option<Self> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(h2e) = err.downcast_ref::<h2::Error>() {
                let reason = h2e.reason()?;
                return (!h2e.is_remote() && reason != h2::Reason::NO_ERROR)
                    .then_some(Refusal::H2(reason));
            }
            cur = err.source();
        }
        None
    }

    /// What a failed TLS handshake says: rustls refusing the bytes or the peer, or the
    /// handshake timing out. A client that simply goes away (EOF, reset) is not counted, as a
    /// plain connection closed without a byte is not.
    pub(crate) fn from_tls(e: &std::io::Error) -> Option<Self> {
        match e.kind() {
            std::io::ErrorKind::TimedOut => Some(Refusal::TlsHandshakeTimeout),
            std::io::ErrorKind::InvalidData => Some(Refusal::TlsHandshakeFailed),
            _ => None,
        }
    }
}

fn h2_reason(r: h2::Reason) -> &'static str {
    match r {
        h2::Reason::PROTOCOL_ERROR => "h2_protocol_error",
        h2::Reason::INTERNAL_ERROR => "h2_internal_error",
        h2::Reason::FLOW_CONTROL_ERROR => "h2_flow_control_error",
        h2::Reason::SETTINGS_TIMEOUT => "h2_settings_timeout",
        h2::Reason::STREAM_CLOSED => "h2_stream_closed",
        h2::Reason::FRAME_SIZE_ERROR => "h2_frame_size_error",
        h2::Reason::REFUSED_STREAM => "h2_refused_stream",
        h2::Reason::CANCEL => "h2_cancel",
        h2::Reason::COMPRESSION_ERROR => "h2_compression_error",
        h2::Reason::CONNECT_ERROR => "h2_connect_error",
        h2::Reason::ENHANCE_YOUR_CALM => "h2_enhance_your_calm",
        h2::Reason::INADEQUATE_SECURITY => "h2_inadequate_security",
        h2::Reason::HTTP_1_1_REQUIRED => "h2_http_1_1_required",
        _ => "h2_unknown_error",
    }
}

/// Where a refusal happened: the connection as far as it is known.
pub(crate) struct Where<'a> {
    pub(crate) listener: &'a str,
    pub(crate) peer: SocketAddr,
    /// `HTTP/1.1`, `HTTP/2`, or `TLS` for a handshake.
    pub(crate) protocol: &'static str,
    /// When the connection was accepted.
    pub(crate) accepted: Instant,
}

/// Counts a refusal (`warden_rejected_requests_total{reason}`, and
/// `warden_requests_total{route="-",status}` when a status was sent) and writes its
/// access-log line: time, listener, client, protocol, status (0: nothing sent), reason; no
/// request id, method or path (the head was not read), route `-`.
pub(crate) fn record(gw: &Gateway, at: &Where<'_>, refusal: Refusal) {
    let (status, reason) = (refusal.status(), refusal.reason());
    let metrics = gw.metrics();
    metrics.rejected.get_or_create(&Reason(reason)).inc();
    if status != 0 {
        metrics.count_request(&crate::handler::DASH, status);
    }
    tracing::debug!(listener = at.listener, client = %at.peer, status, reason, "refused below the handler");
    let log = gw.access_log();
    if !log.enabled() {
        return;
    }
    let time = warden_telemetry::format_time(SystemTime::now());
    let client = at.peer.to_string();
    log.write(&AccessRecord {
        time: &time,
        request_id: "-",
        listener: at.listener,
        route: "-",
        method: "-",
        path: "-",
        protocol: at.protocol,
        status,
        duration_ms: at.accepted.elapsed().as_secs_f64() * 1000.0,
        upstream: "-",
        bytes_in: 0,
        bytes_out: 0,
        client: &client,
        reason: Some(reason),
        auth: None,
        subject: None,
        closed: None,
        trace: None,
    });
}
