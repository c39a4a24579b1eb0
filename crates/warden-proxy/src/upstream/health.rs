//! Active HTTP health checks: each endpoint is probed with `GET <path>` every interval; after
//! `unhealthy_threshold` failures in a row it leaves the rotation, after `healthy_threshold`
//! successes in a row it returns. The task holds only a weak reference, so it ends when a
//! reload drops the cluster.

use std::sync::{Arc, Weak};

use http::{Request, Uri};

use super::{Cluster, UpstreamBody};

pub(super) fn spawn(cluster: &Arc<Cluster>) {
    for idx in 0..cluster.endpoints.len() {
        let weak = Arc::downgrade(cluster);
        tokio::spawn(probe_loop(weak, idx));
    }
}

async fn probe_loop(cluster: Weak<Cluster>, idx: usize) {
    let mut successes = 0u32;
    let mut failures = 0u32;
    loop {
        let (interval, ok) = {
            let Some(c) = cluster.upgrade() else { return };
            let Some(hc) = c.config.health_check.clone() else {
                return;
            };
            let ok = probe(&c, idx, &hc).await;
            (
                hc.interval.0,
                (ok, hc.healthy_threshold, hc.unhealthy_threshold),
            )
        };
        let (ok, healthy_threshold, unhealthy_threshold) = ok;
        {
            let Some(c) = cluster.upgrade() else { return };
            let ep = &c.endpoints[idx];
            if ok {
                successes += 1;
                failures = 0;
                if !ep.is_healthy() && successes >= healthy_threshold {
                    tracing::info!(cluster = %c.name, endpoint = %ep.label, "endpoint healthy again");
                    ep.set_healthy(true, &c.metrics);
                }
            } else {
                failures += 1;
                successes = 0;
                if ep.is_healthy() && failures >= unhealthy_threshold {
                    tracing::warn!(cluster = %c.name, endpoint = %ep.label, "endpoint unhealthy; taken out");
                    ep.set_healthy(false, &c.metrics);
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

async fn probe(c: &Cluster, idx: usize, hc: &warden_config::HealthCheckConfig) -> bool {
    let ep = &c.endpoints[idx];
    let uri = if c.version == http::Version::HTTP_2 {
        Uri::builder()
            .scheme(c.scheme.clone())
            .authority(ep.authority.clone())
            .path_and_query(hc.path.as_str())
            .build()
    } else {
        Uri::builder().path_and_query(hc.path.as_str()).build()
    };
    let Ok(uri) = uri else { return false };
    let req = Request::get(uri)
        .version(c.version)
        .header(http::header::HOST, ep.authority.as_str())
        .header(http::header::USER_AGENT, "warden-health-check")
        .body(UpstreamBody::empty());
    let Ok(req) = req else { return false };
    match tokio::time::timeout(hc.timeout.0, c.connections(idx).send(req)).await {
        Ok(Ok(res)) => {
            let status = res.status().as_u16();
            if hc.expected_statuses.is_empty() {
                (200..300).contains(&status)
            } else {
                hc.expected_statuses.contains(&status)
            }
        }
        _ => false,
    }
}
