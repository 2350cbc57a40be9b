//! What a replica reports about itself (`zonekv status`, the placement view).

use std::collections::BTreeSet;

use openraft::ServerState;
use zonekv_engine::{Cf, Engine};
use zonekv_raft::{NodeId, RangeId, ReplicaId};

use crate::Replica;

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
    pub replica_id: ReplicaId,
    /// Node address.
    pub addr: String,
    /// Role.
    pub role: Role,
}

/// What this node knows about one of its ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeStatus {
    /// Range (Raft group) id.
    pub range_id: RangeId,
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
    /// Estimated bytes of the range's data on this node ([`Engine::approximate_size`]).
    pub approximate_bytes: u64,
    /// This replica leads the range and the range is quiesced (idle, no heartbeats).
    pub quiesced: bool,
}

/// A short name of a Raft role.
pub fn state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

impl<E: Engine> Replica<E> {
    /// What this replica knows about its range now.
    pub fn status(&self) -> RangeStatus {
        let m = self.metrics();
        let desc = self.descriptor();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<ReplicaId> = membership.voter_ids().collect();
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
            .map(|span| self.engine().approximate_size(Cf::Data, span).unwrap_or(0))
            .sum();
        let leader =
            m.current_leader.map(|id| (desc.node_of(id), membership.get_node(&id).map(|n| n.addr.clone())));
        RangeStatus {
            range_id: self.range_id(),
            start: desc.start,
            end: desc.end,
            state: state_name(m.state).to_string(),
            term: m.current_term,
            leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: m.local_committed.as_ref().map_or(0, |c| c.index),
            applied_index: m.last_applied.as_ref().map_or(0, |c| c.index),
            purged_index: m.purged.as_ref().map_or(0, |c| c.index),
            members,
            fatal_error: m.running_state.as_ref().err().map(|e| e.to_string()),
            approximate_bytes,
            quiesced: self.quiet().leads_quietly(),
        }
    }
}
