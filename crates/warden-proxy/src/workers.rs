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
use std::sync::{Mutex, OnceLock};

use tokio::runtime::Handle;

struct Pool {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

static POOL: OnceLock<Pool> = OnceLock::new();
/// Serialises starts, so two gateways starting at once build one pool.
static STARTING: Mutex<()> = Mutex::new(());

thread_local! {
    /// This thread's worker number, 1-based; 0 off the pool (the main runtime).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many data-plane workers run: 0 before a gateway started them (`warden check`
/// compiles a config without starting any).
pub(crate) fn count() -> usize {
    POOL.get().map_or(0, |p| p.handles.len())
}

/// This thread's slot for per-worker state: 1..=count() on a worker, 0 elsewhere.
pub(crate) fn slot() -> usize {
    WORKER.with(std::cell::Cell::get)
}

/// Runs `fut` on the next worker, round-robin (on the current runtime if no pool runs).
pub(crate) fn spawn<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match POOL.get() {
        Some(p) => {
            let i = p.next.fetch_add(1, Ordering::Relaxed) % p.handles.len();
            drop(p.handles[i].spawn(fut));
        }
        None => drop(tokio::spawn(fut)),
    }
}

/// Starts the pool with `threads` workers (0: one per CPU), unless it runs already. A thread
/// or runtime that cannot be created is an error, and no pool is left half-built.
pub(crate) fn init(threads: usize) -> Result<(), String> {
    let _one = STARTING.lock().unwrap_or_else(|p| p.into_inner());
    if POOL.get().is_some() {
        return Ok(());
    }
    let n = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n.min(1024), // validated: at most 1024
    };
    // Each thread builds its runtime and reports back once it runs (named, its slot set), so
    // the pool is complete when this returns.
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 1..=n {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("warden-data-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(format!("data-plane runtime {i}: {e}")));
                        return;
                    }
                };
                WORKER.with(|w| w.set(i));
                if tx.send(Ok((i, rt.handle().clone()))).is_err() {
                    return; // the start failed elsewhere: this thread is not needed
                }
                drop(tx);
                // Runs the tasks handed to it for the life of the process.
                rt.block_on(std::future::pending::<()>());
            })
            .map_err(|e| format!("cannot start data-plane thread {i}: {e}"))?;
    }
    drop(tx);
    let mut handles = Vec::with_capacity(n);
    for report in rx.iter().take(n) {
        handles.push(report?);
    }
    if handles.len() != n {
        return Err("a data-plane thread ended before it started".into());
    }
    handles.sort_by_key(|(i, _)| *i);
    let _ = POOL.set(Pool {
        handles: handles.into_iter().map(|(_, h)| h).collect(),
        next: AtomicUsize::new(0),
    });
    Ok(())
}
