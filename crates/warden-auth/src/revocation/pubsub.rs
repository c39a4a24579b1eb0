//! The revocation channel on Redis pub/sub: a minimal client for the two commands it needs,
//! `PUBLISH` (the token service) and `SUBSCRIBE` (gateways), on `warden-resp`'s RESP2 codec.
//!
//! Messages are the feed's entries signed by the token service (see [`super::message`]).
//! Pub/sub delivers only to those subscribed at that moment, so it is an accelerator: the feed
//! stays the record.
//!
//! Why not the `redis` crate: see `warden-resp` (its dependency tree and licences), for what is
//! here two commands. No timeouts inside: callers bound each call (a hung Redis must never hold
//! up a revocation or a gateway).

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warden_resp::{encode, parse, Limits, Malformed, Value};

/// Where Redis is, with the password to send: `warden-resp`'s, whose parse errors use the
/// wording `warden-config` checks `redis_url` with.
pub use warden_resp::Endpoint;

/// Largest reply accepted (messages are ~100 bytes): a bound against a confused peer.
const LIMITS: Limits = Limits {
    max_bulk: 64 * 1024,
    max_array: 16,
    max_depth: 2,
};

fn broken(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// One connection, used by one task at a time (no pipelining: a publisher waits for each
/// reply, a subscriber only reads).
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    input: Vec<u8>,
}

impl Connection {
    /// Connects, authenticates (with a password) and selects the database.
    pub async fn connect(ep: &Endpoint) -> io::Result<Self> {
        let stream = TcpStream::connect((ep.host(), ep.port())).await?;
        let _ = stream.set_nodelay(true);
        let mut conn = Self {
            stream,
            input: Vec::with_capacity(512),
        };
        if let Some(pw) = ep.password() {
            match conn.call(&[b"AUTH", pw.as_bytes()]).await? {
                Value::Simple(_) => {}
                // Redis's own words (`WRONGPASS …`), which never repeat the password.
                Value::Error(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("AUTH refused: {e}"),
                    ))
                }
                _ => return Err(broken("AUTH: unexpected reply")),
            }
        }
        if ep.db() != 0 {
            match conn
                .call(&[b"SELECT", ep.db().to_string().as_bytes()])
                .await?
            {
                Value::Simple(_) => {}
                other => return Err(broken(format!("SELECT {}: {other:?}", ep.db()))),
            }
        }
        Ok(conn)
    }

    /// Publishes `payload` on `channel`; returns how many subscribers received it.
    pub async fn publish(&mut self, channel: &str, payload: &[u8]) -> io::Result<i64> {
        match self
            .call(&[b"PUBLISH", channel.as_bytes(), payload])
            .await?
        {
            Value::Int(n) => Ok(n),
            other => Err(broken(format!("PUBLISH: {other:?}"))),
        }
    }

    /// Subscribes to `channel` and waits for Redis to confirm it.
    pub async fn subscribe(mut self, channel: &str) -> io::Result<Subscription> {
        self.send(&[b"SUBSCRIBE", channel.as_bytes()]).await?;
        match self.read().await? {
            Value::Array(v) if v.first() == Some(&Value::Bulk(b"subscribe".to_vec())) => {
                Ok(Subscription(self))
            }
            other => Err(broken(format!("SUBSCRIBE: {other:?}"))),
        }
    }

    async fn call(&mut self, args: &[&[u8]]) -> io::Result<Value> {
        self.send(args).await?;
        self.read().await
    }

    async fn send(&mut self, args: &[&[u8]]) -> io::Result<()> {
        self.stream.write_all(&encode(args)).await
    }

    /// Reads one reply. Cancel-safe: bytes already read stay in `input` for the next call.
    async fn read(&mut self) -> io::Result<Value> {
        loop {
            match parse(&self.input, &LIMITS) {
                Ok(Some((value, used))) => {
                    self.input.drain(..used);
                    return Ok(value);
                }
                Ok(None) => {}
                Err(Malformed) => return Err(broken("not RESP2, or too large")),
            }
            if self.stream.read_buf(&mut self.input).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// A connection in subscribed mode.
#[derive(Debug)]
pub struct Subscription(Connection);

impl Subscription {
    /// The next message's payload, or `None` for anything else Redis sends in this mode (a
    /// `PING` answer). Cancel-safe, so it can be raced against a timer.
    pub async fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        match self.0.read().await? {
            Value::Array(mut v) if v.len() == 3 && v[0] == Value::Bulk(b"message".to_vec()) => {
                match v.pop() {
                    Some(Value::Bulk(payload)) => Ok(Some(payload)),
                    other => Err(broken(format!("message payload: {other:?}"))),
                }
            }
            Value::Array(_) => Ok(None),
            other => Err(broken(format!("in subscribed mode: {other:?}"))),
        }
    }

    /// Asks Redis for a sign of life (its answer is read by [`Subscription::next`]).
    pub async fn ping(&mut self) -> io::Result<()> {
        self.0.send(&[b"PING"]).await
    }
}
