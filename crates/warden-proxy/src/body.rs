//! Bodies: the request body streamed upstream under a size limit, and the response body that,
//! when finished, writes the access-log line and releases the request's in-flight slots.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::PooledBody;

/// Error from a request body: too large, or the client broke it.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body went past `server.max_body_bytes`.
    #[error("request body exceeds the limit")]
    TooLarge,
    /// Reading from the client failed (reset, bad chunk encoding, timeout).
    #[error("client body error: {0}")]
    Client(#[from] hyper::Error),
}

/// What happened to a request body, seen by the handler after forwarding.
#[derive(Debug, Default)]
pub(crate) struct BodyState {
    pub(crate) too_large: AtomicBool,
    pub(crate) client_error: AtomicBool,
    pub(crate) complete: AtomicBool,
    pub(crate) bytes: AtomicU64,
}

/// The request body as sent upstream: the client's body, counted and cut at the limit.
pub(crate) struct RequestBody {
    inner: Option<Incoming>,
    limit: u64,
    seen: u64,
    state: Arc<BodyState>,
}

impl RequestBody {
    pub(crate) fn new(inner: Incoming, limit: u64, state: Arc<BodyState>) -> Self {
        if inner.is_end_stream() {
            state.complete.store(true, Ordering::Release);
        }
        Self {
            inner: Some(inner),
            limit,
            seen: 0,
            state,
        }
    }

    /// An empty body (health checks).
    pub(crate) fn empty() -> Self {
        let state = Arc::new(BodyState::default());
        state.complete.store(true, Ordering::Release);
        Self {
            inner: None,
            limit: 0,
            seen: 0,
            state,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    this.state.bytes.store(this.seen, Ordering::Relaxed);
                    if this.seen > this.limit {
                        this.state.too_large.store(true, Ordering::Release);
                        this.inner = None;
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                }
                // The sender (hyper's HTTP/2 client, say) stops polling once the body says
                // it has ended, so the end may never be polled as such.
                if this.inner.as_ref().is_some_and(|b| b.is_end_stream()) {
                    this.state.complete.store(true, Ordering::Release);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.state.client_error.store(true, Ordering::Release);
                this.inner = None;
                Poll::Ready(Some(Err(BodyError::Client(e))))
            }
            Poll::Ready(None) => {
                this.state.complete.store(true, Ordering::Release);
                this.inner = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

/// Runs when a response body is finished or dropped (client went away).
pub(crate) trait OnFinish: Send + Sync {
    fn finish(self: Box<Self>, bytes_out: u64);
}

enum Inner {
    Full(Option<Bytes>),
    Stream(PooledBody, StreamIdle),
}

/// A streamed body's idle timeout: the timer is only made the first time the upstream keeps
/// the body waiting (most bodies are read without waiting), then pushed back at each frame.
struct StreamIdle {
    after: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// A response body cut off because the upstream sent nothing for the route's
/// `stream_idle_timeout`.
#[derive(Debug)]
pub(crate) struct StreamIdleTimeout;

impl std::fmt::Display for StreamIdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("response body idle past the route's stream_idle_timeout")
    }
}

impl std::error::Error for StreamIdleTimeout {}

/// The response body sent to the client.
pub(crate) struct ResponseBody {
    inner: Inner,
    bytes: u64,
    on_finish: Option<Box<dyn OnFinish>>,
}

impl ResponseBody {
    pub(crate) fn full(b: Bytes) -> Self {
        Self {
            // An empty body is no body: the head ends the stream (a gRPC trailers-only
            // answer needs END_STREAM on its HEADERS frame).
            inner: Inner::Full((!b.is_empty()).then_some(b)),
            bytes: 0,
            on_finish: None,
        }
    }

    /// The upstream's body, cut off when it sends nothing for `idle`.
    pub(crate) fn stream(b: PooledBody, idle: Duration) -> Self {
        Self {
            inner: Inner::Stream(
                b,
                StreamIdle {
                    after: idle,
                    sleep: None,
                },
            ),
            bytes: 0,
            on_finish: None,
        }
    }

    pub(crate) fn set_on_finish(&mut self, f: Box<dyn OnFinish>) {
        self.on_finish = Some(f);
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // The upstream body first: its connection goes back to the pool before `on_finish`
        // releases the request's slots (a request waiting for the slot then finds it idle).
        self.inner = Inner::Full(None);
        if let Some(f) = self.on_finish.take() {
            f.finish(self.bytes);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let res = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(s, idle) => match Pin::new(s).poll_frame(cx) {
                Poll::Ready(r) => {
                    if let Some(sleep) = &mut idle.sleep {
                        sleep
                            .as_mut()
                            .reset(tokio::time::Instant::now() + idle.after);
                    }
                    Poll::Ready(r.map(|r| r.map_err(Into::into)))
                }
                Poll::Pending => {
                    let after = idle.after;
                    let sleep = idle
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        tracing::debug!("response body idle past stream_idle_timeout; cut off");
                        return Poll::Ready(Some(Err(Box::new(StreamIdleTimeout))));
                    }
                    Poll::Pending
                }
            },
        };
        if let Poll::Ready(Some(Ok(frame))) = &res {
            if let Some(d) = frame.data_ref() {
                this.bytes += d.len() as u64;
            }
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Stream(s, _) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Stream(s, _) => s.size_hint(),
        }
    }
}
