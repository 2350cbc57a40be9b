//! A ZoneKV node, embeddable in a host process and runnable as the `zonekv` binary.
//!
//! [`Node::start`] opens the node's RocksDB, starts its Raft replicas and serves the gRPC API
//! (`zonekv.kv.v1`, `zonekv.admin.v1`, and the internal `zonekv.raft.v1` transport). The same
//! key-value and admin operations are available in-process on [`NodeHandle`] (which [`Node`]
//! dereferences to), and [`LocalCluster`] runs a whole cluster inside one process.
//!
//! Today one range (Raft group 1) covers the whole keyspace; every request already names the
//! keys it targets and every error names the range, so ranges can split without API changes.

mod admin;
mod cluster;
mod config;
pub mod demo;
mod error;
mod faults;
mod join;
mod kv;
mod network;
mod node;
mod proposer;
mod ranges;
mod replica;
mod route;
mod service;
mod status;
mod validate;

pub use admin::{Member, NodeStatus, RangeStatus, Role};
pub use cluster::LocalCluster;
pub use config::{Limits, MAX_KEY_BYTES, NodeConfig, RaftConfig, StorageConfig};
pub use error::{Error, LeaderHint, Result};
pub use faults::{FaultStats, LinkRule, NetFaults, Verdict};
pub use kv::{CasOutcome, Scan, ScanPage};
pub use node::{FIRST_RANGE, Node, NodeHandle, NodeOptions};
pub use replica::ReadConsistency;
pub use zonekv_raft::Mutation;
