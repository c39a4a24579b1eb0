//! The last config loads (the one at start, then every reload, accepted or refused), for the
//! admin console: when, what came of it, the config file's SHA-256 and the errors that
//! refused it. Bounded: [`RELOADS_KEPT`] entries, each with at most [`ERRORS_KEPT`] errors of
//! at most [`ERROR_CHARS`] characters (a refused config's errors name fields and files, never
//! a secret's value: they are what `POST /reload` answers).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

/// Loads kept.
pub const RELOADS_KEPT: usize = 20;
/// Errors kept per refused reload.
pub const ERRORS_KEPT: usize = 20;
/// Characters kept per error.
pub const ERROR_CHARS: usize = 500;

/// One config load.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadRecord {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// `started`, `accepted`, `refused` or `signature_refused`.
    pub outcome: &'static str,
    /// The config file's SHA-256 (hex), when it could be read.
    pub config_sha256: Option<String>,
    /// Why it was refused.
    pub errors: Vec<String>,
    /// Errors left out past [`ERRORS_KEPT`].
    pub more_errors: usize,
}

/// The last loads, newest last.
#[derive(Debug, Default)]
pub struct ReloadHistory(Mutex<VecDeque<ReloadRecord>>);

impl ReloadHistory {
    /// Records a load.
    pub fn record(&self, outcome: &'static str, config_sha256: Option<String>, errors: &[String]) {
        let kept = errors
            .iter()
            .take(ERRORS_KEPT)
            .map(|e| match e.char_indices().nth(ERROR_CHARS) {
                Some((at, _)) => format!("{}…", &e[..at]),
                None => e.clone(),
            })
            .collect();
        let record = ReloadRecord {
            time: warden_telemetry::format_time(SystemTime::now()),
            outcome,
            config_sha256,
            errors: kept,
            more_errors: errors.len().saturating_sub(ERRORS_KEPT),
        };
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() == RELOADS_KEPT {
            list.pop_front();
        }
        list.push_back(record);
    }

    /// The loads kept, newest first.
    pub fn list(&self) -> Vec<ReloadRecord> {
        let list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        list.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_loads_are_kept_newest_first_with_bounded_errors() {
        let h = ReloadHistory::default();
        h.record("started", Some("aa".into()), &[]);
        let many: Vec<String> = (0..30)
            .map(|i| format!("routes[{i}]: {}", "x".repeat(600)))
            .collect();
        h.record("refused", Some("bb".into()), &many);
        let list = h.list();
        assert_eq!(list[0].outcome, "refused");
        assert_eq!(list[0].errors.len(), ERRORS_KEPT);
        assert_eq!(list[0].more_errors, 10);
        assert_eq!(
            list[0].errors[0].chars().count(),
            ERROR_CHARS + 1,
            "cut, with an ellipsis"
        );
        assert!(list[0].errors[0].starts_with("routes[0]: x"));
        assert_eq!(list[1].outcome, "started");
        assert_eq!(list[1].config_sha256.as_deref(), Some("aa"));
        for _ in 0..RELOADS_KEPT {
            h.record("accepted", None, &[]);
        }
        let list = h.list();
        assert_eq!(list.len(), RELOADS_KEPT);
        assert!(list.iter().all(|r| r.outcome == "accepted"));
    }
}
