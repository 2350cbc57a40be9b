//! [`Node`]: one ZoneKV node running inside the host process. Starting one wires the layers
//! together — engine, store, transport, control plane, gRPC server — and stopping one takes
//! them down in the reverse order.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zonekv_control::ControlPlane;
use zonekv_engine_rocks::{RocksEngine, RocksOptions};
use zonekv_store::Store;

use crate::hooks::Hooks;
use crate::transport::{PeerClient, Pool, RaftNet, RateLimiter};
use crate::{Error, NodeConfig, NodeHandle, Result, service};

/// The range that covers the whole keyspace until ranges split.
pub use zonekv_raft::keys::FIRST_RANGE;

/// A running ZoneKV node: storage, its replicas, and the gRPC server for clients and peers.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), zonekv_server::Error> {
/// use zonekv_server::{Node, NodeConfig, ReadConsistency};
///
/// let dir = tempfile::tempdir().unwrap();
/// let config = NodeConfig {
///     listen: "127.0.0.1:0".parse().unwrap(), // any free port
///     data_dir: dir.path().into(),
///     ..NodeConfig::default()
/// };
/// let node = Node::start(config).await?;
/// node.initialize(&[(node.id(), node.addr().to_string())]).await?;
/// node.wait_for_leader(std::time::Duration::from_secs(5)).await?;
/// node.put("user/1", "alice").await?;
/// assert_eq!(node.get(b"user/1", ReadConsistency::Linearizable).await?.0.as_deref(), Some(&b"alice"[..]));
/// node.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Node {
    handle: NodeHandle,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    /// The control plane's background loops.
    loops: Vec<JoinHandle<()>>,
    /// Handles of the store held by the node itself (its handle and the control plane's
    /// components): once every other one is gone, the storage closes with the node.
    own_store_handles: usize,
}

impl std::ops::Deref for Node {
    type Target = NodeHandle;

    fn deref(&self) -> &NodeHandle {
        &self.handle
    }
}

impl Node {
    /// Opens (or creates) the node's data directory, starts its Raft replicas and serves gRPC
    /// on `config.listen`. With `config.join` set and no cluster membership yet, also joins the
    /// cluster at that address before returning.
    pub async fn start(config: NodeConfig) -> Result<Node> {
        Self::start_hooked(config, Hooks::default()).await
    }

    /// [`Node::start`] with test hooks (see [`crate::NodeOptions`]).
    #[cfg(feature = "test-hooks")]
    pub async fn start_with(config: NodeConfig, options: crate::NodeOptions) -> Result<Node> {
        Self::start_hooked(config, options.into()).await
    }

    pub(crate) async fn start_hooked(config: NodeConfig, hooks: Hooks) -> Result<Node> {
        config.validate()?;
        let tls = load_tls(&config)?;
        let engine = open_engine(&config).map_err(zonekv_store::Error::from)?;
        #[cfg(feature = "test-hooks")]
        let engine = zonekv_engine::FaultyEngine::new(engine, hooks.disk.node(config.id()));
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Listen { addr: config.listen.to_string(), source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| Error::Listen { addr: config.listen.to_string(), source })?;
        let addr = config.advertise_addr.clone().unwrap_or_else(|| bound.to_string());

        // Wiring, bottom up: the transport the store's replicas talk through, the store, the
        // control plane on it, the gRPC services on both.
        let pool =
            Pool::new(config.raft_message_limit().saturating_add(service::BATCH_OVERHEAD), tls.clone());
        let net = RaftNet::new(
            config.id(),
            pool.clone(),
            config.raft.snapshot_max_bytes_per_sec,
            hooks.faults.clone(),
        );
        let store = Store::open(engine, config.store_config(hooks.store)?, Arc::new(net.clone()))
            .await
            .map_err(|e| match e {
                zonekv_store::Error::OtherNode { owner, node } => Error::Config(format!(
                    "data directory {} belongs to node {owner}, not node {node}",
                    config.data_dir.display()
                )),
                other => other.into(),
            })?;
        let peers = PeerClient::new(config.id(), pool, hooks.faults);
        let control = ControlPlane::new(store.clone(), Arc::new(peers), config.control_config(&addr));
        let snapshot_recv = Arc::new(RateLimiter::new(config.raft.snapshot_max_bytes_per_sec));
        let handle = NodeHandle::new(config, addr, store, control, net, snapshot_recv, tls.clone());
        let own_store_handles = handle.store().handles();
        let loops = handle.control().spawn_loops();

        let (tx, rx) = oneshot::channel();
        let router = service::router(&handle);
        let shutdown = async {
            rx.await.ok();
        };
        // We bind the listener ourselves (clear startup errors, port 0), so tonic's
        // `tcp_nodelay` does not apply: without TCP_NODELAY, Nagle plus delayed ACKs stall small
        // replies for 40 ms. (The TLS listener sets it on every connection it accepts.)
        let task = match tls {
            Some(tls) => {
                let incoming = zonekv_tls::incoming(tls, listener);
                tokio::spawn(async move {
                    if let Err(e) = router.serve_with_incoming_shutdown(incoming, shutdown).await {
                        tracing::error!(error = %e, "gRPC server failed");
                    }
                })
            }
            None => {
                let incoming = tokio_stream::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    |s| s.and_then(|s| s.set_nodelay(true).map(|()| s)),
                );
                tokio::spawn(async move {
                    if let Err(e) = router.serve_with_incoming_shutdown(incoming, shutdown).await {
                        tracing::error!(error = %e, "gRPC server failed");
                    }
                })
            }
        };
        let mut node = Node { handle, server: Some((tx, task)), loops, own_store_handles };
        tracing::info!(node_id = %node.id(), addr = %node.addr(), bound = %bound, "node started");

