//! OpenTelemetry for Warden: W3C trace context ([`parse_traceparent`], [`traceparent`]), the
//! parent-based ratio sampler, and the export of spans and security events (as log records)
//! over OTLP, HTTP/protobuf or gRPC, with the `opentelemetry` crates' data model and
//! exporters.
//!
//! The request paths never wait on the collector: a finished span is put on a bounded queue
//! (`try_send`), and a thread of its own, with a small runtime of its own, sends batches; a
//! full queue drops the span and counts it (`warden_tracing_dropped_total{reason="queue_full"}`),
//! a failed or timed-out export counts its batch (`reason="export_failed"`). Memory is bounded
//! by `max_queue_size` spans and as many log records.
//!
//! Spans are recorded when their operation has ended, with the times it started and ended:
//! the gateway knows its spans' ids up front (they go upstream in `traceparent` and into the
//! access log) and builds [`SpanData`](opentelemetry_sdk::trace::SpanData) once, without a
//! live span object per request.

mod context;
mod export;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{SpanContext, SpanId, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::trace::{
    Sampler, SamplingDecision, ShouldSample, SpanData, SpanEvents, SpanLinks,
};
use warden_telemetry::metrics::ExportCounters;
use warden_telemetry::{EventSink, SecurityEvent};

pub use context::{new_span_id, new_trace_id, parse_traceparent, traceparent, Parent};
pub use opentelemetry::trace::SpanKind;
pub use opentelemetry::{KeyValue, Value};
pub use warden_telemetry::TraceIds;

/// One finished operation, as recorded.
#[derive(Debug)]
pub struct Span {
    /// Its trace and its own id.
    pub ids: TraceIds,
    /// The span it is a child of, and whether that one is remote (the caller's).
    pub parent: Option<(u64, bool)>,
    /// Server, client or internal.
    pub kind: SpanKind,
    /// `GET orders` (method and route), `authenticate`, ….
    pub name: Cow<'static, str>,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Semantic-convention attributes; never a credential.
    pub attributes: Vec<KeyValue>,
    /// Set for a failed operation: what failed (span status `Error`).
    pub error: Option<Cow<'static, str>>,
}

/// The process's tracer. Cheap to clone; [`Tracer::default`] records nothing.
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    ratio: Sampler,
    record_subject: bool,
    scope: InstrumentationScope,
    spans: export::Queue<SpanData>,
    logs: Option<(SdkLoggerProvider, SdkLogger)>,
    counters: ExportCounters,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("enabled", &self.inner.is_some())
            .finish_non_exhaustive()
    }
}

impl Tracer {
    /// Starts the exporters `config` asks for (nothing when tracing is disabled), counting in
    /// `counters`. Fails on what cannot work at all (an unreadable CA file, an exporter that
    /// cannot be built); a collector that is down is not a failure, only dropped spans.
    pub fn start(
        config: &warden_config::TracingConfig,
        counters: ExportCounters,
    ) -> Result<Tracer, String> {
        if !config.enabled {
            return Ok(Tracer::default());
        }
        let scope = InstrumentationScope::builder("warden")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let spans = export::start_spans(config, &resource, counters.clone())?;
        let logs = if config.security_events {
            let tx = export::start_logs(config, &resource, counters.clone())?;
            let provider = SdkLoggerProvider::builder()
                .with_resource(resource)
                .with_log_processor(export::QueueLogProcessor::new(tx))
                .build();
            let logger = provider.logger_with_scope(scope.clone());
            Some((provider, logger))
        } else {
            None
        };
        Ok(Tracer {
            inner: Some(Arc::new(Inner {
                ratio: Sampler::TraceIdRatioBased(config.sampling_ratio),
                record_subject: config.record_subject,
                scope,
                spans,
                logs,
                counters,
            })),
        })
    }

