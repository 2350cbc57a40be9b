//! Group commit for Raft log appends: one fsync for every append pending in every group; the
//! node's view of its log disk's health (docs/disk-faults.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openraft::storage::IOFlushed;
use tokio::sync::watch;
use zonekv_engine::Engine;

use crate::TypeConfig;

/// Counters of a [`LogSyncer`].
#[derive(Debug, Default)]
pub struct SyncStats {
    /// fsyncs performed (probes included).
    pub syncs: AtomicU64,
    /// Append callbacks completed.
    pub callbacks: AtomicU64,
}

/// How a [`LogSyncer`] runs.
#[derive(Debug, Clone, Copy)]
pub struct SyncerOptions {
    /// With no append to sync for this long, sync anyway (a probe), so a disk that hangs or
    /// fails while the node is idle is noticed before a write needs it. `None`: no probes.
    pub probe_interval: Option<Duration>,
    /// **Unsafe:** report appends durable without syncing anything. It exists so the crash
    /// tests can prove they catch a store that acknowledges too early; never set it otherwise.
    pub ack_before_sync: bool,
}

impl Default for SyncerOptions {
    fn default() -> Self {
        Self { probe_interval: Some(Duration::from_secs(1)), ack_before_sync: false }
    }
}

/// Makes Raft log appends durable in batches, and fails for good after one failed sync.
///
/// [`crate::LogStore::append`] writes entries to the engine without syncing (they are readable
/// at once) and hands its completion callback here. A dedicated thread waits for callbacks,
/// takes every one that is pending, syncs the engine's write-ahead log once, and only then
/// reports the appends durable. A sync covers every write made before it, so ordering holds
/// across groups, votes, truncations and purges.
///
/// **A failed sync is final.** After an fsync error the kernel may already have dropped the
/// dirty pages it could not write, so a later sync that succeeds proves nothing about the
/// writes before it (PostgreSQL's "fsyncgate"). The syncer latches the first failure: the
/// appends waiting on that sync, and every append after it, fail with it, and no sync runs
/// again. The store stops every replica when it sees the latch ([`LogSyncer::failed`]); a
/// restart replays the log and finds what really survived.
///
/// **Stalls are visible.** [`LogSyncer::sync_running_for`] says how long the sync in progress
/// has taken; node liveness stops vouching for a node whose syncs hang.
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
    health: Arc<Health>,
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
    /// A log append's completion.
    Sync(IOFlushed<TypeConfig>),
    /// An explicit [`LogSyncer::sync`] (votes): synced even with `ack_before_sync`, which is
    /// about appends only.
    Durable(IOFlushed<TypeConfig>),
    Stop,
}

/// What the sync thread publishes: the start of the sync in progress, the latched failure.
struct Health {
    epoch: Instant,
    /// Microseconds from `epoch` to the start of the sync in progress, plus one; 0: idle.
    running_since: AtomicU64,
    failure: watch::Sender<Option<String>>,
}

impl Health {
    fn new() -> Self {
        Self { epoch: Instant::now(), running_since: AtomicU64::new(0), failure: watch::Sender::new(None) }
    }

    fn begin(&self) {
        let now = self.epoch.elapsed().as_micros() as u64 + 1;
        self.running_since.store(now, Ordering::Release);
    }

    fn end(&self) {
        self.running_since.store(0, Ordering::Release);
    }

    fn running_for(&self) -> Option<Duration> {
        match self.running_since.load(Ordering::Acquire) {
            0 => None,
            since => Some(self.epoch.elapsed().saturating_sub(Duration::from_micros(since - 1))),
        }
    }

    fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }
}

impl LogSyncer {
    /// Starts the sync thread for `engine` with the default options.
    pub fn start<E: Engine>(engine: E) -> Self {
        Self::start_with(engine, SyncerOptions::default())
    }

    /// Starts the sync thread for `engine`.
    pub fn start_with<E: Engine>(engine: E, options: SyncerOptions) -> Self {
        if options.ack_before_sync {
            tracing::warn!("UNSAFE: Raft log appends are reported durable without an fsync");
        }
        let (tx, rx) = mpsc::channel::<Msg>();
        let stats = Arc::new(SyncStats::default());
        let health = Arc::new(Health::new());
        let (thread_stats, thread_health) = (stats.clone(), health.clone());
        let thread = std::thread::Builder::new()
            .name("zonekv-log-sync".into())
            .spawn(move || run(engine, rx, &thread_stats, &thread_health, options))
            .expect("spawning the log sync thread");
        Self { inner: Arc::new(Inner { tx, stats, health, thread: Mutex::new(Some(thread)) }) }
    }

