//! An in-process cluster under test: nodes reached through their handles, the Raft
//! transport's fault table, and the faults that act on them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use tokio::sync::{Mutex, RwLock};
pub use zonekv_server::NodeId;
use zonekv_server::{
    DiskFaultTable, Error, FIRST_RANGE, LinkRule, LocalCluster, NetFaults, NodeHandle, RangeId,
    ReadConsistency, Role, StoreError,
};

use crate::backend::Backend;
use crate::history::Status;
use crate::nemesis::Fault;

/// Longest a client waits for one operation before calling its outcome unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// The cluster under test, shared by the clients and the nemesis.
pub struct Cluster {
    /// The nodes (stopped ones are `None` inside).
    pub nodes: RwLock<LocalCluster>,
    /// The Raft transport's fault table.
    pub net: NetFaults,
    /// Each node's disk faults.
    pub disks: DiskFaultTable,
    /// Every node id.
    pub ids: Vec<NodeId>,
    /// Nodes removed from the membership by a fault, to be added back on heal.
    removed: Mutex<BTreeSet<NodeId>>,
}

impl Cluster {
    /// Wraps a started cluster whose nodes use `net` and `disks`.
    pub fn new(nodes: LocalCluster, net: NetFaults, disks: DiskFaultTable) -> Self {
        let ids = nodes.members().into_iter().map(|(id, _)| id).collect();
        Self { nodes: RwLock::new(nodes), net, disks, ids, removed: Mutex::default() }
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

/// Whether a failed call certainly changed nothing: the store's own word for it (refused
/// before anything was proposed, as a write to a full disk is, or refused at apply).
fn status_of(e: &Error) -> Status {
    match e {
        Error::Store(s) if s.not_applied() => Status::Fail,
        _ => Status::Unknown,
    }
}

impl Cluster {
    /// Runs `call` at a random running node, then (once) at the leader it names; times out as
    /// unknown. Attempts refused with "not leader" changed nothing, so one op may take two.
    async fn at_some_node<T, F, Fut>(&self, rng: &mut StdRng, call: F) -> Result<T, Status>
    where
        F: Fn(NodeHandle) -> Fut + Send,
        Fut: Future<Output = Result<T, Error>> + Send,
    {
        let mut target: NodeId = self.ids[rng.random_range(0..self.ids.len())];
        for _ in 0..2 {
            let Some(h) = self.handle(target).await else { return Err(Status::Fail) };
            match tokio::time::timeout(OP_TIMEOUT, call(h)).await {
                Err(_) => return Err(Status::Unknown),
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(Error::Store(StoreError::NotLeader { leader: Some(l), .. }))) => target = l.node_id,
                Ok(Err(e)) => return Err(status_of(&e)),
            }
        }
        Err(Status::Fail)
    }
}

#[async_trait]
impl Backend for Cluster {
    async fn get(&self, rng: &mut StdRng, key: &Bytes) -> Result<Option<Bytes>, Status> {
        self.at_some_node(rng, |h| {
            let k = key.clone();
            async move { h.get(&k, ReadConsistency::Linearizable).await.map(|(v, _)| v) }
        })
        .await
    }

    async fn put(&self, rng: &mut StdRng, key: &Bytes, value: Bytes) -> Result<(), Status> {
        self.at_some_node(rng, |h| {
            let (k, v) = (key.clone(), value.clone());
            async move { h.put(k, v).await.map(drop) }
        })
        .await
    }

    async fn cas(
        &self,
        rng: &mut StdRng,
        key: &Bytes,
        expected: Option<Bytes>,
        new_value: Bytes,
    ) -> Result<bool, Status> {
        self.at_some_node(rng, |h| {
            let (k, e, v) = (key.clone(), expected.clone(), new_value.clone());
            async move { h.compare_and_swap(k, e, Some(v)).await.map(|(o, _)| o.succeeded) }
        })
        .await
    }

