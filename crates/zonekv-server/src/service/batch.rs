//! `RaftTransport/Batch`, the receiving side of the batched Raft transport: hands each frame
//! of a peer's stream to its range's Raft, keeping every append stream's requests in order,
//! and batches the answers back (docs/multiraft.md "Transport").

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use openraft::raft::AppendEntriesRequest;
use tokio::sync::{mpsc, oneshot};
use tonic::{Status, Streaming};
use zonekv_proto::raft::v1 as pb;
use zonekv_proto::raft::v1::raft_frame::Body;
use zonekv_raft::{TypeConfig, codec};

use openraft::errors::RaftError;
use zonekv_raft::keys::FIRST_RANGE;
use zonekv_raft::{NodeId, RangeId, ReplicaId};
use zonekv_store::{Replica, Store};

use crate::auth::Caller;
use crate::handle::Engine;
use crate::transport::{TransportStats, batches};
use crate::{Error, status};

/// Serves one peer's batch stream; the answers end when the node stops.
pub(super) fn serve(
    store: Store<Engine>,
    stats: Arc<TransportStats>,
    incoming: Streaming<pb::RaftBatch>,
    caller: Caller,
) -> BoxStream<'static, Result<pb::RaftBatch, Status>> {
    let (out, rx) = mpsc::unbounded_channel();
    let (refused, refusal) = oneshot::channel();
    let stopped = store.stopped();
    stats.streams_in.fetch_add(1, Ordering::Relaxed);
    let demux = Demux { store, caller, out: Answers(out), streams: HashMap::new() };
    let serving = stats.clone();
    tokio::spawn(async move {
        demux.run(incoming, refused).await;
        serving.streams_in.fetch_sub(1, Ordering::Relaxed);
    });
    // After the last answer: why the peer's stream was refused, if it was.
    let refusal = futures::stream::once(refusal).filter_map(|r| std::future::ready(r.ok().map(Err)));
    Box::pin(batches(rx, stats).map(Ok).chain(refusal).take_until(stopped))
}

/// A peer's message that does not decode.
pub(super) fn malformed(e: zonekv_raft::Error) -> Error {
    Error::Malformed(e.to_string())
}

/// A range's Raft refusing a peer's message.
pub(super) fn raft_refused<E: std::fmt::Display>(range: RangeId, e: RaftError<TypeConfig, E>) -> Error {
    let stopped = matches!(e, RaftError::Fatal(_));
    Error::RaftRefused { range, message: e.to_string(), stopped }
}

/// openraft stopped the range's replica while handling a peer's message.
pub(super) fn fatal(range: RangeId, e: impl std::fmt::Display) -> Error {
    Error::RaftRefused { range, message: e.to_string(), stopped: true }
}

/// Checks the addressing of a message and finds the replica it is for.
///
/// With TLS the message must come from where it says (docs/security.md, "A node speaks only
/// for itself"): the header's sending node is the caller's certificate's; the vote it carries
/// (a leader's or a candidate's) is the sending replica's own; and that replica is hosted on
/// the caller's node by the range as this replica has it (its applied descriptor, or its
/// log's latest membership), or else by this node's copy of the range directory (in the
/// first range, replica ids are node ids). A sender known to neither is refused as
/// not yet known (UNAVAILABLE; the sender retries): no node can speak as the leader of a
/// range it holds no replica of.
pub(super) fn replica_for(
    store: &Store<Engine>,
    header: Option<&pb::RaftHeader>,
    vote: Option<&pb::Vote>,
    caller: &Caller,
) -> crate::Result<Replica<Engine>> {
    let h = header.ok_or_else(|| Error::Malformed("raft message without a header".into()))?;
    caller.speaks_for(NodeId::new(h.from_node_id), "a raft message")?;
    let r = store.replica_for_message(RangeId::new(h.group_id), ReplicaId::new(h.to_node))?;
    let Some(node) = caller.node() else { return Ok(r) };
    let from = ReplicaId::new(h.from_node);
    if let Some(v) = vote
        && v.node_id != h.from_node
    {
        return Err(Error::PermissionDenied(format!(
            "a raft message from replica {from} carries the vote of replica {}",
            v.node_id
        )));
    }
    // Where the range says the sender is: its applied descriptor, else its log's latest
    // membership (a replica added after what it applied), else the directory.
    let host = r
        .with_descriptor(|d| d.replicas.iter().find(|x| x.replica_id == from).map(|x| x.node_id))
        .or_else(|| {
            r.with_metrics(|m| m.membership_config.membership().get_node(&from).and_then(|n| n.node_id))
        })
        .or_else(|| {
            let desc = r.descriptor();
            let entry =
                zonekv_raft::meta::directory::lookup(store.engine(), FIRST_RANGE, &desc.start).ok().flatten();
            entry
                .filter(|e| e.range_id == desc.range_id)
                .and_then(|e| e.replicas.iter().find(|x| x.replica_id == from).map(|x| x.node_id))
        })
        .or_else(|| (r.range_id() == FIRST_RANGE).then(|| NodeId::of_first_range(from)));
    match host {
        Some(h) if h == node => Ok(r),
        Some(h) => Err(Error::PermissionDenied(format!(
            "node {node} sent a raft message as replica {from} of range {}, which node {h} hosts",
            r.range_id()
        ))),
        None => Err(Error::Unavailable(format!(
            "replica {from} of range {} is not known here (yet): neither the range's membership nor this node's directory names it",
            r.range_id()
        ))),
    }
}

