//! Path normalisation, done once before route matching so that a route cannot be bypassed
//! by spelling a path differently (`/public/../admin`, `/admin/%2e`, `//admin`).
//!
//! Following RFC 3986 §6.2.2 and what Envoy does with `normalize_path` and `merge_slashes`:
//! percent-encoded unreserved characters are decoded, other escapes are kept with upper-case
//! hex, `.` and `..` segments are resolved (never above the root), and runs of `/` become one.
//! Refused with 400: encoded `/` or `\` (unless allowed), NUL raw or encoded, raw `\`, bad
//! escapes, and `..;`-style segments that some servers read as `..`.

use std::fmt;

/// Why a path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// The path is not in origin form (`/…`).
    NotAbsolute,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C`: a separator hidden from matching.
    EncodedSlash,
    /// NUL, raw or encoded, or another control character.
    ControlCharacter,
    /// A raw backslash, which some upstreams treat as `/`.
    Backslash,
    /// A segment like `..;x` or `.;x` that some upstreams resolve as a dot segment.
    DotSegmentWithParameters,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "path must start with /",
            PathError::BadEscape => "malformed percent-encoding in path",
            PathError::EncodedSlash => "encoded slash in path",
            PathError::ControlCharacter => "control character in path",
            PathError::Backslash => "backslash in path",
            PathError::DotSegmentWithParameters => "dot segment with parameters in path",
        })
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalises a request path (without its query). Returns the path to match and forward.
pub fn normalize_path(raw: &str, allow_encoded_slash: bool) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Pass 1: decode unreserved escapes, canonicalise the rest, refuse what must be refused.
    let mut decoded = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (h, l) = match (
                    bytes.get(i + 1).and_then(|b| hex(*b)),
                    bytes.get(i + 2).and_then(|b| hex(*b)),
                ) {
                    (Some(h), Some(l)) => (h, l),
                    _ => return Err(PathError::BadEscape),
                };
                let v = h << 4 | l;
                if v == 0 || v < 0x20 || v == 0x7f {
                    return Err(PathError::ControlCharacter);
                }
                if (v == b'/' || v == b'\\') && !allow_encoded_slash {
                    return Err(PathError::EncodedSlash);
                }
                if unreserved(v) {
                    decoded.push(v as char);
                } else {
                    decoded.push('%');
                    decoded.push(char::from(b"0123456789ABCDEF"[(v >> 4) as usize]));
                    decoded.push(char::from(b"0123456789ABCDEF"[(v & 15) as usize]));
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            0x80..=0xff => {
                // Raw UTF-8, which the URI parser admits: percent-encode it (upper-case hex), so
                // both spellings of a path normalise alike and no byte is re-encoded as a char.
                decoded.push('%');
                decoded.push(char::from(b"0123456789ABCDEF"[(b >> 4) as usize]));
                decoded.push(char::from(b"0123456789ABCDEF"[(b & 15) as usize]));
                i += 1;
            }
            _ => {
                decoded.push(b as char);
                i += 1;
            }
        }
    }
    // Pass 2: merge slashes and resolve dot segments.
    let trailing_slash = decoded.ends_with('/');
    let mut out: Vec<&str> = Vec::new();
    let mut ends_in_dir = trailing_slash;
    for seg in decoded.split('/') {
        match seg {
            "" => {}
            "." => ends_in_dir = true,
            ".." => {
                out.pop();
                ends_in_dir = true;
            }
            s => {
                let base = s.split(';').next().unwrap_or(s);
                if s.contains(';') && (base == "." || base == "..") {
                    return Err(PathError::DotSegmentWithParameters);
                }
                out.push(s);
                ends_in_dir = false;
            }
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || ends_in_dir || trailing_slash {
        path.push('/');
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize_path(p, false)
    }

    #[test]
    fn plain_paths_are_unchanged() {
        assert_eq!(n("/").unwrap(), "/");
        assert_eq!(n("/public/hello").unwrap(), "/public/hello");
        assert_eq!(n("/public/").unwrap(), "/public/");
    }

    #[test]
    fn dot_segments_resolve_and_never_climb_above_root() {
        assert_eq!(n("/public/../admin").unwrap(), "/admin");
        assert_eq!(n("/public/./x").unwrap(), "/public/x");
        assert_eq!(n("/../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/a/.").unwrap(), "/a/");
    }

    #[test]
    fn encoded_dots_are_decoded_before_resolving() {
        assert_eq!(n("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(n("/public/%2E%2E/admin").unwrap(), "/admin");
        assert_eq!(n("/public/.%2e/admin").unwrap(), "/admin");
        assert_eq!(n("/%61dmin").unwrap(), "/admin");
    }

    #[test]
    fn slashes_merge() {
        assert_eq!(n("//admin").unwrap(), "/admin");
        assert_eq!(n("/public//..//admin///x").unwrap(), "/admin/x");
    }

    #[test]
    fn encoded_separators_and_nul_are_refused() {
        assert_eq!(n("/public%2F..%2Fadmin"), Err(PathError::EncodedSlash));
        assert_eq!(n("/public/%2f"), Err(PathError::EncodedSlash));
        assert_eq!(n("/public/%5C..%5Cadmin"), Err(PathError::EncodedSlash));
        assert_eq!(n("/public/%00"), Err(PathError::ControlCharacter));
        assert_eq!(n("/a\\b"), Err(PathError::Backslash));
        assert_eq!(n("/a/%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/a/%4"), Err(PathError::BadEscape));
        assert_eq!(
            n("/public/..;/admin"),
            Err(PathError::DotSegmentWithParameters)
        );
        assert_eq!(n("relative"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn encoded_slash_can_be_allowed_and_stays_encoded() {
        assert_eq!(normalize_path("/a%2fb", true).unwrap(), "/a%2Fb");
    }

    #[test]
    fn reserved_escapes_stay_encoded_in_upper_case() {
        assert_eq!(n("/a%20b%3f").unwrap(), "/a%20b%3F");
        assert_eq!(n("/a%252e%252e/").unwrap(), "/a%252e%252e/");
    }
}
