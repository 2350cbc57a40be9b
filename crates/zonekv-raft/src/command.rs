//! The application payload of ZoneKV log entries and the results of applying it.

use std::fmt;

use bytes::Bytes;

use crate::range::{RangeDescriptor, RangeEpoch};
use crate::{RangeId, ReplicaId};

/// One write of a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets a key.
    Put {
        /// User key.
        key: Bytes,
        /// New value.
        value: Bytes,
    },
    /// Removes a key.
    Delete {
        /// User key.
        key: Bytes,
    },
    /// Sets or removes a key if its current value equals `expected` (`None`: must be absent).
    CompareAndSwap {
        /// User key.
        key: Bytes,
        /// Required current value; `None` requires the key to be absent.
        expected: Option<Bytes>,
        /// New value; `None` removes the key.
        new_value: Option<Bytes>,
    },
    /// Puts and deletes applied atomically.
    Batch(Vec<Mutation>),
    /// Splits the range (an admin op, never batched with client writes; docs/multiraft.md).
    Split(Split),
    /// Meta range only: hands out `count` consecutive fresh ids for ranges and replicas.
    AllocateIds {
        /// How many.
        count: u64,
    },
    /// Meta range only: records descriptors in the range directory, each only if newer (by
    /// epoch) than the entry it replaces.
    UpdateDirectory(Vec<RangeDescriptor>),
    /// Meta range only: sets (or, with `None`, clears) the placement record `key` — the
    /// server's node registry and span policies (docs/placement.md). Opaque to this crate.
    SetPlacement {
        /// Record key, below the placement prefix ([`crate::meta::placement::placement_key`]).
        key: Bytes,
        /// New value; `None` clears the record.
        value: Option<Bytes>,
    },
}

/// Splits a range at `split_key`: `[start, split_key)` stays, `[split_key, end)` becomes range
/// `new_range_id`, with `new_replica_ids[i]` the new replica on the node of the range's `i`-th
/// replica. Applies only while the range's epoch is `expected_epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// First user key of the new right-hand range.
    pub split_key: Bytes,
    /// The epoch the split was planned against.
    pub expected_epoch: RangeEpoch,
    /// The right-hand range's id (fresh).
    pub new_range_id: RangeId,
    /// One fresh replica id per replica of the range, in descriptor order.
    pub new_replica_ids: Vec<ReplicaId>,
}

/// A put or delete inside an [`Op::Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Sets a key.
    Put {
        /// User key.
        key: Bytes,
        /// New value.
        value: Bytes,
    },
    /// Removes a key.
    Delete {
        /// User key.
        key: Bytes,
    },
}

impl Mutation {
    /// The user key the mutation writes.
    pub fn key(&self) -> &Bytes {
        match self {
            Mutation::Put { key, .. } | Mutation::Delete { key } => key,
        }
    }
}

impl Mutation {
    /// Bytes of keys and values it carries.
    pub fn bytes(&self) -> usize {
        match self {
            Mutation::Put { key, value } => key.len() + value.len(),
            Mutation::Delete { key } => key.len(),
        }
    }
}

impl Op {
    /// Bytes of keys and values it carries (what the batching and request limits count).
    pub fn bytes(&self) -> usize {
        let opt = |v: &Option<Bytes>| v.as_ref().map_or(0, Bytes::len);
        match self {
            Op::Put { key, value } => key.len() + value.len(),
            Op::Delete { key } => key.len(),
            Op::CompareAndSwap { key, expected, new_value } => key.len() + opt(expected) + opt(new_value),
            Op::Batch(muts) => muts.iter().map(Mutation::bytes).sum(),
            Op::Split(split) => split.split_key.len(),
            Op::AllocateIds { .. } => 0,
            Op::UpdateDirectory(descs) => {
                descs.iter().map(|d| d.start.len() + d.end.as_ref().map_or(0, Bytes::len)).sum()
            }
            Op::SetPlacement { key, value } => key.len() + opt(value),
        }
    }
}

/// The payload of a normal log entry: writes applied in order, each with its own result.
///
/// One entry may carry the writes of several clients, so a burst of writes costs one Raft
/// round and one fsync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    /// The writes, applied in order.
    pub ops: Vec<Op>,
}

impl Command {
    /// A command with a single write.
    pub fn single(op: Op) -> Self {
        Self { ops: vec![op] }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({} ops)", self.ops.len())
    }
}

/// The result of one [`Op`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// A put or batch was applied.
    Done,
    /// A delete was applied; `existed` tells whether the key was present.
    Deleted {
        /// Whether the key existed.
        existed: bool,
    },
    /// A compare-and-swap was evaluated.
    CompareAndSwap {
        /// Whether the comparison held and the write happened.
        succeeded: bool,
        /// The value found when comparing.
        current: Option<Bytes>,
    },
    /// The op touched a key this range does not own (any more): nothing was written. Carries
    /// the range's descriptor as of the op, for the client to reroute.
    RangeKeyMismatch(Box<RangeDescriptor>),
    /// A split was applied: the shrunk range and the new right-hand range.
    Split {
        /// This range after the split.
        left: Box<RangeDescriptor>,
        /// The new range.
        right: Box<RangeDescriptor>,
    },
    /// Ids `first .. first + count` were allocated.
    Ids {
        /// The first id.
        first: u64,
    },
    /// The directory was updated: how many of the descriptors were newer than its entries.
    DirectoryUpdated {
        /// Entries written.
        written: usize,
    },
    /// The op needs the meta range (it reads or writes system records) and this range is not it.
    NotMetaRange,
    /// A split was refused and nothing changed: `reason` says why, `current` is the range as it
    /// is.
    SplitRejected {
        /// Why, for the error message.
        reason: String,
        /// The range's descriptor.
        current: Box<RangeDescriptor>,
    },
    /// The op was committed but refused at apply, deterministically (the same on every
    /// replica), and wrote nothing: for example an id allocation that would overflow. The
    /// op's result, never a reason to stop the replica.
    Refused {
        /// Why, for the error message.
        reason: String,
    },
}

/// The results of a [`Command`], one per op in order. Empty for blank and membership entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandResponse {
    /// One result per op.
    pub results: Vec<OpResult>,
}
