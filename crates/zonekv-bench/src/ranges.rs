//! The idle cost and the failover time of many ranges (multi-raft issue, item 6): a 3-node
//! cluster in this process is split into N ranges (leaders optionally spread evenly), left to
//! settle for 5 s, then idle while its CPU time and memory are measured, then one node is cut
//! off from the others (as if it had died without a word: the fault table drops everything it
//! sends and everything sent to it) and the time until every range it led has a new leader is
//! measured.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use zonekv_server::{
    ControlError, Error, LocalCluster, NetFaults, NodeConfig, NodeHandle, NodeId, NodeOptions, RangeId,
    StoreError,
};

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RangesReport {
    /// Ranges in the cluster (each with 3 replicas).
    pub ranges: usize,
    /// How long creating them took.
    pub split_secs: f64,
    /// CPU time of this process while idle, as a share of one core (0.1 = 10 %).
    pub idle_cpu_share: f64,
    /// Resident memory of this process after the idle period, in bytes.
    pub rss_bytes: u64,
    /// Ranges the cut-off node led.
    pub victim_led: usize,
    /// Time until the last of them had a leader elsewhere.
    pub failover_secs: f64,
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).context("utime")?;
    let sticks: u64 = fields.get(12).and_then(|s| s.parse().ok()).context("stime")?;
    // Linux reports in USER_HZ, 100 per second on every platform we run on.
    Ok(Duration::from_millis((ticks + sticks) * 10))
}

/// Resident memory of this process.
fn rss_bytes() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    let kib: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).context("VmRSS value")?;
    Ok(kib * 1024)
}

/// Pause between creating (and balancing) the ranges and measuring their idle cost.
const SETTLE: Duration = Duration::from_secs(5);

/// The ranges each node's replica leads, by node.
async fn leaders(cluster: &LocalCluster) -> Vec<(NodeId, BTreeSet<RangeId>)> {
    let mut out = Vec::new();
    for n in cluster.running() {
        out.push((n.id(), n.leading().into_iter().collect()));
    }
    out
}

/// Splits the cluster into `ranges` ranges at `r/…`, from the highest key down, so every split
/// is of the first range, whose leader stays put (splitting the newest range instead would wait
/// for each new range's first election).
async fn split_into(nodes: &[NodeHandle], ranges: usize) -> Result<()> {
    let mut leader = 0;
    for i in (1..ranges).rev() {
        let key = format!("r/{i:05}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match nodes[leader].split(key.clone()).await {
                Ok(_) => break,
                Err(
                    Error::Store(StoreError::NotLeader { .. } | StoreError::Unavailable(_))
                    | Error::Control(ControlError::Unavailable(_)),
                ) if Instant::now() < deadline => {
                    leader = (leader + 1) % nodes.len();
                    if leader == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Err(e) => bail!("split at {key}: {e}"),
            }
        }
    }
    Ok(())
}

/// Hands the leadership of range number i (in id order) to the i-th of its voters (in id order),
/// so each node leads about a third of the ranges, and waits until at least 95 % of the moves
/// took effect.
async fn balance_leaders(cluster: &LocalCluster) -> Result<()> {
    let nodes: Vec<NodeHandle> = cluster.running().map(|n| n.handle()).collect();
    let mut wanted = BTreeSet::new();
    let mut moves = 0;
    for n in &nodes {
        let status = n.status().await;
        for r in status.ranges.iter().filter(|r| r.state == "leader") {
            let voters: Vec<NodeId> = r.members.iter().map(|m| m.node_id).collect();
            let Some(&to) = voters.get(usize::try_from(r.range_id.get()).unwrap_or(0) % voters.len().max(1))
            else {
                continue;
            };
            wanted.insert((r.range_id, to));
            if r.leader.as_ref().map(|(id, _)| *id) != Some(to) {
                n.transfer_leader(r.range_id, to).await?;
                moves += 1;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let settled = nodes
            .iter()
            .map(|n| n.leading().into_iter().filter(|&range| wanted.contains(&(range, n.id()))).count())
            .sum::<usize>();
        if settled * 100 >= wanted.len() * 95 {
            tracing::info!(moves, settled, "leaders balanced");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {settled} of {} ranges have their planned leader after 60 s", wanted.len());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs the measurement with `ranges` ranges, `idle` seconds of idleness, nodes configured by
/// `template`, leaders spread evenly first if `balance`.
pub async fn run(ranges: usize, idle: Duration, template: NodeConfig, balance: bool) -> Result<RangesReport> {
    let faults = NetFaults::new(1);
    let options = NodeOptions { faults: Some(faults.clone()), ..NodeOptions::default() };
    let cluster = LocalCluster::start_with_options(3, None, template, options).await?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let nodes: Vec<NodeHandle> = cluster.running().map(|n| n.handle()).collect();

    let started = Instant::now();
    split_into(&nodes, ranges).await?;
    // Every range has a leader before the idle period starts.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let led: usize = leaders(&cluster).await.iter().map(|(_, l)| l.len()).sum();
        if led >= ranges {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {led} of {ranges} ranges have a leader after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let split_secs = started.elapsed().as_secs_f64();
    if balance {
        balance_leaders(&cluster).await?;
    }
    // Idle means settled: the last splits' and moves' elections done, their leaders quiet.
    tokio::time::sleep(SETTLE).await;

    let (cpu0, t0) = (cpu_time()?, Instant::now());
    tokio::time::sleep(idle).await;
    let idle_cpu_share = (cpu_time()? - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    let rss_bytes = rss_bytes()?;

    // Cut off the node that leads the most ranges.
    let by_node = leaders(&cluster).await;
    let (victim, led) = by_node.iter().max_by_key(|(_, l)| l.len()).cloned().context("no node")?;
    let others: Vec<NodeId> = by_node.iter().map(|(id, _)| *id).filter(|&id| id != victim).collect();
    let cut = Instant::now();
    faults.partition(&[victim], &others);
    let deadline = cut + Duration::from_secs(60);
    loop {
        let now_led: BTreeSet<RangeId> = leaders(&cluster)
            .await
            .into_iter()
            .filter(|(id, _)| *id != victim)
            .flat_map(|(_, l)| l)
            .collect();
        if led.is_subset(&now_led) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} ranges still without a new leader after 60 s",
                led.difference(&now_led).count(),
                led.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failover_secs = cut.elapsed().as_secs_f64();
    faults.heal();
    cluster.shutdown().await;
    Ok(RangesReport { ranges, split_secs, idle_cpu_share, rss_bytes, victim_led: led.len(), failover_secs })
}
