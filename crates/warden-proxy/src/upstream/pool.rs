//! Upstream connections under bursts: a per-endpoint connection cap with queueing, for each
//! data-plane thread's pool, and connection counting.
//!
//! Without a cap, 1,000 concurrent requests to an HTTP/1.1 endpoint open 1,000 connections;
//! after the burst all but `pool_max_idle` close, and the next burst opens them again (connect
//! and close per request). Here each thread holds, per endpoint:
//!
//! - request slots (a fair semaphore of `max_connections_per_endpoint` permits): a request
//!   takes one before it is sent and keeps it, in its [`super::EndpointGuard`], until its
//!   response body is done (or the exchange fails). A request that finds none free waits
//!   first come, first served, until the route's deadline; past it, 503 `upstream_busy`,
//!   counted as `connection_cap`. So no more requests are on the wire to the endpoint than
//!   connections may be open;
//! - connection slots (the same number, in the connector): each open connection holds one
//!   until it closes. A connection goes back to the idle pool a moment after its response body
//!   ends, so a request that got the freed request slot may not find it idle yet; hyper then
//!   starts a connect, which waits here for a connection slot instead of opening one more, and
//!   the request takes the connection that comes back. The cap is thus exact.
//!
//! HTTP/2 clusters multiplex every request on one connection per endpoint and thread: no
//! request slots; the connection slots still bound what is open.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warden_telemetry::metrics::{Counter, EndpointLabel};
use warden_telemetry::Metrics;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One endpoint's connection slots and metric labels, for one thread's connector.
struct EndpointConns {
    authority: Authority,
    slots: Arc<Semaphore>,
    metric: EndpointLabel,
}

/// A TCP connector that opens at most `max_connections_per_endpoint` connections to each
/// endpoint and counts them opening and closing.
#[derive(Clone)]
pub(crate) struct CappedConnector {
    inner: HttpConnector,
    endpoints: Arc<[EndpointConns]>,
    metrics: Arc<Metrics>,
    /// Longest wait for a connection slot: the cluster's connect timeout.
    wait: Duration,
}

impl CappedConnector {
    pub(crate) fn new(
        inner: HttpConnector,
        endpoints: &[(Authority, EndpointLabel)],
        cap: usize,
        metrics: Arc<Metrics>,
        wait: Duration,
    ) -> Self {
        let endpoints = endpoints
            .iter()
            .map(|(authority, metric)| EndpointConns {
                authority: authority.clone(),
                slots: Arc::new(Semaphore::new(cap)),
                metric: metric.clone(),
            })
            .collect();
        Self {
            inner,
            endpoints,
            metrics,
            wait,
        }
    }
}

impl tower_service::Service<Uri> for CappedConnector {
    type Response = Counted;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Counted, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // Only the cluster's own endpoints are ever asked for; anything else is refused.
        let ep = self
            .endpoints
            .iter()
            .find(|e| uri.authority() == Some(&e.authority));
        let Some(ep) = ep else {
            return Box::pin(async { Err("not an endpoint of this cluster".into()) });
        };
        let slots = ep.slots.clone();
        let metric = ep.metric.clone();
        let metrics = self.metrics.clone();
        let wait = self.wait;
        let connect = self.inner.call(uri);
        Box::pin(async move {
            let slot = tokio::time::timeout(wait, slots.acquire_owned())
                .await
                .map_err(|_| "no connection slot freed up within the connect timeout")?
                .map_err(|_| "connection slots closed")?;
            let io = connect.await?;
            metrics
                .upstream_connections_opened
                .get_or_create(&metric)
                .inc();
            // The counter itself, not its labels: a connection that outlives its cluster (a
            // reload removed it and its series) must not bring the series back when it closes.
            let closed = metrics
                .upstream_connections_closed
                .get_or_create(&metric)
                .clone();
            Ok(Counted {
                io,
                _slot: slot,
                closed,
            })
        })
    }
}

/// An upstream connection: holds its connection slot while open and counts its close.
pub(crate) struct Counted {
    io: TokioIo<TcpStream>,
    _slot: OwnedSemaphorePermit,
    closed: Counter,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.closed.inc();
    }
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl Read for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

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
