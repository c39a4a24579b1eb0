//! Listeners: accept, enforce the connection limit, TLS handshake (ALPN) or h2c sniffing,
//! then serve HTTP/1.1 or HTTP/2 with hyper until the connection ends or a drain begins.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden_telemetry::metrics::{ListenerLabel, Reason};

use crate::body::ResponseBody;
use crate::conn_io::{ConnShared, ConnTimeouts, Prefixed, TimedIo};
use crate::gateway::Gateway;
use crate::handler::{handle, ConnInfo};
use crate::refusal::{self, Refusal, Where};

/// hyper's HTTP/1 limit on header count when none is set.
const HYPER_MAX_HEADERS: usize = 100;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const RESPONSE_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nserver: warden\r\nconnection: close\r\ncontent-type: application/json\r\nretry-after: 1\r\ncontent-length: 61\r\n\r\n{\"error\":\"overloaded\",\"message\":\"gateway busy, retry later\"}\n";

/// Accepts connections on one listener until shutdown.
pub(crate) async fn accept_loop(listener: TcpListener, name: Arc<String>, gw: Arc<Gateway>) {
    let mut shutdown = gw.shutdown.subscribe();
    let label = ListenerLabel(name.clone());
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let snap = gw.snapshot();
        gw.metrics().connections.get_or_create(&label).inc();
        let Some(guard) = gw.open_connection(snap.limits.max_connections) else {
            gw.metrics()
                .rejected
                .get_or_create(&Reason("connection_limit"))
                .inc();
            let plain = snap
                .listeners
                .get(name.as_str())
                .is_none_or(|l| l.tls.is_none());
            tokio::spawn(async move {
                let mut stream = stream;
                if plain {
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_millis(200),
                        stream.write_all(RESPONSE_503),
                    )
                    .await;
                }
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let open = gw.metrics().open_connections.get_or_create(&label).clone();
        open.inc();
        let ticket = ConnTicket { _slot: guard, open };
        // Served from here to its end on one data-plane worker (see `workers`).
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot hand the connection over");
                continue;
            }
        };
        let (name, gw) = (name.clone(), gw.clone());
        crate::workers::spawn(async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => serve_connection(stream, peer, name, gw, ticket).await,
                Err(e) => tracing::debug!(%peer, error = %e, "cannot register the connection"),
            }
        });
    }
}

/// A connection's place in the global count and the open-connections gauge, released when
/// the connection ends. It travels with the connection from the accept task to the task that
/// serves it.
pub(crate) struct ConnTicket {
    _slot: crate::gateway::ConnectionGuard,
    open: warden_telemetry::metrics::Gauge,
}

impl Drop for ConnTicket {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Sets a connection up (TLS handshake, or sniffing for the HTTP/2 preface), then hands it to
/// its own task that serves it: that task's memory is only what serving needs, which is what
/// an idle keep-alive connection costs.
async fn serve_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    listener: Arc<String>,
    gw: Arc<Gateway>,
    ticket: ConnTicket,
) {
    let accepted = Instant::now();
    let snap = gw.snapshot();
    let Some(settings) = snap.listeners.get(listener.as_str()) else {
        return;
    };
    let timeouts = ConnTimeouts {
        header: snap.limits.header_read_timeout,
        idle: snap.limits.idle_timeout,
    };
    let tls = settings.tls.clone();
    let http2 = settings.http2;
    drop(snap);
    let conn = Conn {
        peer,
        listener,
        accepted,
        timeouts,
        gw,
        ticket,
    };
    let result = match tls {
        // Boxed: a TLS handshake is large, and plain connections should not pay for its room.
        Some(tls) => Box::pin(set_up_tls(stream, tls, conn)).await,
        None if !http2 => {
            conn.serve(stream, false, false, None);
            Ok(())
        }
        None => set_up_h2c(stream, conn).await,
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection set-up failed");
    }
}

/// What a connection carries from set-up to serving.
struct Conn {
    peer: std::net::SocketAddr,
    listener: Arc<String>,
    accepted: Instant,
    timeouts: ConnTimeouts,
    gw: Arc<Gateway>,
    ticket: ConnTicket,
}

impl Conn {
    /// Counts and logs a refusal made while setting the connection up.
    fn refused(&self, protocol: &'static str, refusal: Refusal) {
        let at = Where {
            listener: &self.listener,
            peer: self.peer,
            protocol,
            accepted: self.accepted,
        };
        refusal::record(&self.gw, &at, refusal);
    }

