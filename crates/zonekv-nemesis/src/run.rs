//! One seed, start to finish: start a cluster, run clients while the nemesis follows the
//! seed's schedule, heal, wait for the cluster to serve again, read the final state, check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use zonekv_server::{LocalCluster, NetFaults, NodeConfig, NodeOptions, RaftConfig, ReadConsistency};

use crate::history::{self, History, Record, Status};
use crate::linearizable::{self, Outcome, RegOp};
use crate::nemesis::{self, Cluster, Fault, Step};
use crate::set::{self, SetReport};
use crate::workload::{self, Adds};
use crate::{Error, Result};

/// How a run is shaped. Everything but `seed` is the same for every seed of a suite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    /// The seed: fault schedule, fault draws and client choices.
    pub seed: u64,
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
    /// Negative control: nodes serve linearizable reads locally, without a leadership check.
    pub unsafe_local_reads: bool,
    /// Search states per key before the linearizability check gives up.
    pub max_states: usize,
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
    /// Keys the checker gave up on.
    pub check_timeouts: Vec<u32>,
    /// The set check.
    pub sets: SetReport,
    /// Seconds from the last heal until the cluster served a read and a write; `None` if it
    /// did not within 30 s.
    pub recovered_after_s: Option<f64>,
    /// The register history, for replay and inspection.
    pub history: Vec<Record>,
}

impl SeedReport {
    /// True when nothing was lost, everything is linearizable and the cluster recovered.
    pub fn passed(&self) -> bool {
        self.lost_writes == 0
            && self.violations.is_empty()
            && self.sets.valid()
            && self.recovered_after_s.is_some()
    }
}

/// Node settings for fault runs: short timeouts, so elections happen within the schedule, and
/// frequent snapshots, so snapshot installs and log purges happen too.
fn node_template() -> NodeConfig {
    NodeConfig {
        raft: RaftConfig {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_after_entries: 500,
            keep_entries_after_snapshot: 100,
            ..RaftConfig::default()
        },
        ..NodeConfig::default()
    }
}

/// Runs one seed.
pub async fn run(config: RunConfig) -> Result<SeedReport> {
    let net = NetFaults::new(config.seed);
    let options = NodeOptions {
        faults: Some(net.clone()),
        unsafe_local_reads: config.unsafe_local_reads,
        ..NodeOptions::default()
    };
    let nodes = LocalCluster::start_with_options(config.nodes, None, node_template(), options).await?;
    nodes.wait_for_leader(Duration::from_secs(30)).await?;
    let cluster = Arc::new(Cluster::new(nodes, net));
    let faults = nemesis::catalogue();
    let schedule = nemesis::schedule(config.seed, faults.len(), config.fault_time);

    let history = Arc::new(History::new());
    let adds: Adds = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..config.clients {
        let (c, h, s) = (cluster.clone(), history.clone(), stop.clone());
        clients.spawn(workload::register_client(id, config.seed, config.keys, c, h, s));
    }
    for id in 0..config.set_clients {
        let (c, a, s) = (cluster.clone(), adds.clone(), stop.clone());
        clients.spawn(workload::set_client(id, config.seed, config.sets, c, a, s));
    }

    let injected = follow(&cluster, &faults, &schedule, config.seed).await;
    for f in &faults {
        f.heal(&cluster).await;
    }
    let healed = Instant::now();
    let recovered_after_s =
        wait_until_serving(&cluster, Duration::from_secs(30)).await.then(|| healed.elapsed().as_secs_f64());
    // Let the clients see the healed cluster for a moment, then stop them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = clients.join_next().await {
        r.map_err(|e| Error::Client(e.to_string()))?;
    }
    final_reads(&cluster, &config, &history).await;
    let final_sets = read_sets(&cluster, config.sets).await?;
    let adds = adds.lock().await.clone();
    let sets = set::check(&adds, &final_sets);

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
    let report = SeedReport {
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
        config,
    };
    Arc::try_unwrap(cluster)
        .map_err(|_| Error::Client("cluster still shared".into()))?
        .nodes
        .into_inner()
        .shutdown()
        .await;
    Ok(report)
}

/// Whether `register_entries` keeps a record (same filter, so indexes line up).
fn kept(r: &Record) -> bool {
    !matches!((r.status, r.op), (Status::Fail, _) | (Status::Unknown, RegOp::Read(_)))
}

/// Follows the schedule; returns what was injected.
async fn follow(cluster: &Cluster, faults: &[Arc<dyn Fault>], schedule: &[Step], seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut injected = Vec::new();
    for step in schedule {
        tokio::time::sleep(Duration::from_millis(step.gap_ms)).await;
        let fault = &faults[step.fault];
        if let Some(what) = fault.inject(cluster, &mut rng).await {
            tracing::info!(fault = fault.name(), %what, "injected");
            injected.push(format!("{}: {what}", fault.name()));
        }
        tokio::time::sleep(Duration::from_millis(step.hold_ms)).await;
        fault.heal(cluster).await;
    }
    injected
}

/// Polls until the leader serves a linearizable read and a write, or `limit` passes.
async fn wait_until_serving(cluster: &Cluster, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(leader) = cluster.leader().await
            && let Some(h) = cluster.handle(leader).await
            && h.get(b"probe", ReadConsistency::Linearizable).await.is_ok()
            && h.put("probe", "ok").await.is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// One last linearizable read of every register, recorded like any other operation.
async fn final_reads(cluster: &Cluster, config: &RunConfig, history: &History) {
    for key in 0..config.keys {
        let call_us = history.now_us();
        let leader = cluster.leader().await;
        let got = match leader {
            Some(l) => match cluster.handle(l).await {
                Some(h) => h.get(&workload::register_key(key), ReadConsistency::Linearizable).await.ok(),
                None => None,
            },
            None => None,
        };
        if let Some((v, _)) = got
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

/// Reads every set at the leader.
async fn read_sets(cluster: &Cluster, sets: u32) -> Result<Vec<Vec<u64>>> {
    let leader =
        cluster.leader().await.ok_or_else(|| Error::Client("no leader for the final read".into()))?;
    let h = cluster.handle(leader).await.ok_or_else(|| Error::Client("the leader stopped".into()))?;
    let mut out = Vec::new();
    for k in 0..sets {
        let (v, _) = h.get(&workload::set_key(k), ReadConsistency::Linearizable).await?;
        out.push(match v {
            Some(b) => set::decode(&b).map_err(Error::Client)?,
            None => Vec::new(),
        });
    }
    Ok(out)
}
