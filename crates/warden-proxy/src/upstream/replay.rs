//! The request body as sent to an endpoint: streamed from the client, or held in memory so
//! that a retry can send it again.
//!
//! A body is buffered only for a request that may be retried, and only up to the cluster's
//! `retries.buffer_body_bytes`: a declared `Content-Length` over the limit is streamed at once;
//! a body of unknown length (chunked, or HTTP/2 without a length) is read until it ends or
//! passes the limit, and in the second case what was read is sent first and the rest streamed
//! after it — that request is not retried.
//!
//! A gRPC call's body is never waited for: a streaming call's messages may wait on the
//! answers. It is streamed at once through a [`Tee`] that keeps a copy up to the same limit;
//! a retry is possible when, by the time the answer asks for one, the body has ended within
//! the limit (a unary call's always has).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BodyError, RequestBody};

/// A body an upstream request carries.
pub(crate) enum UpstreamBody {
    /// The client's body, streamed.
    Stream(RequestBody),
    /// A body in memory (buffered for retries, or empty).
    Full {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    /// What was read while trying to buffer, then the rest of the client's body.
    Prefixed {
        prefix: Option<Bytes>,
        rest: RequestBody,
    },
    /// The client's body, streamed, with a copy kept for a retry (gRPC).
    Tee { rest: RequestBody, copy: Tee },
}

/// The copy a teed body keeps while it streams: shared between the body being sent and the
/// exchange that may retry it.
#[derive(Clone)]
pub(crate) struct Tee(Arc<Mutex<TeeState>>);

struct TeeState {
    /// `None` once the body passed the limit: it cannot be sent again.
    data: Option<BytesMut>,
    trailers: Option<HeaderMap>,
    ended: bool,
    limit: u64,
}

impl Tee {
    pub(crate) fn new(limit: u64) -> Self {
        Tee(Arc::new(Mutex::new(TeeState {
            data: Some(BytesMut::new()),
            trailers: None,
            ended: false,
            limit,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TeeState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The whole body, if it has ended within the limit.
    pub(crate) fn replay(&self) -> Option<Replay> {
        let s = self.state();
        match (&s.data, s.ended) {
            (Some(d), true) => Some(Replay {
                data: Bytes::copy_from_slice(d),
                trailers: s.trailers.clone(),
            }),
            _ => None,
        }
    }

    /// Whether the body has ended within the limit (so a retry can send it again).
    pub(crate) fn complete(&self) -> bool {
        let s = self.state();
        s.ended && s.data.is_some()
    }

    fn keep(&self, frame: &Frame<Bytes>) {
        let mut s = self.state();
        if let Some(d) = frame.data_ref() {
            let limit = s.limit;
            if let Some(data) = &mut s.data {
                if (data.len() + d.len()) as u64 > limit {
                    s.data = None;
                } else {
                    data.extend_from_slice(d);
                }
            }
        } else if let Some(t) = frame.trailers_ref() {
            s.trailers
                .get_or_insert_with(HeaderMap::new)
                .extend(t.clone());
        }
    }

    fn end(&self) {
        self.state().ended = true;
    }
}

/// A buffered body that can be sent any number of times.
pub(crate) struct Replay {
    data: Bytes,
    trailers: Option<HeaderMap>,
}

/// What buffering gave.
pub(crate) enum Buffered {
    /// The whole body, kept.
    Whole(Replay),
    /// Too large to keep: it is streamed, once.
    Streamed(UpstreamBody),
}

impl UpstreamBody {
    /// No body (health checks).
    pub(crate) fn empty() -> Self {
        UpstreamBody::Stream(RequestBody::empty())
    }
}

impl Replay {
    /// A fresh copy of the body for one try (the bytes are shared, not copied).
    pub(crate) fn body(&self) -> UpstreamBody {
        UpstreamBody::Full {
            data: (!self.data.is_empty()).then(|| self.data.clone()),
            trailers: self.trailers.clone(),
        }
    }
}

/// Reads `body` into memory if it ends within `limit` bytes (see the module docs). A body error
/// (too large for the gateway, or broken by the client) is returned as is; the body's
/// [`crate::body::BodyState`] says which.
pub(crate) async fn buffer(
    mut body: RequestBody,
    limit: u64,
    declared: Option<u64>,
) -> Result<Buffered, BodyError> {
    if declared.is_some_and(|n| n > limit) {
        return Ok(Buffered::Streamed(UpstreamBody::Stream(body)));
    }
    let mut data = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    let mut trailers: Option<HeaderMap> = None;
    loop {
        let frame = match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => {
                return Ok(Buffered::Whole(Replay {
                    data: data.freeze(),
                    trailers,
                }))
            }
            Some(frame) => frame?,
        };
        match frame.into_data() {
            Ok(chunk) => {
                data.extend_from_slice(&chunk);
                if data.len() as u64 > limit {
                    return Ok(Buffered::Streamed(UpstreamBody::Prefixed {
                        prefix: Some(data.freeze()),
                        rest: body,
                    }));
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.get_or_insert_with(HeaderMap::new).extend(t);
                }
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut *self {
            UpstreamBody::Stream(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Full { data, trailers } => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            UpstreamBody::Prefixed { prefix, rest } => match prefix.take() {
                Some(p) => Poll::Ready(Some(Ok(Frame::data(p)))),
                None => Pin::new(rest).poll_frame(cx),
            },
            UpstreamBody::Tee { rest, copy } => {
                let polled = Pin::new(&mut *rest).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        copy.keep(frame);
                        // A sender stops polling once the body says it has ended.
                        if rest.is_end_stream() {
                            copy.end();
                        }
                    }
                    Poll::Ready(None) => copy.end(),
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Stream(b) | UpstreamBody::Tee { rest: b, .. } => b.is_end_stream(),
            UpstreamBody::Full { data, trailers } => data.is_none() && trailers.is_none(),
            UpstreamBody::Prefixed { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Stream(b) | UpstreamBody::Tee { rest: b, .. } => b.size_hint(),
            UpstreamBody::Full { data, trailers } => {
                let n = data.as_ref().map_or(0, |d| d.len() as u64);
                if trailers.is_some() {
                    // Trailers need chunked framing on HTTP/1.1: no exact length.
                    let mut h = SizeHint::new();
                    h.set_lower(n);
                    h
                } else {
                    SizeHint::with_exact(n)
                }
            }
            UpstreamBody::Prefixed { prefix, rest } => {
                let n = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let inner = rest.size_hint();
                let mut h = SizeHint::new();
                h.set_lower(inner.lower().saturating_add(n));
                if let Some(u) = inner.upper() {
                    h.set_upper(u.saturating_add(n));
                }
                h
            }
        }
    }
}
