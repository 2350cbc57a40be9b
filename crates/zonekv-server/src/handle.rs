//! [`NodeHandle`]: a running node's API for embedding hosts — key-value, admin, status — as a
//! thin facade over the store (requests to replicas) and the control plane (everything that
//! changes where replicas are). The gRPC services are thin adapters over the same calls.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::atomic::Ordering;
use std::time::Duration;
use zonekv_tls::Tls;

use bytes::Bytes;
use zonekv_control::{ControlPlane, Peer, SpanPolicy};
use zonekv_engine_rocks::RocksEngine;
use zonekv_placement::scenario::PolicySpec;
use zonekv_raft::{Mutation, NodeId, RangeDescriptor, RangeId};
use zonekv_store::{CasOutcome, RangeLocation, RangeStatus, ReadConsistency, Scan, ScanPage, Store};

use crate::transport::{RaftNet, RateLimiter};
use crate::{NodeConfig, Result};

/// The engine a node runs on.
#[cfg(not(feature = "test-hooks"))]
pub(crate) type Engine = RocksEngine;
/// The engine a node runs on: in test builds, wrapped so tests can inject disk faults
/// (`NodeOptions::disk_faults`; without faults it forwards every call).
#[cfg(feature = "test-hooks")]
pub(crate) type Engine = zonekv_engine::FaultyEngine<RocksEngine>;

/// A cheap, cloneable handle to a running node's API (key-value, admin, status), for sharing
/// across tasks. Everything [`crate::Node`] offers besides start and shutdown lives here;
/// `Node` dereferences to it. A handle kept after [`crate::Node::shutdown`] keeps the storage
/// open but every call fails, since the replicas have stopped.
#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<Inner>,
}

struct Inner {
    config: NodeConfig,
    addr: String,
    store: Store<Engine>,
    control: ControlPlane<Engine>,
    net: RaftNet,
    /// The node's limit on the snapshot bytes it receives (the send side is in `net`).
    snapshot_recv: Arc<RateLimiter>,
    /// Its certificates, if it serves TLS.
    tls: Option<Tls>,
}

/// What this node knows about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Node id.
    pub node_id: NodeId,
    /// Advertised address.
    pub addr: String,
    /// Whether the node belongs to an initialised cluster.
    pub initialized: bool,
    /// One entry per range replica on this node.
    pub ranges: Vec<RangeStatus>,
    /// WAL syncs of the Raft log since start (group commit over every range).
    pub log_syncs: u64,
    /// Appends those syncs made durable.
    pub log_appends_synced: u64,
    /// Raft messages (of every range, and their answers) sent on batch streams since start.
    pub raft_frames_sent: u64,
    /// Batch messages they went out in.
    pub raft_batches_sent: u64,
    /// Batch streams from peers being served now (one per peer that reaches this node).
    pub raft_streams_from_peers: u64,
    /// This node's locality (`region=…,zone=…`; empty if none).
    pub locality: String,
    /// The other nodes as this one hears them through liveness pings, by id.
    pub peers: Vec<Peer>,
}

impl NodeHandle {
    pub(crate) fn new(
        config: NodeConfig,
        addr: String,
        store: Store<Engine>,
        control: ControlPlane<Engine>,
        net: RaftNet,
        snapshot_recv: Arc<RateLimiter>,
        tls: Option<Tls>,
    ) -> Self {
        Self { inner: Arc::new(Inner { config, addr, store, control, net, snapshot_recv, tls }) }
    }

    /// The node's TLS configuration; `None` if it runs without TLS.
    pub fn tls(&self) -> Option<&Tls> {
        self.inner.tls.as_ref()
    }

    /// Reads the node's certificates again (`zonekv start` does on SIGHUP): new connections,
    /// both ways, use the new ones. On failure nothing changes and the error says why.
    pub fn reload_certificates(&self) -> Result<()> {
        let tls = self.tls().ok_or_else(|| {
            crate::Error::Config("the node runs without TLS: no certificates to reload".into())
        })?;
        // A reload keeps the node's identity (it refuses another node's certificate).
        Ok(tls.reload()?)
    }

    /// The node's replicas (the services and shutdown use them).
    pub(crate) fn store(&self) -> &Store<Engine> {
        &self.inner.store
    }

    /// The node's control plane.
    pub(crate) fn control(&self) -> &ControlPlane<Engine> {
        &self.inner.control
    }

    /// The node's Raft transport.
    pub(crate) fn net(&self) -> &RaftNet {
        &self.inner.net
    }

    /// The node's snapshot receive limit.
    pub(crate) fn snapshot_recv(&self) -> &Arc<RateLimiter> {
        &self.inner.snapshot_recv
    }

