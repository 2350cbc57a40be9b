//! [`Store`]: the replicas of one node on one engine. Opening and closing it, and finding the
//! replica a request is for. Starting, creating and destroying replicas is in `lifecycle.rs`,
//! the routed key-value API in `kv.rs`.

mod kv;
mod lifecycle;

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::{mpsc, watch};
use zonekv_engine::Engine;
use zonekv_raft::keys::FIRST_RANGE;
use zonekv_raft::{LogSyncer, NodeId, RangeDescriptor, RangeId, ReplicaId, SyncStats, SyncerOptions};

pub use self::kv::{CasOutcome, RangeLocation, Served, validate};
pub use self::lifecycle::stored_ranges;
use crate::budget::MemoryBudget;
use crate::replicas::Replicas;
use crate::space::SpaceGuard;
use crate::{Error, Replica, Result, StoreConfig, Transport};

/// The replicas of one node, all on one engine and one log syncer. Cheap to clone (a shared
/// handle); every clone sees the same replicas.
pub struct Store<E: Engine> {
    inner: Arc<Inner<E>>,
}

impl<E: Engine> Clone for Store<E> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

struct Inner<E: Engine> {
    config: StoreConfig,
    engine: E,
    /// Group commit of every replica's log appends.
    syncer: LogSyncer,
    transport: Arc<dyn Transport>,
    replicas: Replicas<E>,
    /// Told of every range a local split creates (its group is started from here).
    split_tx: mpsc::UnboundedSender<RangeDescriptor>,
    /// Held while a replica is created or destroyed: one at a time, so a creation never meets
    /// a half-done deletion of an overlapping span.
    lifecycle: tokio::sync::Mutex<()>,
    /// Set when shutdown begins: no replica starts any more.
    stopping: watch::Sender<bool>,
    /// The writes every replica's proposer holds, against `batch.max-queued-bytes`.
    write_budget: Arc<MemoryBudget>,
    /// The disk-space reserve client writes must leave (`min_free_bytes`).
    space: SpaceGuard,
    /// Why the store stopped for good (a failed log sync): set once, then every replica stops.
    failure: std::sync::OnceLock<String>,
    /// When a missed replica of each range was last looked for (`adopt_missed_replica`).
    adoptions: std::sync::Mutex<std::collections::HashMap<RangeId, std::time::Instant>>,
}

impl<E: Engine> Store<E> {
    /// Opens the store on `engine`: checks that the data belongs to `config.node_id` (recording
    /// it on first open), then starts a replica for every range stored there (the first range
    /// always). Replicas talk to their peers through `transport`.
    pub async fn open(engine: E, config: StoreConfig, transport: Arc<dyn Transport>) -> Result<Store<E>> {
        lifecycle::check_identity(&engine, config.node_id)?;
        let syncer = LogSyncer::start_with(
            engine.clone(),
            SyncerOptions { ack_before_sync: config.hooks.ack_before_sync(), ..SyncerOptions::default() },
        );
        let sync_failed = syncer.failed();
        let (split_tx, split_rx) = mpsc::unbounded_channel();
        let write_budget = MemoryBudget::new(config.batch.max_queued_bytes);
        let store = Store {
            inner: Arc::new(Inner {
                write_budget,
                space: SpaceGuard::new(config.node_id, config.min_free_bytes),
                config,
                engine,
                syncer,
                transport,
                replicas: Replicas::default(),
                split_tx,
                lifecycle: Default::default(),
                stopping: watch::Sender::new(false),
                failure: std::sync::OnceLock::new(),
                adoptions: Default::default(),
            }),
        };
        tokio::spawn(fail_stop(Arc::downgrade(&store.inner), sync_failed));
        if let Err(e) = store.start_stored().await {
            // Release the storage before reporting, so the directory can be reopened.
            store.shutdown().await;
            store.close();
            return Err(e);
        }
        // A weak handle: a store dropped without `shutdown` still goes away (its replicas'
        // state machines hold the other ends of the channel, so it closes then).
        tokio::spawn(lifecycle::start_split_ranges(Arc::downgrade(&store.inner), split_rx));
        Ok(store)
    }

    /// The node this store belongs to.
    pub fn node_id(&self) -> NodeId {
        self.inner.config.node_id
    }

    /// The engine.
    pub fn engine(&self) -> &E {
        &self.inner.engine
    }

    /// How the store runs.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Why this store stopped for good, if it did: a log sync failed, so no replica runs and
    /// the node must be restarted (docs/disk-faults.md).
    pub fn failure(&self) -> Option<&str> {
        self.inner.failure.get().map(String::as_str)
    }

