//! Header hygiene for forwarding: hop-by-hop removal, `X-Forwarded-*` with trusted proxies,
//! request ids, W3C trace context, and the security headers added to responses.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

// Built once, at compile time: a name parsed from a `&str` per request costs a validation
// and a hash.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

fn is_hop_by_hop(name: &HeaderName) -> bool {
    // A match on the lower-case name: a length check and at most one comparison per name,
    // where comparing with each `HeaderName` in turn cost ~100 instructions per header.
    matches!(
        name.as_str(),
        "connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "keep-alive"
            | "proxy-connection"
    )
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the head's few names finds the hop-by-hop ones present (most heads hold
    // none, or only `Connection`); only those are looked up to be removed, not every
    // hop-by-hop name. Headers named by `Connection` go only with a `Connection` header.
    let mut present: Vec<HeaderName> = h.keys().filter(|k| is_hop_by_hop(k)).cloned().collect();
    if present.is_empty() {
        return;
    }
    if present.contains(&header::CONNECTION) {
        present.extend(
            h.get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                // `close` names no header; `keep-alive` names one already in `present`
                // when the head has it. Skipping them spares a parse and a lookup for the
                // `Connection: keep-alive` most heads carry.
                .filter(|n| {
                    !n.eq_ignore_ascii_case("keep-alive") && !n.eq_ignore_ascii_case("close")
                })
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()),
        );
    }
    for n in present {
        h.remove(n);
    }
}

/// Removes every header whose name contains `_` (`forwarding.headers_with_underscores =
/// "drop"`).
pub(crate) fn drop_underscored(h: &mut HeaderMap) {
    let names: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    for n in &names {
        h.remove(n);
    }
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|n| n.contains(&ip))
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// address in `X-Forwarded-For` that is not itself a trusted proxy.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    if !trusted(peer, proxies) {
        return peer;
    }
    let mut chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    while let Some(ip) = chain.pop() {
        if !trusted(ip, proxies) {
            return ip;
        }
    }
    peer
}

/// Sets `X-Forwarded-For/-Proto/-Host`: extended when the peer is a trusted proxy, replaced
/// otherwise (a client cannot forge where it came from).
pub(crate) fn set_forwarded(
    h: &mut HeaderMap,
    peer: IpAddr,
    tls: bool,
    host: &str,
    proxies: &[IpNet],
) {
    let (xff, xfp, xfh) = (X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST);
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    if trusted(peer, proxies) {
        let prior: Vec<String> = h
            .get_all(&xff)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let value = if prior.is_empty() {
            peer.to_string()
        } else {
            format!("{}, {peer}", prior.join(", "))
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(xff, v);
        }
        if !h.contains_key(&xfp) {
            h.insert(xfp, proto);
        }
        if !h.contains_key(&xfh) && !host.is_empty() {
            if let Ok(v) = HeaderValue::from_str(host) {
                h.insert(xfh, v);
            }
        }
    } else {
        h.remove(header::FORWARDED);
        h.remove(X_REAL_IP);
        h.insert(xff, ip_value(peer));
        h.insert(xfp, proto);
        // An HTTP/1.0 request may come without a host: then there is none to report.
        match HeaderValue::from_str(host)
            .ok()
            .filter(|_| !host.is_empty())
        {
            Some(v) => {
                h.insert(xfh, v);
            }
            None => {
                h.remove(xfh);
            }
        }
    }
}

/// `ip` as a header value. IPv4 is written by hand: `to_string` goes through the formatting
/// machinery (~1,000 instructions) for every forwarded request.
fn ip_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static(""));
    };
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + (octet / 10) % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    HeaderValue::from_bytes(&buf[..n]).unwrap_or(HeaderValue::from_static(""))
}

/// Keeps the client's request id when it is a sane token, otherwise makes one.
pub(crate) fn request_id(h: &HeaderMap, name: &HeaderName) -> HeaderValue {
    if let Some(v) = h.get(name) {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
        {
            return v.clone();
        }
    }
    let id = hex(rand::random::<u128>(), 32);
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The low `digits` hex digits of `v`, lower case, zero-padded (`format!("{:032x}")` without
/// the formatting machinery, which cost ~1,000 instructions per request here).
fn hex(v: u128, digits: usize) -> String {
    let mut buf = [0u8; 32];
    let digits = digits.min(32) & !1;
    write_hex(v, &mut buf[..digits]);
    // Only ASCII hex digits were written, so this never falls back.
    std::str::from_utf8(&buf[..digits])
        .map(str::to_owned)
        .unwrap_or_default()
}

/// Writes the low `out.len()` hex digits of `v` into `out` (an even number, at most 32),
/// lower case, zero-padded: two digits per byte, from a table.
fn write_hex(v: u128, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = v.to_be_bytes();
    let start = 16usize.saturating_sub(out.len() / 2);
    for (pair, b) in out.chunks_exact_mut(2).zip(&bytes[start..]) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// Compiled security headers.
#[derive(Default)]
pub(crate) struct SecurityHeaders {
    /// Sent on TLS listeners only.
    pub(crate) hsts: Option<HeaderValue>,
    pub(crate) always: Vec<(HeaderName, HeaderValue)>,
}

impl SecurityHeaders {
    pub(crate) fn compile(c: &warden_config::SecurityHeaders) -> Self {
        let mut always = Vec::new();
        if c.content_type_options {
            always.push((
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ));
        }
        if let Ok(v) = HeaderValue::from_str(&c.referrer_policy) {
            if !c.referrer_policy.is_empty() {
                always.push((header::REFERRER_POLICY, v));
            }
        }
        if let Ok(v) = HeaderValue::from_str(&c.frame_options) {
            if !c.frame_options.is_empty() {
                always.push((header::X_FRAME_OPTIONS, v));
            }
        }
        for (k, v) in &c.extra {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                always.push((k, v));
            }
        }
        Self {
            hsts: (!c.hsts.is_empty())
                .then(|| HeaderValue::from_str(&c.hsts).ok())
                .flatten(),
            always,
        }
    }

    /// Adds each header the response does not already carry.
    pub(crate) fn apply(&self, h: &mut HeaderMap, tls: bool) {
        if tls {
            if let Some(v) = &self.hsts {
                h.entry(header::STRICT_TRANSPORT_SECURITY)
                    .or_insert_with(|| v.clone());
            }
        }
        for (k, v) in &self.always {
            h.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_values_match_to_string() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.100.9",
            "1.10.100.200",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(ip).to_str().unwrap(), ip.to_string());
        }
    }

    #[test]
    fn hex_ids_are_zero_padded_lower_case_like_format() {
        for v in [
            0u128,
            1,
            0xabc,
            u128::from(u64::MAX),
            u128::MAX,
            0x0123_4567_89ab_cdef,
        ] {
            assert_eq!(hex(v, 32), format!("{v:032x}"));
            assert_eq!(
                hex(v & u128::from(u64::MAX), 16),
                format!("{:016x}", v as u64)
            );
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn client_ip_walks_trusted_chain_from_the_right() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = map(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.9")]);
        assert_eq!(
            client_ip("10.0.0.1".parse().unwrap(), &h, &proxies),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip("8.8.8.8".parse().unwrap(), &h, &proxies),
            "8.8.8.8".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        let name = HeaderName::from_static("x-request-id");
        assert_eq!(
            request_id(&map(&[("x-request-id", "abc-123")]), &name),
            "abc-123"
        );
        let made = request_id(&map(&[("x-request-id", "bad id with spaces")]), &name);
        assert_eq!(made.len(), 32);
    }
}
