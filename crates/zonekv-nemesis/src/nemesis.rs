//! The faults a run injects, and the seeded schedule that orders them.
//!
//! Each fault is a [`Fault`]: it knows how to start and how to undo itself against a
//! [`Cluster`]. The built-in catalogue covers the network (partitions of several shapes, a
//! flaky network), nodes (stop and restart) and Raft itself (leader transfers, membership
//! changes). Later capabilities join by adding a `Fault` to the list the run is given: range
//! splits and replica moves will be faults like any other.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};
use zonekv_server::{FIRST_RANGE, LinkRule, LocalCluster, NetFaults, NodeHandle};

/// Node ids.
pub type NodeId = u64;

/// The cluster under test, shared by the clients and the nemesis.
pub struct Cluster {
    /// The nodes (stopped ones are `None` inside).
    pub nodes: RwLock<LocalCluster>,
    /// The Raft transport's fault table.
    pub net: NetFaults,
    /// Every node id.
    pub ids: Vec<NodeId>,
    /// Nodes removed from the membership by a fault, to be added back on heal.
    removed: Mutex<BTreeSet<NodeId>>,
}

impl Cluster {
    /// Wraps a started cluster whose nodes use `net`.
    pub fn new(nodes: LocalCluster, net: NetFaults) -> Self {
        let ids = nodes.members().into_iter().map(|(id, _)| id).collect();
        Self { nodes: RwLock::new(nodes), net, ids, removed: Mutex::default() }
    }

    /// A handle to node `id` if it runs. Hold it only for one call: a held handle keeps a
    /// stopped node's storage open.
    pub async fn handle(&self, id: NodeId) -> Option<NodeHandle> {
        self.nodes.read().await.node(id).map(|n| n.handle())
    }

    /// The node that believes it leads with the highest term, if any.
    pub async fn leader(&self) -> Option<NodeId> {
        let nodes = self.nodes.read().await;
        let mut best: Option<(u64, NodeId)> = None;
        for n in nodes.running() {
            let s = n.status().await;
            for r in s.ranges.iter().filter(|r| r.state == "leader") {
                if best.is_none_or(|(t, _)| r.term > t) {
                    best = Some((r.term, n.id()));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    async fn addr(&self, id: NodeId) -> Option<String> {
        self.nodes.read().await.members().into_iter().find(|(i, _)| *i == id).map(|(_, a)| a)
    }
}

/// A fault the nemesis can inject and undo.
#[async_trait]
pub trait Fault: Send + Sync {
    /// A short name for schedules and reports.
    fn name(&self) -> &'static str;
    /// Starts the fault. Returns what was done, or `None` if it does not apply now.
    async fn inject(&self, cluster: &Cluster, rng: &mut StdRng) -> Option<String>;
    /// Undoes it. Must be safe to call when the fault is not active.
    async fn heal(&self, cluster: &Cluster);
}

/// Network faults, undone by clearing the fault table.
enum Net {
    Halves,
    IsolateLeader,
    OneWayFromLeader,
    MajorityRing,
    Bridge,
    Flaky,
}

#[async_trait]
impl Fault for Net {
    fn name(&self) -> &'static str {
        match self {
            Net::Halves => "partition-halves",
            Net::IsolateLeader => "isolate-leader",
            Net::OneWayFromLeader => "one-way-from-leader",
            Net::MajorityRing => "majority-ring",
            Net::Bridge => "bridge",
            Net::Flaky => "flaky-network",
        }
    }

    async fn inject(&self, c: &Cluster, rng: &mut StdRng) -> Option<String> {
        let mut ids = c.ids.clone();
        ids.shuffle(rng);
        match self {
            Net::Halves => {
                let (a, b) = ids.split_at(ids.len() / 2);
                c.net.partition(a, b);
                Some(format!("{a:?} | {b:?}"))
            }
            Net::IsolateLeader | Net::OneWayFromLeader => {
                let leader = c.leader().await?;
                let rest: Vec<NodeId> = c.ids.iter().copied().filter(|&i| i != leader).collect();
                if matches!(self, Net::IsolateLeader) {
                    c.net.partition(&[leader], &rest);
                    Some(format!("[{leader}] | {rest:?}"))
                } else {
                    rest.iter().for_each(|&r| c.net.block(leader, r));
                    Some(format!("{leader} -> {rest:?} blocked"))
                }
            }
            Net::MajorityRing if ids.len() >= 5 => {
                // Each node reaches only its two ring neighbours: everyone sees a majority
                // (itself and two others), but no two see the same one.
                let n = ids.len();
                for (i, &a) in ids.iter().enumerate() {
                    for (j, &b) in ids.iter().enumerate() {
                        let d = (i + n - j) % n;
                        if d > 1 && d < n - 1 {
                            c.net.block(a, b);
                        }
                    }
                }
                Some(format!("ring {ids:?}"))
            }
            Net::MajorityRing => None,
            Net::Bridge => {
                let mid = ids.len() / 2;
                let (a, b) = (&ids[..mid], &ids[mid + 1..]);
                c.net.partition(a, b);
                Some(format!("{a:?} | {} | {b:?}", ids[mid]))
            }
            Net::Flaky => {
                let rule = LinkRule {
                    drop: 0.1,
                    duplicate: 0.1,
                    delay: Some((Duration::ZERO, Duration::from_millis(30))),
                    ..LinkRule::default()
                };
                c.net.set_all(&c.ids, &rule);
                Some("10 % loss, 10 % duplicates, 0-30 ms delay on every link".into())
            }
        }
    }

    async fn heal(&self, c: &Cluster) {
        c.net.heal();
    }
}

/// Stops a node (its data stays) and restarts it on heal.
struct StopStart {
    leader: bool,
}

#[async_trait]
impl Fault for StopStart {
    fn name(&self) -> &'static str {
        if self.leader { "stop-leader" } else { "stop-node" }
    }

    async fn inject(&self, c: &Cluster, rng: &mut StdRng) -> Option<String> {
        let id = if self.leader { c.leader().await? } else { c.ids[rng.random_range(0..c.ids.len())] };
        c.nodes.write().await.stop_node(id).await;
        Some(format!("node {id} stopped"))
    }

    async fn heal(&self, c: &Cluster) {
        let mut nodes = c.nodes.write().await;
        for &id in &c.ids {
            if nodes.node(id).is_none()
                && let Err(e) = nodes.restart_node(id).await
            {
                tracing::error!(node = id, error = %e, "restarting a stopped node failed");
            }
        }
    }
}

/// The leader and a random other node.
async fn leader_and_other(c: &Cluster, rng: &mut StdRng) -> Option<(NodeId, NodeId)> {
    let leader = c.leader().await?;
    let others: Vec<NodeId> = c.ids.iter().copied().filter(|&i| i != leader).collect();
    Some((leader, *others.get(rng.random_range(0..others.len().max(1)))?))
}

/// Hands leadership to a random other voter.
struct TransferLeader;

#[async_trait]
impl Fault for TransferLeader {
    fn name(&self) -> &'static str {
        "transfer-leader"
    }

    async fn inject(&self, c: &Cluster, rng: &mut StdRng) -> Option<String> {
        let (leader, to) = leader_and_other(c, rng).await?;
        let h = c.handle(leader).await?;
        h.transfer_leader(FIRST_RANGE, to).await.ok()?;
        Some(format!("{leader} -> {to}"))
    }

    async fn heal(&self, _: &Cluster) {}
}

/// Removes a follower from the membership and adds it back on heal.
struct RemoveFollower;

#[async_trait]
impl Fault for RemoveFollower {
    fn name(&self) -> &'static str {
        "remove-and-re-add-follower"
    }

