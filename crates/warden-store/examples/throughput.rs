//! Rough write/read throughput of the store at 32 concurrent callers.
//!
//! `cargo run -p warden-store --release --example throughput [-- postgres://…]`
//! (no argument: SQLite in a temp dir). Numbers are indicative; the authority's own
//! benchmarks in `bench/` are the ones to quote.

use std::time::Instant;

use serde_json::json;
use warden_store::{AuditEvent, Store};

const TASKS: usize = 32;
const PER_TASK: usize = 300;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let location = std::env::args().nth(1).unwrap_or_else(|| {
        dir.path()
            .join("bench.db")
            .to_str()
            .expect("a UTF-8 path")
            .to_owned()
    });
    let store = Store::open(&location, &[9u8; 32])
        .await
        .expect("the store opens");
    println!("backend: {}", store.backend_name());

    run("audit appends", &store, |s, t, i| async move {
        let event = AuditEvent {
            component: "tokens".into(),
            action: "token.issue".into(),
            actor: format!("client-{t}"),
            subject: Some(format!("jti-{t}-{i}")),
            outcome: "success".into(),
            detail: json!({ "scope": "read", "aud": ["api"] }),
            source: Some("127.0.0.1".into()),
        };
        s.audit(&event).await.expect("append");
    })
    .await;
    run("puts (256 B)", &store, |s, t, i| async move {
        s.put(&format!("bench/{t}/{i}"), &[1u8; 256])
            .await
            .expect("put");
    })
    .await;
    run("gets", &store, |s, t, i| async move {
        s.get(&format!("bench/{t}/{i}"))
            .await
            .expect("get")
            .expect("present");
    })
    .await;
    let start = Instant::now();
    let n = store.verify_audit().await.expect("intact");
    println!("verify_audit: {n} records in {:?}", start.elapsed());
}

async fn run<F, Fut>(what: &str, store: &Store, op: F)
where
    F: Fn(Store, usize, usize) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let s = store.clone();
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    op(s.clone(), t, i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{what}: {:.0}/s", (TASKS * PER_TASK) as f64 / secs);
}
