//! W3C trace context (`traceparent`): parsing what a caller sent, writing what Warden sends.

/// A caller's `traceparent`: the trace it belongs to, the caller's span and whether the
/// caller sampled it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    /// 16 bytes, not zero.
    pub trace_id: u128,
    /// 8 bytes, not zero.
    pub span_id: u64,
    /// The `sampled` flag.
    pub sampled: bool,
}

fn hex_digits(s: &[u8]) -> Option<u128> {
    let mut v: u128 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u128::from(d);
    }
    Some(v)
}

/// Parses a `traceparent` value (version `00`, or a later version's first four fields);
/// `None` when it is not valid, as the W3C recommendation asks (upper-case hex, zero ids,
/// version `ff`, extra fields on version `00`).
pub fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    let v = v.trim_ascii();
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex_digits(&v[..2])?;
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace_id = hex_digits(&v[3..35])?;
    let span_id = u64::try_from(hex_digits(&v[36..52])?).ok()?;
    let flags = hex_digits(&v[53..55])?;
    (trace_id != 0 && span_id != 0).then_some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_hex(v: u128, out: &mut [u8]) {
    let n = out.len();
    for (i, o) in out.iter_mut().enumerate() {
        let shift = 4 * (n - 1 - i);
        *o = HEX[((v >> shift) & 0xf) as usize];
    }
}

/// `00-<trace id>-<span id>-<flags>`: the value Warden sends, naming `span_id` as the parent
/// of what the receiver does.
pub fn traceparent(trace_id: u128, span_id: u64, sampled: bool) -> [u8; 55] {
    let mut v = [0u8; 55];
    v[..3].copy_from_slice(b"00-");
    write_hex(trace_id, &mut v[3..35]);
    v[35] = b'-';
    write_hex(u128::from(span_id), &mut v[36..52]);
    v[52] = b'-';
    v[53..55].copy_from_slice(if sampled { b"01" } else { b"00" });
    v
}

/// A new random trace id (never zero).
pub fn new_trace_id() -> u128 {
    rand::random::<u128>() | 1
}

/// A new random span id (never zero).
pub fn new_span_id() -> u64 {
    rand::random::<u64>() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &[u8] = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn the_w3c_example_parses_and_writes_back_the_same() {
        let p = parse_traceparent(EXAMPLE).unwrap();
        assert_eq!(p.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(p.span_id, 0xb7ad6b7169203331);
        assert!(p.sampled);
        assert_eq!(&traceparent(p.trace_id, p.span_id, true)[..], EXAMPLE);
        let unsampled = traceparent(1, 2, false);
        assert_eq!(
            &unsampled[..],
            b"00-00000000000000000000000000000001-0000000000000002-00"
        );
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            &b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"[..],
            b"00-00000000000000000000000000000000-b7ad6b7169203331-01",
            b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
            b"00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            b"",
        ] {
            assert_eq!(
                parse_traceparent(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A later version may add fields after a dash.
        let future = b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-more";
        assert!(!parse_traceparent(future).unwrap().sampled);
    }
}
