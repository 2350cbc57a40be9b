//! `zonekv.raft.v1.RaftTransport`: the receiving side of the Raft network.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use openraft::errors::RaftError;
use openraft::raft::AppendEntriesRequest;
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

fn malformed(e: zonekv_raft::Error) -> Status {
    Status::invalid_argument(e.to_string())
}

fn raft_error<E: std::fmt::Display>(range: u64, e: RaftError<TypeConfig, E>) -> Status {
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

    /// Checks the addressing of a message and finds the replica it is for.
    fn replica(&self, header: Option<&pb::RaftHeader>) -> Result<Replica, Status> {
        let h = header.ok_or_else(|| Status::invalid_argument("raft message without a header"))?;
        let me = self.inner.config.node_id;
        let range = self.inner.range(h.group_id)?;
        let r = &range.replica;
        if h.to_node != r.node_id {
            return Err(Error::FailedPrecondition(format!(
                "raft message for replica {} of range {} reached node {me}, whose replica is {}: \
                 check the addresses in the membership",
                h.to_node, h.group_id, r.node_id
            ))
            .into());
        }
        Ok(r.clone())
    }
}

/// The leader's append requests, decoded. The stream ends, releasing the HTTP/2 stream, at the
/// leader's end of stream, at the first bad message, or when this node stops: openraft forwards
/// the requests from a task of its own that notices a stop only when the next request arrives,
/// so without that the connection (and the node's storage) would stay held.
fn append_requests(
    first: pb::AppendEntriesRequest,
    incoming: Streaming<pb::AppendEntriesRequest>,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> impl Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + 'static {
    // The first request names the group; every later one must name the same.
    let header = first.header;
    let state = (Some(first), incoming, Box::pin(stopped));
    futures::stream::unfold(state, move |(first, mut incoming, mut stopped)| async move {
        let req = match first {
            Some(first) => first,
            None => {
                let item = tokio::select! {
                    biased;
                    () = &mut stopped => return None,
                    item = incoming.next() => item?,
                };
                match item {
                    Ok(req) if req.header == header => req,
                    Ok(_) => {
                        tracing::warn!("append stream changed its header; closing it");
                        return None;
                    }
                    Err(status) => {
                        tracing::debug!(%status, "append stream from the leader ended");
                        return None;
                    }
                }
            }
        };
        match codec::append_request_from_pb(req) {
            Ok(rpc) => Some((rpc, (None, incoming, stopped))),
            Err(e) => {
                tracing::warn!(error = %e, "malformed append request; closing the stream");
                None
            }
        }
    })
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn append_entries(
        &self,
        req: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        self.until_stopped(async {
            let req = req.into_inner();
            let r = self.replica(req.header.as_ref())?;
            let rpc = codec::append_request_from_pb(req).map_err(malformed)?;
            let resp = r.raft.append_entries(rpc).await.map_err(|e| raft_error(r.range, e))?;
            Ok(Response::new(codec::append_response_to_pb(&resp)))
        })
        .await
    }

    type StreamAppendStream = BoxStream<'static, Result<pb::StreamAppendResponse, Status>>;

    async fn stream_append(
        &self,
        req: Request<Streaming<pb::AppendEntriesRequest>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        self.until_stopped(async {
            let mut incoming = req.into_inner();
            let first =
                incoming.next().await.ok_or_else(|| Status::invalid_argument("empty append stream"))??;
            let r = self.replica(first.header.as_ref())?.clone();
            let requests = append_requests(first, incoming, self.inner.stopped());
            let range = r.range;
            let out = r
                .raft
                .stream_append(requests)
                .map(move |res| match res {
                    Ok(result) => Ok(codec::stream_append_result_to_pb(&result)),
                    Err(fatal) => Err(Status::unavailable(format!("range {range}: {fatal}"))),
                })
                .take_until(self.inner.stopped());
            Ok(Response::new(Box::pin(out) as Self::StreamAppendStream))
        })
        .await
    }

    async fn vote(&self, req: Request<pb::VoteRequest>) -> Result<Response<pb::VoteResponse>, Status> {
        self.until_stopped(async {
            let req = req.into_inner();
            let r = self.replica(req.header.as_ref())?;
            let rpc = codec::vote_request_from_pb(req).map_err(malformed)?;
            r.heard_campaign();
            let resp = r.raft.vote(rpc).await.map_err(|e| raft_error(r.range, e))?;
            Ok(Response::new(codec::vote_response_to_pb(&resp)))
        })
        .await
    }

    async fn pre_vote(&self, req: Request<pb::VoteRequest>) -> Result<Response<pb::VoteResponse>, Status> {
        self.until_stopped(async {
            let req = req.into_inner();
            let r = self.replica(req.header.as_ref())?;
            let rpc = codec::vote_request_from_pb(req).map_err(malformed)?;
            r.heard_campaign();
            let resp = r.raft.pre_vote(rpc).await.map_err(|e| raft_error(r.range, e))?;
            Ok(Response::new(codec::vote_response_to_pb(&resp)))
        })
        .await
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        self.until_stopped(async {
            let mut stream = req.into_inner();
            let first =
                stream.next().await.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
            let r = self.replica(first.header.as_ref())?;
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

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        self.until_stopped(async {
            let req = req.into_inner();
            let r = self.replica(req.header.as_ref())?;
            let rpc = codec::transfer_request_from_pb(req).map_err(malformed)?;
            let resp = r
                .raft
                .handle_transfer_leader(rpc)
                .await
                .map_err(|f| Status::unavailable(format!("range {}: {f}", r.range)))?;
            Ok(Response::new(codec::transfer_response_to_pb(&resp)))
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

    async fn ping(&self, req: Request<pb::PingRequest>) -> Result<Response<pb::PingResponse>, Status> {
        let req = req.into_inner();
        self.inner.liveness.heard(req.from_node, req.stopped_ranges.into_iter().collect());
        Ok(Response::new(pb::PingResponse {}))
    }
}
