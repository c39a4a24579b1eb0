//! Rate limits: the route's limits in order; a request must pass all of them. The state of the
//! limit with the fewest requests left is reported in the `RateLimit-Policy` and `RateLimit`
//! headers of the response (draft-ietf-httpapi-ratelimit-headers), refusals included; a
//! refusal is `429` with `Retry-After` ([`Reject::RateLimited`]).
//!
//! Local limits decide synchronously, without allocating; the request phase only waits when a
//! Redis-backed limit has no local lease left, and then for at most the store's timeout. When
//! Redis cannot answer, the limit's `on_store_failure` decides: `local` limits at this
//! gateway's share, `unlimited` skips the limit, `closed` refuses with `Retry-After: 1`.

use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue};

use super::{Exchange, Flow};
use crate::error::Reject;
use crate::router::{LimitKey, Limiter, RouteLimit};

/// A route's limits, in config order.
pub(crate) struct RateLimits(pub(crate) Vec<RouteLimit>);

/// Nanoseconds on a monotonic clock, for the rate limiters.
fn clock_nanos() -> u64 {
    static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    START.elapsed().as_nanos() as u64
}

impl RateLimits {
    pub(crate) async fn request(&self, ex: &mut Exchange<'_>, head: &http::request::Parts) -> Flow {
        match self.check(ex, &head.headers).await {
            Ok(()) => Flow::Continue,
            Err(r) => Flow::Reject(r),
        }
    }

    async fn check(&self, ex: &mut Exchange<'_>, headers: &http::HeaderMap) -> Result<(), Reject> {
        use warden_limits::Decision;
        let now = clock_nanos();
        let ip_bytes = match ex.client_ip {
            std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(a) => a.octets(),
        };
        let identity = ex.identity.as_deref();
        let mut claim_text = String::new();
        let mut combined = Vec::new();
        for l in &self.0 {
            let part = |k: &LimitKey, claim_text: &mut String| -> Option<&[u8]> {
                Some(match k {
                    LimitKey::ClientIp => &ip_bytes[..],
                    LimitKey::Route => b"",
                    LimitKey::Header(h) => headers.get(h).map_or(&b""[..], |v| v.as_bytes()),
                    LimitKey::Subject => identity.map_or(&b""[..], |i| i.subject.as_bytes()),
                    LimitKey::ApiKey => identity
                        .and_then(|i| i.key_id.as_deref())
                        .map_or(&b""[..], str::as_bytes),
                    LimitKey::Claim(name) => match identity.and_then(|i| i.claim(name)) {
                        Some(serde_json::Value::String(s)) => s.as_bytes(),
                        Some(other) => {
                            *claim_text = other.to_string();
                            return None;
                        }
                        None => b"",
                    },
                })
            };
            let key: &[u8] = if let [one] = l.keys.as_slice() {
                match part(one, &mut claim_text) {
                    Some(k) => k,
                    None => claim_text.as_bytes(),
                }
            } else {
                // A combination: each part length-prefixed, so ("ab", "c") and ("a", "bc")
                // differ.
                combined.clear();
                for k in &l.keys {
                    let bytes = match part(k, &mut claim_text) {
                        Some(b) => b,
                        None => claim_text.as_bytes(),
                    };
                    combined.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                    combined.extend_from_slice(bytes);
                }
                &combined
            };
            let bucket = l.bucket(identity);
            let decision = match &bucket.limiter {
                Limiter::Local(local) => local.check(key, now),
                Limiter::Redis(r) => match r.limiter.try_lease(key, now) {
                    Some(d) => d,
                    // Boxed so that requests which never reach Redis do not carry its future.
                    None => match Box::pin(r.limiter.check(key, now)).await {
                        Ok(d) => d,
                        Err(e) => {
                            r.store_errors.inc();
                            match r.on_failure {
                                // This gateway's share of the limit, as Redis last left it.
                                warden_config::StoreFailure::Local => {
                                    r.limiter.fallback(key, now, e)
                                }
                                warden_config::StoreFailure::Unlimited => continue,
                                warden_config::StoreFailure::Closed => {
                                    ex.rate_limit = Some((bucket.policy.clone(), 0, 1));
                                    ex.limited_by = Some((l.label.clone(), bucket.tier.clone()));
                                    return Err(Reject::RateLimited(1));
                                }
                            }
                        }
                    },
                },
            };
            match decision {
                Decision::Allowed { remaining, reset } => {
                    if ex
                        .rate_limit
                        .as_ref()
                        .is_none_or(|(_, r, _)| remaining < *r)
                    {
                        ex.rate_limit = Some((
                            bucket.policy.clone(),
                            remaining,
                            next_quota_secs(reset, bucket.emission),
                        ));
                    }
                }
                Decision::Limited { retry_after, .. } => {
                    // More quota comes exactly when the next request fits: `t` and Retry-After
                    // say the same.
                    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                    ex.rate_limit = Some((bucket.policy.clone(), 0, secs));
                    ex.limited_by = Some((l.label.clone(), bucket.tier.clone()));
                    return Err(Reject::RateLimited(secs));
                }
            }
        }
        Ok(())
    }

    /// The `RateLimit-Policy` and `RateLimit` headers, on every response of the route.
    pub(crate) fn response(&self, ex: &Exchange<'_>, head: &mut http::response::Parts) {
        let Some((policy, remaining, reset)) = &ex.rate_limit else {
            return;
        };
        let h = &mut head.headers;
        h.insert(HeaderName::from_static("ratelimit-policy"), policy.clone());
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{};r={remaining};t={reset}",
            policy
                .to_str()
                .unwrap_or("\"0\"")
                .split(';')
                .next()
                .unwrap_or("\"0\"")
        )) {
            h.insert(HeaderName::from_static("ratelimit"), v);
        }
    }
}

/// The `RateLimit` field's `t` for an allowed request: seconds (rounded up) until additional
/// quota is available (draft-ietf-httpapi-ratelimit-headers-10). A GCRA bucket regains one
/// request every `emission`, so the next one comes when the time to a full bucket (`reset`)
/// next crosses a multiple of the emission interval; a full bucket gains nothing (`t=0`).
fn next_quota_secs(reset: Duration, emission: Duration) -> u64 {
    let (reset, emission) = (reset.as_nanos(), emission.as_nanos().max(1));
    if reset == 0 {
        return 0;
    }
    let next = match reset % emission {
        0 => emission,
        r => r,
    };
    u64::try_from(next.div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::next_quota_secs;
    use std::time::Duration;

    #[test]
    fn t_is_the_time_until_the_next_request_is_regained() {
        let ms = Duration::from_millis;
        // 5 per second: one request back every 200 ms, so never more than a second away.
        assert_eq!(next_quota_secs(ms(2000), ms(200)), 1);
        assert_eq!(next_quota_secs(ms(1950), ms(200)), 1);
        // 1,000 per hour (3.6 s each): 7.3 s to full means the next one in 0.1 s...
        assert_eq!(next_quota_secs(ms(7300), ms(3600)), 1);
        // ...and 7.2 s to full (exactly two behind) means a whole interval, rounded up.
        assert_eq!(next_quota_secs(ms(7200), ms(3600)), 4);
        // A full bucket regains nothing.
        assert_eq!(next_quota_secs(Duration::ZERO, ms(200)), 0);
    }
}
