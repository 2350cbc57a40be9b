//! The gRPC services of a node: `zonekv.kv.v1.Kv`, `zonekv.raft.v1.RaftTransport` (the
//! receiving side of the Raft transport and the control plane's calls) and
//! `zonekv.admin.v1.Admin`. They only translate between protobuf and the store, control-plane
//! and node APIs; errors become statuses through `status.rs`.

mod admin;
mod batch;
mod kv;
mod raft;

use std::sync::Arc;

use tonic::transport::server::Router;
use zonekv_proto::admin::v1::admin_server::AdminServer;
use zonekv_proto::kv::v1::kv_server::KvServer;
use zonekv_proto::raft::v1::raft_transport_server::RaftTransportServer;

use crate::NodeHandle;
use crate::auth::AuthLayer;
use crate::grants::KeyAccess;

/// Bytes a batch message adds around a single Raft message that fills the limit alone.
pub(crate) const BATCH_OVERHEAD: usize = 4096;

/// Most concurrent calls (HTTP/2 streams) one connection may have open; a client past it
/// waits for a stream to finish (HTTP/2 flow control), it is not refused.
pub(crate) const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// Snapshots a node receives at once; more wait (their senders are held by flow control).
const SNAPSHOTS_AT_ONCE: usize = 2;

/// The Raft receive budget (`batch.rs`): what requests from every peer waiting for their
/// ranges may hold, at least two of the largest Raft messages.
fn receive_budget(raft_limit: usize) -> usize {
    raft_limit.saturating_mul(2).max(64 << 20)
}

/// Largest header block of one call: ample for gRPC's own headers and ours.
const MAX_HEADER_BYTES: u32 = 16 << 10;

/// Builds the gRPC router serving every service of the node, behind the authorization layer
/// (`auth.rs`).
pub(crate) fn router(
    node: &NodeHandle,
) -> Router<tower::layer::util::Stack<AuthLayer, tower::layer::util::Identity>> {
    let config = node.config();
    let limit = config.max_message_bytes();
    let raft_limit = config.raft_message_limit();
    let control = node.control();
    let raft = raft::RaftService {
        store: node.store().clone(),
        meta: control.meta().clone(),
        placer: control.placer().clone(),
        liveness: control.liveness().clone(),
        snapshot_recv: node.snapshot_recv().clone(),
        snapshot_slots: Arc::new(tokio::sync::Semaphore::new(SNAPSHOTS_AT_ONCE)),
        max_snapshot_bytes: config.raft.max_snapshot_bytes,
        snapshot_timeout: config.snapshot_timeout(),
        stats: node.net().stats().clone(),
        receive_budget: zonekv_store::MemoryBudget::new(receive_budget(raft_limit)),
    };
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_max_header_list_size(MAX_HEADER_BYTES)
        .layer(AuthLayer { secure: node.tls().is_some() })
        .add_service(
            KvServer::new(kv::KvService {
                store: node.store().clone(),
                access: KeyAccess::new(node.store().clone()),
            })
            .max_decoding_message_size(limit),
        )
        .add_service(
            RaftTransportServer::new(raft)
                .max_decoding_message_size(raft_limit.saturating_add(BATCH_OVERHEAD)),
        )
        .add_service(AdminServer::new(admin::AdminService { node: node.clone() }))
}
