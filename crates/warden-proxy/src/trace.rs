//! A request's place in its trace: the W3C trace context it came with, the gateway's server
//! span id (in the access log and the security events), the client span id sent upstream in
//! `traceparent`, and, when the trace is sampled, what the spans need: the filters' phases
//! and the upstream call, turned into OpenTelemetry spans once the response is done.

use std::borrow::Cow;
use std::time::SystemTime;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use warden_otel::{KeyValue, Parent, Span, SpanKind, TraceIds, Tracer};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The request's trace context.
pub(crate) struct RequestTrace {
    /// The trace, and the gateway's server span.
    pub(crate) ids: TraceIds,
    parent: Option<Parent>,
    /// The `sampled` flag sent upstream.
    flag: bool,
    /// Present when this request's spans are recorded.
    pub(crate) recording: Option<Box<Recording>>,
}

/// What a sampled request's spans are made of, besides what the access log has.
#[derive(Default)]
pub(crate) struct Recording {
    pub(crate) phases: Vec<Phase>,
    pub(crate) upstream: Option<UpstreamCall>,
    pub(crate) path: String,
    pub(crate) host: String,
    /// The caller's subject, once authenticated.
    pub(crate) subject: Option<String>,
}

/// One filter's work: `authenticate`, `authorize`, `rate_limit`.
pub(crate) struct Phase {
    pub(crate) name: &'static str,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    /// The refusal's reason code, when the filter refused.
    pub(crate) refused: Option<&'static str>,
}

/// The call to the upstream (a client span).
pub(crate) struct UpstreamCall {
    pub(crate) span_id: u64,
    pub(crate) start: SystemTime,
    /// When the response head arrived, or forwarding failed.
    pub(crate) end: SystemTime,
    /// Why forwarding failed (`upstream_timeout`, `upstream_unavailable`, …).
    pub(crate) failed: Option<&'static str>,
    /// The upstream's status.
    pub(crate) status: Option<u16>,
}

impl RequestTrace {
    /// Continues the caller's trace when its `traceparent` is valid, or starts one; decides
    /// whether it is recorded here.
    pub(crate) fn begin(headers: &HeaderMap, tracer: &Tracer) -> Self {
        let parent = headers
            .get(&TRACEPARENT)
            .and_then(|v| warden_otel::parse_traceparent(v.as_bytes()));
        let trace_id = parent.map_or_else(warden_otel::new_trace_id, |p| p.trace_id);
        let recorded = tracer.sample(parent.as_ref(), trace_id);
        RequestTrace {
            ids: TraceIds {
                trace_id,
                span_id: warden_otel::new_span_id(),
            },
            parent,
            // Off, Warden passes its caller's decision on.
            flag: recorded || (!tracer.enabled() && parent.is_some_and(|p| p.sampled)),
            recording: recorded.then(Default::default),
        }
    }

    /// Sets `traceparent` for the upstream: the same trace, with the upstream call's span
    /// (recorded) or the gateway's span as the parent. An invalid `traceparent` from the
    /// client is replaced, and its `tracestate` dropped.
    pub(crate) fn propagate(&mut self, h: &mut HeaderMap) {
        if self.parent.is_none() {
            h.remove(TRACESTATE);
        }
        let span_id = match self.recording.as_mut() {
            Some(r) => {
                let id = warden_otel::new_span_id();
                let now = SystemTime::now();
                r.upstream = Some(UpstreamCall {
                    span_id: id,
                    start: now,
                    end: now,
                    failed: None,
                    status: None,
                });
                id
            }
            None => self.ids.span_id,
        };
        let v = warden_otel::traceparent(self.ids.trace_id, span_id, self.flag);
        if let Ok(v) = HeaderValue::from_bytes(&v) {
            h.insert(TRACEPARENT, v);
        }
    }

    /// Ends the upstream call's span.
    pub(crate) fn upstream_done(&mut self, status: Option<u16>, failed: Option<&'static str>) {
        if let Some(call) = self.recording.as_mut().and_then(|r| r.upstream.as_mut()) {
            call.end = SystemTime::now();
            call.status = status;
            call.failed = failed;
        }
    }

    /// The parent the server span names: the caller's span, remote.
    pub(crate) fn parent_span(&self) -> Option<(u64, bool)> {
        self.parent.map(|p| (p.span_id, true))
    }
}

