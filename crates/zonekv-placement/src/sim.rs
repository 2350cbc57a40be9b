//! A fake-time cluster that carries out the planner's actions the way the driver does: a new
//! replica joins as a learner, receives its snapshot (range bytes at the snapshot rate, at
//! most `max_snapshots` per node sending and receiving), then is promoted and the replaced
//! one removed in one joint-consensus step. Leaders on down nodes fail over to a live voter.
//! It records every move, the bytes moved, and any moment a range lacks a quorum.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{Cluster, Millis, NodeId, NodeState, RangeId, Replica, Role};
use crate::plan::{Action, Planner};
use crate::policy::Policy;

/// Simulation settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    /// The decisions.
    pub planner: Planner,
    /// Fake time per step. Default 1 s.
    pub tick: Millis,
    /// Snapshot bytes per second per transfer. Default 64 MiB/s.
    pub snapshot_bytes_per_sec: u64,
    /// Snapshots one node sends, and receives, at once. Default 2.
    pub max_snapshots: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self { planner: Planner::default(), tick: 1000, snapshot_bytes_per_sec: 64 << 20, max_snapshots: 2 }
    }
}

/// A replica being added: it receives its snapshot until `done_at`.
#[derive(Debug, Clone, Copy)]
struct Transfer {
    range: RangeId,
    role: Role,
    from: Option<NodeId>,
    to: NodeId,
    sender: NodeId,
    done_at: Millis,
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct SimLog {
    /// Replicas added (new ranges' first replicas not counted).
    pub added: usize,
    /// Replicas removed.
    pub removed: usize,
    /// Snapshot bytes sent.
    pub bytes_moved: u64,
    /// Leadership transfers the planner asked for.
    pub lease_transfers: usize,
    /// Ranges that lost quorum, and when (once per episode).
    pub quorum_lost: Vec<(Millis, RangeId)>,
    /// Replicas that a rebalance placed and a later rebalance moved again.
    pub moved_twice: Vec<(RangeId, NodeId)>,
    /// The last reason each range's action could not be carried out, if any now.
    pub unsatisfiable: BTreeMap<RangeId, String>,
}

/// The simulated cluster.
#[derive(Debug, Clone)]
pub struct Sim {
    /// Nodes and ranges now.
    pub cluster: Cluster,
    /// The policy of every range.
    pub policy: Policy,
    /// Settings.
    pub config: SimConfig,
    /// Fake time now.
    pub now: Millis,
    /// What happened so far.
    pub log: SimLog,
    transfers: Vec<Transfer>,
    last_moved: BTreeMap<RangeId, Millis>,
    rebalanced_to: BTreeSet<(RangeId, NodeId)>,
    without_quorum: BTreeSet<RangeId>,
}

impl Sim {
    /// A simulation of `cluster` (nodes, and ranges if any) under `policy`.
    pub fn new(cluster: Cluster, policy: Policy, config: SimConfig) -> Self {
        Self {
            cluster,
            policy,
            config,
            now: 0,
            log: SimLog::default(),
            transfers: vec![],
            last_moved: BTreeMap::new(),
            rebalanced_to: BTreeSet::new(),
            without_quorum: BTreeSet::new(),
        }
    }

    /// Creates `count` empty ranges (ids from `first_id`), each placed as the allocator places
    /// a new range's replicas one by one, led where the lease preferences say.
    pub fn create_ranges(&mut self, first_id: RangeId, count: u64, bytes: u64) -> crate::Result<()> {
        let a = self.config.planner.allocator;
        for id in first_id..first_id + count {
            self.cluster.add_range(crate::Range { id, replicas: vec![], leader: None, bytes })?;
            for (role, n) in [(Role::Voter, self.policy.voters), (Role::NonVoter, self.policy.non_voters)] {
                for _ in 0..n {
                    let range = self.cluster.range(id).expect("just added");
                    let to = a
                        .add_target(&self.cluster, &self.policy, range, role, None)
                        .map_err(|why| crate::Error::Unsatisfiable(format!("range {id}: {why}")))?;
                    self.cluster.add_replica(id, Replica { node: to, role });
                }
            }
            let range = self.cluster.range(id).expect("just added");
            let leader = a.lease_target(&self.cluster, &self.policy, range);
            self.cluster.set_leader(id, leader);
        }
        Ok(())
    }

