//! The allocator: which node a new replica goes to, which replica leaves, where the leader
//! belongs, and which replica a rebalance moves (docs/placement.md, "Decisions"). Pure
//! functions of a [`Cluster`] snapshot, a [`Policy`] and a seed.

use std::cmp::Ordering;

use crate::cluster::{Cluster, Millis, Node, NodeId, Range, RangeId, Replica, Role};
use crate::policy::{Constraint, Policy};

/// Allocator settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allocator {
    /// Breaks ties between equally good nodes (deterministically, differently per range).
    pub seed: u64,
    /// A node with this fraction of its disk used takes no new replicas. Default 0.95.
    pub full_fraction: f64,
    /// Rebalancing moves replicas only off nodes above the mean by more than this fraction,
    /// onto nodes below it by as much. Default 0.05.
    pub rebalance_threshold: f64,
}

impl Default for Allocator {
    fn default() -> Self {
        Self { seed: 0, full_fraction: 0.95, rebalance_threshold: 0.05 }
    }
}

/// SplitMix64: a well-mixed 64-bit hash.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Required constraints with a count: replicas still missing among `nodes`.
fn missing(cluster: &Cluster, list: &[Constraint], nodes: &[NodeId]) -> usize {
    list.iter()
        .filter(|c| c.required)
        .filter_map(|c| {
            let have =
                nodes.iter().filter(|n| cluster.node(**n).is_some_and(|n| c.matches(&n.locality))).count();
            c.count.map(|want| want.saturating_sub(have))
        })
        .sum()
}

/// The constraint lists that apply to a replica with `role`, each with whether it counts
/// voters only.
fn counted(policy: &Policy, role: Role) -> impl Iterator<Item = (&[Constraint], bool)> {
    [(&policy.constraints[..], false), (&policy.voter_constraints[..], true)]
        .into_iter()
        .filter(move |(_, voters_only)| !voters_only || role == Role::Voter)
}

/// The nodes of `others` (voters only if `voters_only`), and `extra`.
fn nodes_of(others: &[Replica], voters_only: bool, extra: Option<NodeId>) -> Vec<NodeId> {
    let mut nodes: Vec<NodeId> =
        others.iter().filter(|r| !voters_only || r.role == Role::Voter).map(|r| r.node).collect();
    nodes.extend(extra);
    nodes
}

/// Why a node cannot take a replica (for the message when none can).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Refusal {
    NotLive,
    HasReplica,
    Full,
    Constraint,
    Zone,
    Region,
}

impl Refusal {
    fn describe(self) -> &'static str {
        match self {
            Refusal::NotLive => "down or decommissioning",
            Refusal::HasReplica => "already hold a replica",
            Refusal::Full => "disk above the full threshold",
            Refusal::Constraint => "excluded by the constraints",
            Refusal::Zone => "in a zone that already has a voter (survival zone)",
            Refusal::Region => "in a region at its voter limit (survival region)",
        }
    }
}

impl Allocator {
    fn tie(&self, range: RangeId, node: NodeId) -> u64 {
        mix(self.seed ^ mix(range) ^ mix(node.rotate_left(32)))
    }

    /// Whether `node` may hold a replica with `role` next to `others` (the range's other
    /// replicas, the one being replaced excluded).
    fn refusal(
        &self,
        cluster: &Cluster,
        policy: &Policy,
        node: &Node,
        role: Role,
        others: &[Replica],
    ) -> Option<Refusal> {
        if node.state != crate::NodeState::Live {
            return Some(Refusal::NotLive);
        }
        if others.iter().any(|r| r.node == node.id) {
            return Some(Refusal::HasReplica);
        }
        if node.fullness() >= self.full_fraction {
            return Some(Refusal::Full);
        }
        if !self.fits_constraints(cluster, policy, node, role, others) {
            return Some(Refusal::Constraint);
        }
        if role == Role::Voter {
            let voters: Vec<&Node> = others
                .iter()
                .filter(|r| r.role == Role::Voter)
                .filter_map(|r| cluster.node(r.node))
                .collect();
            if voters.iter().filter(|v| v.zone() == node.zone()).count() >= policy.max_voters_per_zone() {
                return Some(Refusal::Zone);
            }
            if voters.iter().filter(|v| v.region() == node.region()).count() >= policy.max_voters_per_region()
            {
                return Some(Refusal::Region);
            }
        }
        None
    }

