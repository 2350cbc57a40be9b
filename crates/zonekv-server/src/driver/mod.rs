//! The placement driver (docs/placement.md, "Driver"). On the node whose replica leads the
//! meta range, every `placement.interval-ms`: build the cluster as that node sees it
//! ([`view`]), ask the planner (`zonekv-placement`) for each range's next action, and have the
//! range's leader carry the step out ([`place`]) — repairs before any rebalancing, one step per
//! range at a time, at most `placement.max-snapshots` replica copies sent and received per
//! node. Planning is cheap and stateless but for what is in flight and when each range last
//! moved (the cooldown); a new meta leader starts over from the replicated state.

pub(crate) mod place;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use tokio::time::Instant;
use zonekv_placement::{Action, Allocator, Cluster, Millis, NodeId, NodeState, Planner, Policy, Range};
use zonekv_raft::keys::FIRST_RANGE;

use crate::node::{NodeHandle, NodeInner};

/// A step being carried out: the node that sends the copy (the leader) and the one that
/// receives it, for the snapshot limits.
struct Inflight {
    leader: NodeId,
    to: Option<NodeId>,
}

#[derive(Default)]
struct State {
    /// By range.
    inflight: HashMap<u64, Inflight>,
    /// When a replica of each range last moved (driver time).
    last_moved: HashMap<u64, Millis>,
    /// The last reason logged why a range cannot be fixed, so it is logged once.
    unsatisfiable: HashMap<u64, String>,
    /// Ranges whose last step failed: not tried again before this time (driver time), and
    /// how many failed in a row (the wait doubles, up to `MAX_BACKOFF`).
    backoff: HashMap<u64, (Millis, u32)>,
}

/// A pass runs at least this often even when nothing it plans on changed.
const FULL_PASS_EVERY: Duration = Duration::from_secs(10);

/// A digest of what a pass plans on: the meta range's applied log id (the directory and the
/// registry live there), and every node's liveness (live, down, dead: silent for `dead_after`)
/// and the ranges it leads.
fn fingerprint(n: &NodeInner, dead_after: Duration) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let applied = n.ranges.first().replica.raft.metrics().borrow_watched().last_applied;
    applied.map(|l| (l.leader_id.term, l.index)).hash(&mut h);
    let mut peers = n.liveness.states();
    peers.sort_by_key(|p| p.node_id);
    for p in peers {
        (p.node_id, p.live, p.silent_for >= dead_after, p.leading).hash(&mut h);
    }
    n.leading().hash(&mut h);
    h.finish()
}

/// Longest wait before a range whose steps keep failing is tried again.
const MAX_BACKOFF: Millis = 60_000;

impl State {
    /// Whether the range may get a step now.
    fn ready(&self, range: u64, now: Millis) -> bool {
        !self.inflight.contains_key(&range) && self.backoff.get(&range).is_none_or(|(until, _)| *until <= now)
    }

