//! Upstream connections under bursts: a per-endpoint connection cap with queueing, for each
//! data-plane thread's pool.
//!
//! Without a cap, 1,000 concurrent requests to an HTTP/1.1 endpoint open 1,000 connections;
//! after the burst all but `pool_max_idle` close, and the next burst opens them again (connect
//! and close per request). Here each thread holds, per endpoint, request slots (a fair
//! semaphore of `max_connections_per_endpoint` permits): a request takes one before it is sent
//! and keeps it, in its [`super::EndpointGuard`], until its response body is done (or the
//! exchange fails). A request that finds none free waits first come, first served, until the
//! route's deadline; past it, 503 `upstream_busy`, counted as `connection_cap`. So no more
//! requests are on the wire to the endpoint than connections may be open.
//!
//! A request with a slot takes an idle connection or opens one ([`super::conn`]); a
//! connection is in use only by the request holding a slot, and goes back to the idle list
//! *before* that slot is released (see [`crate::body::ResponseBody`]'s drop order), so a
//! request that gets a freed slot finds the connection idle. Open connections are thus at most
//! the cap: those in use, plus the idle ones only while no request needs to open another.
//!
//! HTTP/2 clusters multiplex every request on one connection per endpoint and thread: no
//! request slots.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One thread's request slots for each endpoint of an HTTP/1.1 cluster (none for HTTP/2).
pub(crate) struct RequestSlots(Box<[Arc<Semaphore>]>);

impl RequestSlots {
    pub(crate) fn new(endpoints: usize, cap: usize, http1: bool) -> Self {
        Self(if http1 {
            (0..endpoints)
                .map(|_| Arc::new(Semaphore::new(cap)))
                .collect()
        } else {
            Box::new([])
        })
    }

    /// A request slot for endpoint `index`, waiting in turn until `deadline`; `Ok(None)`
    /// without a cap (HTTP/2), `Err(())` when the deadline passed first.
    pub(crate) async fn acquire(
        &self,
        index: usize,
        deadline: tokio::time::Instant,
    ) -> Result<Option<OwnedSemaphorePermit>, ()> {
        let Some(sem) = self.0.get(index) else {
            return Ok(None);
        };
        // The fast path, without a timer; fair: free permits exist only with no one waiting.
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Ok(Some(p));
        }
        match tokio::time::timeout_at(deadline, sem.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Some(p)),
            Ok(Err(_)) | Err(_) => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test]
    async fn waiting_requests_get_slots_in_arrival_order_and_none_past_their_deadline() {
        let slots = Arc::new(RequestSlots::new(1, 1, true));
        let far = Instant::now() + Duration::from_secs(10);
        let first = slots.acquire(0, far).await.expect("free").expect("capped");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for n in 0..3 {
            let (slots, tx) = (slots.clone(), tx.clone());
            waiters.push(tokio::spawn(async move {
                let slot = slots.acquire(0, far).await;
                tx.send(n).expect("send");
                drop(slot);
            }));
            // Each is queued before the next arrives.
            tokio::task::yield_now().await;
        }
        let late = slots
            .acquire(0, Instant::now() + Duration::from_millis(20))
            .await;
        assert!(late.is_err(), "past its deadline with the slot still taken");
        drop(first);
        for w in waiters {
            w.await.expect("waiter");
        }
        let order: Vec<i32> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(order, [0, 1, 2], "first come, first served");
    }

    #[test]
    fn http2_clusters_take_no_request_slots() {
        let slots = RequestSlots::new(2, 1, false);
        let now = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            for _ in 0..10 {
                assert!(matches!(slots.acquire(0, now).await, Ok(None)));
            }
        });
    }
}
