//! The first (meta) range's voters (docs/disk-faults.md, "The meta range's quorum").
//!
//! Every node of the cluster is a member of the first range (that is what cluster membership
//! is), but only some vote: 5 when at least 5 members are live, else 3 (or all of them in a
//! smaller cluster). Voters on nodes dead past `placement.dead-after-ms` are demoted to learners
//! (they stay members and get the directory when they return), live learners are promoted in
//! their place preferring zones the other voters do not cover, and surplus voters are demoted.
//! So the loss of a minority never erodes the meta range's quorum for good: with 5 nodes of
//! which 2 die, the voters become the 3 survivors, and one more failure still leaves a quorum.
//! A dead voter with no live learner to take its place keeps its vote (demoting it would only
//! shrink the quorum below 3).

use std::collections::BTreeSet;

use zonekv_placement::{Millis, Node, NodeState};

/// How many voters the first range should have with `eligible` members that could vote (not
/// dead, not leaving), out of `members` in all.
fn target(eligible: usize, members: usize) -> usize {
    if eligible >= 5 { 5 } else { 3.min(members) }
}

/// The first range's next voter set, or `None` if it should stay as it is (or cannot change
/// now: its voters lack a live majority, so no change could commit). `node(id)` is the
/// driver's view of a member; the first range's replica ids are node ids.
pub(crate) fn next_voters<'a>(
    voters: &BTreeSet<u64>,
    learners: &BTreeSet<u64>,
    node: impl Fn(u64) -> Option<&'a Node>,
    now: Millis,
    dead_after: Millis,
) -> Option<BTreeSet<u64>> {
    let live = |id: &u64| node(*id).is_some_and(|n| n.state == NodeState::Live);
    let dead = |id: &u64| node(*id).is_none_or(|n| n.dead(now, dead_after));
    let up = |id: &u64| node(*id).is_some_and(Node::up);
    if voters.iter().filter(|v| up(v)).count() <= voters.len() / 2 {
        return None;
    }
    let members = voters.len() + learners.len();
    // Members that could vote: not dead (a node down for less than `dead-after` keeps its
    // place), not leaving.
    let decommissioning = |id: &u64| node(*id).is_some_and(|n| n.state == NodeState::Decommissioning);
    let eligible = voters.iter().chain(learners).filter(|id| !dead(id) && !decommissioning(id)).count();
    let target = target(eligible, members);
    let zone = |id: &u64| node(*id).map(Node::zone).unwrap_or_default();

    // Keep every voter not dead; drop the surplus: not live first, then from the zone with the
    // most voters, the highest id.
    let mut keep: Vec<u64> = voters.iter().copied().filter(|v| !dead(v)).collect();
    keep.sort_by_key(|v| (!live(v), *v));
    while keep.len() > target {
        let count = |z: &String| keep.iter().filter(|k| zone(k) == *z).count();
        let Some(i) = (0..keep.len()).max_by_key(|&i| (!live(&keep[i]), count(&zone(&keep[i])))) else {
            break;
        };
        keep.remove(i);
    }
    // Fill up with live learners, new zones first.
    let mut candidates: Vec<u64> = learners.iter().copied().filter(|l| live(l)).collect();
    while keep.len() < target && !candidates.is_empty() {
        let zones: BTreeSet<String> = keep.iter().map(zone).collect();
        let best = candidates.iter().position(|c| !zones.contains(&zone(c))).unwrap_or(0);
        keep.push(candidates.remove(best));
    }
    // Never fewer voters than the target for want of live nodes: a dead voter demoted with no
    // one to take its place would only make the quorum smaller, not safer.
    let mut dead_voters = voters.iter().copied().filter(|v| dead(v));
    while keep.len() < target {
        let Some(v) = dead_voters.next() else { break };
        keep.push(v);
    }
    let next: BTreeSet<u64> = keep.into_iter().collect();
    // The new voters need a live majority too, or the change would stall the meta range.
    let live_next = next.iter().filter(|v| up(v)).count();
    (next != *voters && !next.is_empty() && live_next > next.len() / 2).then_some(next)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use zonekv_placement::Locality;

    use super::*;

    const DEAD_AFTER: Millis = 1000;
    const NOW: Millis = 10_000;

    /// Nodes 1..=n in zones a, b, c, a, b, …; `down` silent since 0 (dead), `suspect` since
    /// `NOW - 10` (down, not dead).
    fn nodes(n: u64, down: &[u64], suspect: &[u64]) -> BTreeMap<u64, Node> {
        (1..=n)
            .map(|id| {
                let zone = ["a", "b", "c"][(id as usize - 1) % 3];
                let mut node = Node::new(id, format!("zone={zone}").parse::<Locality>().unwrap());
                if down.contains(&id) {
                    node.state = NodeState::Down { since: 0 };
                } else if suspect.contains(&id) {
                    node.state = NodeState::Down { since: NOW - 10 };
                }
                (id, node)
            })
            .collect()
    }

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    fn next(voters: &[u64], learners: &[u64], nodes: &BTreeMap<u64, Node>) -> Option<BTreeSet<u64>> {
        next_voters(&set(voters), &set(learners), |id| nodes.get(&id), NOW, DEAD_AFTER)
    }

    #[test]
    fn five_healthy_voters_stay() {
        assert_eq!(next(&[1, 2, 3, 4, 5], &[], &nodes(5, &[], &[])), None);
    }

    #[test]
    fn two_dead_of_five_leave_the_three_survivors_voting() {
        assert_eq!(next(&[1, 2, 3, 4, 5], &[], &nodes(5, &[4, 5], &[])), Some(set(&[1, 2, 3])));
    }

    #[test]
    fn a_voter_that_is_only_down_keeps_its_vote() {
        assert_eq!(next(&[1, 2, 3, 4, 5], &[], &nodes(5, &[], &[4, 5])), None);
    }

    #[test]
    fn a_dead_voter_is_replaced_by_a_live_learner_in_a_missing_zone() {
        // Voters 1 (a), 2 (b), 3 (c), 4 (a), 5 (b); 3 dies; learners 6 (c) and 7 (a).
        let nodes = nodes(7, &[3], &[]);
        assert_eq!(next(&[1, 2, 3, 4, 5], &[6, 7], &nodes), Some(set(&[1, 2, 4, 5, 6])));
    }

    #[test]
    fn more_than_five_voters_shrink_to_five_and_three_grow_to_five() {
        let all = nodes(7, &[], &[]);
        // Zones a b c a b c a: 7 (the third in a), then 6 (ties: the highest id) go.
        assert_eq!(next(&[1, 2, 3, 4, 5, 6, 7], &[], &all), Some(set(&[1, 2, 3, 4, 5])));
        assert_eq!(next(&[1, 2, 3], &[4, 5, 6, 7], &all), Some(set(&[1, 2, 3, 4, 5])));
    }

    #[test]
    fn nothing_changes_without_a_live_majority_of_the_voters() {
        assert_eq!(next(&[1, 2, 3, 4, 5], &[], &nodes(5, &[3, 4, 5], &[])), None);
    }

    #[test]
    fn small_clusters_keep_every_member_voting() {
        assert_eq!(next(&[1], &[], &nodes(1, &[], &[])), None);
        assert_eq!(next(&[1, 2, 3], &[], &nodes(3, &[3], &[])), None, "3 members: all stay voters");
        assert_eq!(next(&[1, 2, 3, 4], &[], &nodes(4, &[], &[])), Some(set(&[1, 2, 3])));
    }
}
