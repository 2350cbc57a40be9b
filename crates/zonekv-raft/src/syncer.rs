//! Group commit for Raft log appends: one fsync for every append pending in every group.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

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
/// One syncer serves every group of a node. It stops when the last clone is dropped.
#[derive(Clone)]
pub struct LogSyncer {
    tx: mpsc::Sender<IOFlushed<TypeConfig>>,
    stats: Arc<SyncStats>,
}

impl LogSyncer {
    /// Starts the sync thread for `engine`.
    pub fn start<E: Engine>(engine: E) -> Self {
        let (tx, rx) = mpsc::channel::<IOFlushed<TypeConfig>>();
        let stats = Arc::new(SyncStats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("zonekv-log-sync".into())
            .spawn(move || run(engine, rx, &thread_stats))
            .expect("spawning the log sync thread");
        Self { tx, stats }
    }

    /// Queues `callback`, to be completed once everything written so far is durable.
    pub fn submit(&self, callback: IOFlushed<TypeConfig>) {
        if let Err(mpsc::SendError(cb)) = self.tx.send(callback) {
            cb.io_completed(Err(std::io::Error::other("log sync thread has stopped")));
        }
    }

    /// Counters since start.
    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }
}

fn run<E: Engine>(engine: E, rx: mpsc::Receiver<IOFlushed<TypeConfig>>, stats: &SyncStats) {
    let mut pending = Vec::new();
    while let Ok(first) = rx.recv() {
        pending.push(first);
        pending.extend(rx.try_iter());
        let result = engine.sync();
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
