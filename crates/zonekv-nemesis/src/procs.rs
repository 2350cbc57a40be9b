//! A cluster of `zonekv` processes under test, reached through the gRPC client, and the
//! process faults: SIGKILL (one node, the leader, a majority at once), SIGSTOP/SIGCONT, a
//! clock that runs fast or slow, and a whole-VM freeze (stopped with its clocks).
//!
//! Every node runs under libfaketime reading its clock from a file (`clock-<id>` in the run's
//! directory: an offset and a rate), so a fault can change a running node's clocks. That puts
//! every clock read of the nodes behind libfaketime's lock, on every process seed.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use tokio::sync::Mutex;
use zonekv_client::{AdminClient, Client, ClientConfig, ClientError};

use crate::backend::Backend;
use crate::history::Status;
use crate::nemesis::Fault;
use crate::{Error, Result};

/// Node settings for fault runs, as a config file (same as the in-process template).
struct ProcNode {
    id: u64,
    addr: String,
    child: Option<Child>,
    paused: bool,
    /// The rate its clock runs at under libfaketime (`x1.05`), if skewed; kept across restarts.
    clock: Option<&'static str>,
    /// Seconds its clocks were held back by freezes: the file's offset.
    held_back_secs: f64,
}

impl ProcNode {
    /// The node's clock as libfaketime reads it from the node's clock file: its offset, then
    /// its rate if skewed.
    fn clock_spec(&self) -> String {
        let offset = if self.held_back_secs == 0.0 {
            "+0".to_string()
        } else {
            format!("-{:.3}", self.held_back_secs)
        };
        match self.clock {
            Some(rate) => format!("{offset} {rate}"),
            None => offset,
        }
    }

    /// How fast its clocks run (1.0 unless skewed).
    fn rate(&self) -> f64 {
        self.clock.and_then(|r| r.trim_start_matches('x').parse().ok()).unwrap_or(1.0)
    }
}

/// libfaketime's preload library for threaded programs (Debian package `faketime`), if
/// installed.
pub fn faketime_lib() -> Option<PathBuf> {
    ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| PathBuf::from(format!("/usr/lib/{arch}/faketime/libfaketimeMT.so.1")))
        .find(|p| p.exists())
}

/// `zonekv` processes on loopback, each with its own data directory under a temporary one.
pub struct Processes {
    bin: PathBuf,
    dir: tempfile::TempDir,
    logs: PathBuf,
    unsafe_ack_before_sync: bool,
    nodes: Mutex<Vec<ProcNode>>,
    client: Client,
    admin: AdminClient,
}

/// Finds the `zonekv` binary: `$ZONEKV_BIN`, else next to this program (or its parent, for
/// test binaries in `deps/`).
pub fn find_zonekv() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ZONEKV_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().map_err(|e| Error::Client(e.to_string()))?;
    exe.ancestors().skip(1).take(2).map(|d| d.join("zonekv")).find(|p| p.is_file()).ok_or_else(|| {
        Error::Client("no `zonekv` binary next to this program; build it or set ZONEKV_BIN".into())
    })
}

fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Client(format!("no free port: {e}")))
}

/// How a node process starts: its test hook.
#[derive(Clone, Copy)]
struct Launch {
    unsafe_ack: bool,
}

/// The file a node's libfaketime reads its clock from.
fn clock_file(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("clock-{id}"))
}

/// Writes `node`'s clock file (before it starts, or while it is stopped).
fn write_clock(dir: &Path, node: &ProcNode) -> Result<()> {
    std::fs::write(clock_file(dir, node.id), node.clock_spec())
        .map_err(|e| Error::Client(format!("writing the clock of node {}: {e}", node.id)))
}

