//! Storage engine traits for ZoneKV, an in-memory engine, and the conformance suite every
//! engine must pass.
//!
//! This crate must never depend on RocksDB, directly or transitively: the RocksDB engine lives
//! in `zonekv-engine-rocks`, the only crate that links it. Everything above the engine (Raft log,
//! state machine, server) is written against the traits here, so most tests run on
//! [`MemEngine`] without the C++ build.
//!
//! The model is small on purpose:
//! - an engine is a set of ordered byte maps, one per [`Cf`] (column family);
//! - reads go through [`Reader`]: point [`Reader::get`] and ordered [`Reader::scan`] over a
//!   [`KeyRange`], forwards or backwards;
//! - writes go through [`Engine::write`]: an atomic [`WriteBatch`] with an explicit `sync` flag
//!   (`sync = true` returns only once the batch, and every batch written before it, is durable);
//! - [`Engine::snapshot`] gives a consistent, point-in-time [`Reader`];
//! - [`export`] streams a key span of a snapshot into a checksummed byte stream and loads it
//!   back, which is how Raft snapshots move a range's data between nodes.
//!
//! Engines store opaque bytes. Checksums of the records ZoneKV owns (log entries, votes,
//! values) are added one layer up, in `zonekv-raft`, so they are identical on every engine.

mod batch;
mod error;
pub mod export;
#[cfg(feature = "faults")]
mod faulty;
mod mem;
mod range;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

pub use batch::{WriteBatch, WriteOp};
pub use error::{Error, Result};
#[cfg(feature = "faults")]
pub use faulty::{DiskFaults, FaultyEngine};
pub use mem::MemEngine;
pub use range::KeyRange;

/// A column family: an independent ordered keyspace inside one engine.
///
/// All Raft groups on a node share the same three column families; group ids are part of the
/// keys (see `ARCHITECTURE.md`), never part of the column family name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Raft log entries of every group: `group_id ++ index`, both big-endian.
    RaftLog,
    /// Per-group Raft and state-machine metadata: vote, committed, purged, applied, membership.
    RaftMeta,
    /// User data and, later, other per-range replicated data (locks, transaction records).
    Data,
}

impl Cf {
    /// Every column family, in a fixed order.
    pub const ALL: [Cf; 3] = [Cf::RaftLog, Cf::RaftMeta, Cf::Data];

    /// The stable on-disk name of the column family.
    pub fn name(self) -> &'static str {
        match self {
            Cf::RaftLog => "raft-log",
            Cf::RaftMeta => "raft-meta",
            Cf::Data => "data",
        }
    }

    /// Position of the column family in [`Cf::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One key-value pair as returned by a scan.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// An iterator over key-value pairs in key order (or reverse key order).
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<KvPair>> + Send + 'a>;

/// Read access to an engine or to a consistent snapshot of it.
pub trait Reader {
    /// Returns the value stored under `key`, if any.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Iterates over the pairs whose keys fall in `range`, in ascending key order, or in
    /// descending order when `reverse` is true.
    ///
    /// The iterator reads a consistent view: writes made after the call are not observed.
    fn scan(&self, cf: Cf, range: &KeyRange, reverse: bool) -> Result<KvIter<'_>>;
}

/// A storage engine: ordered byte maps per [`Cf`], atomic batched writes and snapshots.
///
/// One engine instance is shared by every Raft group of a node, so implementations must be
/// cheap to share (`Clone` is expected to be an `Arc` clone) and safe to use from many threads.
pub trait Engine: Reader + Clone + Send + Sync + 'static {
    /// A consistent point-in-time view of the engine.
    type Snapshot<'a>: Reader + Send + Sync
    where
        Self: 'a;

    /// Applies `batch` atomically: afterwards either every operation of the batch is visible or
    /// none is (also after a crash). With `sync = true` the call returns only once the batch
    /// and everything written before it are durable on disk.
    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()>;

    /// Makes every write that has returned so far durable (a WAL fsync).
    fn sync(&self) -> Result<()>;

    /// Takes a consistent snapshot. Reads through it see the engine as of this call.
    fn snapshot(&self) -> Self::Snapshot<'_>;

    /// Estimated bytes the pairs in `range` take, for deciding when to split a range: cheap,
    /// not exact. RocksDB counts only data already flushed from memtables to files (after
    /// compression); in-memory engines count keys and values exactly.
    fn approximate_size(&self, cf: Cf, range: &KeyRange) -> Result<u64>;

    /// Moves buffered writes from memory to the engine's files (RocksDB: flushes memtables).
    /// A no-op for in-memory engines. Durability does not depend on it (the WAL has the
    /// writes); size estimates and backups see flushed data.
    fn flush(&self) -> Result<()>;

    /// Bytes still free for the engine's files (on the file system holding them), or `None`
    /// when the engine cannot tell or does not use a disk. The store refuses client writes
    /// when this falls below its reserve (docs/disk-faults.md, "Full disk"). Default: `None`.
    fn free_space(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}
