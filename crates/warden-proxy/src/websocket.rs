//! WebSockets (RFC 6455) through the gateway: the upgrade request is checked here, passes the
//! route's filters like any request, goes to one endpoint on a connection of its own
//! (`upstream::exchange`), and when the endpoint switches protocols the two connections are
//! spliced by a [`Tunnel`] on the client connection's task (`server.rs` takes the socket back
//! from hyper after the 101).
//!
//! The tunnel copies bytes, not messages: nothing is buffered per message, a side that stops
//! reading stops the other side's reads (back-pressure), and a copy buffer is only held while
//! bytes are moving. It does track where frames begin, from their headers alone, so that when
//! the gateway ends a connection itself (drain, revoked token, idle timeout, maximum lifetime)
//! it can finish the frame in flight and send each side a close frame with a code.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::error::Reject;

/// The GUID of RFC 6455 §1.3, appended to the key for `Sec-WebSocket-Accept`.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A route's WebSocket settings, compiled.
#[derive(Clone, Debug)]
pub(crate) struct WebSocketRoute {
    pub(crate) idle_timeout: Duration,
    pub(crate) max_lifetime: Duration,
    pub(crate) max_connections: usize,
    pub(crate) close_on_revocation: bool,
    pub(crate) policy_close_code: u16,
    pub(crate) going_away_close_code: u16,
}

impl WebSocketRoute {
    pub(crate) fn compile(c: &warden_config::WebSocketConfig) -> Self {
        Self {
            idle_timeout: c.idle_timeout.0,
            max_lifetime: c.max_lifetime.0,
            max_connections: c.max_connections,
            close_on_revocation: c.close_on_revocation,
            policy_close_code: c.policy_close_code,
            going_away_close_code: c.going_away_close_code,
        }
    }
}

/// A valid WebSocket opening handshake: the key, to check the upstream's answer with.
#[derive(Clone, Debug)]
pub(crate) struct Handshake {
    key: HeaderValue,
    /// Over HTTP/2 (RFC 8441 extended CONNECT): the upstream gets an HTTP/1.1 upgrade with a
    /// key of the gateway's own, and the client a 200.
    pub(crate) h2: bool,
}

