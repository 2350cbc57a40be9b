//! One replica's link to a replica of its range on another node: its calls (votes, single
//! appends, leader transfers) as exchanges on the batch stream to that node; its replication
//! sessions as append streams on it, requests going out as openraft produces them without
//! waiting for earlier answers (a window of them in flight) and answers coming back in order
//! (the batch stream keeps order both ways, and the peer feeds one stream's requests to Raft in
//! order); its snapshots on their own gRPC streams, in checksummed chunks paced by the node's
//! snapshot send limit (the receiving side is `service/raft.rs`). Injected faults (tests) are
//! applied to every message first.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use openraft::RPCTypes;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use tonic::transport::Channel;
use zonekv_proto::raft::v1 as pb;
use zonekv_proto::raft::v1::raft_frame::Body;
use zonekv_proto::raft::v1::raft_transport_client::RaftTransportClient;
use zonekv_raft::{ReplicaId, TypeConfig, Vote, codec};
use zonekv_store::{LinkTarget, RaftLink, RpcResult, Snapshot};

use super::RaftNet;
use super::session::Session;
use crate::hooks::{LinkFaults, Verdict};

/// The link of one replica to one replica of its range on another node.
pub(crate) struct PeerLink {
    pub(super) header: pb::RaftHeader,
    addr: String,
    pub(super) net: RaftNet,
    pub(super) faults: Option<LinkFaults>,
}

pub(super) fn status_to_rpc(s: tonic::Status) -> RPCError<TypeConfig> {
    if crate::status::is_unreachable(&s) {
        RPCError::Unreachable(Unreachable::new(&s))
    } else {
        RPCError::Network(NetworkError::new(&s))
    }
}

fn malformed(e: zonekv_raft::Error) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&e))
}

fn injected_loss() -> Unreachable<TypeConfig> {
    Unreachable::from_string("message lost (injected fault)")
}

/// Holds a message for its injected delay; `None` if it is lost, else whether to send it twice.
async fn admit(faults: Option<&LinkFaults>) -> Option<bool> {
    let Some(f) = faults else { return Some(false) };
    match f.decide() {
        Verdict::Drop => None,
        Verdict::Deliver { delay, duplicate } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some(duplicate)
        }
    }
}

fn unexpected(body: &Body) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(format!("unexpected answer from the peer: {body:?}")))
}

impl PeerLink {
    pub(super) fn new(net: RaftNet, target: LinkTarget) -> Self {
        let faults = net.faults.link(net.node, &target.desc, target.to);
        let header = pb::RaftHeader {
            group_id: target.range.get(),
            from_node: target.from.get(),
            to_node: target.to.get(),
            from_node_id: net.node.get(),
        };
        Self { header, addr: target.info.addr, net, faults }
    }

    pub(super) fn client(&self) -> Result<RaftTransportClient<Channel>, RPCError<TypeConfig>> {
        self.net.pool.client(&self.addr).map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }

    pub(super) fn session(&self) -> Result<Arc<Session>, RPCError<TypeConfig>> {
        self.net.session(&self.addr).map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }

    /// Applies injected faults to a message about to be sent: `Err` if it is lost, else
    /// whether a second copy goes out too.
    pub(super) async fn admit(&self) -> Result<bool, RPCError<TypeConfig>> {
        admit(self.faults.as_ref()).await.ok_or_else(|| RPCError::Unreachable(injected_loss()))
    }