    /// How many handles to this node exist.
    pub(crate) fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.store.node_id()
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
        self.inner.store.is_initialized().await
    }

    /// Waits until the first range has a leader known to this node; returns its node.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        Ok(self.inner.store.wait_for_leader(timeout).await?)
    }

    // Key-value.

    /// Reads a key. Returns the value (if any) and the log index the read reflects.
    pub async fn get(&self, key: &[u8], consistency: ReadConsistency) -> Result<(Option<Bytes>, u64)> {
        let s = self.inner.store.get(key, consistency).await?;
        Ok((s.value, s.index))
    }

    /// Writes a key. Returns the log index the write committed at.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<u64> {
        Ok(self.inner.store.put(key.into(), value.into()).await?.index)
    }

    /// Removes a key. Returns whether it existed and the log index.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<(bool, u64)> {
        let s = self.inner.store.delete(key.into()).await?;
        Ok((s.value, s.index))
    }

    /// Sets (`new_value = Some`) or removes (`None`) `key` if it currently holds `expected`
    /// (`None`: if it does not exist). Returns the outcome and the log index.
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        new_value: Option<Bytes>,
    ) -> Result<(CasOutcome, u64)> {
        let s = self.inner.store.compare_and_swap(key.into(), expected, new_value).await?;
        Ok((s.value, s.index))
    }

    /// Applies puts and deletes atomically; all keys must be in one range. Returns the log
    /// index.
    pub async fn batch(&self, mutations: Vec<Mutation>) -> Result<u64> {
        Ok(self.inner.store.batch(mutations).await?.index)
    }

    /// Reads a range of keys: the part in the range holding the scan's start (see
    /// [`ScanPage::range`] to continue).
    pub async fn scan(&self, scan: &Scan) -> Result<ScanPage> {
        Ok(self.inner.store.scan(scan).await?)
    }

    /// Which range holds `key` (with `before`, the keys just below `key`; with `before` and
    /// an empty key, the last range), and where, as this node knows it.
    pub fn lookup_range(&self, key: &[u8], before: bool) -> Result<RangeLocation> {
        Ok(self.inner.store.lookup_range(key, before)?)
    }

    // Ranges and replicas.

    /// Splits the range holding `key` at `key`: `[start, key)` stays, `[key, end)` becomes a new
    /// range with fresh replica ids on the same nodes. Must run on the leader of that range.
    /// Returns both halves.
    pub async fn split(&self, key: impl Into<Bytes>) -> Result<(RangeDescriptor, RangeDescriptor)> {
        Ok(self.control().splits().split(key.into()).await?)
    }

    /// The ids of the ranges this node runs a replica of, in order.
    pub fn range_ids(&self) -> Vec<RangeId> {
        self.inner.store.range_ids()
    }

    /// The ids of the ranges whose replica on this node leads. Cheap (Raft metrics only, no
    /// size estimates): for watching leadership move.
    pub fn leading(&self) -> Vec<RangeId> {
        self.inner.store.leading()
    }

    /// Moves the replica of range `range` on node `from` to node `to` (see
    /// [`zonekv_control::Mover::move_replica`]). Must run on the range's leader.
    pub async fn move_replica(
        &self,
        range: impl Into<RangeId>,
        from: impl Into<NodeId>,
        to: impl Into<NodeId>,
    ) -> Result<RangeDescriptor> {
        Ok(self.control().mover().move_replica(range.into(), from.into(), to.into()).await?)
    }

    /// Adds a replica of range `range` on node `to` (a voter if `voter`). Must run on the
    /// range's leader.
    pub async fn add_replica(
        &self,
        range: impl Into<RangeId>,
        to: impl Into<NodeId>,
        voter: bool,
    ) -> Result<RangeDescriptor> {
        Ok(self.control().mover().add_replica(range.into(), to.into(), voter).await?)
    }

    /// Removes the replica of range `range` on node `from`. Must run on the range's leader.
    pub async fn remove_replica(
        &self,
        range: impl Into<RangeId>,
        from: impl Into<NodeId>,
    ) -> Result<RangeDescriptor> {
        Ok(self.control().mover().remove_replica(range.into(), from.into()).await?)
    }

    /// Asks the leader of `range` (this node's replica) to hand leadership to its replica on
    /// node `to`, a voter.
    pub async fn transfer_leader(&self, range: impl Into<RangeId>, to: impl Into<NodeId>) -> Result<()> {
        Ok(self.control().members().transfer_leader(range.into(), to.into()).await?)
    }

    /// Why this node stopped for good, if it did: a log sync failed, so it runs no replica and
    /// must be restarted once its disk is checked (docs/disk-faults.md).
    pub fn storage_failure(&self) -> Option<String> {
        self.inner.store.failure().map(str::to_string)
    }

    /// Completes with the reason once this node has stopped for good (see
    /// [`NodeHandle::storage_failure`]); never otherwise.
    pub fn storage_failed(&self) -> impl Future<Output = String> + Send + use<> {
        self.inner.store.failed()
    }

    /// Stops this node's replica of `range` as a fatal storage error would, leaving the node
    /// and its other replicas running: fault injection for tests. The replica stays stopped
    /// (its requests fail with `ReplicaStopped`) until the node restarts.
    #[cfg(feature = "test-hooks")]
    pub async fn halt_replica(&self, range: impl Into<RangeId>) -> Result<()> {
        Ok(self.inner.store.replica(range.into())?.halt().await?)
    }

    /// Test hook: proposes `op` to this node's replica of the meta range (which must lead)
    /// with no checks, as a buggy node could: how the tests commit an op that fails at apply.
    #[cfg(feature = "test-hooks")]
    pub async fn propose_meta_unchecked(&self, op: zonekv_raft::Op) -> Result<zonekv_raft::OpResult> {
        Ok(self.inner.store.first().propose(op).await?.0)
    }

    // Cluster membership.

    /// Bootstraps a new cluster of `members` (node id, address). Must be called on one of them.
    pub async fn initialize(&self, members: &[(NodeId, String)]) -> Result<()> {
        Ok(self.control().members().initialize(members).await?)
    }

    /// Adds a node to the cluster: as a learner that catches up, then as a voter unless
    /// `learner_only`. Must run on the leader. Adding a current member again is a no-op.
    pub async fn add_node(&self, node_id: impl Into<NodeId>, addr: &str, learner_only: bool) -> Result<()> {
        Ok(self.control().members().add_node(node_id.into(), addr, learner_only).await?)
    }

    /// Removes a node from the cluster. Must run on the leader.
    pub async fn remove_node(&self, node_id: impl Into<NodeId>) -> Result<()> {
        Ok(self.control().members().remove_node(node_id.into()).await?)
    }

    // Placement.

    /// Starts (or with `cancel`, stops) decommissioning node `node_id`: the placement driver
    /// moves its replicas away and places none there.
    pub async fn decommission(&self, node_id: impl Into<NodeId>, cancel: bool) -> Result<()> {
        Ok(self.control().registrar().decommission(node_id.into(), cancel).await?)
    }

    /// The nodes being decommissioned, as this node's replica of the meta range has them.
    pub fn decommissioning(&self) -> Result<BTreeSet<NodeId>> {
        Ok(self.control().registrar().decommissioning()?)
    }

    /// Sets (or with `policy` `None` clears) the placement policy of the user keys
    /// `[start, end)` (see [`zonekv_control::Registrar::set_policy`]).
    pub async fn set_policy(
        &self,
        start: Bytes,
        end: Option<Bytes>,
        policy: Option<PolicySpec>,
    ) -> Result<()> {
        Ok(self.control().registrar().set_policy(start, end, policy).await?)
    }

    /// The span policies set, by start key.
    pub fn policies(&self) -> Result<Vec<SpanPolicy>> {
        Ok(self.control().registrar().policies()?)
    }

    // Authorization.

    /// Grants client user `user` reads (with `write`, also writes) of the keys under
    /// `prefix`, or with `revoke` removes that grant (docs/security.md).
    pub async fn grant(&self, user: &str, prefix: Bytes, write: bool, revoke: bool) -> Result<()> {
        zonekv_tls::check_user(user)?;
        Ok(self.control().registrar().grant(user, prefix, write, revoke).await?)
    }

    /// Every user's grants, as this node's copy of the meta range has them.
    pub fn grants(&self) -> Result<zonekv_control::grants::Grants> {
        Ok(self.control().registrar().grants()?)
    }

    // Status.

    /// This node's view of itself and its ranges.
    pub async fn status(&self) -> NodeStatus {
        let store = &self.inner.store;
        let ranges = store.replicas().iter().map(|r| r.status()).collect();
        let sync = store.sync_stats();
        let net = self.inner.net.stats();
        NodeStatus {
            node_id: self.id(),
            addr: self.addr().to_string(),
            initialized: store.has_members(),
            ranges,
            log_syncs: sync.syncs.load(Ordering::Relaxed),
            log_appends_synced: sync.callbacks.load(Ordering::Relaxed),
            raft_frames_sent: net.frames.load(Ordering::Relaxed),
            raft_batches_sent: net.batches.load(Ordering::Relaxed),
            raft_streams_from_peers: net.streams_in.load(Ordering::Relaxed),
            locality: self.inner.config.locality.clone(),
            peers: self.control().liveness().peers(),
        }
    }
}