fn spawn(bin: &Path, dir: &Path, logs: &Path, node: &ProcNode, launch: Launch) -> Result<Child> {
    let (id, addr) = (node.id, node.addr.as_str());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("node-{id}.log")))
        .map_err(|e| Error::Client(e.to_string()))?;
    let mut cmd = Command::new(bin);
    cmd.args(["start", "--node-id", &id.to_string(), "--listen", addr, "--config"])
        .arg(dir.join("node.toml"))
        .arg("--data-dir")
        .arg(dir.join(format!("node-{id}")))
        // TLS, as `zonekv start` runs by default: the certificates `start` created.
        .arg("--certs-dir")
        .arg(zonekv_tls::local_node_dir(&dir.join("certs"), id))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    if launch.unsafe_ack {
        cmd.env("ZONEKV_UNSAFE_ACK_BEFORE_SYNC", "1");
    }
    let lib = faketime_lib().ok_or_else(|| {
        Error::Config("the process nemesis' clock faults need libfaketime: apt-get install faketime".into())
    })?;
    // Every clock the process reads, CLOCK_MONOTONIC included (Rust's `Instant`, tokio's
    // timers), follows the clock file: its offset and rate. libfaketime reads the file again
    // at the first clock read in a new second of real time (cache duration 0), so a process
    // resumed after a freeze reads the new offset at once. A `FAKETIME` inherited from our
    // own environment would override the file.
    write_clock(dir, node)?;
    cmd.env("LD_PRELOAD", lib)
        .env_remove("FAKETIME")
        .env("FAKETIME_TIMESTAMP_FILE", clock_file(dir, id))
        .env("FAKETIME_CACHE_DURATION", "0");
    let mut child = cmd.spawn().map_err(|e| Error::Client(format!("starting {}: {e}", bin.display())))?;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped stdout");
    BufReader::new(stdout).read_line(&mut line).map_err(|e| Error::Client(e.to_string()))?;
    if !line.contains("serving on") {
        return Err(Error::Client(format!("node {id} did not start: {line:?} (see {})", dir.display())));
    }
    Ok(child)
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill").args([sig, &child.id().to_string()]).status();
}

