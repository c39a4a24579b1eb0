//! The export side: a thread per signal with a small runtime of its own, taking batches from
//! a bounded queue and handing them to the OTLP exporter (HTTP/protobuf through hyper and
//! Warden's rustls, or gRPC through tonic), each call bounded by the export timeout.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::{
    LogExporter, Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogProcessor, SdkLogRecord};
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;
use warden_config::{OtlpProtocol, TracingConfig};
use warden_telemetry::metrics::{ExportCounters, SignalReason};

/// What the queue carries: items (a staged batch), or a request to send what is held and say
/// so.
pub(crate) enum Msg<T> {
    Items(Vec<T>),
    Flush(SyncSender<()>),
}

/// Items staged before they go on the queue: a request path adds one under an uncontended
/// lock, and only every `stage`th item moves a batch onto the channel (one wake-up of the
/// export thread per batch, not per span: at 100 % sampling a wake-up per span cost more than
/// building the span). The export thread also takes what is staged when its delay is up, so
/// a quiet moment leaves nothing behind.
pub(crate) struct Queue<T> {
    tx: SyncSender<Msg<T>>,
    staged: Arc<Mutex<Vec<T>>>,
    stage: usize,
    counters: ExportCounters,
    signal: &'static str,
}

impl<T: Send + 'static> Queue<T> {
    /// Adds `item`; a full queue drops the batch it completes, counted.
    pub(crate) fn push(&self, item: T) {
        let full = {
            let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
            staged.push(item);
            (staged.len() >= self.stage)
                .then(|| std::mem::replace(&mut *staged, Vec::with_capacity(self.stage)))
        };
        if let Some(batch) = full {
            let n = batch.len() as u64;
            if self.tx.try_send(Msg::Items(batch)).is_err() {
                self.counters
                    .dropped
                    .get_or_create(&SignalReason {
                        signal: self.signal,
                        reason: "queue_full",
                    })
                    .inc_by(n);
            }
        }
    }

    /// Asks the export thread to send what it holds and what is staged, and waits up to
    /// `timeout`.
    pub(crate) fn flush(&self, timeout: Duration) {
        let (ack, done) = sync_channel(1);
        let tx = self.tx.clone();
        // The queue may be full: wait for room on another thread, bounded by `timeout` here.
        let _ = std::thread::Builder::new()
            .name("warden-otel-flush".into())
            .spawn(move || {
                let _ = tx.send(Msg::Flush(ack));
            });
        let _ = done.recv_timeout(timeout);
    }
}

/// Counts a batch's fate.
fn count(counters: &ExportCounters, signal: &'static str, n: usize, ok: bool) {
    let n = n as u64;
    if ok {
        counters
            .exported
            .get_or_create(&SignalReason { signal, reason: "" })
            .inc_by(n);
    } else {
        counters
            .dropped
            .get_or_create(&SignalReason {
                signal,
                reason: "export_failed",
            })
            .inc_by(n);
    }
}

/// The settings one worker needs.
#[derive(Clone, Copy)]
struct Batching {
    max_batch: usize,
    delay: Duration,
    timeout: Duration,
}

impl Batching {
    fn of(c: &TracingConfig) -> Self {
        Batching {
            max_batch: c.max_export_batch_size.max(1),
            delay: c.scheduled_delay.0,
            timeout: c.timeout.0,
        }
    }
}

