//! Active health checks: each endpoint is probed with `GET <path>` (or, with `grpc_service`,
//! the gRPC health protocol's `Check`) every interval; after
//! `unhealthy_threshold` failures in a row it leaves the rotation, after `healthy_threshold`
//! successes in a row it returns. The task holds only a weak reference, so it ends when a
//! reload drops the cluster.

use std::sync::{Arc, Weak};

use http::{Request, Uri};
use http_body_util::BodyExt;

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
    let path = match &hc.grpc_service {
        Some(_) => "/grpc.health.v1.Health/Check",
        None => hc.path.as_str(),
    };
    let uri = if c.version == http::Version::HTTP_2 {
        Uri::builder()
            .scheme(c.scheme.clone())
            .authority(ep.authority.clone())
            .path_and_query(path)
            .build()
    } else {
        Uri::builder().path_and_query(path).build()
    };
    let Ok(uri) = uri else { return false };
    let req = Request::builder()
        .uri(uri)
        .version(c.version)
        .header(http::header::HOST, ep.authority.as_str())
        .header(http::header::USER_AGENT, "warden-health-check");
    let req = match &hc.grpc_service {
        Some(service) => req
            .method(http::Method::POST)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(UpstreamBody::Full {
                data: Some(crate::grpc::health_request(service)),
                trailers: None,
            }),
        None => req.body(UpstreamBody::empty()),
    };
    let Ok(req) = req else { return false };
    let check = async {
        let res = match c.connections(idx).send(req).await {
            Ok(res) => res,
            Err(e) => {
                tracing::debug!(cluster = %c.name, endpoint = %ep.label, error = %e, "health check failed");
                return None;
            }
        };
        let status = res.status().as_u16();
        if hc.grpc_service.is_none() {
            return Some(if hc.expected_statuses.is_empty() {
                (200..300).contains(&status)
            } else {
                hc.expected_statuses.contains(&status)
            });
        }
        // gRPC: a 200 whose message says SERVING and whose status (in the trailers, or in
        // the head of a trailers-only answer) is OK.
        let head_status = crate::grpc::head_status(res.headers());
        let collected = http_body_util::Limited::new(res.into_body(), 64 * 1024)
            .collect()
            .await
            .ok()?;
        let grpc_status = collected
            .trailers()
            .and_then(crate::grpc::head_status)
            .or(head_status);
        let body = collected.to_bytes();
        let serving = crate::grpc::health_serving(&body);
        if !(status == 200 && grpc_status == Some(0) && serving) {
            tracing::debug!(cluster = %c.name, endpoint = %ep.label, status, ?grpc_status, body = ?&body[..body.len().min(32)], "gRPC health check not passed");
        }
        Some(status == 200 && grpc_status == Some(0) && serving)
    };
    matches!(
        tokio::time::timeout(hc.timeout.0, check).await,
        Ok(Some(true))
    )
}