    /// Completes with the reason once the store has stopped for good (never, otherwise).
    pub fn failed(&self) -> impl Future<Output = String> + Send + use<E> {
        let mut rx = self.inner.stopping.subscribe();
        let inner = Arc::downgrade(&self.inner);
        async move {
            loop {
                if let Some(reason) = inner.upgrade().and_then(|i| i.failure.get().cloned()) {
                    return reason;
                }
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }

    /// How long the log sync in progress has been running, if longer than
    /// `max_sync_stall`: the node's disk is stalled, so requests are refused and liveness
    /// stops vouching for the node until the sync completes (a gray failure).
    pub fn io_stalled(&self) -> Option<Duration> {
        self.inner.syncer.sync_running_for().filter(|d| *d > self.inner.config.max_sync_stall)
    }

    /// The log syncer's counters (syncs, appends made durable).
    pub fn sync_stats(&self) -> &SyncStats {
        self.inner.syncer.stats()
    }

    /// This node's replica of `range`, if it has one.
    pub fn try_replica(&self, range: RangeId) -> Option<Replica<E>> {
        self.inner.replicas.get(range)
    }

    /// This node's replica of `range`, or `NotFound` naming the range and this node.
    pub fn replica(&self, range: RangeId) -> Result<Replica<E>> {
        self.try_replica(range).ok_or_else(|| {
            Error::NotFound(format!("range {range} has no replica on node {}", self.node_id()))
        })
    }

    /// The first range's replica (the meta range); every node runs one.
    pub fn first(&self) -> Replica<E> {
        self.try_replica(FIRST_RANGE).expect("the first range is started with the store")
    }

    /// Every replica, by range id.
    pub fn replicas(&self) -> Vec<Replica<E>> {
        self.inner.replicas.all()
    }

    /// How many replicas run here.
    pub fn replica_count(&self) -> usize {
        self.inner.replicas.len()
    }

    /// The ids of the ranges this node runs a replica of, in order.
    pub fn range_ids(&self) -> Vec<RangeId> {
        self.replicas().iter().map(Replica::range_id).collect()
    }

    /// The ids of the ranges whose replica here leads (Raft metrics only: cheap).
    pub fn leading(&self) -> Vec<RangeId> {
        self.replicas().iter().filter(|r| r.leads()).map(Replica::range_id).collect()
    }

    /// `Unavailable`, naming the cause, once the store has stopped for good or while its disk
    /// is stalled: a request would wait on the disk, so it is refused at once (nothing done)
    /// and the client tries another node.
    fn check_running(&self) -> Result<()> {
        if let Some(reason) = self.failure() {
            return Err(Error::Unavailable(format!("node {} has stopped: {reason}", self.node_id())));
        }
        if let Some(d) = self.io_stalled() {
            return Err(Error::Unavailable(format!(
                "node {}: its disk is stalled (a log sync has been running for {d:?}); nothing was done, ask another node",
                self.node_id()
            )));
        }
        Ok(())
    }

    /// The replica of the range holding user key `key`, as of its last apply.
    pub fn replica_for_key(&self, key: &[u8]) -> Result<Replica<E>> {
        self.check_running()?;
        self.inner.replicas.for_key(key).ok_or_else(|| {
            Error::Unavailable(format!(
                "node {} holds no replica of the range of key {key:?} (now); ask another node",
                self.node_id()
            ))
        })
    }

    /// The replica whose descriptor satisfies `pred`.
    pub fn find(&self, pred: impl Fn(&RangeDescriptor) -> bool) -> Result<Replica<E>> {
        self.check_running()?;
        self.inner.replicas.find(pred).ok_or_else(|| {
            Error::Unavailable(format!(
                "node {} holds no replica of the range asked for; ask another node",
                self.node_id()
            ))
        })
    }

    /// The replica a Raft message for replica `to` of `range` is for: it must be this node's
    /// replica of the range, and running.
    pub fn replica_for_message(&self, range: RangeId, to: ReplicaId) -> Result<Replica<E>> {
        let r = self.replica(range).inspect_err(|_| self.adopt_missed_replica(range, to))?;
        if to != r.replica_id() {
            return Err(Error::FailedPrecondition(format!(
                "raft message for replica {to} of range {range} reached node {}, whose replica is {}: \
                 check the addresses in the membership",
                self.node_id(),
                r.replica_id()
            )));
        }
        // Stopped (node shutdown, or a fatal storage error): the sender sees it as
        // unreachable, and openraft is not asked to queue a message it would only log as
        // undeliverable.
        if let Some(stopped) = r.stopped() {
            return Err(Error::Unavailable(stopped.to_string()));
        }
        Ok(r)
    }

    /// True once this node belongs to an initialised cluster.
    pub async fn is_initialized(&self) -> bool {
        self.first().raft().is_initialized().await.unwrap_or(false)
    }

    /// Whether the first range names any voter (the cluster is initialised, as the metrics
    /// say; cheap).
    pub fn has_members(&self) -> bool {
        self.first().with_metrics(|m| m.membership_config.membership().voter_ids().next().is_some())
    }

    /// Waits (at most `timeout`) until the first range's Raft metrics pass `done`, which
    /// `what` describes in the error; returns them.
    async fn wait_for_first(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&openraft::RaftMetrics<zonekv_raft::TypeConfig>) -> bool + Send,
    ) -> Result<openraft::RaftMetrics<zonekv_raft::TypeConfig>> {
        self.first()
            .raft()
            .wait(Some(timeout))
            .metrics(done, what)
            .await
            .map_err(|e| Error::Unavailable(format!("not {what} within {timeout:?}: {e}")))
    }

    /// Waits until the first range has a leader known to this node; returns its node.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        let m = self.wait_for_first(timeout, "a leader known", |m| m.current_leader.is_some()).await?;
        let leader = m.current_leader.expect("checked by the wait condition");
        Ok(self.first().node_of(leader))
    }