    /// Queues `callback`, to be completed once everything written so far is durable (or with
    /// the latched failure).
    pub fn submit(&self, callback: IOFlushed<TypeConfig>) {
        if let Err(mpsc::SendError(Msg::Sync(cb))) = self.inner.tx.send(Msg::Sync(callback)) {
            cb.io_completed(Err(std::io::Error::other("log sync thread has stopped")));
        }
    }

    /// Waits until everything written so far is durable, in the next group commit (or fails
    /// with the latched failure). The waiting task does not block its thread.
    pub async fn sync(&self) -> std::io::Result<()> {
        use openraft::type_config::TypeConfigExt;
        let (tx, rx) = TypeConfig::oneshot();
        if let Err(mpsc::SendError(Msg::Durable(cb))) =
            self.inner.tx.send(Msg::Durable(IOFlushed::signal(tx)))
        {
            cb.io_completed(Err(std::io::Error::other("log sync thread has stopped")));
        }
        rx.await.unwrap_or_else(|_| Err(std::io::Error::other("log sync thread has stopped")))
    }

    /// Latches `reason` as if a sync had failed (unless one already has): no sync runs again,
    /// every waiting and later append fails, and the store stops every replica. For a Raft
    /// log write that failed (a full disk): a replica must not run on a log it could not
    /// write, and the other groups share the disk.
    pub fn fail_stop(&self, reason: String) {
        let latched = self.inner.health.failure.send_if_modified(|failure| {
            if failure.is_some() {
                return false;
            }
            *failure = Some(reason.clone());
            true
        });
        if latched {
            tracing::error!("{reason}");
        }
    }

    /// The latched failure: why syncing stopped for good, if it did.
    pub fn failure(&self) -> Option<String> {
        self.inner.health.failure()
    }

    /// Completes with the reason once a sync has failed (at once if one already has), or with
    /// `None` once the syncer is gone without failing. Holds no handle to the syncer.
    pub fn failed(&self) -> impl Future<Output = Option<String>> + Send + 'static {
        let mut rx = self.inner.health.failure.subscribe();
        async move { rx.wait_for(Option::is_some).await.ok().and_then(|r| r.clone()) }
    }

    /// How long the sync in progress has been running; `None` when no sync runs.
    pub fn sync_running_for(&self) -> Option<Duration> {
        self.inner.health.running_for()
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

fn run<E: Engine>(
    engine: E,
    rx: mpsc::Receiver<Msg>,
    stats: &SyncStats,
    health: &Health,
    options: SyncerOptions,
) {
    let wait = options.probe_interval.unwrap_or(Duration::MAX);
    let mut pending = Vec::new();
    let mut stop = false;
    let mut forced = false;
    while !stop {
        let first = match rx.recv_timeout(wait) {
            Ok(msg) => Some(msg),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        // A timeout with nothing pending is a probe; a stop with nothing pending is not.
        let probe = first.is_none();
        for msg in first.into_iter().chain(rx.try_iter()) {
            match msg {
                Msg::Sync(cb) => pending.push(cb),
                Msg::Durable(cb) => {
                    pending.push(cb);
                    forced = true;
                }
                Msg::Stop => stop = true,
            }
        }
        if pending.is_empty() && !probe {
            continue;
        }
        if let Some(reason) = health.failure() {
            complete(&mut pending, stats, Err(&reason));
            continue;
        }
        health.begin();
        let result =
            if options.ack_before_sync && !std::mem::take(&mut forced) { Ok(()) } else { engine.sync() };
        health.end();
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => complete(&mut pending, stats, Ok(())),
            Err(e) => {
                let reason = format!(
                    "syncing the Raft log failed ({e}); no sync is retried after a failure, so the node \
                     stops: {}, then restart it (the restart replays what survived)",
                    disk_remedy(&e)
                );
                tracing::error!(error = %e, "{reason}");
                // The first failure stands (a failed log write may have latched one already).
                health.failure.send_if_modified(|f| {
                    if f.is_some() {
                        return false;
                    }
                    *f = Some(reason.clone());
                    true
                });
                complete(&mut pending, stats, Err(&reason));
            }
        }
    }
}

/// What an operator does about a failed write or sync: free space for a full disk, else check
/// the disk.
pub(crate) fn disk_remedy(e: &zonekv_engine::Error) -> &'static str {
    match e {
        zonekv_engine::Error::NoSpace(_) => "free space on the disk",
        _ => "check the disk",
    }
}

fn complete(pending: &mut Vec<IOFlushed<TypeConfig>>, stats: &SyncStats, result: Result<(), &str>) {
    stats.callbacks.fetch_add(pending.len() as u64, Ordering::Relaxed);
    for cb in pending.drain(..) {
        cb.io_completed(result.map_err(std::io::Error::other));
    }
}

#[cfg(test)]
mod tests {
    use zonekv_engine::{DiskFaults, FaultyEngine, MemEngine};

    use super::*;

