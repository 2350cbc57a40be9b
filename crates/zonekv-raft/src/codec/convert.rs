//! Conversions between openraft types and their `zonekv.raft.v1` protobuf messages.
//!
//! `*_to_pb` functions are infallible. `*_from_pb` functions that can meet invalid input (a
//! message from the network or a damaged record) return [`Error::Malformed`] naming the problem.

use std::collections::{BTreeMap, BTreeSet};

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderError, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{EntryPayload, StoredMembership as OrStoredMembership};
use zonekv_proto::raft::v1 as pb;

use crate::{
    Command, Entry, Error, LeaderId, LogId, Membership, Mutation, NodeId, NodeInfo, Op, ReplicaId, Result,
    SnapshotMeta, StoredMembership, TypeConfig, Vote,
};

fn malformed(what: impl Into<String>) -> Error {
    Error::Malformed(what.into())
}

/// LogId → protobuf.
pub fn log_id_to_pb(id: &LogId) -> pb::LogId {
    pb::LogId { term: id.leader_id.term, node_id: id.leader_id.node_id.get(), index: id.index }
}

/// Protobuf → LogId.
pub fn log_id_from_pb(id: &pb::LogId) -> LogId {
    LogId::new(LeaderId { term: id.term, node_id: ReplicaId::new(id.node_id) }, id.index)
}

fn opt_log_id(id: &Option<pb::LogId>) -> Option<LogId> {
    id.as_ref().map(log_id_from_pb)
}

/// Vote → protobuf.
pub fn vote_to_pb(v: &Vote) -> pb::Vote {
    pb::Vote { term: v.leader_id.term, node_id: v.leader_id.node_id.get(), committed: v.committed }
}

/// Protobuf → Vote.
pub fn vote_from_pb(v: &pb::Vote) -> Vote {
    Vote { leader_id: LeaderId { term: v.term, node_id: ReplicaId::new(v.node_id) }, committed: v.committed }
}

fn required_vote(v: &Option<pb::Vote>) -> Result<Vote> {
    v.as_ref().map(vote_from_pb).ok_or_else(|| malformed("missing vote"))
}

/// Membership → protobuf.
pub fn membership_to_pb(m: &Membership) -> pb::Membership {
    pb::Membership {
        configs: m
            .get_joint_config()
            .iter()
            .map(|set| pb::NodeIdSet { ids: set.iter().map(|id| id.get()).collect() })
            .collect(),
        nodes: m
            .nodes()
            .map(|(id, n)| {
                (id.get(), pb::Node { addr: n.addr.clone(), node_id: n.node_id.map_or(0, NodeId::get) })
            })
            .collect(),
    }
}

/// Protobuf → Membership; fails if a voter has no node entry or a configuration is empty.
pub fn membership_from_pb(m: pb::Membership) -> Result<Membership> {
    let configs: Vec<BTreeSet<ReplicaId>> =
        m.configs.into_iter().map(|set| set.ids.into_iter().map(ReplicaId::new).collect()).collect();
    // Node 0 on the wire: the replica id is the node id (the first range, older records).
    let node = |id: u64| (id != 0).then_some(NodeId::new(id));
    let nodes: BTreeMap<ReplicaId, NodeInfo> = m
        .nodes
        .into_iter()
        .map(|(id, n)| (ReplicaId::new(id), NodeInfo { addr: n.addr, node_id: node(n.node_id) }))
        .collect();
    Membership::new(configs, nodes).map_err(|e| malformed(format!("invalid membership: {e}")))
}

/// StoredMembership → protobuf.
pub fn stored_membership_to_pb(m: &StoredMembership) -> pb::StoredMembership {
    pb::StoredMembership {
        log_id: m.log_id().as_ref().map(log_id_to_pb),
        membership: Some(membership_to_pb(m.membership())),
    }
}

/// Protobuf → StoredMembership.
pub fn stored_membership_from_pb(m: pb::StoredMembership) -> Result<StoredMembership> {
    let membership = membership_from_pb(m.membership.unwrap_or_default())?;
    Ok(OrStoredMembership::new(opt_log_id(&m.log_id), membership))
}

/// SnapshotMeta → protobuf.
pub fn snapshot_meta_to_pb(m: &SnapshotMeta) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        last_log_id: m.last_log_id.as_ref().map(log_id_to_pb),
        last_membership: Some(stored_membership_to_pb(&m.last_membership)),
    }
}

/// Protobuf → SnapshotMeta.
pub fn snapshot_meta_from_pb(m: pb::SnapshotMeta) -> Result<SnapshotMeta> {
    Ok(SnapshotMeta {
        last_log_id: opt_log_id(&m.last_log_id),
        last_membership: stored_membership_from_pb(m.last_membership.unwrap_or_default())?,
    })
}

