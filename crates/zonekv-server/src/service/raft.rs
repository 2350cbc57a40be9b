//! `zonekv.raft.v1.RaftTransport`: the receiving side of the Raft network.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use openraft::errors::RaftError;
use tonic::{Request, Response, Status, Streaming};
use zonekv_proto::raft::v1 as pb;
use zonekv_proto::raft::v1::raft_transport_server::RaftTransport;
use zonekv_raft::{TypeConfig, codec};

use crate::Error;
use crate::node::NodeInner;
use crate::replica::Replica;

pub(crate) struct RaftService {
    pub(crate) inner: Arc<NodeInner>,
}

pub(super) fn malformed(e: zonekv_raft::Error) -> Status {
    Status::invalid_argument(e.to_string())
}

pub(super) fn raft_error<E: std::fmt::Display>(range: u64, e: RaftError<TypeConfig, E>) -> Status {
    let stopped = matches!(e, RaftError::Fatal(_));
    let msg = format!("range {range}: {e}");
    if stopped { Status::unavailable(msg) } else { Status::failed_precondition(msg) }
}

impl RaftService {
    /// Runs a handler body, cut short with `Unavailable` when the node starts shutting down:
    /// a handler waiting on a stopped Raft group must not keep the server from draining.
    async fn until_stopped<T>(&self, body: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
        tokio::select! {
            biased;
            () = self.inner.stopped() => Err(Status::unavailable("the node is shutting down")),
            r = body => r,
        }
    }
}

/// Checks the addressing of a message and finds the replica it is for.
pub(super) fn replica_for(inner: &NodeInner, header: Option<&pb::RaftHeader>) -> Result<Replica, Status> {
    let h = header.ok_or_else(|| Status::invalid_argument("raft message without a header"))?;
    let me = inner.config.node_id;
    let range = inner.range(h.group_id)?;
    let r = &range.replica;
    if h.to_node != r.node_id {
        return Err(Error::FailedPrecondition(format!(
            "raft message for replica {} of range {} reached node {me}, whose replica is {}: \
             check the addresses in the membership",
            h.to_node, h.group_id, r.node_id
        ))
        .into());
    }
    // Stopped (node shutdown, or a fatal storage error): the sender sees it as unreachable,
    // and openraft is not asked to queue a message it would only log as undeliverable.
    if let Some(stopped) = r.stopped() {
        return Err(Status::unavailable(stopped.to_string()));
    }
    Ok(r.clone())
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    type BatchStream = BoxStream<'static, Result<pb::RaftBatch, Status>>;

    async fn batch(
        &self,
        req: Request<Streaming<pb::RaftBatch>>,
    ) -> Result<Response<Self::BatchStream>, Status> {
        Ok(Response::new(super::batch::serve(self.inner.clone(), req.into_inner())))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        self.until_stopped(async {
            let mut stream = req.into_inner();
            let first =
                stream.next().await.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
            let r = replica_for(&self.inner, first.header.as_ref())?;
            let vote = first
                .vote
                .as_ref()
                .map(codec::vote_from_pb)
                .ok_or_else(|| Status::invalid_argument("snapshot without a vote"))?;
            let meta =
                codec::snapshot_meta_from_pb(first.meta.clone().unwrap_or_default()).map_err(malformed)?;
            let mut data = Vec::new();
            let mut chunk = Some(first);
            let mut n = 0usize;
            while let Some(c) = chunk {
                if crc32fast::hash(&c.data) != c.crc32 {
                    return Err(Status::data_loss(format!("snapshot chunk {n} failed its CRC32 check")));
                }
                data.extend_from_slice(&c.data);
                n += 1;
                // Reading the next chunk waits for this one's share of the node's receive
                // rate; HTTP/2 flow control holds the sender meanwhile.
                self.inner.snapshot_recv.acquire(c.data.len()).await;
                chunk = stream.next().await.transpose()?;
            }
            tracing::info!(range = r.range, bytes = data.len(), chunks = n, "received snapshot");
            let snapshot = openraft::Snapshot { meta, snapshot: data };
            let resp = r
                .raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(|f| Status::unavailable(format!("range {}: {f}", r.range)))?;
            Ok(Response::new(pb::SnapshotResponse { vote: Some(codec::vote_to_pb(&resp.vote)) }))
        })
        .await
    }

    async fn propose_meta(&self, req: Request<pb::Op>) -> Result<Response<pb::ProposeMetaResponse>, Status> {
        self.until_stopped(async {
            let op = crate::meta::meta_op(req.into_inner())?;
            let (result, _) = self.inner.ranges.first().proposer.propose(op).await?;
            Ok(Response::new(crate::meta::response(&result)))
        })
        .await
    }

    async fn create_replica(
        &self,
        req: Request<pb::CreateReplicaRequest>,
    ) -> Result<Response<pb::CreateReplicaResponse>, Status> {
        self.until_stopped(async {
            let req = req.into_inner();
            let desc = req
                .descriptor
                .ok_or_else(|| Status::invalid_argument("create replica without a descriptor"))?;
            let desc = codec::descriptor_from_pb(desc);
            self.inner.create_replica(desc, req.replica_id).await?;
            Ok(Response::new(pb::CreateReplicaResponse {}))
        })
        .await
    }

    async fn place(&self, req: Request<pb::PlaceRequest>) -> Result<Response<pb::PlaceResponse>, Status> {
        self.until_stopped(async {
            let node = crate::NodeHandle { inner: self.inner.clone() };
            let desc = node.place(req.into_inner()).await?;
            Ok(Response::new(pb::PlaceResponse { descriptor: Some(codec::descriptor_to_pb(&desc)) }))
        })
        .await
    }

    async fn is_member(
        &self,
        req: Request<pb::IsMemberRequest>,
    ) -> Result<Response<pb::IsMemberResponse>, Status> {
        self.until_stopped(async {
            let req = req.into_inner();
            let range = self.inner.range(req.range_id)?;
            let r = &range.replica;
            // A leader cut off from its range may not know a learner its successor added:
            // only a leader that confirms its leadership with a quorum answers.
            r.ensure_leader()?;
            r.raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex).await.map_err(|e| {
                Status::unavailable(format!("range {}: leadership not confirmed: {e}", req.range_id))
            })?;
            let member = r.metrics().membership_config.membership().get_node(&req.replica_id).is_some();
            Ok(Response::new(pb::IsMemberResponse { member }))
        })
        .await
    }

    async fn ping(&self, req: Request<pb::PingRequest>) -> Result<Response<pb::PingResponse>, Status> {
        self.inner.liveness.heard(req.into_inner());
        Ok(Response::new(pb::PingResponse {}))
    }
}
