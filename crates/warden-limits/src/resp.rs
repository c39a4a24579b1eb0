//! A minimal Redis client: RESP2 over one TCP connection, pipelined, for the few commands the
//! rate-limit store sends (`AUTH`, `SELECT`, `SCRIPT LOAD`, `EVALSHA`, `EVAL`, `PING`).
//!
//! Why not the `redis` crate: it brings ~30 crates (URL and IDNA parsing among them) and one
//! under a licence `deny.toml` does not accept, for what is here a few hundred lines; and the
//! store wants its own timeouts and reconnection anyway.
//!
//! One task owns the socket: it writes each command (coalescing those queued together into one
//! write) and answers callers in order as replies arrive. When the socket fails every waiting
//! caller gets [`Closed`] at once, and so does every later call: the owner reconnects.

use std::collections::VecDeque;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Largest reply accepted (ours are a few integers): a bound against a confused peer.
const MAX_BULK: usize = 1 << 20;
const MAX_ARRAY: usize = 1024;
const MAX_DEPTH: usize = 4;
/// Commands waiting to be written, per connection.
const QUEUE: usize = 4096;

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Nil,
    Int(i64),
    Simple(String),
    Bulk(Vec<u8>),
    Array(Vec<Value>),
    /// An error reply (`-ERR ...`, `-NOSCRIPT ...`).
    Error(String),
}

/// The connection is gone (or the peer broke the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// Where Redis is: parsed from `redis://host[:port][/db]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) db: u32,
}

impl Endpoint {
    /// Parses `redis://host[:port][/db]` (IPv6 hosts in brackets). No credentials in the URL.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or("must start with redis://")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err("must not hold credentials; use rate_limit_store.password".into());
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6.split_once(']').ok_or("unclosed `[` in the host")?;
                (h, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err("needs a host".into());
        }
        let port = match port {
            None => 6379,
            Some(p) => p.parse().map_err(|_| format!("`{p}` is not a port"))?,
        };
        let db = match path {
            "" => 0,
            d => d
                .parse()
                .map_err(|_| format!("`/{d}` is not a database number"))?,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            db,
        })
    }
}

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
    /// Connects, authenticates and selects the database. The caller bounds the time.
    pub(crate) async fn connect(
        ep: &Endpoint,
        password: Option<&str>,
    ) -> Result<Self, &'static str> {
        let stream = TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused",
                _ => "cannot connect",
            })?;
        let _ = stream.set_nodelay(true);
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(drive(stream, rx));
        let conn = Self { tx };
        if let Some(pw) = password {
            match conn.call(&[b"AUTH", pw.as_bytes()]).await {
                Ok(Value::Simple(_)) => {}
                Ok(_) => return Err("authentication failed"),
                Err(Closed) => return Err("connection closed"),
            }
        }
        if ep.db != 0 {
            match conn.call(&[b"SELECT", ep.db.to_string().as_bytes()]).await {
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
                    match parse(&input[at..], 0) {
                        Ok(Some((value, used))) => {
                            at += used;
                            match pending.pop_front() {
                                Some(reply) => { let _ = reply.send(Ok(value)); }
                                None => return fail(pending, rx), // a reply nobody asked for
                            }
                        }
                        Ok(None) => break,
                        Err(()) => return fail(pending, rx),
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

/// A command as a RESP array of bulk strings.
pub(crate) fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one reply from the start of `buf`: `Ok(None)` when more bytes are needed,
/// `Err(())` when the bytes are not RESP2 (or exceed the bounds).
pub(crate) fn parse(buf: &[u8], depth: usize) -> Result<Option<(Value, usize)>, ()> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() > MAX_BULK {
            Err(())
        } else {
            Ok(None)
        };
    };
    let (kind, line) = (buf.first().ok_or(())?, &buf[1..end]);
    let text = std::str::from_utf8(line).map_err(|_| ())?;
    let next = end + 2;
    let number = || text.parse::<i64>().map_err(|_| ());
    Ok(Some(match kind {
        b'+' => (Value::Simple(text.to_owned()), next),
        b'-' => (Value::Error(text.to_owned()), next),
        b':' => (Value::Int(number()?), next),
        b'$' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            let n = usize::try_from(n).map_err(|_| ())?;
            if n > MAX_BULK {
                return Err(());
            }
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            if &buf[next + n..next + n + 2] != b"\r\n" {
                return Err(());
            }
            (Value::Bulk(buf[next..next + n].to_vec()), next + n + 2)
        }
        b'*' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            let n = usize::try_from(n).map_err(|_| ())?;
            if n > MAX_ARRAY || depth >= MAX_DEPTH {
                return Err(());
            }
            let mut items = Vec::with_capacity(n);
            let mut at = next;
            for _ in 0..n {
                match parse(&buf[at..], depth + 1)? {
                    Some((v, used)) => {
                        items.push(v);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            (Value::Array(items), at)
        }
        _ => return Err(()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&[b"GET", b"k\r\n"]),
            b"*2\r\n$3\r\nGET\r\n$3\r\nk\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn parses_every_reply_kind_and_waits_for_partial_ones() {
        let cases: &[(&[u8], Value)] = &[
            (b"+OK\r\n", Value::Simple("OK".into())),
            (b"-NOSCRIPT x\r\n", Value::Error("NOSCRIPT x".into())),
            (b":-42\r\n", Value::Int(-42)),
            (b"$3\r\na\r\n\r\n", Value::Bulk(b"a\r\n".to_vec())),
            (b"$-1\r\n", Value::Nil),
            (
                b"*2\r\n:1\r\n*1\r\n$0\r\n\r\n",
                Value::Array(vec![Value::Int(1), Value::Array(vec![Value::Bulk(vec![])])]),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes, 0), Ok(Some((want.clone(), bytes.len()))));
            for cut in 0..bytes.len() {
                assert_eq!(parse(&bytes[..cut], 0), Ok(None), "{bytes:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn refuses_what_is_not_resp_or_too_large() {
        assert_eq!(parse(b"?x\r\n", 0), Err(()));
        assert_eq!(parse(b":12a\r\n", 0), Err(()));
        assert_eq!(parse(b"$3\r\nabcd\r\n", 0), Err(()));
        assert_eq!(parse(b"$99999999\r\n", 0), Err(()));
        assert_eq!(parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", 0), Err(()));
    }

    #[test]
    fn parses_redis_urls() {
        let ep = |u: &str| Endpoint::parse(u);
        assert_eq!(
            ep("redis://127.0.0.1:6380/2"),
            Ok(Endpoint {
                host: "127.0.0.1".into(),
                port: 6380,
                db: 2
            })
        );
        assert_eq!(ep("redis://cache").map(|e| (e.port, e.db)), Ok((6379, 0)));
        assert_eq!(
            ep("redis://[::1]:7000/").map(|e| (e.host, e.port)),
            Ok(("::1".into(), 7000))
        );
        assert!(ep("rediss://h").is_err());
        assert!(ep("redis://u:p@h").is_err());
        assert!(ep("redis://h:x").is_err());
        assert!(ep("redis://h/x").is_err());
        assert!(ep("redis://").is_err());
    }
}
