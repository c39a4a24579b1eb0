//! `tlsload`: opens new TLS 1.3 connections as fast as it can, one HTTP/1.1 request each
//! (`Connection: close`), with session resumption off, so every connection is a full
//! handshake on the server. `wrk` with `Connection: close` tops out near 3,500 handshakes a
//! second on this 2-core machine for every proxy, because OpenSSL's client side (with
//! certificate verification) costs more than the server's; this client skips verifying the
//! server's certificate chain (the server still does all of its work: key exchange and
//! signature), so the proxy, not the client, is what the figure measures.
//!
//! With `--cert CHAIN.pem --key KEY.pem` it presents that client certificate (mTLS: the
//! server verifies the chain and the client's signature on every handshake), as a mesh
//! peer does (`bench/sidecar.sh`).
//!
//! ```text
//! tlsload --addr 127.0.0.1:18443 --path /bench -c 32 -t 1 -d 10 [--warmup 2] [--cert F --key F]
//! ```
//! Prints one line: `handshakes_per_sec=… ok=… errors=… p50_ms=… p99_ms=…`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0
            .signature_verification_algorithms
            .supported_schemes()
    }
}

struct Args {
    addr: SocketAddr,
    path: String,
    host: String,
    connections: usize,
    threads: usize,
    duration: Duration,
    warmup: Duration,
    cert: Option<String>,
    key: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:18443".parse().expect("literal"),
        path: "/".into(),
        host: "localhost".into(),
        connections: 32,
        threads: 1,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(0),
        cert: None,
        key: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--addr" => a.addr = val()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--path" => a.path = val()?,
            "--host" => a.host = val()?,
            "-c" => a.connections = num(val()?)? as usize,
            "-t" => a.threads = num(val()?)? as usize,
            "-d" => a.duration = Duration::from_secs(num(val()?)?),
            "--warmup" => a.warmup = Duration::from_secs(num(val()?)?),
            "--cert" => a.cert = Some(val()?),
            "--key" => a.key = Some(val()?),
            _ => return Err(format!("unknown argument `{flag}`")),
        }
    }
    if a.connections == 0 || a.threads == 0 {
        return Err("-c and -t must be at least 1".into());
    }
    if a.cert.is_some() != a.key.is_some() {
        return Err("--cert and --key go together".into());
    }
    Ok(a)
}

/// One connection: connect, full TLS 1.3 handshake, one request, read to the end.
async fn once(connector: &TlsConnector, a: &Args, name: &ServerName<'static>, req: &[u8]) -> bool {
    let Ok(tcp) = TcpStream::connect(a.addr).await else {
        return false;
    };
    let _ = tcp.set_nodelay(true);
    let Ok(mut tls) = connector.connect(name.clone(), tcp).await else {
        return false;
    };
    if tls.write_all(req).await.is_err() {
        return false;
    }
    let mut buf = Vec::with_capacity(512);
    if tls.read_to_end(&mut buf).await.is_err() && buf.is_empty() {
        return false;
    }
    buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200")
}

async fn worker(
    connector: TlsConnector,
    a: Arc<Args>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> (u64, u64, Vec<u32>) {
    let name = ServerName::try_from(a.host.clone()).expect("valid host name");
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        a.path, a.host
    );
    let (mut ok, mut err, mut lat) = (0u64, 0u64, Vec::with_capacity(1 << 16));
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let good = once(&connector, &a, &name, req.as_bytes()).await;
        if measuring.load(Ordering::Relaxed) {
            if good {
                ok += 1;
                lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
            } else {
                err += 1;
            }
        }
    }
    (ok, err, lat)
}

fn main() {
    let a = match parse_args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("tlsload: {e}");
            std::process::exit(2);
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)));
    let mut config = match (&a.cert, &a.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .unwrap_or_else(|e| {
                    eprintln!("tlsload: --cert {cert}: {e}");
                    std::process::exit(2);
                });
            let key = PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| {
                eprintln!("tlsload: --key {key}: {e}");
                std::process::exit(2);
            });
            builder.with_client_auth_cert(chain, key).unwrap_or_else(|e| {
                eprintln!("tlsload: client certificate: {e}");
                std::process::exit(2);
            })
        }
        _ => builder.with_no_client_auth(),
    };
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let measuring = Arc::new(AtomicBool::new(a.warmup.is_zero()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..a.connections)
            .map(|_| {
                tokio::spawn(worker(
                    connector.clone(),
                    a.clone(),
                    measuring.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(a.warmup).await;
        measuring.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(a.duration).await;
        stop.store(true, Ordering::Relaxed);
        let secs = t0.elapsed().as_secs_f64();
        let (mut ok, mut err, mut lat) = (0, 0, Vec::new());
        for t in tasks {
            let (o, e, l) = t.await.expect("worker");
            ok += o;
            err += e;
            lat.extend(l);
        }
        lat.sort_unstable();
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i] as f64 / 1000.0
        };
        println!(
            "handshakes_per_sec={:.1} ok={ok} errors={err} p50_ms={:.3} p99_ms={:.3}",
            ok as f64 / secs,
            pct(0.50),
            pct(0.99)
        );
    });
}
