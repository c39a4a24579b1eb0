//! `wsload`: WebSocket load for the benchmarks.
//!
//! - `--mode echo`: `-c` connections, each sending a masked text frame of `--size` bytes and
//!   waiting for its echo (closed loop), for `-d` seconds after `--warmup`. Prints
//!   `msgs_per_s=… p50_ms=… p99_ms=… max_ms=… errors=… sent=…`.
//! - `--mode idle`: opens `-c` connections (each echoes one message), prints `open N` when all
//!   are open, holds them for `--hold` seconds, then closes them.
//!
//! ```text
//! wsload --addr 127.0.0.1:18080 --path /ws -c 100 -d 10 --size 64 [-t 1] [--mode echo]
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[path = "../ws.rs"]
#[allow(dead_code)] // `accept` is the echo server's
mod ws;

struct Args {
    addr: SocketAddr,
    path: String,
    connections: usize,
    threads: usize,
    duration: Duration,
    warmup: Duration,
    size: usize,
    idle: bool,
    hold: Duration,
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:18080".parse().expect("literal"),
        path: "/ws".into(),
        connections: 100,
        threads: 1,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        size: 64,
        idle: false,
        hold: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--addr" => a.addr = v.parse().expect("--addr"),
            "--path" => a.path = v,
            "-c" => a.connections = v.parse().expect("-c"),
            "-t" => a.threads = v.parse().expect("-t"),
            "-d" => a.duration = Duration::from_secs_f64(v.parse().expect("-d")),
            "--warmup" => a.warmup = Duration::from_secs_f64(v.parse().expect("--warmup")),
            "--size" => a.size = v.parse().expect("--size"),
            "--hold" => a.hold = Duration::from_secs_f64(v.parse().expect("--hold")),
            "--mode" => a.idle = v == "idle",
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

async fn open(addr: SocketAddr, path: &str, i: usize) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let key = ws::base64(&(i as u128 ^ 0x5eed_5eed_5eed_5eed).to_le_bytes());
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101") {
                return Err(std::io::Error::other(String::from_utf8_lossy(&buf).into_owned()));
            }
            return Ok((s, buf[end + 4..].to_vec()));
        }
    }
}

/// Sends one message and reads its echo.
async fn round(s: &mut TcpStream, pending: &mut Vec<u8>, msg: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    out.clear();
    ws::frame(out, 0x1, msg, Some([7, 1, 3, 9]));
    s.write_all(out).await?;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some((f, used)) = ws::parse(pending) {
            pending.drain(..used);
            if f.opcode == 0x1 && f.payload.len() == msg.len() {
                return Ok(());
            }
            continue;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

fn main() {
    let a = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let msg = vec![b'w'; a.size];
        if a.idle {
            let mut held = Vec::with_capacity(a.connections);
            for i in 0..a.connections {
                let (mut s, mut pending) = open(a.addr, &a.path, i).await.expect("open");
                let mut out = Vec::new();
                round(&mut s, &mut pending, &msg, &mut out).await.expect("first message");
                held.push(s);
            }
            println!("open {}", held.len());
            tokio::time::sleep(a.hold).await;
            return;
        }
        let start = Instant::now();
        let measure_from = start + a.warmup;
        let end = measure_from + a.duration;
        let mut tasks = Vec::new();
        for i in 0..a.connections {
            let (addr, path, msg) = (a.addr, a.path.clone(), msg.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat: Vec<u32> = Vec::new();
                let (mut errors, mut sent) = (0u64, 0u64);
                let Ok((mut s, mut pending)) = open(addr, &path, i).await else {
                    return (lat, 1, 0);
                };
                let mut out = Vec::new();
                loop {
                    let t = Instant::now();
                    if t >= end {
                        break;
                    }
                    if round(&mut s, &mut pending, &msg, &mut out).await.is_err() {
                        errors += 1;
                        break;
                    }
                    sent += 1;
                    if t >= measure_from {
                        lat.push(t.elapsed().as_micros() as u32);
                    }
                }
                (lat, errors, sent)
            }));
        }
        let mut all = Vec::new();
        let (mut errors, mut sent) = (0, 0);
        for t in tasks {
            let (l, e, s) = t.await.expect("task");
            all.extend(l);
            errors += e;
            sent += s;
        }
        all.sort_unstable();
        let q = |p: f64| -> f64 {
            if all.is_empty() {
                return 0.0;
            }
            all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0
        };
        println!(
            "msgs_per_s={:.0} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} errors={errors} sent={sent}",
            all.len() as f64 / a.duration.as_secs_f64(),
            q(0.5),
            q(0.99),
            all.last().map_or(0.0, |m| *m as f64 / 1000.0),
        );
    });
}
