//! The SPIFFE Workload API (gRPC, `SpiffeWorkloadAPI`) on a Unix socket, for workloads that
//! want their identity directly: py-spiffe, go-spiffe and java-spiffe work unchanged.
//!
//! - `FetchX509SVID` streams the current X.509-SVID (chain and PKCS#8 key, DER) with the
//!   bundle's roots and the federated trust domains' roots, and again at every renewal or
//!   bundle change; `FetchX509Bundles` streams every trust domain's roots (this one's and the
//!   federated ones'); `FetchJWTBundles` their JWT authorities as JWK sets.
//! - `FetchJWTSVID` asks the authority for a JWT-SVID for the audiences (signed by its token
//!   service); `ValidateJWTSVID` checks one against the JWT authorities of the trust domain
//!   its `sub` names (this one or a federated one) and returns its claims (as
//!   `google.protobuf.Struct`).
//! - Every call must carry the metadata `workload.spiffe.io: true` (the standard's guard
//!   against requests forged by a browser or an SSRF); without it: `INVALID_ARGUMENT`.
//!
//! Threat model: whoever can connect to the socket gets the workload's private key. The
//! socket is created with mode 0600 in a directory the sidecar owns (0700), so only the
//! sidecar's user can call it; a pod or host that wants a different user to read it must
//! share the socket through a group and change the mode deliberately. The API has no other
//! attestation: one sidecar serves one workload, which is the sidecar model (SPIRE's agent
//! instead attests each caller by its process).
//!
//! grpc clients on `unix:` targets send the socket path as `:authority`, which h2 refuses;
//! the connection goes through [`crate::authority_shim`], which puts `localhost` there.
//!
//! The protobuf messages are written out here with `prost` derives (field numbers from the
//! standard's `workload.proto`), and the service is dispatched by hand as `tonic-build` would
//! generate it, so the build needs no `protoc`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tonic::codegen::BoxFuture;
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::{Agent, Svid};

/// `X509SVIDRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidRequest {}

/// `X509SVIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidResponse {
    /// The workload's SVIDs.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<X509Svid>,
    /// CRLs (none: SVIDs are short-lived).
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub crl: Vec<Vec<u8>>,
    /// Bundles of federated trust domains, by trust domain ID.
    #[prost(map = "string, bytes", tag = "3")]
    pub federated_bundles: HashMap<String, Vec<u8>>,
}

/// `X509SVID`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509Svid {
    /// The SPIFFE ID.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// The chain, leaf first, DER certificates concatenated.
    #[prost(bytes = "vec", tag = "2")]
    pub x509_svid: Vec<u8>,
    /// The private key, PKCS#8 DER.
    #[prost(bytes = "vec", tag = "3")]
    pub x509_svid_key: Vec<u8>,
    /// The trust domain's roots, DER concatenated.
    #[prost(bytes = "vec", tag = "4")]
    pub bundle: Vec<u8>,
    /// An operator's hint.
    #[prost(string, tag = "5")]
    pub hint: String,
}

/// `X509BundlesRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509BundlesRequest {}

/// `X509BundlesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509BundlesResponse {
    /// CRLs (none).
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub crl: Vec<Vec<u8>>,
    /// Roots by trust domain ID, DER concatenated.
    #[prost(map = "string, bytes", tag = "2")]
    pub bundles: HashMap<String, Vec<u8>>,
}

/// `JWTSVIDRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtSvidRequest {
    /// Audiences.
    #[prost(string, repeated, tag = "1")]
    pub audience: Vec<String>,
    /// Which of the workload's IDs.
    #[prost(string, tag = "2")]
    pub spiffe_id: String,
}

/// `JWTSVIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtSvidResponse {
    /// The tokens.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<JwtSvid>,
}

/// `JWTSVID`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtSvid {
    /// The SPIFFE ID.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// The token.
    #[prost(string, tag = "2")]
    pub svid: String,
    /// An operator's hint.
    #[prost(string, tag = "3")]
    pub hint: String,
}