/// Takes items off `rx` (and what is staged) and calls `send` with batches of at most
/// `max_batch`: when that many are held, when the oldest held has waited `delay` (or, idle,
/// every `delay`, for what is staged), on a flush, and when every sender is gone.
fn batches<T>(
    rx: &Receiver<Msg<T>>,
    staged: &Mutex<Vec<T>>,
    b: Batching,
    mut send: impl FnMut(Vec<T>),
) {
    let mut held: Vec<T> = Vec::with_capacity(b.max_batch);
    let mut due: Option<Instant> = None;
    let mut send_all = |held: &mut Vec<T>| {
        held.append(&mut staged.lock().unwrap_or_else(|p| p.into_inner()));
        while !held.is_empty() {
            let rest = if held.len() > b.max_batch {
                held.split_off(b.max_batch)
            } else {
                Vec::new()
            };
            send(std::mem::replace(held, rest));
        }
    };
    loop {
        let wait = due.map_or(b.delay, |at| at.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(wait) {
            Ok(Msg::Items(mut items)) => {
                held.append(&mut items);
                due.get_or_insert_with(|| Instant::now() + b.delay);
                if held.len() >= b.max_batch {
                    let rest = held.split_off(b.max_batch);
                    let mut full = std::mem::replace(&mut held, rest);
                    send_all(&mut full);
                    if held.is_empty() {
                        due = None;
                    }
                }
            }
            Ok(Msg::Flush(ack)) => {
                send_all(&mut held);
                due = None;
                let _ = ack.send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                send_all(&mut held);
                due = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                send_all(&mut held);
                return;
            }
        }
    }
}

/// A worker thread with a current-thread runtime: the exporter is built inside it (tonic's
/// channel needs one), then batches are exported one call at a time, each bounded by the
/// export timeout. Returns once the exporter is built, or why it could not be.
fn spawn_worker<T, E>(
    name: &str,
    config: &TracingConfig,
    build: impl FnOnce() -> Result<E, String> + Send + 'static,
    export: impl Fn(&E, Vec<T>) -> futures_lite::BoxedExport<'_> + Send + 'static,
    counters: ExportCounters,
    signal: &'static str,
    stage: usize,
) -> Result<Queue<T>, String>
where
    T: Send + 'static,
    E: 'static,
{
    let stage = stage.clamp(1, config.max_queue_size.max(1));
    // The queue holds `max_queue_size` items in batches of `stage`, plus one staged batch.
    let (tx, rx) = sync_channel::<Msg<T>>((config.max_queue_size / stage).max(1));
    let staged = Arc::new(Mutex::new(Vec::with_capacity(stage)));
    let worker_staged = staged.clone();
    let worker_counters = counters.clone();
    let (ready_tx, ready) = sync_channel::<Result<(), String>>(1);
    let b = Batching::of(config);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("tracing runtime: {e}")));
                    return;
                }
            };
            let exporter = match rt.block_on(async { build() }) {
                Ok(e) => e,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            let counters = worker_counters;
            batches(&rx, &worker_staged, b, |batch| {
                let n = batch.len();
                let ok = rt
                    .block_on(async {
                        // The exporter has the same timeout; this one also bounds a stuck
                        // connection.
                        tokio::time::timeout(
                            b.timeout + Duration::from_secs(1),
                            export(&exporter, batch),
                        )
                        .await
                    })
                    .is_ok_and(|r| r.is_ok());
                if !ok {
                    tracing::debug!(signal, n, "OTLP export failed");
                }
                count(&counters, signal, n, ok);
            });
        })
        .map_err(|e| format!("tracing thread: {e}"))?;
    ready
        .recv()
        .map_err(|_| "tracing thread ended".to_owned())??;
    Ok(Queue {
        tx,
        staged,
        stage,
        counters,
        signal,
    })
}

/// Boxed export futures, so one worker serves both signals.
mod futures_lite {
    use std::future::Future;
    use std::pin::Pin;

    pub(crate) type BoxedExport<'a> =
        Pin<Box<dyn Future<Output = opentelemetry_sdk::error::OTelSdkResult> + 'a>>;
}

/// hyper through Warden's rustls: the collector's CAs from `ca_file`, or the Mozilla roots.
fn http_client(
    config: &TracingConfig,
) -> Result<
    opentelemetry_http::hyper::HyperClient<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    >,
    String,
> {
    let roots = match &config.ca_file {
        Some(path) => {
            warden_crypto::tls::load_roots(path).map_err(|e| format!("tracing.ca_file: {e}"))?
        }
        None => {
            let mut r = rustls::RootCertStore::empty();
            r.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            r
        }
    };
    let tls = rustls::ClientConfig::builder_with_provider(warden_crypto::provider())
        .with_protocol_versions(warden_crypto::TLS_VERSIONS)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.timeout.0));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(opentelemetry_http::hyper::HyperClient::new(
        connector,
        config.timeout.0,
        None,
    ))
}

/// gRPC's TLS: the collector's CAs from `ca_file` (validation requires it for `https://`).
fn tonic_tls(config: &TracingConfig) -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
    if !config.endpoint.starts_with("https://") {
        return Ok(None);
    }
    let path = config
        .ca_file
        .as_ref()
        .ok_or("tracing.ca_file: needed for a gRPC collector over https")?;
    let pem =
        std::fs::read(path).map_err(|e| format!("tracing.ca_file: {}: {e}", path.display()))?;
    Ok(Some(
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
    ))
}

fn base(config: &TracingConfig) -> String {
    config.endpoint.trim_end_matches('/').to_owned()
}

/// Builds an OTLP exporter of type `$exporter` for `$c` (HTTP/protobuf at `$path` under the
/// endpoint, or gRPC), with the resource set.
macro_rules! exporter {
    ($exporter:ident, $trait:path, $path:literal, $c:expr, $resource:expr) => {{
        let c: &TracingConfig = $c;
        let mut exporter = match c.protocol {
            OtlpProtocol::HttpProtobuf => $exporter::builder()
                .with_http()
                .with_endpoint(format!("{}{}", base(c), $path))
                .with_protocol(Protocol::HttpBinary)
                .with_timeout(c.timeout.0)
                .with_http_client(http_client(c)?)
                .build(),
            OtlpProtocol::Grpc => {
                let mut b = $exporter::builder()
                    .with_tonic()
                    .with_endpoint(base(c))
                    .with_timeout(c.timeout.0);
                if let Some(tls) = tonic_tls(c)? {
                    b = b.with_tls_config(tls);
                }
                b.build()
            }
        }
        .map_err(|e| format!("tracing: {e}"))?;
        <$exporter as $trait>::set_resource(&mut exporter, $resource);
        Ok(exporter)
    }};
}

