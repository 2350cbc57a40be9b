//! Group commit for Raft log appends: one fsync for every append pending in every group.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use openraft::storage::IOFlushed;
use zonekv_engine::Engine;

use crate::TypeConfig;

/// Counters of a [`LogSyncer`].
#[derive(Debug, Default)]
pub struct SyncStats {
    /// fsyncs performed.
    pub syncs: AtomicU64,
    /// Append callbacks completed.
    pub callbacks: AtomicU64,
}

/// Makes Raft log appends durable in batches.
///
/// [`crate::LogStore::append`] writes entries to the engine without syncing (they are readable
/// at once) and hands its completion callback here. A dedicated thread waits for callbacks,
/// takes every one that is pending, syncs the engine's write-ahead log once, and only then
/// reports the appends durable. A sync covers every write made before it, so ordering holds
/// across groups, votes, truncations and purges.
///
/// One syncer serves every group of a node. It stops on [`LogSyncer::close`] or when the last
/// clone is dropped; either way the thread is joined, so the engine handle it owns is released
/// before that call returns (RocksDB must be closed before the process exits).
#[derive(Clone)]
pub struct LogSyncer {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    stats: Arc<SyncStats>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn close(&self) {
        let _ = self.tx.send(Msg::Stop);
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

enum Msg {
    Sync(IOFlushed<TypeConfig>),
    Stop,
}

impl LogSyncer {
    /// Starts the sync thread for `engine`.
    pub fn start<E: Engine>(engine: E) -> Self {
        Self::start_with(engine, false)
    }

    /// **Unsafe with `ack_before_sync`:** reports appends durable without syncing anything. It
    /// exists so the crash tests can prove they catch a store that acknowledges too early;
    /// never use it otherwise.
    pub fn start_with<E: Engine>(engine: E, ack_before_sync: bool) -> Self {
        if ack_before_sync {
            tracing::warn!("UNSAFE: Raft log appends are reported durable without an fsync");
        }
        let (tx, rx) = mpsc::channel::<Msg>();
        let stats = Arc::new(SyncStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("zonekv-log-sync".into())
            .spawn(move || run(engine, rx, &thread_stats, ack_before_sync))
            .expect("spawning the log sync thread");
        Self { inner: Arc::new(Inner { tx, stats, thread: Mutex::new(Some(thread)) }) }
    }

    /// Queues `callback`, to be completed once everything written so far is durable.
    pub fn submit(&self, callback: IOFlushed<TypeConfig>) {
        if let Err(mpsc::SendError(Msg::Sync(cb))) = self.inner.tx.send(Msg::Sync(callback)) {
            cb.io_completed(Err(std::io::Error::other("log sync thread has stopped")));
        }
    }

    /// Completes what is queued, stops the thread and waits for it, releasing its engine
    /// handle. Later submissions fail. Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Counters since start.
    pub fn stats(&self) -> &SyncStats {
        &self.inner.stats
    }
}

fn run<E: Engine>(engine: E, rx: mpsc::Receiver<Msg>, stats: &SyncStats, ack_before_sync: bool) {
    let mut pending = Vec::new();
    let mut stop = false;
    while !stop {
        let Ok(first) = rx.recv() else { break };
        for msg in std::iter::once(first).chain(rx.try_iter()) {
            match msg {
                Msg::Sync(cb) => pending.push(cb),
                Msg::Stop => stop = true,
            }
        }
        if pending.is_empty() {
            continue;
        }
        let result = if ack_before_sync { Ok(()) } else { engine.sync() };
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        stats.callbacks.fetch_add(pending.len() as u64, Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::error!(error = %e, "syncing the Raft log failed; the affected replicas will stop");
        }
        for cb in pending.drain(..) {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(format!("syncing the Raft log: {e}"))),
            };
            cb.io_completed(r);
        }
    }
}