/// Whether a request is an RFC 8441 extended CONNECT for `websocket` (HTTP/2).
pub(crate) fn is_extended_connect(head: &http::request::Parts) -> bool {
    head.version == Version::HTTP_2
        && head.method == Method::CONNECT
        && head
            .extensions
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64.
fn new_key() -> HeaderValue {
    let mut key = [0u8; 16];
    // Should the system's generator fail, a fixed key still frames a valid handshake; the
    // key only proves the answer is to this request.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key);
    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(key))
        .unwrap_or_else(|_| HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The one value of a header that must appear once.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    all.next().is_none().then_some(first)
}

/// What a request asks to upgrade to: nothing, or a WebSocket handshake that holds. Any
/// other protocol (`Connection: upgrade` with `Upgrade: something`) and a malformed
/// handshake are refused; `h2c` alone is ignored (RFC 9110 §7.8 lets a server ignore an
/// upgrade; the request is then served over HTTP/1.1, as `curl --http2` expects).
pub(crate) fn check_request(head: &http::request::Parts) -> Result<Option<Handshake>, Reject> {
    let headers = &head.headers;
    if is_extended_connect(head) {
        if single(headers, "sec-websocket-version").is_none_or(|v| v.as_bytes() != b"13") {
            return Err(Reject::WebSocketVersion);
        }
        return Ok(Some(Handshake {
            key: new_key(),
            h2: true,
        }));
    }
    // An upgrade request names `upgrade` in `Connection` (RFC 9110 §7.8); without it an
    // `Upgrade` header is only a hop-by-hop header, dropped like the others.
    if !headers.contains_key(header::UPGRADE) || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return Ok(None);
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        let only_h2c = headers
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .all(|t| t.eq_ignore_ascii_case("h2c"));
        if only_h2c {
            return Ok(None);
        }
        return Err(Reject::BadRequest("unsupported upgrade protocol"));
    }
    if head.version != Version::HTTP_11 {
        return Err(Reject::BadRequest("websocket upgrade needs HTTP/1.1"));
    }
    if head.method != Method::GET {
        return Err(Reject::BadRequest("websocket upgrade must be a GET"));
    }
    if headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
    {
        return Err(Reject::BadRequest("websocket upgrade with a body"));
    }
    if single(headers, "sec-websocket-version").is_none_or(|v| v.as_bytes() != b"13") {
        return Err(Reject::WebSocketVersion);
    }
    let key = single(headers, "sec-websocket-key")
        .filter(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k.as_bytes())
                .is_ok_and(|d| d.len() == 16)
        })
        .ok_or(Reject::BadRequest("invalid Sec-WebSocket-Key"))?;
    Ok(Some(Handshake {
        key: key.clone(),
        h2: false,
    }))
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2).
pub(crate) fn accept(key: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

impl Handshake {
    /// Makes the forwarded request an HTTP/1.1 upgrade: the hop-by-hop `Connection` and
    /// `Upgrade` were stripped like any others'; an extended CONNECT becomes a `GET` with a
    /// key of the gateway's own.
    pub(crate) fn restore_request_headers(&self, head: &mut http::request::Parts) {
        let headers = &mut head.headers;
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if self.h2 {
            head.method = Method::GET;
            headers.insert("sec-websocket-key", self.key.clone());
            head.extensions.remove::<hyper::ext::Protocol>();
        }
    }

    /// Whether the upstream's 101 is a WebSocket acceptance of this handshake: anything else
    /// would leave the gateway splicing a connection whose protocol it cannot vouch for.
    pub(crate) fn accepted_by(&self, res: &HeaderMap) -> bool {
        let expected = accept(self.key.as_bytes());
        has_token(res, header::UPGRADE, "websocket")
            && has_token(res, header::CONNECTION, "upgrade")
            && single(res, "sec-websocket-accept")
                .is_some_and(|v| v.as_bytes() == expected.as_bytes())
    }

    /// The client's answer from the upstream's 101: a 101 with `Upgrade` and `Connection`
    /// again over HTTP/1.1, a 200 without the accept value over HTTP/2 (RFC 8441 §5).
    pub(crate) fn client_response(&self, res: &mut http::response::Parts) {
        if self.h2 {
            res.status = http::StatusCode::OK;
            res.headers.remove("sec-websocket-accept");
            return;
        }
        Self::restore_response_headers(&mut res.headers);
    }

    /// The headers an HTTP/1.1 client's 101 carries besides the upstream's end-to-end ones.
    pub(crate) fn restore_response_headers(headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
}

/// Where a byte stream is in its frames: the header of the next frame being read, or the
/// payload bytes left of the current one. Only headers are looked at.
#[derive(Clone, Copy, Debug, Default)]
struct Frames {
    header: [u8; 14],
    have: u8,
    payload_left: u64,
    /// A close frame went by: this side started (or answered) the closing handshake.
    saw_close: bool,
}

impl Frames {
    fn header_len(&self) -> Option<usize> {
        if self.have < 2 {
            return None;
        }
        let ext = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        Some(2 + ext + mask)
    }

    fn payload_len(&self) -> u64 {
        match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => u64::from_be_bytes(self.header[2..10].try_into().unwrap_or([0; 8])),
            n => u64::from(n),
        }
    }

    /// At a frame boundary: the next byte starts a frame.
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }

    /// Follows `data` through the frames; returns how many of its bytes reach the first
    /// frame boundary when `stop_at_boundary` (then stops there), else all of them.
    fn advance(&mut self, data: &[u8], stop_at_boundary: bool) -> usize {
        let mut i = 0;
        loop {
            if stop_at_boundary && self.at_boundary() {
                return i;
            }
            if i == data.len() {
                return i;
            }
            if self.payload_left > 0 {
                let n =
                    (data.len() - i).min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                i += n;
                self.payload_left -= n as u64;
                continue;
            }
            // Reading a header.
            self.header[usize::from(self.have)] = data[i];
            self.have += 1;
            i += 1;
            if let Some(len) = self.header_len() {
                if usize::from(self.have) == len {
                    self.payload_left = self.payload_len();
                    self.saw_close |= self.header[0] & 0x0f == 0x8;
                    self.have = 0;
                }
            }
        }
    }
}

/// A close frame (RFC 6455 §5.5.1): `masked` for one sent to a server (the upstream).
fn close_frame(code: u16, reason: &str, masked: bool) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    let mut f = vec![0x88, payload.len() as u8];
    if masked {
        f[1] |= 0x80;
        let mut key = [0u8; 4];
        // A mask need only be unpredictable to scripts that could shape the payload; should
        // the system's generator fail, a fixed mask still frames correctly.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key);
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(&payload);
    }
    f
}

