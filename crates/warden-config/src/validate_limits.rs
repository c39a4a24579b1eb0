//! Meaning checks for traffic protection: outlier detection, retries, concurrency limits and
//! the shared rate-limit store.

use crate::model::*;
use crate::ConfigErrors;

pub(crate) fn cluster_protection(c: &ClusterConfig, p: &str, e: &mut ConfigErrors) {
    if let Some(o) = &c.outlier_detection {
        let op = format!("{p}.outlier_detection");
        if o.consecutive_failures == 0 {
            e.push(format!("{op}.consecutive_failures"), "must be at least 1");
        }
        if !(0.0..=1.0).contains(&o.failure_rate) {
            e.push(format!("{op}.failure_rate"), "must be between 0.0 and 1.0");
        }
        if o.window.0.is_zero() {
            e.push(format!("{op}.window"), "must be more than zero");
        }
        if o.base_ejection.0.is_zero() || o.base_ejection > o.max_ejection {
            e.push(
                format!("{op}.base_ejection"),
                "must be more than zero and at most max_ejection",
            );
        }
        if o.half_open_requests == 0 {
            e.push(format!("{op}.half_open_requests"), "must be at least 1");
        }
        if o.max_ejected_percent > 100 {
            e.push(format!("{op}.max_ejected_percent"), "at most 100");
        }
    }
    if let Some(r) = &c.retries {
        let rp = format!("{p}.retries");
        if r.attempts > 10 {
            e.push(format!("{rp}.attempts"), "at most 10");
        }
        for m in &r.methods {
            if m.value().is_none() || m.as_str().chars().any(|c| c.is_ascii_lowercase()) {
                e.push(
                    format!("{rp}.methods"),
                    format!("`{m}` is not a method (write it in capitals)"),
                );
            }
        }
        for s in &r.statuses {
            if !(100..=599).contains(s) {
                e.push(
                    format!("{rp}.statuses"),
                    format!("{s} is not an HTTP status"),
                );
            }
        }
        for s in &r.grpc_statuses {
            if !(1..=16).contains(s) {
                e.push(
                    format!("{rp}.grpc_statuses"),
                    format!("{s} is not a gRPC error status (1-16)"),
                );
            }
        }
        if r.per_try_timeout.0.is_zero() {
            e.push(format!("{rp}.per_try_timeout"), "must be more than zero");
        }
        if r.backoff_base > r.backoff_max {
            e.push(format!("{rp}.backoff_base"), "must be at most backoff_max");
        }
        if r.budget_percent > 100 {
            e.push(format!("{rp}.budget_percent"), "at most 100");
        }
        if r.buffer_body_bytes.0 > 16 * 1024 * 1024 {
            e.push(format!("{rp}.buffer_body_bytes"), "at most 16MiB");
        }
    }
    if let Some(a) = &c.adaptive_concurrency {
        let ap = format!("{p}.adaptive_concurrency");
        if a.min_limit == 0 || a.min_limit > a.initial_limit || a.initial_limit > a.max_limit {
            e.push(
                ap.clone(),
                "needs 1 <= min_limit <= initial_limit <= max_limit",
            );
        }
        if a.tolerance.is_nan() || a.tolerance < 1.0 {
            e.push(format!("{ap}.tolerance"), "must be at least 1.0");
        }
    }
}

pub(crate) fn store(c: &Config, e: &mut ConfigErrors) {
    let s = &c.rate_limit_store;
    if let Some(u) = &s.redis_url {
        if let Some(why) = crate::validate_auth::redis_url_problem(u, "rate_limit_store.password") {
            e.push("rate_limit_store.redis_url", why);
        }
    }
    if let Some(pw) = &s.password {
        if let Err(err) = pw.check_local() {
            e.push("rate_limit_store.password", err.to_string());
        }
    }
    if s.timeout.0.is_zero() || s.timeout.0 > std::time::Duration::from_secs(1) {
        e.push(
            "rate_limit_store.timeout",
            "must be more than zero and at most 1s",
        );
    }
    if s.gateways == 0 {
        e.push("rate_limit_store.gateways", "must be at least 1");
    }
    for (i, r) in c.routes.iter().enumerate() {
        for (j, l) in r.rate_limits.iter().enumerate() {
            let lp = format!("routes[{i}].rate_limits[{j}]");
            if l.store == LimitStore::Redis && s.redis_url.is_none() {
                e.push(
                    format!("{lp}.store"),
                    "store = \"redis\" needs rate_limit_store.redis_url",
                );
            }
            if l.store == LimitStore::Local && l.lease > 0 {
                e.push(
                    format!("{lp}.lease"),
                    "leasing is only for store = \"redis\"",
                );
            }
            if u64::from(l.lease) > l.burst.unwrap_or(l.requests) {
                e.push(format!("{lp}.lease"), "must be at most the burst");
            }
            for (name, t) in &l.tiers {
                if u64::from(l.lease) > t.burst.unwrap_or(t.requests) {
                    e.push(
                        format!("{lp}.lease"),
                        format!("must be at most the burst of every tier (tier `{name}`)"),
                    );
                }
            }
        }
    }
}
