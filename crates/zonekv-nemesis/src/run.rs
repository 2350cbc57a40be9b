//! One seed, start to finish: start a cluster, run clients while the nemesis follows the
//! seed's schedule, heal, wait for the cluster to serve again, read the final state, check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use zonekv_server::{DiskFaultTable, LocalCluster, NetFaults, NodeConfig, NodeOptions, RaftConfig};

use crate::backend::Backend;
use crate::history::{self, History, Record, Status};
use crate::linearizable::{self, Outcome, RegOp};
use crate::local::{self, Cluster};
use crate::nemesis::{self, Fault, Step};
use crate::procs::{self, Processes};
use crate::set::{self, SetReport};
use crate::workload::{self, Adds};
use crate::{Error, Result};

/// Where the cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Nodes inside this process; network, node, leader and membership faults.
    InProcess,
    /// `zonekv` processes; SIGKILL and SIGSTOP faults.
    Processes,
}

/// How a run is shaped. Everything but `seed` is the same for every seed of a suite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    /// The seed: fault schedule, fault draws and client choices.
    pub seed: u64,
    /// Where the cluster runs.
    pub mode: Mode,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// How long faults are injected.
    pub fault_time: Duration,
    /// Register clients.
    pub clients: u32,
    /// Registers.
    pub keys: u32,
    /// Set clients.
    pub set_clients: u32,
    /// Sets.
    pub sets: u32,
    /// Negative control: nodes serve linearizable reads locally, without a leadership check
    /// (in-process mode).
    pub unsafe_local_reads: bool,
    /// Negative control: nodes acknowledge log appends before their fsync (process mode).
    pub unsafe_ack_before_sync: bool,
    /// Search states per key before the linearizability check gives up.
    pub max_states: usize,
    /// Process mode: where the nodes' logs go (default: with their data, removed after the run).
    pub logs: Option<std::path::PathBuf>,
    /// Only these faults, by name (e.g. `kill-all`); empty: every fault of the mode.
    #[serde(default)]
    pub faults: Vec<String>,
    /// The nodes' timings.
    #[serde(default)]
    pub timings: Timings,
    /// Nodes serve lease reads (`raft.lease-reads`; off by default). The freeze faults, under
    /// which no lease is safe, are left out unless named in `faults`.
    #[serde(default)]
    pub lease_reads: bool,
}

/// A key whose history is not linearizable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyViolation {
    /// The register.
    pub key: u32,
    /// Operations checked.
    pub ops: usize,
    /// Longest prefix that could be ordered.
    pub longest_prefix: usize,
    /// The operation that could not be placed after it.
    pub stuck_at: Record,
}

/// What one seed did and found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedReport {
    /// The configuration (with the seed).
    pub config: RunConfig,
    /// The schedule followed.
    pub schedule: Vec<Step>,
    /// Faults actually injected, with what each did.
    pub injected: Vec<String>,
    /// Register operations (all outcomes) plus set adds.
    pub operations: usize,
    /// Register operations with unknown outcome.
    pub unknown: usize,
    /// Acknowledged set adds missing at the end.
    pub lost_writes: usize,
    /// Keys whose history is not linearizable.
    pub violations: Vec<KeyViolation>,
    /// Keys the checker gave up on (inconclusive: the seed fails).
    pub check_timeouts: Vec<u32>,
    /// The set check.
    pub sets: SetReport,
    /// Seconds from the last heal until the cluster served a read and a write; `None` if it
    /// did not within 30 s.
    pub recovered_after_s: Option<f64>,
    /// The register history, for replay and inspection.
    pub history: Vec<Record>,
    /// The set adds: element, set, outcome and times.
    pub adds: Vec<(u64, workload::AddRecord)>,
}

impl SeedReport {
    /// True when nothing was lost, every key's history was checked and is linearizable, and
    /// the cluster recovered. A key the checker gave up on (`check_timeouts`: its search hit
    /// `max_states`) is inconclusive, and an inconclusive seed has not passed.
    pub fn passed(&self) -> bool {
        self.lost_writes == 0
            && self.violations.is_empty()
            && self.check_timeouts.is_empty()
            && self.sets.valid()
            && self.recovered_after_s.is_some()
    }
}

