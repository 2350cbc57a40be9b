//! [`Node`]: one ZoneKV node running inside the host process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use zonekv_engine::{Cf, Engine, Reader, WriteBatch};
use zonekv_engine_rocks::{RocksEngine, RocksOptions};
use zonekv_raft::keys::{self, MetaKey, NODE_GROUP};
use zonekv_raft::{LogSyncer, NodeId, RangeDescriptor, codec};

use crate::faults::NetFaults;
use crate::network::Channels;
use crate::proposer::BatchLimits;
use crate::ranges::{GroupStarter, Ranges, stored_ranges};
use crate::{Error, NodeConfig, Result, service};

/// The range that covers the whole keyspace until ranges split.
pub use zonekv_raft::keys::FIRST_RANGE;

/// A running ZoneKV node: storage, its replicas, and the gRPC server for clients and peers.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), zonekv_server::Error> {
/// use zonekv_server::{Node, NodeConfig, ReadConsistency};
///
/// let dir = tempfile::tempdir().unwrap();
/// let config = NodeConfig {
///     listen: "127.0.0.1:0".parse().unwrap(), // any free port
///     data_dir: dir.path().into(),
///     ..NodeConfig::default()
/// };
/// let node = Node::start(config).await?;
/// node.initialize(&[(node.id(), node.addr().to_string())]).await?;
/// node.wait_for_leader(std::time::Duration::from_secs(5)).await?;
/// node.put("user/1", "alice").await?;
/// assert_eq!(node.get(b"user/1", ReadConsistency::Linearizable).await?.0.as_deref(), Some(&b"alice"[..]));
/// node.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Node {
    handle: NodeHandle,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// A cheap, cloneable handle to a running node's API (key-value, admin, status), for sharing
/// across tasks. Everything [`Node`] offers besides start and shutdown lives here; `Node`
/// dereferences to it. A handle kept after [`Node::shutdown`] keeps the storage open but every
/// call fails, since the replicas have stopped.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) inner: Arc<NodeInner>,
}

impl std::ops::Deref for Node {
    type Target = NodeHandle;

    fn deref(&self) -> &NodeHandle {
        &self.handle
    }
}

pub(crate) struct NodeInner {
    pub(crate) config: NodeConfig,
    pub(crate) addr: String,
    /// The ranges this node runs a replica of.
    pub(crate) ranges: Ranges,
    /// Starts groups for ranges created by local splits; holds the node's engine and log
    /// syncer, which every group shares.
    pub(crate) starter: GroupStarter,
    /// When each peer node last pinged this one.
    pub(crate) liveness: crate::liveness::Liveness,
    /// The node's limit on the snapshot bytes it receives (the send side is in `Channels`).
    pub(crate) snapshot_recv: crate::rate::RateLimiter,
    /// Set when shutdown begins; long-lived server streams (replication, client streams) end
    /// on it, so the gRPC server can drain.
    pub(crate) stopping: watch::Sender<bool>,
    /// Held while a replica is created on request (`mover.rs`): one at a time.
    pub(crate) creating: tokio::sync::Mutex<()>,
    /// Ranges with a placement step running here (`driver/place.rs`): one per range.
    pub(crate) placing: std::sync::Mutex<std::collections::HashSet<u64>>,
}

impl NodeInner {
    /// Completes once the node starts shutting down.
    pub(crate) fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stopping.subscribe();
        async move {
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
    }
}

/// Settings of a node that only code can give, not a config file: test and fault-injection
/// hooks. The default is a normal node.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Fault table consulted by the Raft transport before every outgoing message.
    pub faults: Option<NetFaults>,
    /// **Unsafe, for proving the checkers can fail:** serve linearizable reads from the local
    /// applied state on any replica, without confirming leadership or a read index.
    pub unsafe_local_reads: bool,
    /// **Unsafe, for proving the crash tests can fail:** report Raft log appends durable
    /// without an fsync.
    pub unsafe_ack_before_sync: bool,
}

impl Node {
    /// Opens (or creates) the node's data directory, starts its Raft replicas and serves gRPC
    /// on `config.listen`. With `config.join` set and no cluster membership yet, also joins the
    /// cluster at that address before returning.
    pub async fn start(config: NodeConfig) -> Result<Node> {
        Self::start_with(config, NodeOptions::default()).await
    }