    /// Sends one request on the batch stream and waits up to `ttl` for its answer.
    async fn call(
        &self,
        action: RPCTypes,
        ttl: Duration,
        request: Body,
    ) -> Result<Body, RPCError<TypeConfig>> {
        let duplicate = self.admit().await?;
        let session = self.session()?;
        if duplicate {
            session.send_unanswered(request.clone());
        }
        let (id, answer) = session.call(request).map_err(status_to_rpc)?;
        // openraft may drop this future on its own deadline: the waiter goes either way.
        let _forget = Forget { session: session.clone(), id };
        match tokio::time::timeout(ttl, answer).await {
            Ok(Ok(Ok(body))) => Ok(body),
            Ok(Ok(Err(status))) => Err(status_to_rpc(status)),
            Ok(Err(_)) => {
                Err(RPCError::Unreachable(Unreachable::from_string("raft stream to the peer closed")))
            }
            Err(_) => Err(RPCError::Timeout(Timeout {
                action,
                id: ReplicaId::new(self.header.from_node),
                target: ReplicaId::new(self.header.to_node),
                timeout: ttl,
            })),
        }
    }

    /// A vote or (with `pre`) pre-vote request: same message, different frame.
    async fn ask_vote(
        &self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
        pre: bool,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut req = codec::vote_request_to_pb(&rpc);
        req.header = Some(self.header);
        let request = if pre { Body::PreVote(req) } else { Body::Vote(req) };
        match self.call(RPCTypes::Vote, option.hard_ttl(), request).await? {
            Body::VoteResponse(resp) => codec::vote_response_from_pb(resp).map_err(malformed),
            other => Err(unexpected(&other)),
        }
    }
}

/// Stops waiting for an exchange's answer when dropped.
struct Forget {
    session: Arc<Session>,
    id: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.session.forget(self.id);
    }
}

impl RaftLink for PeerLink {
    fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> BoxFuture<'_, RpcResult<AppendEntriesResponse<TypeConfig>>> {
        Box::pin(async move {
            let mut req = codec::append_request_to_pb(&rpc);
            req.header = Some(self.header);
            match self.call(RPCTypes::AppendEntries, option.hard_ttl(), Body::AppendEntries(req)).await? {
                Body::AppendEntriesResponse(resp) => codec::append_response_from_pb(resp).map_err(malformed),
                other => Err(unexpected(&other)),
            }
        })
    }

    fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        pre: bool,
        option: RPCOption,
    ) -> BoxFuture<'_, RpcResult<VoteResponse<TypeConfig>>> {
        Box::pin(self.ask_vote(rpc, option, pre))
    }

    fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> BoxFuture<'_, RpcResult<TransferLeaderResponse<TypeConfig>>> {
        Box::pin(async move {
            let mut req = codec::transfer_request_to_pb(&rpc);
            req.header = Some(self.header);
            match self.call(RPCTypes::TransferLeader, option.soft_ttl(), Body::TransferLeader(req)).await? {
                Body::TransferLeaderResponse(resp) => {
                    codec::transfer_response_from_pb(resp).map_err(malformed)
                }
                other => Err(unexpected(&other)),
            }
        })
    }

    fn stream_append(
        &mut self,
        input: BoxStream<'static, AppendEntriesRequest<TypeConfig>>,
        _option: RPCOption,
    ) -> BoxFuture<'_, RpcResult<BoxStream<'static, RpcResult<StreamAppendResult<TypeConfig>>>>> {
        Box::pin(stream(self, input))
    }

    fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: BoxFuture<'static, ReplicationClosed>,
        option: RPCOption,
    ) -> BoxFuture<'_, Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>>> {
        Box::pin(send_snapshot(self, vote, snapshot, cancel, option))
    }
}

