//! An adaptive concurrency limit (gradient), sans-IO: callers pass the time, each request's
//! latency and the requests in flight. After Netflix's concurrency-limits `GradientLimit`.
//!
//! The limit follows the ratio of the best recent latency to the latest one:
//!
//! ```text
//! gradient  = clamp(min_rtt × tolerance / rtt, 0.5, 1.0)
//! new_limit = limit × gradient + √limit          (√limit: a small queue allowance)
//! limit     = clamp(0.8 × limit + 0.2 × new_limit, min_limit, max_limit)
//! ```
//!
//! While latency stays within `tolerance` of the best, the gradient is 1 and the limit grows
//! by the queue allowance; when requests queue up at the upstream, latency rises, the gradient
//! falls and the limit shrinks (by at most half per sample before smoothing). The limit does
//! not grow while fewer than half of it are in use, so a quiet period cannot inflate it.
//!
//! `min_rtt` is the smallest latency seen in the current and the previous `rtt_window`, so it
//! is re-measured every window: a lasting change in the upstream's latency becomes the new
//! baseline within two windows.

use std::time::Duration;

/// Settings of a [`Gradient`] limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradientConfig {
    /// The limit it starts at.
    pub initial_limit: usize,
    /// It never goes below this (at least 1).
    pub min_limit: usize,
    /// It never goes above this.
    pub max_limit: usize,
    /// Latency growth over the best recent latency tolerated before the limit shrinks.
    pub tolerance: f64,
    /// How long a best latency is remembered (it is re-measured every window).
    pub rtt_window: Duration,
}

/// Share of a new estimate taken into the limit per sample.
const SMOOTHING: f64 = 0.2;
/// The most one sample can cut the estimate by.
const MIN_GRADIENT: f64 = 0.5;

/// A latency-driven concurrency limit.
#[derive(Clone, Debug)]
pub struct Gradient {
    config: GradientConfig,
    limit: f64,
    window_nanos: u64,
    window_start: Option<u64>,
    current_min: Option<u64>,
    previous_min: Option<u64>,
}

