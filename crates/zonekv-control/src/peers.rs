//! What the control plane needs of the other nodes: the calls one node's control plane makes
//! to another's. The control plane defines the trait; the server implements it over its
//! internal gRPC service (`zonekv.raft.v1.RaftTransport`), converting messages and statuses
//! at its edge. Every call names the peer by address (what memberships record).

use async_trait::async_trait;
use zonekv_raft::{NodeId, Op, OpResult, RangeDescriptor, RangeId, ReplicaId};

use crate::PeerError;
use crate::liveness::Ping;
use crate::place::PlaceStep;

/// The control-plane calls between nodes.
#[async_trait]
pub trait Peers: Send + Sync + 'static {
    /// Proposes a meta-range op (`AllocateIds`, `UpdateDirectory`, `SetPlacement`) on the node
    /// at `addr`, whose replica of the meta range must lead; returns the op's result.
    async fn propose_meta(&self, addr: &str, op: &Op) -> Result<OpResult, PeerError>;

    /// Asks the node at `addr` to create replica `replica` of the range `desc` describes (a
    /// move's first step).
    async fn create_replica(
        &self,
        addr: &str,
        desc: &RangeDescriptor,
        replica: ReplicaId,
    ) -> Result<(), PeerError>;

    /// Asks the node at `addr` whether `replica` is a member of `range`; only the range's
    /// leader, after confirming its leadership, answers.
    async fn is_member(&self, addr: &str, range: RangeId, replica: ReplicaId) -> Result<bool, PeerError>;

    /// Has the node at `addr`, the range's leader, carry out one placement step.
    async fn place(&self, addr: &str, step: &PlaceStep) -> Result<(), PeerError>;

    /// Tells node `to` at `addr` that this node is alive (and what it runs).
    async fn ping(&self, to: NodeId, addr: &str, ping: Ping) -> Result<(), PeerError>;
}