    async fn shutdown(&self) {
        let mut nodes = self.nodes.write().await;
        for id in self.ids.clone() {
            nodes.stop_node(id).await;
        }
    }
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
impl Fault<Cluster> for Net {
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
impl Fault<Cluster> for StopStart {
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
                tracing::error!(node = %id, error = %e, "restarting a stopped node failed");
            }
        }
    }
}

/// How long each fsync takes while a node's disk is stalled (the longest a fault is held).
const STALL: Duration = Duration::from_secs(3);

/// Disk faults on one node (a minority), healed by clearing the fault and restarting the node
/// if it stopped (an operator replacing or freeing the disk).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Disk {
    /// Every fsync of the leader (or of a random node) takes 3 s, past
    /// `storage.max-sync-stall-ms`: the node refuses requests and its liveness pings stop.
    Stall,
    /// A random node's fsyncs fail (EIO): it stops for good.
    FailSync,
    /// The disk of the leader (or of a random node) is full: it reports no free space, so it
    /// refuses client writes (`RESOURCE_EXHAUSTED`, nothing written), and its next Raft log
    /// write fails with ENOSPC, which stops the node.
    Full,
}

#[async_trait]
impl Fault<Cluster> for Disk {
    fn name(&self) -> &'static str {
        match self {
            Disk::Stall => "disk-stall",
            Disk::FailSync => "fail-sync",
            Disk::Full => "disk-full",
        }
    }

    async fn inject(&self, c: &Cluster, rng: &mut StdRng) -> Option<String> {
        let id = match (self, rng.random_bool(0.5)) {
            (Disk::Stall | Disk::Full, true) => c.leader().await?,
            _ => c.ids[rng.random_range(0..c.ids.len())],
        };
        c.handle(id).await?;
        let disk = c.disks.node(id);
        Some(match self {
            Disk::Stall => {
                disk.stall_syncs(STALL);
                format!("node {id}: every fsync takes {STALL:?}")
            }
            Disk::FailSync => {
                disk.fail_syncs(true);
                format!("node {id}: fsyncs fail (EIO)")
            }
            Disk::Full => {
                disk.fill_disk(true);
                format!("node {id}: disk full (ENOSPC)")
            }
        })
    }

    async fn heal(&self, c: &Cluster) {
        let mut nodes = c.nodes.write().await;
        for &id in &c.ids {
            let disk = c.disks.node(id);
            match self {
                Disk::Stall => disk.stall_syncs(Duration::ZERO),
                Disk::FailSync => disk.fail_syncs(false),
                Disk::Full => disk.fill_disk(false),
            }
            // A node that stopped on a failed fsync or log write runs again only after a restart.
            let failed = nodes.node(id).is_some_and(|n| n.storage_failure().is_some());
            if failed {
                nodes.stop_node(id).await;
                if let Err(e) = nodes.restart_node(id).await {
                    tracing::error!(node = %id, error = %e, "restarting a node after its disk failed");
                }
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
impl Fault<Cluster> for TransferLeader {
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
impl Fault<Cluster> for RemoveFollower {
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
                tracing::error!(node = %id, "could not add a removed node back");
            }
        }
    }
}

/// Splits the range holding a random workload key at that key, so the workload's keys spread
/// over more and more ranges (with their own leaders) while the other faults go on. A split is
/// permanent: healing does nothing.
struct SplitRange;

#[async_trait]
impl Fault<Cluster> for SplitRange {
    fn name(&self) -> &'static str {
        "split-range"
    }

    async fn inject(&self, c: &Cluster, rng: &mut StdRng) -> Option<String> {
        let key = crate::workload::split_point(rng);
        // Only the range's leader can split it; try every running node.
        for id in c.ids.clone() {
            let Some(h) = c.handle(id).await else { continue };
            if let Ok(Ok((left, right))) =
                tokio::time::timeout(Duration::from_secs(5), h.split(key.clone())).await
            {
                return Some(format!(
                    "range {} split at {key:?}: new range {}",
                    left.range_id, right.range_id
                ));
            }
        }
        None
    }

    async fn heal(&self, _: &Cluster) {}
}