    /// A step on `range` ended at `now`.
    fn ended(&mut self, range: u64, what: &What, ok: bool, now: Millis) {
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
fn copies_to(action: &Action) -> Option<NodeId> {
    match *action {
        Action::Add { to, .. } | Action::Replace { to, .. } => Some(to),
        _ => None,
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum What {
    /// The planner's action.
    Act(Action),
    /// Split the range at this key (a span policy's bound).
    Split(Bytes),
}

/// One step to start.
struct Step {
    range: u64,
    leader: NodeId,
    what: What,
}

/// Splits at span policy bounds, one per range (the next bound, if any, at a later pass), for
/// ranges with nothing else to do now: repairs go first.
fn split_steps(view: &view::View, st: &mut State, now: Millis) -> Vec<Step> {
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

/// The cluster as this node sees it now (for checking a policy against the live nodes).
pub(crate) fn view(n: &NodeInner) -> crate::Result<Cluster> {
    Ok(view::build(n, 0)?.cluster)
}

/// Runs the driver until the node stops (returns at once if `placement.driver` is off).
pub(crate) async fn run(node: Weak<NodeInner>) {
    let Some(config) = node.upgrade().map(|n| n.config.placement.clone()) else { return };
    if !config.driver {
        return;
    }
    // Validated with the configuration at start.
    let policy = config.policy.to_policy().unwrap_or_default();
    let planner = Planner {
        allocator: Allocator::default(),
        dead_after: config.dead_after_ms,
        cooldown: config.cooldown_ms,
    };
    let started = Instant::now();
    let state = Arc::new(Mutex::new(State::default()));
    let mut last_pass: Option<(u64, Instant)> = None;
    while let Some(n) = crate::node::next_tick(&node, Duration::from_millis(config.interval_ms)).await {
        if n.ranges.first().replica.ensure_leader().is_err() {
            last_pass = None;
            continue;
        }
        // Nothing it plans on changed: skip the pass, unless time alone could change the plan
        // (cooldowns and backoffs run out; a node turning dead changes the fingerprint).
        let inputs = fingerprint(&n, Duration::from_millis(config.dead_after_ms));
        if last_pass.is_some_and(|(f, at)| f == inputs && at.elapsed() < FULL_PASS_EVERY) {
            continue;
        }
        last_pass = Some((inputs, Instant::now()));
        let now = started.elapsed().as_millis() as Millis;
        let view = match view::build(&n, now) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "the placement driver could not read the cluster");
                continue;
            }
        };
        retire(&n, &view).await;
        let steps = {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            let policy_of = |range: u64| view.policies.get(&range).unwrap_or(&policy);
            let mut steps = plan(&planner, &policy_of, &view.cluster, now, &mut st, config.max_snapshots);
            steps.extend(split_steps(&view, &mut st, now));
            steps
        };
        for step in steps {
            let request = view.ranges.get(&step.range).and_then(|desc| place::request(desc, &step.what));
            let (Some(request), Some(addr)) = (request, view.addrs.get(&step.leader)) else {
                state.lock().unwrap_or_else(|p| p.into_inner()).inflight.remove(&step.range);
                continue;
            };
            let copies = matches!(&step.what, What::Act(a) if copies_to(a).is_some());
            let timeout = if copies {
                n.config.snapshot_timeout() + Duration::from_secs(30)
            } else {
                Duration::from_secs(15)
            };
            let handle = NodeHandle { inner: n.clone() };
            let (addr, state, stopped) = (addr.clone(), state.clone(), n.stopped());
            tracing::info!(range = step.range, leader = step.leader, step = ?step.what, "placement step");
            tokio::spawn(async move {
                let result = tokio::select! {
                    r = place::send(&handle, step.leader, &addr, request, timeout) => r,
                    () = stopped => return,
                };
                drop(handle);
                let end = started.elapsed().as_millis() as Millis;
                state.lock().unwrap_or_else(|p| p.into_inner()).ended(
                    step.range,
                    &step.what,
                    result.is_ok(),
                    end,
                );
                match result {
                    Ok(()) => tracing::info!(range = step.range, step = ?step.what, "placement step done"),
                    Err(e) => {
                        tracing::warn!(range = step.range, step = ?step.what, error = %e, "placement step failed")
                    }
                }
            });
        }
    }
}

/// A decommissioning node that holds nothing but its replica of the first range leaves the
/// cluster (the first range's membership), so the meta range no longer counts it for its
/// quorum; then its registry record goes. One per pass, and only while the first range's
/// other voters keep a live majority without it (else the change could not commit and would
/// stall the meta range). If it is this node, it hands the first range's leadership to a live
/// voter first and the next leader's driver removes it.
async fn retire(n: &Arc<NodeInner>, view: &view::View) {
    let Some(&node) = view.decommissioning.iter().find(|id| view.cluster.replicas_on(**id) == 0) else {
        return;
    };
    let voters: Vec<NodeId> = {
        let m = n.ranges.first().replica.metrics();
        m.membership_config.membership().voter_ids().filter(|v| *v != node).collect()
    };
    let up = |id: &NodeId| view.cluster.node(*id).is_some_and(|x| x.up());
    if voters.iter().filter(|v| up(v)).count() <= voters.len() / 2 {
        tracing::warn!(
            node,
            "a decommissioned node stays in the cluster: without it, most of the others are down"
        );
        return;
    }
    let handle = NodeHandle { inner: n.clone() };
    let live = |id: &&NodeId| view.cluster.node(**id).is_some_and(|x| x.state == NodeState::Live);
    let result = if node == handle.id() {
        let Some(&to) = voters.iter().find(live) else { return };
        tokio::time::timeout(Duration::from_secs(10), handle.transfer_leader(FIRST_RANGE, to)).await
    } else {
        tokio::time::timeout(Duration::from_secs(10), handle.remove_node(node)).await
    };
    match result {
        Ok(Ok(())) if node != handle.id() => {
            tracing::info!(node, "the decommissioned node holds no replica any more and left the cluster");
            if let Err(e) = handle.forget_node(node).await {
                tracing::warn!(node, error = %e, "the decommissioned node's record stays in the registry");
            }
        }
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(node, error = %e, "a decommissioned node could not leave the cluster"),
        Err(_) => tracing::warn!(node, "a decommissioned node did not leave the cluster within 10 s"),
    }
}

/// The steps to start now: each range's next action, repairs first, rebalancing only once no
/// range needs repair, within the snapshot limits; each step is recorded as in flight.
fn plan<'p>(
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
    use zonekv_placement::{Locality, Node, NodeState, Replica, Role};

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
