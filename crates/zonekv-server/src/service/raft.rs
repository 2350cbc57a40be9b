//! `zonekv.raft.v1.RaftTransport`: the receiving side of the Raft network (batch streams in
//! `batch.rs`, snapshots here) and of the control plane's calls between nodes (meta
//! proposals, replica creation, placement steps, membership questions, liveness pings).

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::{Request, Response, Status, Streaming};
use zonekv_control::{Liveness, MetaClient, Placer};
use zonekv_proto::raft::v1 as pb;
use zonekv_proto::raft::v1::raft_transport_server::RaftTransport;
use zonekv_raft::{NodeId, RangeId, ReplicaId, codec};
use zonekv_store::Store;

use super::batch::{fatal, malformed, replica_for};
use crate::auth::Caller;
use crate::handle::Engine;
use crate::transport::{RateLimiter, TransportStats};
use crate::{Error, Result, wire};

/// What the internal service serves from: the replicas, the control plane's meta client,
/// placer and liveness table, the node's snapshot receive limit and transport counters.
#[derive(Clone)]
pub(crate) struct RaftService {
    pub(crate) store: Store<Engine>,
    pub(crate) meta: MetaClient<Engine>,
    pub(crate) placer: Placer<Engine>,
    pub(crate) liveness: Arc<Liveness>,
    pub(crate) snapshot_recv: Arc<RateLimiter>,
    /// Snapshots received at once (each is held whole in memory until installed).
    pub(crate) snapshot_slots: Arc<tokio::sync::Semaphore>,
    /// Largest snapshot accepted, in bytes (`raft.max-snapshot-bytes`).
    pub(crate) max_snapshot_bytes: u64,
    /// Longest a snapshot may take to arrive (`raft.snapshot-timeout-ms`): a stalled sender
    /// does not hold a receive slot for ever.
    pub(crate) snapshot_timeout: std::time::Duration,
    pub(crate) stats: Arc<TransportStats>,
    /// What peers' Raft requests may hold while they wait for their ranges (`batch.rs`).
    pub(crate) receive_budget: Arc<zonekv_store::MemoryBudget>,
}

impl RaftService {
    /// Runs a handler body, cut short with `Unavailable` when the node starts shutting down:
    /// a handler waiting on a stopped Raft group must not keep the server from draining.
    async fn until_stopped<T>(&self, body: impl Future<Output = Result<T>>) -> Result<T, Status> {
        tokio::select! {
            biased;
            () = self.store.stopped() => Err(Error::ShuttingDown.into()),
            r = body => r.map_err(Status::from),
        }
    }

    async fn receive_snapshot(
        &self,
        mut stream: Streaming<pb::SnapshotChunk>,
        caller: Caller,
    ) -> Result<pb::SnapshotResponse> {
        let first = stream
            .next()
            .await
            .ok_or_else(|| Error::Malformed("empty snapshot stream".into()))?
            .map_err(Error::Stream)?;
        let r = replica_for(&self.store, first.header.as_ref(), first.vote.as_ref(), &caller)?;
        let _slot = self.snapshot_slots.acquire().await.map_err(|_| Error::ShuttingDown)?;
        let vote = first
            .vote
            .as_ref()
            .map(codec::vote_from_pb)
            .ok_or_else(|| Error::Malformed("snapshot without a vote".into()))?;
        let meta = codec::snapshot_meta_from_pb(first.meta.clone().unwrap_or_default()).map_err(malformed)?;
        let mut data = Vec::new();
        let mut chunk = Some(first);
        let mut n = 0usize;
        while let Some(c) = chunk {
            if crc32fast::hash(&c.data) != c.crc32 {
                return Err(Error::SnapshotDamaged(format!("snapshot chunk {n} failed its CRC32 check")));
            }
            if (data.len() + c.data.len()) as u64 > self.max_snapshot_bytes {
                return Err(Error::ResourceExhausted(format!(
                    "snapshot of range {} exceeds raft.max-snapshot-bytes ({} bytes); nothing was installed",
                    r.range_id(),
                    self.max_snapshot_bytes
                )));
            }
            data.extend_from_slice(&c.data);
            n += 1;
            // Reading the next chunk waits for this one's share of the node's receive rate;
            // HTTP/2 flow control holds the sender meanwhile.
            self.snapshot_recv.acquire(c.data.len()).await;
            chunk = stream.next().await.transpose().map_err(Error::Stream)?;
        }
        tracing::info!(range = %r.range_id(), bytes = data.len(), chunks = n, "received snapshot");
        let snapshot = openraft::Snapshot { meta, snapshot: data };
        let resp =
            r.raft().install_full_snapshot(vote, snapshot).await.map_err(|f| fatal(r.range_id(), f))?;
        Ok(pb::SnapshotResponse { vote: Some(codec::vote_to_pb(&resp.vote)) })
    }

