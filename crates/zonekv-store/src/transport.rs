//! What the store needs of the network: a link from one of its replicas to a replica of the
//! same range on another node. The store defines the trait and the server implements it (its
//! batched gRPC transport), as TiKV's raftstore defines `Transport` for its server; tests use
//! [`NoTransport`].
//!
//! [`RaftLink`] is openraft's `RaftNetworkV2` made object-safe (futures and streams boxed), so
//! a store holds one `Arc<dyn Transport>` whatever the network, and [`GroupNetwork`] adapts it
//! back to what openraft calls.

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::SnapshotOf;
use tokio::sync::watch;
use zonekv_raft::{NodeInfo, RangeDescriptor, RangeId, ReplicaId, SnapshotData, TypeConfig, Vote};

/// The result of one Raft RPC.
pub type RpcResult<T> = Result<T, RPCError<TypeConfig>>;

/// A whole snapshot as openraft sends it.
pub type Snapshot = SnapshotOf<TypeConfig, SnapshotData>;

/// Which link a replica asks for.
#[derive(Clone)]
pub struct LinkTarget {
    /// The range.
    pub range: RangeId,
    /// The sending replica (on this node).
    pub from: ReplicaId,
    /// The receiving replica.
    pub to: ReplicaId,
    /// What the range's membership says of the receiver: its node's address (and the node,
    /// for a replica added by a move).
    pub info: NodeInfo,
    /// The range's descriptor as this replica applied it: which node hosts which replica
    /// (`node_of(to)`), kept current as memberships change.
    pub desc: watch::Receiver<RangeDescriptor>,
}

/// The network between the nodes, as the store sees it.
pub trait Transport: Send + Sync + 'static {
    /// A link from `target.from` to `target.to`. Connects lazily: creating one never fails,
    /// sending on it may.
    fn link(&self, target: LinkTarget) -> Box<dyn RaftLink>;
}

/// One replica's connection to another replica of its range: openraft's `RaftNetworkV2`,
/// object-safe. Semantics are openraft's; see its documentation of each call.
pub trait RaftLink: Send + Sync + 'static {
    /// One `AppendEntries` request.
    fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> BoxFuture<'_, RpcResult<AppendEntriesResponse<TypeConfig>>>;

    /// A pipelined replication session: requests as openraft produces them, answers in order.
    fn stream_append(
        &mut self,
        input: BoxStream<'static, AppendEntriesRequest<TypeConfig>>,
        option: RPCOption,
    ) -> BoxFuture<'_, RpcResult<BoxStream<'static, RpcResult<StreamAppendResult<TypeConfig>>>>>;

    /// A vote request (`pre`: a pre-vote, which changes nothing on the receiver).
    fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        pre: bool,
        option: RPCOption,
    ) -> BoxFuture<'_, RpcResult<VoteResponse<TypeConfig>>>;

    /// Hands the leadership to the receiver.
    fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> BoxFuture<'_, RpcResult<TransferLeaderResponse<TypeConfig>>>;

    /// Sends a whole snapshot, unless `cancel` completes first.
    fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: BoxFuture<'static, ReplicationClosed>,
        option: RPCOption,
    ) -> BoxFuture<'_, Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>>>;
}

/// A transport that reaches nobody: every message fails as unreachable. For a store whose
/// ranges have one replica (single-node tests and tools).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTransport;

impl Transport for NoTransport {
    fn link(&self, _target: LinkTarget) -> Box<dyn RaftLink> {
        Box::new(NoLink)
    }
}

struct NoLink;

fn unreachable<T: Send + 'static>() -> BoxFuture<'static, RpcResult<T>> {
    Box::pin(async { Err(RPCError::Unreachable(Unreachable::from_string("this store has no network"))) })
}

impl RaftLink for NoLink {
    fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> BoxFuture<'_, RpcResult<AppendEntriesResponse<TypeConfig>>> {
        unreachable()
    }

    fn stream_append(
        &mut self,
        _input: BoxStream<'static, AppendEntriesRequest<TypeConfig>>,
        _option: RPCOption,
    ) -> BoxFuture<'_, RpcResult<BoxStream<'static, RpcResult<StreamAppendResult<TypeConfig>>>>> {
        unreachable()
    }

    fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _pre: bool,
        _option: RPCOption,
    ) -> BoxFuture<'_, RpcResult<VoteResponse<TypeConfig>>> {
        unreachable()
    }

    fn transfer_leader(
        &mut self,
        _rpc: TransferLeaderRequest<TypeConfig>,
        _option: RPCOption,
    ) -> BoxFuture<'_, RpcResult<TransferLeaderResponse<TypeConfig>>> {
        unreachable()
    }

    fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot,
        _cancel: BoxFuture<'static, ReplicationClosed>,
        _option: RPCOption,
    ) -> BoxFuture<'_, Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>>> {
        Box::pin(async {
            Err(StreamingError::Unreachable(Unreachable::from_string("this store has no network")))
        })
    }
}

/// openraft's network factory for one group, over the store's transport.
pub(crate) struct GroupNetwork {
    pub(crate) transport: std::sync::Arc<dyn Transport>,
    pub(crate) range: RangeId,
    pub(crate) replica: ReplicaId,
    pub(crate) desc: watch::Receiver<RangeDescriptor>,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = Link;

    async fn new_client(&mut self, target: ReplicaId, node: &NodeInfo) -> Link {
        Link(self.transport.link(LinkTarget {
            range: self.range,
            from: self.replica,
            to: target,
            info: node.clone(),
            desc: self.desc.clone(),
        }))
    }
}

/// One link as openraft's network type.
pub(crate) struct Link(Box<dyn RaftLink>);

impl RaftNetworkV2<TypeConfig> for Link {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<TypeConfig>> {
        self.0.append_entries(rpc, option).await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, RpcResult<BoxStream<'s, RpcResult<StreamAppendResult<TypeConfig>>>>>
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let answers = self.0.stream_append(Box::pin(input), option).await?;
            Ok(answers as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<TypeConfig>> {
        self.0.vote(rpc, false, option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<TypeConfig>> {
        self.0.vote(rpc, true, option).await
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<TransferLeaderResponse<TypeConfig>> {
        self.0.transfer_leader(rpc, option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        self.0.full_snapshot(vote, snapshot, Box::pin(cancel), option).await
    }
}