/// Spans staged before a batch goes on the queue.
const SPAN_STAGE: usize = 64;

/// The span exporter's worker.
pub(crate) fn start_spans(
    config: &TracingConfig,
    resource: &Resource,
    counters: ExportCounters,
) -> Result<Queue<SpanData>, String> {
    let c = config.clone();
    let resource = resource.clone();
    let build = move || -> Result<SpanExporter, String> {
        exporter!(
            SpanExporter,
            opentelemetry_sdk::trace::SpanExporter,
            "/v1/traces",
            &c,
            &resource
        )
    };
    spawn_worker(
        "warden-otel-spans",
        config,
        build,
        |e: &SpanExporter, batch| {
            Box::pin(opentelemetry_sdk::trace::SpanExporter::export(e, batch))
        },
        counters,
        "spans",
        SPAN_STAGE,
    )
}

/// A log record and its scope, as the log exporter takes them.
pub(crate) type Record = (SdkLogRecord, InstrumentationScope);

/// The log exporter's worker.
pub(crate) fn start_logs(
    config: &TracingConfig,
    resource: &Resource,
    counters: ExportCounters,
) -> Result<Queue<Record>, String> {
    let c = config.clone();
    let resource = resource.clone();
    let build = move || -> Result<LogExporter, String> {
        exporter!(
            LogExporter,
            opentelemetry_sdk::logs::LogExporter,
            "/v1/logs",
            &c,
            &resource
        )
    };
    spawn_worker(
        "warden-otel-logs",
        config,
        build,
        |e: &LogExporter, batch: Vec<Record>| {
            Box::pin(async move {
                let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
                    batch.iter().map(|(r, s)| (r, s)).collect();
                opentelemetry_sdk::logs::LogExporter::export(e, LogBatch::new(&refs)).await
            })
        },
        counters,
        "logs",
        1,
    )
}

/// The logger provider's processor: records go on the logs queue, or are dropped and counted.
#[derive(Debug)]
pub(crate) struct QueueLogProcessor {
    queue: Queue<Record>,
}

impl std::fmt::Debug for Queue<Record> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queue")
    }
}

impl QueueLogProcessor {
    pub(crate) fn new(queue: Queue<Record>) -> Self {
        QueueLogProcessor { queue }
    }
}

impl LogProcessor for QueueLogProcessor {
    fn emit(&self, data: &mut SdkLogRecord, instrumentation: &InstrumentationScope) {
        self.queue.push((data.clone(), instrumentation.clone()));
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.queue.flush(Duration::from_secs(5));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_go_when_full_when_due_and_on_flush_with_what_is_staged() {
        let (tx, rx) = sync_channel::<Msg<u32>>(100);
        let staged = Arc::new(Mutex::new(Vec::new()));
        let (out_tx, out) = std::sync::mpsc::channel();
        let worker_staged = staged.clone();
        let worker = std::thread::spawn(move || {
            batches(
                &rx,
                &worker_staged,
                Batching {
                    max_batch: 3,
                    delay: Duration::from_millis(200),
                    timeout: Duration::from_secs(1),
                },
                |b| out_tx.send(b).unwrap(),
            )
        });
        tx.send(Msg::Items(vec![0, 1])).unwrap();
        tx.send(Msg::Items(vec![2, 3])).unwrap();
        assert_eq!(
            out.recv_timeout(Duration::from_secs(1)).unwrap(),
            vec![0, 1, 2]
        );
        // The fourth waits for the delay.
        let t = Instant::now();
        assert_eq!(out.recv_timeout(Duration::from_secs(2)).unwrap(), vec![3]);
        assert!(t.elapsed() >= Duration::from_millis(100));
        // Staged items that never made a batch go when the delay is up, idle or not.
        staged.lock().unwrap().extend([7, 8]);
        assert_eq!(
            out.recv_timeout(Duration::from_secs(2)).unwrap(),
            vec![7, 8]
        );
        tx.send(Msg::Items(vec![9])).unwrap();
        staged.lock().unwrap().push(10);
        let (ack, acked) = sync_channel(1);
        tx.send(Msg::Flush(ack)).unwrap();
        acked.recv_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!(
            out.recv_timeout(Duration::from_secs(1)).unwrap(),
            vec![9, 10]
        );
        drop(tx);
        worker.join().unwrap();
    }
}
