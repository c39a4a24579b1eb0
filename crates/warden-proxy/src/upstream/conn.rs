//! Upstream connections, pooled per data-plane thread and endpoint, and driven by the request
//! that uses them: Warden's own forwarding path on hyper's `client::conn`.
//!
//! hyper_util's pooled `Client` runs every upstream connection on a task of its own, so each
//! request hops from its task to the connection's and back (a channel send, two wake-ups) and
//! the response body comes back through another channel. Here an HTTP/1.1 connection is a
//! pair, hyper's `SendRequest` and its `Connection` future, and nobody else polls it:
//!
//! - **Checkout.** A request (holding its request slot, see [`super::pool`]) takes the most
//!   recently returned idle connection, after polling it once to see whether the upstream
//!   closed it meanwhile and dropping it if so, or if it sat idle past `pool_idle_timeout`. With
//!   none left it opens one (TCP, then TLS with ALPN `http/1.1` for `https://` endpoints, all
//!   within `connect_timeout`).
//! - **Exchange.** The request's own task polls the connection together with the response
//!   future, and the response body handed to the client ([`PooledBody`]) carries the
//!   connection and polls it as the body is read: the upstream socket is read straight into
//!   the body, on the thread and task that writes it to the client.
//! - **Return.** When the body has ended and the connection is ready for another request, the
//!   pair goes back to the endpoint's idle list (up to `pool_max_idle`; beyond, it closes). A
//!   body not read to its end (the client went away, a retry dropped the answer) closes its
//!   connection: HTTP/1.1 cannot reuse it. The connection is returned before the request's
//!   slot is released, so a request waiting for the slot finds it idle and the cap stays exact.
//! - **Stale connections.** An idle connection the upstream closed is noticed at checkout, and
//!   by a sweep on the thread that returned it (every second at most, while any are idle) so a
//!   quiet pool does not sit on closed sockets. A request that fails on a reused connection
//!   before any of it was written is sent again on the next one.
//!
//! HTTP/2 clusters multiplex all of a thread's requests to an endpoint on one connection,
//! whose `Connection` future runs on a task of its own on that thread (it serves many
//! requests at once, and pings and window updates need it polled when none is reading). A
//! burst opens one connection, not one per request: the first request connects while the
//! others wait for it.
//!
//! Opened and closed connections are counted per endpoint
//! (`warden_upstream_connections_{opened,closed}_total`).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use warden_telemetry::metrics::{Counter, EndpointLabel};
use warden_telemetry::Metrics;

use super::replay::UpstreamBody;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

type H1Sender = http1::SendRequest<UpstreamBody>;
type H1Conn = http1::Connection<Io, UpstreamBody>;
type H2Sender = http2::SendRequest<UpstreamBody>;