/// The node timings of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Timings {
    /// The node's defaults — what production runs — except a short `placement.dead-after-ms`
    /// (3 s), so a node stopped or killed by a fault is declared dead and its replicas are
    /// replaced while faults go on.
    #[default]
    Default,
    /// Short Raft timeouts, so elections happen many times within a schedule, and frequent
    /// snapshots, so snapshot installs and log purges happen too (what the runs before
    /// 2026-12-04 used; the regression seeds keep it).
    Fast,
}

impl Timings {
    /// The node configuration these timings give (ids, addresses and directories aside).
    pub fn node_config(self) -> NodeConfig {
        let mut c = NodeConfig::default();
        c.placement.dead_after_ms = 3000;
        if self == Timings::Fast {
            c.raft = RaftConfig {
                heartbeat_interval_ms: 100,
                election_timeout_min_ms: 400,
                election_timeout_max_ms: 800,
                snapshot_after_entries: 500,
                keep_entries_after_snapshot: 100,
                ..RaftConfig::default()
            };
            c.placement.dead_after_ms = NodeConfig::default().placement.dead_after_ms;
        }
        c
    }
}

/// The node configuration of a run (ids, addresses and directories aside).
fn node_config(config: &RunConfig) -> NodeConfig {
    let mut c = config.timings.node_config();
    c.raft.lease_reads = config.lease_reads;
    c
}

/// A node configuration's Raft and placement settings as a `zonekv start --config` file, for
/// process runs.
fn node_toml(c: &NodeConfig) -> String {
    let r = &c.raft;
    format!(
        "[raft]\nheartbeat-interval-ms = {}\nelection-timeout-min-ms = {}\nelection-timeout-max-ms = {}\n\
         snapshot-after-entries = {}\nkeep-entries-after-snapshot = {}\nlease-reads = {}\n\
         [placement]\ndead-after-ms = {}\n",
        r.heartbeat_interval_ms,
        r.election_timeout_min_ms,
        r.election_timeout_max_ms,
        r.snapshot_after_entries,
        r.keep_entries_after_snapshot,
        r.lease_reads,
        c.placement.dead_after_ms
    )
}

/// Runs one seed.
pub async fn run(config: RunConfig) -> Result<SeedReport> {
    match config.mode {
        Mode::InProcess => {
            let net = NetFaults::new(config.seed);
            let disks = DiskFaultTable::new();
            let options = NodeOptions {
                faults: Some(net.clone()),
                disk_faults: Some(disks.clone()),
                unsafe_local_reads: config.unsafe_local_reads,
                ..NodeOptions::default()
            };
            let nodes =
                LocalCluster::start_with_options(config.nodes, None, node_config(&config), options).await?;
            nodes.wait_for_leader(Duration::from_secs(30)).await?;
            let faults = select(local::catalogue(), &config.faults)?;
            run_with(Arc::new(Cluster::new(nodes, net, disks)), faults, config).await
        }
        Mode::Processes => {
            let mut faults = select(procs::catalogue(), &config.faults)?;
            if config.lease_reads && config.faults.is_empty() {
                // A frozen leader with its clocks held believes its lease (`freeze.rs`):
                // outside the lease model, so not a finding.
                faults.retain(|f| !f.name().starts_with("freeze-"));
            }
            if procs::faketime_lib().is_none() {
                return Err(Error::Config(
                    "process runs start every node under libfaketime (the clock-rate and freeze faults \
                     change a running node's clocks): apt-get install faketime, or scripts/install-deps.sh"
                        .into(),
                ));
            }
            let nodes = Processes::start(
                config.nodes as u64,
                &node_toml(&node_config(&config)),
                config.unsafe_ack_before_sync,
                config.logs.as_deref(),
            )
            .await?;
            run_with(Arc::new(nodes), faults, config).await
        }
    }
}

