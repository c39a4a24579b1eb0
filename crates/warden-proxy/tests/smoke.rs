//! A first end-to-end check: a request through the gateway reaches the upstream.

use warden_test_util::{base_toml, client, Gateway, Upstream};

#[tokio::test]
async fn request_reaches_upstream_and_back() {
    let up = Upstream::start("a").await;
    let toml = format!(
        "{}\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/\"\n",
        base_toml(),
        up.url()
    );
    let gw = Gateway::start(&toml).await;
    let res = client::get(gw.addr("main"), "/hello?x=1").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-upstream"), Some("a"));
    assert_eq!(res.header("server"), Some("warden"));
    let got = up.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].uri, "/hello?x=1");
}

/// `server.data_threads` sets how many threads serve connections; each connection is served
/// by one of them from accept to close, and every request gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_served_by_the_configured_data_plane_threads() {
    let up = Upstream::start("a").await;
    let toml = format!(
        "{}\n[server]\ndata_threads = 3\n[[clusters]]\nname = \"c\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nauth = \"none\"\ncluster = \"c\"\npath_prefix = \"/\"\n",
        base_toml(),
        up.url()
    );
    let gw = Gateway::start(&toml).await;
    let threads: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| n.starts_with("warden-data-"))
        .collect();
    assert_eq!(threads.len(), 3, "{threads:?}");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..60 {
        let addr = gw.addr("main");
        set.spawn(async move { client::get(addr, &format!("/n/{i}")).await.status });
    }
    while let Some(status) = set.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(up.requests().len(), 60);
}