    /// [`Node::start`] with test hooks (see [`NodeOptions`]).
    pub async fn start_with(config: NodeConfig, options: NodeOptions) -> Result<Node> {
        config.validate()?;
        let raft_config = Arc::new(config.openraft()?);
        std::fs::create_dir_all(&config.data_dir).map_err(|e| zonekv_engine::Error::Open {
            path: config.data_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let engine = RocksEngine::open(
            &config.data_dir,
            &RocksOptions {
                block_cache_bytes: config.storage.block_cache_bytes,
                write_buffer_bytes: config.storage.write_buffer_bytes,
                max_wal_bytes: config.storage.max_wal_bytes,
                manual_wal_flush: config.storage.manual_wal_flush,
                ..RocksOptions::default()
            },
        )?;
        check_identity(&engine, config.node_id, &config)?;

        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Listen { addr: config.listen.to_string(), source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| Error::Listen { addr: config.listen.to_string(), source })?;
        let addr = config.advertise_addr.clone().unwrap_or_else(|| bound.to_string());

        let syncer = LogSyncer::start_with(engine.clone(), options.unsafe_ack_before_sync);
        let (split_tx, split_rx) = mpsc::unbounded_channel();
        let starter = GroupStarter {
            node_id: config.node_id,
            engine: engine.clone(),
            syncer: syncer.clone(),
            raft_config,
            channels: Channels::new(
                raft_message_limit(&config).saturating_add(service::BATCH_OVERHEAD),
                config.raft.snapshot_max_bytes_per_sec,
            ),
            faults: options.faults,
            limits: BatchLimits {
                max_ops: config.raft.max_ops_per_entry,
                max_bytes: config.raft.max_bytes_per_entry,
                max_in_flight: config.raft.max_proposals_in_flight,
            },
            apply_wait: Duration::from_millis(2 * config.raft.election_timeout_max_ms),
            unsafe_local_reads: options.unsafe_local_reads,
            split_tx,
        };
        let ranges = Ranges::default();
        let started = async {
            for range in stored_ranges(&engine)? {
                if let Some(r) = starter.start(range).await? {
                    ranges.insert(r);
                }
            }
            Ok::<_, Error>(())
        };
        if let Err(e) = started.await {
            // Release the storage before reporting, so the directory can be reopened.
            for r in ranges.all() {
                r.stop().await;
            }
            syncer.close();
            return Err(e);
        }
        let stopping = watch::Sender::new(false);
        let liveness =
            crate::liveness::Liveness::new(Duration::from_millis(config.raft.node_liveness_timeout_ms));
        let snapshot_recv = crate::rate::RateLimiter::new(config.raft.snapshot_max_bytes_per_sec);
        let inner = Arc::new(NodeInner {
            config,
            addr,
            ranges,
            starter,
            liveness,
            snapshot_recv,
            stopping,
            creating: Default::default(),
            placing: Default::default(),
        });
        tokio::spawn(start_split_ranges(Arc::downgrade(&inner), split_rx));
        if inner.config.raft.quiesce {
            let interval = Duration::from_millis(inner.config.raft.node_liveness_interval_ms);
            tokio::spawn(crate::liveness::run(Arc::downgrade(&inner), interval));
            let raft = &inner.config.raft;
            let pace = crate::quiesce::Pace {
                interval,
                // Long enough to span a candidate's next few campaigns (one per election timeout).
                campaign_window: Duration::from_millis(2 * raft.election_timeout_max_ms),
                // Time for one election to finish before the next survivor may start one.
                stagger: Duration::from_millis(raft.election_timeout_min_ms),
            };
            tokio::spawn(crate::quiesce::run(Arc::downgrade(&inner), pace));
        }
        let split = inner.config.split.clone();
        tokio::spawn(crate::cleanup::run(Arc::downgrade(&inner)));
        tokio::spawn(crate::driver::run(Arc::downgrade(&inner)));
        if split.range_max_keys > 0 || split.range_max_bytes > 0 {
            tokio::spawn(crate::splitter::run(Arc::downgrade(&inner), split));
        }

        let (tx, rx) = oneshot::channel();
        let router = service::router(NodeHandle { inner: inner.clone() });
        // We bind the listener ourselves (clear startup errors, port 0), so tonic's
        // `tcp_nodelay` does not apply: without TCP_NODELAY, Nagle plus delayed ACKs stall small
        // replies for 40 ms.
        let incoming =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |s| {
                s.and_then(|s| s.set_nodelay(true).map(|()| s))
            });
        let task = tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, async {
                    rx.await.ok();
                })
                .await
            {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });
        let mut node = Node { handle: NodeHandle { inner }, server: Some((tx, task)) };
        tracing::info!(node_id = node.id(), addr = %node.addr(), bound = %bound, "node started");