    /// Waits until this node has the cluster's membership (a joining node gets it with the
    /// leader's log or a snapshot of the first range).
    pub async fn wait_for_members(&self, timeout: Duration) -> Result<()> {
        let has = |m: &openraft::RaftMetrics<zonekv_raft::TypeConfig>| {
            m.membership_config.membership().voter_ids().next().is_some()
        };
        self.wait_for_first(timeout, "the membership received", has).await.map(drop)
    }

    /// Bootstraps a cluster of this node alone (reachable at `addr`) and waits until its first
    /// range leads: for single-node use and tests.
    pub async fn bootstrap_alone(&self, addr: &str) -> Result<()> {
        let me = ReplicaId::of_first_range(self.node_id());
        let members = std::collections::BTreeMap::from([(me, zonekv_raft::NodeInfo::new(addr))]);
        let first = self.first();
        first.initialize(members).await?;
        self.wait_for_first(Duration::from_secs(10), "this node leading", |m| m.current_leader == Some(me))
            .await?;
        // And applied its membership: the descriptor names the replica (splits plan on it).
        let named = first
            .watch_descriptor()
            .wait_for(|d| d.replicas.iter().any(|r| r.replica_id == me))
            .await
            .is_ok();
        if named {
            Ok(())
        } else {
            Err(Error::Unavailable("the first range stopped while bootstrapping".into()))
        }
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        *self.inner.stopping.borrow()
    }

    /// Completes once shutdown begins.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + use<E> {
        let mut rx = self.inner.stopping.subscribe();
        async move {
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
    }

    /// Waits `interval` and says whether the store still runs (false at once when it stops):
    /// the pace of a background loop, `while store.tick(interval).await { … }`.
    pub async fn tick(&self, interval: Duration) -> bool {
        tokio::select! {
            () = self.stopped() => false,
            () = tokio::time::sleep(interval) => !self.is_stopping(),
        }
    }

    /// Marks the store as stopping without waiting for anything: background loops and
    /// long-lived streams end, no replica starts any more (the replicas themselves stop with
    /// [`Store::shutdown`], or when the last handle goes). For a node dropped without a
    /// shutdown.
    pub fn begin_shutdown(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// Stops every replica (requests in flight fail fast) and starts no more. Idempotent. The
    /// storage stays open until [`Store::close`].
    pub async fn shutdown(&self) {
        for r in self.replicas() {
            r.stop().await;
        }
        self.inner.stopping.send_replace(true);
        // A split may have started a range meanwhile; past `stopping`, none starts any more.
        for r in self.replicas() {
            r.stop().await;
        }
    }

    /// After [`Store::shutdown`]: stops the log syncer and syncs what the engine buffered
    /// (applied state), so a clean stop keeps it. The engine itself closes when the last
    /// handle to it goes.
    pub fn close(&self) {
        self.inner.syncer.close();
        // No sync after a failed one (see `LogSyncer`); the syncer's latch is set before the
        // store's `failure`, which its fail-stop task records a moment later.
        if self.inner.syncer.failure().is_some() || self.failure().is_some() {
            return;
        }
        if let Err(e) = self.inner.engine.sync() {
            tracing::warn!(node_id = %self.node_id(), error = %e, "final WAL sync failed");
        }
    }

    /// How many handles to this store exist (the storage closes when the last one goes).
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// The first range's applied log id: changes whenever the meta range (the directory, the
    /// registry) applies something.
    pub fn meta_applied(&self) -> Option<zonekv_raft::LogId> {
        self.first().raft().metrics().borrow_watched().last_applied
    }
}

/// Stops the store for good once its log syncer fails: every replica stops (a replica with an
/// append in flight has already stopped on its error), requests get `Unavailable` naming the
/// cause, background loops end, and liveness pings stop, so peers elect leaders elsewhere.
async fn fail_stop<E: Engine>(
    inner: std::sync::Weak<Inner<E>>,
    sync_failed: impl Future<Output = Option<String>>,
) {
    let Some(reason) = sync_failed.await else { return };
    let Some(inner) = inner.upgrade() else { return };
    let store = Store { inner };
    tracing::error!(node_id = %store.node_id(), "the node stops every replica: a log sync failed");
    let _ = store.inner.failure.set(reason);
    store.shutdown().await;
}
