//! A ZoneKV node, embeddable in a host process and runnable as the `zonekv` binary.
//!
//! [`Node::start`] opens the node's RocksDB, starts its Raft replicas and serves the gRPC API
//! (`zonekv.kv.v1`, `zonekv.admin.v1`, and the internal `zonekv.raft.v1` transport). The same
//! key-value and admin operations are available in-process on [`NodeHandle`] (which [`Node`]
//! dereferences to), and [`LocalCluster`] runs a whole cluster inside one process.
//!
//! The keyspace is split into ranges, each its own Raft group; range 1, the meta range, holds
//! the range directory. Requests are served by the range holding their key
//! (docs/multiraft.md).

mod admin;
mod cleanup;
mod cluster;
mod config;
pub mod demo;
mod driver;
mod error;
mod faults;
mod join;
mod kv;
mod liveness;
mod meta;
mod mover;
mod mux;
mod network;
mod node;
pub mod placement;
mod proposer;
mod quiesce;
mod ranges;
mod rate;
mod registry;
mod replica;
mod route;
mod service;
mod splitter;
mod status;
mod validate;

pub use admin::{Member, NodeStatus, Peer, RangeStatus, Role};
pub use cluster::LocalCluster;
pub use config::{
    Limits, MAX_KEY_BYTES, NodeConfig, PlacementConfig, RaftConfig, SplitConfig, StorageConfig,
};
pub use error::{Error, LeaderHint, Result};
pub use faults::{FaultStats, LinkRule, NetFaults, Verdict};
pub use kv::{CasOutcome, Scan, ScanPage};
pub use node::{FIRST_RANGE, Node, NodeHandle, NodeOptions};
pub use registry::SpanPolicy;
pub use replica::ReadConsistency;
pub use zonekv_raft::{Mutation, RangeDescriptor};