        if let Some(join) = node.inner.config.join.clone()
            && !node.is_initialized().await
            && let Err(e) = crate::join::join(&node.handle, &join).await
        {
            node.stop().await;
            return Err(e);
        }
        Ok(node)
    }

    /// A cloneable handle to this node's API.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Stops serving, shuts the replicas down and closes the storage. Everything acknowledged
    /// is already durable; this only releases resources.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        // Stop the Raft groups first, so requests still in flight fail fast instead of waiting.
        for r in self.inner.ranges.all() {
            r.stop().await;
        }
        self.inner.stopping.send_replace(true);
        self.inner.starter.channels.close();
        // A split may have started a range meanwhile; past `stopping`, none starts any more.
        for r in self.inner.ranges.all() {
            r.stop().await;
        }
        if let Some((tx, mut task)) = self.server.take() {
            let _ = tx.send(());
            // Graceful: connections drain and their tasks drop their handles to the node.
            if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
                tracing::warn!(node_id = self.id(), "gRPC server did not drain within 5 s; aborting it");
                task.abort();
                let _ = task.await;
            }
        }
        self.inner.starter.syncer.close();
        // Unsynced writes (applied state) may sit in the WAL buffer: a clean stop keeps them.
        if let Err(e) = self.inner.starter.engine.sync() {
            tracing::warn!(node_id = self.id(), error = %e, "final WAL sync failed");
        }
        // Storage closes when the last handle goes; wait briefly for connection tasks to let go,
        // so the data directory can be reopened as soon as this returns.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.handle.inner) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if Arc::strong_count(&self.handle.inner) > 1 {
            tracing::warn!(
                node_id = self.id(),
                "node handles are still held; storage stays open until they drop"
            );
        }
        tracing::info!(node_id = self.id(), "node stopped");
    }
}

impl NodeHandle {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.config.node_id
    }

    /// The address clients and peers use to reach this node.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// The socket the gRPC server listens on.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.inner.addr.parse().ok()
    }

    /// True once this node belongs to an initialised cluster.
    pub async fn is_initialized(&self) -> bool {
        self.inner.ranges.first().replica.raft.is_initialized().await.unwrap_or(false)
    }

    /// Waits until the first range has a leader known to this node; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        let m = self
            .inner
            .ranges
            .first()
            .replica
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .map_err(|e| Error::Unavailable(format!("no leader within {timeout:?}: {e}")))?;
        Ok(m.current_leader.expect("checked by the wait condition"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some((_, task)) = self.server.take() {
            task.abort();
        }
    }
}

impl NodeInner {
    /// The ids of the ranges whose replica on this node leads (Raft metrics only).
    pub(crate) fn leading(&self) -> Vec<u64> {
        let leads = |r: &&Arc<crate::ranges::RangeReplica>| {
            r.replica.raft.metrics().borrow_watched().state == openraft::ServerState::Leader
        };
        self.ranges.all().iter().filter(leads).map(|r| r.replica.range).collect()
    }

    /// This node's replica of `range_id`, or `NotFound` naming the range and this node.
    pub(crate) fn range(&self, range_id: u64) -> Result<Arc<crate::ranges::RangeReplica>> {
        self.ranges.get(range_id).ok_or_else(|| {
            Error::NotFound(format!("range {range_id} has no replica on node {}", self.config.node_id))
        })
    }
}

/// Waits `interval`, then returns the node, or `None` once it stops (or is gone): the loop of a
/// node's periodic background task is `while let Some(n) = next_tick(&node, interval).await`.
/// The caller holds the node only while handling one tick.
pub(crate) async fn next_tick(
    node: &std::sync::Weak<NodeInner>,
    interval: Duration,
) -> Option<Arc<NodeInner>> {
    let stopped = node.upgrade()?.stopped();
    tokio::select! {
        () = stopped => None,
        () = tokio::time::sleep(interval) => node.upgrade().filter(|n| !*n.stopping.borrow()),
    }
}

