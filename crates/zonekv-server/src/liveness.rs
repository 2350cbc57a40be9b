//! Node liveness (docs/multiraft.md, "Idle cost and failover"): every node pings every other
//! node every `raft.node-liveness-interval-ms`; a node is live to this one while its pings keep
//! arriving (within `raft.node-liveness-timeout-ms`). Only pings *received* count: a node that
//! cannot send to us (a one-way partition) is dead to us, as its Raft heartbeats would be.
//! Pings go through the transport's fault table like Raft messages. A ping also names the
//! sender's stopped replicas (a fatal storage error stops one replica, not its node): a leader
//! replica that stopped sends no vote request and no heartbeat, so without this its quiet
//! followers would trust it while its node kept pinging.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::time::Instant;
use zonekv_proto::raft::v1 as pb;
use zonekv_raft::NodeId;

use crate::faults::Verdict;
use crate::node::NodeInner;

/// A peer's last ping: when, which of its replicas had stopped then, where it runs, and
/// which ranges it led.
struct Heard {
    at: Instant,
    stopped: HashSet<u64>,
    locality: String,
    leading: Vec<u64>,
    disk: Disk,
}

/// A node's data disk (the file system holding its data directory), in bytes; 0: unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Disk {
    pub(crate) capacity: u64,
    pub(crate) used: u64,
}

impl Disk {
    /// The file system holding `path`, now (unknown if it cannot be read).
    pub(crate) fn of(path: &std::path::Path) -> Disk {
        match rustix::fs::statvfs(path) {
            Ok(s) => {
                let capacity = s.f_blocks.saturating_mul(s.f_frsize);
                Disk { capacity, used: capacity.saturating_sub(s.f_bavail.saturating_mul(s.f_frsize)) }
            }
            Err(_) => Disk::default(),
        }
    }
}

/// What the placement driver needs of a peer: when it was last heard from, where it runs,
/// which ranges it leads.
#[derive(Debug, Clone)]
pub(crate) struct PeerState {
    pub(crate) node_id: NodeId,
    /// Time since its last ping arrived.
    pub(crate) silent_for: Duration,
    /// Its pings arrive (`silent_for` within the timeout).
    pub(crate) live: bool,
    pub(crate) locality: String,
    pub(crate) leading: Vec<u64>,
    pub(crate) disk: Disk,
}

/// When each peer node was last heard from, and what it said.
pub(crate) struct Liveness {
    timeout: Duration,
    last_heard: Mutex<HashMap<NodeId, Heard>>,
}

impl Liveness {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self { timeout, last_heard: Mutex::default() }
    }

    /// A ping from `node` arrived.
    pub(crate) fn heard(&self, ping: pb::PingRequest) {
        let disk = Disk { capacity: ping.capacity_bytes, used: ping.used_bytes };
        let heard = Heard {
            at: Instant::now(),
            stopped: ping.stopped_ranges.into_iter().collect(),
            locality: ping.locality,
            leading: ping.leading_ranges,
            disk,
        };
        let node = ping.from_node;
        self.last_heard.lock().unwrap_or_else(|p| p.into_inner()).insert(node, heard);
    }

    /// Every node that ever pinged this one, as the placement driver sees it.
    pub(crate) fn states(&self) -> Vec<PeerState> {
        let heard = self.last_heard.lock().unwrap_or_else(|p| p.into_inner());
        heard
            .iter()
            .map(|(id, h)| PeerState {
                node_id: *id,
                silent_for: h.at.elapsed(),
                live: h.at.elapsed() < self.timeout,
                locality: h.locality.clone(),
                leading: h.leading.clone(),
                disk: h.disk,
            })
            .collect()
    }

    /// Every node that ever pinged this one: its locality and whether it is live, by id.
    pub(crate) fn peers(&self) -> Vec<crate::Peer> {
        let mut peers: Vec<crate::Peer> = self
            .states()
            .into_iter()
            .map(|p| crate::Peer { node_id: p.node_id, locality: p.locality, live: p.live })
            .collect();
        peers.sort_by_key(|p| p.node_id);
        peers
    }

    /// Whether `node` pinged this node within the timeout.
    pub(crate) fn is_live(&self, node: NodeId) -> bool {
        self.pinged_recently(node, |_| true)
    }

    /// Whether `node` pinged within the timeout and its replica of `range` is running.
    pub(crate) fn runs(&self, node: NodeId, range: u64) -> bool {
        self.pinged_recently(node, |stopped| !stopped.contains(&range))
    }

    /// Whether `node`'s last ping is within the timeout and its stopped ranges pass `check`.
    fn pinged_recently(&self, node: NodeId, check: impl FnOnce(&HashSet<u64>) -> bool) -> bool {
        let heard = self.last_heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.get(&node).is_some_and(|h| h.at.elapsed() < self.timeout && check(&h.stopped))
    }
}

/// Pings every other member of the first range (every node of the cluster) each `interval`,
/// until the node stops.
pub(crate) async fn run(node: Weak<NodeInner>, interval: Duration) {
    while let Some(n) = crate::node::next_tick(&node, interval).await {
        let me = n.config.node_id;
        let peers: Vec<(NodeId, String)> = {
            let metrics = n.ranges.first().replica.raft.metrics();
            let m = metrics.borrow_watched();
            let membership = m.membership_config.membership();
            membership
                .nodes()
                .filter(|(id, _)| **id != me)
                .map(|(id, info)| (*id, info.addr.clone()))
                .collect()
        };
        // One look at every replica: which stopped, which lead.
        let (mut stopped_ranges, mut leading_ranges) = (Vec::new(), Vec::new());
        for r in n.ranges.all().iter() {
            let m = r.replica.raft.metrics();
            let m = m.borrow_watched();
            if m.running_state.is_err() {
                stopped_ranges.push(r.replica.range);
            } else if m.state == openraft::ServerState::Leader {
                leading_ranges.push(r.replica.range);
            }
        }
        let disk = Disk::of(&n.config.data_dir);
        for (peer, addr) in peers {
            if let Some(faults) = &n.starter.faults
                && matches!(faults.decide(me, peer), Verdict::Drop)
            {
                continue;
            }
            let Ok(mut client) = n.starter.channels.client(&addr) else { continue };
            let ping = pb::PingRequest {
                from_node: me,
                stopped_ranges: stopped_ranges.clone(),
                locality: n.config.locality.clone(),
                leading_ranges: leading_ranges.clone(),
                capacity_bytes: disk.capacity,
                used_bytes: disk.used,
            };
            // Each ping on its own task: a dead peer must not delay the others' pings.
            tokio::spawn(async move {
                let _ = tokio::time::timeout(interval * 4, client.ping(ping)).await;
            });
        }
    }
}
