//! Outlier detection: each endpoint's [`Breaker`] (from `warden-limits`), and the cluster-wide
//! cap on how many endpoints may be ejected at once (`max_ejected_percent`, never less than
//! one), so that a cluster-wide failure does not eject every endpoint and leave nothing to
//! serve from.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use warden_config::OutlierDetectionConfig;
use warden_limits::{Breaker, BreakerConfig, BreakerState, Transition};

/// How many endpoints are ejected, and how many may be.
pub(crate) struct EjectionCap {
    ejected: AtomicUsize,
    max: usize,
}

impl EjectionCap {
    pub(crate) fn new(endpoints: usize, max_percent: u32) -> Self {
        Self {
            ejected: AtomicUsize::new(0),
            max: (endpoints * max_percent.min(100) as usize / 100).max(1),
        }
    }

    /// Takes an ejection slot if the cap allows one more.
    fn try_take(&self) -> bool {
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        let _ = self
            .ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Endpoints ejected (open or half-open) now.
    pub(crate) fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Acquire)
    }

    /// Most endpoints that may be ejected at once.
    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

/// One endpoint's breaker. The lock is held only for a few field updates (never across an
/// await); while the breaker is closed, whether the endpoint may be picked is read without it.
pub(crate) struct EndpointBreaker {
    breaker: Mutex<Breaker>,
    /// True from ejection until the breaker closes again.
    ejected: AtomicBool,
}

/// What the admin API shows of a breaker.
pub(crate) struct BreakerView {
    pub(crate) state: BreakerState,
    pub(crate) ejections_in_a_row: u32,
}

impl EndpointBreaker {
    pub(crate) fn new(o: &OutlierDetectionConfig) -> Self {
        Self {
            breaker: Mutex::new(Breaker::new(BreakerConfig {
                failure_threshold: o.consecutive_failures,
                failure_rate: o.failure_rate,
                window: o.window.0,
                min_requests: o.min_requests,
                base_ejection: o.base_ejection.0,
                max_ejection: o.max_ejection.0,
                trial_requests: o.half_open_requests,
            })),
            ejected: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Breaker> {
        // A panic elsewhere while holding the lock leaves a consistent breaker (every update
        // is a few plain stores), so a poisoned lock is still usable.
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the breaker would let a request through now (without taking a trial slot).
    pub(crate) fn available(&self, now: u64) -> bool {
        !self.ejected.load(Ordering::Acquire) || self.lock().available(now)
    }

    /// Lets a request through (taking a half-open trial slot) or not.
    pub(crate) fn try_acquire(&self, now: u64) -> bool {
        !self.ejected.load(Ordering::Acquire) || self.lock().try_acquire(now)
    }

    /// A request let through ended without an outcome.
    pub(crate) fn abandoned(&self) {
        if self.ejected.load(Ordering::Acquire) {
            self.lock().on_abandoned();
        }
    }

    pub(crate) fn success(&self, now: u64, cap: &EjectionCap) -> Transition {
        let mut b = self.lock();
        let t = b.on_success(now);
        if t == Transition::Recovered {
            self.ejected.store(false, Ordering::Release);
            cap.release();
        }
        t
    }

    pub(crate) fn failure(&self, now: u64, cap: &EjectionCap) -> Transition {
        let mut b = self.lock();
        let t = b.on_failure(now, || cap.try_take());
        if matches!(t, Transition::Ejected { .. }) {
            self.ejected.store(true, Ordering::Release);
        }
        t
    }

    /// When the current ejection ends, if the breaker is open.
    pub(crate) fn open_until(&self) -> Option<u64> {
        match self.lock().state() {
            BreakerState::Open { until } => Some(until),
            _ => None,
        }
    }

    pub(crate) fn view(&self) -> BreakerView {
        let b = self.lock();
        BreakerView {
            state: b.state(),
            ejections_in_a_row: b.ejections_in_a_row(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_a_share_of_endpoints_but_at_least_one() {
        assert_eq!(EjectionCap::new(10, 50).max(), 5);
        assert_eq!(EjectionCap::new(3, 50).max(), 1, "1.5 rounds down");
        assert_eq!(EjectionCap::new(1, 50).max(), 1);
        assert_eq!(EjectionCap::new(4, 0).max(), 1, "one may always be ejected");
        assert_eq!(EjectionCap::new(4, 100).max(), 4);
        let cap = EjectionCap::new(4, 50);
        assert!(cap.try_take());
        assert!(cap.try_take());
        assert!(!cap.try_take());
        cap.release();
        assert!(cap.try_take());
        assert_eq!(cap.ejected(), 2);
    }

    #[test]
    fn a_breaker_ejects_only_within_the_cap_and_frees_its_slot_on_recovery() {
        let o = OutlierDetectionConfig {
            consecutive_failures: 1,
            base_ejection: warden_config::Dur(std::time::Duration::from_secs(1)),
            ..OutlierDetectionConfig::default()
        };
        let cap = EjectionCap::new(2, 50);
        let (a, b) = (EndpointBreaker::new(&o), EndpointBreaker::new(&o));
        assert!(matches!(a.failure(0, &cap), Transition::Ejected { .. }));
        assert!(!a.available(0));
        assert_eq!(b.failure(0, &cap), Transition::Refused);
        assert!(b.available(0), "kept in rotation by the cap");
        let later = 1_000_000_000;
        assert!(a.try_acquire(later), "half-open trial");
        assert_eq!(a.success(later, &cap), Transition::Recovered);
        assert_eq!(cap.ejected(), 0);
        assert!(matches!(b.failure(later, &cap), Transition::Ejected { .. }));
    }
}