/// Copy buffer per direction while bytes move; none while the direction is quiet.
const BUF: usize = 16 * 1024;
/// Copy buffers kept per thread for the next read, so a busy tunnel neither allocates nor
/// zeroes one per message (1 MiB at most per thread).
const POOLED: usize = 64;

thread_local! {
    static BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A copy buffer of `BUF` bytes, from this thread's pool when it has one.
fn take_buffer() -> Vec<u8> {
    BUFFERS
        .with(|b| b.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; BUF])
}

/// Gives a copy buffer back to this thread's pool (others are dropped).
fn give_buffer(buf: Vec<u8>) {
    if buf.len() == BUF {
        BUFFERS.with(|b| {
            let mut b = b.borrow_mut();
            if b.len() < POOLED {
                b.push(buf);
            }
        });
    }
}
/// Time allowed to finish the frame in flight and send close frames when the gateway ends a
/// connection, then for the peers to answer them.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// One direction of the tunnel.
struct Pump {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The source ended (EOF): the end is forwarded as a shutdown of the destination.
    eof: bool,
    done: bool,
    bytes: u64,
    frames: Frames,
}

impl Drop for Pump {
    fn drop(&mut self) {
        give_buffer(std::mem::take(&mut self.buf));
    }
}

impl Pump {
    fn new(buffered: &[u8]) -> Self {
        Self {
            buf: buffered.to_vec(),
            start: 0,
            end: buffered.len(),
            eof: false,
            done: false,
            bytes: 0,
            frames: Frames::default(),
        }
    }

    /// Writes what is buffered; with `to_boundary`, only up to the end of the frame in
    /// flight. Ready when nothing (more) is to be written now.
    fn poll_flush_buffered<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut W,
        to_boundary: bool,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        while self.start < self.end {
            let mut limit = self.end;
            if to_boundary {
                let mut f = self.frames;
                limit = self.start + f.advance(&self.buf[self.start..self.end], true);
                if limit == self.start {
                    // At a boundary: what follows is not sent.
                    self.start = self.end;
                    break;
                }
            }
            let n = ready!(Pin::new(&mut *dst).poll_write(cx, &self.buf[self.start..limit]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.frames
                .advance(&self.buf[self.start..self.start + n], false);
            self.start += n;
            self.bytes += n as u64;
            *moved = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Moves bytes from `src` to `dst` until the source ends (Ready(Ok)) or would block.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
        moved: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(self.poll_flush_buffered(cx, dst, false, moved))?;
            if self.eof {
                ready!(Pin::new(&mut *dst).poll_shutdown(cx))?;
                self.done = true;
                give_buffer(std::mem::take(&mut self.buf));
                return Poll::Ready(Ok(()));
            }
            ready!(Pin::new(&mut *dst).poll_flush(cx))?;
            if self.buf.len() < BUF {
                self.buf = take_buffer();
            }
            let mut rb = ReadBuf::new(&mut self.buf);
            match Pin::new(&mut *src).poll_read(cx, &mut rb) {
                Poll::Pending => {
                    // Quiet: hold no buffer while waiting.
                    give_buffer(std::mem::take(&mut self.buf));
                    self.start = 0;
                    self.end = 0;
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    self.start = 0;
                    self.end = n;
                    if n == 0 {
                        self.eof = true;
                    }
                }
            }
        }
    }

    /// Reads until the frame in flight is complete and writes it (bounded by the caller's
    /// deadline); then the stream is at a boundary.
    fn poll_finish_frame<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut moved = false;
        loop {
            ready!(self.poll_flush_buffered(cx, dst, true, &mut moved))?;
            if self.frames.at_boundary() || self.eof || self.done {
                return Poll::Ready(Ok(()));
            }
            if self.buf.len() < BUF {
                self.buf = take_buffer();
            }
            let mut rb = ReadBuf::new(&mut self.buf);
            ready!(Pin::new(&mut *src).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            self.start = 0;
            self.end = n;
            if n == 0 {
                self.eof = true;
            }
        }
    }
}

/// Why a tunnel ended: the access log's `closed` and the metric's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Closed {
    ByClient,
    ByUpstream,
    IdleTimeout,
    MaxLifetime,
    Drain,
    Revoked,
    Error,
}

