//! Listeners: accept, enforce the connection limit, TLS handshake (ALPN) or h2c sniffing,
//! then serve HTTP/1.1 or HTTP/2 with hyper until the connection ends or a drain begins.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden_telemetry::metrics::{ListenerLabel, Reason};

use crate::conn_io::{ConnShared, ConnTimeouts, Prefixed, TimedIo};
use crate::gateway::Gateway;
use crate::handler::{handle, ConnInfo};

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
        let gw = gw.clone();
        let name = name.clone();
        let label = label.clone();
        tokio::spawn(async move {
            let open = gw.metrics().open_connections.get_or_create(&label).clone();
            open.inc();
            if let Err(e) = serve_connection(stream, peer, name, gw).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            open.dec();
            drop(guard);
        });
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    listener: Arc<String>,
    gw: Arc<Gateway>,
) -> std::io::Result<()> {
    let snap = gw.snapshot();
    let Some(settings) = snap.listeners.get(listener.as_str()) else {
        return Ok(());
    };
    let timeouts = ConnTimeouts {
        header: snap.limits.header_read_timeout,
        idle: snap.limits.idle_timeout,
    };
    if let Some(tls) = settings.tls.clone() {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let tls_stream = tokio::time::timeout(timeouts.header, acceptor.accept(stream))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })??;
        let (_, session) = tls_stream.get_ref();
        let h2 = session.alpn_protocol() == Some(b"h2");
        let peer_cert = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned());
        drop(snap);
        serve_http(
            tls_stream, h2, peer, listener, true, peer_cert, timeouts, gw,
        )
        .await;
        return Ok(());
    }
    let http2 = settings.http2;
    drop(snap);
    if !http2 {
        serve_http(stream, false, peer, listener, false, None, timeouts, gw).await;
        return Ok(());
    }
    // h2c with prior knowledge: read as much of the preface as tells us which protocol this is.
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
    match tokio::time::timeout(timeouts.header, sniff).await {
        Ok(r) => r?,
        Err(_) => {
            if n > 0 {
                let _ = stream.write_all(b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n").await;
            }
            return Ok(());
        }
    }
    if n == 0 {
        return Ok(());
    }
    buf.truncate(n);
    let h2 = buf == H2_PREFACE;
    serve_http(
        Prefixed::new(Bytes::from(buf), stream),
        h2,
        peer,
        listener,
        false,
        None,
        timeouts,
        gw,
    )
    .await;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn serve_http<I>(
    io: I,
    h2: bool,
    peer: std::net::SocketAddr,
    listener: Arc<String>,
    tls: bool,
    peer_cert: Option<rustls::pki_types::CertificateDer<'static>>,
    timeouts: ConnTimeouts,
    gw: Arc<Gateway>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = gw.snapshot().limits;
    let shared = Arc::new(ConnShared::new(!h2, limits.max_header_bytes));
    let io = TimedIo::new(io, shared.clone(), timeouts, !h2);
    let info = Arc::new(ConnInfo {
        listener,
        peer,
        tls,
        http1: !h2,
        shared: shared.clone(),
        peer_cert,
    });
    let svc_gw = gw.clone();
    // Boxed so the service future is Unpin, which hyper needs to hand an HTTP/1 connection
    // back (`poll_without_shutdown`) when it is released while idle.
    let svc = service_fn(move |req| Box::pin(handle(req, info.clone(), svc_gw.clone())));
    let mut shutdown = gw.shutdown.subscribe();
    if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_header_list_size(limits.max_header_bytes as u32)
            .max_concurrent_streams(256)
            .max_pending_accept_reset_streams(50)
            .max_local_error_reset_streams(1024);
        let conn = b.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let mut draining = false;
        loop {
            tokio::select! {
                _ = conn.as_mut() => break,
                _ = shutdown.wait_for(|s| *s), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
        return;
    }

    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .keep_alive(true)
        .half_close(false)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192) + 1024);
    let mut io = io;
    let mut leftover = Bytes::new();
    loop {
        // One hyper connection per busy period: it serves requests (keep-alive) until the
        // connection has been idle for a while, then hands the socket back so its buffers are
        // freed while the client thinks.
        let mut conn = b.serve_connection(TokioIo::new(Prefixed::new(leftover, io)), svc.clone());
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
        let (rest, timed) = parts.io.into_inner().into_parts();
        io = timed;
        if result.is_err() || !released || draining || shared.active() > 0 {
            // Closed by the client, by hyper (error, `Connection: close`), or by a drain.
            let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
            return;
        }
        gw.metrics().idle_releases.inc();
        leftover = if rest.is_empty() {
            parts.read_buf
        } else {
            let mut joined = Vec::with_capacity(parts.read_buf.len() + rest.len());
            joined.extend_from_slice(&parts.read_buf);
            joined.extend_from_slice(&rest);
            Bytes::from(joined)
        };
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