impl Gradient {
    /// A limit at `initial_limit` (clamped into `[min_limit, max_limit]`).
    pub fn new(config: GradientConfig) -> Self {
        let min = config.min_limit.max(1);
        let max = config.max_limit.max(min);
        let config = GradientConfig {
            min_limit: min,
            max_limit: max,
            initial_limit: config.initial_limit.clamp(min, max),
            tolerance: if config.tolerance.is_finite() {
                config.tolerance.max(1.0)
            } else {
                1.0
            },
            rtt_window: config.rtt_window,
        };
        Self {
            limit: config.initial_limit as f64,
            window_nanos: u64::try_from(config.rtt_window.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            config,
            window_start: None,
            current_min: None,
            previous_min: None,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    /// The best latency in the current and previous window, if any.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.best().map(Duration::from_nanos)
    }

    fn best(&self) -> Option<u64> {
        match (self.current_min, self.previous_min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes one request's latency, measured at `now` with `in_flight` requests running;
    /// returns the new limit.
    pub fn on_sample(&mut self, now: u64, rtt: Duration, in_flight: usize) -> usize {
        let rtt = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX).max(1);
        match self.window_start {
            Some(start) if now.saturating_sub(start) < self.window_nanos => {}
            Some(_) => {
                self.previous_min = self.current_min.take();
                self.window_start = Some(now);
            }
            None => self.window_start = Some(now),
        }
        self.current_min = Some(self.current_min.map_or(rtt, |m| m.min(rtt)));
        let best = self.best().unwrap_or(rtt);
        let gradient = (best as f64 * self.config.tolerance / rtt as f64).clamp(MIN_GRADIENT, 1.0);
        if gradient >= 1.0 && (in_flight as f64) < self.limit / 2.0 {
            return self.limit();
        }
        let estimate = self.limit * gradient + self.limit.sqrt();
        self.limit = (self.limit * (1.0 - SMOOTHING) + estimate * SMOOTHING)
            .clamp(self.config.min_limit as f64, self.config.max_limit as f64);
        self.limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn gradient() -> Gradient {
        Gradient::new(GradientConfig {
            initial_limit: 20,
            min_limit: 5,
            max_limit: 200,
            tolerance: 1.5,
            rtt_window: Duration::from_secs(10),
        })
    }

    /// Feeds `n` samples of `rtt_ms`, one per millisecond from `*now`, with the limit in use.
    fn feed(g: &mut Gradient, now: &mut u64, n: usize, rtt_ms: u64) -> Vec<usize> {
        (0..n)
            .map(|_| {
                *now += MS;
                let in_flight = g.limit();
                g.on_sample(*now, Duration::from_millis(rtt_ms), in_flight)
            })
            .collect()
    }

    #[test]
    fn steady_fast_latency_grows_the_limit_to_the_max() {
        let mut g = gradient();
        let mut now = 0;
        let limits = feed(&mut g, &mut now, 2000, 10);
        assert!(limits.windows(2).all(|w| w[1] >= w[0]), "never shrinks");
        assert!(limits[10] > 20, "grows from the start: {}", limits[10]);
        assert_eq!(g.limit(), 200);
    }

    #[test]
    fn latency_within_tolerance_still_grows() {
        let mut g = gradient();
        let mut now = 0;
        feed(&mut g, &mut now, 5, 10);
        feed(&mut g, &mut now, 500, 14);
        assert!(g.limit() > 20, "{}", g.limit());
    }

    #[test]
    fn slow_latency_shrinks_the_limit_to_the_min() {
        let mut g = gradient();
        let mut now = 0;
        feed(&mut g, &mut now, 300, 10);
        let high = g.limit();
        assert!(high > 50, "{high}");
        let limits = feed(&mut g, &mut now, 200, 50);
        assert!(limits.windows(2).all(|w| w[1] <= w[0]), "never grows");
        assert_eq!(g.limit(), 5);
        assert_eq!(g.min_rtt(), Some(Duration::from_millis(10)));
    }

    #[test]
    fn one_sample_cuts_by_at_most_the_smoothed_half() {
        let mut g = gradient();
        let mut now = 0;
        feed(&mut g, &mut now, 1, 10);
        let before = g.limit;
        now += MS;
        g.on_sample(now, Duration::from_secs(10), 20);
        let expected = before * 0.8 + (before * 0.5 + before.sqrt()) * 0.2;
        assert!(
            (g.limit - expected).abs() < 1e-9,
            "{} vs {expected}",
            g.limit
        );
    }

    #[test]
    fn an_idle_cluster_does_not_inflate_the_limit() {
        let mut g = gradient();
        for i in 1..=1000 {
            g.on_sample(i * MS, Duration::from_millis(10), 3);
        }
        assert_eq!(g.limit(), 20, "9 of 20 in use or fewer: no growth");
        g.on_sample(1001 * MS, Duration::from_millis(10), 10);
        assert!(g.limit() >= 20);
        assert!(g.limit > 20.0, "half in use: grows");
    }

    #[test]
    fn a_lasting_latency_change_becomes_the_baseline_after_two_windows() {
        let mut g = gradient();
        let mut now = 0;
        feed(&mut g, &mut now, 10, 10);
        // Slower for good: the limit shrinks, then the 10 ms best ages out.
        feed(&mut g, &mut now, 100, 40);
        assert_eq!(g.limit(), 5);
        now += 10_000 * MS;
        feed(&mut g, &mut now, 1, 40);
        now += 10_000 * MS;
        feed(&mut g, &mut now, 1, 40);
        assert_eq!(g.min_rtt(), Some(Duration::from_millis(40)));
        feed(&mut g, &mut now, 200, 40);
        assert!(
            g.limit() > 5,
            "grows again at the new baseline: {}",
            g.limit()
        );
    }

    #[test]
    fn limits_are_clamped_and_sane() {
        let g = Gradient::new(GradientConfig {
            initial_limit: 1000,
            min_limit: 0,
            max_limit: 10,
            tolerance: f64::NAN,
            rtt_window: Duration::ZERO,
        });
        assert_eq!(g.limit(), 10);
        let mut g = g;
        assert!(g.on_sample(0, Duration::ZERO, 10) <= 10);
        assert!(g.on_sample(1, Duration::from_secs(100), 10) >= 1);
    }
}
