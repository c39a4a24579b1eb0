//! Warden's telemetry: process logging ([`init_logging`]), the Prometheus metrics registry
//! ([`metrics::Metrics`]), the JSON access log ([`access_log::AccessLog`]), the security-event
//! stream ([`security`]) and what the admin console keeps in memory: the last events
//! ([`recent`]) and each route's recent traffic ([`history`]).
//!
//! Nothing here sees secrets: callers pass route names, statuses and addresses, never header
//! values or tokens.

pub mod access_log;
pub mod history;
pub mod metrics;
pub mod recent;
pub mod security;
pub mod trace_ids;

pub use access_log::{format_time, parse_time, AccessLog, AccessRecord};
pub use metrics::Metrics;
pub use recent::RecentEvents;
pub use security::{EventSink, SecurityEvent, SecurityEvents};
pub use trace_ids::TraceIds;

/// Starts process logging: JSON lines on stderr, level from `RUST_LOG` (default `info`).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,hyper=warn,rustls=warn,h2=warn"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .try_init();
}
