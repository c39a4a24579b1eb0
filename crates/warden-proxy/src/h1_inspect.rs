//! A second look at HTTP/1.1 request framing, for what hyper accepts but a security gateway
//! must refuse.
//!
//! hyper parses requests safely, but it quietly resolves two ambiguities that request-smuggling
//! attacks rely on: a request with both `Content-Length` and `Transfer-Encoding` is read as
//! chunked (the length is dropped before we can see it), and repeated identical
//! `Content-Length` lines are merged. RFC 9112 §6.1/§6.3 let a server reject both, and a
//! gateway should, so that an upstream with different rules never sees them.
//!
//! This sans-IO state machine reads the same bytes hyper reads, request by request (skipping
//! bodies by their framing), and records one [`Verdict`] per request head, in order. The
//! connection's service takes verdicts in the same order. If the inspector loses track of the
//! framing, it stops and records nothing further, and the service refuses any further request
//! on that connection (a request without a verdict is never trusted).

use std::collections::VecDeque;

/// Longest line the inspector follows at least: hyper's own bound on chunk extensions and
/// trailers. [`Inspector::new`] raises it to the configured head size, so that every line
/// hyper accepts is followed (a longer head is refused by hyper with 431).
const MAX_LINE: usize = 16 * 1024;

/// What the inspector saw in one request head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// More than one `Content-Length` field line.
    pub duplicate_content_length: bool,
    /// Both `Content-Length` and `Transfer-Encoding`.
    pub content_length_and_transfer_encoding: bool,
    /// More than one `Transfer-Encoding` field line.
    pub duplicate_transfer_encoding: bool,
}

impl Verdict {
    /// True when the head's framing is ambiguous and the request must be refused.
    pub fn is_ambiguous(&self) -> bool {
        self.duplicate_content_length
            || self.content_length_and_transfer_encoding
            || self.duplicate_transfer_encoding
    }
}

#[derive(Debug)]
enum State {
    /// In a request head; `first` is true before the request line is complete.
    Head { first: bool },
    /// In a body of known length.
    Fixed(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// In chunk data, then its CRLF.
    ChunkData(u64),
    /// Trailer lines after the last chunk.
    Trailers,
    /// Lost track; inspect nothing more.
    Stopped,
}

/// The inspector for one connection.
#[derive(Debug)]
pub struct Inspector {
    state: State,
    line: Vec<u8>,
    cl_lines: u32,
    te_lines: u32,
    te_chunked_last: bool,
    cl_value: Option<u64>,
    verdicts: VecDeque<Verdict>,
    max_line: usize,
}

impl Default for Inspector {
    fn default() -> Self {
        Self {
            state: State::Head { first: true },
            line: Vec::new(),
            cl_lines: 0,
            te_lines: 0,
            te_chunked_last: false,
            cl_value: None,
            verdicts: VecDeque::new(),
            max_line: MAX_LINE + 1024,
        }
    }
}

impl Inspector {
    /// An inspector for a server that accepts request heads of up to `max_header_bytes`.
    pub fn new(max_header_bytes: usize) -> Self {
        Self {
            max_line: max_header_bytes.max(MAX_LINE) + 1024,
            ..Self::default()
        }
    }

    /// Frees the line buffer and verdict queue when nothing is pending (an idle connection).
    pub fn shrink(&mut self) {
        if self.line.is_empty() {
            self.line = Vec::new();
        }
        if self.verdicts.is_empty() {
            self.verdicts = VecDeque::new();
        }
    }

    /// True while part of a request head has arrived and the rest has not: a connection that
    /// ends now ended inside a head (a probe or a broken client, not a finished exchange).
    pub fn mid_head(&self) -> bool {
        match self.state {
            State::Head { first } => !first || !self.line.is_empty(),
            _ => false,
        }
    }

    /// Takes the verdict for the next request head, in order.
    pub fn next_verdict(&mut self) -> Option<Verdict> {
        self.verdicts.pop_front()
    }