    /// Spawns the task that serves the connection: HTTP/2, or HTTP/1 with idle releases.
    fn serve<I>(
        self,
        io: I,
        h2: bool,
        tls: bool,
        peer_cert: Option<rustls::pki_types::CertificateDer<'static>>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let max_header_bytes = self.gw.snapshot().limits.max_header_bytes;
        let shared = Arc::new(ConnShared::new(!h2, max_header_bytes));
        let io = TimedIo::new(io, shared.clone(), self.timeouts, !h2);
        let info = Arc::new(ConnInfo {
            listener: self.listener,
            peer: self.peer,
            accepted: self.accepted,
            tls,
            http1: !h2,
            shared,
            peer_cert,
        });
        if h2 {
            tokio::spawn(serve_h2(io, info, self.gw, self.ticket));
        } else {
            tokio::spawn(serve_h1(io, info, self.gw, self.ticket));
        }
    }
}

/// h2c with prior knowledge: reads as much of the preface as tells which protocol this is.
async fn set_up_h2c(mut stream: TcpStream, conn: Conn) -> std::io::Result<()> {
    let mut buf = vec![0u8; H2_PREFACE.len()];
    let mut n = 0;
    let sniff = async {
        while n < H2_PREFACE.len() {
            let read = stream.read(&mut buf[n..]).await?;
            if read == 0 {
                break;
            }
            n += read;
            if buf[..n] != H2_PREFACE[..n] {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(conn.timeouts.header, sniff).await {
        Ok(r) => r?,
        Err(_) => {
            if n > 0 {
                let _ = stream.write_all(b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n").await;
            }
            let protocol = if n > 0 && buf[..n] == H2_PREFACE[..n] {
                "HTTP/2"
            } else {
                "HTTP/1.1"
            };
            conn.refused(protocol, Refusal::HeaderReadTimeout { answered: n > 0 });
            return Ok(());
        }
    }
    if n == 0 {
        return Ok(());
    }
    buf.truncate(n);
    let h2 = buf == H2_PREFACE;
    conn.serve(Prefixed::new(Bytes::from(buf), stream), h2, false, None);
    Ok(())
}

async fn set_up_tls(
    stream: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    conn: Conn,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let handshake = tokio::time::timeout(conn.timeouts.header, acceptor.accept(stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))
        .and_then(|r| r);
    let tls_stream = match handshake {
        Ok(s) => s,
        Err(e) => {
            if let Some(refusal) = Refusal::from_tls(&e) {
                conn.refused("TLS", refusal);
            }
            return Err(e);
        }
    };
    let (_, session) = tls_stream.get_ref();
    let h2 = session.alpn_protocol() == Some(b"h2");
    let peer_cert = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    conn.serve(tls_stream, h2, true, peer_cert);
    Ok(())
}

async fn serve_h2<I>(io: TimedIo<I>, info: Arc<ConnInfo>, gw: Arc<Gateway>, _ticket: ConnTicket)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = gw.snapshot().limits;
    let mut shutdown = gw.shutdown.subscribe();
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .max_pending_accept_reset_streams(50)
        .max_local_error_reset_streams(1024)
        // RFC 8441: WebSockets over HTTP/2 (extended CONNECT with `:protocol websocket`);
        // any other CONNECT is refused in normalisation.
        .enable_connect_protocol();
    // Boxed: an HTTP/2 connection's state is large; the task holds it only while it lives.
    let mut conn = Box::pin(b.serve_connection(TokioIo::new(io), service(&info, &gw)));
    let mut draining = false;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = shutdown.wait_for(|s| *s), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    let refusal = if info.shared.head_timed_out() {
        Some(Refusal::HeaderReadTimeout { answered: false })
    } else {
        result.err().as_ref().and_then(Refusal::from_h2)
    };
    if let Some(r) = refusal {
        info.refused(&gw, r);
    }
}

/// HTTP/1: busy periods served by hyper, released idle periods in between. While released,
/// this future holds only the socket, its timers and a few pointers; each busy period's state
/// (hyper's connection and buffers) lives in its own boxed future.
async fn serve_h1<I>(io: TimedIo<I>, info: Arc<ConnInfo>, gw: Arc<Gateway>, _ticket: ConnTicket)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut shutdown = gw.shutdown.subscribe();
    let mut io = io;
    let mut leftover = Bytes::new();
    loop {
        let period = h1_busy_period(io, leftover, &info, &gw, &mut shutdown);
        match Box::pin(period).await {
            Some((timed, rest)) => {
                io = timed;
                leftover = rest;
            }
            None => return,
        }
        gw.metrics().idle_releases.inc();
        info.shared.shrink_idle();
        if leftover.is_empty() {
            // Wait for the next request's first byte with no buffers held; the idle timeout
            // still applies (TimedIo), and a drain closes the connection.
            let mut first = [0u8; 1];
            let read = tokio::select! {
                r = io.read(&mut first) => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            match read {
                Ok(1) => leftover = Bytes::copy_from_slice(&first),
                _ => return,
            }
        }
    }
}

/// What the request service returns for one request.
type HandlerFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<hyper::Response<ResponseBody>, Infallible>> + Send>,
>;

/// The request service for a connection. Its futures are boxed so they are `Unpin`, which
/// hyper needs to hand an HTTP/1 connection back (`poll_without_shutdown`) when it is released.
fn service(
    info: &Arc<ConnInfo>,
    gw: &Arc<Gateway>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<ResponseBody>,
    Error = Infallible,
    Future = HandlerFuture,
> + Clone
       + Unpin {
    let info = info.clone();
    let gw = gw.clone();
    service_fn(move |req| -> HandlerFuture { Box::pin(handle(req, info.clone(), gw.clone())) })
}

/// Serves HTTP/1 requests on a connection until it closes (returns `None`) or has been idle
/// long enough to be released (returns the socket and any bytes hyper had already read).
async fn h1_busy_period<I>(
    io: TimedIo<I>,
    leftover: Bytes,
    info: &Arc<ConnInfo>,
    gw: &Arc<Gateway>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<(TimedIo<I>, Bytes)>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = &info.shared;
    let limits = gw.snapshot().limits;
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        // The header-read timeout is `TimedIo`'s (`server.header_read_timeout`), across busy
        // periods; hyper's own (30 s by default once a timer is set) would only duplicate it,
        // at the cost of a boxed timer armed and disarmed for every request.
        .header_read_timeout(None)
        .keep_alive(true)
        .half_close(false)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192) + 1024);
    // hyper's own limit is 100; set another, it builds a header array of that size for every
    // request head (a measurable cost), so it is set only when it differs.
    if limits.max_headers != HYPER_MAX_HEADERS {
        b.max_headers(limits.max_headers);
    }
    let mut conn = b.serve_connection(TokioIo::new(Prefixed::new(leftover, io)), service(info, gw));
    let mut draining = false;
    let mut released = false;
    let result = loop {
        tokio::select! {
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
            _ = shutdown.wait_for(|s| *s), if !draining => {
                draining = true;
                std::pin::Pin::new(&mut conn).graceful_shutdown();
            }
            _ = shared.release_requested(), if !draining && !released => {
                if shared.active() == 0 {
                    released = true;
                    // On an idle connection this closes hyper's side at once; if a request
                    // slipped in meanwhile, hyper finishes it and closes with it.
                    std::pin::Pin::new(&mut conn).graceful_shutdown();
                }
            }
        }
    };
    let parts = conn.into_parts();
    let (rest, mut io) = parts.io.into_inner().into_parts();
    if let Some(tunnel) = shared.take_tunnel() {
        // The 101 is written and hyper has let go: splice the client with the upstream,
        // starting with what hyper had read past the upgrade request.
        if result.is_err() {
            tunnel.abandon();
            return None;
        }
        let mut first = Vec::with_capacity(parts.read_buf.len() + rest.len());
        first.extend_from_slice(&parts.read_buf);
        first.extend_from_slice(&rest);
        drop(parts.read_buf);
        tunnel
            .run(io.into_inner(), Bytes::from(first), shutdown.clone())
            .await;
        return None;
    }
    let refusal = if shared.head_timed_out() {
        Some(Refusal::HeaderReadTimeout { answered: true })
    } else {
        result
            .as_ref()
            .err()
            .and_then(|e| Refusal::from_h1(e, shared.mid_head()))
    };
    if let Some(r) = refusal {
        info.refused(gw, r);
    }
    if result.is_err() || !released || draining || shared.active() > 0 {
        // Closed by the client, by hyper (error, `Connection: close`), or by a drain.
        let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
        return None;
    }
    // Copy what hyper had buffered: its `read_buf` is a view into hyper's whole read buffer,
    // and keeping the view would keep the buffer.
    let mut joined = Vec::with_capacity(parts.read_buf.len() + rest.len());
    joined.extend_from_slice(&parts.read_buf);
    joined.extend_from_slice(&rest);
    Some((io, Bytes::from(joined)))
}
