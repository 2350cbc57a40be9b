//! The control plane's calls to other nodes ([`zonekv_control::Peers`]) over the internal
//! gRPC service: messages converted in `wire.rs`, failed calls as [`PeerError`]s
//! (`status.rs`). Liveness pings go through the fault table like Raft messages.

use async_trait::async_trait;
use tonic::transport::Channel;
use zonekv_control::{PeerError, Peers, Ping, PlaceStep};
use zonekv_proto::raft::v1 as pb;
use zonekv_proto::raft::v1::raft_transport_client::RaftTransportClient;
use zonekv_raft::{NodeId, Op, OpResult, RangeDescriptor, RangeId, ReplicaId, codec};

use super::Pool;
use crate::hooks::{FaultTable, Verdict};
use crate::{status, wire};

/// The control-plane client of one node.
#[derive(Clone)]
pub(crate) struct PeerClient {
    node: NodeId,
    pool: Pool,
    faults: FaultTable,
}

impl PeerClient {
    pub(crate) fn new(node: NodeId, pool: Pool, faults: FaultTable) -> Self {
        Self { node, pool, faults }
    }

    fn client(&self, addr: &str) -> Result<RaftTransportClient<Channel>, PeerError> {
        self.pool.client(addr).map_err(|message| PeerError::Retry { leader: None, message })
    }
}

#[async_trait]
impl Peers for PeerClient {
    async fn propose_meta(&self, addr: &str, op: &Op) -> Result<OpResult, PeerError> {
        let resp =
            self.client(addr)?.propose_meta(codec::op_to_pb(op)).await.map_err(|s| status::peer_error(&s))?;
        Ok(wire::meta_result_from_pb(op, &resp.into_inner()))
    }

    async fn create_replica(
        &self,
        addr: &str,
        desc: &RangeDescriptor,
        replica: ReplicaId,
    ) -> Result<(), PeerError> {
        let request = pb::CreateReplicaRequest {
            descriptor: Some(codec::descriptor_to_pb(desc)),
            replica_id: replica.get(),
        };
        self.client(addr)?.create_replica(request).await.map(drop).map_err(|s| status::peer_error(&s))
    }

    async fn is_member(&self, addr: &str, range: RangeId, replica: ReplicaId) -> Result<bool, PeerError> {
        let request = pb::IsMemberRequest { range_id: range.get(), replica_id: replica.get() };
        let resp = self.client(addr)?.is_member(request).await.map_err(|s| status::peer_error(&s))?;
        Ok(resp.into_inner().member)
    }

    async fn place(&self, addr: &str, step: &PlaceStep) -> Result<(), PeerError> {
        self.client(addr)?.place(wire::place_to_pb(step)).await.map(drop).map_err(|s| status::peer_error(&s))
    }

    async fn ping(&self, to: NodeId, addr: &str, ping: Ping) -> Result<(), PeerError> {
        if matches!(self.faults.decide(self.node, to), Verdict::Drop) {
            return Err(PeerError::Retry { leader: None, message: "ping lost (injected fault)".into() });
        }
        self.client(addr)?.ping(wire::ping_to_pb(&ping)).await.map(drop).map_err(|s| status::peer_error(&s))
    }
}