    /// The export counts (zero, and never moving, when tracing is off).
    pub fn counters(&self) -> ExportCounters {
        self.inner
            .as_ref()
            .map_or_else(ExportCounters::default, |i| i.counters.clone())
    }

    /// True when spans are exported.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether the caller's subject goes on spans.
    pub fn record_subject(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.record_subject)
    }

    /// Whether the trace `trace_id` is recorded here: parent-based, as OpenTelemetry's
    /// `ParentBased(TraceIdRatioBased)`: a request whose caller sent a `traceparent` follows
    /// the caller's `sampled` flag, a new trace is sampled at the configured ratio (decided
    /// from the trace id, so every service with the same ratio decides alike). Never, when
    /// tracing is off.
    pub fn sample(&self, parent: Option<&Parent>, trace_id: u128) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        match parent {
            Some(p) => p.sampled,
            None => {
                let r = inner.ratio.should_sample(
                    None,
                    TraceId::from(trace_id),
                    "",
                    &SpanKind::Server,
                    &[],
                    &[],
                );
                matches!(r.decision, SamplingDecision::RecordAndSample)
            }
        }
    }

    /// Queues a finished span for export; dropped and counted when the queue is full.
    pub fn record(&self, span: Span) {
        let Some(inner) = &self.inner else { return };
        let data = SpanData {
            span_context: SpanContext::new(
                TraceId::from(span.ids.trace_id),
                SpanId::from(span.ids.span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: span
                .parent
                .map_or(SpanId::INVALID, |(id, _)| SpanId::from(id)),
            parent_span_is_remote: span.parent.is_some_and(|(_, remote)| remote),
            span_kind: span.kind,
            name: span.name,
            start_time: span.start,
            end_time: span.end.max(span.start),
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: match span.error {
                Some(description) => Status::Error { description },
                None => Status::Unset,
            },
            instrumentation_scope: inner.scope.clone(),
        };
        inner.spans.push(data);
    }

    /// Waits up to `timeout` for what is queued to be sent (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        let Some(inner) = &self.inner else { return };
        inner.spans.flush(timeout);
        if let Some((provider, _)) = &inner.logs {
            let _ = provider.force_flush();
        }
    }

    /// The sink that sends security events as OTLP log records, when they are to be sent.
    pub fn event_sink(&self) -> Option<Arc<dyn EventSink>> {
        let inner = self.inner.as_ref()?;
        inner.logs.as_ref()?;
        Some(Arc::new(EventLogs(inner.clone())))
    }
}

/// Security events as OTLP log records: the event name as the record's event name and body,
/// its fields as attributes, joined to the request's trace when it has one.
struct EventLogs(Arc<Inner>);

