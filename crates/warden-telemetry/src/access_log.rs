//! The access log: one JSON line per request, written by a dedicated thread so the request
//! path never waits on disk. If the writer falls behind by more than the queue holds, lines
//! are dropped and counted (`warden_access_log_dropped_total`) rather than stalling traffic.

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

const QUEUE: usize = 64 * 1024;

/// One request, as logged. Paths are logged without their query string (it often carries
/// tokens); no header values are logged.
///
/// A refusal made below the handler (a head hyper could not parse, the header-read timeout, an
/// HTTP/2 connection error, a failed TLS handshake) is logged too, with what is known: its
/// `time` is when it was made, `duration_ms` how long the connection had been open,
/// `request_id`, `method`, `path` and `upstream` are `-`, `status` is 0 when nothing was
/// sent, and `reason` says what happened.
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    /// RFC 3339 time the request arrived.
    pub time: &'a str,
    /// The request id (as sent upstream).
    pub request_id: &'a str,
    /// Listener name.
    pub listener: &'a str,
    /// Matched route, or `-`.
    pub route: &'a str,
    /// Method.
    pub method: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    /// HTTP version, e.g. `HTTP/1.1`.
    pub protocol: &'a str,
    /// Status sent to the client.
    pub status: u16,
    /// Milliseconds from request head to response head.
    pub duration_ms: f64,
    /// Upstream endpoint that served it, or `-`.
    pub upstream: &'a str,
    /// Request body bytes received from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client (known when the response is streamed).
    pub bytes_out: u64,
    /// Client address.
    pub client: &'a str,
    /// Why the gateway answered itself, when it did (e.g. `no_route`, `upstream_timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// How the caller authenticated (`jwt`, `api_key`, ...), on authenticated routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<&'a str>,
    /// The authenticated subject (never a credential).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    /// How an upgraded (WebSocket) connection ended (`client_closed`, `idle_timeout`, ...).
    /// Its line is written then: `duration_ms` is its whole life, `bytes_in` and `bytes_out`
    /// what it carried each way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed: Option<&'a str>,
    /// The trace this request belongs to and the gateway's span in it (`trace_id`,
    /// `span_id`): the caller's trace when it sent a `traceparent`, a new one otherwise.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::TraceIds>,
}

/// Handle for writing access-log lines. Cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<Queued>>,
    dropped: Counter,
}

impl AccessLog {
    /// An access log that writes nothing.
    pub fn disabled() -> Self {
        Self {
            tx: None,
            dropped: Counter::default(),
        }
    }

    /// Starts the writer thread for `path` (`stdout` or a file to append to).
    pub fn open(path: &str, dropped: Counter) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = if path == "stdout" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("warden-access-log".into())
            .spawn(move || writer(rx, out))?;
        Ok(Self {
            tx: Some(tx),
            dropped,
        })
    }

    /// The same writer, counting the lines it drops in `dropped` instead (two parts of one
    /// process sharing a file, each counting its own).
    pub fn with_dropped(self, dropped: Counter) -> Self {
        Self { dropped, ..self }
    }

    /// Waits (up to `timeout`) until every line queued before this call is written out: before
    /// the process exits.
    pub fn flush(&self, timeout: std::time::Duration) {
        let Some(tx) = &self.tx else { return };
        let (ack, done) = sync_channel(1);
        let deadline = std::time::Instant::now() + timeout;
        let mut msg = Queued::Flushed(ack);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = done.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
    }

    /// True when lines are being written.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one record.
    pub fn write(&self, record: &AccessRecord<'_>) {
        if self.tx.is_none() {
            return;
        }
        if let Ok(line) = serde_json::to_string(record) {
            self.write_line(line);
        }
    }

    /// Queues one line (without its newline); dropped and counted when the writer is behind.
    pub fn write_line(&self, line: String) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Queued::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

/// What the writer thread is sent: a line, or a request to say when what came before it is
/// written out.
enum Queued {
    Line(String),
    Flushed(SyncSender<()>),
}

fn writer(rx: Receiver<Queued>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    fn write(q: Queued, out: &mut std::io::BufWriter<Box<dyn Write + Send>>) {
        match q {
            Queued::Line(line) => {
                let _ = out.write_all(line.as_bytes());
                let _ = out.write_all(b"\n");
            }
            Queued::Flushed(ack) => {
                let _ = out.flush();
                let _ = ack.try_send(());
            }
        }
    }
    while let Ok(q) = rx.recv() {
        write(q, &mut out);
        // Drain whatever else is queued, then flush once.
        while let Ok(q) = rx.try_recv() {
            write(q, &mut out);
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_json_line_per_record_to_a_file() {
        let dir = std::env::temp_dir().join(format!("warden-al-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let log = AccessLog::open(path.to_str().unwrap(), Counter::default()).unwrap();
        for status in [200, 404] {
            log.write(&AccessRecord {
                time: "2026-01-01T00:00:00Z",
                request_id: "abc",
                listener: "http",
                route: "public",
                method: "GET",
                path: "/public/x",
                protocol: "HTTP/1.1",
                status,
                duration_ms: 1.5,
                upstream: "127.0.0.1:1",
                bytes_in: 0,
                bytes_out: 10,
                client: "127.0.0.1:5",
                reason: None,
                auth: None,
                subject: None,
                closed: None,
                trace: None,
            });
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<_> = text.lines().collect();
            if lines.len() == 2 {
                let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
                assert_eq!(v["status"], 404);
                assert_eq!(v["path"], "/public/x");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "lines not written: {text:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Formats a time as RFC 3339 in UTC with milliseconds (`2026-11-29T08:46:57.123Z`).
pub fn format_time(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Reads an RFC 3339 time (`2026-12-05T08:46:57Z`, with optional fractional seconds and a
/// `Z` or `±HH:MM` offset) as Unix milliseconds; `None` if it is not one.
pub fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = s.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        millis = format!("{frac:0<3}")[..3].parse::<i64>().ok()?;
    }
    let offset = match s.get(i..)? {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(o.as_bytes()[0], b'+' | b'-') && o.as_bytes()[3] == b':' => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let mins = h * 60 + m;
            if o.starts_with('-') {
                -mins
            } else {
                mins
            }
        }
        _ => return None,
    };
    // Days since 1970-01-01 from a civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset * 60;
    Some(secs * 1000 + millis)
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn parses_rfc3339_back_to_the_instant_it_formats() {
        for ms in [0, 1_795_942_017_123, 951_782_400_000, 4_107_542_400_999] {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
            assert_eq!(super::parse_time(&super::format_time(t)), Some(ms));
        }
        assert_eq!(
            super::parse_time("2026-11-29T09:46:57+01:00"),
            Some(1_795_942_017_000)
        );
        assert_eq!(
            super::parse_time("2026-11-29T08:46:57.1234Z"),
            Some(1_795_942_017_123)
        );
        for bad in [
            "",
            "2026-11-29",
            "2026-11-29T08:46:57",
            "2026-13-29T08:46:57Z",
            "2026-11-29T08:46:57.Z",
            "2026-11-29T08:46:57+0100",
            "24h",
            "2026-11-29T08:4x:57Z",
        ] {
            assert_eq!(super::parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_rfc3339_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_942_017_123);
        assert_eq!(super::format_time(t), "2026-11-29T08:46:57.123Z");
        assert_eq!(
            super::format_time(std::time::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
