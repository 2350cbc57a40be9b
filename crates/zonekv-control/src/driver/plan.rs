//! The driver's planning, pure and without I/O: from the cluster as a pass sees it, the steps
//! to start now — each range's next action from the planner (`zonekv-placement`), repairs
//! before any rebalancing, within the snapshot limits, splits at span policy bounds — and what
//! is in flight, backing off and cooling down between passes.

use std::collections::HashMap;

use bytes::Bytes;
use zonekv_placement::NodeState;
use zonekv_placement::{Action, Cluster, Millis, NodeId, Planner, Policy, Range};

use super::view::View;

/// A step being carried out: the node that sends the copy (the leader) and the one that
/// receives it, for the snapshot limits.
pub(super) struct Inflight {
    leader: NodeId,
    to: Option<NodeId>,
}

#[derive(Default)]
pub(super) struct State {
    /// By range.
    pub(super) inflight: HashMap<u64, Inflight>,
    /// When a replica of each range last moved (driver time).
    last_moved: HashMap<u64, Millis>,
    /// The last reason logged why a range cannot be fixed, so it is logged once.
    unsatisfiable: HashMap<u64, String>,
    /// Ranges whose last step failed: not tried again before this time (driver time), and
    /// how many failed in a row (the wait doubles, up to `MAX_BACKOFF`).
    backoff: HashMap<u64, (Millis, u32)>,
}

/// Longest wait before a range whose steps keep failing is tried again.
const MAX_BACKOFF: Millis = 60_000;

impl State {
    /// Whether the range may get a step now.
    pub(super) fn ready(&self, range: u64, now: Millis) -> bool {
        !self.inflight.contains_key(&range) && self.backoff.get(&range).is_none_or(|(until, _)| *until <= now)
    }

    /// A step on `range` ended at `now`.
    pub(super) fn ended(&mut self, range: u64, what: &What, ok: bool, now: Millis) {
        self.inflight.remove(&range);
        if !ok {
            let failures = self.backoff.get(&range).map_or(1, |(_, n)| n + 1);
            let wait = (500u64 << failures.min(10)).min(MAX_BACKOFF);
            self.backoff.insert(range, (now + wait, failures));
            return;
        }
        self.backoff.remove(&range);
        if matches!(what, What::Act(a) if copies_to(a).is_some() || matches!(a, Action::Remove { .. })) {
            self.last_moved.insert(range, now);
        }
    }
}

/// The node an action copies a replica to (its snapshot's receiver), if it copies one.
pub(super) fn copies_to(action: &Action) -> Option<NodeId> {
    match *action {
        Action::Add { to, .. } | Action::Replace { to, .. } => Some(to),
        _ => None,
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// The planner's action.
    Act(Action),
    /// Split the range at this key (a span policy's bound).
    Split(Bytes),
}

/// One step to start.
pub(super) struct Step {
    pub(super) range: u64,
    pub(super) leader: NodeId,
    pub(super) what: What,
}

/// Splits at span policy bounds, one per range (the next bound, if any, at a later pass), for
/// ranges with nothing else to do now: repairs go first.
pub(super) fn split_steps(view: &View, st: &mut State, now: Millis) -> Vec<Step> {
    let mut steps = Vec::new();
    for (range, leader, key) in &view.splits {
        if let Some(leader) = *leader
            && st.ready(*range, now)
        {
            st.inflight.insert(*range, Inflight { leader, to: None });
            steps.push(Step { range: *range, leader, what: What::Split(key.clone()) });
        }
    }
    steps
}

/// The steps to start now: each range's next action, repairs first, rebalancing only once no
/// range needs repair, within the snapshot limits; each step is recorded as in flight.
pub(super) fn plan<'p>(
    planner: &Planner,
    policy_of: &dyn Fn(u64) -> &'p Policy,
    cluster: &Cluster,
    now: Millis,
    st: &mut State,
    max_snapshots: usize,
) -> Vec<Step> {
    let mut actions = Vec::new();
    let ready: Vec<&Range> = cluster.ranges().filter(|r| st.ready(r.id, now)).collect();
    for range in ready {
        let policy = policy_of(range.id);
        match planner.next(cluster, policy, range, now, st.last_moved.get(&range.id).copied()) {
            Action::Nothing => {
                st.unsatisfiable.remove(&range.id);
            }
            Action::Unsatisfiable(why) => {
                if st.unsatisfiable.get(&range.id) != Some(&why) {
                    tracing::warn!(range = range.id, reason = %why, "placement cannot be fixed");
                    st.unsatisfiable.insert(range.id, why);
                }
            }
            action => actions.push((range, action)),
        }
    }
    let repairing = actions.iter().any(|(_, a)| a.is_repair());
    actions.sort_by_key(|(_, a)| !a.is_repair());

    let mut sends: HashMap<NodeId, usize> = HashMap::new();
    let mut receives: HashMap<NodeId, usize> = HashMap::new();
    for f in st.inflight.values() {
        if let Some(to) = f.to {
            *sends.entry(f.leader).or_default() += 1;
            *receives.entry(to).or_default() += 1;
        }
    }
    let mut steps = Vec::new();
    for (range, action) in actions {
        if repairing && matches!(action, Action::Replace { repair: false, .. }) {
            continue;
        }
        let Some(leader) = range.leader else { continue };
        // A leader does not remove its own replica: for a repair it hands the leadership over
        // first. A rebalance leaves the leader's replica be (handing over could fight the
        // lease preferences, which would move the leadership straight back).
        let action = match action {
            Action::Replace { repair: false, from, .. } if from == leader => continue,
            Action::Replace { from, .. } | Action::Remove { from } if from == leader => {
                match other_voter(cluster, range, from) {
                    Some(to) => Action::TransferLease { to },
                    None => continue,
                }
            }
            a => a,
        };
        if let Some(to) = copies_to(&action) {
            let (s, r) = (sends.entry(leader).or_default(), receives.entry(to).or_default());
            if *s >= max_snapshots || *r >= max_snapshots {
                continue;
            }
            *s += 1;
            *r += 1;
        }
        st.inflight.insert(range.id, Inflight { leader, to: copies_to(&action) });
        steps.push(Step { range: range.id, leader, what: What::Act(action) });
    }
    steps
}

