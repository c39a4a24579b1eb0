//! The RESP2 pieces both of Warden's Redis clients need: the [`Value`] of a reply, the command
//! [`encode`]r, the bounded incremental reply [`parse`]r and the `redis://` [`Endpoint`].
//!
//! Why not the `redis` crate: it brings ~30 crates (URL and IDNA parsing among them) and one
//! under a licence `deny.toml` does not accept, for what is here a few hundred lines; and each
//! client wants its own timeouts and reconnection anyway.
//!
//! Sans-IO: the connections stay with their users, as they work differently (the rate-limit
//! store pipelines many callers on one socket in `warden-limits`; the revocation channel reads
//! pub/sub messages one at a time in `warden-auth`). Each caller passes its own [`Limits`].

use std::fmt;

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Int(i64),
    Simple(String),
    Bulk(Vec<u8>),
    Array(Vec<Value>),
    /// An error reply (`-ERR ...`, `-NOSCRIPT ...`).
    Error(String),
}

/// How large a reply [`parse`] accepts: bounds against a confused peer, sized by each caller
/// for the replies it expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes in one bulk string (and in a line still without its `\r\n`).
    pub max_bulk: usize,
    /// Most items in one array.
    pub max_array: usize,
    /// Most arrays nested in one another (an array at the top counts one).
    pub max_depth: usize,
}

/// The bytes are not RESP2, or exceed the [`Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// A command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one reply from the start of `buf` into the value and the bytes it used: `Ok(None)`
/// when more bytes are needed, so a caller keeps what it has read and parses again after the
/// next read.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Value, usize)>, Malformed> {
    parse_at(buf, limits, 0)
}

