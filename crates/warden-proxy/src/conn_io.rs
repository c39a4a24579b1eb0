//! The client connection's IO wrapper: it enforces the header-read and idle timeouts (hyper's
//! own header timeout closes without a response and has no idle timeout of its own), answers a
//! slow client with 408 before cutting it off, and feeds HTTP/1 bytes to the framing
//! [`Inspector`](crate::h1_inspect::Inspector).
//!
//! Phases: a connection starts `ReadingHead` (the header timeout runs from accept, so a client
//! that connects and says nothing is dropped); while requests are in flight it is `Busy` (no IO
//! timer: the request timeout governs); when the last response finishes it becomes `Idle` (the
//! idle timeout runs); the first byte of the next request makes it `ReadingHead` again.
//!
//! Idle HTTP/1 connections are also *released*: after `RELEASE_AFTER` (20 ms) idle, the wrapper asks
//! the server loop (through [`ConnShared::release_requested`]) to take the connection back from
//! hyper, which frees hyper's per-connection read and write buffers (8 KiB each) while the
//! connection waits for its next request. This is what nginx does with idle keep-alive
//! connections, and it keeps 10,000 idle connections in a few tens of MiB.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::h1_inspect::{Inspector, Verdict};

const RESPONSE_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nserver: warden\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 62\r\n\r\n{\"error\":\"request_timeout\",\"message\":\"request head too slow\"}\n";

/// State shared between a connection's IO and the requests served on it.
#[derive(Default)]
pub(crate) struct ConnShared {
    active: AtomicUsize,
    waker: AtomicWaker,
    inspector: Option<Mutex<Inspector>>,
    release: Notify,
    /// The header-read timeout ended the connection while a head was awaited (after the 408
    /// on HTTP/1): a refusal the server loop logs when the connection ends.
    head_timed_out: AtomicBool,
    /// An accepted WebSocket upgrade, waiting for the server loop to take the connection
    /// back from hyper after the 101.
    tunnel: Mutex<Option<crate::websocket::Tunnel>>,
}

impl ConnShared {
    pub(crate) fn new(http1: bool, max_header_bytes: usize) -> Self {
        Self {
            inspector: http1.then(|| Mutex::new(Inspector::new(max_header_bytes))),
            ..Default::default()
        }
    }

    /// Marks a request in flight until the guard drops (when its response body is done).
    pub(crate) fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(self.clone())
    }

    /// Resolves when the connection has been idle long enough to be taken back from hyper.
    pub(crate) async fn release_requested(&self) {
        self.release.notified().await;
    }

    /// Frees what the framing inspector keeps between requests (called while released).
    pub(crate) fn shrink_idle(&self) {
        if let Some(inspector) = &self.inspector {
            inspector.lock().unwrap_or_else(|p| p.into_inner()).shrink();
        }
    }

    /// Leaves an accepted upgrade for the server loop.
    pub(crate) fn hand_off(&self, tunnel: crate::websocket::Tunnel) {
        *self.tunnel.lock().unwrap_or_else(|p| p.into_inner()) = Some(tunnel);
    }

    /// The accepted upgrade, if a request left one.
    pub(crate) fn take_tunnel(&self) -> Option<crate::websocket::Tunnel> {
        self.tunnel.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Requests in flight on this connection.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Whether the header-read timeout ended the connection.
    pub(crate) fn head_timed_out(&self) -> bool {
        self.head_timed_out.load(Ordering::Acquire)
    }

    /// Whether the connection is in the middle of an HTTP/1 request head (some of it read).
    pub(crate) fn mid_head(&self) -> bool {
        self.inspector
            .as_ref()
            .is_some_and(|i| i.lock().unwrap_or_else(|p| p.into_inner()).mid_head())
    }

    /// The framing verdict for the next HTTP/1 request head, if the inspector has one.
    pub(crate) fn next_verdict(&self) -> Option<Verdict> {
        let inspector = self.inspector.as_ref()?;
        let mut guard = inspector.lock().unwrap_or_else(|p| p.into_inner());
        guard.next_verdict()
    }
}

/// Keeps a request counted as in flight on its connection.
pub(crate) struct ActiveGuard(Arc<ConnShared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.waker.wake();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    ReadingHead,
    Busy,
    Idle,
}

/// Timeouts for one connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnTimeouts {
    pub(crate) header: Duration,
    pub(crate) idle: Duration,
}

