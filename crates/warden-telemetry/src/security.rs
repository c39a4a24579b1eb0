//! The security-event stream: one JSON line per security decision, with a stable `event`
//! name and `reason` code, so that a SIEM or an on-call engineer can ask "why was this caller
//! refused" and "is someone probing us" without parsing free text.
//!
//! Every event is counted in `warden_security_events_total{event,reason}` (bounded labels:
//! both are static strings from the code). Lines are rate-limited per event and reason
//! (`max_lines_per_second`): a flood of identical refusals becomes a few lines a second, and
//! the next line written for that event and reason carries `"suppressed": N`, the lines left
//! out since the one before (also counted in `warden_security_events_suppressed_total`).
//! Events never carry a credential: the subject (who was authenticated), never the token.
//! The events the rate limit lets through are also kept in a [`RecentEvents`] ring when one
//! is given ([`SecurityEvents::record_to`]), whether lines are written or not: the admin
//! console's live view.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;

use crate::access_log::{format_time, AccessLog};
use crate::metrics::EventReason;
use crate::recent::RecentEvents;

/// Events a second per event and reason kept in the ring and sent to the sink when no lines
/// are written (the `[security_events]` default rate).
const RING_PER_SECOND: u32 = 10;

/// One security decision.
#[derive(Debug, Default, Serialize)]
pub struct SecurityEvent<'a> {
    /// Stable name: `authn.failure`, `authz.denied`, `ratelimit.refused`, `config.reload`, ….
    pub event: &'static str,
    /// Stable code within the event (`expired`, `bad_signature`, `accepted`, …).
    pub reason: &'static str,
    /// The route, for request decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<&'a str>,
    /// The request's method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'a str>,
    /// The client's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<IpAddr>,
    /// The request id (also in the access log and sent upstream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
    /// The HTTP status answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Who was authenticated, when a decision came after authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    /// Anything else, non-secret (a config's hash, a rate limit's key kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// The request's trace and span (`trace_id`, `span_id`), for decisions about a request.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::TraceIds>,
}

/// Somewhere else events go besides the JSON lines (OpenTelemetry logs): given the events
/// the line limit lets through, after they are counted.
pub trait EventSink: Send + Sync {
    /// One event; `component` as in the line (`"authority"`, or none for the gateway).
    fn event(&self, component: Option<&'static str>, e: &SecurityEvent<'_>, suppressed: u64);
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<&'static str>,
    #[serde(flatten)]
    event: &'a SecurityEvent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    suppressed: Option<u64>,
}

/// Where events go. Cheap to clone; clones share the writer, set once
/// ([`SecurityEvents::write_to`]).
#[derive(Clone)]
pub struct SecurityEvents {
    out: Arc<OnceLock<Writer>>,
    sink: Arc<OnceLock<Arc<dyn EventSink>>>,
    component: Option<&'static str>,
    counts: Family<EventReason, Counter>,
    suppressed: Counter,
    windows: Arc<Mutex<HashMap<(&'static str, &'static str), Window>>>,
    recent: Arc<OnceLock<Arc<RecentEvents>>>,
}

struct Writer {
    out: AccessLog,
    per_second: u32,
}

/// One event and reason's current second: lines written in it, and lines left out since the
/// last one written.
struct Window {
    started: Instant,
    written: u32,
    suppressed: u64,
}

impl SecurityEvents {
    /// Events counted in `counts`, lines left out counted in `suppressed`; nothing is written
    /// until [`SecurityEvents::write_to`].
    pub fn new(counts: Family<EventReason, Counter>, suppressed: Counter) -> Self {
        SecurityEvents {
            out: Arc::new(OnceLock::new()),
            sink: Arc::new(OnceLock::new()),
            component: None,
            counts,
            suppressed,
            windows: Arc::new(Mutex::new(HashMap::new())),
            recent: Arc::new(OnceLock::new()),
        }
    }

    /// Keeps the events the rate limit lets through in `ring` from now on. Once per stream
    /// (later calls are ignored, and say so).
    pub fn record_to(&self, ring: Arc<RecentEvents>) -> bool {
        self.recent.set(ring).is_ok()
    }

    /// Names the part of Warden whose events these are (`"authority"`) in every line; the
    /// gateway's and sidecar's lines carry none.
    pub fn component(mut self, name: &'static str) -> Self {
        self.component = Some(name);
        self
    }

    /// Writes events to `out` from now on, at most `per_second` lines a second per event
    /// and reason; lines `out` drops (its queue full) count as suppressed. Once per stream
    /// (later calls are ignored, and say so).
    pub fn write_to(&self, out: AccessLog, per_second: u32) -> bool {
        self.out
            .set(Writer {
                out: out.with_dropped(self.suppressed.clone()),
                per_second: per_second.max(1),
            })
            .is_ok()
    }

    /// Also sends the events that are written (or would be: the same limit applies) to
    /// `sink`. Once per stream.
    pub fn send_to(&self, sink: Arc<dyn EventSink>) -> bool {
        self.sink.set(sink).is_ok()
    }