    /// The constraints allow `node` (prohibited labels, all-replica requirements), and the
    /// slots left after it can still take every replica a counted constraint lacks.
    fn fits_constraints(
        &self,
        cluster: &Cluster,
        policy: &Policy,
        node: &Node,
        role: Role,
        others: &[Replica],
    ) -> bool {
        if counted(policy, role).any(|(list, _)| list.iter().any(|c| c.excludes(&node.locality))) {
            return false;
        }
        // Counted constraints: after this replica, the remaining slots must cover what is
        // still missing.
        let total = policy.voters + policy.non_voters;
        counted(policy, role).all(|(list, voters_only)| {
            let with = nodes_of(others, voters_only, Some(node.id));
            let slots = if voters_only { policy.voters } else { total }.saturating_sub(with.len());
            missing(cluster, list, &with) <= slots
        })
    }

    /// Fills a counted constraint that still lacks replicas.
    fn necessary(
        &self,
        cluster: &Cluster,
        policy: &Policy,
        node: &Node,
        role: Role,
        others: &[Replica],
    ) -> bool {
        counted(policy, role).any(|(list, voters_only)| {
            missing(cluster, list, &nodes_of(others, voters_only, Some(node.id)))
                < missing(cluster, list, &nodes_of(others, voters_only, None))
        })
    }

    /// Mean diversity of `node` against the nodes of `others` (1.0 with none).
    pub fn diversity(&self, cluster: &Cluster, node: &Node, others: &[Replica]) -> f64 {
        let scores: Vec<f64> = others
            .iter()
            .filter(|r| r.node != node.id)
            .filter_map(|r| cluster.node(r.node))
            .map(|o| node.locality.diversity(&o.locality))
            .collect();
        if scores.is_empty() { 1.0 } else { scores.iter().sum::<f64>() / scores.len() as f64 }
    }

    /// The best node for a new replica of `range` with `role`, `replacing` one (which then
    /// does not count); or why there is none.
    pub fn add_target(
        &self,
        cluster: &Cluster,
        policy: &Policy,
        range: &Range,
        role: Role,
        replacing: Option<NodeId>,
    ) -> Result<NodeId, String> {
        let others: Vec<Replica> =
            range.replicas.iter().copied().filter(|r| Some(r.node) != replacing).collect();
        let mut refused: Vec<Refusal> = Vec::new();
        let mut best: Option<(&Node, Rank)> = None;
        for node in cluster.nodes() {
            // The replica being replaced stays where it is until the new one is in.
            let why = if Some(node.id) == replacing {
                Some(Refusal::HasReplica)
            } else {
                self.refusal(cluster, policy, node, role, &others)
            };
            if let Some(why) = why {
                refused.push(why);
                continue;
            }
            let key = (
                self.necessary(cluster, policy, node, role, &others),
                self.diversity(cluster, node, &others),
                cluster.replicas_on(node.id),
                node.fullness(),
                self.tie(range.id, node.id),
            );
            if best.as_ref().is_none_or(|(_, b)| better(&key, b)) {
                best = Some((node, key));
            }
        }
        match best {
            Some((node, _)) => Ok(node.id),
            None => {
                refused.sort();
                let mut parts: Vec<String> = Vec::new();
                for why in [
                    Refusal::NotLive,
                    Refusal::HasReplica,
                    Refusal::Full,
                    Refusal::Constraint,
                    Refusal::Zone,
                    Refusal::Region,
                ] {
                    let n = refused.iter().filter(|r| **r == why).count();
                    if n > 0 {
                        parts.push(format!("{n} {}", why.describe()));
                    }
                }
                Err(format!("no node can take it: of {} nodes, {}", refused.len(), parts.join(", ")))
            }
        }
    }

    /// Whether the replica on `node` breaks a rule it could be moved to fix: survival (too
    /// many voters in its zone or region) or a constraint.
    pub fn violates(&self, cluster: &Cluster, policy: &Policy, range: &Range, node: NodeId) -> bool {
        let Some(r) = range.replicas.iter().find(|r| r.node == node) else { return false };
        let others: Vec<Replica> = range.replicas.iter().copied().filter(|o| o.node != node).collect();
        let Some(n) = cluster.node(node) else { return true };
        // Judged as if it were new, except for liveness and fullness.
        let as_new = Node { state: crate::NodeState::Live, used: 0, ..n.clone() };
        self.refusal(cluster, policy, &as_new, r.role, &others).is_some()
    }

