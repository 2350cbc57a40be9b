//! The RocksDB engine: one RocksDB instance per node, shared by every Raft group on it.
//!
//! This is the only crate in the workspace that links RocksDB. It maps the
//! [`zonekv_engine`] traits onto one database with a column family per [`Cf`]
//! (`raft-log`, `raft-meta`, `data`); Raft group ids are part of the keys, never column family
//! names, so opening a node with many ranges costs the same as opening it with one.
//!
//! Durability: every write goes through RocksDB's write-ahead log. `write(batch, sync = true)`
//! fsyncs the WAL before returning, which also makes every earlier write durable, because the
//! WAL is one sequential log for all column families. Recovery uses RocksDB's default
//! point-in-time mode: a torn, never-acknowledged tail of the WAL is dropped, anything synced
//! is replayed — and checked: every sync records the sequence number it covered in a mark
//! kept outside the WAL (`synced.rs`), so damage that drops *synced* writes (a bit flip or a
//! cut inside the live WAL) fails the open with [`Error::Corruption`] instead of coming back
//! as a shorter log. RocksDB's block checksums are verified on every read
//! (`paranoid_checks` stays on), so damaged files surface as [`Error::Corruption`].

mod engine;
mod options;
mod synced;

pub use engine::{RocksEngine, RocksSnapshot};
pub use options::RocksOptions;
pub use synced::FILE_NAME as SYNCED_MARK_FILE;
pub use zonekv_engine::{Cf, Error, Result};