impl EventSink for EventLogs {
    fn event(&self, component: Option<&'static str>, e: &SecurityEvent<'_>, suppressed: u64) {
        let Some((_, logger)) = &self.0.logs else {
            return;
        };
        let mut rec = logger.create_log_record();
        let now = SystemTime::now();
        rec.set_timestamp(now);
        rec.set_observed_timestamp(now);
        rec.set_event_name(e.event);
        rec.set_target("warden.security");
        // Refusals and failures are warnings; issuance, accepted reloads and signed heads are
        // information.
        let warn = !matches!(
            e.reason,
            "accepted" | "signed" | "recovered" | "half_open_trials_passed"
        ) && !e.event.starts_with("token.issued")
            && !e.event.starts_with("token.exchanged")
            && !e.event.starts_with("token.revoked");
        if warn {
            rec.set_severity_number(Severity::Warn);
            rec.set_severity_text("WARN");
        } else {
            rec.set_severity_number(Severity::Info);
            rec.set_severity_text("INFO");
        }
        rec.set_body(AnyValue::from(e.event));
        rec.add_attribute("event", e.event);
        rec.add_attribute("reason", e.reason);
        if let Some(c) = component {
            rec.add_attribute("component", c);
        }
        if let Some(v) = e.route {
            rec.add_attribute("route", v.to_owned());
        }
        if let Some(v) = e.method {
            rec.add_attribute("http.request.method", v.to_owned());
        }
        if let Some(v) = e.client {
            rec.add_attribute("client.address", v.to_string());
        }
        if let Some(v) = e.request_id {
            rec.add_attribute("request_id", v.to_owned());
        }
        if let Some(v) = e.status {
            rec.add_attribute("http.response.status_code", i64::from(v));
        }
        if let Some(v) = e.subject {
            rec.add_attribute("enduser.id", v.to_owned());
        }
        if let Some(v) = &e.detail {
            rec.add_attribute("detail", v.to_string());
        }
        if suppressed > 0 {
            rec.add_attribute("suppressed", i64::try_from(suppressed).unwrap_or(i64::MAX));
        }
        if let Some(ids) = e.trace {
            rec.set_trace_context(
                TraceId::from(ids.trace_id),
                SpanId::from(ids.span_id),
                Some(TraceFlags::SAMPLED),
            );
        }
        logger.emit(rec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_telemetry::metrics::SignalReason;

    fn config(ratio: f64) -> warden_config::TracingConfig {
        warden_config::TracingConfig {
            enabled: true,
            // Nothing listens there: spans are queued, then fail to export.
            endpoint: "http://127.0.0.1:9".into(),
            timeout: warden_config::Dur(Duration::from_secs(30)),
            sampling_ratio: ratio,
            max_queue_size: 4,
            max_export_batch_size: 4,
            scheduled_delay: warden_config::Dur(Duration::from_secs(60)),
            ..Default::default()
        }
    }

    #[test]
    fn sampling_follows_the_caller_and_otherwise_the_ratio() {
        let none = Tracer::start(&config(0.0), ExportCounters::default()).unwrap();
        let all = Tracer::start(&config(1.0), ExportCounters::default()).unwrap();
        let half = Tracer::start(&config(0.5), ExportCounters::default()).unwrap();
        let sampled = Parent {
            trace_id: 7,
            span_id: 9,
            sampled: true,
        };
        let unsampled = Parent {
            sampled: false,
            ..sampled
        };
        assert!(none.sample(Some(&sampled), 7));
        assert!(!all.sample(Some(&unsampled), 7));
        assert!(!none.sample(None, new_trace_id()));
        assert!(all.sample(None, new_trace_id()));
        let kept = (0..2000)
            .filter(|_| half.sample(None, new_trace_id()))
            .count();
        assert!((800..1200).contains(&kept), "{kept} of 2000 at 0.5");
        // Off: nothing is sampled, whatever the caller says.
        assert!(!Tracer::default().sample(Some(&sampled), 7));
    }

    #[test]
    fn a_full_queue_drops_spans_and_counts_them_without_waiting() {
        let counters = ExportCounters::default();
        // A collector that takes the connection and never answers: the export thread is
        // stuck in its first call, as with a collector that hangs.
        let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = config(1.0);
        c.endpoint = format!("http://{}", hung.local_addr().unwrap());
        let t = Tracer::start(&c, counters.clone()).unwrap();
        // Were a full queue to block, this loop would hang on the stuck export thread.
        for _ in 0..1000 {
            t.record(Span {
                ids: TraceIds {
                    trace_id: new_trace_id(),
                    span_id: new_span_id(),
                },
                parent: None,
                kind: SpanKind::Server,
                name: "GET r".into(),
                start: SystemTime::now(),
                end: SystemTime::now(),
                attributes: vec![KeyValue::new("http.request.method", "GET")],
                error: None,
            });
        }
        let dropped = counters
            .dropped
            .get_or_create(&SignalReason {
                signal: "spans",
                reason: "queue_full",
            })
            .get();
        // Kept: the queue's one batch of 4, what the export thread took (a batch of 4 and up
        // to 3 staged with it) and up to 3 staged now.
        assert!(dropped >= 1000 - 14, "{dropped}");
    }
}
