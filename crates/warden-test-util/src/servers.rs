//! Servers the auth layer calls, for tests: a JWKS endpoint ([`JwksServer`]) and an RFC 7662
//! introspection endpoint ([`IntrospectionServer`]). Both bind `127.0.0.1:0`, count what they
//! receive, and can be re-scripted (fail, slow down, hang, stop) while a gateway talks to them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};

/// One request a [`JwksServer`] received.
#[derive(Clone, Debug)]
pub struct JwksFetch {
    /// When it arrived.
    pub at: Instant,
    /// The status it was answered with.
    pub status: u16,
    /// The `Cache-Control` it was answered with.
    pub cache_control: Option<String>,
    /// The request's `Accept` header.
    pub accept: Option<String>,
}

struct JwksState {
    body: Mutex<String>,
    cache_control: Mutex<Option<String>>,
    status: AtomicU16,
    delay: Mutex<Duration>,
    log: Mutex<Vec<JwksFetch>>,
}

/// A JWKS endpoint at `http://127.0.0.1:PORT/jwks`.
pub struct JwksServer {
    addr: SocketAddr,
    state: Arc<JwksState>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl JwksServer {
    /// Starts serving `jwks`, with no `Cache-Control`.
    pub async fn start(jwks: Value) -> Self {
        let listener = bind("127.0.0.1:0".parse().expect("addr")).await;
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(JwksState {
            body: Mutex::new(jwks.to_string()),
            cache_control: Mutex::new(None),
            status: AtomicU16::new(200),
            delay: Mutex::new(Duration::ZERO),
            log: Mutex::new(Vec::new()),
        });
        let server = Self {
            addr,
            state,
            task: Mutex::new(None),
        };
        server.serve(listener);
        server
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let task = spawn_server(listener, move |req| jwks_answer(req, state.clone()));
        *self.task.lock().unwrap() = Some(task);
    }

    /// Address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/jwks`.
    pub fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    /// Requests for `/jwks` so far, failed ones included.
    pub fn fetches(&self) -> usize {
        self.state.log.lock().unwrap().len()
    }

    /// Every request for `/jwks` so far, oldest first.
    pub fn log(&self) -> Vec<JwksFetch> {
        self.state.log.lock().unwrap().clone()
    }

    /// Serves another key set from now on.
    pub fn set_jwks(&self, jwks: Value) {
        self.set_body(jwks.to_string());
    }

    /// Serves any body (not JSON, say) from now on.
    pub fn set_body(&self, body: impl Into<String>) {
        *self.state.body.lock().unwrap() = body.into();
    }

    /// The `Cache-Control` sent from now on (`None`: no header).
    pub fn set_cache_control(&self, value: Option<&str>) {
        *self.state.cache_control.lock().unwrap() = value.map(str::to_owned);
    }

    /// Answers with `status` from now on (anything but 200 comes with an error body).
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Waits this long before answering, from now on.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// Stops listening and drops every open connection; connecting is refused until
    /// [`JwksServer::restart`].
    pub async fn stop(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        self.stop().await;
        let listener = bind(self.addr).await;
        self.serve(listener);
    }

    /// Waits until at least `n` fetches were received; false if `within` passed first.
    pub async fn wait_for_fetches(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.fetches() < n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }
}

async fn jwks_answer(req: Request<Incoming>, state: Arc<JwksState>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/jwks" {
        return json_response(404, &json!({"error": "not_found"}));
    }
    let status = state.status.load(Ordering::SeqCst);
    let cache_control = state.cache_control.lock().unwrap().clone();
    let delay = *state.delay.lock().unwrap();
    state.log.lock().unwrap().push(JwksFetch {
        at: Instant::now(),
        status,
        cache_control: cache_control.clone(),
        accept: header(&req, "accept"),
    });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut res = if status == 200 {
        let body = state.body.lock().unwrap().clone();
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        r
    } else {
        json_response(status, &json!({"error": "unavailable"}))
    };
    if let Some(cc) = cache_control {
        res.headers_mut().insert(
            "cache-control",
            http::HeaderValue::from_str(&cc).expect("cache-control value"),
        );
    }
    res
}