    fn syncer(probe: Option<Duration>) -> (LogSyncer, DiskFaults) {
        let faults = DiskFaults::new();
        let engine = FaultyEngine::new(MemEngine::new(), faults.clone());
        let options = SyncerOptions { probe_interval: probe, ..SyncerOptions::default() };
        (LogSyncer::start_with(engine, options), faults)
    }

    /// An append's completion, as `LogStore::append` hands it over.
    async fn append(s: &LogSyncer) -> Result<(), std::io::Error> {
        use openraft::type_config::TypeConfigExt;
        let (tx, rx) = TypeConfig::oneshot();
        s.submit(IOFlushed::signal(tx));
        rx.await.expect("the syncer completes every callback")
    }

    #[tokio::test]
    async fn appends_are_reported_durable_after_a_sync() {
        let (s, faults) = syncer(None);
        append(&s).await.unwrap();
        append(&s).await.unwrap();
        assert!(s.stats().syncs.load(Ordering::Relaxed) >= 1);
        assert_eq!(s.failure(), None);
        assert_eq!(faults.failed_syncs(), 0);
    }

    #[tokio::test]
    async fn a_failed_sync_fails_every_later_append_even_after_the_disk_heals() {
        let (s, faults) = syncer(None);
        append(&s).await.unwrap();
        faults.fail_syncs(true);
        let err = append(&s).await.unwrap_err();
        assert!(err.to_string().contains("syncing the Raft log failed"), "{err}");
        // The device works again; the syncer must not believe it (fsyncgate).
        faults.fail_syncs(false);
        let syncs = s.stats().syncs.load(Ordering::Relaxed);
        for _ in 0..3 {
            assert!(append(&s).await.is_err(), "an append after a failed sync was reported durable");
        }
        assert_eq!(s.stats().syncs.load(Ordering::Relaxed), syncs, "no sync ran after the failure");
        assert!(s.failure().is_some_and(|r| r.contains("stops")));
        let reason = tokio::time::timeout(Duration::from_secs(1), s.failed()).await.unwrap().unwrap();
        assert!(reason.contains("EIO") || reason.contains("Input/output error"), "{reason}");
        s.close();
    }

    #[tokio::test]
    async fn a_failure_latched_from_outside_stops_syncing_like_a_failed_sync() {
        let (s, faults) = syncer(None);
        append(&s).await.unwrap();
        let syncs = s.stats().syncs.load(Ordering::Relaxed);
        s.fail_stop("writing the Raft log failed (no space left)".into());
        s.fail_stop("a second reason is not recorded".into());
        assert!(append(&s).await.unwrap_err().to_string().contains("no space left"));
        assert!(s.sync().await.is_err(), "an explicit sync fails too");
        assert_eq!(s.stats().syncs.load(Ordering::Relaxed), syncs, "no sync ran after the latch");
        assert_eq!(faults.failed_syncs(), 0);
        let reason = tokio::time::timeout(Duration::from_secs(1), s.failed()).await.unwrap().unwrap();
        assert!(reason.contains("no space left"), "the first reason stands: {reason}");
    }

    #[tokio::test]
    async fn votes_are_synced_even_when_appends_are_acknowledged_early() {
        let faults = DiskFaults::new();
        let engine = FaultyEngine::new(MemEngine::new(), faults.clone());
        let options = SyncerOptions { probe_interval: None, ack_before_sync: true };
        let s = LogSyncer::start_with(engine, options);
        faults.fail_syncs(true);
        append(&s).await.expect("the unsafe switch acknowledges appends without a sync");
        assert_eq!(faults.failed_syncs(), 0);
        assert!(s.sync().await.is_err(), "a vote's sync must really run");
        assert_eq!(faults.failed_syncs(), 1);
        assert!(s.sync().await.is_err(), "and the failure latches");
    }

    #[tokio::test]
    async fn an_idle_syncer_probes_the_disk_and_latches_its_failure() {
        let (s, faults) = syncer(Some(Duration::from_millis(20)));
        faults.fail_syncs(true);
        let reason = tokio::time::timeout(Duration::from_secs(5), s.failed())
            .await
            .expect("a probe found the failing disk without any append")
            .unwrap();
        assert!(reason.contains("syncing the Raft log failed"), "{reason}");
    }

    #[tokio::test]
    async fn a_sync_in_progress_reports_how_long_it_has_run() {
        let (s, faults) = syncer(None);
        assert_eq!(s.sync_running_for(), None);
        faults.stall_syncs(Duration::from_millis(600));
        let s2 = s.clone();
        let waiting = tokio::spawn(async move { append(&s2).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let running = s.sync_running_for().expect("a sync is running");
        assert!(running >= Duration::from_millis(200), "{running:?}");
        faults.stall_syncs(Duration::ZERO);
        waiting.await.unwrap().unwrap();
        assert_eq!(s.sync_running_for(), None);
    }
}