fn parse_at(
    buf: &[u8],
    limits: &Limits,
    depth: usize,
) -> Result<Option<(Value, usize)>, Malformed> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() > limits.max_bulk {
            Err(Malformed)
        } else {
            Ok(None)
        };
    };
    let (kind, line) = (buf.first().ok_or(Malformed)?, &buf[1..end]);
    let text = std::str::from_utf8(line).map_err(|_| Malformed)?;
    let next = end + 2;
    let number = || text.parse::<i64>().map_err(|_| Malformed);
    Ok(Some(match kind {
        b'+' => (Value::Simple(text.to_owned()), next),
        b'-' => (Value::Error(text.to_owned()), next),
        b':' => (Value::Int(number()?), next),
        b'$' | b'*' if number()? < 0 => (Value::Nil, next),
        b'$' => {
            let n = usize::try_from(number()?).map_err(|_| Malformed)?;
            if n > limits.max_bulk {
                return Err(Malformed);
            }
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            if &buf[next + n..next + n + 2] != b"\r\n" {
                return Err(Malformed);
            }
            (Value::Bulk(buf[next..next + n].to_vec()), next + n + 2)
        }
        b'*' => {
            let n = usize::try_from(number()?).map_err(|_| Malformed)?;
            if n > limits.max_array || depth >= limits.max_depth {
                return Err(Malformed);
            }
            let mut items = Vec::with_capacity(n);
            let mut at = next;
            for _ in 0..n {
                match parse_at(&buf[at..], limits, depth + 1)? {
                    Some((v, used)) => {
                        items.push(v);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            (Value::Array(items), at)
        }
        _ => return Err(Malformed),
    }))
}

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

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Why a Redis URL was refused, in the words `warden check` prints after the setting's path.
/// Credentials are a variant of their own so `warden-config` can name the setting where the
/// password goes instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// Not `redis://` (nor `rediss://`).
    Scheme,
    /// `rediss://`: TLS to Redis is not supported yet.
    Tls,
    /// `user:password@` in the URL: passwords are configured apart, where secrets are read.
    Credentials,
    /// Anything else, in words for the user.
    Other(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scheme => f.write_str("must be redis://host[:port][/db]"),
            Self::Tls => {
                f.write_str("TLS to Redis (`rediss://`) is not supported yet; use redis://")
            }
            Self::Credentials => f.write_str("must not hold credentials"),
            Self::Other(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for UrlError {}

impl Endpoint {
    /// Parses `redis://host[:port][/db]` (IPv6 hosts in brackets). No credentials, no TLS.
    /// `warden-config` validates every Redis URL setting with this, so what passes
    /// `warden check` is what the clients connect to.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        if url.starts_with("rediss://") {
            return Err(UrlError::Tls);
        }
        let rest = url.strip_prefix("redis://").ok_or(UrlError::Scheme)?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(UrlError::Credentials);
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6
                    .split_once(']')
                    .ok_or_else(|| UrlError::Other("unclosed `[` in the host".into()))?;
                (h, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err(UrlError::Other("needs a host".into()));
        }
        let port = match port {
            None => 6379,
            Some(p) => p
                .parse()
                .map_err(|_| UrlError::Other(format!("`{p}` is not a port")))?,
        };
        let db = match path {
            "" => 0,
            d => d
                .parse()
                .map_err(|_| UrlError::Other(format!("`/{d}` is not a database number")))?,
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

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database to `SELECT` (0, Redis' default, needs no `SELECT`).
    pub fn db(&self) -> u32 {
        self.db
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_ref().map(|Password(p)| p.as_str())
    }
}

/// The URL without the password, for logs.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "redis://[{}]:{}/{}", self.host, self.port, self.db)
        } else {
            write!(f, "redis://{}:{}/{}", self.host, self.port, self.db)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds of the two callers: the rate-limit store's and the revocation channel's.
    const WIDE: Limits = Limits {
        max_bulk: 1 << 20,
        max_array: 1024,
        max_depth: 4,
    };
    const NARROW: Limits = Limits {
        max_bulk: 64 * 1024,
        max_array: 16,
        max_depth: 2,
    };

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&[b"GET", b"k\r\n"]),
            b"*2\r\n$3\r\nGET\r\n$3\r\nk\r\n\r\n".to_vec()
        );
        assert_eq!(
            encode(&[b"PUBLISH", b"c", b"x\r\n"]),
            b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$3\r\nx\r\n\r\n".to_vec()
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
            // What a subscriber receives.
            (
                b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$3\r\n{\"a\r\n",
                Value::Array(vec![
                    Value::Bulk(b"message".to_vec()),
                    Value::Bulk(b"c".to_vec()),
                    Value::Bulk(b"{\"a".to_vec()),
                ]),
            ),
        ];
        for limits in [&WIDE, &NARROW] {
            for (bytes, want) in cases {
                assert_eq!(parse(bytes, limits), Ok(Some((want.clone(), bytes.len()))));
                for cut in 0..bytes.len() {
                    assert_eq!(
                        parse(&bytes[..cut], limits),
                        Ok(None),
                        "{bytes:?} cut at {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn refuses_what_is_not_resp_or_too_large() {
        for limits in [&WIDE, &NARROW] {
            assert_eq!(parse(b"?x\r\n", limits), Err(Malformed));
            assert_eq!(parse(b"?\r\n", limits), Err(Malformed));
            assert_eq!(parse(b":12a\r\n", limits), Err(Malformed));
            assert_eq!(parse(b"$3\r\nabcd\r\n", limits), Err(Malformed));
            assert_eq!(parse(b"$99999999\r\n", limits), Err(Malformed));
            assert_eq!(
                parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", limits),
                Err(Malformed)
            );
        }
        // Each caller's own bounds.
        assert_eq!(parse(b"$999999\r\n", &NARROW), Err(Malformed));
        assert_eq!(parse(b"$999999\r\n", &WIDE), Ok(None));
        let three_deep: &[u8] = b"*1\r\n*1\r\n*1\r\n:1\r\n";
        assert_eq!(parse(three_deep, &NARROW), Err(Malformed));
        assert!(matches!(parse(three_deep, &WIDE), Ok(Some(_))));
    }

    #[test]
    fn parses_redis_urls_and_refuses_credentials() {
        let ep = |u: &str| Endpoint::parse(u);
        let e = ep("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!((e.host(), e.port(), e.db()), ("127.0.0.1", 6380, 2));
        assert_eq!(e.to_string(), "redis://127.0.0.1:6380/2");
        assert_eq!(ep("redis://cache").map(|e| (e.port, e.db)), Ok((6379, 0)));
        assert_eq!(
            ep("redis://[::1]:7000/").map(|e| (e.host, e.port)),
            Ok(("::1".into(), 7000))
        );
        assert_eq!(
            ep("redis://[::1]").unwrap().to_string(),
            "redis://[::1]:6379/0"
        );
        assert_eq!(ep("rediss://h"), Err(UrlError::Tls));
        assert_eq!(ep("http://h"), Err(UrlError::Scheme));
        assert_eq!(ep("redis://u:p@h"), Err(UrlError::Credentials));
        for bad in ["redis://h:x", "redis://h/x", "redis://", "redis://[::1"] {
            assert!(matches!(ep(bad), Err(UrlError::Other(_))), "{bad}");
        }
    }

    #[test]
    fn the_password_is_sent_yet_never_printed() {
        let e = Endpoint::parse("redis://h")
            .unwrap()
            .with_password(Some("hunter2".into()));
        assert_eq!(e.password(), Some("hunter2"));
        assert!(!format!("{e:?}").contains("hunter2"));
        assert!(!e.to_string().contains("hunter2"));
    }
}
