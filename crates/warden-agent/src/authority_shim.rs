//! Rewrites an unusable `:authority` on the Workload API socket before h2 sees it.
//!
//! Since grpc 1.57, clients on a `unix:` target (py-spiffe's `WorkloadApiClient`, grpc-java)
//! send the percent-encoded socket path as `:authority` (grpc/grpc#38142). h2 resets such a
//! stream as malformed (hyperium/h2#487), and has no switch to accept it. The authority means
//! nothing on a Unix socket, so this shim sits between the socket and h2 on the Workload API
//! only: it passes the client's HTTP/2 frames through, except header blocks, which it decodes
//! (HPACK, with the client's dynamic table), and re-encodes with `:authority` set to
//! `localhost` when it is not a valid authority. Every other field and frame is unchanged;
//! the server's direction is copied as is. A malformed frame or header block ends the
//! connection.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The default SETTINGS_MAX_FRAME_SIZE: every peer accepts frames this large.
const MAX_FRAME: usize = 16_384;
/// The largest frame accepted from the client (HTTP/2's own ceiling is 16 MiB).
const MAX_IN_FRAME: usize = 1 << 20;
/// The largest header block accepted across HEADERS and CONTINUATION frames.
const MAX_BLOCK: usize = 256 * 1024;

fn bad(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned())
}

/// Copies the client's frames from `from` to `to`, fixing `:authority` in header blocks.
pub(crate) async fn client_to_server<R, W>(mut from: R, mut to: W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    if preface != PREFACE {
        return Err(bad("not an HTTP/2 connection preface"));
    }
    to.write_all(&preface).await?;
    let mut decoder = loona_hpack::Decoder::new();
    let mut encoder = loona_hpack::Encoder::new();
    // A header block in progress: stream id, flags of its HEADERS frame, priority bytes.
    let mut open: Option<(u32, u8, Vec<u8>, Vec<u8>)> = None;
    loop {
        let mut head = [0u8; 9];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return to.shutdown().await,
            Err(e) => return Err(e),
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        if len > MAX_IN_FRAME {
            return Err(bad("frame too large"));
        }
        let mut payload = vec![0u8; len];
        from.read_exact(&mut payload).await?;
        match (kind, open.take()) {
            (HEADERS, None) => {
                let mut p = &payload[..];
                let mut pad = 0;
                if flags & PADDED != 0 {
                    pad = usize::from(*p.first().ok_or_else(|| bad("short HEADERS"))?);
                    p = &p[1..];
                }
                let mut priority = Vec::new();
                if flags & PRIORITY != 0 {
                    if p.len() < 5 {
                        return Err(bad("short HEADERS"));
                    }
                    priority = p[..5].to_vec();
                    p = &p[5..];
                }
                if pad > p.len() {
                    return Err(bad("padding longer than the frame"));
                }
                let block = p[..p.len() - pad].to_vec();
                let state = (stream, flags, priority, block);
                if flags & END_HEADERS != 0 {
                    emit(&mut to, &mut decoder, &mut encoder, state).await?;
                } else {
                    open = Some(state);
                }
            }
            (CONTINUATION, Some((id, f, prio, mut block))) if id == stream => {
                block.extend_from_slice(&payload);
                if block.len() > MAX_BLOCK {
                    return Err(bad("header block too large"));
                }
                let state = (id, f, prio, block);
                if flags & END_HEADERS != 0 {
                    emit(&mut to, &mut decoder, &mut encoder, state).await?;
                } else {
                    open = Some(state);
                }
            }
            (_, Some(_)) | (CONTINUATION, None) => {
                return Err(bad("frame interleaved with a header block"));
            }
            (_, None) => {
                to.write_all(&head).await?;
                to.write_all(&payload).await?;
            }
        }
        to.flush().await?;
    }
}

