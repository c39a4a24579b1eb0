//! TLS and HTTP/2, end to end over real sockets: TLS listeners (versions, SNI, certificate
//! reload, client certificates, HSTS), HTTP/2 on both sides (ALPN, h2c, upstream protocol),
//! and TLS to upstreams (CA trust, server name, mTLS).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme, SupportedProtocolVersion};
use tokio::net::{TcpListener, TcpStream};
use warden_test_util::client::{self, Answer};
use warden_test_util::{Gateway, Pki, Upstream};

// ---------------------------------------------------------------------------------------------
// Config helpers
// ---------------------------------------------------------------------------------------------

/// A path as a TOML string.
fn q(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// Admin on a free port, no access log, file watching off.
fn head() -> String {
    "[admin]\naddress = \"127.0.0.1:0\"\n[access_log]\nenabled = false\n[reload]\nwatch = false\n"
        .to_owned()
}

fn plain_listener(name: &str, http2: bool) -> String {
    format!("[[listeners]]\nname = \"{name}\"\naddress = \"127.0.0.1:0\"\nhttp2 = {http2}\n")
}

/// One certificate of a TLS listener: (cert, key, server_names).
type CertEntry<'a> = (&'a Path, &'a Path, &'a [&'a str]);

/// A TLS listener; `client_auth` is `(ca, mode)`.
fn tls_listener(
    name: &str,
    http2: bool,
    certs: &[CertEntry<'_>],
    client_auth: Option<(&Path, &str)>,
) -> String {
    let mut s = plain_listener(name, http2);
    for (cert, key, names) in certs {
        s.push_str(&format!(
            "[[listeners.tls.certificates]]\ncert = {}\nkey = \"file:{}\"\n",
            q(cert),
            key.display()
        ));
        if !names.is_empty() {
            let names: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
            s.push_str(&format!("server_names = [{}]\n", names.join(", ")));
        }
    }
    if let Some((ca, mode)) = client_auth {
        s.push_str(&format!(
            "[listeners.tls.client_auth]\nca = {}\nmode = \"{mode}\"\n",
            q(ca)
        ));
    }
    s
}

/// A cluster with one endpoint; `extra` is appended inside the cluster (e.g. a `[clusters.tls]`
/// table), plus a public route for `prefix` to it.
fn cluster_and_route(
    name: &str,
    endpoint: &str,
    protocol: &str,
    extra: &str,
    prefix: &str,
) -> String {
    format!(
        "[[clusters]]\nname = \"{name}\"\nendpoints = [\"{endpoint}\"]\nprotocol = \"{protocol}\"\n{extra}\n\
         [[routes]]\nname = \"r-{name}\"\nauth = \"none\"\ncluster = \"{name}\"\npath_prefix = \"{prefix}\"\n"
    )
}

/// A GET with an absolute URI (so it works over h1 and h2) and a Host header.
fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

fn leaf_der(cert_file: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(cert_file).expect("read issued certificate")
}

// ---------------------------------------------------------------------------------------------
// Client configs
// ---------------------------------------------------------------------------------------------

fn roots(ca: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("read ca") {
        roots.add(c.expect("ca pem")).expect("add ca");
    }
    roots
}

/// A client that speaks only the given TLS version and trusts `ca`.
fn versioned_client(
    ca: &Path,
    version: &'static SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    let cfg = rustls::ClientConfig::builder_with_provider(warden_crypto::provider())
        .with_protocol_versions(&[version])
        .expect("version")
        .with_root_certificates(roots(ca))
        .with_no_client_auth();
    Arc::new(cfg)
}

/// Accepts any server certificate (signatures still checked), so a test can look at which
/// certificate the server chose even when it does not name the SNI that was sent.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn any_cert_client() -> Arc<rustls::ClientConfig> {
    let provider = warden_crypto::provider();
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(warden_crypto::TLS_VERSIONS)
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    Arc::new(cfg)
}

/// The certificate the server presents for SNI `sni` (or no SNI for an IP address).
async fn presented_cert(addr: SocketAddr, sni: &str) -> CertificateDer<'static> {
    let (_, info) = client::tls_connect(addr, sni, any_cert_client())
        .await
        .unwrap_or_else(|e| panic!("handshake with SNI {sni}: {e}"));
    info.server_cert.expect("server certificate")
}

// ---------------------------------------------------------------------------------------------
// Admin metrics
// ---------------------------------------------------------------------------------------------

async fn metric(gw: &Gateway, line_prefix: &str) -> Option<f64> {
    let res = client::get(gw.admin(), "/metrics").await;
    assert_eq!(res.status, 200, "metrics endpoint");
    let text = String::from_utf8_lossy(&res.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|rest| rest.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// A TLS upstream: tokio-rustls acceptor + hyper auto (HTTP/1.1 and HTTP/2 by ALPN)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct TlsSeen {
    path: String,
    version: http::Version,
    sni: Option<String>,
    client_cert: Option<CertificateDer<'static>>,
}

struct TlsUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<TlsSeen>>>,
    handshake_failures: Arc<Mutex<u32>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsUpstream {
    /// Serves with `cert`/`key`; with `client_ca`, requires client certificates from that CA.
    async fn start(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Self {
        let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
            .expect("cert")
            .map(|c| c.expect("pem"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).expect("key");
        let provider = warden_crypto::provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(warden_crypto::TLS_VERSIONS)
            .expect("versions");
        let builder = match client_ca {
            Some(ca) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(ca)),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder.with_single_cert(chain, key).expect("server cert");
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind tls upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handshake_failures = Arc::new(Mutex::new(0));
        let (seen2, failures2) = (seen.clone(), handshake_failures.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let seen = seen2.clone();
                let failures = failures2.clone();
                tokio::spawn(async move {
                    let tls = match acceptor.accept(stream).await {
                        Ok(t) => t,
                        Err(_) => {
                            *failures.lock().unwrap() += 1;
                            return;
                        }
                    };
                    let (_, session) = tls.get_ref();
                    let sni = session.server_name().map(str::to_owned);
                    let client_cert = session
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.clone().into_owned());
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        seen.lock().unwrap().push(TlsSeen {
                            path: req.uri().path().to_owned(),
                            version: req.version(),
                            sni: sni.clone(),
                            client_cert: client_cert.clone(),
                        });
                        async {
                            let mut res =
                                Response::new(Full::new(Bytes::from_static(b"from tls upstream")));
                            res.headers_mut()
                                .insert("x-upstream", http::HeaderValue::from_static("tls"));
                            Ok::<_, Infallible>(res)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            handshake_failures,
            task,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn seen(&self) -> Vec<TlsSeen> {
        self.seen.lock().unwrap().clone()
    }

    fn handshake_failures(&self) -> u32 {
        *self.handshake_failures.lock().unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// openssl s_client, when installed
// ---------------------------------------------------------------------------------------------

/// Runs `openssl s_client` against `addr` with a version flag. `None` when openssl is missing.
/// Returns (connected, output). `DEFAULT@SECLEVEL=0` lets OpenSSL 3 offer TLS 1.0/1.1 at all,
/// so a refusal comes from the server, not from the local client policy.
fn openssl_s_client(addr: SocketAddr, version_flag: &str) -> Option<(bool, String)> {
    use std::process::{Command, Stdio};
    let mut child = match Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
            version_flag,
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run openssl: {e}"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().expect("wait openssl").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("openssl output");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

// =============================================================================================
// 1. TLS listener: HTTPS, TLS 1.3 and 1.2, nothing older
// =============================================================================================

#[tokio::test(flavor = "multi_thread")]
async fn tls_listener_serves_https_over_tls13_and_tls12_only() {
    let pki = Pki::new("versions ca");
    let (cert, key) = pki.server("site", &["localhost", "127.0.0.1"]);
    let ca = pki.ca_file();
    let up = Upstream::start("plain").await;
    let toml = format!(
        "{}{}{}",
        head(),
        tls_listener("tls", true, &[(&cert, &key, &[])], None),
        cluster_and_route("c", &up.url(), "http1", "", "/")
    );
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("tls");

    for (version, want) in [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ] {
        let (_, info) = client::tls_connect(addr, "localhost", versioned_client(&ca, version))
            .await
            .unwrap_or_else(|e| panic!("{want:?} handshake: {e}"));
        assert_eq!(info.version, Some(want));
        assert_eq!(info.server_cert.as_ref(), Some(&leaf_der(&cert)));
        let res = client::send_tls(
            addr,
            "localhost",
            versioned_client(&ca, version),
            get("https://localhost/v"),
        )
        .await
        .unwrap_or_else(|e| panic!("{want:?} request: {e}"));
        assert_eq!(res.status, 200, "{want:?}");
        assert_eq!(res.header("x-upstream"), Some("plain"));
    }
    assert_eq!(up.requests().len(), 2);
    assert_eq!(
        up.requests()[0]
            .headers
            .get("x-forwarded-proto")
            .map(String::as_str),
        Some("https")
    );

    let addr_for_openssl = addr;
    let openssl = tokio::task::spawn_blocking(move || {
        let ok12 = openssl_s_client(addr_for_openssl, "-tls1_2")?;
        let old: Vec<_> = ["-tls1_1", "-tls1"]
            .into_iter()
            .map(|flag| {
                (
                    flag,
                    openssl_s_client(addr_for_openssl, flag).expect("openssl present"),
                )
            })
            .collect();
        Some((ok12, old))
    })
    .await
    .expect("openssl task");
    match openssl {
        None => println!("note: openssl CLI not found; skipping the TLS 1.0/1.1 refusal check"),
        Some(((ok12, out12), old)) => {
            // Control: the same invocation does connect with TLS 1.2.
            assert!(
                ok12 && out12.contains("TLSv1.2"),
                "openssl -tls1_2 should connect:\n{out12}"
            );
            for (flag, (ok, out)) in old {
                assert!(
                    !ok,
                    "openssl {flag} connected, but TLS below 1.2 must be refused:\n{out}"
                );
                // The refusal must come from the server (an alert), not from local policy.
                assert!(
                    !out.contains("no protocols available") && out.contains("alert"),
                    "openssl {flag} was not refused by the server:\n{out}"
                );
            }
        }
    }
}

// =============================================================================================
// 2. SNI over several certificates
// =============================================================================================

#[tokio::test(flavor = "multi_thread")]
async fn sni_selects_the_matching_certificate() {
    let pki = Pki::new("sni ca");
    let (a_cert, a_key) = pki.server("a", &["a.test"]);
    let (b_cert, b_key) = pki.server("b", &["b.test"]);
    let (w_cert, w_key) = pki.server("wild", &["*.wild.test"]);
    // No server_names: chosen by the names in its subjectAltName.
    let (s_cert, s_key) = pki.server("san", &["san.test", "alt.san.test"]);
    let toml = format!(
        "{}{}",
        head(),
        tls_listener(
            "tls",
            true,
            &[
                (&a_cert, &a_key, &["a.test"]),
                (&b_cert, &b_key, &["b.test"]),
                (&w_cert, &w_key, &["*.wild.test"]),
                (&s_cert, &s_key, &[]),
            ],
            None,
        )
    );
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("tls");
    let (a, b, w, s) = (
        leaf_der(&a_cert),
        leaf_der(&b_cert),
        leaf_der(&w_cert),
        leaf_der(&s_cert),
    );

    let cases: [(&str, &CertificateDer<'_>, &str); 9] = [
        ("a.test", &a, "exact name"),
        ("b.test", &b, "exact name"),
        ("B.TEST", &b, "names are case-insensitive"),
        ("x.wild.test", &w, "wildcard"),
        ("san.test", &s, "SAN of a certificate without server_names"),
        (
            "alt.san.test",
            &s,
            "second SAN of a certificate without server_names",
        ),
        (
            "unknown.test",
            &a,
            "unknown name gets the first certificate",
        ),
        ("deep.x.wild.test", &a, "a wildcard covers one label only"),
        (
            "127.0.0.1",
            &a,
            "no SNI (IP address) gets the first certificate",
        ),
    ];
    for (sni, want, why) in cases {
        let got = presented_cert(addr, sni).await;
        assert!(got == *want, "SNI {sni}: wrong certificate ({why})");
    }

    // A client that verifies names can talk to each name end to end.
    let ca = pki.ca_file();
    for sni in ["a.test", "b.test", "x.wild.test", "san.test"] {
        client::tls_connect(addr, sni, client::tls_config(&ca, None, &[]))
            .await
            .unwrap_or_else(|e| panic!("verified handshake for {sni}: {e}"));
    }
}

// =============================================================================================
// 3. Certificate reload from disk
// =============================================================================================

#[tokio::test(flavor = "multi_thread")]
async fn certificates_reload_when_files_change_and_bad_keys_are_refused() {
    let pki = Pki::new("reload ca");
    let (cert, key) = pki.server("site", &["localhost"]);
    let first = leaf_der(&cert);
    let up = Upstream::start("plain").await;
    let toml = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n[access_log]\nenabled = false\n[reload]\nwatch = true\npoll_interval = \"200ms\"\n{}{}",
        tls_listener("tls", true, &[(&cert, &key, &[])], None),
        cluster_and_route("c", &up.url(), "http1", "", "/")
    );
    let gw = Gateway::start(&toml).await;
    let addr = gw.addr("tls");
    assert!(presented_cert(addr, "localhost").await == first);

    // Rotate: a newly issued certificate and key over the same files.
    let (cert2, _key2) = pki.server("site", &["localhost"]);
    assert_eq!(cert2, cert);
    let second = leaf_der(&cert);
    assert!(second != first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = presented_cert(addr, "localhost").await;
        if got == second {
            break;
        }
        assert!(
            got == first,
            "neither the old nor the new certificate was presented"
        );
        assert!(
            Instant::now() < deadline,
            "new certificate not served within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ok = client::send_tls(
        addr,
        "localhost",
        client::tls_config(&pki.ca_file(), None, &[]),
        get("https://localhost/after-rotate"),
    )
    .await
    .expect("request after rotation");
    assert_eq!(ok.status, 200);
    assert!(
        metric(&gw, "warden_config_reloads_total{result=\"success\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );

    // A broken key: the reload is refused and the current certificate keeps serving.
    let failures_before = metric(&gw, "warden_config_reloads_total{result=\"failure\"}")
        .await
        .unwrap_or(0.0);
    std::fs::write(&key, "this is not a private key\n").expect("write garbage key");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let failures = metric(&gw, "warden_config_reloads_total{result=\"failure\"}")
            .await
            .unwrap_or(0.0);
        if failures > failures_before {
            assert!(failures >= 1.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed reload counted within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&gw, "warden_config_last_reload_success").await,
        Some(0.0)
    );
    for _ in 0..3 {
        assert!(
            presented_cert(addr, "localhost").await == second,
            "the refused reload changed the certificate"
        );
    }
    let res = client::send_tls(
        addr,
        "localhost",
        client::tls_config(&pki.ca_file(), None, &[]),
        get("https://localhost/still"),
    )
    .await
    .expect("request after refused reload");
    assert_eq!(res.status, 200);
    assert_eq!(up.requests().len(), 2);
}

// =============================================================================================
// 4. Client certificates
// =============================================================================================

async fn client_auth_gateway(pki: &Pki, mode: &str, up: &Upstream) -> Gateway {
    let (cert, key) = pki.server("site", &["localhost"]);
    let ca = pki.ca_file();
    let toml = format!(
        "{}{}{}",
        head(),
        tls_listener("tls", true, &[(&cert, &key, &[])], Some((&ca, mode))),
        cluster_and_route("c", &up.url(), "http1", "", "/")
    );
    Gateway::start(&toml).await
}

async fn request_with(
    addr: SocketAddr,
    ca: &Path,
    client_cert: Option<(&Path, &Path)>,
    path: &str,
) -> std::io::Result<Answer> {
    let cfg = client::tls_config(ca, client_cert, &[b"h2", b"http/1.1"]);
    tokio::time::timeout(
        Duration::from_secs(5),
        client::send_tls(
            addr,
            "localhost",
            cfg,
            get(&format!("https://localhost{path}")),
        ),
    )
    .await
    .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}

#[tokio::test(flavor = "multi_thread")]
async fn required_client_auth_accepts_only_certificates_from_the_ca() {
    let pki = Pki::new("clients ca");
    let other = Pki::new("stranger ca");
    let up = Upstream::start("plain").await;
    let gw = client_auth_gateway(&pki, "required", &up).await;
    let addr = gw.addr("tls");
    let ca = pki.ca_file();
    let (good_cert, good_key) = pki.client("alice", &["alice.test"], &[]);
    let (bad_cert, bad_key) = other.client("mallory", &["mallory.test"], &[]);

    let none = request_with(addr, &ca, None, "/none").await;
    assert!(
        none.is_err(),
        "required mode served a client without a certificate: {none:?}"
    );
    let bad = request_with(addr, &ca, Some((&bad_cert, &bad_key)), "/bad").await;
    assert!(
        bad.is_err(),
        "required mode served a certificate from another CA: {bad:?}"
    );
    let good = request_with(addr, &ca, Some((&good_cert, &good_key)), "/good")
        .await
        .expect("valid client certificate");
    assert_eq!(good.status, 200);
    assert_eq!(good.header("x-upstream"), Some("plain"));

    let got: Vec<String> = up.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(got, ["/good"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_client_auth_accepts_no_certificate_but_rejects_a_bad_one() {
    let pki = Pki::new("clients ca");
    let other = Pki::new("stranger ca");
    let up = Upstream::start("plain").await;
    let gw = client_auth_gateway(&pki, "optional", &up).await;
    let addr = gw.addr("tls");
    let ca = pki.ca_file();
    let (good_cert, good_key) = pki.client("alice", &["alice.test"], &[]);
    let (bad_cert, bad_key) = other.client("mallory", &["mallory.test"], &[]);

    let none = request_with(addr, &ca, None, "/none")
        .await
        .expect("optional mode without certificate");
    assert_eq!(none.status, 200);
    let bad = request_with(addr, &ca, Some((&bad_cert, &bad_key)), "/bad").await;
    assert!(
        bad.is_err(),
        "optional mode served a certificate from another CA: {bad:?}"
    );
    let good = request_with(addr, &ca, Some((&good_cert, &good_key)), "/good")
        .await
        .expect("valid client certificate");
    assert_eq!(good.status, 200);

    let got: Vec<String> = up.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(got, ["/none", "/good"]);
}

// =============================================================================================
// 5. HSTS
// =============================================================================================

#[tokio::test(flavor = "multi_thread")]
async fn hsts_is_sent_on_tls_listeners_only() {
    let pki = Pki::new("hsts ca");
    let (cert, key) = pki.server("site", &["localhost"]);
    let up = Upstream::start("plain").await;
    let toml = format!(
        "{}{}{}{}",
        head(),
        plain_listener("main", true),
        tls_listener("tls", true, &[(&cert, &key, &[])], None),
        cluster_and_route("c", &up.url(), "http1", "", "/app")
    );
    let gw = Gateway::start(&toml).await;
    let ca = pki.ca_file();
    let hsts = "max-age=31536000; includeSubDomains";

    // Proxied responses and the gateway's own (404: no route), over h1 and h2.
    for (path, status) in [("/app/x", 200), ("/nowhere", 404)] {
        for alpn in [&[b"http/1.1".as_slice()][..], &[b"h2".as_slice()][..]] {
            let res = client::send_tls(
                gw.addr("tls"),
                "localhost",
                client::tls_config(&ca, None, alpn),
                get(&format!("https://localhost{path}")),
            )
            .await
            .expect("tls request");
            assert_eq!(res.status, status, "{path}");
            assert_eq!(
                res.header("strict-transport-security"),
                Some(hsts),
                "{path} over {:?}",
                res.version
            );
        }
        let res = client::get(gw.addr("main"), path).await;
        assert_eq!(res.status, status, "{path}");
        assert_eq!(
            res.header("strict-transport-security"),
            None,
            "HSTS on a plain listener ({path})"
        );
        // The other security headers are not TLS-only.
        assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    }
}

// =============================================================================================
// 6. HTTP/2 on both sides
// =============================================================================================

#[tokio::test(flavor = "multi_thread")]
async fn alpn_h2_on_tls_and_h2c_on_plain_reach_the_upstream() {
    let pki = Pki::new("h2 ca");
    let (cert, key) = pki.server("site", &["localhost"]);
    let up = Upstream::start("plain").await;
    let toml = format!(
        "{}{}{}{}",
        head(),
        plain_listener("main", true),
        tls_listener("tls", true, &[(&cert, &key, &[])], None),
        cluster_and_route("c", &up.url(), "http1", "", "/")
    );
    let gw = Gateway::start(&toml).await;
    let ca = pki.ca_file();

    // (a) TLS + ALPN h2.
    let cfg = client::tls_config(&ca, None, &[b"h2", b"http/1.1"]);
    let (_, info) = client::tls_connect(gw.addr("tls"), "localhost", cfg.clone())
        .await
        .expect("handshake");
    assert_eq!(info.alpn.as_deref(), Some(&b"h2"[..]));
    let res = client::send_tls(
        gw.addr("tls"),
        "localhost",
        cfg,
        get("https://localhost/over-tls-h2"),
    )
    .await
    .expect("h2 request");
    assert_eq!(res.status, 200);
    assert_eq!(res.version, http::Version::HTTP_2);
    assert_eq!(res.header("x-upstream"), Some("plain"));

    // A client offering only http/1.1 still gets HTTP/1.1 on the same listener.
    let res = client::send_tls(
        gw.addr("tls"),
        "localhost",
        client::tls_config(&ca, None, &[b"http/1.1"]),
        get("https://localhost/over-tls-h1"),
    )
    .await
    .expect("h1 request");
    assert_eq!(res.status, 200);
    assert_eq!(res.version, http::Version::HTTP_11);

    // (b) h2c with prior knowledge on the plain listener.
    let res = client::send_h2c(gw.addr("main"), get("http://localhost/over-h2c")).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.version, http::Version::HTTP_2);

    let got: Vec<String> = up.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(got, ["/over-tls-h2", "/over-tls-h1", "/over-h2c"]);
    // The default cluster protocol is HTTP/1.1 whatever the client spoke.
    assert!(up
        .requests()
        .iter()
        .all(|r| r.version == http::Version::HTTP_11));
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_protocol_http2_forwards_over_http2() {
    let up1 = Upstream::start("one").await;
    let up2 = Upstream::start("two").await;
    let toml = format!(
        "{}{}{}{}",
        head(),
        plain_listener("main", true),
        cluster_and_route("h1", &up1.url(), "http1", "", "/one"),
        cluster_and_route("h2", &up2.url(), "http2", "", "/two")
    );
    let gw = Gateway::start(&toml).await;
    for path in ["/one/a", "/two/a"] {
        let res = client::get(gw.addr("main"), path).await;
        assert_eq!(res.status, 200, "{path}");
    }
    // An h2c client to an HTTP/1.1 cluster, too.
    let res = client::send_h2c(gw.addr("main"), get("http://localhost/one/b")).await;
    assert_eq!(res.status, 200);

    let r1 = up1.requests();
    let r2 = up2.requests();
    assert_eq!(r1.len(), 2);
    assert_eq!(r2.len(), 1);
    assert!(
        r1.iter().all(|r| r.version == http::Version::HTTP_11),
        "{r1:?}"
    );
    assert_eq!(r2[0].version, http::Version::HTTP_2);
    assert_eq!(r2[0].uri, "/two/a");
    assert_eq!(
        r2[0].headers.get("host").map(String::as_str),
        Some("localhost")
    );
}

/// Tries an h2c request with prior knowledge; `Err` when the server does not speak h2c.
async fn try_h2c(addr: SocketAddr) -> Result<u16, String> {
    let attempt = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let res = sender
            .send_request(get("http://localhost/h2c"))
            .await
            .map_err(|e| e.to_string())?;
        Ok(res.status().as_u16())
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

#[tokio::test(flavor = "multi_thread")]
async fn listeners_with_http2_off_speak_only_http11() {
    let pki = Pki::new("h1 ca");
    let (cert, key) = pki.server("site", &["localhost"]);
    let up = Upstream::start("plain").await;
    let toml = format!(
        "{}{}{}{}",
        head(),
        plain_listener("plain_h1", false),
        tls_listener("tls_h1", false, &[(&cert, &key, &[])], None),
        cluster_and_route("c", &up.url(), "http1", "", "/")
    );
    let gw = Gateway::start(&toml).await;

    // Plain: HTTP/1.1 answered, h2c prior knowledge not spoken.
    let res = client::get(gw.addr("plain_h1"), "/plain").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.version, http::Version::HTTP_11);
    let h2c = try_h2c(gw.addr("plain_h1")).await;
    assert!(
        h2c.is_err(),
        "h2c was served on a listener with http2 = false: {h2c:?}"
    );

    // TLS: a client offering h2 first is given http/1.1.
    let cfg = client::tls_config(&pki.ca_file(), None, &[b"h2", b"http/1.1"]);
    let (_, info) = client::tls_connect(gw.addr("tls_h1"), "localhost", cfg.clone())
        .await
        .expect("handshake");
    assert_eq!(info.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let res = client::send_tls(
        gw.addr("tls_h1"),
        "localhost",
        cfg,
        get("https://localhost/tls"),
    )
    .await
    .expect("request");
    assert_eq!(res.status, 200);
    assert_eq!(res.version, http::Version::HTTP_11);

    let got: Vec<String> = up.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(got, ["/plain", "/tls"]);
}

// =============================================================================================
// 7. TLS to upstreams
// =============================================================================================

#[tokio::test(flavor = "multi_thread")]
async fn upstream_tls_trusts_only_the_configured_ca() {
    let pki = Pki::new("upstream ca");
    let other = Pki::new("unrelated ca");
    let (cert, key) = pki.server("up", &["localhost", "127.0.0.1"]);
    let up = TlsUpstream::start(&cert, &key, None).await;
    let trust = |ca: &Path| format!("[clusters.tls]\nca = {}\n", q(ca));
    let toml = format!(
        "{}{}{}{}{}",
        head(),
        plain_listener("main", true),
        cluster_and_route("good", &up.url(), "http1", &trust(&pki.ca_file()), "/good"),
        cluster_and_route("bad", &up.url(), "http1", &trust(&other.ca_file()), "/bad"),
        cluster_and_route("good-h2", &up.url(), "http2", &trust(&pki.ca_file()), "/h2")
    );
    let gw = Gateway::start(&toml).await;

    let res = client::get(gw.addr("main"), "/good/x").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-upstream"), Some("tls"));
    assert_eq!(&res.body[..], b"from tls upstream");

    let res = client::get(gw.addr("main"), "/bad/x").await;
    assert_eq!(
        res.status, 502,
        "an upstream certificate from an untrusted CA must not be accepted"
    );
    // The upstream saw (and refused) the handshake: the 502 is the gateway's TLS check.
    let deadline = Instant::now() + Duration::from_secs(2);
    while up.handshake_failures() == 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream saw no failed handshake"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let res = client::get(gw.addr("main"), "/h2/x").await;
    assert_eq!(res.status, 200);

    let seen = up.seen();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/good/x", "/h2/x"]);
    assert_eq!(seen[0].version, http::Version::HTTP_11);
    assert_eq!(
        seen[1].version,
        http::Version::HTTP_2,
        "protocol = \"http2\" over TLS should negotiate h2"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_tls_server_name_overrides_the_endpoint_host() {
    let pki = Pki::new("upstream ca");
    // The certificate names only `localhost`, while the endpoint is an IP address.
    let (cert, key) = pki.server("up", &["localhost"]);
    let up = TlsUpstream::start(&cert, &key, None).await;
    let ca = q(&pki.ca_file());
    let toml = format!(
        "{}{}{}{}",
        head(),
        plain_listener("main", true),
        cluster_and_route(
            "by-ip",
            &up.url(),
            "http1",
            &format!("[clusters.tls]\nca = {ca}\n"),
            "/ip"
        ),
        cluster_and_route(
            "by-name",
            &up.url(),
            "http1",
            &format!("[clusters.tls]\nca = {ca}\nserver_name = \"localhost\"\n"),
            "/name"
        )
    );
    let gw = Gateway::start(&toml).await;

    let res = client::get(gw.addr("main"), "/ip/x").await;
    assert_eq!(res.status, 502, "the certificate does not name 127.0.0.1");
    let res = client::get(gw.addr("main"), "/name/x").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-upstream"), Some("tls"));

    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/name/x");
    assert_eq!(
        seen[0].sni.as_deref(),
        Some("localhost"),
        "server_name is sent as SNI"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_mtls_presents_the_configured_client_certificate() {
    let pki = Pki::new("upstream ca");
    let clients = Pki::new("upstream clients ca");
    let (cert, key) = pki.server("up", &["localhost", "127.0.0.1"]);
    let up = TlsUpstream::start(&cert, &key, Some(&clients.ca_file())).await;
    let (client_cert, client_key) =
        clients.client("gateway", &["gateway.test"], &["spiffe://test/gateway"]);
    let ca = q(&pki.ca_file());
    let toml = format!(
        "{}{}{}{}",
        head(),
        plain_listener("main", true),
        cluster_and_route(
            "mtls",
            &up.url(),
            "http1",
            &format!(
                "[clusters.tls]\nca = {ca}\nclient_cert = {}\nclient_key = \"file:{}\"\n",
                q(&client_cert),
                client_key.display()
            ),
            "/mtls"
        ),
        cluster_and_route(
            "anon",
            &up.url(),
            "http1",
            &format!("[clusters.tls]\nca = {ca}\n"),
            "/anon"
        )
    );
    let gw = Gateway::start(&toml).await;

    let res = client::get(gw.addr("main"), "/mtls/x").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-upstream"), Some("tls"));
    let res = client::get(gw.addr("main"), "/anon/x").await;
    assert_eq!(
        res.status, 502,
        "the upstream requires a client certificate"
    );

    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/mtls/x");
    assert!(
        seen[0].client_cert.as_ref() == Some(&leaf_der(&client_cert)),
        "the gateway presented a different client certificate"
    );
}

/// Regression: a reload used to keep a cluster whose config text was unchanged, so a CA (or
/// client certificate) rewritten on disk was watched, "reloaded", and then ignored.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_trust_bundle_reloads_when_its_file_changes() {
    let pki = Pki::new("upstream ca");
    let other = Pki::new("unrelated ca");
    let (cert, key) = pki.server("up", &["localhost", "127.0.0.1"]);
    let up = TlsUpstream::start(&cert, &key, None).await;
    // The cluster's trust bundle starts out wrong.
    let bundle_dir = tempfile::tempdir().expect("temp dir");
    let bundle = bundle_dir.path().join("upstream-ca.pem");
    std::fs::copy(other.ca_file(), &bundle).expect("write bundle");
    let toml = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n[access_log]\nenabled = false\n[reload]\nwatch = true\npoll_interval = \"200ms\"\n{}{}",
        plain_listener("main", true),
        cluster_and_route("c", &up.url(), "http1", &format!("[clusters.tls]\nca = {}\n", q(&bundle)), "/")
    );
    let gw = Gateway::start(&toml).await;
    assert_eq!(client::get(gw.addr("main"), "/x").await.status, 502);

    // Fix the bundle on disk: the watcher reloads and the upstream is trusted, no restart.
    std::fs::copy(pki.ca_file(), &bundle).expect("fix bundle");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = client::get(gw.addr("main"), "/x").await.status;
        if status == 200 {
            break;
        }
        assert_eq!(status, 502);
        assert!(
            Instant::now() < deadline,
            "the corrected CA file was not used within 5 s (reloads: {:?})",
            metric(&gw, "warden_config_reloads_total{result=\"success\"}").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up.seen().len(), 1);
}
