//! Checksummed encoding of the Raft records ZoneKV stores, and openraft ↔ protobuf conversion.
//!
//! A stored record is `crc32(payload):u32be ++ payload`, where the payload is the protobuf
//! encoding of a `zonekv.raft.v1` message. [`unframe`] checks the checksum before anything is
//! decoded; a mismatch is reported, never skipped.

mod convert;
mod range;

pub use convert::*;
use prost::Message;
pub use range::*;
use zonekv_proto::raft::v1 as pb;

use crate::{Entry, Error, LogId, NodeId, Op, RangeId, Result, StoredMembership, Vote};

/// Wraps `payload` in a CRC32 frame.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks a CRC32 frame and returns its payload. `what` names the record in the error.
pub fn unframe<'a>(group: RangeId, what: &dyn Fn() -> String, stored: &'a [u8]) -> Result<&'a [u8]> {
    let corrupt = |why: &str| Error::Corruption { group, what: format!("{}: {why}", what()) };
    if stored.len() < 4 {
        return Err(corrupt("record shorter than its checksum"));
    }
    let (crc, payload) = stored.split_at(4);
    if crc32fast::hash(payload) != u32::from_be_bytes(crc.try_into().expect("4 bytes")) {
        return Err(corrupt("CRC32 mismatch"));
    }
    Ok(payload)
}

fn decode_msg<M: Message + Default>(group: RangeId, what: &dyn Fn() -> String, stored: &[u8]) -> Result<M> {
    let payload = unframe(group, what, stored)?;
    M::decode(payload).map_err(|e| Error::Corruption { group, what: format!("{}: {e}", what()) })
}

fn corrupt(group: RangeId, what: &dyn Fn() -> String, e: Error) -> Error {
    match e {
        Error::Malformed(m) => Error::Corruption { group, what: format!("{}: {m}", what()) },
        other => other,
    }
}

/// Encodes a log entry for the `raft-log` column family.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    frame(&entry_to_pb(entry).encode_to_vec())
}

/// Bytes `entry` adds to a replication message: its encoding and the field framing around it
/// (its field's tag is one byte, as every tag below 16 is).
pub fn entry_wire_bytes(entry: &Entry) -> usize {
    prost::encoding::message::encoded_len(1, &entry_to_pb(entry))
}

/// Bytes `op` adds to a log entry: its encoding and the field framing around it. What the
/// proposer counts when it fills an entry, so the entry's size on the wire is known.
pub fn op_wire_bytes(op: &Op) -> usize {
    prost::encoding::message::encoded_len(1, &op_to_pb(op))
}

/// How many of `entries`, from the first, fit in `max_bytes` on the wire; at least one (a
/// single entry larger than the cap still goes, alone).
pub fn prefix_within(entries: &[Entry], max_bytes: usize) -> usize {
    let mut total = 0usize;
    for (i, e) in entries.iter().enumerate() {
        total = total.saturating_add(entry_wire_bytes(e));
        if total > max_bytes {
            return i.max(1);
        }
    }
    entries.len()
}

/// Decodes and verifies a stored log entry.
pub fn decode_entry(group: RangeId, index: u64, stored: &[u8]) -> Result<Entry> {
    let what = || format!("log entry {index}");
    let msg: pb::Entry = decode_msg(group, &what, stored)?;
    let entry = entry_from_pb(msg).map_err(|e| corrupt(group, &what, e))?;
    if entry.log_id.index != index {
        return Err(Error::Corruption {
            group,
            what: format!("log entry stored at index {index} claims index {}", entry.log_id.index),
        });
    }
    Ok(entry)
}

/// Encodes a vote for the `raft-meta` column family.
pub fn encode_vote(vote: &Vote) -> Vec<u8> {
    frame(&vote_to_pb(vote).encode_to_vec())
}

/// Decodes and verifies a stored vote.
pub fn decode_vote(group: RangeId, stored: &[u8]) -> Result<Vote> {
    let msg: pb::Vote = decode_msg(group, &|| "vote".to_string(), stored)?;
    Ok(vote_from_pb(&msg))
}

/// Encodes a log id (committed, purged) for the `raft-meta` column family.
pub fn encode_log_id(id: &LogId) -> Vec<u8> {
    frame(&log_id_to_pb(id).encode_to_vec())
}

/// Decodes and verifies a stored log id.
pub fn decode_log_id(group: RangeId, what: &str, stored: &[u8]) -> Result<LogId> {
    let msg: pb::LogId = decode_msg(group, &|| what.to_string(), stored)?;
    Ok(log_id_from_pb(&msg))
}

/// The state machine's progress, stored with every applied batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// The last applied log id.
    pub last_applied: Option<LogId>,
    /// The last applied membership.
    pub membership: StoredMembership,
}

/// Encodes an applied state for the `raft-meta` column family.
pub fn encode_applied(state: &AppliedState) -> Vec<u8> {
    let msg = pb::AppliedState {
        last_applied: state.last_applied.as_ref().map(log_id_to_pb),
        membership: Some(stored_membership_to_pb(&state.membership)),
    };
    frame(&msg.encode_to_vec())
}

/// Decodes and verifies a stored applied state.
pub fn decode_applied(group: RangeId, stored: &[u8]) -> Result<AppliedState> {
    let what = || "applied state".to_string();
    let msg: pb::AppliedState = decode_msg(group, &what, stored)?;
    Ok(AppliedState {
        last_applied: msg.last_applied.as_ref().map(log_id_from_pb),
        membership: stored_membership_from_pb(msg.membership.unwrap_or_default())
            .map_err(|e| corrupt(group, &what, e))?,
    })
}

/// Encodes the node identity record.
pub fn encode_node_ident(node_id: NodeId) -> Vec<u8> {
    frame(&node_id.get().to_be_bytes())
}

/// Decodes and verifies the node identity record.
pub fn decode_node_ident(stored: &[u8]) -> Result<NodeId> {
    let payload = unframe(crate::keys::NODE_GROUP, &|| "node identity".to_string(), stored)?;
    let bytes: [u8; 8] = payload.try_into().map_err(|_| Error::Corruption {
        group: crate::keys::NODE_GROUP,
        what: format!("node identity record is {} bytes, not 8", payload.len()),
    })?;
    Ok(NodeId::new(u64::from_be_bytes(bytes)))
}