impl Processes {
    /// Starts `n` nodes and initialises them as one cluster.
    /// Node logs go to `logs` if given (kept for a failing seed), else next to the data.
    pub async fn start(
        n: u64,
        node_toml: &str,
        unsafe_ack_before_sync: bool,
        logs: Option<&Path>,
    ) -> Result<Self> {
        let bin = find_zonekv()?;
        let dir = tempfile::Builder::new()
            .prefix("zonekv-nemesis-")
            .tempdir()
            .map_err(|e| Error::Client(e.to_string()))?;
        let logs = logs.map_or_else(|| dir.path().to_path_buf(), Path::to_path_buf);
        std::fs::create_dir_all(&logs).map_err(|e| Error::Client(format!("{}: {e}", logs.display())))?;
        std::fs::write(dir.path().join("node.toml"), node_toml).map_err(|e| Error::Client(e.to_string()))?;
        zonekv_tls::local_pki(&dir.path().join("certs"), n)
            .map_err(|e| Error::Client(format!("certificates: {e}")))?;
        let tls = zonekv_tls::Tls::client(
            zonekv_tls::CertsDir::new(dir.path().join("certs")),
            zonekv_tls::ROOT_USER,
        )
        .map_err(|e| Error::Client(format!("certificates: {e}")))?;
        let mut nodes = Vec::new();
        for id in 1..=n {
            let addr = format!("127.0.0.1:{}", free_port()?);
            let mut node =
                ProcNode { id, addr, child: None, paused: false, clock: None, held_back_secs: 0.0 };
            node.child =
                Some(spawn(&bin, dir.path(), &logs, &node, Launch { unsafe_ack: unsafe_ack_before_sync })?);
            nodes.push(node);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
        let members: Vec<(u64, String)> = nodes.iter().map(|n| (n.id, n.addr.clone())).collect();
        let mut admin_config = ClientConfig::new(addrs.clone());
        admin_config.tls = Some(tls.clone());
        let admin = AdminClient::with_config(admin_config).map_err(|e| Error::Client(e.to_string()))?;
        admin.initialize(&addrs[0], &members).await.map_err(|e| Error::Client(format!("init: {e}")))?;
        let mut config = ClientConfig::new(addrs);
        config.tls = Some(tls);
        config.request_timeout = Duration::from_secs(2);
        config.retry_budget = Duration::from_secs(3);
        let client = Client::with_config(config).map_err(|e| Error::Client(e.to_string()))?;
        Ok(Self { bin, dir, logs, unsafe_ack_before_sync, nodes: Mutex::new(nodes), client, admin })
    }

    /// The running, unpaused node that leads with the highest term.
    async fn leader(&self) -> Option<u64> {
        let nodes: Vec<(u64, String)> = {
            let nodes = self.nodes.lock().await;
            nodes.iter().filter(|n| n.child.is_some() && !n.paused).map(|n| (n.id, n.addr.clone())).collect()
        };
        let mut best: Option<(u64, u64)> = None;
        for (id, addr) in nodes {
            let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), self.admin.status(&addr)).await
            else {
                continue;
            };
            for r in s.ranges.iter().filter(|r| r.state == "leader") {
                if best.is_none_or(|(t, _)| r.term > t) {
                    best = Some((r.term, id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    async fn kill(&self, ids: &[u64]) {
        let mut nodes = self.nodes.lock().await;
        for n in nodes.iter_mut().filter(|n| ids.contains(&n.id)) {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            n.paused = false;
        }
    }

    async fn restart_all(&self) {
        let mut nodes = self.nodes.lock().await;
        for n in nodes.iter_mut() {
            if let Some(c) = &n.child
                && n.paused
            {
                signal(c, "-CONT");
                n.paused = false;
            }
            if n.child.is_none() {
                let launch = Launch { unsafe_ack: self.unsafe_ack_before_sync };
                match spawn(&self.bin, self.dir.path(), &self.logs, n, launch) {
                    Ok(c) => n.child = Some(c),
                    Err(e) => tracing::error!(node = n.id, error = %e, "restart failed"),
                }
            }
        }
    }

    async fn ids(&self) -> Vec<u64> {
        self.nodes.lock().await.iter().map(|n| n.id).collect()
    }
}

fn status_of(e: &ClientError) -> Status {
    match e {
        ClientError::Unavailable { .. }
        | ClientError::InvalidArgument(_)
        | ClientError::NotFound(_)
        | ClientError::FailedPrecondition(_) => Status::Fail,
        _ => Status::Unknown,
    }
}

/// Bounds a call: the client retries inside its budget, this catches anything slower.
async fn bounded<T>(f: impl Future<Output = Result<T, ClientError>>) -> Result<T, Status> {
    match tokio::time::timeout(Duration::from_secs(8), f).await {
        Err(_) => Err(Status::Unknown),
        Ok(r) => r.map_err(|e| status_of(&e)),
    }
}

#[async_trait]
impl Backend for Processes {
    async fn get(&self, _: &mut StdRng, key: &Bytes) -> Result<Option<Bytes>, Status> {
        bounded(self.client.get(key.clone())).await
    }

    async fn put(&self, _: &mut StdRng, key: &Bytes, value: Bytes) -> Result<(), Status> {
        bounded(self.client.put(key.clone(), value)).await
    }

    async fn cas(
        &self,
        _: &mut StdRng,
        key: &Bytes,
        expected: Option<Bytes>,
        new_value: Bytes,
    ) -> Result<bool, Status> {
        bounded(self.client.compare_and_swap(key.clone(), expected, Some(new_value)))
            .await
            .map(|o| o.succeeded)
    }

    async fn shutdown(&self) {
        let ids = self.ids().await;
        self.kill(&ids).await;
    }
}

/// Which nodes a process fault hits.
#[derive(Clone, Copy)]
enum Target {
    Random,
    Leader,
    Majority,
    /// Every node at once: a power cut.
    All,
}

/// SIGKILL, restarted on heal.
struct Kill(Target);

/// SIGSTOP, SIGCONT on heal.
struct Pause(Target);

async fn pick(c: &Processes, target: Target, rng: &mut StdRng) -> Option<Vec<u64>> {
    let mut ids = c.ids().await;
    match target {
        Target::Random => Some(vec![ids[rng.random_range(0..ids.len())]]),
        Target::Leader => Some(vec![c.leader().await?]),
        Target::Majority => {
            ids.shuffle(rng);
            ids.truncate(ids.len() / 2 + 1);
            Some(ids)
        }
        Target::All => Some(ids),
    }
}

#[async_trait]
impl Fault<Processes> for Kill {
    fn name(&self) -> &'static str {
        match self.0 {
            Target::Random => "kill-node",
            Target::Leader => "kill-leader",
            Target::Majority => "kill-majority",
            Target::All => "kill-all",
        }
    }

    async fn inject(&self, c: &Processes, rng: &mut StdRng) -> Option<String> {
        let ids = pick(c, self.0, rng).await?;
        c.kill(&ids).await;
        Some(format!("SIGKILL {ids:?}"))
    }

    async fn heal(&self, c: &Processes) {
        c.restart_all().await;
    }
}

#[async_trait]
impl Fault<Processes> for Pause {
    fn name(&self) -> &'static str {
        match self.0 {
            Target::Leader => "pause-leader",
            _ => "pause-node",
        }
    }

    async fn inject(&self, c: &Processes, rng: &mut StdRng) -> Option<String> {
        let ids = pick(c, self.0, rng).await?;
        let mut nodes = c.nodes.lock().await;
        for n in nodes.iter_mut().filter(|n| ids.contains(&n.id)) {
            if let Some(child) = &n.child {
                signal(child, "-STOP");
                n.paused = true;
            }
        }
        Some(format!("SIGSTOP {ids:?}"))
    }

    async fn heal(&self, c: &Processes) {
        c.restart_all().await;
    }
}

/// Splits the range holding a random workload key there, through the admin API (which finds
/// the range's leader). Permanent: healing does nothing.
struct SplitRange;

#[async_trait]
impl Fault<Processes> for SplitRange {
    fn name(&self) -> &'static str {
        "split-range"
    }

    async fn inject(&self, c: &Processes, rng: &mut StdRng) -> Option<String> {
        let key = crate::workload::split_point(rng);
        let split = tokio::time::timeout(Duration::from_secs(10), c.admin.split(key.clone())).await;
        let (left, right) = split.ok()?.ok()?;
        Some(format!("range {left} split at {key:?}: new range {right}"))
    }

    async fn heal(&self, _: &Processes) {}
}

/// Moves a replica of a random split-off range to a node without one, through the admin API
/// (which finds the range's leader); the range and its members come from a random running
/// node's status. Never the leader's own replica. Permanent: healing does nothing.
struct MoveReplica;

#[async_trait]
impl Fault<Processes> for MoveReplica {
    fn name(&self) -> &'static str {
        "move-replica"
    }

    async fn inject(&self, c: &Processes, rng: &mut StdRng) -> Option<String> {
        let (addrs, ids): (Vec<String>, Vec<u64>) = {
            let nodes = c.nodes.lock().await;
            let running = nodes.iter().filter(|n| n.child.is_some() && !n.paused);
            (running.clone().map(|n| n.addr.clone()).collect(), running.map(|n| n.id).collect())
        };
        let addr = addrs.choose(rng)?;
        let status = tokio::time::timeout(Duration::from_secs(5), c.admin.status(addr)).await.ok()?.ok()?;
        let ranges: Vec<_> = status.ranges.iter().filter(|r| r.range_id != 1 && r.leader_id != 0).collect();
        let range = ranges.choose(rng)?;
        let voter = zonekv_client::ReplicaRole::Voter as i32;
        let from = *range
            .replicas
            .iter()
            .filter(|m| m.role == voter && m.node_id != range.leader_id)
            .map(|m| m.node_id)
            .collect::<Vec<_>>()
            .choose(rng)?;
        let targets: Vec<u64> =
            ids.into_iter().filter(|id| range.replicas.iter().all(|m| m.node_id != *id)).collect();
        let to = *targets.choose(rng)?;
        let id = range.range_id;
        let moved = tokio::time::timeout(Duration::from_secs(15), c.admin.move_replica(id, from, to)).await;
        if let Ok(Err(e)) = &moved {
            tracing::info!(range = id, from, to, error = %e, "move refused");
        }
        moved.ok()?.ok()?;
        Some(format!("range {id}: replica moved from node {from} to node {to}"))
    }

    async fn heal(&self, _: &Processes) {}
}

/// The clock rates of the `clock-rate` fault: ±5 %, the default
/// `raft.max-clock-rate-error-percent` (a larger error is outside the lease model).
const RATES: [&str; 2] = ["x1.05", "x0.95"];

/// Restarts one node (the leader, or the node already skewed) with a clock that runs 5 %
/// fast or slow, every clock it reads included; it keeps that clock for the rest of the run,
/// restarts included. At most one node is skewed, so no two clocks differ by more than 5 %.
/// Permanent: healing restarts nodes other faults stopped, nothing else.
struct ClockRate;

#[async_trait]
impl Fault<Processes> for ClockRate {
    fn name(&self) -> &'static str {
        "clock-rate"
    }

