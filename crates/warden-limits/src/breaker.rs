//! A circuit breaker for one upstream endpoint, as a small sans-IO state machine (callers pass
//! the time), in the manner of linkerd's consecutive-failures breaker and Envoy's outlier
//! detection:
//!
//! - **Closed**: requests flow. `failure_threshold` failures in a row open the breaker, and so
//!   does a failure rate at or over `failure_rate` across the sliding `window` once the window
//!   holds at least `min_requests` outcomes.
//! - **Open** (the endpoint is ejected): no requests until the ejection time has passed. The
//!   ejection time doubles with each ejection in a row (`base_ejection × 2ⁿ`, capped at
//!   `max_ejection`).
//! - **Half-open**: up to `trial_requests` requests are let through; if that many succeed the
//!   breaker closes (and the ejection count resets); any failure opens it again, for longer.
//!
//! The caller may refuse an ejection (a cluster-wide cap on ejected endpoints): the breaker then
//! stays closed with its counts, and the next failure asks again.
//!
//! The window is ten buckets of `window / 10`: an outcome counts from when it is recorded until
//! the bucket it fell in is ten buckets old, so for between 90 % and 100 % of `window`. That
//! keeps an endpoint's state at a fixed ~200 bytes however many requests it serves.

use std::time::Duration;

/// Buckets in the failure-rate window.
const BUCKETS: usize = 10;

/// Breaker settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row (5xx, connection errors, timeouts) that open the breaker.
    pub failure_threshold: u32,
    /// Share of failures (0.0 to 1.0) over `window` that opens the breaker; 0 turns the rate
    /// check off.
    pub failure_rate: f64,
    /// The sliding window the failure rate is measured over.
    pub window: Duration,
    /// Fewest outcomes in the window before the failure rate counts.
    pub min_requests: u32,
    /// First ejection time.
    pub base_ejection: Duration,
    /// Longest ejection time.
    pub max_ejection: Duration,
    /// Trial requests let through when half-open, and successes needed to close.
    pub trial_requests: u32,
}

/// Where the breaker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Ejected until the given time (nanoseconds on the caller's clock).
    Open {
        /// When trials may start.
        until: u64,
    },
    /// Trial requests only.
    HalfOpen,
}

/// What an outcome did to the breaker, for the caller's metrics and ejection count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed state.
    Unchanged,
    /// The breaker opened (from closed or half-open) until the given time.
    Ejected {
        /// When trials may start.
        until: u64,
        /// Whether it was closed before (a new ejection, not a failed trial).
        from_closed: bool,
    },
    /// An ejection was due but the caller refused it; the breaker stays closed.
    Refused,
    /// The last trial succeeded: the breaker closed.
    Recovered,
}

/// Outcomes in one slice of the window.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// `time / bucket length` of the slice these counts belong to.
    slot: u64,
    ok: u32,
    failed: u32,
}

