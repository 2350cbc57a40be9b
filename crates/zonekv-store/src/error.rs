//! The store's error type: what can go wrong with a request to a replica. Domain errors only;
//! the server maps them to gRPC statuses at its edge.

use zonekv_raft::{NodeId, RangeDescriptor, RangeId};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the leader of a range is, if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's node.
    pub node_id: NodeId,
    /// The leader's address, if known.
    pub addr: Option<String>,
}

/// Errors of a request to this node's replicas.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or over a limit. Nothing was changed.
    #[error("{0}")]
    InvalidArgument(String),
    /// This node's replica is not the leader of the range. Nothing was changed; retry at the
    /// leader.
    #[error("{}", not_leader_message(*range, leader))]
    NotLeader {
        /// The range the request targeted.
        range: RangeId,
        /// The leader, if known.
        leader: Option<LeaderHint>,
    },
    /// The node does not belong to an initialised cluster yet.
    #[error("node {0} is not part of an initialized cluster yet: run `zonekv init` or start it with --join")]
    NotInitialized(NodeId),
    /// The request cannot be applied in the current state (e.g. cluster already initialised).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The key is not in the range the request reached (it was split off, or the client's range
    /// cache is stale). Nothing was changed; carries the range as it is now.
    #[error("range key mismatch: the key is not in {0}; refresh the range and retry")]
    RangeKeyMismatch(Box<RangeDescriptor>),
    /// A named thing (range, replica) does not exist here.
    #[error("{0}")]
    NotFound(String),
    /// The request could not be served now (e.g. no quorum). Nothing was changed.
    #[error("{0}")]
    Unavailable(String),
    /// The node is holding as many writes as its budget allows (load shedding). Nothing was
    /// proposed; retry later, after a backoff.
    #[error("{0}")]
    Overloaded(String),
    /// The node's disk has less free space than its reserve (`storage.min-free-bytes`): the
    /// write was refused before it was proposed. Reads and deletes still work; writes resume
    /// once space is freed.
    #[error("{0}")]
    DiskFull(String),
    /// A write was proposed but its outcome is unknown (leadership changed before it was
    /// applied). It may or may not have been applied; read before retrying.
    #[error("write outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The replica stopped after a storage failure or detected corruption.
    #[error("range {range} replica on this node has stopped: {reason}")]
    ReplicaStopped {
        /// The range.
        range: RangeId,
        /// Why.
        reason: String,
    },
    /// The engine's data belongs to another node (its identity record names `owner`).
    #[error("the data belongs to node {owner}, not node {node}")]
    OtherNode {
        /// The node recorded in the data.
        owner: NodeId,
        /// The node it was opened as.
        node: NodeId,
    },
    /// The storage engine failed (open, read or write).
    #[error(transparent)]
    Storage(#[from] zonekv_engine::Error),
    /// The Raft storage layer failed or found corruption.
    #[error(transparent)]
    Raft(#[from] zonekv_raft::Error),
}

impl Error {
    /// The same error for another caller of a shared operation (one Raft entry carries many
    /// clients' writes). Keeps the kind and message; wrapped lower-level errors become
    /// [`Error::ReplicaStopped`] with their message, which is how they reach a client anyway.
    pub fn duplicate(&self) -> Error {
        match self {
            Error::InvalidArgument(m) => Error::InvalidArgument(m.clone()),
            Error::NotLeader { range, leader } => Error::NotLeader { range: *range, leader: leader.clone() },
            Error::NotInitialized(id) => Error::NotInitialized(*id),
            Error::FailedPrecondition(m) => Error::FailedPrecondition(m.clone()),
            Error::NotFound(m) => Error::NotFound(m.clone()),
            Error::RangeKeyMismatch(d) => Error::RangeKeyMismatch(d.clone()),
            Error::Unavailable(m) => Error::Unavailable(m.clone()),
            Error::Overloaded(m) => Error::Overloaded(m.clone()),
            Error::DiskFull(m) => Error::DiskFull(m.clone()),
            Error::OutcomeUnknown(m) => Error::OutcomeUnknown(m.clone()),
            Error::ReplicaStopped { range, reason } => {
                Error::ReplicaStopped { range: *range, reason: reason.clone() }
            }
            other @ (Error::Storage(_) | Error::Raft(_) | Error::OtherNode { .. }) => {
                Error::ReplicaStopped { range: RangeId::new(0), reason: other.to_string() }
            }
        }
    }

    /// True if the request surely had no effect (nothing was proposed, or it was refused
    /// before it could change anything): a client may retry it anywhere.
    pub fn not_applied(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. }
                | Error::NotInitialized(_)
                | Error::InvalidArgument(_)
                | Error::Unavailable(_)
                | Error::Overloaded(_)
                | Error::DiskFull(_)
                | Error::NotFound(_)
                | Error::FailedPrecondition(_)
                | Error::RangeKeyMismatch(_)
        )
    }

    /// True if the error means stored data is damaged.
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Storage(e) => e.is_corruption(),
            Error::Raft(e) => e.is_corruption(),
            _ => false,
        }
    }
}

fn not_leader_message(range: RangeId, leader: &Option<LeaderHint>) -> String {
    match leader {
        Some(LeaderHint { node_id, addr: Some(addr) }) => {
            format!("not leader of range {range}; the leader is node {node_id} at {addr}")
        }
        Some(LeaderHint { node_id, addr: None }) => {
            format!("not leader of range {range}; the leader is node {node_id}")
        }
        None => format!("not leader of range {range}; no leader is known yet (election in progress?)"),
    }
}
