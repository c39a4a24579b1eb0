//! The pipeline without sockets: a gateway whose "upstream" is a function, for tests of
//! filters (built-in or added) and of what a request turns into.
//!
//! ```no_run
//! # async fn demo(config: warden_config::Config) {
//! use bytes::Bytes;
//! let gw = warden_proxy::InMemory::new(config).expect("config compiles");
//! let req = http::Request::get("http://api.test/users").body(()).unwrap();
//! let res = gw
//!     .send(req, "192.0.2.1:5000".parse().unwrap(), |forwarded| async move {
//!         // `forwarded` is the request as the upstream would receive it.
//!         http::Response::new(Bytes::from_static(b"hello"))
//!     })
//!     .await;
//! assert_eq!(res.status(), 200);
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body;
use warden_config::Config;
use warden_telemetry::{AccessLog, Metrics};

use crate::body::ResponseBody;
use crate::conn_io::ConnShared;
use crate::error::CompileError;
use crate::filters::Filter;
use crate::gateway::Gateway;
use crate::handler::ConnInfo;
use crate::pipeline::{Forwarded, Outgoing, Upstream};
use crate::snapshot::Snapshot;

/// A gateway that serves requests handed to it in memory.
pub struct InMemory {
    gw: Arc<Gateway>,
    tls: bool,
}

impl InMemory {
    /// Compiles `config` (nothing is bound, no health checks run).
    pub fn new(config: Config) -> Result<Self, Vec<CompileError>> {
        Self::with_filters(config, Vec::new())
    }

    /// Compiles `config` with `filters` added at the end of every route's chain.
    pub fn with_filters(
        config: Config,
        filters: Vec<Arc<dyn Filter>>,
    ) -> Result<Self, Vec<CompileError>> {
        let metrics = Arc::new(Metrics::new());
        let snapshot = Snapshot::compile_with(
            config,
            None,
            &metrics,
            filters.into(),
            Arc::new(warden_config::LocalSecrets),
            None,
        )?;
        crate::series::sync(&metrics, None, &snapshot);
        let gw = Gateway::new(snapshot, metrics, AccessLog::disabled(), None, None, None);
        Ok(Self {
            gw: Arc::new(gw),
            tls: false,
        })
    }

    /// Requests arrive as if over TLS (HSTS, `X-Forwarded-Proto: https`).
    pub fn over_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// The gateway state (snapshot, metrics).
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gw
    }

    /// Serves `req` from `client`; a request that passes every filter is handed to
    /// `upstream` as the upstream would receive it (URI: path and query only).
    pub async fn send<B, F, Fut>(
        &self,
        req: Request<B>,
        client: SocketAddr,
        upstream: F,
    ) -> Response<Bytes>
    where
        B: Send,
        F: FnOnce(Request<B>) -> Fut + Send,
        Fut: Future<Output = Response<Bytes>> + Send,
    {
        let conn = ConnInfo {
            listener: Arc::new("in-memory".to_owned()),
            peer: client,
            accepted: Instant::now(),
            tls: self.tls,
            http1: false,
            shared: Arc::new(ConnShared::new(false, 0)),
            peer_cert: None,
        };
        let res = crate::pipeline::run(req, &conn, &self.gw, ToFunction(upstream)).await;
        let (parts, body) = res.into_parts();
        // Bodies here are whole: the function's answer or the gateway's own.
        Response::from_parts(parts, collect(body).await)
    }
}

/// A whole body: the function's answer or the gateway's own.
async fn collect(mut body: ResponseBody) -> Bytes {
    let mut out = bytes::BytesMut::new();
    while let Some(Ok(frame)) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        if let Some(data) = frame.data_ref() {
            out.extend_from_slice(data);
        }
    }
    out.freeze()
}

struct ToFunction<F>(F);

impl<B, F, Fut> Upstream<B> for ToFunction<F>
where
    B: Send,
    F: FnOnce(Request<B>) -> Fut + Send,
    Fut: Future<Output = Response<Bytes>> + Send,
{
    async fn forward(self, out: Outgoing<'_, B>) -> Forwarded {
        let Outgoing {
            mut head,
            path_and_query,
            body,
            admission,
            ..
        } = out;
        head.uri = Uri::from(path_and_query);
        let res = (self.0)(Request::from_parts(head, body)).await;
        drop(admission);
        Forwarded {
            response: Ok(res.map(ResponseBody::full)),
            upstream: None,
            body: None,
            upgraded: None,
        }
    }
}
