//! The Raft network over gRPC: one lazily connected channel per peer, shared by every group,
//! and on it one batch stream ([`crate::mux`]) carrying every group's Raft messages; snapshots
//! go on their own streams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::RPCTypes;
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::SnapshotOf;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use zonekv_proto::raft::v1 as pb;
use zonekv_proto::raft::v1::raft_frame::Body;
use zonekv_proto::raft::v1::raft_transport_client::RaftTransportClient;
use zonekv_raft::{NodeId, NodeInfo, RangeDescriptor, SnapshotData, TypeConfig, Vote, codec};

use crate::faults::{NetFaults, Verdict};
use crate::mux::{Session, TransportStats};
use crate::rate::RateLimiter;

/// Bytes of snapshot data per gRPC message.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Connections to peers, shared by every group of the node: one gRPC channel per address,
/// and on it one Raft batch stream ([`Session`]) that carries every group's messages; and the
/// node's limit on the snapshot bytes it sends.
#[derive(Clone)]
pub struct Channels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    sessions: Arc<Mutex<HashMap<String, Arc<Session>>>>,
    max_message_bytes: usize,
    snapshot_send: Arc<RateLimiter>,
    stats: Arc<TransportStats>,
    closing: Arc<watch::Sender<bool>>,
}

impl Channels {
    /// A pool whose clients accept messages up to `max_message_bytes` and send at most
    /// `snapshot_bytes_per_sec` of snapshot data (0: unlimited).
    pub(crate) fn new(max_message_bytes: usize, snapshot_bytes_per_sec: u64) -> Self {
        Self {
            channels: Arc::default(),
            sessions: Arc::default(),
            max_message_bytes,
            snapshot_send: Arc::new(RateLimiter::new(snapshot_bytes_per_sec)),
            stats: Arc::default(),
            closing: Arc::new(watch::channel(false).0),
        }
    }

    pub(crate) fn client(&self, addr: &str) -> Result<RaftTransportClient<Channel>, String> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match map.get(addr) {
            Some(c) => c.clone(),
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(2))
                    // The batch stream is long-lived: notice a silent peer within seconds.
                    .http2_keep_alive_interval(Duration::from_secs(1))
                    .keep_alive_timeout(Duration::from_secs(3))
                    .keep_alive_while_idle(true);
                let c = endpoint.connect_lazy();
                map.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(RaftTransportClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(usize::MAX))
    }

    /// The Raft batch stream to the peer at `addr`, opened (again, after a failure) on demand.
    pub(crate) fn session(&self, addr: &str) -> Result<Arc<Session>, String> {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(addr)
            && !s.failed()
        {
            return Ok(s.clone());
        }
        if *self.closing.borrow() {
            return Err("this node is shutting down".to_string());
        }
        let s = Session::open(self.client(addr)?, self.stats.clone(), self.closing.subscribe());
        map.insert(addr.to_string(), s.clone());
        Ok(s)
    }

    /// What the batch streams have sent so far (both directions).
    pub(crate) fn stats(&self) -> &Arc<TransportStats> {
        &self.stats
    }

    /// Ends every batch stream and opens no more (node shutdown).
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Creates the per-peer network clients of one group.
#[derive(Clone)]
pub struct NetworkFactory {
    node_id: NodeId,
    group: u64,
    channels: Channels,
    faults: Option<GroupFaults>,
}

/// The fault table as one group on one node sees it (tests only). The table is keyed by node
/// ids; Raft addresses replicas, so a target replica is mapped to its node through the range's
/// descriptor at every decision (membership changes add replicas).
#[derive(Clone)]
pub(crate) struct GroupFaults {
    pub(crate) table: NetFaults,
    /// This node.
    pub(crate) node: NodeId,
    pub(crate) desc: watch::Receiver<RangeDescriptor>,
}

/// [`GroupFaults`] for the link to one replica.
#[derive(Clone)]
struct LinkFaults {
    group: GroupFaults,
    to_replica: NodeId,
}

impl LinkFaults {
    fn decide(&self) -> Verdict {
        let to = self.group.desc.borrow().node_of(self.to_replica);
        self.group.table.decide(self.group.node, to)
    }
}

impl NetworkFactory {
    /// The network of `group`'s replica `replica_id`; with `faults`, every outgoing message
    /// first asks the fault table what happens to it (tests only).
    pub(crate) fn new(
        replica_id: NodeId,
        group: u64,
        channels: Channels,
        faults: Option<GroupFaults>,
    ) -> Self {
        Self { node_id: replica_id, group, channels, faults }
    }
}

