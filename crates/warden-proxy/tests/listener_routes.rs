//! Route tables per listener: one process serves an edge listener and a loopback listener
//! with different routes, over real sockets.

use warden_test_util::client;
use warden_test_util::{base_toml, Gateway, Upstream};

/// `main` (from `base_toml`) names no routes; `edge` names `edge_routes`. The `internal`
/// route goes to `inner`, the catch-all `public` route to `outer`.
fn config(inner: &Upstream, outer: &Upstream, edge_routes: &str) -> String {
    format!(
        "{}\n[[listeners]]\nname = \"edge\"\naddress = \"127.0.0.1:0\"\nroutes = [{edge_routes}]\n\
         [[clusters]]\nname = \"i\"\nendpoints = [\"{}\"]\n\
         [[clusters]]\nname = \"o\"\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"internal\"\ncluster = \"i\"\npath_prefix = \"/internal\"\nauth = \"none\"\n\
         [[routes]]\nname = \"public\"\ncluster = \"o\"\npath_prefix = \"/\"\nauth = \"none\"\n",
        base_toml(),
        inner.url(),
        outer.url()
    )
}

#[tokio::test]
async fn an_edge_listener_serves_only_its_routes_while_the_loopback_one_serves_all() {
    let (inner, outer) = (
        Upstream::start("inner").await,
        Upstream::start("outer").await,
    );
    let gw = Gateway::start(&config(&inner, &outer, "\"public\"")).await;
    let (edge, main) = (gw.addr("edge"), gw.addr("main"));

    // `main` names no routes: it serves every route, as before.
    assert_eq!(client::get(main, "/internal/stats").await.status, 200);
    assert_eq!(inner.requests().len(), 1);

    // `edge` serves `public` only: the `internal` route does not exist there, so its path
    // goes to the catch-all route's cluster, never to the internal one.
    assert_eq!(client::get(edge, "/internal/stats").await.status, 200);
    assert_eq!(inner.requests().len(), 1);
    let seen = outer.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/internal/stats");

    // Each listener's role, to join the per-listener series on.
    let text = warden_test_util::authcfg::metrics(gw.admin()).await;
    for l in ["main", "edge"] {
        let line = format!("warden_listener_info{{listener=\"{l}\",role=\"gateway\"}} 1");
        assert!(text.lines().any(|x| x == line), "{line} in:\n{text}");
    }
}

#[tokio::test]
async fn a_listener_without_a_matching_route_answers_404_and_forwards_nothing() {
    let (inner, outer) = (
        Upstream::start("inner").await,
        Upstream::start("outer").await,
    );
    let gw = Gateway::start(&config(&inner, &outer, "\"internal\"")).await;
    let res = client::get(gw.addr("edge"), "/home").await;
    assert_eq!(res.status, 404);
    assert_eq!(res.json()["error"], "no_route");
    assert!(outer.requests().is_empty());
    assert_eq!(
        client::get(gw.addr("edge"), "/internal/x").await.status,
        200
    );
    assert_eq!(client::get(gw.addr("main"), "/home").await.status, 200);
    assert_eq!((inner.requests().len(), outer.requests().len()), (1, 1));
}