/// One endpoint's breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    failures_in_a_row: u32,
    ejections_in_a_row: u32,
    trials_started: u32,
    trial_successes: u32,
    bucket_nanos: u64,
    buckets: [Bucket; BUCKETS],
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        let window = u64::try_from(config.window.as_nanos()).unwrap_or(u64::MAX);
        Self {
            config,
            state: BreakerState::Closed,
            failures_in_a_row: 0,
            ejections_in_a_row: 0,
            trials_started: 0,
            trial_successes: 0,
            bucket_nanos: (window / BUCKETS as u64).max(1),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    /// The settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The current state (an open breaker whose time has passed reports `HalfOpen` only once
    /// [`Breaker::try_acquire`] has moved it there).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Ejections in a row (reset when a half-open breaker closes).
    pub fn ejections_in_a_row(&self) -> u32 {
        self.ejections_in_a_row
    }

    /// Whether [`Breaker::try_acquire`] would let a request through now, without counting it
    /// (for a load balancer choosing among endpoints).
    pub fn available(&self, now: u64) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until } => now >= until,
            BreakerState::HalfOpen => self.trials_started < self.config.trial_requests,
        }
    }

    /// Whether a request may go to this endpoint now; counts trial requests when half-open.
    pub fn try_acquire(&mut self, now: u64) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until } if now < until => false,
            BreakerState::Open { .. } => {
                self.state = BreakerState::HalfOpen;
                self.trials_started = 1;
                self.trial_successes = 0;
                true
            }
            BreakerState::HalfOpen => {
                if self.trials_started < self.config.trial_requests {
                    self.trials_started += 1;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// A request let through by [`Breaker::try_acquire`] ended without an outcome (the client
    /// went away, or the request itself was at fault): its trial slot is given back, so a
    /// half-open breaker cannot be left waiting for an answer that never comes.
    pub fn on_abandoned(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.trials_started = self
                .trials_started
                .saturating_sub(1)
                .max(self.trial_successes);
        }
    }

    /// Records a successful exchange.
    pub fn on_success(&mut self, now: u64) -> Transition {
        self.failures_in_a_row = 0;
        match self.state {
            BreakerState::Closed => {
                self.record(now, false);
                Transition::Unchanged
            }
            BreakerState::HalfOpen => {
                self.trial_successes += 1;
                if self.trial_successes >= self.config.trial_requests {
                    self.state = BreakerState::Closed;
                    self.ejections_in_a_row = 0;
                    Transition::Recovered
                } else {
                    Transition::Unchanged
                }
            }
            // A request that started before the ejection: it proves nothing about now.
            BreakerState::Open { .. } => Transition::Unchanged,
        }
    }

    /// Records a failed exchange. `may_eject` is asked only when a closed breaker is due to
    /// open; returning `false` keeps it closed (a cap on ejected endpoints).
    pub fn on_failure(&mut self, now: u64, may_eject: impl FnOnce() -> bool) -> Transition {
        match self.state {
            BreakerState::Closed => {
                self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
                self.record(now, true);
                if self.failures_in_a_row < self.config.failure_threshold
                    && !self.rate_exceeded(now)
                {
                    Transition::Unchanged
                } else if may_eject() {
                    Transition::Ejected {
                        until: self.eject(now),
                        from_closed: true,
                    }
                } else {
                    Transition::Refused
                }
            }
            BreakerState::HalfOpen => Transition::Ejected {
                until: self.eject(now),
                from_closed: false,
            },
            // A request that started before the ejection: already counted.
            BreakerState::Open { .. } => Transition::Unchanged,
        }
    }

    /// Outcomes in the window at `now`: (successes, failures).
    pub fn window_counts(&self, now: u64) -> (u32, u32) {
        let slot = now / self.bucket_nanos;
        self.buckets
            .iter()
            .filter(|b| b.slot <= slot && slot - b.slot < BUCKETS as u64)
            .fold((0, 0), |(ok, failed), b| {
                (ok.saturating_add(b.ok), failed.saturating_add(b.failed))
            })
    }

    fn rate_exceeded(&self, now: u64) -> bool {
        if self.config.failure_rate <= 0.0 {
            return false;
        }
        let (ok, failed) = self.window_counts(now);
        let total = ok.saturating_add(failed);
        total >= self.config.min_requests
            && total > 0
            && f64::from(failed) >= self.config.failure_rate * f64::from(total)
    }

    fn record(&mut self, now: u64, failed: bool) {
        if self.config.failure_rate <= 0.0 {
            return;
        }
        let slot = now / self.bucket_nanos;
        let b = &mut self.buckets[(slot % BUCKETS as u64) as usize];
        if b.slot != slot {
            *b = Bucket {
                slot,
                ok: 0,
                failed: 0,
            };
        }
        if failed {
            b.failed = b.failed.saturating_add(1);
        } else {
            b.ok = b.ok.saturating_add(1);
        }
    }

    fn eject(&mut self, now: u64) -> u64 {
        let factor = 1u32 << self.ejections_in_a_row.min(16);
        let ejection = self
            .config
            .base_ejection
            .saturating_mul(factor)
            .min(self.config.max_ejection);
        self.ejections_in_a_row = self.ejections_in_a_row.saturating_add(1);
        self.failures_in_a_row = 0;
        // What the endpoint did before this ejection says nothing about it after.
        self.buckets = [Bucket::default(); BUCKETS];
        let until = now.saturating_add(u64::try_from(ejection.as_nanos()).unwrap_or(u64::MAX));
        self.state = BreakerState::Open { until };
        until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 3,
            failure_rate: 0.0,
            window: Duration::from_secs(10),
            min_requests: 0,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(60),
            trial_requests: 2,
        })
    }

    /// Consecutive failures out of reach: only the rate can open it.
    fn rate_breaker(rate: f64, min_requests: u32) -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 1000,
            failure_rate: rate,
            window: Duration::from_secs(10),
            min_requests,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(60),
            trial_requests: 1,
        })
    }

    fn fail(b: &mut Breaker, now: u64) -> Transition {
        b.on_failure(now, || true)
    }

    #[test]
    fn opens_after_exactly_the_threshold_of_failures_in_a_row() {
        let mut b = breaker();
        fail(&mut b, 0);
        fail(&mut b, 0);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire(0));
        assert_eq!(
            fail(&mut b, S),
            Transition::Ejected {
                until: 11 * S,
                from_closed: true
            }
        );
        assert_eq!(b.state(), BreakerState::Open { until: 11 * S });
        assert!(!b.try_acquire(S));
        assert!(!b.available(11 * S - 1));
        assert!(b.available(11 * S));
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut b = breaker();
        fail(&mut b, 0);
        fail(&mut b, 0);
        b.on_success(0);
        fail(&mut b, 0);
        fail(&mut b, 0);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_lets_through_only_the_trials_and_closes_on_their_success() {
        let mut b = breaker();
        for _ in 0..3 {
            fail(&mut b, 0);
        }
        assert!(
            !b.try_acquire(10 * S - 1),
            "still ejected just before the time"
        );
        assert!(b.try_acquire(10 * S), "first trial");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire(10 * S), "second trial");
        assert!(!b.available(10 * S));
        assert!(!b.try_acquire(10 * S), "no third while trials run");
        assert_eq!(b.on_success(10 * S), Transition::Unchanged);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.on_success(10 * S), Transition::Recovered);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.ejections_in_a_row(), 0);
        assert!(b.try_acquire(10 * S));
    }

    #[test]
    fn an_abandoned_trial_gives_its_slot_back() {
        let mut b = breaker();
        for _ in 0..3 {
            fail(&mut b, 0);
        }
        assert!(b.try_acquire(10 * S));
        assert!(b.try_acquire(10 * S));
        assert!(!b.try_acquire(10 * S));
        b.on_abandoned();
        assert!(b.try_acquire(10 * S), "the abandoned slot is free again");
        assert!(!b.try_acquire(10 * S));
    }

    #[test]
    fn a_failed_trial_ejects_again_for_longer_up_to_the_cap() {
        let mut b = breaker();
        for _ in 0..3 {
            fail(&mut b, 0);
        }
        let mut now = 0;
        let mut ejections = Vec::new();
        for _ in 0..5 {
            let BreakerState::Open { until } = b.state() else {
                panic!("{:?}", b.state())
            };
            ejections.push((until - now) / S);
            now = until;
            assert!(b.try_acquire(now));
            let t = b.on_failure(now, || panic!("a failed trial is not a new ejection"));
            assert!(
                matches!(
                    t,
                    Transition::Ejected {
                        from_closed: false,
                        ..
                    }
                ),
                "{t:?}"
            );
        }
        assert_eq!(ejections, [10, 20, 40, 60, 60]);
        assert_eq!(b.ejections_in_a_row(), 6);
    }

    #[test]
    fn closing_resets_the_ejection_time() {
        let mut b = breaker();
        for _ in 0..3 {
            fail(&mut b, 0);
        }
        assert!(b.try_acquire(10 * S));
        fail(&mut b, 10 * S); // ejected for 20 s
        assert!(b.try_acquire(30 * S));
        assert!(b.try_acquire(30 * S));
        b.on_success(30 * S);
        b.on_success(30 * S);
        for _ in 0..3 {
            fail(&mut b, 40 * S);
        }
        assert_eq!(
            b.state(),
            BreakerState::Open { until: 50 * S },
            "back to the base time"
        );
    }

    #[test]
    fn a_refused_ejection_stays_closed_and_asks_again_on_the_next_failure() {
        let mut b = breaker();
        fail(&mut b, 0);
        fail(&mut b, 0);
        assert_eq!(b.on_failure(0, || false), Transition::Refused);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire(0));
        assert_eq!(b.on_failure(0, || false), Transition::Refused);
        assert!(matches!(fail(&mut b, 0), Transition::Ejected { .. }));
    }

    #[test]
    fn the_rate_counts_only_from_min_requests_on() {
        let mut b = rate_breaker(0.5, 4);
        b.on_success(0);
        fail(&mut b, 0);
        fail(&mut b, 0);
        assert_eq!(b.window_counts(0), (1, 2));
        assert_eq!(b.state(), BreakerState::Closed, "3 outcomes < min 4");
        assert!(matches!(fail(&mut b, 0), Transition::Ejected { .. }));
        assert_eq!(b.window_counts(0), (0, 0), "ejection clears the window");
    }

    #[test]
    fn a_rate_exactly_at_the_threshold_ejects_and_just_under_does_not() {
        let mut b = rate_breaker(0.5, 4);
        for _ in 0..3 {
            b.on_success(0);
        }
        fail(&mut b, 0); // 1 of 4
        fail(&mut b, 0); // 2 of 5 = 0.4
        assert_eq!(b.state(), BreakerState::Closed);
        b.on_success(0); // 2 of 6
        fail(&mut b, 0); // 3 of 7 < 0.5
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(matches!(fail(&mut b, 0), Transition::Ejected { .. })); // 4 of 8 = 0.5
    }

    #[test]
    fn outcomes_leave_the_window_when_their_bucket_is_ten_buckets_old() {
        // Buckets of 1 s: failures at 0.5 s count until just before 10 s.
        let mut b = rate_breaker(1.0, 4);
        for _ in 0..3 {
            fail(&mut b, S / 2);
        }
        assert_eq!(b.window_counts(10 * S - 1), (0, 3));
        assert_eq!(b.window_counts(10 * S), (0, 0));
        let mut late = b.clone();
        assert!(matches!(
            fail(&mut b, 10 * S - 1),
            Transition::Ejected { .. }
        ));
        assert_eq!(fail(&mut late, 10 * S), Transition::Unchanged);
        assert_eq!(late.window_counts(10 * S), (0, 1));
    }

    #[test]
    fn a_bucket_reused_after_a_full_turn_starts_from_zero() {
        let mut b = rate_breaker(1.0, 100);
        fail(&mut b, 0);
        fail(&mut b, 0);
        // Slot 10 falls in the same bucket as slot 0.
        fail(&mut b, 10 * S);
        assert_eq!(b.window_counts(10 * S), (0, 1));
    }

    #[test]
    fn a_success_in_the_window_keeps_the_rate_under() {
        let mut b = rate_breaker(0.9, 2);
        b.on_success(0);
        fail(&mut b, S);
        assert_eq!(b.state(), BreakerState::Closed, "1 of 2 < 0.9");
        // The success ages out, then one more failure is 2 of 2.
        assert!(matches!(fail(&mut b, 10 * S), Transition::Ejected { .. }));
    }
}
