//! Cluster administration on a node ([`NodeHandle`]): bootstrap, membership changes, status.

use std::collections::{BTreeMap, BTreeSet};

use openraft::ChangeMembers;
use openraft::errors::{InitializeError, RaftError};
use zonekv_raft::{NodeId, NodeInfo};

use crate::ranges::RangeReplica;
use crate::replica::Replica;
use crate::{Error, NodeHandle, Result};

/// A replica's role in its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Votes and counts towards quorums.
    Voter,
    /// Receives the log but does not vote.
    Learner,
}

/// A member of a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The node hosting the replica.
    pub node_id: NodeId,
    /// The replica's id in the range's Raft group (the node id for the first range).
    pub replica_id: NodeId,
    /// Node address.
    pub addr: String,
    /// Role.
    pub role: Role,
}

/// What this node knows about one of its ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeStatus {
    /// Range (Raft group) id.
    pub range_id: u64,
    /// First user key of the range (inclusive).
    pub start: bytes::Bytes,
    /// First user key after the range; `None`: the end of the keyspace.
    pub end: Option<bytes::Bytes>,
    /// "leader", "follower", "candidate", "learner" or "shutdown".
    pub state: String,
    /// Current term.
    pub term: u64,
    /// The node of the leader and its address, if known.
    pub leader: Option<(NodeId, Option<String>)>,
    /// Index of the last log entry.
    pub last_log_index: u64,
    /// Index of the last committed entry this replica knows of.
    pub committed_index: u64,
    /// Index of the last applied entry.
    pub applied_index: u64,
    /// Index of the last log entry removed after a snapshot (0: none).
    pub purged_index: u64,
    /// Members, voters first.
    pub members: Vec<Member>,
    /// Why the replica stopped, if it did.
    pub fatal_error: Option<String>,
    /// Estimated bytes of the range's data on this node ([`zonekv_engine::Engine::approximate_size`]).
    pub approximate_bytes: u64,
    /// This replica leads the range and the range is quiesced (idle, no heartbeats).
    pub quiesced: bool,
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

/// Another node, as seen from this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its id.
    pub node_id: NodeId,
    /// Its locality, from its last ping.
    pub locality: String,
    /// Its pings arrive.
    pub live: bool,
}

fn range_status(range: &RangeReplica) -> RangeStatus {
    let (r, m) = (&range.replica, &range.replica.metrics());
    let desc = range.descriptor();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let mut members: Vec<Member> = membership
        .nodes()
        .map(|(id, n)| Member {
            node_id: desc.node_of(*id),
            replica_id: *id,
            addr: n.addr.clone(),
            role: if voters.contains(id) { Role::Voter } else { Role::Learner },
        })
        .collect();
    members.sort_by_key(|m| (m.role == Role::Learner, m.node_id));
    let approximate_bytes = desc
        .data_spans()
        .iter()
        .map(|span| {
            zonekv_engine::Engine::approximate_size(&r.engine, zonekv_engine::Cf::Data, span).unwrap_or(0)
        })
        .sum();
    let leader =
        m.current_leader.map(|id| (desc.node_of(id), membership.get_node(&id).map(|n| n.addr.clone())));
    RangeStatus {
        range_id: r.range,
        start: desc.start,
        end: desc.end,
        state: Replica::state_name(m).to_string(),
        term: m.current_term,
        leader,
        last_log_index: m.last_log_index.unwrap_or(0),
        committed_index: m.local_committed.as_ref().map_or(0, |c| c.index),
        applied_index: m.last_applied.as_ref().map_or(0, |c| c.index),
        purged_index: m.purged.as_ref().map_or(0, |c| c.index),
        members,
        fatal_error: m.running_state.as_ref().err().map(|e| e.to_string()),
        approximate_bytes,
        quiesced: r.quiet.leads_quietly(),
    }
}

