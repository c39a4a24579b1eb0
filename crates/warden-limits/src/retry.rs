//! Retry budget and back-off, sans-IO: callers pass the counts and the random draw.
//!
//! - [`RetryBudget`]: retries in flight to a cluster may be at most
//!   `max(min_in_flight, percent % of the requests in flight)`, so that when an upstream fails
//!   retries add a bounded share of load instead of multiplying it (Finagle's and linkerd's
//!   retry budgets; Envoy's `retry_budget`).
//! - [`Backoff`]: exponential back-off with full jitter — the n-th retry (0-based) waits a
//!   uniform time in `[0, min(max, base · 2ⁿ)]` (the AWS architecture blog's "full jitter"),
//!   so that clients which failed together do not retry together.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How many retries may be in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBudget {
    percent: u32,
    min_in_flight: u32,
}

impl RetryBudget {
    /// A budget of `percent` (capped at 100) of the requests in flight, and never less than
    /// `min_in_flight` retries.
    pub fn new(percent: u32, min_in_flight: u32) -> Self {
        Self {
            percent: percent.min(100),
            min_in_flight,
        }
    }

    /// Most retries allowed in flight while `requests_in_flight` requests are.
    pub fn max_retries(&self, requests_in_flight: usize) -> usize {
        let share = requests_in_flight.saturating_mul(self.percent as usize) / 100;
        share.max(self.min_in_flight as usize)
    }

    /// Whether one more retry fits with `retries_in_flight` already running.
    pub fn allows(&self, requests_in_flight: usize, retries_in_flight: usize) -> bool {
        retries_in_flight < self.max_retries(requests_in_flight)
    }

    /// Takes a slot in `retries_in_flight` if one more retry fits (atomically, so concurrent
    /// callers cannot overshoot). The caller gives the slot back with a `fetch_sub` when the
    /// retry is done.
    pub fn try_acquire(&self, requests_in_flight: usize, retries_in_flight: &AtomicUsize) -> bool {
        retries_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                self.allows(requests_in_flight, r).then_some(r + 1)
            })
            .is_ok()
    }
}

/// Exponential back-off with full jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// Back-off starting at `base`, doubling, never above `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
        }
    }

    /// The longest wait before retry `retry` (0 for the first retry): `min(max, base · 2ⁿ)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.min(20);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry `retry`, for a uniform draw `unit` in `[0, 1)` (values outside
    /// are clamped).
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        self.ceiling(retry).mul_f64(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_the_larger_of_the_floor_and_the_share() {
        let b = RetryBudget::new(20, 3);
        assert_eq!(b.max_retries(0), 3);
        assert_eq!(b.max_retries(19), 3, "20 % of 19 is 3.8, rounded down");
        assert_eq!(b.max_retries(20), 4);
        assert_eq!(b.max_retries(100), 20);
        assert!(b.allows(100, 19));
        assert!(!b.allows(100, 20), "the 21st retry would exceed 20 %");
        assert!(b.allows(0, 2));
        assert!(!b.allows(0, 3));
    }

    #[test]
    fn a_zero_budget_with_no_floor_allows_nothing() {
        let b = RetryBudget::new(0, 0);
        assert!(!b.allows(1000, 0));
        let b = RetryBudget::new(250, 0);
        assert_eq!(b.max_retries(10), 10, "percent is capped at 100");
    }

    #[test]
    fn acquiring_stops_exactly_at_the_budget() {
        let b = RetryBudget::new(10, 1);
        let retries = AtomicUsize::new(0);
        let got = (0..10).filter(|_| b.try_acquire(30, &retries)).count();
        assert_eq!(got, 3, "10 % of 30");
        assert_eq!(retries.load(Ordering::Relaxed), 3);
        retries.fetch_sub(1, Ordering::AcqRel);
        assert!(b.try_acquire(30, &retries));
        assert!(!b.try_acquire(30, &retries));
    }

    #[test]
    fn backoff_ceiling_doubles_up_to_the_max() {
        let b = Backoff::new(Duration::from_millis(25), Duration::from_millis(250));
        let ceilings: Vec<u128> = (0..6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [25, 50, 100, 200, 250, 250]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(250));
    }

    #[test]
    fn backoff_delay_spans_zero_to_the_ceiling() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.delay(0, 0.0), Duration::ZERO);
        assert_eq!(b.delay(0, 0.5), Duration::from_millis(50));
        assert_eq!(b.delay(2, 1.0), Duration::from_millis(400));
        assert_eq!(b.delay(9, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(1, 7.0), Duration::from_millis(200), "clamped");
        assert_eq!(b.delay(1, -1.0), Duration::ZERO, "clamped");
        assert_eq!(b.delay(1, f64::NAN), Duration::ZERO);
        for i in 0..1000 {
            let unit = f64::from(i) / 1000.0;
            assert!(b.delay(3, unit) <= b.ceiling(3));
        }
    }
}