/// How long a replication session waits for the next answer while requests are outstanding
/// before it gives up with `Timeout` (openraft then starts a new session). Generous: it only
/// guards against an answer that will never come.
const APPEND_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests of one replication session in flight at once (each up to
/// `raft.max-entries-per-append` entries): a follower far behind gets its backlog a window at a
/// time instead of its leader reading it all into the send queue, where every other range's
/// messages to that peer would wait behind it.
const APPEND_WINDOW: usize = 32;

/// Sends one replication session's requests as an append stream: `open` with the first,
/// `append` with the rest, in order, and `end` last — when openraft's requests end, one is
/// lost (fault injection), or `stop` fires (openraft dropped the answers). The only writer of
/// the stream's frames, so nothing follows its `end`.
struct RequestSender {
    session: Arc<Session>,
    id: u64,
    header: pb::RaftHeader,
    faults: Option<LinkFaults>,
    /// Set when a request was lost to an injected fault.
    lost: Arc<AtomicBool>,
    /// Requests sent so far.
    sent: Arc<AtomicU64>,
    /// One permit per request that may be in flight; each answer returns one.
    window: Arc<tokio::sync::Semaphore>,
}

impl RequestSender {
    async fn run(
        self,
        first: AppendEntriesRequest<TypeConfig>,
        mut input: BoxStream<'static, AppendEntriesRequest<TypeConfig>>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let Self { session, id, header, faults, lost, sent, window } = self;
        let mut next = Some(first);
        let mut opened = false;
        while let Some(r) = next {
            // Wait for room in the window, then for injected faults (a delay holds back the
            // requests behind it: the stream keeps order).
            let admitted = tokio::select! {
                biased;
                _ = &mut stop => break,
                a = async {
                    if let Ok(permit) = window.acquire().await {
                        permit.forget();
                    }
                    admit(faults.as_ref()).await
                } => a.is_some(),
            };
            if !admitted {
                lost.store(true, Ordering::Relaxed);
                break;
            }
            let mut req = codec::append_request_to_pb(&r);
            req.header = Some(header);
            sent.fetch_add(1, Ordering::Relaxed);
            session.send(id, if opened { Body::Append(req) } else { Body::Open(req) });
            opened = true;
            next = tokio::select! {
                biased;
                _ = &mut stop => None,
                n = input.next() => n,
            };
        }
        session.send(id, Body::End(pb::Empty {}));
    }
}

/// Opens an append stream for openraft's replication session `input` and returns its answers.
pub(super) async fn stream(
    link: &mut PeerLink,
    mut input: BoxStream<'static, AppendEntriesRequest<TypeConfig>>,
) -> RpcResult<BoxStream<'static, RpcResult<StreamAppendResult<TypeConfig>>>> {
    // Take the first request before sending anything: openraft applies its backoff
    // while producing requests, so a peer that refuses connections is retried every
    // backoff interval instead of in a tight loop.
    let Some(first) = input.next().await else {
        return Ok(Box::pin(futures::stream::empty()) as BoxStream<'static, _>);
    };
    let session = link.session()?;
    let (id, answers) = session.open_stream().map_err(status_to_rpc)?;
    // Injected faults: a delayed request holds back the ones behind it (the stream
    // keeps order); a lost one ends the request stream, and the answers end with
    // `Unreachable`, as when a connection is reset.
    let lost = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let window = Arc::new(tokio::sync::Semaphore::new(APPEND_WINDOW));
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let sender = RequestSender {
        session: session.clone(),
        id,
        header: link.header,
        faults: link.faults.clone(),
        lost: lost.clone(),
        sent: sent.clone(),
        window: window.clone(),
    };
    tokio::spawn(sender.run(first, input, stopped));
    // Dropped with the answers (openraft ended the session): the sender stops and ends
    // the stream; the answers are no longer waited for.
    let guard = (Forget { session, id }, stop);
    let timeout = Timeout {
        action: RPCTypes::AppendEntries,
        id: ReplicaId::new(link.header.from_node),
        target: ReplicaId::new(link.header.to_node),
        timeout: APPEND_ANSWER_TIMEOUT,
    };
    let state = (answers, guard, 0u64, false);
    let out = futures::stream::unfold(state, move |(mut answers, guard, answered, done)| {
        let (sent, timeout, window) = (sent.clone(), timeout.clone(), window.clone());
        async move {
            if done {
                return None;
            }
            // Waiting for answers to requests sent: bounded. Waiting for openraft to
            // produce more requests: not.
            let answer = if sent.load(Ordering::Relaxed) > answered {
                match tokio::time::timeout(APPEND_ANSWER_TIMEOUT, answers.recv()).await {
                    Ok(a) => a?,
                    Err(_) => {
                        return Some((Err(RPCError::Timeout(timeout)), (answers, guard, answered, true)));
                    }
                }
            } else {
                answers.recv().await?
            };
            let item = match answer {
                Ok(Body::AppendResult(r)) => {
                    window.add_permits(1);
                    codec::stream_append_result_from_pb(r).map_err(malformed)
                }
                Ok(Body::End(_)) => return None,
                Ok(other) => Err(unexpected(&other)),
                Err(status) => Err(status_to_rpc(status)),
            };
            Some((item, (answers, guard, answered + 1, false)))
        }
    })
    .chain(
        futures::stream::once(async move {
            lost.load(Ordering::Relaxed).then(|| Err(RPCError::Unreachable(injected_loss())))
        })
        .filter_map(std::future::ready),
    );
    Ok(Box::pin(out) as BoxStream<'static, _>)
}

/// Bytes of snapshot data per gRPC message.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Sends `snapshot` to the link's peer on a stream of its own, in checksummed chunks paced by
/// the node's snapshot send limit, unless `cancel` completes first.
async fn send_snapshot(
    link: &mut PeerLink,
    vote: Vote,
    snapshot: Snapshot,
    cancel: BoxFuture<'static, ReplicationClosed>,
    option: RPCOption,
) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
    let limiter = link.net.snapshot_send.clone();
    let chunks = snapshot_chunks(link.header, &vote, &snapshot, limiter.chunk_bytes(SNAPSHOT_CHUNK_BYTES));
    link.admit().await?;
    let mut client = link.client()?;
    // Each chunk waits for its share of the node's snapshot send rate.
    let paced = futures::stream::iter(chunks).then(move |c| {
        let limiter = limiter.clone();
        async move {
            limiter.acquire(c.data.len()).await;
            c
        }
    });
    let ttl = option.soft_ttl();
    let send = tokio::time::timeout(ttl, client.install_snapshot(paced));
    tokio::select! {
        closed = cancel => Err(StreamingError::Closed(closed)),
        resp = send => {
            let resp = match resp {
                Ok(Ok(resp)) => resp.into_inner(),
                Ok(Err(status)) => return Err(status_to_rpc(status).into()),
                Err(_) => return Err(StreamingError::Timeout(Timeout {
                    action: RPCTypes::InstallSnapshot,
                    id: ReplicaId::new(link.header.from_node),
                    target: ReplicaId::new(link.header.to_node),
                    timeout: ttl,
                })),
            };
            let vote = resp.vote.as_ref().map(codec::vote_from_pb).ok_or_else(|| {
                StreamingError::Network(NetworkError::from_string("snapshot response without a vote"))
            })?;
            Ok(SnapshotResponse::new(vote))
        }
    }
}

/// Splits a snapshot into transport messages of `chunk_bytes` of data; the first carries
/// header, vote and meta, and every one carries the CRC32 of its slice of data.
fn snapshot_chunks(
    header: pb::RaftHeader,
    vote: &Vote,
    snapshot: &Snapshot,
    chunk_bytes: usize,
) -> Vec<pb::SnapshotChunk> {
    let data = &snapshot.snapshot;
    let mut chunks: Vec<pb::SnapshotChunk> = data
        .chunks(chunk_bytes)
        .map(|c| pb::SnapshotChunk {
            crc32: crc32fast::hash(c),
            data: bytes::Bytes::copy_from_slice(c),
            ..Default::default()
        })
        .collect();
    if chunks.is_empty() {
        chunks.push(pb::SnapshotChunk { crc32: crc32fast::hash(&[]), ..Default::default() });
    }
    chunks[0].header = Some(header);
    chunks[0].vote = Some(codec::vote_to_pb(vote));
    chunks[0].meta = Some(codec::snapshot_meta_to_pb(&snapshot.meta));
    chunks
}
