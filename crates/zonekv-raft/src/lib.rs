//! ZoneKV's Raft layer: openraft storage for many groups on one engine.
//!
//! - [`LogStore`] implements openraft's `RaftLogStorage` for one group: log entries, vote,
//!   committed and purged ids, all in the shared engine under keys prefixed by the group id.
//!   Appends are written at once (readable) and made durable by the node-wide [`LogSyncer`],
//!   which fsyncs once for every append pending in every group (group commit).
//! - [`StateMachine`] implements `RaftStateMachine`: it applies [`Command`]s to the group's key
//!   span in the data column family, in the same atomic write as the group's applied state, so
//!   the state machine is persistent and never needs replaying from a snapshot.
//! - [`keys`] is the on-disk key layout; [`codec`] the checksummed record encoding and the
//!   openraft ↔ protobuf conversions.
//!
//! Every record ZoneKV writes (log entry, vote, applied state, user value) carries a CRC32
//! checked on every read. A mismatch is an error that stops the replica (openraft turns a storage
//! error into `Fatal::StorageError`), never a silent truncation.

pub mod codec;
mod command;
mod entry_cache;
mod error;
mod ids;
pub mod keys;
mod log_store;
pub mod meta;
pub mod range;
mod snapshot;
mod split;
mod state_machine;
mod stored;
mod syncer;
mod types;
pub mod value;

pub use command::{Command, CommandResponse, Mutation, Op, OpResult, Split};
pub use error::{Error, Result};
pub use ids::{NodeId, RangeId, ReplicaId};
pub use log_store::{LogReader, LogStore};
pub use range::{RangeDescriptor, RangeEpoch, ReplicaDesc, spans_owned_by_no_other};
pub use snapshot::SnapshotBuilder;
pub use state_machine::StateMachine;
pub use stored::{read_descriptor, read_user_value, stored_descriptors, stored_groups};
pub use syncer::{LogSyncer, SyncStats, SyncerOptions};
pub use types::{
    Entry, LeaderId, LogId, Membership, NodeInfo, Raft, SnapshotData, SnapshotMeta, StoredMembership,
    TypeConfig, Vote,
};