/// An open append stream: its header, which every request must repeat, and the queue its
/// requests reach Raft through.
struct AppendStream {
    header: Option<pb::RaftHeader>,
    requests: mpsc::UnboundedSender<AppendEntriesRequest<TypeConfig>>,
}

/// The queue of answers to the peer.
#[derive(Clone)]
struct Answers(mpsc::UnboundedSender<pb::RaftFrame>);

impl Answers {
    /// Queues `body` as the answer of exchange `id`; false once the peer's stream is gone.
    fn send(&self, id: u64, body: Body) -> bool {
        self.0.send(pb::RaftFrame { id, body: Some(body) }).is_ok()
    }
}

struct Demux {
    store: Store<Engine>,
    /// The node at the other end, from its certificate: every header must name it.
    caller: Caller,
    out: Answers,
    streams: HashMap<u64, AppendStream>,
}

type Answer = Result<BoxFuture<'static, Result<Body, Error>>, Error>;

impl Demux {
    /// Reads the peer's batches until its stream ends or this node stops; then every append
    /// stream's queue closes, which ends the stream in Raft (openraft notices a stop only when
    /// a stream's next request arrives, so without that the node's storage would stay held).
    async fn run(mut self, mut incoming: Streaming<pb::RaftBatch>, refused: oneshot::Sender<Status>) {
        let stopped = self.store.stopped();
        tokio::pin!(stopped);
        loop {
            let batch = tokio::select! {
                biased;
                () = &mut stopped => break,
                batch = incoming.next() => batch,
            };
            match batch {
                Some(Ok(batch)) => batch.frames.into_iter().for_each(|f| self.frame(f)),
                Some(Err(status)) => {
                    // A message that does not decode, or the connection failed.
                    tracing::debug!(%status, "raft batch stream from a peer ended");
                    let _ = refused.send(status);
                    break;
                }
                None => break,
            }
        }
    }

    fn frame(&mut self, frame: pb::RaftFrame) {
        let id = frame.id;
        let answer = match frame.body {
            Some(Body::Open(req)) => return self.open(id, req),
            Some(Body::Append(req)) => return self.append(id, req),
            Some(Body::End(_)) => {
                // An open stream ends once Raft has answered what it got (the stream's task
                // sends `end` then). A stream never opened here (its first request was lost,
                // or refused) ends at once: the sender waits for that `end`.
                if self.streams.remove(&id).is_none() {
                    self.out.send(id, Body::End(pb::Empty {}));
                }
                return;
            }
            Some(Body::Vote(req)) => self.vote(req, false),
            Some(Body::PreVote(req)) => self.vote(req, true),
            Some(Body::AppendEntries(req)) => self.append_entries(req),
            Some(Body::TransferLeader(req)) => self.transfer_leader(req),
            Some(_) => Err(Error::Malformed(format!("raft frame {id} is an answer, sent as a request"))),
            None => Err(Error::Malformed(format!("raft frame {id} has no body"))),
        };
        match answer {
            Ok(call) => {
                let out = self.out.clone();
                tokio::spawn(async move {
                    let body = call.await.unwrap_or_else(|e| Body::Error(status::frame_error(e)));
                    out.send(id, body);
                });
            }
            Err(e) => self.fail(id, e),
        }
    }