/// `JWTBundlesRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtBundlesRequest {}

/// `JWTBundlesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtBundlesResponse {
    /// JWK sets by trust domain ID.
    #[prost(map = "string, bytes", tag = "1")]
    pub bundles: HashMap<String, Vec<u8>>,
}

/// `ValidateJWTSVIDRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValidateJwtSvidRequest {
    /// The audience expected.
    #[prost(string, tag = "1")]
    pub audience: String,
    /// The token.
    #[prost(string, tag = "2")]
    pub svid: String,
}

/// `ValidateJWTSVIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValidateJwtSvidResponse {
    /// The SPIFFE ID.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// The token's claims.
    #[prost(message, optional, tag = "2")]
    pub claims: Option<Struct>,
}

/// `google.protobuf.Struct`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Struct {
    /// The fields.
    #[prost(btree_map = "string, message", tag = "1")]
    pub fields: std::collections::BTreeMap<String, ProtoValue>,
}

/// `google.protobuf.Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoValue {
    /// One of the kinds.
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6")]
    pub kind: Option<Kind>,
}

/// `google.protobuf.Value.kind`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    /// `NULL_VALUE` (0).
    #[prost(int32, tag = "1")]
    NullValue(i32),
    /// A number.
    #[prost(double, tag = "2")]
    NumberValue(f64),
    /// A string.
    #[prost(string, tag = "3")]
    StringValue(String),
    /// A boolean.
    #[prost(bool, tag = "4")]
    BoolValue(bool),
    /// An object.
    #[prost(message, tag = "5")]
    StructValue(Struct),
    /// An array.
    #[prost(message, tag = "6")]
    ListValue(ListValue),
}

/// `google.protobuf.ListValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListValue {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<ProtoValue>,
}

fn to_proto(v: &serde_json::Value) -> ProtoValue {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(to_proto).collect(),
        }),
        J::Object(o) => Kind::StructValue(Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), to_proto(v))).collect(),
        }),
    };
    ProtoValue { kind: Some(kind) }
}

/// A stream of messages to a client.
type Stream<T> = Pin<Box<dyn futures_core::Stream<Item = Result<T, Status>> + Send + 'static>>;

fn check_header<T>(req: &Request<T>) -> Result<(), Status> {
    match req.metadata().get("workload.spiffe.io") {
        Some(v) if v.as_bytes() == b"true" => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request: workload.spiffe.io: true",
        )),
    }
}

