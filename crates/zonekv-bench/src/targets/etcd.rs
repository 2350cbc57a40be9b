//! etcd: a 3-member cluster of the Debian `etcd-server` package, driven through the v3 API.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use etcd_client::{Client, GetOptions, KvClient};

use super::{Conn, Target, WorkDir};
use crate::procs::{Proc, find_binary, free_port, wait_for_port};

/// A 3-member etcd cluster (started here or external). Clients go to the leader, as etcd's own
/// `benchmark --target-leader` does.
pub struct Etcd {
    leader: String,
    version: String,
    _procs: Vec<Proc>,
    _dir: Option<WorkDir>,
}

impl Etcd {
    /// Starts three members on loopback, each with its own data directory.
    pub async fn start(dir: WorkDir) -> Result<Self> {
        let bin = find_binary("etcd", None, &[], "apt-get install etcd-server")?;
        let version = Command::new(&bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("etcd").to_string())?;
        let members: Vec<(String, u16, u16)> =
            (1..=3).map(|i| Ok((format!("m{i}"), free_port()?, free_port()?))).collect::<Result<_>>()?;
        let initial = members
            .iter()
            .map(|(n, _, peer)| format!("{n}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut procs = Vec::new();
        for (name, client, peer) in &members {
            let mut cmd = Command::new(&bin);
            cmd.args(["--name", name, "--data-dir"])
                .arg(dir.path().join(name))
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "zonekv-bench"])
                .args(["--quota-backend-bytes", "8589934592", "--log-level", "warn", "--logger", "zap"]);
            procs.push(Proc::spawn(&format!("etcd {name}"), cmd, &dir.path().join(format!("{name}.log")))?);
        }
        let endpoints: Vec<String> =
            members.iter().map(|(_, c, _)| format!("http://127.0.0.1:{c}")).collect();
        for (_, c, _) in &members {
            wait_for_port(&format!("127.0.0.1:{c}"), &mut procs, Duration::from_secs(30)).await?;
        }
        let leader =
            find_leader(&endpoints).await.with_context(|| format!("logs in {}", dir.path().display()))?;
        Ok(Self { leader, version, _procs: procs, _dir: Some(dir) })
    }

    /// Uses an existing cluster.
    pub async fn connect(endpoints: Vec<String>) -> Result<Self> {
        let leader = find_leader(&endpoints).await?;
        Ok(Self { leader, version: "etcd (external)".into(), _procs: Vec::new(), _dir: None })
    }
}

/// The client URL of the member that leads, once a leader is elected.
async fn find_leader(endpoints: &[String]) -> Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for ep in endpoints {
            let Ok(mut c) = Client::connect([ep.as_str()], None).await else { continue };
            if let Ok(s) = c.status().await {
                let me = s.header().map(|h| h.member_id()).unwrap_or(0);
                if s.leader() != 0 && s.leader() == me {
                    return Ok(ep.clone());
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no etcd leader among {endpoints:?} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct EtcdConn {
    kv: KvClient,
}

#[async_trait]
impl Conn for EtcdConn {
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.kv.clone().put(key, value, None).await?;
        Ok(())
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let r = self.kv.clone().get(key, None).await?;
        Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
    }

    async fn scan(&self, start: &[u8], limit: usize) -> Result<usize> {
        let opts = GetOptions::new().with_from_key().with_limit(limit as i64);
        Ok(self.kv.clone().get(start, Some(opts)).await?.kvs().len())
    }
}

#[async_trait]
impl Target for Etcd {
    async fn connect(&self) -> Result<Arc<dyn Conn>> {
        let client = Client::connect([self.leader.as_str()], None).await?;
        Ok(Arc::new(EtcdConn { kv: client.kv_client() }))
    }

    fn version(&self) -> String {
        self.version.clone()
    }

    async fn shutdown(self: Box<Self>) {}
}
