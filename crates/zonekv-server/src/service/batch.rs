//! `RaftTransport/Batch`, the receiving side of the batched Raft transport: hands each frame
//! of a peer's stream to its range's Raft, keeping every append stream's requests in order,
//! and batches the answers back (docs/multiraft.md "Transport").
//!
//! Bounded (docs/security.md, "Bounded resources"): every request waiting for a range's Raft
//! (one-shot calls in flight, append-stream requests queued) and every open append stream
//! holds a share of the node's Raft receive budget, shared by all peers. A request that does
//! not fit is shed with RESOURCE_EXHAUSTED (its append stream ends; the sender's Raft retries
//! after its backoff). A peer that stops reading its answers while it keeps sending loses its
//! batch stream once [`MAX_UNREAD_ANSWERS`] are waiting.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use openraft::raft::AppendEntriesRequest;
use prost::Message;
use tokio::sync::{Notify, mpsc, oneshot};
use tonic::{Status, Streaming};
use zonekv_proto::raft::v1 as pb;
use zonekv_proto::raft::v1::raft_frame::Body;
use zonekv_raft::{TypeConfig, codec};

use openraft::errors::RaftError;
use zonekv_raft::keys::FIRST_RANGE;
use zonekv_raft::{NodeId, RangeId, ReplicaId};
use zonekv_store::{Charge, MemoryBudget, Replica, Store};

use crate::auth::Caller;
use crate::handle::Engine;
use crate::transport::{TransportStats, batches};
use crate::{Error, status};

/// What a request waiting for Raft costs beside its own encoding (its task, queue slot and
/// decoded form), for the receive budget.
const REQUEST_OVERHEAD_BYTES: usize = 4096;

/// What an open append stream costs while it is open (its task and Raft's stream state).
const STREAM_BYTES: usize = 8192;

/// Answers a peer may leave unread while it keeps sending; past this its batch stream ends.
/// Far above what a peer reading at any pace leaves (its own windows bound what it asks).
pub(super) const MAX_UNREAD_ANSWERS: usize = 65_536;

/// Serves one peer's batch stream; the answers end when the node stops. Requests waiting for
/// Raft take their share of `budget` (the node's, shared by every peer).
pub(super) fn serve(
    store: Store<Engine>,
    stats: Arc<TransportStats>,
    incoming: Streaming<pb::RaftBatch>,
    caller: Caller,
    budget: Arc<MemoryBudget>,
) -> BoxStream<'static, Result<pb::RaftBatch, Status>> {
    let (out, rx) = mpsc::unbounded_channel();
    let (refused, refusal) = oneshot::channel();
    let stopped = store.stopped();
    stats.streams_in.fetch_add(1, Ordering::Relaxed);
    let out = Answers { tx: out, unread: Arc::default(), overflow: Arc::default() };
    let unread = out.unread.clone();
    let demux = Demux { store, caller, out, budget, streams: HashMap::new() };
    let serving = stats.clone();
    tokio::spawn(async move {
        demux.run(incoming, refused).await;
        serving.streams_in.fetch_sub(1, Ordering::Relaxed);
    });
    // After the last answer: why the peer's stream was refused, if it was.
    let refusal = futures::stream::once(refusal).filter_map(|r| std::future::ready(r.ok().map(Err)));
    let answers = batches(rx, stats).map(move |b| {
        unread.fetch_sub(b.frames.len(), Ordering::Relaxed);
        Ok(b)
    });
    Box::pin(answers.chain(refusal).take_until(stopped))
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

/// A request queued for an append stream, holding its share of the receive budget until Raft
/// takes it.
type Queued = (AppendEntriesRequest<TypeConfig>, Charge);

/// An open append stream: its header, which every request must repeat, and the queue its
/// requests reach Raft through.
struct AppendStream {
    header: Option<pb::RaftHeader>,
    requests: mpsc::UnboundedSender<Queued>,
}