/// How long an HTTP/1 connection stays idle inside hyper before it is released.
const RELEASE_AFTER: Duration = Duration::from_millis(20);

/// IO wrapper with the connection's timers.
pub(crate) struct TimedIo<T> {
    inner: T,
    shared: Arc<ConnShared>,
    phase: Phase,
    sleep: Pin<Box<Sleep>>,
    timeouts: ConnTimeouts,
    http1: bool,
    /// When idle: the idle deadline, and whether the release is still to be asked for.
    idle_deadline: Instant,
    release_pending: bool,
}

impl<T> TimedIo<T> {
    /// The connection itself, without its timers (an upgraded connection has its own).
    pub(crate) fn into_inner(self) -> T {
        self.inner
    }

    pub(crate) fn new(
        inner: T,
        shared: Arc<ConnShared>,
        timeouts: ConnTimeouts,
        http1: bool,
    ) -> Self {
        Self {
            inner,
            shared,
            phase: Phase::ReadingHead,
            sleep: Box::pin(tokio::time::sleep(timeouts.header)),
            timeouts,
            http1,
            idle_deadline: Instant::now() + timeouts.idle,
            release_pending: false,
        }
    }

    fn enter_idle(&mut self) {
        self.phase = Phase::Idle;
        let now = Instant::now();
        self.idle_deadline = now + self.timeouts.idle;
        self.release_pending = self.http1 && RELEASE_AFTER < self.timeouts.idle;
        let first = if self.release_pending {
            now + RELEASE_AFTER
        } else {
            self.idle_deadline
        };
        self.sleep.as_mut().reset(first);
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let data = &buf.filled()[before..];
                if !data.is_empty() {
                    if let Some(inspector) = &this.shared.inspector {
                        inspector
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .feed(data);
                    }
                    let active = this.shared.active.load(Ordering::Acquire);
                    if active == 0 && this.phase != Phase::ReadingHead {
                        if this.http1 {
                            this.phase = Phase::ReadingHead;
                            this.release_pending = false;
                            this.sleep
                                .as_mut()
                                .reset(Instant::now() + this.timeouts.header);
                        } else {
                            this.enter_idle();
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.shared.active.load(Ordering::Acquire) > 0 {
                    this.phase = Phase::Busy;
                    this.shared.waker.register(cx.waker());
                    // Re-check: the last request may have finished between the load and the
                    // registration.
                    if this.shared.active.load(Ordering::Acquire) > 0 {
                        return Poll::Pending;
                    }
                }
                if this.phase == Phase::Busy {
                    this.enter_idle();
                }
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if this.phase == Phase::Idle && this.release_pending {
                    // Idle long enough: ask the server loop to take the connection back from
                    // hyper, and keep waiting for the idle deadline.
                    this.release_pending = false;
                    this.shared.release.notify_one();
                    let deadline = this.idle_deadline;
                    this.sleep.as_mut().reset(deadline);
                    if this.sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                if this.phase == Phase::ReadingHead {
                    this.shared.head_timed_out.store(true, Ordering::Release);
                    if this.http1 {
                        // Best effort: the client is slow, so a full send buffer just means
                        // no 408.
                        let _ = Pin::new(&mut this.inner).poll_write(cx, RESPONSE_408);
                        let _ = Pin::new(&mut this.inner).poll_flush(cx);
                        tracing::debug!("request head not received in time; 408");
                    }
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection timed out",
                )))
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream with bytes already read from it put back in front: the bytes sniffed for the
/// HTTP/2 preface, or what hyper had buffered when an idle connection was released.
pub(crate) struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Prefixed<T> {
    pub(crate) fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }

    /// The bytes not yet read, and the stream.
    pub(crate) fn into_parts(self) -> (Bytes, T) {
        (self.prefix, self.inner)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
