//! `rateload`: HTTP/1.1 keep-alive requests at a constant rate, open loop (as wrk2 does), for
//! latency at a fixed load. `wrk` sends as fast as it can, so its latency is that of a
//! saturated server; Debian has no wrk2, and `h2load --rate` paces connections, not requests.
//!
//! `-c` connections share the rate: connection `i` sends its `k`-th request at
//! `start + (i + k·c) / rate`. A request is timed from when it was due if the connection was
//! still busy with the previous answer then (the wait is the server's doing: no coordinated
//! omission), and from when it was sent otherwise (a timer that woke late is the client's
//! doing). Requests due during `--warmup` are sent but not counted.
//!
//! ```text
//! rateload --addr 127.0.0.1:18000 --path /bench --rate 2000 -c 10 -d 15 [--warmup 3] [-t 1]
//! ```
//! Prints one line: `rps=… ok=… errors=… p50_ms=… p90_ms=… p99_ms=… p999_ms=… max_ms=…
//! connects=… behind=… sent=…` (`behind`: counted requests that waited for a busy
//! connection; `sent`: every request answered or failed, warm-up included, for dividing a
//! server's CPU time over the whole run).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};

struct Args {
    addr: SocketAddr,
    path: String,
    host: String,
    rate: f64,
    connections: usize,
    threads: usize,
    duration: Duration,
    warmup: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:18000".parse().expect("literal"),
        path: "/".into(),
        host: "localhost".into(),
        rate: 1000.0,
        connections: 10,
        threads: 1,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(0),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--addr" => a.addr = val()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--path" => a.path = val()?,
            "--host" => a.host = val()?,
            "--rate" => a.rate = num(val()?)? as f64,
            "-c" => a.connections = num(val()?)? as usize,
            "-t" => a.threads = num(val()?)? as usize,
            "-d" => a.duration = Duration::from_secs(num(val()?)?),
            "--warmup" => a.warmup = Duration::from_secs(num(val()?)?),
            _ => return Err(format!("unknown argument `{flag}`")),
        }
    }
    if a.connections == 0 || a.threads == 0 || a.rate < 1.0 {
        return Err("-c, -t and --rate must be at least 1".into());
    }
    Ok(a)
}

/// One keep-alive connection and the bytes read past the last response.
struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Conn {
    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Sends `req` and reads one response; returns (status, whether the server keeps the
    /// connection open).
    async fn exchange(&mut self, req: &[u8]) -> std::io::Result<(u16, bool)> {
        self.tcp.write_all(req).await?;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| std::io::Error::other("response head is not UTF-8"))?;
        let status: u16 = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status code"))?;
        let (mut length, mut chunked, mut keep) = (None, false, head.starts_with("HTTP/1.1"));
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim().to_ascii_lowercase();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.contains("chunked"),
                "connection" if value.contains("close") => keep = false,
                "connection" if value.contains("keep-alive") => keep = true,
                _ => {}
            }
        }
        let mut pos = head_end;
        if chunked {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf[pos..], b"\r\n") {
                        break pos + i;
                    }
                    self.fill().await?;
                };
                let size_text = std::str::from_utf8(&self.buf[pos..line_end]).unwrap_or("");
                let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| std::io::Error::other("bad chunk size"))?;
                pos = line_end + 2;
                if size == 0 {
                    // Trailers (none expected) end with an empty line.
                    loop {
                        if let Some(i) = find(&self.buf[pos..], b"\r\n") {
                            let empty = i == 0;
                            pos += i + 2;
                            if empty {
                                break;
                            }
                        } else {
                            self.fill().await?;
                        }
                    }
                    break;
                }
                while self.buf.len() < pos + size + 2 {
                    self.fill().await?;
                }
                pos += size + 2;
            }
        } else if let Some(n) = length {
            while self.buf.len() < head_end + n {
                self.fill().await?;
            }
            pos = head_end + n;
        } else if !(100..200).contains(&status) && status != 204 && status != 304 {
            // Delimited by the end of the connection.
            loop {
                match self.fill().await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
            }
            pos = self.buf.len();
            keep = false;
        }
        self.buf.drain(..pos);
        Ok((status, keep))
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    connects: u64,
    behind: u64,
    sent: u64,
    lat_us: Vec<u32>,
}

async fn worker(a: &'static Args, i: usize, start: Instant) -> Tally {
    let req = format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", a.path, a.host);
    let interval = Duration::from_secs_f64(a.connections as f64 / a.rate);
    let measure_from = start + a.warmup;
    let end = measure_from + a.duration;
    let mut due = start + Duration::from_secs_f64(i as f64 / a.rate);
    let mut prev_done = start;
    let mut conn: Option<Conn> = None;
    let mut t = Tally::default();
    while due < end {
        sleep_until(due).await;
        let sent = Instant::now();
        let blocked = prev_done > due;
        let t0 = if blocked { due } else { sent };
        let result = timeout(Duration::from_secs(10), async {
            if conn.is_none() {
                let tcp = TcpStream::connect(a.addr).await?;
                tcp.set_nodelay(true)?;
                t.connects += 1;
                conn = Some(Conn { tcp, buf: Vec::with_capacity(8192) });
            }
            conn.as_mut().expect("just set").exchange(req.as_bytes()).await
        })
        .await;
        let done = Instant::now();
        prev_done = done;
        t.sent += 1;
        let good = match result {
            Ok(Ok((status, keep))) => {
                if !keep {
                    conn = None;
                }
                status == 200
            }
            _ => {
                conn = None;
                false
            }
        };
        if due >= measure_from {
            if good {
                t.ok += 1;
                t.lat_us.push((done - t0).as_micros().min(u32::MAX as u128) as u32);
            } else {
                t.errors += 1;
            }
            t.behind += u64::from(blocked);
        }
        due += interval;
    }
    t
}

fn main() {
    let a: &'static Args = match parse_args() {
        Ok(a) => Box::leak(Box::new(a)),
        Err(e) => {
            eprintln!("rateload: {e}");
            std::process::exit(2);
        }
    };
    let rt = if a.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(a.threads);
        b
    }
    .enable_all()
    .build()
    .expect("runtime");
    rt.block_on(async move {
        let start = Instant::now() + Duration::from_millis(50);
        let tasks: Vec<_> = (0..a.connections)
            .map(|i| tokio::spawn(worker(a, i, start)))
            .collect();
        let mut all = Tally::default();
        for task in tasks {
            let t = task.await.expect("worker");
            all.ok += t.ok;
            all.errors += t.errors;
            all.connects += t.connects;
            all.behind += t.behind;
            all.sent += t.sent;
            all.lat_us.extend(t.lat_us);
        }
        let secs = a.duration.as_secs_f64();
        let lat = &mut all.lat_us;
        lat.sort_unstable();
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i] as f64 / 1000.0
        };
        println!(
            "rps={:.1} ok={} errors={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3} connects={} behind={} sent={}",
            all.ok as f64 / secs,
            all.ok,
            all.errors,
            pct(0.50),
            pct(0.90),
            pct(0.99),
            pct(0.999),
            pct(1.0),
            all.connects,
            all.behind,
            all.sent
        );
    });
}
