//! [`LocalCluster`]: a whole ZoneKV cluster inside one process, on loopback ports. What the
//! demo runs (`zonekv demo`), and handy for embedding a replicated store in one host during
//! development. Nodes start without test hooks unless the `test-hooks` feature is on and the
//! cluster is started with [`crate::NodeOptions`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use zonekv_raft::NodeId;

use crate::hooks::Hooks;
use crate::{Error, Node, NodeConfig, Result};

/// Several nodes in one process, each with its own data directory and loopback port, forming
/// one cluster. Used by `zonekv demo`, the benchmarks and tests; also handy for embedding a
/// replicated store in one host during development.
pub struct LocalCluster {
    nodes: Vec<Option<Node>>,
    configs: Vec<NodeConfig>,
    hooks: Hooks,
    _temp: Option<TempDir>,
}

impl LocalCluster {
    /// Starts `size` nodes (ids 1..=size) with data under `data_dir` (a temporary directory,
    /// removed on drop, when `None`) and bootstraps them into one cluster.
    pub async fn start(size: usize, data_dir: Option<&Path>) -> Result<Self> {
        Self::start_with(size, data_dir, NodeConfig::default()).await
    }

    /// Like [`LocalCluster::start`], with `template` as the base configuration of every node
    /// (its `node-id`, `listen` and `data-dir` are replaced).
    pub async fn start_with(size: usize, data_dir: Option<&Path>, template: NodeConfig) -> Result<Self> {
        let localities = vec![template.locality.clone(); size];
        Self::start_placed(&localities, data_dir, template).await
    }

    /// Like [`LocalCluster::start_with`], one node per entry of `localities` (node `i + 1` at
    /// `localities[i]`, e.g. `region=eu,zone=a`).
    pub async fn start_placed(
        localities: &[String],
        data_dir: Option<&Path>,
        template: NodeConfig,
    ) -> Result<Self> {
        Self::start_hooked(localities, data_dir, template, Hooks::default()).await
    }

    /// Like [`LocalCluster::start_with`], every node (also after a restart) started with
    /// `options`: a shared fault table for the Raft transport, test hooks.
    #[cfg(feature = "test-hooks")]
    pub async fn start_with_options(
        size: usize,
        data_dir: Option<&Path>,
        template: NodeConfig,
        options: crate::NodeOptions,
    ) -> Result<Self> {
        let localities = vec![template.locality.clone(); size];
        Self::start_hooked(&localities, data_dir, template, options.into()).await
    }

    async fn start_hooked(
        localities: &[String],
        data_dir: Option<&Path>,
        template: NodeConfig,
        hooks: Hooks,
    ) -> Result<Self> {
        let size = localities.len();
        if size == 0 {
            return Err(Error::Config("a cluster needs at least one node".into()));
        }
        let (temp, base) = match data_dir {
            Some(d) => (None, d.to_path_buf()),
            None => {
                let t = tempfile::Builder::new().prefix("zonekv-cluster-").tempdir().map_err(|e| {
                    Error::Store(zonekv_store::Error::Storage(zonekv_engine::Error::Open {
                        path: "temporary directory".into(),
                        reason: e.to_string(),
                    }))
                })?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        if let Some(root) = &template.certs_dir {
            zonekv_tls::local_pki(root, size as u64)?;
        }
        let mut nodes = Vec::new();
        let mut configs = Vec::new();
        for id in 1..=size as u64 {
            let config = NodeConfig {
                node_id: id,
                listen: "127.0.0.1:0".parse().expect("valid address"),
                data_dir: node_dir(&base, id),
                join: None,
                locality: localities[id as usize - 1].clone(),
                certs_dir: template.certs_dir.as_ref().map(|root| zonekv_tls::local_node_dir(root, id)),
                ..template.clone()
            };
            let node = Node::start_hooked(config.clone(), hooks.clone()).await?;
            // Restarts reuse the port the node got.
            let bound = NodeConfig { listen: node.listen_addr().unwrap_or(config.listen), ..config };
            configs.push(bound);
            nodes.push(Some(node));
        }
        let cluster = Self { nodes, configs, hooks, _temp: temp };
        let first = cluster.node(1u64).expect("node 1 was just started");
        if !first.is_initialized().await {
            first.initialize(&cluster.members()).await?;
        }
        Ok(cluster)
    }

    /// The TLS configuration of client user `root` of a cluster started with a
    /// `certs_dir` (see [`LocalCluster::start_with`]); `None` for an insecure cluster.
    pub fn client_tls(&self) -> Result<Option<zonekv_tls::Tls>> {
        let Some(root) = self.configs.first().and_then(|c| c.certs_dir.as_ref()).and_then(|d| d.parent())
        else {
            return Ok(None);
        };
        Ok(Some(zonekv_tls::Tls::client(zonekv_tls::CertsDir::new(root), zonekv_tls::ROOT_USER)?))
    }

    /// (id, address) of every node, running or not.
    pub fn members(&self) -> Vec<(NodeId, String)> {
        self.configs.iter().map(|c| (c.id(), c.listen.to_string())).collect()
    }

    /// Addresses of every node.
    pub fn addrs(&self) -> Vec<String> {
        self.members().into_iter().map(|(_, a)| a).collect()
    }

    /// A running node.
    pub fn node(&self, id: impl Into<NodeId>) -> Option<&Node> {
        self.nodes.get(slot(id.into())?)?.as_ref()
    }

    /// Running nodes.
    pub fn running(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    /// Waits until a running node is leader with a quorum behind it; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            for n in self.running() {
                let s = n.status().await;
                if s.ranges.iter().any(|r| r.state == "leader")
                    && n.get(b"\0probe", crate::ReadConsistency::Linearizable).await.is_ok()
                {
                    return Ok(n.id());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable(format!("no leader with a quorum within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops node `id` (its data stays).
    pub async fn stop_node(&mut self, id: impl Into<NodeId>) {
        if let Some(slot) = slot(id.into()).and_then(|i| self.nodes.get_mut(i))
            && let Some(node) = slot.take()
        {
            node.shutdown().await;
        }
    }

    /// Restarts a stopped node on its old address and data.
    pub async fn restart_node(&mut self, id: impl Into<NodeId>) -> Result<()> {
        let id = id.into();
        let i = slot(id).filter(|i| *i < self.nodes.len());
        let i = i.ok_or_else(|| Error::NotFound(format!("no node {id} in this cluster")))?;
        if self.nodes[i].is_none() {
            self.nodes[i] = Some(Node::start_hooked(self.configs[i].clone(), self.hooks.clone()).await?);
        }
        Ok(())
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for slot in &mut self.nodes {
            if let Some(n) = slot.take() {
                n.shutdown().await;
            }
        }
    }
}

/// Node `id`'s place in the cluster's lists (node ids start at 1).
fn slot(id: NodeId) -> Option<usize> {
    usize::try_from(id.get().checked_sub(1)?).ok()
}

fn node_dir(base: &Path, id: u64) -> PathBuf {
    base.join(format!("node-{id}"))
}
