//! OpenTelemetry (issue 13): a `warden serve` process with the gateway and the authority
//! exports spans and security events to a real OTLP receiver (the OpenTelemetry project's
//! Python `opentelemetry-proto` messages decoding what arrives, scripts/interop/otlp_receiver.py),
//! over HTTP/protobuf and over gRPC. The traces hold together: the caller's trace is
//! continued, the authority's grant and the gateway's request are server spans, the
//! gateway's filters and upstream call are its children, and the upstream receives the
//! client span's id in `traceparent`. The access log and the security events carry the same
//! ids. A collector killed mid-run costs no request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use warden_test_util::authcfg::{metrics, series};
use warden_test_util::client::{self, Answer};
use warden_test_util::Upstream;

use crate::common::{free_port, json_out, serve, wait_port, warden};

const KEK: [u8; 32] = [9; 32];

/// The receiver: a Python process writing what it decodes as JSON lines.
struct Receiver {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Receiver {
    async fn start(dir: &Path, grpc: bool) -> Receiver {
        let python = warden_test_util::interop::venv_python().await;
        let port = free_port();
        let out = dir.join(if grpc { "grpc.jsonl" } else { "otlp.jsonl" });
        let script = warden_test_util::interop::repo().join("scripts/interop/otlp_receiver.py");
        let mut cmd = Command::new(python);
        cmd.arg(script)
            .args(["--port", &port.to_string(), "--out"])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("receiver.log")).unwrap());
        if grpc {
            cmd.arg("--grpc");
        }
        let child = cmd.spawn().expect("start the OTLP receiver");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the receiver did not listen: {}",
                std::fs::read_to_string(dir.join("receiver.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Receiver { child, out, port }
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until `pick` finds what it looks for among the records.
    async fn wait<T>(&self, what: &str, pick: impl Fn(&[Value]) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let recs = self.records();
            if let Some(t) = pick(&recs) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} among:\n{}",
                recs.iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the spans of `trace` until one is named `name`, and returns them all.
    async fn trace(&self, trace: &str, name: &str) -> Vec<Value> {
        self.wait(&format!("span {name} in trace {trace}"), |recs| {
            let spans: Vec<Value> = recs
                .iter()
                .filter(|r| r["kind"] == "span" && r["trace_id"] == trace)
                .cloned()
                .collect();
            spans.iter().any(|s| s["name"] == name).then_some(spans)
        })
        .await
    }

    /// Waits until `trace` has at least `n` spans, and returns them.
    async fn spans(&self, trace: &str, n: usize) -> Vec<Value> {
        self.wait(&format!("{n} spans in trace {trace}"), |recs| {
            let s: Vec<Value> = recs
                .iter()
                .filter(|r| r["kind"] == "span" && r["trace_id"] == trace)
                .cloned()
                .collect();
            (s.len() >= n).then_some(s)
        })
        .await
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

fn named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:?}"))
}

const SERVER: u64 = 2;
const CLIENT: u64 = 3;
const INTERNAL: u64 = 1;

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    client::request(addr, "GET", path, headers, String::new()).await
}

/// The lines of a JSON-lines file.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn line_where(path: &Path, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = lines(path).into_iter().find(|l| f(l)) {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} in {}:\n{}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn spans_of_a_grant_a_gateway_request_and_a_refusal_reach_a_real_otlp_receiver_joined_to_their_traces(
) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut receiver = Receiver::start(d, false).await;
    let upstream = Upstream::start("orders").await;
    crate::common::write_secret(d.join("kek"), KEK);
    let (gw_port, admin_port, auth_port) = (free_port(), free_port(), free_port());
    let authority: SocketAddr = format!("127.0.0.1:{auth_port}").parse().unwrap();
    let gateway: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let access = d.join("access.jsonl");
    let events = d.join("events.jsonl");
    let toml = format!(
        "[admin]\naddress = \"{admin}\"\n[reload]\nwatch = false\n\
         [access_log]\nenabled = true\npath = \"{access}\"\n\
         [security_events]\npath = \"{events}\"\n\
         [tracing]\nenabled = true\nendpoint = \"http://127.0.0.1:{rport}\"\nsampling_ratio = 1.0\n\
         scheduled_delay = \"100ms\"\ntimeout = \"2s\"\nservice_name = \"edge\"\n\
         [[listeners]]\nname = \"main\"\naddress = \"{gateway}\"\n\
         [[auth.jwt]]\nname = \"authority\"\nissuer = \"http://{authority}\"\naudiences = [\"api\"]\n\
         algorithms = [\"ES256\", \"EdDSA\"]\njwks_url = \"http://{authority}/oauth2/jwks\"\n\
         [[clusters]]\nname = \"orders\"\nendpoints = [\"{up}\"]\n\
         [[routes]]\nname = \"orders\"\ncluster = \"orders\"\npath_prefix = \"/orders\"\n\
         [routes.auth]\naccept = [\"jwt:authority\"]\n\
         [authority]\nenabled = true\nlisten = \"{authority}\"\ndata_dir = \"{d}\"\n\
         storage = \"{d}/authority.db\"\nkey_encryption_key = \"file:{d}/kek\"\n\
         issuer = \"http://{authority}\"\n",
        access = access.display(),
        events = events.display(),
        rport = receiver.port,
        up = upstream.url(),
        d = d.display(),
    );
    let mut p = serve(d, "edge", &toml);
    wait_port(&mut p, gw_port, d, "edge").await;
    wait_port(&mut p, auth_port, d, "edge").await;
    let config = d.join("edge.toml");
    let client = json_out(&warden(&[
        "client",
        "create",
        "--config",
        config.to_str().unwrap(),
        "--client-id",
        "billing",
        "--audience",
        "api",
    ]));
    let secret = client["client_secret"].as_str().unwrap();

    // An authority grant, in the caller's trace.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let tp = format!("00-{caller_trace}-{caller_span}-01");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("billing:{secret}"))
    );
    let grant = client::request(
        authority,
        "POST",
        "/oauth2/token",
        &[
            ("authorization", &basic),
            ("content-type", "application/x-www-form-urlencoded"),
            ("traceparent", &tp),
        ],
        "grant_type=client_credentials".to_owned(),
    )
    .await;
    assert_eq!(
        grant.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&grant.body)
    );
    let token = grant.json()["access_token"].as_str().unwrap().to_owned();
    let spans = receiver.trace(caller_trace, "POST /oauth2/token").await;
    let g = named(&spans, "POST /oauth2/token");
    assert_eq!(g["span_kind"], SERVER, "{g}");
    assert_eq!(g["parent_span_id"], caller_span, "{g}");
    assert_eq!(g["attributes"]["http.response.status_code"], 200, "{g}");
    assert_eq!(g["attributes"]["warden.operation"], "token", "{g}");
    assert_eq!(g["resource"]["service.name"], "edge", "{g}");
    // The token went by; it is in no span.
    assert!(!receiver
        .records()
        .iter()
        .any(|r| r.to_string().contains(&token)));
    // The grant's security event joins its trace, in the file and as an OTLP log record.
    let issued = line_where(&events, "token.issued", |l| l["event"] == "token.issued").await;
    assert_eq!(issued["trace_id"], caller_trace, "{issued}");
    assert_eq!(issued["span_id"], g["span_id"], "{issued}");
    let log = receiver
        .wait("token.issued log record", |recs| {
            recs.iter()
                .find(|r| r["kind"] == "log" && r["event_name"] == "token.issued")
                .cloned()
        })
        .await;
    assert_eq!(log["trace_id"], caller_trace, "{log}");
    assert_eq!(log["attributes"]["component"], "authority", "{log}");

    // A gateway request with the token, in a trace of its own: server span, its filters,
    // the upstream call; the upstream sees the client span as its parent.
    let req_trace = "0af7651916cd43dd8448eb211c80319c";
    let tp = format!("00-{req_trace}-b7ad6b7169203331-01");
    let bearer = format!("Bearer {token}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let a = loop {
        // The gateway's first JWKS fetch may still be under way.
        let a = get(
            gateway,
            "/orders/42",
            &[("authorization", &bearer), ("traceparent", &tp)],
        )
        .await;
        if a.status != 503 || Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
    let spans = receiver.trace(req_trace, "GET orders").await;
    let server = named(&spans, "GET orders").clone();
    let spans = receiver.spans(req_trace, 4).await;
    assert_eq!(server["span_kind"], SERVER);
    assert_eq!(server["parent_span_id"], "b7ad6b7169203331", "{server}");
    let attrs = &server["attributes"];
    assert_eq!(attrs["http.request.method"], "GET", "{server}");
    assert_eq!(attrs["url.path"], "/orders/42", "{server}");
    assert_eq!(attrs["http.response.status_code"], 200, "{server}");
    assert_eq!(attrs["warden.route"], "orders", "{server}");
    assert_eq!(attrs["warden.decision"], "allowed", "{server}");
    assert_eq!(attrs["warden.auth.method"], "jwt", "{server}");
    assert_eq!(attrs["enduser.id"], "billing", "{server}");
    for name in ["authenticate", "authorize"] {
        let s = named(&spans, name);
        assert_eq!(s["span_kind"], INTERNAL, "{s}");
        assert_eq!(s["parent_span_id"], server["span_id"], "{s}");
        assert_eq!(s["attributes"]["warden.decision"], "allowed", "{s}");
    }
    let call = named(&spans, "GET");
    assert_eq!(call["span_kind"], CLIENT, "{call}");
    assert_eq!(call["parent_span_id"], server["span_id"], "{call}");
    assert_eq!(
        call["attributes"]["http.response.status_code"], 200,
        "{call}"
    );
    assert!(
        call["start"].as_u64() >= server["start"].as_u64(),
        "{call} {server}"
    );
    assert!(
        call["end"].as_u64() <= server["end"].as_u64(),
        "{call} {server}"
    );
    let seen = upstream.requests();
    let sent = seen
        .iter()
        .find(|r| r.uri.starts_with("/orders/42"))
        .expect("the upstream got the request");
    assert_eq!(
        sent.headers["traceparent"],
        format!("00-{req_trace}-{}-01", call["span_id"].as_str().unwrap())
    );
    assert!(!sent.headers["traceparent"].contains("b7ad6b7169203331"));
    let line = line_where(&access, "the request's access-log line", |l| {
        l["path"] == "/orders/42"
    })
    .await;
    assert_eq!(line["trace_id"], req_trace, "{line}");
    assert_eq!(line["span_id"], server["span_id"], "{line}");

    // A refused request, with no traceparent: a new trace whose server span says why, its
    // authenticate span too, and whose security event (line and log record) joins it.
    let a = get(gateway, "/orders/7", &[]).await;
    assert_eq!(a.status, 401);
    let refused = line_where(&events, "authn.failure", |l| {
        l["event"] == "authn.failure" && l["reason"] == "missing_credential"
    })
    .await;
    let trace = refused["trace_id"].as_str().unwrap().to_owned();
    let spans = receiver.trace(&trace, "GET orders").await;
    let server = named(&spans, "GET orders");
    assert_eq!(server["parent_span_id"], "", "a new trace: {server}");
    assert_eq!(server["span_id"], refused["span_id"], "{server}");
    assert_eq!(
        server["attributes"]["http.response.status_code"], 401,
        "{server}"
    );
    assert_eq!(
        server["attributes"]["warden.decision"], "missing_credential",
        "{server}"
    );
    let spans = receiver
        .wait("the refusal's authenticate span", |recs| {
            recs.iter()
                .find(|r| r["trace_id"] == trace.as_str() && r["name"] == "authenticate")
                .cloned()
        })
        .await;
    assert_eq!(spans["attributes"]["warden.decision"], "missing_credential");
    let log = receiver
        .wait("authn.failure log record", |recs| {
            recs.iter()
                .find(|r| {
                    r["kind"] == "log"
                        && r["event_name"] == "authn.failure"
                        && r["attributes"]["reason"] == "missing_credential"
                })
                .cloned()
        })
        .await;
    assert_eq!(log["trace_id"], trace, "{log}");
    assert_eq!(log["span_id"], refused["span_id"], "{log}");
    assert_eq!(log["severity_text"], "WARN", "{log}");
    assert_eq!(log["attributes"]["reason"], "missing_credential", "{log}");
    assert!(!receiver.records().iter().any(|r| r["kind"] == "garbage"));

    let text = metrics(admin).await;
    assert!(
        series(&text, "warden_tracing_exported_total{signal=\"spans\"}").unwrap_or(0.0) >= 7.0,
        "{text}"
    );

    // The collector dies: requests go on, unharmed; the spans that cannot go are counted.
    receiver.kill();
    for i in 0..50 {
        let a = get(
            gateway,
            &format!("/orders/{i}"),
            &[("authorization", &bearer)],
        )
        .await;
        assert_eq!(a.status, 200, "request {i} with the collector down");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = metrics(admin).await;
        let failed = series(
            &text,
            "warden_tracing_dropped_total{signal=\"spans\",reason=\"export_failed\"}",
        )
        .unwrap_or(0.0);
        if failed > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed export counted: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn over_grpc_the_spans_and_the_security_events_arrive_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let receiver = Receiver::start(d, true).await;
    let upstream = Upstream::start("api").await;
    crate::common::write_secret(d.join("hmac"), "a-shared-secret-of-32-bytes-or-more!!");
    let gw_port = free_port();
    let gateway: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let toml = format!(
        "[admin]\nenabled = false\n[reload]\nwatch = false\n[access_log]\nenabled = false\n\
         [security_events]\nenabled = false\n\
         [tracing]\nenabled = true\nprotocol = \"grpc\"\nendpoint = \"http://127.0.0.1:{rport}\"\n\
         sampling_ratio = 1.0\nscheduled_delay = \"100ms\"\n\
         [[listeners]]\nname = \"main\"\naddress = \"{gateway}\"\n\
         [[auth.jwt]]\nname = \"batch\"\nissuer = \"batch\"\naudiences = [\"api\"]\n\
         algorithms = [\"HS256\"]\nhmac_secret = \"file:{d}/hmac\"\n\
         [[clusters]]\nname = \"api\"\nendpoints = [\"{up}\"]\n\
         [[routes]]\nname = \"open\"\ncluster = \"api\"\npath_prefix = \"/open\"\nauth = \"none\"\n\
         [[routes]]\nname = \"closed\"\ncluster = \"api\"\npath_prefix = \"/closed\"\n\
         [routes.auth]\naccept = [\"jwt:batch\"]\n",
        rport = receiver.port,
        up = upstream.url(),
        d = d.display(),
    );
    let mut p = serve(d, "grpc", &toml);
    wait_port(&mut p, gw_port, d, "grpc").await;

    let trace = "11111111111111111111111111111111";
    let tp = format!("00-{trace}-2222222222222222-01");
    assert_eq!(
        get(gateway, "/open/x", &[("traceparent", &tp)])
            .await
            .status,
        200
    );
    let spans = receiver.spans(trace, 2).await;
    let server = named(&spans, "GET open");
    let call = named(&spans, "GET");
    assert_eq!(server["parent_span_id"], "2222222222222222");
    assert_eq!(call["parent_span_id"], server["span_id"]);
    assert_eq!(server["resource"]["service.name"], "warden");

    // The event stream is off as lines, but the events still go as log records.
    assert_eq!(get(gateway, "/closed/x", &[]).await.status, 401);
    let log = receiver
        .wait("authn.failure over gRPC", |recs| {
            recs.iter()
                .find(|r| r["kind"] == "log" && r["event_name"] == "authn.failure")
                .cloned()
        })
        .await;
    assert_eq!(log["attributes"]["route"], "closed", "{log}");
    assert_eq!(log["trace_id"].as_str().map(str::len), Some(32), "{log}");
    // An unsampled caller is followed: nothing recorded for its trace.
    let quiet = "33333333333333333333333333333333";
    let tp = format!("00-{quiet}-4444444444444444-00");
    assert_eq!(
        get(gateway, "/open/y", &[("traceparent", &tp)])
            .await
            .status,
        200
    );
    let sent = upstream
        .requests()
        .into_iter()
        .find(|r| r.uri.starts_with("/open/y"))
        .unwrap();
    assert!(sent.headers["traceparent"].starts_with(&format!("00-{quiet}-")));
    assert!(sent.headers["traceparent"].ends_with("-00"));
    // A sampled request after it: once its spans have arrived, anything recorded for the
    // unsampled one (queued before them) would have too.
    let after = "55555555555555555555555555555555";
    let tp = format!("00-{after}-6666666666666666-01");
    assert_eq!(
        get(gateway, "/open/z", &[("traceparent", &tp)])
            .await
            .status,
        200
    );
    receiver.spans(after, 2).await;
    assert!(!receiver.records().iter().any(|r| r["trace_id"] == quiet));
}
