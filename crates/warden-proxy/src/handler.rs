//! The request path's entry from the HTTP server: what a connection tells the pipeline, and
//! forwarding to the route's cluster. The pipeline itself (checks, normalisation, routing,
//! the route's filters, the response phase, metrics and the access log) is in
//! `pipeline.rs`; every refusal is a `Reject` turned into a response in one place
//! (`Reject::response`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;
use rustls::pki_types::CertificateDer;

use crate::body::{BodyState, RequestBody, ResponseBody};
use crate::conn_io::ConnShared;
use crate::gateway::Gateway;
use crate::pipeline::{Forwarded, Outgoing, Upstream};
use crate::upstream::exchange::Outbound;

/// What the request path knows about the connection.
pub(crate) struct ConnInfo {
    pub(crate) listener: Arc<String>,
    pub(crate) peer: SocketAddr,
    /// When the connection was accepted.
    pub(crate) accepted: Instant,
    pub(crate) tls: bool,
    pub(crate) http1: bool,
    pub(crate) shared: Arc<ConnShared>,
    /// The verified client certificate (leaf), when the client sent one.
    pub(crate) peer_cert: Option<CertificateDer<'static>>,
}

impl ConnInfo {
    /// Counts and logs a refusal made below the handler on this connection.
    pub(crate) fn refused(&self, gw: &Gateway, refusal: crate::refusal::Refusal) {
        let at = crate::refusal::Where {
            listener: &self.listener,
            peer: self.peer,
            protocol: if self.http1 { "HTTP/1.1" } else { "HTTP/2" },
            accepted: self.accepted,
        };
        crate::refusal::record(gw, &at, refusal);
    }
}

pub(crate) static DASH: std::sync::LazyLock<Arc<String>> =
    std::sync::LazyLock::new(|| Arc::new("-".to_owned()));

/// Serves one request from a client connection.
pub(crate) async fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    gw: Arc<Gateway>,
) -> Result<Response<ResponseBody>, Infallible> {
    Ok(crate::pipeline::run(req, &conn, &gw, ToCluster).await)
}

/// Forwards to the route's cluster: the client's body streamed under the body limit, the
/// endpoint picked by health, breakers and balancing, tries and retries in
/// `upstream/exchange.rs`.
struct ToCluster;

impl Upstream<Incoming> for ToCluster {
    async fn forward(self, out: Outgoing<'_, Incoming>) -> Forwarded {
        let state = Arc::new(BodyState::default());
        let body = RequestBody::new(out.body, out.max_body_bytes, state.clone());
        let outbound = Outbound {
            head: out.head,
            path_and_query: out.path_and_query,
            body,
            body_state: &state,
            hash_value: out.hash_value,
            timeout: out.timeout,
        };
        let cluster = &out.route.cluster;
        let idle = out.route.stream_idle_timeout;
        let (sent, upgraded) = if out.upgrade {
            cluster.send_upgrade(outbound, out.admission).await
        } else {
            (cluster.send(outbound, out.admission).await, None)
        };
        Forwarded {
            response: sent
                .response
                .map(|r| r.map(|b| ResponseBody::stream(b, idle))),
            upstream: sent.upstream,
            body: Some(state),
            upgraded,
        }
    }
}