/// A random range other than the first, with the running node that leads it and its
/// members as that leader reports them: (node, is a voter).
async fn led_range(c: &Cluster, rng: &mut StdRng) -> Option<(NodeId, RangeId, Vec<(NodeId, bool)>)> {
    let mut led = Vec::new();
    for id in c.ids.clone() {
        let Some(h) = c.handle(id).await else { continue };
        for r in
            h.status().await.ranges.into_iter().filter(|r| r.state == "leader" && r.range_id != FIRST_RANGE)
        {
            let members = r.members.iter().map(|m| (m.node_id, m.role == Role::Voter)).collect();
            led.push((id, r.range_id, members));
        }
    }
    led.choose(rng).cloned()
}

/// A random voter among `members` other than `leader`.
fn other_voter(members: &[(NodeId, bool)], leader: NodeId, rng: &mut StdRng) -> Option<NodeId> {
    members
        .iter()
        .filter(|(n, voter)| *voter && *n != leader)
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .choose(rng)
        .copied()
}

/// Moves a replica of a random split-off range to a running node without one, through the
/// range's leader (learner, snapshot, joint-consensus swap); if every running node holds
/// one, removes a voter instead (ranges start with a replica on every node). Never the
/// leader's own replica. Permanent: healing does nothing.
struct MoveReplica;

#[async_trait]
impl Fault<Cluster> for MoveReplica {
    fn name(&self) -> &'static str {
        "move-replica"
    }

    async fn inject(&self, c: &Cluster, rng: &mut StdRng) -> Option<String> {
        let (leader, range, members) = led_range(c, rng).await?;
        let from = other_voter(&members, leader, rng)?;
        let mut targets = Vec::new();
        for id in c.ids.iter().copied().filter(|id| members.iter().all(|(n, _)| n != id)) {
            if c.handle(id).await.is_some() {
                targets.push(id);
            }
        }
        let h = c.handle(leader).await?;
        match targets.choose(rng) {
            Some(&to) => {
                let moved =
                    tokio::time::timeout(Duration::from_secs(15), h.move_replica(range, from, to)).await;
                if let Ok(Err(e)) = &moved {
                    tracing::info!(%range, %from, %to, error = %e, "move refused");
                }
                moved.ok()?.ok()?;
                Some(format!("range {range}: replica moved from node {from} to node {to}"))
            }
            None if members.iter().filter(|(_, voter)| *voter).count() > 3 => {
                tokio::time::timeout(Duration::from_secs(10), h.remove_replica(range, from))
                    .await
                    .ok()?
                    .ok()?;
                Some(format!("range {range}: replica on node {from} removed"))
            }
            None => None,
        }
    }

    async fn heal(&self, _: &Cluster) {}
}

/// Hands the leadership of a random split-off range to another of its voters.
struct TransferRangeLeader;

#[async_trait]
impl Fault<Cluster> for TransferRangeLeader {
    fn name(&self) -> &'static str {
        "transfer-range-leader"
    }

    async fn inject(&self, c: &Cluster, rng: &mut StdRng) -> Option<String> {
        let (leader, range, members) = led_range(c, rng).await?;
        let to = other_voter(&members, leader, rng)?;
        let h = c.handle(leader).await?;
        tokio::time::timeout(Duration::from_secs(5), h.transfer_leader(range, to)).await.ok()?.ok()?;
        Some(format!("range {range}: leadership {leader} -> {to}"))
    }

    async fn heal(&self, _: &Cluster) {}
}

/// Every built-in fault.
pub fn catalogue() -> Vec<Arc<dyn Fault<Cluster>>> {
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
        Arc::new(SplitRange),
        Arc::new(MoveReplica),
        Arc::new(TransferRangeLeader),
        Arc::new(Disk::Stall),
        Arc::new(Disk::FailSync),
        Arc::new(Disk::Full),
    ]
}