impl NodeHandle {
    /// Bootstraps a new cluster of `members` (node id, address). Must be called on one of them.
    pub async fn initialize(&self, members: &[(NodeId, String)]) -> Result<()> {
        if members.is_empty() {
            return Err(Error::InvalidArgument("member list is empty".into()));
        }
        let mut nodes = BTreeMap::new();
        for (id, addr) in members {
            if *id == 0 {
                return Err(Error::InvalidArgument("node id 0 is reserved".into()));
            }
            if addr.parse::<std::net::SocketAddr>().is_err() && !addr.contains(':') {
                return Err(Error::InvalidArgument(format!(
                    "node {id}: {addr:?} is not a host:port address"
                )));
            }
            if nodes.insert(*id, NodeInfo::new(addr.clone())).is_some() {
                return Err(Error::InvalidArgument(format!("node id {id} is listed twice")));
            }
        }
        if !nodes.contains_key(&self.id()) {
            return Err(Error::InvalidArgument(format!(
                "this node (id {}) is not in the member list; send the request to a listed node",
                self.id()
            )));
        }
        let first = self.inner.ranges.first();
        match first.replica.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Err(Error::FailedPrecondition(
                format!("node {} already belongs to an initialized cluster", self.id()),
            )),
            Err(RaftError::APIError(e)) => Err(Error::InvalidArgument(e.to_string())),
            Err(RaftError::Fatal(f)) => {
                Err(Error::ReplicaStopped { range: first.replica.range, reason: f.to_string() })
            }
        }
    }

    /// Adds a node to every range: as a learner that catches up, then as a voter unless
    /// `learner_only`. Must run on the leader. Adding a current member again is a no-op.
    pub async fn add_node(&self, node_id: NodeId, addr: &str, learner_only: bool) -> Result<()> {
        if node_id == 0 {
            return Err(Error::InvalidArgument("node id 0 is reserved".into()));
        }
        let first = self.inner.ranges.first();
        let r = &first.replica;
        let m = r.metrics();
        let membership = m.membership_config.membership().clone();
        if let Some(existing) = membership.get_node(&node_id) {
            if existing.addr != addr {
                return Err(Error::FailedPrecondition(format!(
                    "node {node_id} is already a member at {}; node ids are never reused",
                    existing.addr
                )));
            }
            if learner_only || membership.voter_ids().any(|v| v == node_id) {
                return Ok(());
            }
        } else {
            r.leader_write(|| r.raft.add_learner(node_id, NodeInfo::new(addr), true)).await?;
        }
        if !learner_only {
            r.leader_write(|| {
                r.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
            })
            .await?;
        }
        tracing::info!(node_id, addr, learner_only, "node added");
        Ok(())
    }

    /// Removes a node from every range. Must run on the leader.
    pub async fn remove_node(&self, node_id: NodeId) -> Result<()> {
        let first = self.inner.ranges.first();
        let r = &first.replica;
        let m = r.metrics();
        let membership = m.membership_config.membership();
        if membership.get_node(&node_id).is_none() {
            return Err(Error::NotFound(format!("node {node_id} is not a member of range {}", r.range)));
        }
        let change = if membership.voter_ids().any(|v| v == node_id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
        };
        r.leader_write(|| r.raft.change_membership(change.clone(), false)).await?;
        tracing::info!(node_id, "node removed");
        Ok(())
    }

    /// Asks the leader of `range_id` to hand leadership to its replica on node `to`, a voter.
    pub async fn transfer_leader(&self, range_id: u64, to: NodeId) -> Result<()> {
        let range = self.inner.range(range_id)?;
        let r = &range.replica;
        let replica = range.descriptor().replica_on(to);
        if !r.metrics().membership_config.membership().voter_ids().any(|v| v == replica) {
            return Err(Error::InvalidArgument(format!("node {to} is not a voter of range {range_id}")));
        }
        r.ensure_leader()?;
        r.raft
            .trigger()
            .transfer_leader(replica)
            .await
            .map_err(|f| Error::ReplicaStopped { range: r.range, reason: f.to_string() })
    }

    /// Stops this node's replica of `range_id` as a fatal storage error would, leaving the
    /// node and its other replicas running: fault injection for tests. The replica stays
    /// stopped (its requests fail with `ReplicaStopped`) until the node restarts.
    pub async fn halt_replica(&self, range_id: u64) -> Result<()> {
        self.inner
            .range(range_id)?
            .replica
            .raft
            .shutdown()
            .await
            .map_err(|e| Error::ReplicaStopped { range: range_id, reason: e.to_string() })
    }

    /// The ids of the ranges whose replica on this node leads. Cheap (Raft metrics only, no
    /// size estimates): for watching leadership move.
    pub fn leading(&self) -> Vec<u64> {
        self.inner.leading()
    }

    /// This node's view of itself and its ranges.
    pub async fn status(&self) -> NodeStatus {
        let first = self.inner.ranges.first().replica.metrics();
        let ranges = self.inner.ranges.all().iter().map(|r| range_status(r)).collect();
        let sync = self.inner.starter.syncer.stats();
        let net = self.inner.starter.channels.stats();
        NodeStatus {
            node_id: self.id(),
            addr: self.addr().to_string(),
            initialized: first.membership_config.membership().voter_ids().next().is_some(),
            ranges,
            log_syncs: sync.syncs.load(std::sync::atomic::Ordering::Relaxed),
            log_appends_synced: sync.callbacks.load(std::sync::atomic::Ordering::Relaxed),
            raft_frames_sent: net.frames.load(std::sync::atomic::Ordering::Relaxed),
            raft_batches_sent: net.batches.load(std::sync::atomic::Ordering::Relaxed),
            raft_streams_from_peers: net.streams_in.load(std::sync::atomic::Ordering::Relaxed),
            locality: self.inner.config.locality.clone(),
            peers: self.inner.liveness.peers(),
        }
    }
}