    /// Feeds bytes as they are read from the client.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Stopped => return,
                State::Fixed(n) => {
                    let take = (n as usize).min(data.len());
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::Head { first: true }
                    } else {
                        State::Fixed(left)
                    };
                }
                State::ChunkData(n) => {
                    let take = (n as usize).min(data.len());
                    data = &data[take..];
                    let left = n - take as u64;
                    if left == 0 {
                        self.state = State::ChunkSize;
                        // The CRLF after the data arrives as an empty "size line", skipped below.
                        self.line.clear();
                        self.line.push(0);
                    } else {
                        self.state = State::ChunkData(left);
                    }
                }
                State::Head { .. } | State::ChunkSize | State::Trailers => {
                    let Some(pos) = data.iter().position(|b| *b == b'\n') else {
                        self.extend_line(data);
                        return;
                    };
                    self.extend_line(&data[..pos]);
                    data = &data[pos + 1..];
                    self.end_of_line();
                }
            }
        }
    }

    fn extend_line(&mut self, bytes: &[u8]) {
        if self.line.len() + bytes.len() > self.max_line {
            self.state = State::Stopped;
            self.line.clear();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_of_line(&mut self) {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        match self.state {
            State::Head { first: true } => {
                // Leading empty lines before a request line are allowed (RFC 9112 §2.2).
                if !line.is_empty() {
                    self.state = State::Head { first: false };
                }
            }
            State::Head { first: false } => {
                if line.is_empty() {
                    self.end_of_head();
                } else {
                    self.header_line(&line);
                }
            }
            State::ChunkSize => {
                if line == [0] {
                    // The CRLF that ends chunk data.
                } else {
                    let hex_part = line.split(|b| *b == b';').next().unwrap_or(&[]);
                    let hex_part = trim(hex_part);
                    match parse_hex(hex_part) {
                        Some(0) => self.state = State::Trailers,
                        Some(n) => self.state = State::ChunkData(n),
                        None => self.state = State::Stopped,
                    }
                }
            }
            State::Trailers => {
                if line.is_empty() {
                    self.state = State::Head { first: true };
                }
            }
            State::Fixed(_) | State::ChunkData(_) | State::Stopped => {}
        }
        line.clear();
        self.line = line;
    }

    fn header_line(&mut self, line: &[u8]) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return;
        };
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            self.cl_lines += 1;
            self.cl_value = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.te_lines += 1;
            let last = value.rsplit(|b| *b == b',').next().map(trim).unwrap_or(&[]);
            self.te_chunked_last = last.eq_ignore_ascii_case(b"chunked");
        }
    }

    fn end_of_head(&mut self) {
        self.verdicts.push_back(Verdict {
            duplicate_content_length: self.cl_lines > 1,
            content_length_and_transfer_encoding: self.cl_lines > 0 && self.te_lines > 0,
            duplicate_transfer_encoding: self.te_lines > 1,
        });
        self.state = if self.te_lines > 0 {
            if self.te_chunked_last {
                State::ChunkSize
            } else {
                // hyper refuses this request and closes the connection.
                State::Stopped
            }
        } else if self.cl_lines > 0 {
            match self.cl_value {
                Some(0) => State::Head { first: true },
                Some(n) => State::Fixed(n),
                None => State::Stopped,
            }
        } else {
            State::Head { first: true }
        };
        self.cl_lines = 0;
        self.te_lines = 0;
        self.te_chunked_last = false;
        self.cl_value = None;
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| *c != b' ' && *c != b'\t')
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| *c != b' ' && *c != b'\t')
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// A chunk size, read as hyper reads it: any number of leading zeros, refused on overflow.
fn parse_hex(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for c in b {
        n = n
            .checked_mul(16)?
            .checked_add((*c as char).to_digit(16)? as u64)?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(input: &[u8], split: usize) -> Vec<Verdict> {
        let mut i = Inspector::default();
        for chunk in input.chunks(split.max(1)) {
            i.feed(chunk);
        }
        std::iter::from_fn(|| i.next_verdict()).collect()
    }

    #[test]
    fn clean_requests_give_clean_verdicts_at_any_read_size() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloPOST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /z HTTP/1.1\r\nHost: a\r\n\r\n";
        for split in [1, 2, 7, 1000] {
            let v = verdicts(input, split);
            assert_eq!(v.len(), 4, "split {split}");
            assert!(v.iter().all(|v| !v.is_ambiguous()), "split {split}: {v:?}");
        }
    }

    #[test]
    fn flags_cl_with_te_in_either_order() {
        let a = verdicts(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 3);
        let b = verdicts(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 5);
        assert!(a[0].content_length_and_transfer_encoding);
        assert!(b[0].content_length_and_transfer_encoding);
    }

    #[test]
    fn flags_duplicate_content_length_even_when_equal() {
        let v = verdicts(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx",
            4,
        );
        assert!(v[0].duplicate_content_length);
    }

    #[test]
    fn a_smuggled_head_inside_a_body_is_not_mistaken_for_a_request() {
        let v = verdicts(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\nGET /admin HTTP/1.1\r\nContent-Length: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 6);
        assert_eq!(v.len(), 2);
    }
}