fn concat(certs: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Vec<u8> {
    let mut out = Vec::new();
    for c in certs {
        out.extend_from_slice(c.as_ref());
    }
    out
}

/// The Workload API over an agent.
#[derive(Clone)]
pub struct WorkloadApi {
    agent: Arc<Agent>,
}

impl WorkloadApi {
    fn roots(&self) -> Vec<u8> {
        concat(self.agent.bundle().roots().iter())
    }

    /// The federated trust domains' roots, by trust domain ID.
    fn federated_roots(&self) -> HashMap<String, Vec<u8>> {
        self.agent
            .bundle()
            .federated()
            .iter()
            .map(|(td, roots)| (td.id_string(), concat(roots.iter())))
            .collect()
    }

    /// This domain's and the federated domains' roots, by trust domain ID.
    fn all_roots(&self) -> HashMap<String, Vec<u8>> {
        let mut all = self.federated_roots();
        all.insert(self.td_id(), self.roots());
        all
    }

    /// This domain's and the federated domains' JWT authorities, as JWK sets by trust
    /// domain ID.
    fn jwt_bundles(&self) -> HashMap<String, Vec<u8>> {
        let set = |doc: &serde_json::Value| {
            let keys: Vec<serde_json::Value> = doc
                .get("keys")
                .and_then(serde_json::Value::as_array)
                .map(|k| {
                    k.iter()
                        .filter(|k| k.get("use").and_then(|u| u.as_str()) == Some("jwt-svid"))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            serde_json::json!({ "keys": keys }).to_string().into_bytes()
        };
        let mut all: HashMap<String, Vec<u8>> = self
            .agent
            .federated_documents()
            .iter()
            .map(|(td, doc)| (td.id_string(), set(doc)))
            .collect();
        all.insert(self.td_id(), set(&self.agent.bundle_document()));
        all
    }

    fn x509_response(&self, svid: &Svid) -> X509SvidResponse {
        X509SvidResponse {
            svids: vec![X509Svid {
                spiffe_id: svid.id.to_string(),
                x509_svid: concat(svid.chain.iter()),
                x509_svid_key: svid.private_key_der().to_vec(),
                bundle: self.roots(),
                hint: String::new(),
            }],
            crl: Vec::new(),
            federated_bundles: self.federated_roots(),
        }
    }

    fn td_id(&self) -> String {
        self.agent.bundle().trust_domain().id_string()
    }

    /// A stream that yields `make` now and after every change of the SVID or of a bundle,
    /// until the client goes away.
    fn watch<T: Send + 'static>(
        &self,
        make: impl Fn(&WorkloadApi, &Svid) -> T + Send + 'static,
    ) -> Stream<T> {
        let api = self.clone();
        let mut rx: watch::Receiver<u64> = self.agent.updates();
        Box::pin(async_stream(move |tx| async move {
            loop {
                rx.borrow_and_update();
                let svid = api.agent.current();
                if tx.send(Ok(make(&api, &svid))).await.is_err() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }))
    }
}

/// A stream fed by a task through a small channel (back-pressure: the task waits while the
/// client does not read).
fn async_stream<T, F, Fut>(f: F) -> impl futures_core::Stream<Item = T> + Send
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The gRPC service: dispatches on the method path as generated code would.
#[derive(Clone)]
pub struct WorkloadApiServer(WorkloadApi);

impl NamedService for WorkloadApiServer {
    const NAME: &'static str = "SpiffeWorkloadAPI";
}

macro_rules! streaming {
    ($name:ident, $req:ty, $res:ty, $body:expr) => {
        struct $name(WorkloadApi);
        impl ServerStreamingService<$req> for $name {
            type Response = $res;
            type ResponseStream = Stream<$res>;
            type Future = BoxFuture<Response<Self::ResponseStream>, Status>;
            fn call(&mut self, req: Request<$req>) -> Self::Future {
                let api = self.0.clone();
                Box::pin(async move {
                    check_header(&req)?;
                    let f: fn(&WorkloadApi) -> Stream<$res> = $body;
                    Ok(Response::new(f(&api)))
                })
            }
        }
    };
}

streaming!(FetchX509Svid, X509SvidRequest, X509SvidResponse, |api| {
    api.watch(|api, svid| api.x509_response(svid))
});
streaming!(
    FetchX509Bundles,
    X509BundlesRequest,
    X509BundlesResponse,
    |api| {
        api.watch(|api, _| X509BundlesResponse {
            crl: Vec::new(),
            bundles: api.all_roots(),
        })
    }
);
streaming!(
    FetchJwtBundles,
    JwtBundlesRequest,
    JwtBundlesResponse,
    |api| {
        api.watch(|api, _| JwtBundlesResponse {
            bundles: api.jwt_bundles(),
        })
    }
);

struct FetchJwtSvid(WorkloadApi);

impl UnaryService<JwtSvidRequest> for FetchJwtSvid {
    type Response = JwtSvidResponse;
    type Future = BoxFuture<Response<JwtSvidResponse>, Status>;
    fn call(&mut self, req: Request<JwtSvidRequest>) -> Self::Future {
        let agent = self.0.agent.clone();
        Box::pin(async move {
            check_header(&req)?;
            let req = req.into_inner();
            if req.audience.is_empty() {
                return Err(Status::invalid_argument("audience must be specified"));
            }
            let id = agent.current().id.to_string();
            if !req.spiffe_id.is_empty() && req.spiffe_id != id {
                return Err(Status::permission_denied(format!(
                    "this workload is {id}, not {}",
                    req.spiffe_id
                )));
            }
            let token = agent
                .fetch_jwt_svid(&req.audience)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            Ok(Response::new(JwtSvidResponse {
                svids: vec![JwtSvid {
                    spiffe_id: id,
                    svid: token,
                    hint: String::new(),
                }],
            }))
        })
    }
}

struct ValidateJwtSvid(WorkloadApi);

impl UnaryService<ValidateJwtSvidRequest> for ValidateJwtSvid {
    type Response = ValidateJwtSvidResponse;
    type Future = BoxFuture<Response<ValidateJwtSvidResponse>, Status>;
    fn call(&mut self, req: Request<ValidateJwtSvidRequest>) -> Self::Future {
        let agent = self.0.agent.clone();
        Box::pin(async move {
            check_header(&req)?;
            let req = req.into_inner();
            if req.audience.is_empty() || req.svid.is_empty() {
                return Err(Status::invalid_argument(
                    "audience and svid must be specified",
                ));
            }
            let (id, claims) = agent
                .validate_jwt_svid(&req.svid, &req.audience)
                .map_err(Status::invalid_argument)?;
            let claims = Struct {
                fields: claims
                    .iter()
                    .map(|(k, v)| (k.clone(), to_proto(v)))
                    .collect(),
            };
            Ok(Response::new(ValidateJwtSvidResponse {
                spiffe_id: id.to_string(),
                claims: Some(claims),
            }))
        })
    }
}

impl<B> tower_service::Service<http::Request<B>> for WorkloadApiServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let api = self.0.clone();
        match req.uri().path() {
            "/SpiffeWorkloadAPI/FetchX509SVID" => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default());
                Ok(grpc.server_streaming(FetchX509Svid(api), req).await)
            }),
            "/SpiffeWorkloadAPI/FetchX509Bundles" => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default());
                Ok(grpc.server_streaming(FetchX509Bundles(api), req).await)
            }),
            "/SpiffeWorkloadAPI/FetchJWTBundles" => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default());
                Ok(grpc.server_streaming(FetchJwtBundles(api), req).await)
            }),
            "/SpiffeWorkloadAPI/FetchJWTSVID" => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default());
                Ok(grpc.unary(FetchJwtSvid(api), req).await)
            }),
            "/SpiffeWorkloadAPI/ValidateJWTSVID" => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default());
                Ok(grpc.unary(ValidateJwtSvid(api), req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// Serves the Workload API of `agent` on a Unix socket at `path` (replacing a stale socket
/// file; its directory is made 0700 if missing, the socket 0600) until the task is dropped.
pub async fn serve(agent: Arc<Agent>, path: &Path) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let svc = WorkloadApiServer(WorkloadApi { agent });
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = svc.clone();
            tokio::spawn(async move {
                // h2 reads the client's frames through the authority shim.
                let (ours, theirs) = tokio::io::duplex(64 * 1024);
                let (client_r, mut client_w) = stream.into_split();
                let (mut ours_r, ours_w) = tokio::io::split(ours);
                tokio::spawn(async move {
                    if let Err(e) = crate::authority_shim::client_to_server(client_r, ours_w).await
                    {
                        tracing::debug!(error = %e, "Workload API client stream ended");
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut ours_r, &mut client_w).await;
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut client_w).await;
                });
                let io = hyper_util::rt::TokioIo::new(theirs);
                let service = hyper_util::service::TowerToHyperService::new(svc);
                if let Err(e) =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(io, service)
                        .await
                {
                    tracing::debug!(error = %e, "Workload API connection ended");
                }
            });
        }
    }))
}