    /// Counts `e`, and writes it (and keeps it in the ring, and sends it to the sink) unless
    /// its event and reason are over their rate.
    pub fn emit(&self, e: &SecurityEvent<'_>) {
        self.counts
            .get_or_create(&EventReason {
                event: e.event,
                reason: e.reason,
            })
            .inc();
        let writer = self.out.get().filter(|w| w.out.enabled());
        let sink = self.sink.get();
        let recent = self.recent.get();
        if writer.is_none() && recent.is_none() && sink.is_none() {
            return;
        }
        let per_second = writer.map_or(RING_PER_SECOND, |w| w.per_second);
        let Some(suppressed) = self.admit(e, per_second, writer.is_some()) else {
            return;
        };
        // Events about a request served inside `TraceIds::scope` join its trace.
        let joined;
        let e = if e.trace.is_none() {
            match crate::TraceIds::current() {
                Some(ids) => {
                    joined = SecurityEvent {
                        trace: Some(ids),
                        detail: e.detail.clone(),
                        ..*e
                    };
                    &joined
                }
                None => e,
            }
        } else {
            e
        };
        if let Some(sink) = sink {
            sink.event(self.component, e, suppressed);
        }
        let line = Line {
            time: format_time(SystemTime::now()),
            component: self.component,
            event: e,
            suppressed: (suppressed > 0).then_some(suppressed),
        };
        if let Some(ring) = recent {
            if let Ok(v) = serde_json::to_value(&line) {
                ring.push(v);
            }
        }
        if let Some(writer) = writer {
            if let Ok(text) = serde_json::to_string(&line) {
                writer.out.write_line(text);
            }
        }
    }

    /// Whether `e` is within `per_second` for its event and reason: `Some(lines left out
    /// since the last one let through)`, or `None` (counted as suppressed when `writing`).
    fn admit(&self, e: &SecurityEvent<'_>, per_second: u32, writing: bool) -> Option<u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = windows.entry((e.event, e.reason)).or_insert(Window {
            started: Instant::now(),
            written: 0,
            suppressed: 0,
        });
        if w.started.elapsed().as_secs() >= 1 {
            w.started = Instant::now();
            w.written = 0;
        }
        if w.written >= per_second {
            w.suppressed += 1;
            if writing {
                self.suppressed.inc();
            }
            return None;
        }
        w.written += 1;
        Some(std::mem::take(&mut w.suppressed))
    }
}

impl std::fmt::Debug for SecurityEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityEvents")
            .field("writing", &self.out.get().is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &std::path::Path, lines: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= lines {
                return text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
            }
            assert!(Instant::now() < deadline, "{text}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_flood_is_counted_whole_and_written_at_the_rate_with_what_was_suppressed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let counts = Family::<EventReason, Counter>::default();
        let suppressed = Counter::default();
        let events = SecurityEvents::new(counts.clone(), suppressed.clone());
        assert!(events.write_to(
            AccessLog::open(path.to_str().unwrap(), Counter::default()).unwrap(),
            3,
        ));
        let e = SecurityEvent {
            event: "authn.failure",
            reason: "bad_signature",
            route: Some("api"),
            ..Default::default()
        };
        for _ in 0..50 {
            events.emit(&e);
        }
        // Another reason has its own budget.
        events.emit(&SecurityEvent {
            event: "authn.failure",
            reason: "expired",
            ..Default::default()
        });
        let key = |reason| EventReason {
            event: "authn.failure",
            reason,
        };
        assert_eq!(counts.get_or_create(&key("bad_signature")).get(), 50);
        assert_eq!(counts.get_or_create(&key("expired")).get(), 1);
        assert_eq!(suppressed.get(), 47);
        let lines = read(&path, 4);
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(
            lines.iter().all(|l| l.get("suppressed").is_none()),
            "{lines:?}"
        );
        assert_eq!(lines[0]["event"], "authn.failure");
        assert_eq!(lines[0]["reason"], "bad_signature");
        assert_eq!(lines[0]["route"], "api");
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
        // The next second: the next line says how many were left out.
        std::thread::sleep(std::time::Duration::from_millis(1050));
        events.emit(&e);
        let lines = read(&path, 5);
        assert_eq!(lines[4]["suppressed"], 47, "{lines:?}");
    }

    #[test]
    fn the_ring_keeps_what_the_rate_lets_through_even_when_no_lines_are_written() {
        let counts = Family::<EventReason, Counter>::default();
        let suppressed = Counter::default();
        let events = SecurityEvents::new(counts.clone(), suppressed.clone()).component("authority");
        let ring = Arc::new(RecentEvents::new());
        assert!(events.record_to(ring.clone()));
        assert!(!events.record_to(Arc::new(RecentEvents::new())), "once");
        let refused = SecurityEvent {
            event: "authn.failure",
            reason: "missing_credential",
            route: Some("api"),
            status: Some(401),
            ..Default::default()
        };
        for _ in 0..40 {
            events.emit(&refused);
        }
        events.emit(&SecurityEvent {
            event: "config.reload",
            reason: "accepted",
            ..Default::default()
        });
        let page = ring.after(0, 100);
        // The flood keeps its ten a second; the reload is not pushed out by it.
        assert_eq!(page.events.len(), RING_PER_SECOND as usize + 1, "{page:?}");
        let last = page.events.last().unwrap();
        assert_eq!(last["event"], "config.reload");
        assert_eq!(page.events[0]["route"], "api");
        assert_eq!(page.events[0]["status"], 401);
        assert_eq!(page.events[0]["component"], "authority");
        assert!(page.events[0]["time"].as_str().unwrap().ends_with('Z'));
        // Every one is counted; none was a line left out, as no lines are written.
        let key = EventReason {
            event: "authn.failure",
            reason: "missing_credential",
        };
        assert_eq!(counts.get_or_create(&key).get(), 40);
        assert_eq!(suppressed.get(), 0);
        // The next second's first one says how many the ring did not get.
        std::thread::sleep(std::time::Duration::from_millis(1050));
        events.emit(&refused);
        let page = ring.after(last["seq"].as_u64().unwrap(), 100);
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0]["suppressed"], 30, "{page:?}");
    }
}
