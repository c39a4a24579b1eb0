//! A minimal Redis client: one pipelined TCP connection, for the few commands the rate-limit
//! store sends (`AUTH`, `SELECT`, `SCRIPT LOAD`, `EVALSHA`, `EVAL`, `PING`). The RESP2 codec
//! and the URL are `warden-resp`'s, shared with the revocation channel.
//!
//! One task owns the socket: it writes each command (coalescing those queued together into one
//! write) and answers callers in order as replies arrive. When the socket fails every waiting
//! caller gets [`Closed`] at once, and so does every later call: the owner reconnects.

use std::collections::VecDeque;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use warden_resp::{encode, parse, Limits, Malformed};

pub(crate) use warden_resp::{Endpoint, Value};

/// Largest reply accepted (ours are a few integers): a bound against a confused peer.
const LIMITS: Limits = Limits {
    max_bulk: 1 << 20,
    max_array: 1024,
    max_depth: 4,
};
/// Commands waiting to be written, per connection.
const QUEUE: usize = 4096;

/// The connection is gone (or the peer broke the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

struct Request {
    bytes: Vec<u8>,
    reply: oneshot::Sender<Result<Value, Closed>>,
}

/// A pipelined connection; clones share it.
#[derive(Clone)]
pub(crate) struct Connection {
    tx: mpsc::Sender<Request>,
}

impl Connection {
    /// Connects, authenticates (with the endpoint's password) and selects the database. The
    /// caller bounds the time.
    pub(crate) async fn connect(ep: &Endpoint) -> Result<Self, &'static str> {
        let stream = TcpStream::connect((ep.host(), ep.port()))
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused",
                _ => "cannot connect",
            })?;
        let _ = stream.set_nodelay(true);
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(drive(stream, rx));
        let conn = Self { tx };
        if let Some(pw) = ep.password() {
            match conn.call(&[b"AUTH", pw.as_bytes()]).await {
                Ok(Value::Simple(_)) => {}
                Ok(_) => return Err("authentication failed"),
                Err(Closed) => return Err("connection closed"),
            }
        }
        if ep.db() != 0 {
            match conn
                .call(&[b"SELECT", ep.db().to_string().as_bytes()])
                .await
            {
                Ok(Value::Simple(_)) => {}
                Ok(_) => return Err("cannot select the database"),
                Err(Closed) => return Err("connection closed"),
            }
        }
        Ok(conn)
    }

    /// Sends one command and waits for its reply (an error reply is a [`Value::Error`]).
    pub(crate) async fn call(&self, args: &[&[u8]]) -> Result<Value, Closed> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                bytes: encode(args),
                reply,
            })
            .await
            .map_err(|_| Closed)?;
        rx.await.unwrap_or(Err(Closed))
    }
}

/// Owns the socket: writes queued commands, answers callers in order.
async fn drive(stream: TcpStream, mut rx: mpsc::Receiver<Request>) {
    let (mut rd, mut wr) = stream.into_split();
    let mut pending: VecDeque<oneshot::Sender<Result<Value, Closed>>> = VecDeque::new();
    let mut input: Vec<u8> = Vec::with_capacity(4096);
    let mut output: Vec<u8> = Vec::with_capacity(4096);
    loop {
        tokio::select! {
            req = rx.recv() => {
                let Some(req) = req else { return };
                output.extend_from_slice(&req.bytes);
                pending.push_back(req.reply);
                // Whatever else is queued goes in the same write.
                while output.len() < 64 * 1024 {
                    let Ok(req) = rx.try_recv() else { break };
                    output.extend_from_slice(&req.bytes);
                    pending.push_back(req.reply);
                }
                if wr.write_all(&output).await.is_err() {
                    break;
                }
                output.clear();
            }
            read = rd.read_buf(&mut input) => {
                if !matches!(read, Ok(n) if n > 0) {
                    break;
                }
                let mut at = 0;
                loop {
                    match parse(&input[at..], &LIMITS) {
                        Ok(Some((value, used))) => {
                            at += used;
                            match pending.pop_front() {
                                Some(reply) => { let _ = reply.send(Ok(value)); }
                                None => return fail(pending, rx), // a reply nobody asked for
                            }
                        }
                        Ok(None) => break,
                        Err(Malformed) => return fail(pending, rx),
                    }
                }
                input.drain(..at);
            }
        }
    }
    fail(pending, rx);
}

/// The connection is gone: every waiting caller, and every queued one, learns it now.
fn fail(
    pending: VecDeque<oneshot::Sender<Result<Value, Closed>>>,
    mut rx: mpsc::Receiver<Request>,
) {
    for reply in pending {
        let _ = reply.send(Err(Closed));
    }
    rx.close();
    while let Ok(req) = rx.try_recv() {
        let _ = req.reply.send(Err(Closed));
    }
}
