//! The gRPC services of a node: `zonekv.kv.v1.Kv`, `zonekv.raft.v1.RaftTransport` (the
//! receiving side of the Raft transport and the control plane's calls) and
//! `zonekv.admin.v1.Admin`. They only translate between protobuf and the store, control-plane
//! and node APIs; errors become statuses through `status.rs`.

mod admin;
mod batch;
mod kv;
mod raft;

use tonic::transport::server::Router;
use zonekv_proto::admin::v1::admin_server::AdminServer;
use zonekv_proto::kv::v1::kv_server::KvServer;
use zonekv_proto::raft::v1::raft_transport_server::RaftTransportServer;

use crate::NodeHandle;

/// Bytes a batch message adds around a single Raft message that fills the limit alone.
pub(crate) const BATCH_OVERHEAD: usize = 4096;

/// Builds the gRPC router serving every service of the node.
pub(crate) fn router(node: &NodeHandle) -> Router {
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
        stats: node.net().stats().clone(),
    };
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(
            KvServer::new(kv::KvService { store: node.store().clone() }).max_decoding_message_size(limit),
        )
        .add_service(
            RaftTransportServer::new(raft)
                .max_decoding_message_size(raft_limit.saturating_add(BATCH_OVERHEAD)),
        )
        .add_service(AdminServer::new(admin::AdminService { node: node.clone() }))
}
