//! ZoneKV targets: an embedded 3-node cluster, and a cluster of `zonekv` processes.

use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use bytes::Bytes;
use zonekv_client::{AdminClient, Client, ClientConfig, ScanOptions};
use zonekv_server::{Error as NodeError, LocalCluster, NodeHandle, ReadConsistency, Scan, StoreError};

use super::{Conn, Target, WorkDir};
use crate::procs::{Proc, find_binary, free_port, wait_for_port};

/// Three nodes inside this process; clients call the leader's [`NodeHandle`] directly.
pub struct Embedded {
    cluster: LocalCluster,
    _dir: WorkDir,
}

impl Embedded {
    /// Starts the cluster and waits for a leader.
    pub async fn start(dir: WorkDir) -> Result<Self> {
        let cluster = LocalCluster::start(3, Some(dir.path())).await?;
        cluster.wait_for_leader(Duration::from_secs(30)).await?;
        Ok(Self { cluster, _dir: dir })
    }
}

struct EmbeddedConn {
    nodes: Vec<NodeHandle>,
    leader: AtomicUsize,
}

impl EmbeddedConn {
    /// Runs `f` at the leader, following not-leader errors.
    async fn at_leader<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(NodeHandle) -> Fut,
        Fut: Future<Output = Result<T, NodeError>>,
    {
        let mut last = None;
        for _ in 0..50 {
            let i = self.leader.load(Ordering::Relaxed) % self.nodes.len();
            match f(self.nodes[i].clone()).await {
                Ok(v) => return Ok(v),
                Err(NodeError::Store(StoreError::NotLeader { leader, .. })) => {
                    let next = leader
                        .as_ref()
                        .and_then(|h| self.nodes.iter().position(|n| n.id() == h.node_id))
                        .unwrap_or(i + 1);
                    self.leader.store(next, Ordering::Relaxed);
                    if leader.is_none() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    last = Some("not leader".to_string());
                }
                Err(e) => return Err(e.into()),
            }
        }
        bail!("no leader: {}", last.unwrap_or_default())
    }
}

#[async_trait]
impl Conn for EmbeddedConn {
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let (k, v) = (Bytes::copy_from_slice(key), Bytes::copy_from_slice(value));
        self.at_leader(|n| {
            let (k, v) = (k.clone(), v.clone());
            async move { n.put(k, v).await.map(|_| ()) }
        })
        .await
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.at_leader(|n| async move {
            n.get(key, ReadConsistency::Linearizable).await.map(|(v, _)| v.map(|b| b.to_vec()))
        })
        .await
    }

    async fn scan(&self, start: &[u8], limit: usize) -> Result<usize> {
        let scan = Scan {
            start: std::ops::Bound::Included(Bytes::copy_from_slice(start)),
            limit: limit as u32,
            ..Scan::default()
        };
        self.at_leader(|n| {
            let scan = scan.clone();
            async move { n.scan(&scan).await.map(|p| p.pairs.len()) }
        })
        .await
    }
}

#[async_trait]
impl Target for Embedded {
    async fn connect(&self) -> Result<Arc<dyn Conn>> {
        let nodes: Vec<NodeHandle> = self.cluster.running().map(|n| n.handle()).collect();
        Ok(Arc::new(EmbeddedConn { nodes, leader: AtomicUsize::new(0) }))
    }

    fn version(&self) -> String {
        format!("zonekv {} (embedded)", env!("CARGO_PKG_VERSION"))
    }

    async fn shutdown(self: Box<Self>) {
        self.cluster.shutdown().await;
    }
}

/// Three `zonekv` processes on loopback (or an existing cluster), used through the gRPC client.
pub struct Processes {
    endpoints: Vec<String>,
    /// Root's certificate for the clients; `None` for `--insecure` nodes.
    tls: Option<zonekv_tls::Tls>,
    procs: Vec<Proc>,
    version: String,
    _dir: Option<WorkDir>,
}