fn put_pb(key: &bytes::Bytes, value: &bytes::Bytes) -> pb::op::Op {
    pb::op::Op::Put(pb::op::Put { key: key.clone(), value: value.clone() })
}

fn delete_pb(key: &bytes::Bytes) -> pb::op::Op {
    pb::op::Op::Delete(pb::op::Delete { key: key.clone() })
}

/// Op → protobuf.
pub fn op_to_pb(o: &Op) -> pb::Op {
    pb::Op {
        op: Some(match o {
            Op::Put { key, value } => put_pb(key, value),
            Op::Delete { key } => delete_pb(key),
            Op::CompareAndSwap { key, expected, new_value } => pb::op::Op::Cas(pb::op::CompareAndSwap {
                key: key.clone(),
                expected: expected.clone(),
                new_value: new_value.clone(),
            }),
            Op::Batch(muts) => pb::op::Op::Batch(pb::op::Batch {
                ops: muts
                    .iter()
                    .map(|m| pb::Op {
                        op: Some(match m {
                            Mutation::Put { key, value } => put_pb(key, value),
                            Mutation::Delete { key } => delete_pb(key),
                        }),
                    })
                    .collect(),
            }),
            Op::Split(split) => pb::op::Op::Split(super::range::split_to_pb(split)),
            Op::AllocateIds { count } => pb::op::Op::AllocateIds(pb::op::AllocateIds { count: *count }),
            Op::UpdateDirectory(descs) => pb::op::Op::UpdateDirectory(pb::op::UpdateDirectory {
                descriptors: descs.iter().map(super::range::descriptor_to_pb).collect(),
            }),
            Op::SetPlacement { key, value } => {
                pb::op::Op::SetPlacement(pb::op::SetPlacement { key: key.clone(), value: value.clone() })
            }
        }),
    }
}

/// Protobuf → Op.
pub fn op_from_pb(o: pb::Op) -> Result<Op> {
    Ok(match o.op.ok_or_else(|| malformed("command op without a kind"))? {
        pb::op::Op::Put(p) => Op::Put { key: p.key, value: p.value },
        pb::op::Op::Delete(d) => Op::Delete { key: d.key },
        pb::op::Op::Cas(c) => Op::CompareAndSwap { key: c.key, expected: c.expected, new_value: c.new_value },
        pb::op::Op::Batch(b) => {
            let mut muts = Vec::with_capacity(b.ops.len());
            for m in b.ops {
                muts.push(match m.op {
                    Some(pb::op::Op::Put(p)) => Mutation::Put { key: p.key, value: p.value },
                    Some(pb::op::Op::Delete(d)) => Mutation::Delete { key: d.key },
                    _ => return Err(malformed("a batch may only hold puts and deletes")),
                });
            }
            Op::Batch(muts)
        }
        pb::op::Op::Split(split) => Op::Split(super::range::split_from_pb(split)),
        pb::op::Op::AllocateIds(a) => Op::AllocateIds { count: a.count },
        pb::op::Op::UpdateDirectory(u) => {
            Op::UpdateDirectory(u.descriptors.into_iter().map(super::range::descriptor_from_pb).collect())
        }
        pb::op::Op::SetPlacement(p) => Op::SetPlacement { key: p.key, value: p.value },
    })
}

/// Command → protobuf.
pub fn command_to_pb(c: &Command) -> pb::Command {
    pb::Command { ops: c.ops.iter().map(op_to_pb).collect() }
}

/// Protobuf → Command.
pub fn command_from_pb(c: pb::Command) -> Result<Command> {
    Ok(Command { ops: c.ops.into_iter().map(op_from_pb).collect::<Result<_>>()? })
}

/// Entry → protobuf.
pub fn entry_to_pb(e: &Entry) -> pb::Entry {
    let payload = match &e.payload {
        EntryPayload::Blank => pb::entry::Payload::Blank(pb::Empty {}),
        EntryPayload::Normal(c) => pb::entry::Payload::Normal(command_to_pb(c)),
        EntryPayload::Membership(m) => pb::entry::Payload::Membership(membership_to_pb(m)),
    };
    pb::Entry { log_id: Some(log_id_to_pb(&e.log_id)), payload: Some(payload) }
}

