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