impl Processes {
    /// Starts three nodes, bootstraps them and waits for a leader.
    /// `config`: a node config file for every node (`zonekv start --config`). The nodes use
    /// mutual TLS (certificates created in `dir`) unless `insecure`.
    pub async fn start(
        dir: WorkDir,
        bin: Option<&Path>,
        config: Option<&Path>,
        insecure: bool,
    ) -> Result<Self> {
        let bin = find_binary("zonekv", bin, &[], "cargo build --release -p zonekv-server")?;
        let version = Command::new(&bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())?;
        let certs = dir.path().join("certs");
        let tls = if insecure {
            None
        } else {
            zonekv_tls::local_pki(&certs, 3)?;
            Some(zonekv_tls::Tls::client(zonekv_tls::CertsDir::new(&certs), zonekv_tls::ROOT_USER)?)
        };
        let mut procs = Vec::new();
        let mut members = Vec::new();
        for id in 1..=3u64 {
            let addr = format!("127.0.0.1:{}", free_port()?);
            let mut cmd = Command::new(&bin);
            cmd.args(["start", "--node-id", &id.to_string(), "--listen", &addr, "--data-dir"])
                .arg(dir.path().join(format!("node-{id}")))
                .env("RUST_LOG", "warn");
            match &tls {
                Some(_) => cmd.arg("--certs-dir").arg(zonekv_tls::local_node_dir(&certs, id)),
                None => cmd.arg("--insecure"),
            };
            if let Some(config) = config {
                cmd.arg("--config").arg(config);
            }
            procs.push(Proc::spawn(
                &format!("zonekv node {id}"),
                cmd,
                &dir.path().join(format!("node-{id}.log")),
            )?);
            members.push((id, addr));
        }
        for (_, addr) in &members {
            wait_for_port(addr, &mut procs, Duration::from_secs(30)).await?;
        }
        let endpoints: Vec<String> = members.iter().map(|(_, a)| a.clone()).collect();
        let config = |endpoints: Vec<String>| {
            let mut c = ClientConfig::new(endpoints);
            c.tls = tls.clone();
            c
        };
        let admin = AdminClient::with_config(config(endpoints.clone()))?;
        admin.initialize(&members[0].1, &members).await.context("initializing the zonekv cluster")?;
        let client = Client::with_config(config(endpoints.clone()))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while client.get("zonekv-bench-probe").await.is_err() {
            if tokio::time::Instant::now() > deadline {
                bail!("zonekv cluster has no leader after 30 s; logs in {}", dir.path().display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let version = format!("{version} ({})", if tls.is_some() { "mutual TLS" } else { "insecure" });
        Ok(Self { endpoints, tls, procs, version, _dir: Some(dir) })
    }

    /// Uses an existing cluster, one started `--insecure`.
    pub fn connect(endpoints: Vec<String>) -> Self {
        Self { endpoints, tls: None, procs: Vec::new(), version: "zonekv (external)".into(), _dir: None }
    }
}

struct ProcessConn {
    client: Client,
}

#[async_trait]
impl Conn for ProcessConn {
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self.client.put(Bytes::copy_from_slice(key), Bytes::copy_from_slice(value)).await?)
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.client.get(Bytes::copy_from_slice(key)).await?.map(|b| b.to_vec()))
    }

    async fn scan(&self, start: &[u8], limit: usize) -> Result<usize> {
        let opts = ScanOptions {
            start: std::ops::Bound::Included(Bytes::copy_from_slice(start)),
            limit: limit as u32,
            ..ScanOptions::default()
        };
        Ok(self.client.scan(&opts).await?.pairs.len())
    }
}

#[async_trait]
impl Target for Processes {
    async fn connect(&self) -> Result<Arc<dyn Conn>> {
        let mut config = ClientConfig::new(self.endpoints.clone());
        config.tls = self.tls.clone();
        config.request_timeout = Duration::from_secs(30);
        Ok(Arc::new(ProcessConn { client: Client::with_config(config)? }))
    }

    fn version(&self) -> String {
        self.version.clone()
    }

    async fn shutdown(self: Box<Self>) {
        drop(self.procs);
    }
}
