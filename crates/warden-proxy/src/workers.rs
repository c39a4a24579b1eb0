//! Data-plane worker threads: each runs its own single-threaded tokio runtime and serves the
//! connections handed to it, with its own upstream connection pools.
//!
//! Why: on tokio's work-stealing runtime a connection's tasks (the server side, hyper's
//! upstream connection task, timers) wake each other across worker threads, and those
//! wake-ups (futex, scheduler) were ~20 % of the gateway's CPU under load. A connection that
//! lives on one thread from accept to close, talking to upstream connections owned by the same
//! thread, wakes nothing else. Accept loops and the control plane (admin API, reloads, health
//! checks, key fetches) stay on the main runtime.
//!
//! The pool is process-wide, started by the first gateway with `server.data_threads` workers
//! (0: one per available CPU; a later gateway in the same process, or a reload, uses the
//! running pool). Connections are assigned round-robin. Shared state (snapshots, limiters,
//! caches, metrics) is behind `Arc`s as before; nothing here holds a lock across an await.
//! Measured on 2 cores (`bench/README.md`): +16 % throughput and −10 % CPU per request against
//! serving connections on the shared work-stealing runtime.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tokio::runtime::Handle;

struct Pool {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

static POOL: OnceLock<Pool> = OnceLock::new();

thread_local! {
    /// This thread's worker number, 1-based; 0 off the pool (the main runtime).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many data-plane workers the pool has (it is started if it was not).
pub(crate) fn count() -> usize {
    pool().handles.len()
}

/// This thread's slot for per-worker state: 1..=count() on a worker, 0 elsewhere.
pub(crate) fn slot() -> usize {
    WORKER.with(std::cell::Cell::get)
}

/// Runs `fut` on the next worker, round-robin.
pub(crate) fn spawn<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let p = pool();
    let i = p.next.fetch_add(1, Ordering::Relaxed) % p.handles.len();
    drop(p.handles[i].spawn(fut));
}

/// Starts the pool with `threads` workers (0: one per CPU), unless it runs already.
pub(crate) fn init(threads: usize) {
    let _ = start(threads);
}

fn pool() -> &'static Pool {
    start(0)
}

fn start(threads: usize) -> &'static Pool {
    POOL.get_or_init(|| {
        let n = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n.min(1024), // validated: at most 1024
        };
        // Each thread builds its runtime and sends its handle back once it runs (named, its
        // slot set), so the pool is complete when this returns.
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 1..=n {
            let tx = tx.clone();
            std::thread::Builder::new()
                .name(format!("warden-data-{i}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a data-plane runtime");
                    WORKER.with(|w| w.set(i));
                    let _ = tx.send((i, rt.handle().clone()));
                    // Runs the tasks handed to it for the life of the process.
                    rt.block_on(std::future::pending::<()>());
                })
                .expect("a data-plane thread");
        }
        drop(tx);
        let mut handles: Vec<(usize, Handle)> = rx.iter().take(n).collect();
        assert_eq!(handles.len(), n, "a data-plane thread failed to start");
        handles.sort_by_key(|(i, _)| *i);
        let handles = handles.into_iter().map(|(_, h)| h).collect();
        Pool {
            handles,
            next: AtomicUsize::new(0),
        }
    })
}
