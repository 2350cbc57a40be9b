//! Node liveness (docs/multiraft.md, "Idle cost and failover"): every node pings every other
//! node every `raft.node-liveness-interval-ms`; a node is live to this one while its pings keep
//! arriving (within `raft.node-liveness-timeout-ms`). Only pings *received* count: a node that
//! cannot send to us (a one-way partition) is dead to us, as its Raft heartbeats would be.
//! Pings go through the transport's fault table like Raft messages. A ping also names the
//! sender's stopped replicas (a fatal storage error stops one replica, not its node): a leader
//! replica that stopped sends no vote request and no heartbeat, so without this its quiet
//! followers would trust it while its node kept pinging. And a node whose log sync hangs
//! (longer than `storage.max-sync-stall-ms`) sends no pings at all: liveness vouches for the
//! node's Raft I/O, not only for its process (docs/disk-faults.md).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use zonekv_engine::Engine;
use zonekv_raft::{NodeId, RangeId};
use zonekv_store::Store;

use crate::{Membership, Peers};

/// A node's data disk (the file system holding its data directory), in bytes; 0: unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Disk {
    /// Its size.
    pub capacity: u64,
    /// What is used of it.
    pub used: u64,
}

impl Disk {
    /// The file system holding `path`, now (unknown if it cannot be read).
    pub fn of(path: &std::path::Path) -> Disk {
        match rustix::fs::statvfs(path) {
            Ok(s) => {
                let capacity = s.f_blocks.saturating_mul(s.f_frsize);
                Disk { capacity, used: capacity.saturating_sub(s.f_bavail.saturating_mul(s.f_frsize)) }
            }
            Err(_) => Disk::default(),
        }
    }
}

/// What one node tells another in a liveness ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// The sender.
    pub from: NodeId,
    /// Its replicas that stopped (a fatal storage error).
    pub stopped: Vec<RangeId>,
    /// The ranges it leads.
    pub leading: Vec<RangeId>,
    /// Its locality.
    pub locality: String,
    /// Its data disk.
    pub disk: Disk,
}

/// A peer's last ping, and when it arrived.
struct Heard {
    at: Instant,
    stopped: HashSet<RangeId>,
    locality: String,
    leading: Vec<RangeId>,
    disk: Disk,
}

/// What the placement driver needs of a peer: when it was last heard from, where it runs,
/// which ranges it leads.
#[derive(Debug, Clone)]
pub struct PeerState {
    /// The peer.
    pub node_id: NodeId,
    /// Time since its last ping arrived.
    pub silent_for: Duration,
    /// Its pings arrive (`silent_for` within the timeout).
    pub live: bool,
    /// Its locality.
    pub locality: String,
    /// The ranges it led at its last ping.
    pub leading: Vec<RangeId>,
    /// Its data disk at its last ping.
    pub disk: Disk,
}

/// Another node, as seen from this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its id.
    pub node_id: NodeId,
    /// Its locality, from its last ping.
    pub locality: String,
    /// Its pings arrive.
    pub live: bool,
}

/// When each peer node was last heard from, and what it said.
pub struct Liveness {
    timeout: Duration,
    last_heard: Mutex<HashMap<NodeId, Heard>>,
}

impl Liveness {
    /// A table in which a node is live while its pings come at most `timeout` apart.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, last_heard: Mutex::default() }
    }

    /// A ping arrived.
    pub fn heard(&self, ping: Ping) {
        let heard = Heard {
            at: Instant::now(),
            stopped: ping.stopped.into_iter().collect(),
            locality: ping.locality,
            leading: ping.leading,
            disk: ping.disk,
        };
        self.last_heard.lock().unwrap_or_else(|p| p.into_inner()).insert(ping.from, heard);
    }

    /// Every node that ever pinged this one, as the placement driver sees it.
    pub fn states(&self) -> Vec<PeerState> {
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
    pub fn peers(&self) -> Vec<Peer> {
        let mut peers: Vec<Peer> = self
            .states()
            .into_iter()
            .map(|p| Peer { node_id: p.node_id, locality: p.locality, live: p.live })
            .collect();
        peers.sort_by_key(|p| p.node_id);
        peers
    }

    /// Whether `node` pinged this node within the timeout.
    pub fn is_live(&self, node: NodeId) -> bool {
        self.pinged_recently(node, |_| true)
    }

    /// Whether `node` pinged within the timeout and its replica of `range` is running.
    pub fn runs(&self, node: NodeId, range: RangeId) -> bool {
        self.pinged_recently(node, |stopped| !stopped.contains(&range))
    }

    /// Whether `node`'s last ping is within the timeout and its stopped ranges pass `check`.
    fn pinged_recently(&self, node: NodeId, check: impl FnOnce(&HashSet<RangeId>) -> bool) -> bool {
        let heard = self.last_heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.get(&node).is_some_and(|h| h.at.elapsed() < self.timeout && check(&h.stopped))
    }
}

/// What the ping loop needs: the replicas to report on, who to ping, how.
pub(crate) struct Pinger<E: Engine> {
    pub(crate) store: Store<E>,
    pub(crate) members: Membership<E>,
    pub(crate) peers: Arc<dyn Peers>,
    pub(crate) locality: String,
    pub(crate) data_dir: PathBuf,
    pub(crate) interval: Duration,
}

impl<E: Engine> Pinger<E> {
    /// Pings every other member of the cluster each `interval`, until the store stops. A node
    /// whose log sync hangs sends no ping: liveness vouches for a node's Raft I/O, not just for
    /// its process, so the quiet ranges it leads wake and elect elsewhere (a gray failure).
    pub(crate) async fn run(self) {
        let mut silenced = false;
        while self.store.tick(self.interval).await {
            let stall = self.store.io_stalled();
            match (stall, silenced) {
                (Some(d), false) => tracing::warn!(
                    node_id = %self.store.node_id(),
                    "a log sync has been running for {d:?}: liveness pings stop until it completes"
                ),
                (None, true) => {
                    tracing::info!(node_id = %self.store.node_id(), "log syncs complete again: pinging")
                }
                _ => {}
            }
            silenced = stall.is_some();
            if !silenced {
                self.ping_all();
            }
        }
    }

    fn ping_all(&self) {
        // One look at every replica: which stopped, which lead.
        let (mut stopped, mut leading) = (Vec::new(), Vec::new());
        for r in self.store.replicas() {
            let (fatal, leads) =
                r.with_metrics(|m| (m.running_state.is_err(), m.state == openraft::ServerState::Leader));
            if fatal {
                stopped.push(r.range_id());
            } else if leads {
                leading.push(r.range_id());
            }
        }
        let ping = Ping {
            from: self.store.node_id(),
            stopped,
            leading,
            locality: self.locality.clone(),
            disk: Disk::of(&self.data_dir),
        };
        for (peer, addr) in self.members.others() {
            let (peers, ping, timeout) = (self.peers.clone(), ping.clone(), self.interval * 4);
            // Each ping on its own task: a dead peer must not delay the others' pings.
            tokio::spawn(async move {
                let _ = tokio::time::timeout(timeout, peers.ping(peer, &addr, ping)).await;
            });
        }
    }
}
