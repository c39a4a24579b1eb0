//! The revocation channel on Redis pub/sub: a minimal RESP2 client for the two commands it
//! needs, `PUBLISH` (the token service) and `SUBSCRIBE` (gateways).
//!
//! Messages are the feed's entries as JSON, `{"jti": "...", "exp": 1700000000, "seq": 7}`.
//! Pub/sub delivers only to those subscribed at that moment, so it is an accelerator: the feed
//! stays the record.
//!
//! Why not the `redis` crate: the same reasons as `warden-limits`' own RESP client (its
//! dependency tree and licences), for what is here two commands. No timeouts inside: callers
//! bound each call (a hung Redis must never hold up a revocation or a gateway).

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest reply accepted (messages are ~100 bytes): a bound against a confused peer.
const MAX_BULK: usize = 64 * 1024;
const MAX_ARRAY: usize = 16;

/// Where Redis is: parsed from `redis://host[:port][/db]`, with the password to send, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
    db: u32,
    password: Option<Password>,
}

/// A Redis password: never printed, wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
struct Password(zeroize::Zeroizing<String>);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Endpoint {
    /// Parses `redis://host[:port][/db]` (IPv6 hosts in brackets). No credentials, no TLS:
    /// `warden-config` refuses them with the same rules.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or("must be redis://host[:port][/db]")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err("must not hold credentials".into());
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
            password: None,
        })
    }

    /// The password sent with `AUTH` after connecting (Redis `requirepass`, or the `default`
    /// user's ACL password).
    pub fn with_password(mut self, password: Option<String>) -> Self {
        self.password = password.map(|p| Password(zeroize::Zeroizing::new(p)));
        self
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "redis://[{}]:{}/{}", self.host, self.port, self.db)
        } else {
            write!(f, "redis://{}:{}/{}", self.host, self.port, self.db)
        }
    }
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Nil,
    Int(i64),
    Simple(String),
    Bulk(Vec<u8>),
    Array(Vec<Value>),
    Error(String),
}

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
        let stream = TcpStream::connect((ep.host.as_str(), ep.port)).await?;
        let _ = stream.set_nodelay(true);
        let mut conn = Self {
            stream,
            input: Vec::with_capacity(512),
        };
        if let Some(Password(pw)) = &ep.password {
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
        if ep.db != 0 {
            match conn
                .call(&[b"SELECT", ep.db.to_string().as_bytes()])
                .await?
            {
                Value::Simple(_) => {}
                other => return Err(broken(format!("SELECT {}: {other:?}", ep.db))),
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
            match parse(&self.input, 0) {
                Ok(Some((value, used))) => {
                    self.input.drain(..used);
                    return Ok(value);
                }
                Ok(None) => {}
                Err(()) => return Err(broken("not RESP2, or too large")),
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

/// A command as a RESP array of bulk strings.
fn encode(args: &[&[u8]]) -> Vec<u8> {
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
fn parse(buf: &[u8], depth: usize) -> Result<Option<(Value, usize)>, ()> {
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
        b'$' | b'*' if number()? < 0 => (Value::Nil, next),
        b'$' => {
            let n = usize::try_from(number()?).map_err(|_| ())?;
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
            let n = usize::try_from(number()?).map_err(|_| ())?;
            if n > MAX_ARRAY || depth >= 2 {
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
    fn parses_what_subscribers_and_publishers_receive() {
        let msg: &[u8] = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$3\r\n{\"a\r\n";
        let want = Value::Array(vec![
            Value::Bulk(b"message".to_vec()),
            Value::Bulk(b"c".to_vec()),
            Value::Bulk(b"{\"a".to_vec()),
        ]);
        assert_eq!(parse(msg, 0), Ok(Some((want, msg.len()))));
        for cut in 0..msg.len() {
            assert_eq!(parse(&msg[..cut], 0), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse(b":2\r\n", 0), Ok(Some((Value::Int(2), 4))));
        assert_eq!(parse(b"$-1\r\n", 0), Ok(Some((Value::Nil, 5))));
        assert_eq!(
            parse(b"-ERR x\r\n", 0),
            Ok(Some((Value::Error("ERR x".into()), 8)))
        );
        assert_eq!(parse(b"?\r\n", 0), Err(()));
        assert_eq!(parse(b"$999999\r\n", 0), Err(()));
        assert_eq!(parse(b"*1\r\n*1\r\n*1\r\n:1\r\n", 0), Err(()));
    }

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&[b"PUBLISH", b"c", b"x\r\n"]),
            b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$3\r\nx\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn parses_redis_urls_and_refuses_credentials() {
        let ep = Endpoint::parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!(ep.to_string(), "redis://127.0.0.1:6380/2");
        assert_eq!(
            Endpoint::parse("redis://[::1]").unwrap().to_string(),
            "redis://[::1]:6379/0"
        );
        for bad in [
            "rediss://h",
            "redis://u:p@h",
            "redis://h:x",
            "redis://h/x",
            "redis://",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
