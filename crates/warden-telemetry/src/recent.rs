//! The last security events, kept in memory for the admin console's live view.
//!
//! A ring of at most [`RECENT_CAPACITY`] events, each with a sequence number that only grows:
//! a reader asks for the events after the last number it saw, and learns from `oldest`
//! whether some were pushed out before it asked. The ring holds the events the line rate
//! limit lets through (the same ones the `[security_events]` output gets, with the same
//! `"suppressed": N` on the first one after a flood), so that a flood of one refusal cannot
//! push every other kind of event out of it; the exact counts stay in
//! `warden_security_events_total`. Entries are the event's JSON, which never holds a credential.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

/// Events kept.
pub const RECENT_CAPACITY: usize = 256;

/// The most events one read returns.
pub const RECENT_PAGE: usize = 200;

/// The last events, shared by every [`crate::SecurityEvents`] that records to it (the
/// gateway's and the authority's, in one process).
#[derive(Debug, Default)]
pub struct RecentEvents {
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    /// The number the next event gets; the first is 1, so `after=0` reads from the start.
    next: u64,
    events: VecDeque<(u64, Value)>,
}

/// What a read returns.
#[derive(Debug, Serialize)]
pub struct RecentPage {
    /// Events after the asked number, oldest first, each with its `seq`.
    pub events: Vec<Value>,
    /// The newest number given so far (0 before the first event): ask for events after it next.
    pub last: u64,
    /// The oldest number still kept (0 when none is): events between the asked number and
    /// this one were pushed out.
    pub oldest: u64,
    /// Whether more events than one page follow the ones returned.
    pub more: bool,
}

impl RecentEvents {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `event` (an object; anything else is ignored) with the next sequence number,
    /// dropping the oldest past [`RECENT_CAPACITY`].
    pub fn push(&self, mut event: Value) {
        let mut ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ring.next = ring.next.max(1);
        let seq = ring.next;
        let Some(obj) = event.as_object_mut() else {
            return;
        };
        obj.insert("seq".into(), seq.into());
        ring.next += 1;
        if ring.events.len() == RECENT_CAPACITY {
            ring.events.pop_front();
        }
        ring.events.push_back((seq, event));
    }

    /// The events numbered after `after`, at most `limit` (capped at [`RECENT_PAGE`]).
    pub fn after(&self, after: u64, limit: usize) -> RecentPage {
        let limit = limit.clamp(1, RECENT_PAGE);
        let ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut newer = ring.events.iter().filter(|(seq, _)| *seq > after);
        let events: Vec<Value> = newer.by_ref().take(limit).map(|(_, e)| e.clone()).collect();
        RecentPage {
            events,
            last: ring.next.saturating_sub(1),
            oldest: ring.events.front().map_or(0, |(seq, _)| *seq),
            more: newer.next().is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn readers_get_what_came_after_the_number_they_saw_and_learn_what_was_pushed_out() {
        let r = RecentEvents::new();
        let page = r.after(0, 50);
        assert!(page.events.is_empty());
        assert_eq!((page.last, page.oldest, page.more), (0, 0, false));
        for i in 0..RECENT_CAPACITY + 10 {
            r.push(json!({"event": "authn.failure", "n": i}));
        }
        // The first ten were pushed out: the oldest kept is 11.
        let page = r.after(0, 1000);
        assert_eq!(page.oldest, 11);
        assert_eq!(page.last, (RECENT_CAPACITY + 10) as u64);
        assert_eq!(page.events.len(), RECENT_PAGE, "one page at most");
        assert!(page.more);
        assert_eq!(page.events[0]["seq"], 11);
        assert_eq!(page.events[0]["n"], 10);
        // A reader that saw 260 gets the last six, in order.
        let page = r.after(260, 50);
        let seqs: Vec<u64> = page
            .events
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, vec![261, 262, 263, 264, 265, 266]);
        assert!(!page.more);
        // A number from the future (another process's) returns nothing.
        assert!(r.after(u64::MAX, 50).events.is_empty());
    }

    #[test]
    fn only_objects_are_kept() {
        let r = RecentEvents::new();
        r.push(json!("not an event"));
        r.push(json!({"event": "config.reload"}));
        let page = r.after(0, 10);
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0]["seq"], 1);
    }
}
