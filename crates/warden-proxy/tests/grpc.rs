//! gRPC refusals at the byte level, over h2c: a malformed `grpc-timeout` is refused with
//! INVALID_ARGUMENT and never forwarded, an unrouted method is UNIMPLEMENTED, and each is a
//! trailers-only answer (the status in the response head, the stream ended there), while a
//! request that is not gRPC keeps its JSON refusal. (grpcio's view is in `grpc_interop.rs`.)

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::time::{Duration, Instant};

use warden_test_util::{base_toml, client, Behaviour, Gateway, Upstream};

fn call(path: &str, grpc_timeout: Option<&str>) -> Request<Full<Bytes>> {
    let mut req = Request::post(format!("http://a{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = grpc_timeout {
        req = req.header("grpc-timeout", t);
    }
    // One empty message: compressed flag 0, length 0.
    req.body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap()
}

#[tokio::test]
async fn gateway_refusals_of_grpc_calls_are_trailers_only_grpc_statuses() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&format!(
        "{}\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"svc\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/pkg.Svc/\"\n",
        base_toml(),
        up.url()
    ))
    .await;
    let addr = gw.addr("main");

    for bad in ["1.5S", "123456789S", "10", "10x"] {
        let res = client::send_h2c(addr, call("/pkg.Svc/Get", Some(bad))).await;
        assert_eq!(res.status, 200, "{bad}");
        assert_eq!(res.header("grpc-status"), Some("3"), "{bad}");
        assert_eq!(res.header("grpc-message"), Some("malformed grpc-timeout"));
        assert_eq!(res.header("content-type"), Some("application/grpc"));
        assert!(res.body.is_empty(), "trailers-only: no body");
    }
    assert!(
        up.requests().is_empty(),
        "nothing half-formed was forwarded"
    );

    // A well-formed one is forwarded as it came.
    let res = client::send_h2c(addr, call("/pkg.Svc/Get", Some("250m"))).await;
    assert_eq!(res.status, 200);
    assert_eq!(up.requests().len(), 1);
    assert_eq!(
        up.requests()[0]
            .headers
            .get("grpc-timeout")
            .map(String::as_str),
        Some("250m")
    );

    let res = client::send_h2c(addr, call("/other.Svc/Get", None)).await;
    assert_eq!(res.header("grpc-status"), Some("12"), "UNIMPLEMENTED");

    // Not gRPC: the usual JSON refusal.
    let res = client::send_h2c(
        addr,
        Request::post("http://a/other")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status, 404);
    assert_eq!(res.json()["error"], "no_route");
}

#[tokio::test]
async fn a_grpc_timeout_shorter_than_the_route_s_ends_the_call_with_deadline_exceeded() {
    let up = Upstream::start("u").await;
    up.set(Behaviour {
        delay: Duration::from_secs(3),
        ..Behaviour::default()
    });
    let gw = Gateway::start(&format!(
        "{}\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"svc\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/pkg.Svc/\"\ntimeout = \"30s\"\n",
        base_toml(),
        up.url()
    ))
    .await;
    let started = Instant::now();
    let res = client::send_h2c(gw.addr("main"), call("/pkg.Svc/Slow", Some("300m"))).await;
    let took = started.elapsed();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("grpc-status"), Some("4"), "DEADLINE_EXCEEDED");
    assert!(
        (Duration::from_millis(250)..Duration::from_secs(2)).contains(&took),
        "ended after {took:?}, not at the route's 30 s nor the upstream's 3 s"
    );
}
