//! Certificate rotation under load: a steady stream of HTTPS requests, on kept-alive
//! connections and on a new connection each, while the server's certificate files are
//! replaced; counts every failed request and times how long new handshakes take to see the
//! new certificate.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;

use crate::client::tls_connect;

/// Writes `contents` to `path` the way deployment tools do: a temporary file in the same
/// directory, then a rename over the old one (readers see the old or the new file, whole).
pub fn replace_atomically(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("rotating");
    std::fs::write(&tmp, contents).expect("write the new file");
    std::fs::rename(&tmp, path).expect("rename over the old file");
}

impl crate::Pki {
    /// Issues a new server certificate for `names` and replaces `cert` and then `key` with it,
    /// each atomically (the pair is mismatched for a moment, as in any real rotation).
    /// Returns the new leaf.
    pub fn rotate_server(
        &self,
        cert: &Path,
        key: &Path,
        names: &[&str],
    ) -> CertificateDer<'static> {
        let c = self.ca.server_cert(names).expect("server cert");
        replace_atomically(cert, c.cert_pem.as_bytes());
        replace_atomically(key, c.key_pem.as_bytes());
        leaf_of(c.cert_pem.as_bytes())
    }
}

/// The first certificate of a PEM chain.
pub fn leaf_of(pem: &[u8]) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .next()
        .expect("a certificate")
        .expect("PEM")
}

/// What a rotation under load saw.
#[derive(Debug)]
pub struct RotationRun {
    /// Requests answered 200.
    pub ok: u64,
    /// Requests answered 200 on new connections after the new certificate was first seen.
    pub ok_after: u64,
    /// Every failed request: what went wrong.
    pub failures: Vec<String>,
    /// From the end of the file replacement to the first handshake presenting the new
    /// certificate (`None`: not within 5 s).
    pub new_cert_after: Option<Duration>,
}

async fn one_request(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    path: &str,
) -> Result<(), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("not ready: {e}"))?;
    let req = Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = res.status();
    res.into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    Ok(())
}

async fn connect(
    addr: SocketAddr,
    sni: &str,
    cfg: &Arc<rustls::ClientConfig>,
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        Option<CertificateDer<'static>>,
    ),
    String,
> {
    let (tls, info) = tls_connect(addr, sni, cfg.clone())
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    tokio::spawn(conn);
    Ok((sender, info.server_cert))
}

/// Runs HTTPS GETs of `path` against `addr` (SNI and Host `sni`, HTTP/1.1, `cfg` verifying
/// the server) from `kept` kept-alive connections and `fresh` tasks that open a connection
/// per request; after a warm-up calls `rotate` (which replaces the files and returns the new
/// leaf), probes with new handshakes until the new certificate is presented, keeps the load
/// on for another half second and stops.
pub async fn rotate_under_load(
    addr: SocketAddr,
    sni: &str,
    path: &str,
    cfg: Arc<rustls::ClientConfig>,
    rotate: impl FnOnce() -> CertificateDer<'static>,
) -> RotationRun {
    let stop = Arc::new(AtomicBool::new(false));
    let rotated = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let ok_after = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let (kept, fresh) = (4, 4);
    for i in 0..kept + fresh {
        let (stop, ok, ok_after, failures, rotated) = (
            stop.clone(),
            ok.clone(),
            ok_after.clone(),
            failures.clone(),
            rotated.clone(),
        );
        let (cfg, sni, path) = (cfg.clone(), sni.to_owned(), path.to_owned());
        tasks.push(tokio::spawn(async move {
            let fail = |what: String| failures.lock().unwrap().push(what);
            if i < kept {
                let mut sender = match connect(addr, &sni, &cfg).await {
                    Ok((s, _)) => s,
                    Err(e) => return fail(format!("kept-alive {i}: {e}")),
                };
                while !stop.load(Ordering::Acquire) {
                    match one_request(&mut sender, &sni, &path).await {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => return fail(format!("kept-alive {i}: {e}")),
                    };
                }
            } else {
                while !stop.load(Ordering::Acquire) {
                    let after = rotated.load(Ordering::Acquire);
                    let result = match connect(addr, &sni, &cfg).await {
                        Ok((mut s, _)) => one_request(&mut s, &sni, &path).await,
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if after {
                                ok_after.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => fail(format!("new connection {i}: {e}")),
                    }
                }
            }
        }));
    }
    // Warm-up: the load is flowing before the files change.
    let warm = Instant::now() + Duration::from_secs(5);
    while ok.load(Ordering::Relaxed) < 50 && Instant::now() < warm {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let new_leaf = tokio::task::block_in_place(rotate);
    let replaced = Instant::now();
    let mut new_cert_after = None;
    while replaced.elapsed() < Duration::from_secs(5) {
        if let Ok((_, Some(cert))) = connect(addr, sni, &cfg).await {
            if cert == new_leaf {
                new_cert_after = Some(replaced.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rotated.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await.expect("load task");
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    RotationRun {
        ok: ok.load(Ordering::Relaxed),
        ok_after: ok_after.load(Ordering::Relaxed),
        failures,
        new_cert_after,
    }
}