    async fn is_member_now(&self, req: pb::IsMemberRequest) -> Result<pb::IsMemberResponse> {
        let r = self.store.replica(RangeId::new(req.range_id))?;
        // A leader cut off from its range may not know a learner its successor added: only a
        // leader that confirms its leadership with a quorum answers.
        r.confirm_leadership().await?;
        let replica = ReplicaId::new(req.replica_id);
        let member = r.with_metrics(|m| m.membership_config.membership().get_node(&replica).is_some());
        Ok(pb::IsMemberResponse { member })
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    type BatchStream = BoxStream<'static, Result<pb::RaftBatch, Status>>;

    async fn batch(
        &self,
        req: Request<Streaming<pb::RaftBatch>>,
    ) -> Result<Response<Self::BatchStream>, Status> {
        let caller = Caller::of(&req)?;
        Ok(Response::new(super::batch::serve(
            self.store.clone(),
            self.stats.clone(),
            req.into_inner(),
            caller,
            self.receive_budget.clone(),
        )))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let caller = Caller::of(&req)?;
        let receive = async {
            tokio::time::timeout(self.snapshot_timeout, self.receive_snapshot(req.into_inner(), caller))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Unavailable(format!(
                        "the snapshot did not arrive within raft.snapshot-timeout-ms ({} ms); nothing was installed",
                        self.snapshot_timeout.as_millis()
                    )))
                })
        };
        self.until_stopped(receive).await.map(Response::new)
    }

    async fn propose_meta(&self, req: Request<pb::Op>) -> Result<Response<pb::ProposeMetaResponse>, Status> {
        self.until_stopped(async {
            let caller = Caller::of(&req)?;
            let op = codec::op_from_pb(req.into_inner()).map_err(malformed)?;
            let result = self.meta.propose_for_peer(op, caller.node()).await?;
            Ok(wire::meta_result_to_pb(&result))
        })
        .await
        .map(Response::new)
    }

    async fn create_replica(
        &self,
        req: Request<pb::CreateReplicaRequest>,
    ) -> Result<Response<pb::CreateReplicaResponse>, Status> {
        self.until_stopped(async {
            let caller = Caller::of(&req)?;
            let req = req.into_inner();
            let desc = req
                .descriptor
                .ok_or_else(|| Error::Malformed("create replica without a descriptor".into()))?;
            let (desc, replica) = (codec::descriptor_from_pb(desc), ReplicaId::new(req.replica_id));
            zonekv_control::check_create_replica(&self.store, &desc, replica, caller.node())?;
            self.store.create_replica(desc, replica).await?;
            Ok(pb::CreateReplicaResponse {})
        })
        .await
        .map(Response::new)
    }

    async fn place(&self, req: Request<pb::PlaceRequest>) -> Result<Response<pb::PlaceResponse>, Status> {
        self.until_stopped(async {
            let desc = self.placer.place(wire::place_from_pb(req.into_inner())?).await?;
            Ok(pb::PlaceResponse { descriptor: Some(codec::descriptor_to_pb(&desc)) })
        })
        .await
        .map(Response::new)
    }

    async fn is_member(
        &self,
        req: Request<pb::IsMemberRequest>,
    ) -> Result<Response<pb::IsMemberResponse>, Status> {
        self.until_stopped(self.is_member_now(req.into_inner())).await.map(Response::new)
    }

    async fn ping(&self, req: Request<pb::PingRequest>) -> Result<Response<pb::PingResponse>, Status> {
        let caller = Caller::of(&req)?;
        let ping = req.into_inner();
        caller.speaks_for(NodeId::new(ping.from_node), "a liveness ping")?;
        self.liveness.heard(wire::ping_from_pb(ping));
        Ok(Response::new(pb::PingResponse {}))
    }
}
