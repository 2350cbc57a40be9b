//! The openraft type configuration shared by every ZoneKV Raft group.

use std::fmt;

use crate::{Command, CommandResponse, NodeId, ReplicaId};

/// What a group's membership records about a replica: the node that hosts it and how to
/// reach that node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    /// The node's gRPC address (`host:port`), used for Raft traffic and client redirects.
    pub addr: String,
    /// The node hosting the replica; `None` when the replica id is the node id (the first
    /// range, and every record written before replicas could move; 0 on the wire).
    pub node_id: Option<NodeId>,
}

impl NodeInfo {
    /// A replica whose id is its node's id, reachable at `addr`.
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into(), node_id: None }
    }

    /// A replica hosted by node `node_id`, reachable at `addr`.
    pub fn on_node(node_id: NodeId, addr: impl Into<String>) -> Self {
        Self { addr: addr.into(), node_id: Some(node_id) }
    }
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

openraft::declare_raft_types!(
    /// openraft types for ZoneKV groups.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = ReplicaId,
        Node = NodeInfo,
        AsyncRuntime = openraft_rt_tokio::TokioRuntime,
);

/// A Raft log id: (term, leader replica id, index).
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// The leader id of a term.
pub type LeaderId = openraft::vote::leader_id_adv::LeaderId<u64, ReplicaId>;
/// A vote: the leader id voted for and whether a quorum granted it.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A log entry.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A group configuration: voter sets and the nodes (voters and learners).
pub type Membership = openraft::Membership<ReplicaId, NodeInfo>;
/// A membership with the id of the log entry that introduced it.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// What a snapshot covers.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// The bytes of a snapshot: a [`zonekv_engine::export`] stream of the group's key span.
pub type SnapshotData = Vec<u8>;
/// A Raft group handle.
pub type Raft<E> = openraft::Raft<TypeConfig, crate::StateMachine<E>>;
