//! A circuit breaker for one upstream endpoint, as a small sans-IO state machine (callers pass
//! the time), in the manner of linkerd's consecutive-failures breaker and Envoy's outlier
//! detection:
//!
//! - **Closed**: requests flow; `failure_threshold` failures in a row open the breaker.
//! - **Open** (the endpoint is ejected): no requests until the ejection time has passed. The
//!   ejection time doubles with each ejection in a row (`base_ejection × 2ⁿ`, capped at
//!   `max_ejection`).
//! - **Half-open**: up to `trial_requests` requests are let through; if that many succeed the
//!   breaker closes (and the ejection count resets); any failure opens it again, for longer.

use std::time::Duration;

/// Breaker settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures in a row (5xx, connection errors, timeouts) that open the breaker.
    pub failure_threshold: u32,
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

/// One endpoint's breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    failures_in_a_row: u32,
    ejections_in_a_row: u32,
    trials_started: u32,
    trial_successes: u32,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            failures_in_a_row: 0,
            ejections_in_a_row: 0,
            trials_started: 0,
            trial_successes: 0,
        }
    }

    /// The current state (an open breaker whose time has passed reports `HalfOpen` only once
    /// [`Breaker::try_acquire`] has moved it there).
    pub fn state(&self) -> BreakerState {
        self.state
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

    /// Records a successful exchange.
    pub fn on_success(&mut self) {
        self.failures_in_a_row = 0;
        if self.state == BreakerState::HalfOpen {
            self.trial_successes += 1;
            if self.trial_successes >= self.config.trial_requests {
                self.state = BreakerState::Closed;
                self.ejections_in_a_row = 0;
            }
        }
    }

    /// Records a failed exchange.
    pub fn on_failure(&mut self, now: u64) {
        match self.state {
            BreakerState::Closed => {
                self.failures_in_a_row += 1;
                if self.failures_in_a_row >= self.config.failure_threshold {
                    self.eject(now);
                }
            }
            BreakerState::HalfOpen => self.eject(now),
            // A request that started before the ejection: already counted.
            BreakerState::Open { .. } => {}
        }
    }

    fn eject(&mut self, now: u64) {
        let factor = 1u32 << self.ejections_in_a_row.min(16);
        let ejection = self
            .config
            .base_ejection
            .saturating_mul(factor)
            .min(self.config.max_ejection);
        self.ejections_in_a_row = self.ejections_in_a_row.saturating_add(1);
        self.failures_in_a_row = 0;
        self.state = BreakerState::Open {
            until: now.saturating_add(u64::try_from(ejection.as_nanos()).unwrap_or(u64::MAX)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(60),
            trial_requests: 2,
        })
    }

    #[test]
    fn opens_after_exactly_the_threshold_of_failures_in_a_row() {
        let mut b = breaker();
        b.on_failure(0);
        b.on_failure(0);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire(0));
        b.on_failure(S);
        assert_eq!(b.state(), BreakerState::Open { until: 11 * S });
        assert!(!b.try_acquire(S));
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut b = breaker();
        b.on_failure(0);
        b.on_failure(0);
        b.on_success();
        b.on_failure(0);
        b.on_failure(0);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_lets_through_only_the_trials_and_closes_on_their_success() {
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(0);
        }
        assert!(
            !b.try_acquire(10 * S - 1),
            "still ejected just before the time"
        );
        assert!(b.try_acquire(10 * S), "first trial");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire(10 * S), "second trial");
        assert!(!b.try_acquire(10 * S), "no third while trials run");
        b.on_success();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire(10 * S));
    }

    #[test]
    fn a_failed_trial_ejects_again_for_longer_up_to_the_cap() {
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(0);
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
            b.on_failure(now);
        }
        assert_eq!(ejections, [10, 20, 40, 60, 60]);
    }

    #[test]
    fn closing_resets_the_ejection_time() {
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(0);
        }
        assert!(b.try_acquire(10 * S));
        b.on_failure(10 * S); // ejected for 20 s
        assert!(b.try_acquire(30 * S));
        assert!(b.try_acquire(30 * S));
        b.on_success();
        b.on_success();
        for _ in 0..3 {
            b.on_failure(40 * S);
        }
        assert_eq!(
            b.state(),
            BreakerState::Open { until: 50 * S },
            "back to the base time"
        );
    }
}
