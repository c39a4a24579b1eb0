//! Each route's recent traffic, kept in memory for the admin console's overview: requests,
//! server errors (5xx), refusals (4xx) and the 99th-percentile latency, in
//! [`BUCKET_SECONDS`]-second buckets over the last [`BUCKETS`] of them (ten minutes).
//!
//! Nothing is added to the request path: a timer samples the per-route counters and latency
//! histograms the request path already keeps (`warden_requests_total`,
//! `warden_request_duration_seconds`) and stores the differences between two samples
//! ([`History::sample`]). A reader also gets the bucket in progress, the difference between
//! the counters now and the last sample. Memory is bounded by the routes of the config
//! (a route a reload removes is dropped at the next sample) times [`BUCKETS`].
//!
//! Errors are 5xx answers, the gateway's own (502, 503, 504) included: what the route's
//! callers got. 4xx answers are counted apart as refusals (a missing token, a rate limit):
//! they are the gateway doing its work, not failing at it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use crate::metrics::{route_statuses, Metrics};

/// Width of one bucket, in seconds.
pub const BUCKET_SECONDS: u64 = 10;

/// Buckets kept per route.
pub const BUCKETS: usize = 60;

/// One route's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteTotals {
    /// Requests answered.
    pub requests: u64,
    /// 5xx answers.
    pub server_errors: u64,
    /// 4xx answers.
    pub client_errors: u64,
    /// The latency histogram: `(upper bound in seconds, observations up to it)`, increasing,
    /// the last bound `+Inf`.
    pub latency: Vec<(f64, u64)>,
}

/// Every route's counters now (`-`: requests that matched no route).
pub fn totals(m: &Metrics) -> HashMap<Arc<String>, RouteTotals> {
    let mut out: HashMap<Arc<String>, RouteTotals> = HashMap::new();
    for (route, status) in route_statuses(m) {
        let labels = crate::metrics::RouteStatus {
            route: route.clone(),
            status,
        };
        let Some(n) = m.requests.get(&labels).map(|c| c.get()) else {
            continue;
        };
        let t = out.entry(route).or_default();
        t.requests += n;
        match status {
            500..=599 => t.server_errors += n,
            400..=499 => t.client_errors += n,
            _ => {}
        }
    }
    // prometheus-client's histograms show their buckets only to an encoder: encode the one
    // family alone and read its `_bucket` lines.
    let mut registry = Registry::default();
    registry.register("d", "", m.request_duration.clone());
    let mut text = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    for line in text.lines() {
        if let Some((route, le, count)) = bucket_line(line) {
            out.entry(Arc::new(route))
                .or_default()
                .latency
                .push((le, count));
        }
    }
    for t in out.values_mut() {
        t.latency.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// `d_bucket{route="api",le="0.004"} 12` → `("api", 0.004, 12)`.
fn bucket_line(line: &str) -> Option<(String, f64, u64)> {
    let rest = line.strip_prefix("d_bucket{")?;
    let (labels, value) = rest.rsplit_once("} ")?;
    let count = value.split_whitespace().next()?.parse::<u64>().ok()?;
    let mut route = None;
    let mut le = None;
    let mut chars = labels.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next() != Some('"') {
            break;
        }
        let mut v = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next()? {
                    'n' => v.push('\n'),
                    other => v.push(other),
                },
                '"' => break,
                c => v.push(c),
            }
        }
        match name.as_str() {
            "route" => route = Some(v),
            "le" => {
                le = Some(if v == "+Inf" {
                    f64::INFINITY
                } else {
                    v.parse().ok()?
                })
            }
            _ => {}
        }
        if chars.next() != Some(',') {
            break;
        }
    }
    Some((route?, le?, count))
}

/// One bucket of one route: what changed between two samples.
#[derive(Clone, Debug, Default, PartialEq)]
struct Bucket {
    /// When the bucket ended (Unix seconds).
    end: u64,
    requests: u64,
    server_errors: u64,
    client_errors: u64,
    /// Observations per latency bucket (not cumulative), bounds as in `History::bounds`.
    latency: Vec<u64>,
}

impl Bucket {
    /// `now - then`: a counter that went down (its route was removed and added again by a
    /// reload) counts from zero.
    fn between(end: u64, now: &RouteTotals, then: Option<&RouteTotals>) -> Bucket {
        let d = |a: u64, b: Option<u64>| match b {
            Some(b) if b <= a => a - b,
            _ => a,
        };
        let cumulative: Vec<u64> = now
            .latency
            .iter()
            .enumerate()
            .map(|(i, (_, n))| d(*n, then.and_then(|t| t.latency.get(i)).map(|x| x.1)))
            .collect();
        // Cumulative to per-bucket: each bound's count minus the one below.
        let latency = cumulative
            .iter()
            .enumerate()
            .map(|(i, n)| n.saturating_sub(if i == 0 { 0 } else { cumulative[i - 1] }))
            .collect();
        Bucket {
            end,
            requests: d(now.requests, then.map(|t| t.requests)),
            server_errors: d(now.server_errors, then.map(|t| t.server_errors)),
            client_errors: d(now.client_errors, then.map(|t| t.client_errors)),
            latency,
        }
    }

