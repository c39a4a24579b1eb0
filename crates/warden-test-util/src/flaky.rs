//! Upstreams that misbehave at the TCP level, for resilience tests: they read each request
//! head and then answer, close the connection, reset it, or hang, as told — switchable while
//! a gateway talks to them. And [`dead_endpoint`], an address where nothing listens.
//!
//! They speak just enough HTTP/1.1 for bodiless requests (a GET): each connection serves one
//! request and closes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// What a [`Flaky`] upstream does after reading a request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answers with this status (body `ok`, header `x-upstream: <name>`), then closes.
    Answer(u16),
    /// Closes the connection without a word (FIN).
    Close,
    /// Resets the connection (RST, by closing with a zero linger time).
    Reset,
    /// Never answers; the connection stays open until the upstream is dropped.
    Hang,
}

/// A raw TCP upstream whose behaviour can be switched.
pub struct Flaky {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    requests: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Flaky {
    /// Starts an upstream named `name` in `mode` on `127.0.0.1:0`.
    pub async fn start(name: &str, mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind flaky upstream");
        let addr = listener.local_addr().expect("local addr");
        let mode = Arc::new(Mutex::new(mode));
        let requests = Arc::new(AtomicU64::new(0));
        let (m, r, name) = (mode.clone(), requests.clone(), name.to_owned());
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) ends every connection, hung ones too.
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (m, r, name) = (m.clone(), r.clone(), name.clone());
                conns.spawn(serve(stream, m, r, name));
                while conns.try_join_next().is_some() {}
            }
        });
        Self {
            addr,
            mode,
            requests,
            task,
        }
    }

    /// Changes what it does with the next requests.
    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Request heads read so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Flaky {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut s: TcpStream, mode: Arc<Mutex<Mode>>, requests: Arc<AtomicU64>, name: String) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let mode = *mode.lock().unwrap();
    match mode {
        Mode::Answer(status) => {
            let res = format!(
                "HTTP/1.1 {status} X\r\nx-upstream: {name}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
            let _ = s.write_all(res.as_bytes()).await;
            let _ = s.shutdown().await;
        }
        Mode::Close => {
            let _ = s.shutdown().await;
        }
        Mode::Reset => {
            let _ = s.set_zero_linger();
            drop(s);
        }
        Mode::Hang => {
            std::future::pending::<()>().await;
        }
    }
}

/// An address on 127.0.0.1 where nothing listens (bound, then closed), so connecting to it
/// is refused.
pub async fn dead_endpoint() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("local addr")
}