/// One call an [`IntrospectionServer`] received.
#[derive(Clone, Debug)]
pub struct IntrospectionCall {
    /// The method.
    pub method: String,
    /// Whether the Basic credentials were right.
    pub authorized: bool,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Accept`.
    pub accept: Option<String>,
    /// The form fields, decoded.
    pub form: Vec<(String, String)>,
}

struct IntrospectionState {
    client_id: String,
    client_secret: Mutex<String>,
    tokens: Mutex<HashMap<String, Value>>,
    status: AtomicU16,
    hang: AtomicBool,
    calls: AtomicU64,
    log: Mutex<Vec<IntrospectionCall>>,
}

/// An RFC 7662 endpoint at `http://127.0.0.1:PORT/introspect`: checks HTTP Basic client
/// credentials (401 when wrong), answers known tokens with the JSON set for them and any other
/// with `{"active": false}`.
pub struct IntrospectionServer {
    addr: SocketAddr,
    state: Arc<IntrospectionState>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl IntrospectionServer {
    /// Starts an endpoint accepting these client credentials.
    pub async fn start(client_id: &str, client_secret: &str) -> Self {
        let listener = bind("127.0.0.1:0".parse().expect("addr")).await;
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(IntrospectionState {
            client_id: client_id.to_owned(),
            client_secret: Mutex::new(client_secret.to_owned()),
            tokens: Mutex::new(HashMap::new()),
            status: AtomicU16::new(200),
            hang: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        let task = spawn_server(listener, move |req| introspection_answer(req, s.clone()));
        Self {
            addr,
            state,
            task: Mutex::new(Some(task)),
        }
    }

    /// Address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/introspect`.
    pub fn url(&self) -> String {
        format!("http://{}/introspect", self.addr)
    }

    /// What `token` introspects to (e.g. `{"active": true, "sub": "alice"}`).
    pub fn set(&self, token: &str, response: Value) {
        self.state
            .tokens
            .lock()
            .unwrap()
            .insert(token.to_owned(), response);
    }

    /// Requests received so far (all of them: refused, failed and hanging ones too).
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<IntrospectionCall> {
        self.state.log.lock().unwrap().clone()
    }

    /// Answers every request with `status` from now on (200 restores normal answers).
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Never answers, from now on (until set back to false).
    pub fn set_hang(&self, hang: bool) {
        self.state.hang.store(hang, Ordering::SeqCst);
    }

    /// Accepts another client secret from now on.
    pub fn set_client_secret(&self, secret: &str) {
        *self.state.client_secret.lock().unwrap() = secret.to_owned();
    }

    /// Stops listening and drops every open connection; connecting is refused from then on.
    pub async fn stop(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for IntrospectionServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }
}

async fn introspection_answer(
    req: Request<Incoming>,
    state: Arc<IntrospectionState>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/introspect" {
        return json_response(404, &json!({"error": "not_found"}));
    }
    state.calls.fetch_add(1, Ordering::SeqCst);
    let authorized = header(&req, "authorization").is_some_and(|h| {
        basic_credentials(&h).is_some_and(|(id, secret)| {
            id == state.client_id && secret == *state.client_secret.lock().unwrap()
        })
    });
    let method = req.method().to_string();
    let content_type = header(&req, "content-type");
    let accept = header(&req, "accept");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let form = parse_form(&String::from_utf8_lossy(&body));
    state.log.lock().unwrap().push(IntrospectionCall {
        method: method.clone(),
        authorized,
        content_type: content_type.clone(),
        accept,
        form: form.clone(),
    });
    if state.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let status = state.status.load(Ordering::SeqCst);
    if status != 200 {
        return json_response(status, &json!({"error": "server_error"}));
    }
    if method != "POST" {
        return json_response(405, &json!({"error": "invalid_request"}));
    }
    if !authorized {
        let mut res = json_response(401, &json!({"error": "invalid_client"}));
        res.headers_mut().insert(
            "www-authenticate",
            http::HeaderValue::from_static("Basic realm=\"introspection\""),
        );
        return res;
    }
    if !content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
        return json_response(400, &json!({"error": "invalid_request"}));
    }
    let Some(token) = form.iter().find(|(k, _)| k == "token").map(|(_, v)| v) else {
        return json_response(400, &json!({"error": "invalid_request"}));
    };
    let answer = state
        .tokens
        .lock()
        .unwrap()
        .get(token)
        .cloned()
        .unwrap_or_else(|| json!({"active": false}));
    json_response(200, &answer)
}

/// `Basic base64(form(id):form(secret))` -> (id, secret), decoded (RFC 6749 §2.3.1).
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let url_alphabet: String = b64
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    let raw = warden_crypto::jws::b64url_decode(url_alphabet.as_bytes())?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space).
fn form_decode(s: &str) -> String {
    let hex = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 2;
            }
            (c, _, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    res.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    res
}

/// Binds `addr` (with `SO_REUSEADDR`, retrying for a while: a restart on the same port may
/// race the old listener's close).
async fn bind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let attempt = TcpSocket::new_v4().and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(1024)
        });
        match attempt {
            Ok(l) => return l,
            Err(e) if Instant::now() >= deadline => panic!("bind {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Serves HTTP/1.1 on `listener` with `handle`. Aborting the returned task closes the listener
/// and every connection it accepted.
fn spawn_server<F, Fut>(listener: TcpListener, handle: F) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            while conns.try_join_next().is_some() {}
            let handle = handle.clone();
            conns.spawn(async move {
                let svc = service_fn(move |req| {
                    let fut = handle(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_and_basic_decoding() {
        assert_eq!(
            form_decode("a+b%26c%3Dd%2F%C3%A9%7E*"),
            "a+b&c=d/é~*".replace('+', " ")
        );
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz"), "%zz");
        assert_eq!(
            basic_credentials("Basic czZCaGRSa3F0MzpnWDFmQmF0M2JW"),
            Some(("s6BhdRkqt3".into(), "gX1fBat3bV".into()))
        );
        assert_eq!(
            basic_credentials("basic YStiOmMlM0E="),
            Some(("a b".into(), "c:".into()))
        );
        assert_eq!(basic_credentials("Bearer x"), None);
        assert_eq!(
            parse_form("token=a%2Bb&token_type_hint=access_token"),
            [
                ("token".to_owned(), "a+b".to_owned()),
                ("token_type_hint".to_owned(), "access_token".to_owned())
            ]
        );
    }
}
