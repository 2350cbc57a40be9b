//! Where each range's replicas and leader live (docs/placement.md).
//!
//! Pure logic, no I/O, deterministic for a seed: the live placement driver, the simulation
//! tests and `zonekv placement simulate` run the same decisions.
//! - [`Locality`]: ordered `key=value` tiers of a node, and their diversity.
//! - [`Policy`]: replicas, constraints, lease preferences, survival of a key span.
//! - [`Cluster`]: a snapshot of nodes and ranges.
//! - [`Allocator`]: where a replica goes, which one leaves, where the leader belongs.
//! - [`Planner`]: the next [`Action`] for a range, repair before rebalance.
//! - [`sim`]: a fake-time cluster that carries the actions out.
//! - [`scenario`]: what-if files (topology, policy, events) run through [`sim`].

mod allocator;
mod check;
mod cluster;
mod error;
mod locality;
mod plan;
mod policy;
pub mod scenario;
pub mod sim;

pub use allocator::Allocator;
pub use cluster::{Cluster, Millis, Node, NodeId, NodeState, Range, RangeId, Replica, Role};
pub use error::{Error, Result};
pub use locality::{Locality, REGION, Tier, ZONE};
pub use plan::{Action, Planner};
pub use policy::{Constraint, Policy, Survival};