/// Protobuf → Entry.
pub fn entry_from_pb(e: pb::Entry) -> Result<Entry> {
    let log_id = e.log_id.as_ref().map(log_id_from_pb).ok_or_else(|| malformed("entry without a log id"))?;
    let payload = match e.payload.ok_or_else(|| malformed("entry without a payload"))? {
        pb::entry::Payload::Blank(_) => EntryPayload::Blank,
        pb::entry::Payload::Normal(c) => EntryPayload::Normal(command_from_pb(c)?),
        pb::entry::Payload::Membership(m) => EntryPayload::Membership(membership_from_pb(m)?),
    };
    Ok(Entry { log_id, payload })
}

/// AppendEntries request → protobuf (without the transport header).
pub fn append_request_to_pb(r: &AppendEntriesRequest<TypeConfig>) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest {
        header: None,
        vote: Some(vote_to_pb(&r.vote)),
        prev_log_id: r.prev_log_id.as_ref().map(log_id_to_pb),
        entries: r.entries.iter().map(entry_to_pb).collect(),
        leader_commit: r.leader_commit.as_ref().map(log_id_to_pb),
    }
}

/// Protobuf → AppendEntries request.
///
/// Refuses what no leader sends (openraft assumes it never arrives): a vote that is not
/// committed, entries that do not follow `prev_log_id` one index at a time, or log ids from a
/// later term than the vote's or going back in term.
pub fn append_request_from_pb(r: pb::AppendEntriesRequest) -> Result<AppendEntriesRequest<TypeConfig>> {
    let req: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
        vote: required_vote(&r.vote)?,
        prev_log_id: opt_log_id(&r.prev_log_id),
        entries: r.entries.into_iter().map(entry_from_pb).collect::<Result<Vec<_>>>()?,
        leader_commit: opt_log_id(&r.leader_commit),
    };
    if !req.vote.is_committed() {
        return Err(malformed("append entries with a vote that is not committed: only a leader appends"));
    }
    let term = req.vote.leader_id().term;
    let mut last = req.prev_log_id;
    for e in &req.entries {
        let expected = last.map_or(0, |l| l.index + 1);
        if e.log_id.index != expected {
            return Err(malformed(format!(
                "append entries: entry {} where {expected} must follow",
                e.log_id.index
            )));
        }
        if last.is_some_and(|l| l.leader_id.term > e.log_id.leader_id.term) {
            return Err(malformed(format!("append entries: entry {} goes back in term", e.log_id.index)));
        }
        last = Some(e.log_id);
    }
    if [last, req.leader_commit].iter().flatten().any(|l| l.leader_id.term > term) {
        return Err(malformed(format!("append entries: a log id from a term after the vote's ({term})")));
    }
    Ok(req)
}

/// AppendEntries response → protobuf.
pub fn append_response_to_pb(r: &AppendEntriesResponse<TypeConfig>) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::{PartialSuccess, Result as R};
    let result = match r {
        AppendEntriesResponse::Success => R::Success(pb::Empty {}),
        AppendEntriesResponse::PartialSuccess(m) => {
            R::PartialSuccess(PartialSuccess { matching: m.as_ref().map(log_id_to_pb) })
        }
        AppendEntriesResponse::Conflict => R::Conflict(pb::Empty {}),
        AppendEntriesResponse::HigherVote(v) => R::HigherVote(vote_to_pb(v)),
    };
    pb::AppendEntriesResponse { result: Some(result) }
}

/// Protobuf → AppendEntries response.
pub fn append_response_from_pb(r: pb::AppendEntriesResponse) -> Result<AppendEntriesResponse<TypeConfig>> {
    use pb::append_entries_response::Result as R;
    Ok(match r.result.ok_or_else(|| malformed("append-entries response without a result"))? {
        R::Success(_) => AppendEntriesResponse::Success,
        R::PartialSuccess(p) => AppendEntriesResponse::PartialSuccess(opt_log_id(&p.matching)),
        R::Conflict(_) => AppendEntriesResponse::Conflict,
        R::HigherVote(v) => AppendEntriesResponse::HigherVote(vote_from_pb(&v)),
    })
}

/// Vote request → protobuf (without the transport header).
pub fn vote_request_to_pb(r: &VoteRequest<TypeConfig>) -> pb::VoteRequest {
    pb::VoteRequest {
        header: None,
        vote: Some(vote_to_pb(&r.vote)),
        last_log_id: r.last_log_id.as_ref().map(log_id_to_pb),
        leadership_transfer: r.leadership_transfer,
    }
}

/// Protobuf → vote request.
pub fn vote_request_from_pb(r: pb::VoteRequest) -> Result<VoteRequest<TypeConfig>> {
    Ok(VoteRequest {
        vote: required_vote(&r.vote)?,
        last_log_id: opt_log_id(&r.last_log_id),
        leadership_transfer: r.leadership_transfer,
    })
}