/// The connection of one group to one peer.
pub struct PeerNetwork {
    header: pb::RaftHeader,
    addr: String,
    channels: Channels,
    faults: Option<LinkFaults>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerNetwork {
        PeerNetwork {
            header: pb::RaftHeader { group_id: self.group, from_node: self.node_id, to_node: target },
            addr: node.addr.clone(),
            channels: self.channels.clone(),
            faults: self.faults.clone().map(|group| LinkFaults { group, to_replica: target }),
        }
    }
}

fn status_to_rpc(s: tonic::Status) -> RPCError<TypeConfig> {
    match s.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&s)),
        _ => RPCError::Network(NetworkError::new(&s)),
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

impl PeerNetwork {
    fn client(&self) -> Result<RaftTransportClient<Channel>, RPCError<TypeConfig>> {
        self.channels.client(&self.addr).map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }

    fn session(&self) -> Result<Arc<Session>, RPCError<TypeConfig>> {
        self.channels.session(&self.addr).map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }

    /// Applies injected faults to a message about to be sent: `Err` if it is lost, else
    /// whether a second copy goes out too.
    async fn admit(&self) -> Result<bool, RPCError<TypeConfig>> {
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
                id: self.header.from_node,
                target: self.header.to_node,
                timeout: ttl,
            })),
        }
    }

    /// A vote or (with `pre`) pre-vote request: same message, different frame.
    async fn ask_vote(
        &self,
        rpc: &VoteRequest<TypeConfig>,
        option: RPCOption,
        pre: bool,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut req = codec::vote_request_to_pb(rpc);
        req.header = Some(self.header);
        let request = if pre { Body::PreVote(req) } else { Body::Vote(req) };
        match self.call(RPCTypes::Vote, option.hard_ttl(), request).await? {
            Body::VoteResponse(resp) => codec::vote_response_from_pb(resp).map_err(malformed),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(body: &Body) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(format!("unexpected answer from the peer: {body:?}")))
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
    async fn run<S>(
        self,
        first: AppendEntriesRequest<TypeConfig>,
        mut input: S,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
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

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = SnapshotData;

    /// Pipelined replication as one append stream on the peer's batch stream: requests go out
    /// as openraft produces them, answers come back in order (the batch stream keeps order in
    /// both directions, and the peer feeds one stream's requests to Raft in order).
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            // Take the first request before sending anything: openraft applies its backoff
            // while producing requests, so a peer that refuses connections is retried every
            // backoff interval instead of in a tight loop.
            let mut input = input;
            let Some(first) = input.next().await else {
                return Ok(Box::pin(futures::stream::empty()) as BoxStream<'s, _>);
            };
            let session = self.session()?;
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
                header: self.header,
                faults: self.faults.clone(),
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
                id: self.header.from_node,
                target: self.header.to_node,
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
                                return Some((
                                    Err(RPCError::Timeout(timeout)),
                                    (answers, guard, answered, true),
                                ));
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
            Ok(Box::pin(out) as BoxStream<'s, _>)
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut req = codec::append_request_to_pb(&rpc);
        req.header = Some(self.header);
        match self.call(RPCTypes::AppendEntries, option.hard_ttl(), Body::AppendEntries(req)).await? {
            Body::AppendEntriesResponse(resp) => codec::append_response_from_pb(resp).map_err(malformed),
            other => Err(unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.ask_vote(&rpc, option, false).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.ask_vote(&rpc, option, true).await
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut req = codec::transfer_request_to_pb(&rpc);
        req.header = Some(self.header);
        match self.call(RPCTypes::TransferLeader, option.soft_ttl(), Body::TransferLeader(req)).await? {
            Body::TransferLeaderResponse(resp) => codec::transfer_response_from_pb(resp).map_err(malformed),
            other => Err(unexpected(&other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let limiter = self.channels.snapshot_send.clone();
        let chunks =
            snapshot_chunks(self.header, &vote, &snapshot, limiter.chunk_bytes(SNAPSHOT_CHUNK_BYTES));
        self.admit().await?;
        let mut client = self.client()?;
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
                        id: self.header.from_node,
                        target: self.header.to_node,
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
}

/// Splits a snapshot into transport messages of `chunk_bytes` of data; the first carries
/// header, vote and meta, and every one carries the CRC32 of its slice of data.
fn snapshot_chunks(
    header: pb::RaftHeader,
    vote: &Vote,
    snapshot: &SnapshotOf<TypeConfig, SnapshotData>,
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