    async fn inject(&self, c: &Processes, rng: &mut StdRng) -> Option<String> {
        let skewed = c.nodes.lock().await.iter().find(|n| n.clock.is_some()).map(|n| n.id);
        let id = match skewed {
            Some(id) => id,
            None => c.leader().await?,
        };
        let rate = *RATES.choose(rng)?;
        c.kill(&[id]).await;
        if let Some(n) = c.nodes.lock().await.iter_mut().find(|n| n.id == id) {
            n.clock = Some(rate);
        }
        c.restart_all().await;
        Some(format!("node {id} restarted with its clocks at {rate}"))
    }

    async fn heal(&self, c: &Processes) {
        c.restart_all().await;
    }
}

/// How long the `freeze` fault holds a node: longer than an election and a lease.
const FREEZE: Duration = Duration::from_secs(4);

/// A whole-VM freeze of the leader (or of a random node): the process stops (SIGSTOP) and,
/// when it resumes, every clock it reads — `CLOCK_MONOTONIC` included — goes on from where
/// it stopped, as in a VM whose hypervisor restores the guest's clock after a pause (QEMU/KVM
/// does for kvmclock). Unlike `pause-*`, under which the monotonic clock runs on, the resumed
/// node cannot see that time passed: a leader still believes the lease it held.
struct Freeze(Target);