    /// Node `id` stops (as if killed): down from now.
    pub fn kill(&mut self, id: NodeId) {
        if let Some(n) = self.cluster.node_mut(id) {
            n.state = NodeState::Down { since: self.now };
        }
    }

    /// Node `id` starts decommissioning.
    pub fn decommission(&mut self, id: NodeId) {
        if let Some(n) = self.cluster.node_mut(id) {
            n.state = NodeState::Decommissioning;
        }
    }

    /// Whether nothing is in flight, no range has an action that could be started, and no
    /// down node still holding replicas is waiting to be declared dead.
    pub fn settled(&self) -> bool {
        self.transfers.is_empty()
            && !self.waiting_for_dead()
            && self.plans().iter().all(|(_, a)| matches!(a, Action::Unsatisfiable(_)))
    }

    /// Whether a down node holding replicas is not dead yet (its replicas will be replaced).
    fn waiting_for_dead(&self) -> bool {
        let dead_after = self.config.planner.dead_after;
        self.cluster.nodes().any(|n| {
            matches!(n.state, NodeState::Down { .. })
                && !n.dead(self.now, dead_after)
                && self.cluster.replicas_on(n.id) > 0
        })
    }

    /// Steps until settled, at most `limit` of fake time; returns the time it took.
    pub fn run_until_settled(&mut self, limit: Millis) -> Option<Millis> {
        let start = self.now;
        while self.now - start < limit {
            // An idle step found nothing to start and nothing in flight: settled unless a down
            // node is still to become dead.
            if self.step() && !self.waiting_for_dead() {
                return Some(self.now - start);
            }
        }
        None
    }

    /// Runs `duration` of fake time. Stretches where nothing can happen are skipped: while
    /// the cluster is idle, time jumps to the next moment something may (a down node turning
    /// dead, a range's cooldown ending).
    pub fn run_for(&mut self, duration: Millis) {
        let end = self.now + duration;
        while self.now < end {
            if self.step() {
                let next = self.next_change().unwrap_or(end).min(end);
                if next > self.now + self.config.tick {
                    self.now = next - self.config.tick;
                }
            }
        }
    }

    /// The next time a decision may change without anything happening: a down node becomes
    /// dead, or a recently moved range leaves its cooldown.
    fn next_change(&self) -> Option<Millis> {
        let p = &self.config.planner;
        let dead = self.cluster.nodes().filter_map(|n| match n.state {
            NodeState::Down { since } if since + p.dead_after > self.now => Some(since + p.dead_after),
            _ => None,
        });
        let cooled = self.last_moved.values().map(|t| t + p.cooldown).filter(|t| *t > self.now);
        dead.chain(cooled).min()
    }

    fn busy(&self, range: RangeId) -> bool {
        self.transfers.iter().any(|t| t.range == range)
    }

    /// The next action of each range with nothing in flight (ranges with nothing to do left
    /// out).
    fn plans(&self) -> Vec<(RangeId, Action)> {
        let p = &self.config.planner;
        self.cluster
            .ranges()
            .filter(|r| !self.busy(r.id))
            .map(|r| {
                (r.id, p.next(&self.cluster, &self.policy, r, self.now, self.last_moved.get(&r.id).copied()))
            })
            .filter(|(_, a)| *a != Action::Nothing)
            .collect()
    }

    /// One tick: finish due transfers, fail over leaders, start what the limits allow
    /// (repairs first; rebalancing only while nothing needs repair), check quorums. Returns
    /// whether the cluster was idle: nothing in flight and nothing to start.
    pub fn step(&mut self) -> bool {
        self.now += self.config.tick;
        self.finish_transfers();
        self.fail_over();
        let mut actions = Vec::new();
        let mut unsatisfiable = BTreeMap::new();
        for (range, action) in self.plans() {
            match action {
                Action::Unsatisfiable(why) => {
                    unsatisfiable.insert(range, why);
                }
                a => actions.push((range, a)),
            }
        }
        self.log.unsatisfiable = unsatisfiable;
        let repairing =
            actions.iter().any(|(_, a)| a.is_repair()) || self.transfers.iter().any(|t| t.from.is_none());
        let idle = actions.is_empty() && self.transfers.is_empty();
        for (range, action) in actions {
            if repairing && matches!(action, Action::Replace { repair: false, .. }) {
                continue;
            }
            self.start(range, action);
        }
        self.check_quorums();
        idle
    }