    fn fail(&self, id: u64, e: Error) {
        self.out.send(id, Body::Error(status::frame_error(e)));
    }

    /// Ends append stream `id` with `e`.
    fn refuse(&mut self, id: u64, e: Error) {
        tracing::warn!(error = %e, "refused a raft append stream");
        self.streams.remove(&id);
        self.fail(id, e);
    }

    fn vote(&self, req: pb::VoteRequest, pre: bool) -> Answer {
        let r = replica_for(&self.store, req.header.as_ref(), req.vote.as_ref(), &self.caller)?;
        let rpc = codec::vote_request_from_pb(req).map_err(malformed)?;
        r.heard_campaign();
        Ok(Box::pin(async move {
            let resp = if pre { r.raft().pre_vote(rpc).await } else { r.raft().vote(rpc).await };
            let resp = resp.map_err(|e| raft_refused(r.range_id(), e))?;
            Ok(Body::VoteResponse(codec::vote_response_to_pb(&resp)))
        }))
    }

    fn append_entries(&self, req: pb::AppendEntriesRequest) -> Answer {
        let r = replica_for(&self.store, req.header.as_ref(), req.vote.as_ref(), &self.caller)?;
        let rpc = codec::append_request_from_pb(req).map_err(malformed)?;
        Ok(Box::pin(async move {
            let resp = r.raft().append_entries(rpc).await.map_err(|e| raft_refused(r.range_id(), e))?;
            Ok(Body::AppendEntriesResponse(codec::append_response_to_pb(&resp)))
        }))
    }

    fn transfer_leader(&self, req: pb::TransferLeaderRequest) -> Answer {
        let r = replica_for(&self.store, req.header.as_ref(), req.from_leader.as_ref(), &self.caller)?;
        let rpc = codec::transfer_request_from_pb(req).map_err(malformed)?;
        Ok(Box::pin(async move {
            let resp = r.raft().handle_transfer_leader(rpc).await.map_err(|f| fatal(r.range_id(), f))?;
            Ok(Body::TransferLeaderResponse(codec::transfer_response_to_pb(&resp)))
        }))
    }

    /// The first request of append stream `id`: opens it.
    fn open(&mut self, id: u64, req: pb::AppendEntriesRequest) {
        let result = if self.streams.contains_key(&id) {
            Err(Error::Malformed(format!("append stream {id} opened twice")))
        } else {
            self.open_append(id, req)
        };
        if let Err(e) = result {
            self.refuse(id, e);
        }
    }

    /// The next request of append stream `id`. One for a stream this node does not have (it
    /// refused it, or Raft ended it) is dropped: the sender has its answer already.
    fn append(&mut self, id: u64, req: pb::AppendEntriesRequest) {
        let Some(s) = self.streams.get(&id) else { return };
        let result = if s.header != req.header {
            Err(Error::Malformed(format!("append stream {id} changed its header")))
        } else if req.vote.as_ref().zip(req.header.as_ref()).is_some_and(|(v, h)| v.node_id != h.from_node) {
            Err(Error::PermissionDenied(format!("append stream {id} carries another replica's vote")))
        } else {
            codec::append_request_from_pb(req).map_err(malformed).map(|rpc| {
                // Raft may have ended the stream already (its answer `end` is on the way).
                let _ = s.requests.send(rpc);
            })
        };
        if let Err(e) = result {
            self.refuse(id, e);
        }
    }

    fn open_append(&mut self, id: u64, req: pb::AppendEntriesRequest) -> Result<(), Error> {
        let r = replica_for(&self.store, req.header.as_ref(), req.vote.as_ref(), &self.caller)?;
        let header = req.header;
        let first = codec::append_request_from_pb(req).map_err(malformed)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(first);
        self.streams.insert(id, AppendStream { header, requests: tx });
        let out = self.out.clone();
        tokio::spawn(async move {
            let requests = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
            let mut results = std::pin::pin!(r.raft().stream_append(requests));
            while let Some(result) = results.next().await {
                let body = match result {
                    Ok(result) => Body::AppendResult(codec::stream_append_result_to_pb(&result)),
                    Err(f) => {
                        out.send(id, Body::Error(status::frame_error(fatal(r.range_id(), f))));
                        return;
                    }
                };
                if !out.send(id, body) {
                    return;
                }
            }
            out.send(id, Body::End(pb::Empty {}));
        });
        Ok(())
    }
}