/// What the server span says about the exchange.
pub(crate) struct Exchanged<'a> {
    pub(crate) method: &'a str,
    pub(crate) route: &'a str,
    pub(crate) status: u16,
    pub(crate) tls: bool,
    pub(crate) protocol: &'static str,
    pub(crate) client: std::net::IpAddr,
    pub(crate) request_id: &'a str,
    pub(crate) refused: Option<&'static str>,
    pub(crate) auth: Option<&'static str>,
    pub(crate) subject: Option<&'a str>,
    pub(crate) upstream: Option<&'a str>,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
}

/// Records a sampled request's spans: the server span, a child per filter phase and the
/// upstream call's client span.
pub(crate) fn record(
    tracer: &Tracer,
    ids: TraceIds,
    parent: Option<(u64, bool)>,
    rec: &Recording,
    x: &Exchanged<'_>,
) {
    let server = ids.span_id;
    for p in &rec.phases {
        tracer.record(Span {
            ids: TraceIds {
                trace_id: ids.trace_id,
                span_id: warden_otel::new_span_id(),
            },
            parent: Some((server, false)),
            kind: SpanKind::Internal,
            name: Cow::Borrowed(p.name),
            start: p.start,
            end: p.end,
            attributes: vec![KeyValue::new(
                "warden.decision",
                p.refused.unwrap_or("allowed"),
            )],
            error: None,
        });
    }
    if let Some(call) = &rec.upstream {
        let mut attributes = vec![KeyValue::new("http.request.method", x.method.to_owned())];
        if let Some(addr) = x.upstream {
            attributes.push(KeyValue::new("server.address", addr.to_owned()));
        }
        if let Some(s) = call.status {
            attributes.push(KeyValue::new("http.response.status_code", i64::from(s)));
        }
        if let Some(f) = call.failed {
            attributes.push(KeyValue::new("error.type", f));
        }
        tracer.record(Span {
            ids: TraceIds {
                trace_id: ids.trace_id,
                span_id: call.span_id,
            },
            parent: Some((server, false)),
            kind: SpanKind::Client,
            name: Cow::Owned(x.method.to_owned()),
            start: call.start,
            end: call.end,
            attributes,
            error: call.failed.map(Cow::Borrowed),
        });
    }
    let mut attributes = vec![
        KeyValue::new("http.request.method", x.method.to_owned()),
        KeyValue::new("url.path", rec.path.clone()),
        KeyValue::new("url.scheme", if x.tls { "https" } else { "http" }),
        KeyValue::new("network.protocol.version", x.protocol),
        KeyValue::new("client.address", x.client.to_string()),
        KeyValue::new("http.response.status_code", i64::from(x.status)),
        KeyValue::new("warden.route", x.route.to_owned()),
        KeyValue::new("warden.request_id", x.request_id.to_owned()),
        KeyValue::new("warden.decision", x.refused.unwrap_or("allowed")),
    ];
    if !rec.host.is_empty() {
        attributes.push(KeyValue::new("server.address", rec.host.clone()));
    }
    if let Some(a) = x.auth {
        attributes.push(KeyValue::new("warden.auth.method", a));
    }
    if let Some(s) = x.subject.filter(|_| tracer.record_subject()) {
        attributes.push(KeyValue::new("enduser.id", s.to_owned()));
    }
    let error = (x.status >= 500).then(|| Cow::Borrowed(x.refused.unwrap_or("server_error")));
    if let Some(e) = &error {
        attributes.push(KeyValue::new("error.type", e.clone()));
    }
    let name = if x.route == "-" {
        Cow::Owned(x.method.to_owned())
    } else {
        Cow::Owned(format!("{} {}", x.method, x.route))
    };
    tracer.record(Span {
        ids,
        parent,
        kind: SpanKind::Server,
        name,
        start: x.start,
        end: x.end,
        attributes,
        error,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn traceparent_is_continued_when_valid_and_replaced_when_not() {
        let mut h = map(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "a=b"),
        ]);
        let mut t = RequestTrace::begin(&h, &Tracer::default());
        assert_eq!(t.ids.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        t.propagate(&mut h);
        let tp = h.get("traceparent").unwrap().to_str().unwrap();
        // The same trace and the caller's sampled flag; the gateway's span as the parent.
        assert_eq!(
            tp,
            format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
                t.ids.span_hex()
            )
        );
        assert_ne!(t.ids.span_hex(), "00f067aa0ba902b7");
        assert!(h.contains_key("tracestate"));

        let mut h = map(&[
            (
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            ("tracestate", "a=b"),
        ]);
        let mut t = RequestTrace::begin(&h, &Tracer::default());
        t.propagate(&mut h);
        assert_ne!(t.ids.trace_id, 0);
        assert!(h
            .get("traceparent")
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("-00"));
        assert!(!h.contains_key("tracestate"));
    }
}
