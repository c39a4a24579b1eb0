//! `wsecho`: a WebSocket echo server for the benchmarks (RFC 6455, no extensions): answers
//! the opening handshake, then sends each data frame back unmasked, answers pings and
//! closes. One thread, so the upstream costs the same for every proxy.
//!
//! ```text
//! wsecho --addr 127.0.0.1:18100
//! ```

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "../ws.rs"]
mod ws;

fn main() {
    let mut addr: SocketAddr = "127.0.0.1:18100".parse().expect("literal");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => addr = args.next().and_then(|v| v.parse().ok()).expect("--addr HOST:PORT"),
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await.expect("bind");
        loop {
            let Ok((s, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let _ = serve(s).await;
            });
        }
    });
}

async fn serve(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    let end = loop {
        let mut chunk = [0u8; 2048];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            return Ok(());
        }
    };
    // The key is case-sensitive base64: only the header's name is matched without case.
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let key = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("sec-websocket-key:"))
        .map(|l| l["sec-websocket-key:".len()..].trim().to_owned())
        .unwrap_or_default();
    let res = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        ws::accept(&key)
    );
    s.write_all(res.as_bytes()).await?;
    let mut pending = buf[end..].to_vec();
    let mut out = Vec::with_capacity(4096);
    loop {
        while let Some((frame, used)) = ws::parse(&pending) {
            out.clear();
            match frame.opcode {
                0x8 => {
                    ws::frame(&mut out, 0x8, &frame.payload, None);
                    s.write_all(&out).await?;
                    return Ok(());
                }
                0x9 => ws::frame(&mut out, 0xA, &frame.payload, None),
                0xA => {}
                op => ws::frame(&mut out, op, &frame.payload, None),
            }
            if !out.is_empty() {
                s.write_all(&out).await?;
            }
            pending.drain(..used);
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}
