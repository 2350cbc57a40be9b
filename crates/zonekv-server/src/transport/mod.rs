//! The network between nodes, the sending side: the store's [`zonekv_store::Transport`] over
//! gRPC ([`RaftNet`]: one batch stream per peer carrying every range's Raft messages,
//! `session.rs`; links per replica, `link.rs`; snapshots on their own streams, paced by
//! `rate.rs`), and the control plane's [`zonekv_control::Peers`] ([`PeerClient`],
//! `peers.rs`). Both share one lazily connected gRPC channel per peer address ([`Pool`]).
//! The receiving side is `service/raft.rs` and `service/batch.rs`.

mod link;
mod peers;
mod rate;
mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use zonekv_proto::raft::v1::raft_transport_client::RaftTransportClient;
use zonekv_raft::NodeId;
use zonekv_store::{LinkTarget, RaftLink, Transport};
use zonekv_tls::{Connector, Tls};

pub(crate) use self::peers::PeerClient;
pub(crate) use self::rate::RateLimiter;
use self::session::Session;
pub use self::session::TransportStats;
pub(crate) use self::session::batches;
use crate::hooks::FaultTable;

/// One gRPC channel per peer address, connected on first use and shared by the Raft
/// transport and the control plane's calls.
#[derive(Clone)]
pub(crate) struct Pool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Largest message a client accepts.
    max_message_bytes: usize,
    /// The node's certificate, presented to peers; `None`: plaintext.
    tls: Option<Tls>,
}

impl Pool {
    /// A pool whose clients accept messages up to `max_message_bytes` and dial with `tls`.
    pub(crate) fn new(max_message_bytes: usize, tls: Option<Tls>) -> Self {
        Self { channels: Arc::default(), max_message_bytes, tls }
    }

    /// A client of the peer at `addr`.
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
                let c = match &self.tls {
                    Some(tls) => endpoint.connect_with_connector_lazy(Connector::new(tls.clone())),
                    None => endpoint.connect_lazy(),
                };
                map.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(RaftTransportClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(usize::MAX))
    }
}

/// The Raft transport: every range's messages to a peer on one batch stream, opened (again,
/// after a failure) on demand; snapshots paced by the node's send limit.
#[derive(Clone)]
pub(crate) struct RaftNet {
    node: NodeId,
    pool: Pool,
    sessions: Arc<Mutex<HashMap<String, Arc<Session>>>>,
    snapshot_send: Arc<RateLimiter>,
    stats: Arc<TransportStats>,
    closing: Arc<watch::Sender<bool>>,
    faults: FaultTable,
}

impl RaftNet {
    /// The transport of node `node`, sending at most `snapshot_bytes_per_sec` of snapshot data
    /// (0: unlimited), consulting `faults` before every message.
    pub(crate) fn new(node: NodeId, pool: Pool, snapshot_bytes_per_sec: u64, faults: FaultTable) -> Self {
        Self {
            node,
            pool,
            sessions: Arc::default(),
            snapshot_send: Arc::new(RateLimiter::new(snapshot_bytes_per_sec)),
            stats: Arc::default(),
            closing: Arc::new(watch::channel(false).0),
            faults,
        }
    }

    /// The batch stream to the peer at `addr`, opened (again, after a failure) on demand.
    fn session(&self, addr: &str) -> Result<Arc<Session>, String> {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(addr)
            && !s.failed()
        {
            return Ok(s.clone());
        }
        if *self.closing.borrow() {
            return Err("this node is shutting down".to_string());
        }
        let s = Session::open(self.pool.client(addr)?, self.stats.clone(), self.closing.subscribe());
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

impl Transport for RaftNet {
    fn link(&self, target: LinkTarget) -> Box<dyn RaftLink> {
        Box::new(link::PeerLink::new(self.clone(), target))
    }
}