/// The queue of answers to the peer, and how many of them it has not taken yet.
#[derive(Clone)]
struct Answers {
    tx: mpsc::UnboundedSender<pb::RaftFrame>,
    unread: Arc<AtomicUsize>,
    /// Told when the peer leaves more than [`MAX_UNREAD_ANSWERS`] unread.
    overflow: Arc<Notify>,
}

impl Answers {
    /// Queues `body` as the answer of exchange `id`; false once the peer's stream is gone (or
    /// is being ended for leaving its answers unread).
    fn send(&self, id: u64, body: Body) -> bool {
        if self.unread.fetch_add(1, Ordering::Relaxed) >= MAX_UNREAD_ANSWERS {
            self.unread.fetch_sub(1, Ordering::Relaxed);
            self.overflow.notify_one();
            return false;
        }
        self.tx.send(pb::RaftFrame { id, body: Some(body) }).is_ok()
    }
}

struct Demux {
    store: Store<Engine>,
    /// The node at the other end, from its certificate: every header must name it.
    caller: Caller,
    out: Answers,
    /// The node's Raft receive budget.
    budget: Arc<MemoryBudget>,
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
        let overflow = self.out.overflow.clone();
        loop {
            let batch = tokio::select! {
                biased;
                () = &mut stopped => break,
                () = overflow.notified() => {
                    let e = Error::ResourceExhausted(format!(
                        "the peer left {MAX_UNREAD_ANSWERS} raft answers unread while it kept sending; \
                         its batch stream is ended"
                    ));
                    tracing::warn!(error = %e, "refused a raft batch stream");
                    let _ = refused.send(Status::from(e));
                    break;
                }
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

    /// Takes `bytes` (plus a request's overhead) from the receive budget, or says why not.
    fn charge(&self, bytes: usize, what: &str) -> Result<Charge, Error> {
        self.budget.try_charge(bytes + REQUEST_OVERHEAD_BYTES).ok_or_else(|| {
            Error::ResourceExhausted(format!(
                "this node holds {} bytes of raft requests waiting for their ranges (limit {}); \
                 {what} was shed, nothing was done: retry later",
                self.budget.used(),
                self.budget.limit()
            ))
        })
    }

    fn frame(&mut self, frame: pb::RaftFrame) {
        let id = frame.id;
        // A one-shot request's size, for its share of the receive budget (stream frames are
        // charged where they are queued).
        let bytes = match &frame.body {
            Some(Body::Open(_) | Body::Append(_) | Body::End(_)) => 0,
            _ => frame.encoded_len(),
        };
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
        // A one-shot request is answered by its own task, which holds its share of the
        // receive budget until it is done.
        match answer.and_then(|call| Ok((call, self.charge(bytes, "a raft request")?))) {
            Ok((call, charge)) => {
                let out = self.out.clone();
                tokio::spawn(async move {
                    let body = call.await.unwrap_or_else(|e| Body::Error(status::frame_error(e)));
                    drop(charge);
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
            let bytes = req.encoded_len();
            self.charge(bytes, "an append request").and_then(|charge| {
                codec::append_request_from_pb(req).map_err(malformed).map(|rpc| {
                    // Raft may have ended the stream already (its answer `end` is on the way).
                    let _ = s.requests.send((rpc, charge));
                })
            })
        };
        if let Err(e) = result {
            self.refuse(id, e);
        }
    }

    /// Opens append stream `id` with its first request. The stream's share of the receive
    /// budget is held by its task; each request's, until Raft takes it.
    fn open_append(&mut self, id: u64, req: pb::AppendEntriesRequest) -> Result<(), Error> {
        let open = self.charge(STREAM_BYTES, "a new append stream")?;
        let first = self.charge(req.encoded_len(), "an append request")?;
        let r = replica_for(&self.store, req.header.as_ref(), req.vote.as_ref(), &self.caller)?;
        let header = req.header;
        let rpc = codec::append_request_from_pb(req).map_err(malformed)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send((rpc, first));
        self.streams.insert(id, AppendStream { header, requests: tx });
        let out = self.out.clone();
        tokio::spawn(async move {
            let _open = open;
            // A request gives its share back as Raft takes it.
            let requests = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|(rpc, _charge)| rpc);
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