impl Closed {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Closed::ByClient => "client_closed",
            Closed::ByUpstream => "upstream_closed",
            Closed::IdleTimeout => "idle_timeout",
            Closed::MaxLifetime => "max_lifetime",
            Closed::Drain => "drain",
            Closed::Revoked => "revoked",
            Closed::Error => "error",
        }
    }
}

/// How a tunnel ended and what it carried.
pub(crate) struct Ended {
    pub(crate) closed: Closed,
    /// Bytes from the client to the upstream.
    pub(crate) to_upstream: u64,
    /// Bytes from the upstream to the client.
    pub(crate) to_client: u64,
}

/// A place among a route's open WebSockets (`websocket.max_connections`), counted in
/// `warden_websocket_connections_open{route}`; given back when dropped. The gauge is keyed by
/// route name, so the limit holds across reloads.
pub(crate) struct OpenSlot(warden_telemetry::metrics::Gauge);

impl OpenSlot {
    /// A place, unless `max` are taken.
    pub(crate) fn take(
        metrics: &warden_telemetry::Metrics,
        route: &Arc<String>,
        max: usize,
    ) -> Option<Self> {
        let gauge = metrics
            .websocket_open
            .get_or_create(&warden_telemetry::metrics::RouteLabel(route.clone()))
            .clone();
        let before = gauge.inc();
        if usize::try_from(before).unwrap_or(usize::MAX) >= max {
            gauge.dec();
            return None;
        }
        Some(Self(gauge))
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The token an upgraded connection was opened with, watched for revocation.
pub(crate) struct Revocation {
    pub(crate) cache: Arc<warden_auth::cache::TokenCache>,
    pub(crate) jti: String,
}

/// An accepted upgrade waiting for the client connection to be taken back from hyper.
pub(crate) struct Tunnel {
    pub(crate) upstream: crate::upstream::Upgraded,
    pub(crate) settings: WebSocketRoute,
    pub(crate) revocation: Option<Revocation>,
    /// Called once when the tunnel ends: the access-log line and the metrics.
    pub(crate) on_end: Box<dyn FnOnce(&Ended) + Send>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Resolves when the token is revoked; never, without a token to watch.
async fn revoked(r: Option<Revocation>) {
    let Some(r) = r else {
        return std::future::pending().await;
    };
    let mut rx = r.cache.revocations();
    loop {
        if r.cache.is_revoked(&r.jti, now_secs()) {
            return;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

impl Tunnel {
    /// The client connection broke before the tunnel could start.
    pub(crate) fn abandon(self) {
        (self.on_end)(&Ended {
            closed: Closed::Error,
            to_upstream: 0,
            to_client: 0,
        });
    }

    /// Splices `client` (with the bytes already read from it past the upgrade request) and
    /// the upstream until one side closes or the gateway ends it.
    pub(crate) async fn run<C>(
        self,
        mut client: C,
        client_buffered: Bytes,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let Tunnel {
            upstream,
            settings,
            revocation,
            on_end,
        } = self;
        let crate::upstream::Upgraded {
            io: mut up,
            buffered,
        } = upstream;
        let mut to_up = Pump::new(&client_buffered);
        let mut to_client = Pump::new(&buffered);
        // Both are views into hyper's read buffers (8 KiB and more): copied, then let go, so
        // an idle socket does not keep them.
        drop(client_buffered);
        drop(buffered);
        let opened = Instant::now();
        let mut last = opened;
        let idle = tokio::time::sleep(settings.idle_timeout);
        let lifetime = tokio::time::sleep(settings.max_lifetime);
        let revoked = revoked(revocation.filter(|_| settings.close_on_revocation));
        tokio::pin!(idle, lifetime, revoked);
        // Who started the closing handshake (sent the first close frame), else who hung up
        // first. (The server ends the TCP connection first even when the client asked.)
        let mut first_close: Option<Closed> = None;
        let mut first_eof: Option<Closed> = None;

        let outcome = loop {
            tokio::select! {
                r = poll_fn(|cx| {
                    let mut moved = false;
                    let a = to_up.poll_copy(cx, &mut client, &mut up, &mut moved);
                    if to_up.eof && first_eof.is_none() {
                        first_eof = Some(Closed::ByClient);
                    }
                    let b = to_client.poll_copy(cx, &mut up, &mut client, &mut moved);
                    if to_client.eof && first_eof.is_none() {
                        first_eof = Some(Closed::ByUpstream);
                    }
                    if moved {
                        last = Instant::now();
                        if first_close.is_none() {
                            if to_up.frames.saw_close {
                                first_close = Some(Closed::ByClient);
                            } else if to_client.frames.saw_close {
                                first_close = Some(Closed::ByUpstream);
                            }
                        }
                    }
                    match (a, b) {
                        (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => Poll::Ready(Err(e)),
                        (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(Ok(())),
                        _ => Poll::Pending,
                    }
                }) => break match r {
                    Ok(()) => Err(first_close.or(first_eof).unwrap_or(Closed::ByClient)),
                    Err(_) => Err(Closed::Error),
                },
                () = &mut idle => {
                    let deadline = last + settings.idle_timeout;
                    if deadline <= Instant::now() {
                        break Ok((Closed::IdleTimeout, settings.going_away_close_code, "idle timeout"));
                    }
                    idle.as_mut().reset(deadline);
                }
                () = &mut lifetime => break Ok((Closed::MaxLifetime, settings.going_away_close_code, "maximum lifetime reached")),
                _ = shutdown.wait_for(|s| *s) => break Ok((Closed::Drain, settings.going_away_close_code, "gateway shutting down")),
                () = &mut revoked => break Ok((Closed::Revoked, settings.policy_close_code, "credential revoked")),
            }
        };
        let closed = match outcome {
            // A side closed (or the connection broke): the other side's end followed or
            // follows by itself.
            Err(closed) => closed,
            Ok((closed, code, reason)) => {
                close_both(
                    &mut client,
                    &mut up,
                    &mut to_up,
                    &mut to_client,
                    code,
                    reason,
                )
                .await;
                closed
            }
        };
        on_end(&Ended {
            closed,
            to_upstream: to_up.bytes,
            to_client: to_client.bytes,
        });
    }
}

/// Ends both sides the way RFC 6455 asks: the frame in flight each way is finished, each side
/// gets a close frame with `code`, its answer is awaited (and discarded), then the TCP
/// connections close. All of it within [`CLOSE_GRACE`]; past it, the connections just close.
async fn close_both<C, U>(
    client: &mut C,
    up: &mut U,
    to_up: &mut Pump,
    to_client: &mut Pump,
    code: u16,
    reason: &str,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let graceful = async {
        // Finish the frames in flight, both ways at once.
        let mut a = false;
        let mut b = false;
        poll_fn(|cx| {
            if !a {
                a = to_up.poll_finish_frame(cx, client, up).is_ready();
            }
            if !b {
                b = to_client.poll_finish_frame(cx, up, client).is_ready();
            }
            if a && b {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        if !to_client.done && to_client.frames.at_boundary() {
            let _ = client.write_all(&close_frame(code, reason, false)).await;
            let _ = client.flush().await;
        }
        if !to_up.done && to_up.frames.at_boundary() {
            let _ = up.write_all(&close_frame(code, reason, true)).await;
            let _ = up.flush().await;
        }
        let _ = client.shutdown().await;
        let _ = up.shutdown().await;
        // Wait for both to close their side, discarding their close frames.
        read_to_end_discarding(client, up).await;
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, graceful).await;
}

/// Reads both until each ends, discarding what comes.
async fn read_to_end_discarding<A, B>(a: &mut A, b: &mut B)
where
    A: AsyncRead + Unpin,
    B: AsyncRead + Unpin,
{
    let mut sink = [0u8; 512];
    let mut a_done = false;
    let mut b_done = false;
    poll_fn(|cx| {
        for (io, done) in [
            (&mut *a as &mut (dyn AsyncRead + Unpin), &mut a_done),
            (&mut *b as &mut (dyn AsyncRead + Unpin), &mut b_done),
        ] {
            while !*done {
                let mut rb = ReadBuf::new(&mut sink);
                match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) if !rb.filled().is_empty() => {}
                    Poll::Ready(_) => *done = true,
                    Poll::Pending => break,
                }
            }
        }
        if a_done && b_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method("GET").uri("/chat");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const GOOD: &[(&str, &str)] = &[
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn the_accept_value_is_rfc_6455s_example() {
        assert_eq!(
            accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn a_valid_handshake_is_recognised_and_plain_requests_are_not_upgrades() {
        assert!(check_request(&parts(GOOD)).unwrap().is_some());
        assert!(check_request(&parts(&[])).unwrap().is_none());
        // `h2c` is ignored (served as HTTP/1.1), as is an Upgrade not named by Connection.
        let h2c = [
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ];
        assert!(check_request(&parts(&h2c)).unwrap().is_none());
        assert!(check_request(&parts(&[("upgrade", "foo")]))
            .unwrap()
            .is_none());
        let unnamed = [("connection", "keep-alive"), ("upgrade", "websocket")];
        assert!(check_request(&parts(&unnamed)).unwrap().is_none());
    }

    #[test]
    fn malformed_handshakes_and_other_protocols_are_refused() {
        let with = |name: &str, value: Option<&str>| {
            let mut h: Vec<(&str, &str)> =
                GOOD.iter().filter(|(k, _)| *k != name).copied().collect();
            if let Some(v) = value {
                h.push((name, v));
            }
            check_request(&parts(&h)).map(|_| ())
        };
        let bad = |why| Err(Reject::BadRequest(why));
        assert_eq!(
            with("sec-websocket-version", Some("8")),
            Err(Reject::WebSocketVersion)
        );
        assert_eq!(
            with("sec-websocket-version", None),
            Err(Reject::WebSocketVersion)
        );
        assert_eq!(
            with("sec-websocket-key", Some("short")),
            bad("invalid Sec-WebSocket-Key")
        );
        assert_eq!(
            with("sec-websocket-key", None),
            bad("invalid Sec-WebSocket-Key")
        );
        assert_eq!(
            with("content-length", Some("5")),
            bad("websocket upgrade with a body")
        );
        let other = [("connection", "upgrade"), ("upgrade", "TLS/1.0")];
        assert_eq!(
            check_request(&parts(&other)).map(|_| ()),
            bad("unsupported upgrade protocol")
        );
        let mut post = parts(GOOD);
        post.method = Method::POST;
        assert_eq!(
            check_request(&post).map(|_| ()),
            bad("websocket upgrade must be a GET")
        );
    }

    #[test]
    fn an_upstream_101_must_accept_this_key() {
        let hs = check_request(&parts(GOOD)).unwrap().unwrap();
        let mut res = HeaderMap::new();
        Handshake::restore_response_headers(&mut res);
        res.insert(
            "sec-websocket-accept",
            HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
        assert!(hs.accepted_by(&res));
        res.insert(
            "sec-websocket-accept",
            HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        );
        assert!(!hs.accepted_by(&res));
    }

    #[test]
    fn frame_boundaries_are_found_across_chunks() {
        // A masked 5-byte text frame (2 + 4 + 5), then a 300-byte binary frame with a 16-bit
        // length (4 + 300).
        let mut stream = vec![0x81, 0x85, 1, 2, 3, 4, b'h', b'e', b'l', b'l', b'o'];
        stream.extend_from_slice(&[0x82, 126, 0x01, 0x2c]);
        stream.extend(std::iter::repeat_n(7u8, 300));
        for split in 0..stream.len() {
            let mut f = Frames::default();
            assert_eq!(f.advance(&stream[..split], false), split);
            let rest = &stream[split..];
            let to_boundary = f.advance(rest, true);
            // The first boundary after `split`: 0 if at one, else the end of its frame.
            let expected = if split == 0 || split == 11 {
                0
            } else if split < 11 {
                11 - split
            } else {
                stream.len() - split
            };
            assert_eq!(to_boundary, expected, "split at {split}");
        }
    }

    #[test]
    fn a_close_frame_going_by_is_noticed() {
        let mut f = Frames::default();
        f.advance(&[0x81, 0x02, b'h', b'i'], false);
        assert!(!f.saw_close);
        f.advance(&close_frame(1000, "", true), false);
        assert!(f.saw_close && f.at_boundary());
    }

    #[test]
    fn close_frames_are_framed_and_masked_as_rfc_6455_says() {
        let f = close_frame(1008, "revoked", false);
        assert_eq!(&f[..4], &[0x88, 9, 0x03, 0xf0]);
        assert_eq!(&f[4..], b"revoked");
        let m = close_frame(1001, "bye", true);
        assert_eq!(m[0], 0x88);
        assert_eq!(m[1], 0x80 | 5);
        let key = &m[2..6];
        let payload: Vec<u8> = m[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(payload, [0x03, 0xe9, b'b', b'y', b'e']);
    }
}