    async fn inject(&self, c: &Cluster, rng: &mut StdRng) -> Option<String> {
        let (leader, id) = leader_and_other(c, rng).await?;
        let h = c.handle(leader).await?;
        tokio::time::timeout(Duration::from_secs(5), h.remove_node(id)).await.ok()?.ok()?;
        c.removed.lock().await.insert(id);
        Some(format!("node {id} removed"))
    }

    async fn heal(&self, c: &Cluster) {
        let removed: Vec<NodeId> = std::mem::take(&mut *c.removed.lock().await).into_iter().collect();
        for id in removed {
            let Some(addr) = c.addr(id).await else { continue };
            let mut added = false;
            for _ in 0..50 {
                if let Some(h) = match c.leader().await {
                    Some(l) => c.handle(l).await,
                    None => None,
                } && tokio::time::timeout(Duration::from_secs(5), h.add_node(id, &addr, false))
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    added = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if !added {
                tracing::error!(node = id, "could not add a removed node back");
            }
        }
    }
}

/// Every built-in fault.
pub fn catalogue() -> Vec<Arc<dyn Fault>> {
    vec![
        Arc::new(Net::Halves),
        Arc::new(Net::IsolateLeader),
        Arc::new(Net::OneWayFromLeader),
        Arc::new(Net::MajorityRing),
        Arc::new(Net::Bridge),
        Arc::new(Net::Flaky),
        Arc::new(StopStart { leader: false }),
        Arc::new(StopStart { leader: true }),
        Arc::new(TransferLeader),
        Arc::new(RemoveFollower),
    ]
}

/// One step of a schedule: wait `gap_ms`, start fault `fault` (index into the catalogue),
/// hold it `hold_ms`, undo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Index into the fault list.
    pub fault: usize,
    /// Quiet time before the fault.
    pub gap_ms: u64,
    /// How long the fault lasts.
    pub hold_ms: u64,
}

/// The schedule of `seed`: enough steps to fill `total` with faults from a list of `faults`.
pub fn schedule(seed: u64, faults: usize, total: Duration) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e656d65_73697321);
    let mut steps = Vec::new();
    let mut t = 0;
    while t < total.as_millis() as u64 {
        let step = Step {
            fault: rng.random_range(0..faults),
            gap_ms: rng.random_range(200..1000),
            hold_ms: rng.random_range(500..3000),
        };
        t += step.gap_ms + step.hold_ms;
        steps.push(step);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_gives_the_same_schedule() {
        let total = Duration::from_secs(30);
        let a = schedule(42, 10, total);
        assert_eq!(a, schedule(42, 10, total));
        assert_ne!(a, schedule(43, 10, total));
        let spanned: u64 = a.iter().map(|s| s.gap_ms + s.hold_ms).sum();
        assert!(spanned >= 30_000 && a.iter().all(|s| s.fault < 10));
    }
}
