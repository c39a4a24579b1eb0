//! gRPC through the gateway with grpcio from PyPI, unmodified, as both the client and the
//! upstream server (scripts/interop/test_grpc.py): unary, server-streaming, client-streaming
//! and bidirectional calls over HTTP/2 end to end with metadata and trailers; the gateway's
//! refusals reaching the client as gRPC statuses (UNAUTHENTICATED, PERMISSION_DENIED,
//! RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED); a Cedar policy deciding by the
//! call's service and method; `grpc-timeout` honoured by the gateway; UNAVAILABLE retried;
//! and a gRPC health check following the server's health.

use serde_json::Value;
use warden_test_util::authcfg::{access_log_toml, wait_for_lines};
use warden_test_util::flaky::dead_endpoint;
use warden_test_util::interop::Script;
use warden_test_util::jwt::TestIssuer;
use warden_test_util::{base_toml, Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_calls_of_every_shape_pass_and_refusals_deadlines_retries_and_health_speak_grpc() {
    let mut script = Script::start("test_grpc.py").await;
    let port: u16 = script.expect("upstream ").await.parse().unwrap();

    let iss = TestIssuer::new("https://issuer.test");
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("access.log");
    let down = dead_endpoint().await;
    // Cedar sees the call's service and method: every method of the service but one.
    let policy = log_dir.path().join("grpc.cedar");
    std::fs::write(
        &policy,
        r#"permit (principal, action == Warden::Action::"POST", resource == Warden::Route::"echo")
when { context.grpc_service == "warden.test.Echo" && context.grpc_method != "Forbidden" };"#,
    )
    .unwrap();
    let toml = format!(
        r#"{base}
[[auth.jwt]]
name = "t"
issuer = "{iss}"
audiences = ["api"]
algorithms = ["ES256"]
jwks_file = "{jwks}"
[auth.policies]
files = ["{policy}"]
[[clusters]]
name = "grpc"
endpoints = ["http://127.0.0.1:{port}"]
protocol = "http2"
[clusters.health_check]
grpc_service = "warden.test.Echo"
interval = "200ms"
timeout = "1s"
healthy_threshold = 1
unhealthy_threshold = 1
[clusters.retries]
attempts = 2
[[clusters]]
name = "down"
endpoints = ["http://{down}"]
protocol = "http2"
[[routes]]
name = "echo"
cluster = "grpc"
path_prefix = "/warden.test.Echo/"
[routes.auth]
accept = ["jwt"]
scopes_all = ["echo"]
policy = true
[[routes]]
name = "limited"
auth = "none"
cluster = "grpc"
path_prefix = "/warden.test.Limited/"
[[routes.rate_limits]]
key = "route"
requests = 1
per = "1m"
burst = 1
[[routes]]
name = "down"
auth = "none"
cluster = "down"
path_prefix = "/warden.test.Down/"
"#,
        base = access_log_toml(&base_toml(), &log),
        policy = policy.display(),
        iss = iss.iss,
        jwks = iss.jwks_file().display(),
    );
    let gw = Gateway::start(&toml).await;
    let token = iss.token(&iss.claims("alice", "api", "echo"));
    let weak = iss.token(&iss.claims("bob", "api", "other"));
    script
        .send(&format!("gateway {} {token} {weak}", gw.addr("main")))
        .await;
    let r: Value = serde_json::from_str(&script.expect("done ").await).unwrap();
    println!("{r:#}");

    assert_eq!(r["unary"], "echo:hi");
    assert_eq!(r["trailers"], "from-upstream", "trailers carried back");
    assert_eq!(r["metadata_seen"], "t1", "metadata carried upstream");
    assert_eq!(
        r["server_stream"],
        serde_json::json!(["s:0", "s:1", "s:2", "s:3", "s:4"])
    );
    assert_eq!(r["client_stream"], "a|b|c");
    assert_eq!(
        r["bidi"],
        serde_json::json!(["re:m0", "re:m1", "re:m2", "re:m3"])
    );
    assert_eq!(r["no_token"], "UNAUTHENTICATED");
    assert_eq!(r["missing_scope"], "PERMISSION_DENIED");
    assert_eq!(
        r["rate_limited"],
        serde_json::json!(["UNIMPLEMENTED", "RESOURCE_EXHAUSTED"]),
        "the first call reaches the server (which has no such service), the second is limited"
    );
    assert_eq!(r["no_upstream"], "UNAVAILABLE");
    assert_eq!(
        r["policy_denied"], "PERMISSION_DENIED",
        "a Cedar policy refused the method (the server would say UNIMPLEMENTED)"
    );
    assert_eq!(r["deadline"], "DEADLINE_EXCEEDED");
    assert!(r["deadline_after_s"].as_f64().unwrap() < 2.5, "{r}");
    assert_eq!(r["flaky"], "ok after 2", "UNAVAILABLE was retried once");
    assert_eq!(r["while_not_serving"], "UNAVAILABLE");
    assert_eq!(r["serving_again"], "OK");

    // The refused calls are logged with their reasons. (That the gateway itself ends a call
    // at its grpc-timeout is `grpc::a_grpc_timeout_shorter_than_the_route_s_ends_the_call_
    // with_deadline_exceeded`: here the client's own deadline fires at the same instant.)
    let lines = wait_for_lines(&log, 10).await;
    let records: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reason_of = |path: &str| -> Vec<String> {
        records
            .iter()
            .filter(|r| r["path"] == path)
            .filter_map(|r| r["reason"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(
        reason_of("/warden.test.Echo/Unary").contains(&"missing_credential".to_owned()),
        "{lines}"
    );
    assert!(
        reason_of("/warden.test.Limited/Unary").contains(&"rate_limited".to_owned()),
        "{lines}"
    );
    script.finish().await;
}