/// Vote response → protobuf.
pub fn vote_response_to_pb(r: &VoteResponse<TypeConfig>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_to_pb(&r.vote)),
        vote_granted: r.vote_granted,
        last_log_id: r.last_log_id.as_ref().map(log_id_to_pb),
    }
}

/// Protobuf → vote response.
pub fn vote_response_from_pb(r: pb::VoteResponse) -> Result<VoteResponse<TypeConfig>> {
    Ok(VoteResponse {
        vote: required_vote(&r.vote)?,
        vote_granted: r.vote_granted,
        last_log_id: opt_log_id(&r.last_log_id),
    })
}

/// Transfer-leader request → protobuf (without the transport header).
pub fn transfer_request_to_pb(r: &TransferLeaderRequest<TypeConfig>) -> pb::TransferLeaderRequest {
    pb::TransferLeaderRequest {
        header: None,
        from_leader: Some(vote_to_pb(r.from_leader())),
        to_node_id: r.to_node_id().get(),
        last_log_id: r.last_log_id().map(log_id_to_pb),
    }
}

/// Protobuf → transfer-leader request.
pub fn transfer_request_from_pb(r: pb::TransferLeaderRequest) -> Result<TransferLeaderRequest<TypeConfig>> {
    Ok(TransferLeaderRequest::new(
        required_vote(&r.from_leader)?,
        ReplicaId::new(r.to_node_id),
        opt_log_id(&r.last_log_id),
    ))
}

/// Transfer-leader response → protobuf.
pub fn transfer_response_to_pb(r: &TransferLeaderResponse<TypeConfig>) -> pb::TransferLeaderResponse {
    use pb::transfer_leader_response::{LogNotFlushed, Result as R, VoteChanged};
    let result = match r {
        Ok(()) => R::Ok(pb::Empty {}),
        Err(TransferLeaderError::VoteChanged { expected, actual }) => R::VoteChanged(VoteChanged {
            expected: Some(vote_to_pb(expected)),
            actual: Some(vote_to_pb(actual)),
        }),
        Err(TransferLeaderError::LogNotFlushed { expected, actual }) => R::LogNotFlushed(LogNotFlushed {
            expected: expected.as_ref().map(log_id_to_pb),
            actual: actual.as_ref().map(log_id_to_pb),
        }),
    };
    pb::TransferLeaderResponse { result: Some(result) }
}

/// Protobuf → transfer-leader response.
pub fn transfer_response_from_pb(
    r: pb::TransferLeaderResponse,
) -> Result<TransferLeaderResponse<TypeConfig>> {
    use pb::transfer_leader_response::Result as R;
    Ok(match r.result.ok_or_else(|| malformed("transfer-leader response without a result"))? {
        R::Ok(_) => Ok(()),
        R::VoteChanged(v) => Err(TransferLeaderError::VoteChanged {
            expected: required_vote(&v.expected)?,
            actual: required_vote(&v.actual)?,
        }),
        R::LogNotFlushed(l) => Err(TransferLeaderError::LogNotFlushed {
            expected: opt_log_id(&l.expected),
            actual: opt_log_id(&l.actual),
        }),
    })
}

/// Stream-append result → protobuf.
pub fn stream_append_result_to_pb(
    r: &openraft::raft::StreamAppendResult<TypeConfig>,
) -> pb::StreamAppendResponse {
    use openraft::raft::StreamAppendError;
    use pb::stream_append_response::{Matching, Result as R};
    let result = match r {
        Ok(m) => R::Success(Matching { log_id: m.as_ref().map(log_id_to_pb) }),
        Err(StreamAppendError::Conflict(id)) => R::Conflict(log_id_to_pb(id)),
        Err(StreamAppendError::HigherVote(v)) => R::HigherVote(vote_to_pb(v)),
    };
    pb::StreamAppendResponse { result: Some(result) }
}

/// Protobuf → stream-append result.
pub fn stream_append_result_from_pb(
    r: pb::StreamAppendResponse,
) -> Result<openraft::raft::StreamAppendResult<TypeConfig>> {
    use openraft::raft::StreamAppendError;
    use pb::stream_append_response::Result as R;
    Ok(match r.result.ok_or_else(|| malformed("stream-append response without a result"))? {
        R::Success(m) => Ok(opt_log_id(&m.log_id)),
        R::Conflict(id) => Err(StreamAppendError::Conflict(log_id_from_pb(&id))),
        R::HigherVote(v) => Err(StreamAppendError::HigherVote(vote_from_pb(&v))),
    })
}