/// A voter of `range` other than the one on `from`, on a live node (not down, not being
/// decommissioned).
fn other_voter(cluster: &Cluster, range: &Range, from: NodeId) -> Option<NodeId> {
    range
        .voters()
        .filter(|v| *v != from)
        .find(|v| cluster.node(*v).is_some_and(|n| n.state == NodeState::Live))
}

#[cfg(test)]
mod tests {
    use zonekv_placement::{Allocator, Locality, Node, NodeState, Replica, Role};

    use super::*;

    /// Nodes 1..=n, node i in zone `zones[i - 1]`.
    fn cluster(zones: &[&str]) -> Cluster {
        let mut c = Cluster::default();
        for (i, z) in zones.iter().enumerate() {
            let locality: Locality = format!("zone={z}").parse().unwrap();
            c.add_node(Node::new(i as u64 + 1, locality)).unwrap();
        }
        c
    }

    fn range(id: u64, voters: &[u64], leader: u64) -> Range {
        let replicas = voters.iter().map(|&node| Replica { node, role: Role::Voter }).collect();
        Range { id, replicas, leader: Some(leader), bytes: 0 }
    }

    static DEFAULT: std::sync::LazyLock<Policy> = std::sync::LazyLock::new(Policy::default);

    fn planner() -> Planner {
        Planner { allocator: Allocator::default(), dead_after: 1000, cooldown: 1000 }
    }

    #[test]
    fn a_dead_nodes_replicas_are_replaced_within_the_snapshot_limits() {
        // Zones a, b, c; node 3 (zone c) is dead and node 4 (zone c) takes its replicas.
        let mut c = cluster(&["a", "b", "c", "c"]);
        c.node_mut(3).unwrap().state = NodeState::Down { since: 0 };
        for id in 10..15 {
            c.add_range(range(id, &[1, 2, 3], 1)).unwrap();
        }
        let mut st = State::default();
        let steps = plan(&planner(), &|_| &DEFAULT, &c, 5000, &mut st, 2);
        // Node 1 leads every range and sends each copy: two at once.
        assert_eq!(steps.len(), 2, "{:?}", steps.iter().map(|s| &s.what).collect::<Vec<_>>());
        for s in &steps {
            assert!(
                matches!(s.what, What::Act(Action::Replace { from: 3, to: 4, repair: true, .. })),
                "{:?}",
                s.what
            );
        }
        // In flight: the next pass starts nothing more, and plans nothing for those ranges.
        assert!(plan(&planner(), &|_| &DEFAULT, &c, 5000, &mut st, 2).is_empty());
        st.inflight.clear();
        assert_eq!(plan(&planner(), &|_| &DEFAULT, &c, 5000, &mut st, 2).len(), 2);
    }

    #[test]
    fn a_leader_hands_over_before_its_own_replica_goes() {
        // Four voters, one too many; the one to go (zone a has two) is the leader's.
        let mut c = cluster(&["a", "a", "b", "c"]);
        c.node_mut(2).unwrap().state = NodeState::Decommissioning;
        c.add_range(range(10, &[1, 2, 3, 4], 2)).unwrap();
        let mut st = State::default();
        let steps = plan(&planner(), &|_| &DEFAULT, &c, 0, &mut st, 2);
        assert_eq!(steps.len(), 1);
        assert!(
            matches!(steps[0].what, What::Act(Action::TransferLease { to }) if to != 2),
            "{:?}",
            steps[0].what
        );
    }

    #[test]
    fn nothing_rebalances_while_a_range_needs_repair() {
        // Nodes 4 (zone a) and 1 (zone b) hold every range, nodes 5 (zone a) and 3 (zone b)
        // none: worth rebalancing. But range 20 lacks a voter: repairs come first. (Node 2,
        // alone in zone c, leads: a leader's own replica would be handed over first.)
        let mut c = cluster(&["b", "c", "b", "a", "a"]);
        for id in 10..16 {
            c.add_range(range(id, &[4, 1, 2], 2)).unwrap();
        }
        c.add_range(range(20, &[1, 2], 2)).unwrap();
        let mut st = State::default();
        let steps = plan(&planner(), &|_| &DEFAULT, &c, 0, &mut st, 8);
        assert!(
            steps.iter().all(|s| matches!(&s.what, What::Act(a) if a.is_repair())),
            "{:?}",
            steps.iter().map(|s| &s.what).collect::<Vec<_>>()
        );
        assert_eq!(steps.len(), 1);
        // Once it is repaired, the rebalancing starts.
        st.inflight.clear();
        c.add_replica(20, Replica { node: 5, role: Role::Voter });
        let steps = plan(&planner(), &|_| &DEFAULT, &c, 0, &mut st, 8);
        assert!(
            steps.iter().any(|s| matches!(s.what, What::Act(Action::Replace { repair: false, .. }))),
            "{:?}",
            steps.iter().map(|s| &s.what).collect::<Vec<_>>()
        );
    }
}
