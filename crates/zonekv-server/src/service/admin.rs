//! `zonekv.admin.v1.Admin`.

use tonic::{Request, Response, Status};
use zonekv_proto::admin::v1 as pb;
use zonekv_proto::admin::v1::admin_server::Admin;

use zonekv_raft::{NodeId, RangeId};
use zonekv_store::Role;

use crate::auth::Caller;
use crate::{Error, NodeHandle};

pub(crate) struct AdminService {
    pub(crate) node: NodeHandle,
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn initialize(
        &self,
        req: Request<pb::InitializeRequest>,
    ) -> Result<Response<pb::InitializeResponse>, Status> {
        let members: Vec<_> =
            req.into_inner().members.into_iter().map(|m| (NodeId::new(m.node_id), m.addr)).collect();
        self.node.initialize(&members).await?;
        Ok(Response::new(pb::InitializeResponse {}))
    }

    async fn add_node(
        &self,
        req: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::AddNodeResponse>, Status> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        let m = req.member.ok_or_else(|| Error::Malformed("add-node request without a member".into()))?;
        // A node (joining) may add only itself; root may add any.
        if !caller.is_root() {
            caller.speaks_for(NodeId::new(m.node_id), "an add-node request")?;
        }
        self.node.add_node(NodeId::new(m.node_id), &m.addr, req.learner_only).await?;
        Ok(Response::new(pb::AddNodeResponse {}))
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        self.node.remove_node(NodeId::new(req.into_inner().node_id)).await?;
        Ok(Response::new(pb::RemoveNodeResponse {}))
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let req = req.into_inner();
        self.node.transfer_leader(RangeId::new(req.range_id), NodeId::new(req.to_node_id)).await?;
        Ok(Response::new(pb::TransferLeaderResponse {}))
    }

    async fn move_replica(
        &self,
        req: Request<pb::MoveReplicaRequest>,
    ) -> Result<Response<pb::MoveReplicaResponse>, Status> {
        let req = req.into_inner();
        let (range, from, to) =
            (RangeId::new(req.range_id), NodeId::new(req.from_node_id), NodeId::new(req.to_node_id));
        let desc = self.node.move_replica(range, from, to).await?;
        let voter_node_ids = desc.replicas.iter().filter(|r| !r.learner).map(|r| r.node_id.get()).collect();
        Ok(Response::new(pb::MoveReplicaResponse { voter_node_ids }))
    }

    async fn decommission(
        &self,
        req: Request<pb::DecommissionRequest>,
    ) -> Result<Response<pb::DecommissionResponse>, Status> {
        let req = req.into_inner();
        self.node.decommission(NodeId::new(req.node_id), req.cancel).await?;
        Ok(Response::new(pb::DecommissionResponse {}))
    }

    async fn set_policy(
        &self,
        req: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::SetPolicyResponse>, Status> {
        let req = req.into_inner();
        let end = (!req.end.is_empty()).then_some(req.end);
        let policy = if req.clear {
            None
        } else {
            Some(crate::placement::spec_from_pb(req.policy.ok_or_else(|| {
                Error::Malformed("a set-policy request without a policy (or `clear`)".into())
            })?))
        };
        self.node.set_policy(req.start, end, policy).await?;
        Ok(Response::new(pb::SetPolicyResponse {}))
    }

    async fn list_policies(
        &self,
        _req: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let policies = self
            .node
            .policies()?
            .into_iter()
            .map(|p| pb::SpanPolicy {
                start: p.start,
                end: p.end.unwrap_or_default(),
                policy: Some(crate::placement::spec_to_pb(&p.policy)),
            })
            .collect();
        let default_policy = Some(crate::placement::spec_to_pb(&self.node.config().placement.policy));
        Ok(Response::new(pb::ListPoliciesResponse { policies, default_policy }))
    }

    async fn split(&self, req: Request<pb::SplitRequest>) -> Result<Response<pb::SplitResponse>, Status> {
        let (left, right) = self.node.split(req.into_inner().key).await?;
        Ok(Response::new(pb::SplitResponse {
            left_range_id: left.range_id.get(),
            right_range_id: right.range_id.get(),
        }))
    }

    async fn status(&self, _req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.node.status().await;
        let ranges = s
            .ranges
            .into_iter()
            .map(|r| pb::RangeStatus {
                range_id: r.range_id.get(),
                start_key: r.start,
                end_key: r.end.unwrap_or_default(),
                state: r.state,
                term: r.term,
                leader_id: r.leader.as_ref().map_or(0, |l| l.0.get()),
                leader_addr: r.leader.and_then(|l| l.1).unwrap_or_default(),
                last_log_index: r.last_log_index,
                committed_index: r.committed_index,
                applied_index: r.applied_index,
                approximate_bytes: r.approximate_bytes,
                quiesced: r.quiesced,
                replicas: r
                    .members
                    .into_iter()
                    .map(|m| pb::Replica {
                        node_id: m.node_id.get(),
                        replica_id: m.replica_id.get(),
                        addr: m.addr,
                        role: match m.role {
                            Role::Voter => pb::ReplicaRole::Voter,
                            Role::Learner => pb::ReplicaRole::Learner,
                        } as i32,
                    })
                    .collect(),
                fatal_error: r.fatal_error.unwrap_or_default(),
                purged_index: r.purged_index,
            })
            .collect();
        Ok(Response::new(pb::StatusResponse {
            node_id: s.node_id.get(),
            addr: s.addr,
            initialized: s.initialized,
            ranges,
            log_syncs: s.log_syncs,
            log_appends_synced: s.log_appends_synced,
            raft_frames_sent: s.raft_frames_sent,
            raft_batches_sent: s.raft_batches_sent,
            raft_streams_from_peers: s.raft_streams_from_peers,
            locality: s.locality,
            peers: s
                .peers
                .into_iter()
                .map(|p| pb::Peer { node_id: p.node_id.get(), locality: p.locality, live: p.live })
                .collect(),
        }))
    }

    async fn grant(&self, req: Request<pb::GrantRequest>) -> Result<Response<pb::GrantResponse>, Status> {
        let r = req.into_inner();
        self.node.grant(&r.user, r.prefix, r.read_write, r.revoke).await?;
        Ok(Response::new(pb::GrantResponse {}))
    }

    async fn list_grants(
        &self,
        _req: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let grants = self
            .node
            .grants()?
            .into_iter()
            .flat_map(|(user, gs)| {
                gs.into_iter().map(move |g| pb::list_grants_response::UserGrant {
                    user: user.clone(),
                    prefix: g.prefix,
                    read_write: g.write,
                })
            })
            .collect();
        Ok(Response::new(pb::ListGrantsResponse { grants }))
    }
}