    fn add(&mut self, other: &Bucket) {
        self.requests += other.requests;
        self.server_errors += other.server_errors;
        self.client_errors += other.client_errors;
        if self.latency.len() < other.latency.len() {
            self.latency.resize(other.latency.len(), 0);
        }
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
    }
}

/// The routes' buckets and the last sample they were measured from.
#[derive(Debug, Default)]
pub struct History {
    last: Option<(u64, HashMap<Arc<String>, RouteTotals>)>,
    routes: HashMap<Arc<String>, VecDeque<Bucket>>,
}

impl History {
    /// No sample yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes a bucket at `now` (Unix seconds) with what changed since the last sample; the
    /// first sample only sets the baseline.
    pub fn sample(&mut self, now: u64, totals: HashMap<Arc<String>, RouteTotals>) {
        if let Some((_, last)) = &self.last {
            self.routes.retain(|r, _| totals.contains_key(r));
            for (route, t) in &totals {
                let b = Bucket::between(now, t, last.get(route));
                let ring = self.routes.entry(route.clone()).or_default();
                if ring.len() == BUCKETS {
                    ring.pop_front();
                }
                ring.push_back(b);
            }
        }
        self.last = Some((now, totals));
    }

    /// The overview at `now`, with `current` (the counters now) as the bucket in progress:
    /// per route, the last minute, the whole window and each bucket.
    pub fn view(&self, now: u64, current: &HashMap<Arc<String>, RouteTotals>) -> Value {
        let last = self.last.as_ref();
        let mut names: Vec<&Arc<String>> = current.keys().collect();
        names.sort();
        let routes: Vec<Value> = names
            .into_iter()
            .map(|route| {
                let bounds: Vec<f64> = current[route].latency.iter().map(|(le, _)| *le).collect();
                let mut buckets: Vec<Bucket> = self
                    .routes
                    .get(route)
                    .map(|r| r.iter().cloned().collect())
                    .unwrap_or_default();
                if let Some((_, then)) = last {
                    buckets.push(Bucket::between(now, &current[route], then.get(route)));
                }
                let mut minute = Bucket::default();
                let mut window = Bucket::default();
                for b in &buckets {
                    window.add(b);
                    if b.end + 60 > now {
                        minute.add(b);
                    }
                }
                let series: Vec<Value> = buckets.iter().map(|b| summary(b, &bounds)).collect();
                json!({
                    "route": route.as_str(),
                    "last_minute": summary(&minute, &bounds),
                    "window": summary(&window, &bounds),
                    "series": series,
                })
            })
            .collect();
        json!({
            "now": now,
            "bucket_seconds": BUCKET_SECONDS,
            "window_seconds": BUCKET_SECONDS * BUCKETS as u64,
            "sampled_at": last.map(|(t, _)| *t),
            "routes": routes,
        })
    }
}

fn summary(b: &Bucket, bounds: &[f64]) -> Value {
    json!({
        "end": b.end,
        "requests": b.requests,
        "server_errors": b.server_errors,
        "client_errors": b.client_errors,
        "error_ratio": if b.requests == 0 { 0.0 } else { b.server_errors as f64 / b.requests as f64 },
        "p99_ms": quantile(0.99, &b.latency, bounds).map(|s| (s * 1e5).round() / 100.0),
    })
}