/// The faults of `catalogue` named in `names` (all of them if `names` is empty).
fn select<C>(catalogue: Vec<Arc<dyn Fault<C>>>, names: &[String]) -> Result<Vec<Arc<dyn Fault<C>>>> {
    if names.is_empty() {
        return Ok(catalogue);
    }
    let known: Vec<&str> = catalogue.iter().map(|f| f.name()).collect();
    if let Some(unknown) = names.iter().find(|n| !known.contains(&n.as_str())) {
        return Err(Error::Config(format!(
            "unknown fault {unknown:?} for this mode; the faults are: {}",
            known.join(", ")
        )));
    }
    Ok(catalogue.into_iter().filter(|f| names.iter().any(|n| n == f.name())).collect())
}

/// Runs one seed against a started cluster with the faults it supports; stops the cluster.
async fn run_with<C: Backend>(
    cluster: Arc<C>,
    faults: Vec<Arc<dyn Fault<C>>>,
    config: RunConfig,
) -> Result<SeedReport> {
    let schedule = nemesis::schedule(config.seed, faults.len(), config.fault_time);
    let backend: Arc<dyn Backend> = cluster.clone();
    let outcome = exercise(&cluster, backend.as_ref(), &faults, &schedule, &config).await;
    backend.shutdown().await;
    let (history, adds, final_sets, injected, recovered_after_s) = outcome?;
    let statuses = adds.iter().map(|(e, a)| (*e, a.status)).collect();
    let sets = set::check(&statuses, &final_sets);

    let records = history.records();
    let (mut violations, mut check_timeouts) = (Vec::new(), Vec::new());
    for key in 0..config.keys {
        let entries = history::register_entries(&records, key);
        let mine: Vec<&Record> = records.iter().filter(|r| r.key == key && kept(r)).collect();
        match linearizable::check(&entries, config.max_states) {
            Outcome::Linearizable => {}
            Outcome::Timeout => check_timeouts.push(key),
            Outcome::Violation { longest_prefix, stuck_at } => violations.push(KeyViolation {
                key,
                ops: entries.len(),
                longest_prefix,
                stuck_at: mine[stuck_at].clone(),
            }),
        }
    }
    Ok(SeedReport {
        operations: records.len() + adds.len(),
        unknown: records.iter().filter(|r| r.status == Status::Unknown).count(),
        lost_writes: sets.lost.len(),
        schedule,
        injected,
        violations,
        check_timeouts,
        sets,
        recovered_after_s,
        history: records,
        adds: adds.into_iter().collect(),
        config,
    })
}

type Observed = (
    Arc<History>,
    std::collections::BTreeMap<u64, workload::AddRecord>,
    Vec<Vec<u64>>,
    Vec<String>,
    Option<f64>,
);

/// Clients run while the nemesis follows the schedule; then heal, wait for service, stop the
/// clients and read the final state.
async fn exercise<C: Backend>(
    cluster: &Arc<C>,
    backend: &dyn Backend,
    faults: &[Arc<dyn Fault<C>>],
    schedule: &[Step],
    config: &RunConfig,
) -> Result<Observed> {
    let history = Arc::new(History::new());
    let adds: Adds = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..config.clients {
        let (c, h, s): (Arc<dyn Backend>, _, _) = (cluster.clone(), history.clone(), stop.clone());
        clients.spawn(workload::register_client(id, config.seed, config.keys, c, h, s));
    }
    for id in 0..config.set_clients {
        let (c, a, h, s): (Arc<dyn Backend>, _, _, _) =
            (cluster.clone(), adds.clone(), history.clone(), stop.clone());
        clients.spawn(workload::set_client(id, config.seed, config.sets, c, a, h, s));
    }

    let injected = follow(cluster.as_ref(), faults, schedule, config.seed, &history).await;
    for f in faults {
        f.heal(cluster).await;
    }
    let healed = Instant::now();
    let recovered_after_s =
        wait_until_serving(backend, Duration::from_secs(30)).await.then(|| healed.elapsed().as_secs_f64());
    // Let the clients see the healed cluster for a moment, then stop them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = clients.join_next().await {
        r.map_err(|e| Error::Client(e.to_string()))?;
    }
    final_reads(backend, config, &history).await;
    let final_sets = read_sets(backend, config.sets).await?;
    let adds = adds.lock().await.clone();
    Ok((history, adds, final_sets, injected, recovered_after_s))
}