#[async_trait]
impl Fault<Processes> for Freeze {
    fn name(&self) -> &'static str {
        match self.0 {
            Target::Leader => "freeze-leader",
            _ => "freeze-node",
        }
    }

    async fn inject(&self, c: &Processes, rng: &mut StdRng) -> Option<String> {
        let id = *pick(c, self.0, rng).await?.first()?;
        let frozen_at = {
            let mut nodes = c.nodes.lock().await;
            let n = nodes.iter_mut().find(|n| n.id == id && !n.paused)?;
            signal(n.child.as_ref()?, "-STOP");
            n.paused = true;
            std::time::Instant::now()
        };
        tokio::time::sleep(FREEZE).await;
        let mut nodes = c.nodes.lock().await;
        let n = nodes.iter_mut().find(|n| n.id == id)?;
        // What its clocks would have counted meanwhile, at their rate.
        n.held_back_secs += frozen_at.elapsed().as_secs_f64() * n.rate();
        if let Err(e) = write_clock(c.dir.path(), n) {
            tracing::error!(node = id, error = %e, "holding the frozen node's clock back");
        }
        if let Some(child) = &n.child {
            signal(child, "-CONT");
        }
        n.paused = false;
        Some(format!(
            "node {id} frozen for {FREEZE:?} with its clocks (held back {:.1} s in all)",
            n.held_back_secs
        ))
    }

    async fn heal(&self, c: &Processes) {
        c.restart_all().await;
    }
}

/// Every process fault.
pub fn catalogue() -> Vec<Arc<dyn Fault<Processes>>> {
    vec![
        Arc::new(Kill(Target::Random)),
        Arc::new(Kill(Target::Leader)),
        Arc::new(Kill(Target::Majority)),
        Arc::new(Pause(Target::Random)),
        Arc::new(Pause(Target::Leader)),
        Arc::new(Kill(Target::All)),
        Arc::new(SplitRange),
        Arc::new(MoveReplica),
        Arc::new(ClockRate),
        Arc::new(Freeze(Target::Leader)),
        Arc::new(Freeze(Target::Random)),
    ]
}
