//! The authority's listener: plain HTTP (for `warden dev` and loopback) or TLS on Warden's one
//! TLS stack ([`warden_crypto::tls`]): SNI over several certificates, client certificates for
//! `tls_client_auth`, and certificate files that rotate without a restart (the store's
//! watcher swaps them in; connections already open keep theirs).
//!
//! Connections get the gateway's timeouts: the TLS handshake and each request head must
//! finish within `header_read_timeout` (counted from accept, then from the first byte of each
//! request), an idle keep-alive connection is closed after `idle_timeout`, and at most
//! [`MAX_HANDSHAKES`] handshakes run at once. Handlers learn the peer's address and verified
//! certificate through `ConnectInfo<Peer>`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use warden_config::{ClientAuthMode, SecretRef, TlsListenerConfig};
use warden_crypto::tls::{self as stack, CertSource, CertStore, ClientAuth, KeySource, TlsField};

use crate::client_auth::Peer;
use crate::error::{AuthorityError, Result};

/// Most TLS handshakes in progress at once.
pub const MAX_HANDSHAKES: usize = 1024;

/// The connection timeouts (from `authority.header_read_timeout` and `idle_timeout`).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TLS handshake, and each request head from its first byte (the first from accept).
    pub header: Duration,
    /// An idle keep-alive connection.
    pub idle: Duration,
}

fn tls_error(e: stack::TlsError) -> AuthorityError {
    let field = match e.field {
        TlsField::Cert(i) => format!("authority.tls.certificates[{i}].cert"),
        TlsField::Key(i) => format!("authority.tls.certificates[{i}].key"),
        TlsField::ClientCa => "authority.tls.client_auth.ca".into(),
        TlsField::ClientAuth => "authority.tls.client_auth".into(),
        TlsField::Roots | TlsField::Config => "authority.tls".into(),
    };
    AuthorityError::Config(format!("{field}: {e}"))
}

fn key_source(secret: &SecretRef, i: usize) -> Result<KeySource> {
    match secret.path() {
        Some(p) => Ok(KeySource::File(p.to_path_buf())),
        None => secret.read().map(KeySource::Pem).map_err(|e| {
            AuthorityError::Config(format!("authority.tls.certificates[{i}].key: {e}"))
        }),
    }
}

/// Loads the listener's certificates into a store (chosen by SNI; the first when no name
/// matches) and builds the rustls server config that serves from it. The caller starts the
/// store's watcher.
pub fn tls_config(tls: &TlsListenerConfig) -> Result<(Arc<rustls::ServerConfig>, Arc<CertStore>)> {
    let mut sources = Vec::with_capacity(tls.certificates.len());
    for (i, c) in tls.certificates.iter().enumerate() {
        sources.push(CertSource {
            cert: c.cert.clone(),
            key: key_source(&c.key, i)?,
            server_names: c.server_names.clone(),
        });
    }
    let store = CertStore::load(sources, "authority.tls").map_err(tls_error)?;
    let client_auth = tls.client_auth.as_ref().map(|ca| ClientAuth {
        ca: ca.ca.clone(),
        required: ca.mode == ClientAuthMode::Required,
    });
    let cfg =
        stack::server_config(&store, client_auth.as_ref(), &[b"http/1.1"]).map_err(tls_error)?;
    Ok((cfg, store))
}

/// A bound listener, plain or TLS.
pub enum Listener {
    /// Plain HTTP.
    Plain(TcpListener),
    /// TLS: handshakes run in their own tasks (a slow client never holds up others), at most
    /// [`MAX_HANDSHAKES`] at once, each within the header timeout.
    Tls(TcpListener, Arc<rustls::ServerConfig>),
}

