//! What to do next for one range, repair before rebalance (docs/placement.md, "Next action").

use crate::allocator::Allocator;
use crate::cluster::{Cluster, Millis, NodeId, NodeState, Range, Role};
use crate::policy::Policy;

/// One step for a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Add a replica with `role` on `to` (learner first; a voter is then promoted).
    Add {
        /// Voter or non-voter.
        role: Role,
        /// Target node.
        to: NodeId,
    },
    /// Add a replica on `to`, then remove the one on `from`; a voter is swapped through joint
    /// consensus.
    Replace {
        /// Voter or non-voter.
        role: Role,
        /// The replica that goes.
        from: NodeId,
        /// Where its replacement goes.
        to: NodeId,
        /// Repair (dead, decommissioning, breaking a rule) or rebalance.
        repair: bool,
    },
    /// Remove the replica on `from`.
    Remove {
        /// The replica that goes.
        from: NodeId,
    },
    /// Move the leadership to the voter on `to`.
    TransferLease {
        /// Target node.
        to: NodeId,
    },
    /// Something must be done and nothing can: why.
    Unsatisfiable(String),
    /// The range is where it should be.
    Nothing,
}

impl Action {
    /// Whether it repairs (runs before any rebalance).
    pub fn is_repair(&self) -> bool {
        matches!(self, Action::Add { .. } | Action::Remove { .. } | Action::Replace { repair: true, .. })
    }
}

/// Decides the next action for a range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planner {
    /// The allocator.
    pub allocator: Allocator,
    /// A node down this long is dead: its replicas are replaced. Default 5 min.
    pub dead_after: Millis,
    /// A range moved this recently is not rebalanced again. Default 5 min.
    pub cooldown: Millis,
}

impl Default for Planner {
    fn default() -> Self {
        Self { allocator: Allocator::default(), dead_after: 5 * 60_000, cooldown: 5 * 60_000 }
    }
}

impl Planner {
    /// The next action for `range` at `now`; `last_moved` is when a replica of it last moved.
    pub fn next(
        &self,
        cluster: &Cluster,
        policy: &Policy,
        range: &Range,
        now: Millis,
        last_moved: Option<Millis>,
    ) -> Action {
        let a = &self.allocator;
        for (role, want) in [(Role::Voter, policy.voters), (Role::NonVoter, policy.non_voters)] {
            let have: Vec<NodeId> =
                range.replicas.iter().filter(|r| r.role == role).map(|r| r.node).collect();
            // 1. Replicas on dead nodes, 3. on decommissioning ones: replaced.
            let gone = |n: &NodeId| cluster.node(*n).is_none_or(|n| n.dead(now, self.dead_after));
            let leaving =
                |n: &NodeId| cluster.node(*n).is_some_and(|n| n.state == NodeState::Decommissioning);
            for (pick, what) in [(&gone as &dyn Fn(&NodeId) -> bool, "dead"), (&leaving, "decommissioning")] {
                if let Some(&from) = have.iter().find(|n| pick(n)) {
                    if have.len() > want {
                        return Action::Remove { from };
                    }
                    return match a.add_target(cluster, policy, range, role, Some(from)) {
                        Ok(to) => Action::Replace { role, from, to, repair: true },
                        Err(why) => Action::Unsatisfiable(format!(
                            "{role:?} on {what} node {from} cannot be replaced: {why}"
                        )),
                    };
                }
            }
            // 2. Missing replicas.
            if have.len() < want {
                return match a.add_target(cluster, policy, range, role, None) {
                    Ok(to) => Action::Add { role, to },
                    Err(why) => Action::Unsatisfiable(format!(
                        "under-replicated: {} of {want} {role:?}s, a new one cannot be placed: {why}",
                        have.len()
                    )),
                };
            }
            // 4. Extra replicas.
            if have.len() > want
                && let Some(from) = a.remove_choice(cluster, policy, range, role, now, self.dead_after)
            {
                return Action::Remove { from };
            }
            // 5. A replica breaking a rule, if a node exists that would not.
            for &n in &have {
                if a.violates(cluster, policy, range, n)
                    && let Ok(to) = a.add_target(cluster, policy, range, role, Some(n))
                {
                    return Action::Replace { role, from: n, to, repair: true };
                }
            }
        }
        // 6. The leader where the preferences want it.
        if let Some(to) = a.lease_target(cluster, policy, range) {
            return Action::TransferLease { to };
        }
        // 7. Even out replica counts, unless the range just moved.
        if last_moved.is_none_or(|t| now.saturating_sub(t) >= self.cooldown)
            && let Some((from, to)) = a.rebalance(cluster, policy, range)
        {
            let role = range.replicas.iter().find(|r| r.node == from).map_or(Role::Voter, |r| r.role);
            return Action::Replace { role, from, to, repair: false };
        }
        Action::Nothing
    }

    /// What is wrong with the range now, in words (the operators' view): missing replicas,
    /// replicas on dead nodes, rules broken.
    pub fn violations(&self, cluster: &Cluster, policy: &Policy, range: &Range, now: Millis) -> Vec<String> {
        let mut out = Vec::new();
        for (role, want) in [(Role::Voter, policy.voters), (Role::NonVoter, policy.non_voters)] {
            let have: Vec<NodeId> =
                range.replicas.iter().filter(|r| r.role == role).map(|r| r.node).collect();
            let healthy = have
                .iter()
                .filter(|n| cluster.node(**n).is_some_and(|n| !n.dead(now, self.dead_after)))
                .count();
            if healthy < want {
                out.push(format!("{healthy} of {want} {role:?}s on nodes that are not dead"));
            }
            for &n in &have {
                if self.allocator.violates(cluster, policy, range, n) {
                    out.push(format!("the {role:?} on node {n} breaks the policy (survival or constraints)"));
                }
            }
        }
        if !cluster.has_quorum(range) {
            out.push("no quorum: most voters are on nodes that are down".into());
        }
        out
    }
}