    fn snapshots(&self, node: NodeId) -> usize {
        self.transfers.iter().filter(|t| t.to == node || t.sender == node).count()
    }

    fn start(&mut self, range: RangeId, action: Action) {
        match action {
            Action::Add { role, to } => self.start_transfer(range, role, None, to),
            Action::Replace { role, from, to, repair } => {
                if !repair && self.rebalanced_to.contains(&(range, from)) {
                    self.log.moved_twice.push((range, from));
                }
                self.start_transfer(range, role, Some(from), to);
            }
            Action::Remove { from } => {
                self.cluster.remove_replica(range, from);
                self.log.removed += 1;
            }
            Action::TransferLease { to } => {
                self.cluster.set_leader(range, Some(to));
                self.log.lease_transfers += 1;
            }
            Action::Nothing | Action::Unsatisfiable(_) => {}
        }
    }

    fn start_transfer(&mut self, range: RangeId, role: Role, from: Option<NodeId>, to: NodeId) {
        let Some(r) = self.cluster.range(range) else { return };
        // The leader sends the snapshot (any live voter if it has none).
        let sender = r.leader.or_else(|| r.voters().find(|n| self.cluster.node(*n).is_some_and(|n| n.up())));
        let Some(sender) = sender else { return };
        let max = self.config.max_snapshots;
        if self.snapshots(sender) >= max || self.snapshots(to) >= max {
            return;
        }
        let bytes = r.bytes;
        let ms = (bytes.saturating_mul(1000) / self.config.snapshot_bytes_per_sec.max(1)).max(1);
        self.cluster.add_replica(range, Replica { node: to, role: Role::NonVoter });
        self.transfers.push(Transfer { range, role, from, to, sender, done_at: self.now + ms });
        self.log.bytes_moved += bytes;
        self.log.added += 1;
    }

    fn finish_transfers(&mut self) {
        let now = self.now;
        let (done, rest): (Vec<Transfer>, Vec<Transfer>) =
            self.transfers.drain(..).partition(|t| t.done_at <= now);
        self.transfers = rest;
        for t in done {
            // Promotion and removal of the replaced replica: one joint-consensus change.
            self.cluster.set_role(t.range, t.to, t.role);
            if let Some(from) = t.from {
                let rebalance = self.cluster.node(from).is_some_and(|n| n.state == NodeState::Live);
                self.cluster.remove_replica(t.range, from);
                self.log.removed += 1;
                if rebalance {
                    self.rebalanced_to.insert((t.range, t.to));
                }
            }
            self.last_moved.insert(t.range, now);
        }
    }

    /// Ranges whose leader is on a down node elect another live voter, if they have a quorum.
    fn fail_over(&mut self) {
        let lost: Vec<RangeId> = self
            .cluster
            .ranges()
            .filter(|r| r.leader.is_none_or(|l| !self.cluster.node(l).is_some_and(|n| n.up())))
            .filter(|r| self.cluster.has_quorum(r))
            .map(|r| r.id)
            .collect();
        for id in lost {
            let r = self.cluster.range(id).expect("listed");
            // Whichever live voter wins the election: the lowest id, not the preferred one.
            let winner = r.voters().filter(|n| self.cluster.node(*n).is_some_and(|n| n.up())).min();
            self.cluster.set_leader(id, winner);
        }
    }

    fn check_quorums(&mut self) {
        for r in self.cluster.ranges() {
            if self.cluster.has_quorum(r) {
                self.without_quorum.remove(&r.id);
            } else if self.without_quorum.insert(r.id) {
                self.log.quorum_lost.push((self.now, r.id));
            }
        }
    }
}