    /// Which replica with `role` should leave when the range has one too many: on a dead or
    /// down node first, then decommissioning, then one breaking a rule, then the least
    /// diverse, then the one on the node with the most replicas.
    pub fn remove_choice(
        &self,
        cluster: &Cluster,
        policy: &Policy,
        range: &Range,
        role: Role,
        now: Millis,
        dead_after: Millis,
    ) -> Option<NodeId> {
        let candidates = range.replicas.iter().filter(|r| r.role == role);
        candidates
            .map(|r| {
                let node = cluster.node(r.node);
                let state_rank = match node.map(|n| n.state) {
                    None => 0,
                    Some(crate::NodeState::Down { .. }) if node.is_some_and(|n| n.dead(now, dead_after)) => 0,
                    Some(crate::NodeState::Down { .. }) => 1,
                    Some(crate::NodeState::Decommissioning) => 2,
                    Some(crate::NodeState::Live) => 3,
                };
                let others: Vec<Replica> =
                    range.replicas.iter().copied().filter(|o| o.node != r.node).collect();
                let diversity = node.map_or(0.0, |n| self.diversity(cluster, n, &others));
                let key = (
                    state_rank,
                    !self.violates(cluster, policy, range, r.node),
                    diversity,
                    usize::MAX - cluster.replicas_on(r.node),
                    self.tie(range.id, r.node),
                );
                (r.node, key)
            })
            .min_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(Ordering::Equal))
            .map(|(n, _)| n)
    }

    /// Where the leader should move, if it should: the first lease preference some live voter
    /// matches (the least loaded such voter, unless the leader already matches it); without
    /// a matching preference, any live voter if the leader is gone.
    pub fn lease_target(&self, cluster: &Cluster, policy: &Policy, range: &Range) -> Option<NodeId> {
        let live: Vec<&Node> = range
            .voters()
            .filter_map(|n| cluster.node(n))
            .filter(|n| n.state == crate::NodeState::Live)
            .collect();
        let least_loaded = |nodes: &[&Node]| {
            nodes.iter().min_by_key(|n| (cluster.leaders_on(n.id), self.tie(range.id, n.id))).map(|n| n.id)
        };
        for prefs in &policy.lease_preferences {
            let matching: Vec<&Node> =
                live.iter().copied().filter(|n| prefs.iter().all(|c| c.matches(&n.locality))).collect();
            if matching.is_empty() {
                continue;
            }
            if range.leader.is_some_and(|l| matching.iter().any(|n| n.id == l)) {
                return None;
            }
            return least_loaded(&matching);
        }
        match range.leader {
            Some(l) if live.iter().any(|n| n.id == l) => None,
            _ => least_loaded(&live),
        }
    }

    /// A move that evens out replica counts. Nodes are compared with those that could hold
    /// the replica instead (they keep every rule and are no less diverse: with survival zone,
    /// the other nodes of its zone), so zones of different sizes do not pull replicas across
    /// rules. The replica moves from a node above that set's mean to one below it, at least
    /// one of them off the mean by more than the threshold (hysteresis: a set within it stays
    /// put), the two at least 2 replicas apart (a move never just swaps which one is higher).
    /// `None` if the range is fine where it is.
    pub fn rebalance(&self, cluster: &Cluster, policy: &Policy, range: &Range) -> Option<(NodeId, NodeId)> {
        let count = |n: NodeId| cluster.replicas_on(n) as f64;
        let mut sources: Vec<&Replica> = range.replicas.iter().collect();
        sources.sort_by_key(|r| (std::cmp::Reverse(cluster.replicas_on(r.node)), r.node));
        for from in sources {
            let from_node = cluster.node(from.node)?;
            if from_node.state != crate::NodeState::Live {
                continue;
            }
            let others: Vec<Replica> =
                range.replicas.iter().copied().filter(|o| o.node != from.node).collect();
            let floor = self.diversity(cluster, from_node, &others) - 1e-9;
            let candidates: Vec<&Node> = cluster
                .nodes()
                .filter(|n| self.refusal(cluster, policy, n, from.role, &others).is_none())
                .filter(|n| self.diversity(cluster, n, &others) >= floor)
                .collect();
            if candidates.is_empty() {
                continue;
            }
            let mean = (candidates.iter().map(|n| count(n.id)).sum::<f64>() + count(from.node))
                / (candidates.len() + 1) as f64;
            let margin = (mean * self.rebalance_threshold).max(1.0);
            if count(from.node) <= mean {
                continue;
            }
            let high = count(from.node) > mean + margin;
            let to = candidates
                .iter()
                .filter(|n| count(n.id) < mean && (high || count(n.id) < mean - margin))
                .filter(|n| count(n.id) + 2.0 <= count(from.node))
                .min_by_key(|n| (cluster.replicas_on(n.id), self.tie(range.id, n.id)));
            if let Some(to) = to {
                return Some((from.node, to.id));
            }
        }
        None
    }
}

/// How an add candidate ranks: (necessary, diversity, replicas, fullness, tie-break hash).
type Rank = (bool, f64, usize, f64, u64);

/// Ranking of add candidates: necessary, then more diverse, then fewer replicas, then
/// emptier disk, then the tie-break hash.
fn better(a: &Rank, b: &Rank) -> bool {
    let ord =
        b.0.cmp(&a.0)
            .then(b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal))
            .then(a.2.cmp(&b.2))
            .then(a.3.partial_cmp(&b.3).unwrap_or(Ordering::Equal))
            .then(a.4.cmp(&b.4));
    ord == Ordering::Less
}