/// Whether `register_entries` keeps a record (same filter, so indexes line up).
fn kept(r: &Record) -> bool {
    !matches!((r.status, r.op), (Status::Fail, _) | (Status::Unknown, RegOp::Read(_)))
}

/// Follows the schedule; returns what was injected.
async fn follow<C>(
    cluster: &C,
    faults: &[Arc<dyn Fault<C>>],
    schedule: &[Step],
    seed: u64,
    history: &History,
) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut injected = Vec::new();
    for step in schedule {
        tokio::time::sleep(Duration::from_millis(step.gap_ms)).await;
        let fault = &faults[step.fault];
        let at = history.now_us() as f64 / 1e6;
        match fault.inject(cluster, &mut rng).await {
            Some(what) => {
                tracing::info!(fault = fault.name(), %what, "injected");
                injected.push(format!("{}: {what} (at {at:.3} s)", fault.name()));
            }
            None => tracing::info!(fault = fault.name(), "did not apply now"),
        }
        tokio::time::sleep(Duration::from_millis(step.hold_ms)).await;
        fault.heal(cluster).await;
    }
    injected
}

/// Polls until the cluster serves a linearizable read and a write, or `limit` passes.
async fn wait_until_serving(cluster: &dyn Backend, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut rng = StdRng::seed_from_u64(0);
    let probe = bytes::Bytes::from_static(b"probe");
    while Instant::now() < deadline {
        if cluster.get(&mut rng, &probe).await.is_ok()
            && cluster.put(&mut rng, &probe, bytes::Bytes::from_static(b"ok")).await.is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// One last linearizable read of every register, recorded like any other operation.
async fn final_reads(cluster: &dyn Backend, config: &RunConfig, history: &History) {
    let mut rng = StdRng::seed_from_u64(1);
    for key in 0..config.keys {
        let call_us = history.now_us();
        if let Ok(v) = cluster.get(&mut rng, &workload::register_key(key)).await
            && let Ok(v) = history::decode(v.as_deref())
        {
            let op = RegOp::Read(v);
            history.push(Record {
                client: u32::MAX,
                key,
                call_us,
                ret_us: history.now_us(),
                op,
                status: Status::Ok,
            });
        }
    }
}

/// Reads every set, retrying for a while: the cluster was just shown to serve.
async fn read_sets(cluster: &dyn Backend, sets: u32) -> Result<Vec<Vec<u64>>> {
    let mut rng = StdRng::seed_from_u64(2);
    let mut out = Vec::new();
    for k in 0..sets {
        let key = workload::set_key(k);
        let mut value = None;
        for _ in 0..50 {
            if let Ok(v) = cluster.get(&mut rng, &key).await {
                value = Some(v);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let v = value.ok_or_else(|| Error::Client(format!("the final read of set {k} kept failing")))?;
        out.push(match v {
            Some(b) => set::decode(&b).map_err(Error::Client)?,
            None => Vec::new(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_config_file_says_what_the_in_process_nodes_run_with() {
        for t in [Timings::Default, Timings::Fast] {
            for lease_reads in [false, true] {
                let mut c = t.node_config();
                c.raft.lease_reads = lease_reads;
                let parsed: NodeConfig = toml::from_str(&node_toml(&c)).unwrap();
                assert_eq!(parsed.raft, c.raft, "{t:?}");
                assert_eq!(parsed.placement, c.placement, "{t:?}");
            }
        }
        assert_eq!(Timings::Default.node_config().raft, RaftConfig::default());
    }
}