/// The `q` quantile of observations counted per bucket (upper `bounds`, the last `+Inf`), as
/// Prometheus's `histogram_quantile` estimates it: linear within the bucket it falls in; in
/// the `+Inf` bucket, the highest finite bound.
fn quantile(q: f64, counts: &[u64], bounds: &[f64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, (&n, &upper)) in counts.iter().zip(bounds).enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            if upper.is_infinite() {
                return Some(lower);
            }
            return Some(lower + (upper - lower) * (rank - below as f64) / n as f64);
        }
        below += n;
    }
    bounds.iter().rev().find(|b| b.is_finite()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(m: &Metrics, name: &str, status: u16, seconds: f64, n: usize) {
        let r = Arc::new(name.to_owned());
        for _ in 0..n {
            m.count_request(&r, status);
            m.observe_request_duration(&r, seconds);
        }
    }

    #[test]
    fn the_counters_are_read_per_route_with_errors_apart_from_refusals() {
        let m = Metrics::new();
        route(&m, "api", 200, 0.003, 90);
        route(&m, "api", 503, 0.003, 4);
        route(&m, "api", 401, 0.001, 6);
        route(&m, "-", 404, 0.0001, 2);
        let t = totals(&m);
        let api = &t[&Arc::new("api".to_owned())];
        assert_eq!(
            (api.requests, api.server_errors, api.client_errors),
            (100, 4, 6)
        );
        assert_eq!(api.latency.last(), Some(&(f64::INFINITY, 100)));
        assert_eq!(api.latency.len(), 17, "16 bounds and +Inf");
        assert_eq!(t[&Arc::new("-".to_owned())].client_errors, 2);
    }

    #[test]
    fn buckets_hold_what_changed_and_the_p99_follows_the_slow_requests() {
        let m = Metrics::new();
        let mut h = History::new();
        route(&m, "api", 200, 0.001, 10);
        h.sample(1000, totals(&m));
        // Nothing before the baseline counts.
        let v = h.view(1000, &totals(&m));
        assert_eq!(v["routes"][0]["window"]["requests"], 0, "{v}");
        // 100 requests: 98 fast, 2 at ~3 s; 5 of them 502s.
        route(&m, "api", 200, 0.001, 93);
        route(&m, "api", 502, 0.001, 5);
        route(&m, "api", 200, 3.0, 2);
        h.sample(1010, totals(&m));
        route(&m, "api", 200, 0.001, 7);
        let v = h.view(1015, &totals(&m));
        let api = &v["routes"][0];
        assert_eq!(api["route"], "api");
        let series = api["series"].as_array().unwrap();
        assert_eq!(
            series.len(),
            2,
            "one closed bucket and the one in progress: {v}"
        );
        assert_eq!(series[0]["requests"], 100);
        assert_eq!(series[0]["server_errors"], 5);
        assert_eq!(series[0]["error_ratio"], 0.05);
        // The 99th of 100 falls among the two slow ones: in the 2.048–4.096 s bucket.
        let p99 = series[0]["p99_ms"].as_f64().unwrap();
        assert!((2048.0..=4096.0).contains(&p99), "{p99}");
        assert_eq!(series[1]["requests"], 7);
        assert!(series[1]["p99_ms"].as_f64().unwrap() <= 1.0);
        assert_eq!(api["last_minute"]["requests"], 107);
        assert_eq!(v["bucket_seconds"], 10);
    }

    #[test]
    fn memory_is_bounded_and_removed_routes_are_dropped() {
        let m = Metrics::new();
        let mut h = History::new();
        for i in 0..(BUCKETS as u64 + 20) {
            route(&m, "api", 200, 0.001, 1);
            route(&m, "old", 200, 0.001, 1);
            h.sample(i * 10, totals(&m));
        }
        assert_eq!(h.routes[&Arc::new("api".to_owned())].len(), BUCKETS);
        m.forget_route("old");
        h.sample(10_000, totals(&m));
        assert!(!h.routes.contains_key(&Arc::new("old".to_owned())));
        // Only the last minute counts in `last_minute`.
        let v = h.view(10_000, &totals(&m));
        assert_eq!(v["routes"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v["routes"][0]["last_minute"]["requests"], 0);
        assert_eq!(v["routes"][0]["window"]["requests"], BUCKETS as u64 - 1);
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let bounds = [0.1, 0.2, f64::INFINITY];
        assert_eq!(quantile(0.99, &[0, 0, 0], &bounds), None);
        assert_eq!(quantile(0.5, &[10, 0, 0], &bounds), Some(0.05));
        let q = quantile(0.99, &[50, 50, 0], &bounds).unwrap();
        assert!((q - 0.198).abs() < 1e-9, "{q}");
        // Beyond the highest bound: the highest bound, as Prometheus does.
        assert_eq!(quantile(0.99, &[0, 0, 5], &bounds), Some(0.2));
    }

    #[test]
    fn bucket_lines_are_parsed_whatever_the_label_order() {
        assert_eq!(
            bucket_line(r#"d_bucket{route="a\"b",le="0.004"} 12"#),
            Some(("a\"b".into(), 0.004, 12))
        );
        assert_eq!(
            bucket_line(r#"d_bucket{le="+Inf",route="api"} 3"#),
            Some(("api".into(), f64::INFINITY, 3))
        );
        assert_eq!(bucket_line(r#"d_count{route="api"} 3"#), None);
        assert_eq!(bucket_line(r#"d_bucket{route="api",le="x"} 3"#), None);
    }
}