/// Re-encodes one complete header block and writes it as HEADERS (+ CONTINUATION) frames.
async fn emit<W: AsyncWrite + Unpin>(
    to: &mut W,
    decoder: &mut loona_hpack::Decoder<'_>,
    encoder: &mut loona_hpack::Encoder<'_>,
    (stream, flags, priority, block): (u32, u8, Vec<u8>, Vec<u8>),
) -> std::io::Result<()> {
    let mut fields = decoder
        .decode(&block)
        .map_err(|e| bad(&format!("HPACK: {e:?}")))?;
    for (name, value) in &mut fields {
        if name.as_slice() == b":authority"
            && http::uri::Authority::try_from(value.as_slice()).is_err()
        {
            *value = b"localhost".to_vec();
        }
    }
    let out = encoder.encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
    let first_room = MAX_FRAME - priority.len();
    let (first, mut rest) = out.split_at(out.len().min(first_room));
    let mut f = flags & (END_STREAM | PRIORITY);
    if rest.is_empty() {
        f |= END_HEADERS;
    }
    write_frame(to, HEADERS, f, stream, &[&priority, first]).await?;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        let f = if tail.is_empty() { END_HEADERS } else { 0 };
        write_frame(to, CONTINUATION, f, stream, &[chunk]).await?;
        rest = tail;
    }
    Ok(())
}

async fn write_frame<W: AsyncWrite + Unpin>(
    to: &mut W,
    kind: u8,
    flags: u8,
    stream: u32,
    parts: &[&[u8]],
) -> std::io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut head = [0u8; 9];
    head[0] = (len >> 16) as u8;
    head[1] = (len >> 8) as u8;
    head[2] = len as u8;
    head[3] = kind;
    head[4] = flags;
    head[5..].copy_from_slice(&stream.to_be_bytes());
    to.write_all(&head).await?;
    for p in parts {
        to.write_all(p).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![
            (payload.len() >> 16) as u8,
            (payload.len() >> 8) as u8,
            payload.len() as u8,
            kind,
            flags,
        ];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Reads frames back: (kind, flags, stream, payload).
    fn frames(mut b: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while b.len() >= 9 {
            let len = usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]);
            let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
            out.push((b[3], b[4], stream, b[9..9 + len].to_vec()));
            b = &b[9 + len..];
        }
        out
    }

    #[tokio::test]
    async fn a_socket_path_authority_becomes_localhost_and_everything_else_passes() {
        let mut enc = loona_hpack::Encoder::new();
        let big = "x".repeat(40_000);
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":authority", b"tmp%2Fagent.sock"),
            (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
            (b"x-big", big.as_bytes()),
        ];
        let block = enc.encode(fields.iter().copied());
        // PADDED and PRIORITY, split over a CONTINUATION.
        let (a, b) = block.split_at(100);
        let mut first = vec![3u8];
        first.extend_from_slice(&[0, 0, 0, 0, 16]);
        first.extend_from_slice(a);
        first.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS passes as is
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &first));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        let mut out = Vec::new();
        client_to_server(&input[..], &mut out).await.unwrap();
        assert_eq!(&out[..24], PREFACE);
        let got = frames(&out[24..]);
        assert_eq!(got[0], (0x4, 0, 0, vec![]));
        assert_eq!(got[1].0, HEADERS);
        assert_eq!(
            got[1].1,
            PRIORITY | END_STREAM,
            "no padding, no END_HEADERS yet"
        );
        assert_eq!(&got[1].3[..5], &[0, 0, 0, 0, 16]);
        assert!(got[2..].iter().all(|f| f.0 == CONTINUATION && f.2 == 1));
        assert_eq!(got.last().unwrap().1, END_HEADERS);
        let mut block = got[1].3[5..].to_vec();
        for f in &got[2..] {
            block.extend_from_slice(&f.3);
        }
        let decoded = loona_hpack::Decoder::new().decode(&block).unwrap();
        let find = |n: &[u8]| decoded.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(find(b":authority").unwrap(), b"localhost");
        assert_eq!(find(b":path").unwrap(), b"/SpiffeWorkloadAPI/FetchX509SVID");
        assert_eq!(find(b"x-big").unwrap().len(), 40_000);
    }

    #[tokio::test]
    async fn garbage_and_interleaved_frames_end_the_connection() {
        let mut out = Vec::new();
        assert!(
            client_to_server(&b"GET / HTTP/1.1\r\n\r\nxxxxxx"[..], &mut out)
                .await
                .is_err()
        );
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &[0x82]));
        input.extend(frame(0x0, 0, 1, b"data"));
        assert!(client_to_server(&input[..], &mut out).await.is_err());
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff]));
        assert!(client_to_server(&input[..], &mut out).await.is_err());
    }
}
