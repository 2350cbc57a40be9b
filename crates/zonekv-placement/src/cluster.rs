//! A snapshot of the cluster as the allocator sees it: nodes (locality, state, disk) and
//! ranges (replicas, leader, size), with per-node replica and leader counts kept current.

use std::collections::BTreeMap;

use crate::{Error, Locality, Result, locality};

/// A node id.
pub type NodeId = u64;
/// A range id.
pub type RangeId = u64;
/// Fake or real time in milliseconds; only differences matter.
pub type Millis = u64;

/// Whether a node can take replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Pinging.
    Live,
    /// Not heard from since this time; dead once down longer than `dead-after`.
    Down {
        /// When it was last heard from.
        since: Millis,
    },
    /// Being emptied: its replicas move away, it takes none.
    Decommissioning,
}

/// One node.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Node id.
    pub id: NodeId,
    /// Where it runs.
    pub locality: Locality,
    /// Live, down or decommissioning.
    pub state: NodeState,
    /// Disk capacity in bytes (0: unknown, never full).
    pub capacity: u64,
    /// Disk bytes used.
    pub used: u64,
}

impl Node {
    /// A live node with no disk figures.
    pub fn new(id: NodeId, locality: Locality) -> Self {
        Self { id, locality, state: NodeState::Live, capacity: 0, used: 0 }
    }

    /// Its zone: the `zone` tier, or the node itself if it has none.
    pub fn zone(&self) -> String {
        self.locality.get(locality::ZONE).map_or_else(|| format!("node-{}", self.id), str::to_string)
    }

    /// Its region: the `region` tier, or the node itself if it has none.
    pub fn region(&self) -> String {
        self.locality.get(locality::REGION).map_or_else(|| format!("node-{}", self.id), str::to_string)
    }

    /// Serves requests now (live or decommissioning): counts for quorum.
    pub fn up(&self) -> bool {
        !matches!(self.state, NodeState::Down { .. })
    }

    /// Down for longer than `dead_after` at `now`: its replicas are to be replaced.
    pub fn dead(&self, now: Millis, dead_after: Millis) -> bool {
        matches!(self.state, NodeState::Down { since } if now.saturating_sub(since) >= dead_after)
    }

    /// Fraction of its disk in use (0 if capacity is unknown).
    pub fn fullness(&self) -> f64 {
        if self.capacity == 0 { 0.0 } else { self.used as f64 / self.capacity as f64 }
    }
}

/// A replica's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Votes: counts for quorum.
    Voter,
    /// Raft learner: a copy that does not vote.
    NonVoter,
}

/// One replica of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica {
    /// The node that holds it.
    pub node: NodeId,
    /// Voter or not.
    pub role: Role,
}

/// One range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// Range id.
    pub id: RangeId,
    /// Its replicas.
    pub replicas: Vec<Replica>,
    /// The node of its leader, if known.
    pub leader: Option<NodeId>,
    /// Its size in bytes (what a new replica's snapshot carries).
    pub bytes: u64,
}

impl Range {
    /// The nodes of its voters.
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas.iter().filter(|r| r.role == Role::Voter).map(|r| r.node)
    }

    /// Whether it has a replica on `node`.
    pub fn has(&self, node: NodeId) -> bool {
        self.replicas.iter().any(|r| r.node == node)
    }
}

/// Nodes and ranges, with replica and leader counts per node.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    ranges: BTreeMap<RangeId, Range>,
    replicas_on: BTreeMap<NodeId, usize>,
    leaders_on: BTreeMap<NodeId, usize>,
}

impl Cluster {
    /// Adds a node; its id must be new.
    pub fn add_node(&mut self, node: Node) -> Result<()> {
        if self.nodes.contains_key(&node.id) {
            return Err(Error::BadCluster(format!("node {} is listed twice", node.id)));
        }
        self.nodes.insert(node.id, node);
        Ok(())
    }

    /// Adds a range; its replicas must be on known nodes, one per node.
    pub fn add_range(&mut self, range: Range) -> Result<()> {
        if self.ranges.contains_key(&range.id) {
            return Err(Error::BadCluster(format!("range {} is listed twice", range.id)));
        }
        for (i, r) in range.replicas.iter().enumerate() {
            if !self.nodes.contains_key(&r.node) {
                return Err(Error::BadCluster(format!(
                    "range {} has a replica on unknown node {}",
                    range.id, r.node
                )));
            }
            if range.replicas[..i].iter().any(|o| o.node == r.node) {
                return Err(Error::BadCluster(format!(
                    "range {} has two replicas on node {}",
                    range.id, r.node
                )));
            }
        }
        range.replicas.iter().for_each(|r| *self.replicas_on.entry(r.node).or_default() += 1);
        if let Some(l) = range.leader {
            *self.leaders_on.entry(l).or_default() += 1;
        }
        self.ranges.insert(range.id, range);
        Ok(())
    }

    /// The node `id`.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// The node `id`, to change its state or disk figures.
    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes.get_mut(&id)
    }

    /// Every node, by id.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// The range `id`.
    pub fn range(&self, id: RangeId) -> Option<&Range> {
        self.ranges.get(&id)
    }

    /// Every range, by id.
    pub fn ranges(&self) -> impl Iterator<Item = &Range> {
        self.ranges.values()
    }

    /// Replicas on `node`.
    pub fn replicas_on(&self, node: NodeId) -> usize {
        self.replicas_on.get(&node).copied().unwrap_or(0)
    }

    /// Ranges led from `node`.
    pub fn leaders_on(&self, node: NodeId) -> usize {
        self.leaders_on.get(&node).copied().unwrap_or(0)
    }

    /// Adds a replica of `range` on `node` (which must not hold one).
    pub fn add_replica(&mut self, range: RangeId, replica: Replica) {
        let r = self.ranges.get_mut(&range).expect("known range");
        assert!(!r.has(replica.node), "range {range} already has a replica on node {}", replica.node);
        r.replicas.push(replica);
        *self.replicas_on.entry(replica.node).or_default() += 1;
    }

    /// Removes the replica of `range` on `node`; a leader there is lost with it.
    pub fn remove_replica(&mut self, range: RangeId, node: NodeId) {
        let r = self.ranges.get_mut(&range).expect("known range");
        let before = r.replicas.len();
        r.replicas.retain(|x| x.node != node);
        if r.replicas.len() < before {
            *self.replicas_on.entry(node).or_default() -= 1;
        }
        if r.leader == Some(node) {
            self.set_leader(range, None);
        }
    }

    /// Changes a replica's role.
    pub fn set_role(&mut self, range: RangeId, node: NodeId, role: Role) {
        let r = self.ranges.get_mut(&range).expect("known range");
        if let Some(x) = r.replicas.iter_mut().find(|x| x.node == node) {
            x.role = role;
        }
    }

    /// Moves the leadership of `range` (to no node: leaderless).
    pub fn set_leader(&mut self, range: RangeId, leader: Option<NodeId>) {
        let r = self.ranges.get_mut(&range).expect("known range");
        if let Some(old) = r.leader.take() {
            *self.leaders_on.entry(old).or_default() -= 1;
        }
        if let Some(new) = leader {
            *self.leaders_on.entry(new).or_default() += 1;
        }
        r.leader = leader;
    }

    /// Whether a majority of the range's voters are on nodes that are up.
    pub fn has_quorum(&self, range: &Range) -> bool {
        let voters: Vec<NodeId> = range.voters().collect();
        let up = voters.iter().filter(|n| self.nodes.get(n).is_some_and(Node::up)).count();
        up * 2 > voters.len()
    }
}