/// Serves `app` on `listener` until `shutdown` turns true, then waits for open connections
/// to finish their requests (idle ones close at once).
pub async fn serve(
    listener: Listener,
    app: axum::Router,
    timeouts: Timeouts,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = TowerToHyperService::new(app);
    // Each connection task holds a sender; when all are gone, the drain is over.
    let (open, mut drained) = mpsc::channel::<()>(1);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let (tcp, tls) = match listener {
        Listener::Plain(tcp) => (tcp, None),
        Listener::Tls(tcp, cfg) => (tcp, Some(TlsAcceptor::from(cfg))),
    };
    loop {
        let permit = match &tls {
            Some(_) => tokio::select! {
                p = handshakes.clone().acquire_owned() => p.ok(),
                _ = shutdown.wait_for(|s| *s) => break,
            },
            None => None,
        };
        let accepted = tokio::select! {
            r = tcp.accept() => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "authority accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (app, shutdown, open) = (app.clone(), shutdown.clone(), open.clone());
        match &tls {
            None => {
                let peer = Peer {
                    ip: addr.ip(),
                    cert: None,
                };
                tokio::spawn(serve_connection(
                    stream,
                    peer,
                    app,
                    timeouts,
                    Instant::now(),
                    shutdown,
                    open,
                ));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let accepted = Instant::now();
                    let hs = tokio::time::timeout(timeouts.header, acceptor.accept(stream)).await;
                    drop(permit);
                    let tls = match hs {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %addr, error = %e, "authority TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %addr, "authority TLS handshake timed out");
                            return;
                        }
                    };
                    let peer = Peer {
                        ip: addr.ip(),
                        cert: peer_cert(&tls),
                    };
                    serve_connection(tls, peer, app, timeouts, accepted, shutdown, open).await;
                });
            }
        }
    }
    drop(tcp);
    drop(open);
    let _ = drained.recv().await;
}

fn peer_cert(tls: &TlsStream<TcpStream>) -> Option<Arc<Vec<u8>>> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| Arc::new(c.as_ref().to_vec()))
}

/// Milliseconds since the connection was accepted, as kept in [`Activity`].
fn since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What a connection is doing, for its timeouts: requests in flight, when the current head
/// began (0: none pending), and when the last response was handed over.
struct Activity {
    base: Instant,
    in_flight: AtomicUsize,
    /// 1 + ms since `base` at which the pending request head's first byte came; 0 if none.
    head_since: AtomicU64,
    /// ms since `base` at which the connection last went idle.
    idle_since: AtomicU64,
}

impl Activity {
    /// When the connection must be closed if nothing changes; `None` while a request is in
    /// flight (its handler and the client's patience govern).
    fn deadline(&self, t: Timeouts) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let head = self.head_since.load(Ordering::Acquire);
        Some(if head > 0 {
            self.base + Duration::from_millis(head - 1) + t.header
        } else {
            self.base + Duration::from_millis(self.idle_since.load(Ordering::Acquire)) + t.idle
        })
    }
}

/// The connection's IO, noting when a request head starts arriving.
struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before && self.activity.in_flight.load(Ordering::Acquire) == 0 {
            let now = since(self.activity.base) + 1;
            let _ = self.activity.head_since.compare_exchange(
                0,
                now,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
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

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A request in flight on a connection; going idle when the last one is answered.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.head_since.store(0, Ordering::Release);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .idle_since
            .store(since(self.0.base), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves HTTP/1.1 on one connection until it closes, times out, or a drain ends it.
async fn serve_connection<I>(
    io: I,
    peer: Peer,
    app: TowerToHyperService<axum::Router>,
    timeouts: Timeouts,
    accepted: Instant,
    mut shutdown: watch::Receiver<bool>,
    _open: mpsc::Sender<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        base: accepted,
        // The first head's clock runs from now (accept, or the end of the TLS handshake,
        // which had its own header timeout): a client that says nothing is dropped.
        head_since: AtomicU64::new(since(accepted) + 1),
        in_flight: AtomicUsize::new(0),
        idle_since: AtomicU64::new(0),
    });
    let io = Watched {
        io,
        activity: activity.clone(),
    };
    let ip = peer.ip;
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let guard = InFlight::begin(&tracked);
        req.extensions_mut().insert(ConnectInfo(peer.clone()));
        let call = hyper::service::Service::call(&app, req);
        async move {
            let response = call.await;
            drop(guard);
            response
        }
    });
    // No timer: hyper's own head timeout would also run while a kept-alive connection waits
    // for its next request (closing it after the head timeout); `Activity` keeps both.
    let mut b = hyper::server::conn::http1::Builder::new();
    b.keep_alive(true);
    let mut conn = std::pin::pin!(b.serve_connection(TokioIo::new(io), service));
    let mut draining = false;
    loop {
        let deadline = activity.deadline(timeouts);
        // While a request is in flight, look again after a while.
        let wake = deadline.unwrap_or_else(|| Instant::now() + timeouts.header);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %ip, error = %e, "authority connection ended with an error");
                }
                return;
            }
            _ = shutdown.wait_for(|s| *s), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(wake) => {
                if activity.deadline(timeouts).is_some_and(|d| d <= Instant::now()) {
                    // Idle past the idle timeout, or a head too slow: close.
                    return;
                }
            }
        }
    }
}