        if let Some(join) = node.config().join.clone()
            && !node.is_initialized().await
            && let Err(e) = crate::join::join(&node.handle, &join).await
        {
            node.stop().await;
            return Err(e);
        }
        Ok(node)
    }

    /// A cloneable handle to this node's API.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Stops serving, shuts the replicas down and closes the storage. Everything acknowledged
    /// is already durable; this only releases resources.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        let id = self.id();
        // Stop the Raft groups first, so requests still in flight fail fast instead of
        // waiting; the control plane's loops and the long-lived server streams end with them.
        self.store().shutdown().await;
        self.net().close();
        // The loops end at their next look; one in the middle of a call (a split asking the
        // meta range, cleanup asking a leader) is given 5 s in all, then aborted.
        let loops = std::mem::take(&mut self.loops);
        let aborts: Vec<_> = loops.iter().map(JoinHandle::abort_handle).collect();
        if tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(loops)).await.is_err() {
            tracing::warn!(node_id = %id, "background loops did not stop within 5 s; aborting them");
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
        if let Some((tx, mut task)) = self.server.take() {
            let _ = tx.send(());
            // Graceful: connections drain and their tasks drop their handles to the node.
            if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
                tracing::warn!(node_id = %id, "gRPC server did not drain within 5 s; aborting it");
                task.abort();
                let _ = task.await;
            }
        }
        // Unsynced writes (applied state) may sit in the WAL buffer: a clean stop keeps them.
        self.store().close();
        // Storage closes when the last handle goes; wait briefly for connection tasks to let go,
        // so the data directory can be reopened as soon as this returns.
        let released = || self.handle.handles() == 1 && self.store().handles() <= self.own_store_handles;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !released() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !released() {
            tracing::warn!(node_id = %id, "node handles are still held; storage stays open until they drop");
        }
        tracing::info!(node_id = %id, "node stopped");
    }
}

impl Drop for Node {
    /// A node dropped without [`Node::shutdown`] still goes away: serving stops, the loops
    /// end, and the replicas stop once the last handle to the store is gone. (Only a shutdown
    /// waits for all that, and syncs what the engine buffered.)
    fn drop(&mut self) {
        if let Some((_, task)) = self.server.take() {
            task.abort();
            self.store().begin_shutdown();
            self.net().close();
        }
        self.loops.drain(..).for_each(|l| l.abort());
    }
}

/// The node's TLS configuration from `certs-dir`, if set: its certificate must be this node's.
fn load_tls(config: &NodeConfig) -> Result<Option<zonekv_tls::Tls>> {
    let Some(dir) = &config.certs_dir else {
        tracing::warn!(
            node_id = config.node_id,
            "running WITHOUT TLS: any process that reaches this node's port can read and write every key and call every RPC"
        );
        return Ok(None);
    };
    let tls = zonekv_tls::Tls::node(zonekv_tls::CertsDir::new(dir))?;
    if tls.identity() != zonekv_tls::Identity::Node(config.node_id) {
        return Err(Error::Config(format!(
            "{} is the certificate of {}, not of node {}",
            zonekv_tls::CertsDir::new(dir).node_cert().display(),
            tls.identity(),
            config.node_id
        )));
    }
    Ok(Some(tls))
}

/// Opens the node's RocksDB in its data directory (created if missing).
fn open_engine(config: &NodeConfig) -> zonekv_engine::Result<RocksEngine> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| zonekv_engine::Error::Open {
        path: config.data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let storage = &config.storage;
    RocksEngine::open(
        &config.data_dir,
        &RocksOptions {
            block_cache_bytes: storage.block_cache_bytes,
            write_buffer_bytes: storage.write_buffer_bytes,
            max_wal_bytes: storage.max_wal_bytes,
            manual_wal_flush: storage.manual_wal_flush,
            ..RocksOptions::default()
        },
    )
}
