//! A ZoneKV node, embeddable in a host process and runnable as the `zonekv` binary.
//!
//! [`Node::start`] opens the node's RocksDB, starts its replicas (`zonekv-store`) and control
//! plane (`zonekv-control`) and serves the gRPC API (`zonekv.kv.v1`, `zonekv.admin.v1`, and
//! the internal `zonekv.raft.v1` transport). The same key-value and admin operations are
//! available in-process on [`NodeHandle`] (which [`Node`] dereferences to), and
//! [`LocalCluster`] runs a whole cluster inside one process.
//!
//! This crate is the wiring and the wire: the Raft transport (`transport/`) implementing the
//! store's `Transport` and the control plane's `Peers`, the gRPC services (`service/`) as thin
//! adapters, the node's configuration, and the `zonekv` binary. Errors become gRPC statuses
//! in `status.rs` only.

mod auth;
mod cluster;
mod config;
pub mod demo;
mod error;
#[cfg(feature = "test-hooks")]
mod faults;
mod grants;
mod handle;
mod hooks;
mod join;
mod node;
pub mod placement;
mod service;
mod status;
mod transport;
mod wire;

pub use cluster::LocalCluster;
pub use config::{
    Limits, MAX_KEY_BYTES, NodeConfig, PlacementConfig, RaftConfig, SplitConfig, StorageConfig,
};
pub use error::{ControlError, Error, Result, StoreError};
#[cfg(feature = "test-hooks")]
pub use faults::{DiskFaultTable, FaultStats, LinkRule, NetFaults};
pub use handle::{NodeHandle, NodeStatus};
#[cfg(feature = "test-hooks")]
pub use hooks::NodeOptions;
pub use hooks::Verdict;
pub use node::{FIRST_RANGE, Node};
pub use transport::TransportStats;
pub use zonekv_control::{Peer, SpanPolicy};
#[cfg(feature = "test-hooks")]
pub use zonekv_engine::DiskFaults;
pub use zonekv_raft::{Mutation, NodeId, RangeDescriptor, RangeId, ReplicaId};
pub use zonekv_store::{
    CasOutcome, LeaderHint, Member, RangeLocation, RangeStatus, ReadConsistency, Role, Scan, ScanPage,
};
