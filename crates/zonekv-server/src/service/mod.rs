//! The gRPC services of a node: `zonekv.kv.v1.Kv`, `zonekv.raft.v1.RaftTransport` and
//! `zonekv.admin.v1.Admin`. They only translate between protobuf and the [`crate::Node`] API;
//! errors become statuses here and nowhere else.

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
pub(crate) fn router(handle: NodeHandle) -> Router {
    let inner = handle.inner.clone();
    let limit = inner.config.max_message_bytes();
    let raft_limit = crate::node::raft_message_limit(&inner.config);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(KvServer::new(kv::KvService { node: handle.clone() }).max_decoding_message_size(limit))
        .add_service(
            RaftTransportServer::new(raft::RaftService { inner: inner.clone() })
                .max_decoding_message_size(raft_limit.saturating_add(BATCH_OVERHEAD)),
        )
        .add_service(AdminServer::new(admin::AdminService { node: handle }))
}