/// Starts the group of every range a local split creates. Holds the node only while starting
/// one, and ends when the node stops.
async fn start_split_ranges(
    node: std::sync::Weak<NodeInner>,
    mut rx: mpsc::UnboundedReceiver<RangeDescriptor>,
) {
    loop {
        let stopped = match node.upgrade() {
            Some(n) => n.stopped(),
            None => return,
        };
        let desc = tokio::select! {
            () = stopped => return,
            d = rx.recv() => match d { Some(d) => d, None => return },
        };
        let Some(n) = node.upgrade() else { return };
        if n.ranges.get(desc.range_id).is_some() || *n.stopping.borrow() {
            continue;
        }
        match n.starter.start(desc.range_id).await {
            Ok(Some(r)) if *n.stopping.borrow() => r.stop().await,
            Ok(Some(r)) => {
                campaign_for_new_range(&n, &r);
                n.ranges.insert(r);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(range = desc.range_id, error = %e, "starting a range created by a split failed")
            }
        }
    }
}

/// A range made by a split has no leader until its first election, one election timeout
/// (1–2 s) after it starts: requests for its keys wait that long. So one replica campaigns at
/// once instead, after a moment for the others to apply the split and start the group too:
/// the first by the hash order of replica ids (`quiesce::election_rank`), so the new ranges'
/// leaders spread over the nodes instead of piling onto the parent leader's node. Should that
/// replica not win within half an election timeout (its node is down or slow to apply), the
/// node leading the parent, which surely applied the split, campaigns.
fn campaign_for_new_range(n: &NodeInner, right: &crate::ranges::RangeReplica) {
    let replica = &right.replica;
    let (voters, start): (Vec<NodeId>, _) = {
        let desc = right.desc.borrow();
        (desc.replicas.iter().filter(|r| !r.learner).map(|r| r.replica_id).collect(), desc.start.clone())
    };
    let first = crate::quiesce::election_rank(replica.node_id, &voters, |_| true) == 0;
    let parent = n.ranges.find(n.config.node_id, |d| d.end.as_ref() == Some(&start));
    let parent_leads = parent.is_ok_and(|r| r.replica.metrics().current_leader == Some(r.replica.node_id));
    let wait = match (first, parent_leads) {
        (true, _) => Duration::from_millis(50),
        (false, true) => Duration::from_millis(50 + n.config.raft.election_timeout_min_ms / 2),
        (false, false) => return,
    };
    let raft = replica.raft.clone();
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        if !first && raft.metrics().borrow_watched().current_leader.is_some() {
            return;
        }
        if let Err(e) = raft.trigger().elect(true).await {
            tracing::debug!(error = %e, "campaigning for a range made by a split failed");
        }
    });
}

/// Raft messages carry whole log entries, each up to a full batch; `max-entries-per-append`
/// of them must fit.
pub(crate) fn raft_message_limit(config: &NodeConfig) -> usize {
    (config.max_message_bytes() + config.raft.max_bytes_per_entry)
        .saturating_mul(config.raft.max_entries_per_append as usize)
        .max(64 << 20)
}

/// Records which node owns a data directory on first start and refuses to run a directory as
/// another node: two nodes with the same identity would corrupt the cluster.
fn check_identity(engine: &RocksEngine, node_id: NodeId, config: &NodeConfig) -> Result<()> {
    let key = keys::meta_key(NODE_GROUP, MetaKey::NodeIdent);
    match engine.get(Cf::RaftMeta, &key)? {
        Some(stored) => {
            let owner = codec::decode_node_ident(&stored)?;
            if owner != node_id {
                return Err(Error::Config(format!(
                    "data directory {} belongs to node {owner}, not node {node_id}",
                    config.data_dir.display()
                )));
            }
        }
        None => {
            let mut b = WriteBatch::new();
            b.put(Cf::RaftMeta, key, codec::encode_node_ident(node_id));
            engine.write(&b, true)?;
        }
    }
    Ok(())
}