/// How a cluster opens connections: shared by its threads' pools.
pub(crate) struct Connector {
    /// TLS for `https://` endpoints, with the name to verify when it is fixed by config.
    tls: Option<(tokio_rustls::TlsConnector, Option<ServerName<'static>>)>,
    connect_timeout: Duration,
    http2: bool,
    metrics: Arc<Metrics>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Connector {
    pub(crate) fn new(
        tls: Option<(rustls::ClientConfig, Option<ServerName<'static>>)>,
        connect_timeout: Duration,
        http2: bool,
        metrics: Arc<Metrics>,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Self {
        let tls = tls.map(|(mut config, name)| {
            config.alpn_protocols = vec![if http2 {
                b"h2".to_vec()
            } else {
                b"http/1.1".to_vec()
            }];
            (tokio_rustls::TlsConnector::from(Arc::new(config)), name)
        });
        Self {
            tls,
            connect_timeout,
            http2,
            metrics,
            max_idle,
            idle_timeout,
        }
    }
}

/// One thread's connections to one endpoint.
pub(crate) struct EndpointPool {
    authority: Authority,
    metric: EndpointLabel,
    connector: Arc<Connector>,
    /// Idle HTTP/1.1 connections, the most recently returned last.
    idle: Mutex<VecDeque<Idle>>,
    /// Whether a sweep of the idle list is scheduled.
    sweeping: AtomicBool,
    /// The HTTP/2 connection shared by this thread's requests.
    h2: Mutex<Option<H2Sender>>,
    /// Held while an HTTP/2 connection is being opened, so a burst opens one.
    h2_opening: tokio::sync::Mutex<()>,
    /// Connections opened so far: which of a host name's addresses the next one tries
    /// first.
    turn: AtomicUsize,
}

/// The upstream end of an upgraded connection: the socket, and what was read past the 101.
pub(crate) struct Upgraded {
    pub(crate) io: Io,
    pub(crate) buffered: Bytes,
}

/// An idle HTTP/1.1 connection.
struct Idle {
    conn: Box<H1>,
    since: Instant,
}

/// An HTTP/1.1 connection: its sender and its (unspawned) connection future. Boxed once when
/// opened, so that checkout, exchange and return move a pointer, not hyper's state.
struct H1 {
    sender: H1Sender,
    conn: H1Conn,
}

impl H1 {
    /// Polls the connection once without a waker and tells whether it can take a request:
    /// not closed by the upstream, and idle.
    fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut self.conn).poll(&mut cx).is_pending() && self.sender.is_ready()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EndpointPool {
    pub(crate) fn new(
        authority: Authority,
        metric: EndpointLabel,
        connector: Arc<Connector>,
    ) -> Self {
        Self {
            authority,
            metric,
            connector,
            idle: Mutex::new(VecDeque::new()),
            sweeping: AtomicBool::new(false),
            turn: AtomicUsize::new(0),
            h2: Mutex::new(None),
            h2_opening: tokio::sync::Mutex::new(()),
        }
    }

    /// Sends `req` (its URI in the form the protocol wants) and returns the response head, its
    /// body carrying the connection (HTTP/1.1) until it is read.
    pub(crate) async fn send(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, BoxError> {
        if self.connector.http2 {
            return self.send_h2(req).await;
        }
        let mut req = req;
        loop {
            let (conn, reused) = match self.checkout() {
                Some(c) => (c, true),
                None => (self.open_h1().await?, false),
            };
            let mut conn = conn;
            let mut response = std::pin::pin!(conn.sender.try_send_request(req));
            let mut ended = false;
            let result = poll_fn(|cx| {
                if !ended && Pin::new(&mut conn.conn).poll(cx).is_ready() {
                    ended = true;
                }
                response.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(res) => {
                    let live = (!ended).then(|| Live {
                        conn,
                        ended: false,
                        pool: self.clone(),
                    });
                    return Ok(res.map(|body| PooledBody { body, live }));
                }
                Err(mut e) => match e.take_message() {
                    // Nothing of it was written: the idle connection was gone; the next.
                    Some(r) if reused => req = r,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// Sends an upgrade request on a connection of its own (an upgraded connection is never
    /// pooled). When the endpoint switches protocols (101) the connection comes back with the
    /// response, as the upstream end of the tunnel, with any bytes already read past the
    /// response head; any other answer is an ordinary response, its connection pooled after
    /// its body as usual.
    pub(crate) async fn send_upgrade(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
    ) -> Result<(Response<PooledBody>, Option<Upgraded>), BoxError> {
        let mut conn = self.open_h1().await?;
        let mut response = std::pin::pin!(conn.sender.send_request(req));
        let mut ended = false;
        let res = poll_fn(|cx| {
            if !ended && conn.conn.poll_without_shutdown(cx).is_ready() {
                ended = true;
            }
            response.as_mut().poll(cx)
        })
        .await?;
        if res.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            let live = (!ended).then(|| Live {
                conn,
                ended: false,
                pool: self.clone(),
            });
            return Ok((res.map(|body| PooledBody { body, live }), None));
        }
        // hyper stops at the 101 and hands the connection back.
        if !ended {
            poll_fn(|cx| conn.conn.poll_without_shutdown(cx)).await?;
        }
        let H1 { conn: c, .. } = *conn;
        let parts = c.into_parts();
        let upgraded = Upgraded {
            io: parts.io,
            buffered: parts.read_buf,
        };
        Ok((
            res.map(|body| PooledBody { body, live: None }),
            Some(upgraded),
        ))
    }

    /// The most recently returned idle connection still usable; the stale ones met on the
    /// way are closed.
    fn checkout(&self) -> Option<Box<H1>> {
        let timeout = self.connector.idle_timeout;
        let mut idle = lock(&self.idle);
        while let Some(mut i) = idle.pop_back() {
            if i.since.elapsed() >= timeout {
                // The rest are older still.
                idle.clear();
                return None;
            }
            if i.conn.usable() {
                return Some(i.conn);
            }
        }
        None
    }

    /// Takes back a connection whose response ended, if it can serve another request.
    fn checkin(self: &Arc<Self>, mut conn: Box<H1>) {
        if !conn.usable() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() >= self.connector.max_idle {
            return;
        }
        idle.push_back(Idle {
            conn,
            since: Instant::now(),
        });
        drop(idle);
        self.schedule_sweep();
    }

    /// Starts the sweep of idle connections on this thread unless one is scheduled: it closes
    /// those the upstream closed or that sat past the idle timeout, and ends with the list.
    fn schedule_sweep(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Release);
            return;
        };
        let every = self
            .connector
            .idle_timeout
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let pool: Weak<Self> = Arc::downgrade(self);
        drop(rt.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else { return };
                if pool.sweep() == 0 {
                    pool.sweeping.store(false, Ordering::Release);
                    return;
                }
            }
        }));
    }

    /// Closes stale idle connections; returns how many stay.
    fn sweep(&self) -> usize {
        let timeout = self.connector.idle_timeout;
        let mut idle = lock(&self.idle);
        idle.retain_mut(|i| i.since.elapsed() < timeout && i.conn.usable());
        idle.len()
    }

    async fn open_h1(&self) -> Result<Box<H1>, BoxError> {
        let io = self.open().await?;
        let (sender, conn) = http1::Builder::new().handshake(io).await?;
        Ok(Box::new(H1 { sender, conn }))
    }

    async fn send_h2(&self, req: Request<UpstreamBody>) -> Result<Response<PooledBody>, BoxError> {
        let mut req = req;
        loop {
            let (mut sender, reused) = match self.h2_sender() {
                Some(s) => (s, true),
                None => self.open_h2().await?,
            };
            match sender.try_send_request(req).await {
                Ok(res) => return Ok(res.map(|body| PooledBody { body, live: None })),
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => {
                        // The connection went away before the request left: forget it.
                        lock(&self.h2).take();
                        req = r;
                    }
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    fn h2_sender(&self) -> Option<H2Sender> {
        lock(&self.h2).as_ref().filter(|s| s.is_ready()).cloned()
    }

    /// Opens this thread's HTTP/2 connection to the endpoint, or waits for the one being
    /// opened; `true` when it was not opened here.
    async fn open_h2(&self) -> Result<(H2Sender, bool), BoxError> {
        let _one = self.h2_opening.lock().await;
        if let Some(s) = self.h2_sender() {
            return Ok((s, true));
        }
        let io = self.open().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await?;
        let label = self.metric.endpoint.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(endpoint = %label, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        *lock(&self.h2) = Some(sender.clone());
        Ok((sender, false))
    }

    /// Opens a connection (TCP, then TLS for `https://`) within the connect timeout.
    async fn open(&self) -> Result<Io, BoxError> {
        let c = &self.connector;
        let open = async {
            let turn = self.turn.fetch_add(1, Ordering::Relaxed);
            let tcp = connect_tcp(self.authority.as_str(), turn).await?;
            let stream = match &c.tls {
                None => Stream::Plain(tcp),
                Some((tls, name)) => {
                    let name = match name {
                        Some(n) => n.clone(),
                        None => {
                            let host = self.authority.host();
                            let host = host.trim_start_matches('[').trim_end_matches(']');
                            ServerName::try_from(host.to_owned()).map_err(|_| {
                                io::Error::new(
                                    io::ErrorKind::InvalidInput,
                                    "not a valid server name",
                                )
                            })?
                        }
                    };
                    Stream::Tls(Box::new(tls.connect(name, tcp).await?))
                }
            };
            Ok::<_, io::Error>(stream)
        };
        let stream = tokio::time::timeout(c.connect_timeout, open)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        let metrics = &c.metrics;
        metrics
            .upstream_connections_opened
            .get_or_create(&self.metric)
            .inc();
        // The counter itself, not its labels: a connection that outlives its cluster (a
        // reload removed it and its series) must not bring the series back when it closes.
        let closed = metrics
            .upstream_connections_closed
            .get_or_create(&self.metric)
            .clone();
        Ok(Io {
            inner: TokioIo::new(stream),
            closed,
        })
    }
}

/// Connects to `authority` with `TCP_NODELAY` and keep-alive probes on. A host name is
/// resolved (DNS, or whatever the system's resolver consults) for every new connection, so a
/// change of its addresses is followed without a reload; its addresses take turns being
/// tried first (`turn`: the connections opened so far), so connections spread over every
/// address the name has (a headless service's pods, say), and one that does not answer is
/// skipped for the next.
async fn connect_tcp(authority: &str, turn: usize) -> io::Result<TcpStream> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(authority).await?.collect();
    let mut last = None;
    for addr in in_turn(&addrs, turn) {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_nodelay(true)?;
        socket.set_keepalive(true)?;
        match socket.connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
}

/// `addrs` starting at the `turn`-th (modulo their number), wrapping around.
fn in_turn<T: Copy>(addrs: &[T], turn: usize) -> impl Iterator<Item = T> + '_ {
    let start = if addrs.is_empty() {
        0
    } else {
        turn % addrs.len()
    };
    addrs[start..].iter().chain(&addrs[..start]).copied()
}

/// A response body from an endpoint. On HTTP/1.1 it carries its connection, polls it as the
/// body is read, and hands it back to the pool when the body has ended.
pub(crate) struct PooledBody {
    body: Incoming,
    live: Option<Live>,
}

/// The connection behind an HTTP/1.1 response body.
struct Live {
    conn: Box<H1>,
    /// The connection future completed (closed): it cannot be reused.
    ended: bool,
    pool: Arc<EndpointPool>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(live) = self.live.take() {
            if !live.ended {
                live.pool.checkin(live.conn);
            }
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body read to its end leaves a reusable connection; one cut short closes it.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(live) = this.live.as_mut() {
            // Reads the socket into the body (and finishes writing the request).
            if !live.ended && Pin::new(&mut live.conn.conn).poll(cx).is_ready() {
                live.ended = true;
            }
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.release();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The transport of an upstream connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An upstream connection's IO: counts its close.
pub(crate) struct Io {
    inner: TokioIo<Stream>,
    closed: Counter,
}

impl Drop for Io {
    fn drop(&mut self) {
        self.closed.inc();
    }
}

/// Tokio's IO traits too, for the tunnel of an upgraded connection (`crate::websocket`).
impl AsyncRead for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.inner.inner_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.inner.inner_mut()).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.inner.inner_mut()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.inner.inner_mut()).poll_shutdown(cx)
    }
}

impl Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl Write for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::in_turn;

    #[test]
    fn a_names_addresses_take_turns_being_tried_first_and_all_are_tried() {
        let addrs = [1, 2, 3];
        let firsts: Vec<i32> = (0..6).map(|t| in_turn(&addrs, t).next().unwrap()).collect();
        assert_eq!(firsts, [1, 2, 3, 1, 2, 3]);
        assert_eq!(in_turn(&addrs, 4).collect::<Vec<_>>(), [2, 3, 1]);
        assert_eq!(in_turn(&[9], 5).collect::<Vec<_>>(), [9]);
        assert_eq!(in_turn::<i32>(&[], 5).count(), 0);
    }
}
