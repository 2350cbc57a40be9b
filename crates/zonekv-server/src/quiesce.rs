//! Quiescence (docs/multiraft.md, "Idle cost and failover"): idle ranges stop their Raft timers,
//! so a thousand idle ranges cost nothing but one liveness ping per node pair.
//!
//! Every `raft.node-liveness-interval-ms` this node looks at each of its replicas and turns
//! openraft's ticker (election timer and heartbeats) on or off:
//! - a **leader** stops ticking once its log has not grown for `IDLE_CHECKS` looks and every
//!   follower on a live node has all of it; it ticks again as soon as the log grows or a
//!   follower's node comes back (it is behind). Its leader lease lapses
//!   without heartbeats, and openraft refuses writes without one, so the first write to a
//!   quiet range renews it with one heartbeat round first (`Replica::wake`); reads on a quiet
//!   leader confirm leadership with a round of their own (ReadIndex) anyway;
//! - a **follower** stops ticking while it knows its leader, the leader's node is live (node
//!   liveness, `liveness.rs`) and does not report the leader's replica stopped, and no
//!   campaign it heard is unresolved (below);
//! - a replica that receives a **vote or pre-vote request** distrusts its leader until its
//!   term moves past the term it had then (an election ran: it voted, campaigned or learned a
//!   newer leader) or `campaign_window` passes: someone is campaigning, so the range may have
//!   no leader. This catches a node restarted within the liveness timeout: its replicas come
//!   back as followers (leader restore is off), and the quiet followers of a range it led
//!   still trust it while its node pings; if its log came back behind (entries the other two
//!   committed before its own append was flushed), only they can win, and now they campaign.
//!
//! **Waking without split votes.** A follower that wakes has not heard from its leader for a
//! long time, so its election timer has long expired: woken together, the survivors of a
//! range would all campaign at the same moment and split the vote, again and again. So a
//! woken follower ticks at once but may campaign only after `rank × stagger`, its rank being
//! its place among the range's voters it can still count on (live, not the distrusted
//! leader), ordered by a hash of their replica ids: one survivor campaigns at once, the next
//! only if that one has not won by then, and leadership of many ranges spreads over the
//! survivors instead of piling onto one.
//!
//! Safety does not depend on any of this: Raft's votes and terms decide; the ticker only
//! decides when a replica campaigns and when a leader heartbeats.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use tokio::time::Instant;
use zonekv_raft::NodeId;

use crate::node::NodeInner;

/// Looks with an unchanged, fully replicated log before a leader goes quiet.
const IDLE_CHECKS: u32 = 4;

/// A replica's quiescence state, shared by its handles.
#[derive(Default)]
pub(crate) struct Quiet {
    /// Set while this replica leads a quiesced range: its heartbeats are off, so its leader
    /// lease lapses and openraft refuses writes until a quorum round renews it.
    leading: AtomicBool,
    /// When a vote or pre-vote request for this replica last arrived, and the replica's term
    /// then.
    campaign_heard: Mutex<Option<(Instant, u64)>>,
}

impl Quiet {
    /// Whether this replica leads a quiesced range.
    pub(crate) fn leads_quietly(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// The replica is awake again (its ticker runs).
    pub(crate) fn woke(&self) {
        self.leading.store(false, Ordering::Relaxed);
    }

    /// A vote or pre-vote request arrived while the replica's term was `term`: keep ticking
    /// until an election has run or a while has passed (see the module doc).
    pub(crate) fn heard_campaign(&self, term: u64) {
        *self.campaign_heard.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), term));
    }

    /// Whether a campaign heard within `window` is still unresolved at term `now_term`.
    fn campaign_unresolved(&self, window: Duration, now_term: u64) -> bool {
        let heard = *self.campaign_heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.is_some_and(|(at, term)| at.elapsed() < window && now_term <= term)
    }
}

/// How the quiescence loop paces itself (see the module doc).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// How often replicas are looked at (the liveness ping interval).
    pub(crate) interval: Duration,
    /// Longest a heard campaign keeps a replica distrusting its leader.
    pub(crate) campaign_window: Duration,
    /// How much longer each rank of woken follower waits before it may campaign.
    pub(crate) stagger: Duration,
}

/// What one look decides for a replica.
struct Decision {
    tick: bool,
    elect: bool,
    leads: bool,
}

/// Runs until the node stops.
pub(crate) async fn run(node: Weak<NodeInner>, pace: Pace) {
    // Range → (the leader's last log index at the last look, looks it has stayed there).
    let mut idle: HashMap<u64, (Option<u64>, u32)> = HashMap::new();
    // Range → when its follower here woke (stopped trusting its leader).
    let mut woke: HashMap<u64, Instant> = HashMap::new();
    while let Some(n) = crate::node::next_tick(&node, pace.interval).await {
        for r in n.ranges.all() {
            let replica = &r.replica;
            let d = {
                let metrics = replica.raft.metrics();
                let m = metrics.borrow_watched();
                let unresolved = replica.quiet.campaign_unresolved(pace.campaign_window, m.current_term);
                let awake = |tick| Decision { tick, elect: true, leads: false };
                if m.state != ServerState::Follower {
                    woke.remove(&replica.range);
                }
                match m.state {
                    ServerState::Leader => {
                        let last = m.last_log_index;
                        // A follower on a dead node is not waited for: its range would otherwise
                        // heartbeat until the node returns. When it does, it is behind, and the
                        // leader wakes to catch it up.
                        let replicated = m.replication.as_ref().is_some_and(|rep| {
                            rep.iter().all(|(id, matched)| {
                                matched.as_ref().map(|l| l.index) == last
                                    || !n.liveness.is_live(replica.node_of(*id))
                            })
                        });
                        let seen = idle.entry(replica.range).or_insert((None, 0));
                        if seen.0 == last && replicated {
                            seen.1 = seen.1.saturating_add(1);
                        } else {
                            *seen = (last, 0);
                        }
                        Decision { tick: seen.1 < IDLE_CHECKS || unresolved, elect: true, leads: true }
                    }
                    ServerState::Follower => {
                        idle.remove(&replica.range);
                        let leader = m.current_leader.filter(|&l| l != replica.node_id);
                        let live = |id| id == replica.node_id || n.liveness.is_live(replica.node_of(id));
                        let runs = |id| n.liveness.runs(replica.node_of(id), replica.range);
                        if leader.is_some_and(runs) && !unresolved {
                            woke.remove(&replica.range);
                            awake(false)
                        } else {
                            let since = *woke.entry(replica.range).or_insert_with(Instant::now);
                            let voters = m.membership_config.membership().voter_ids().collect::<Vec<_>>();
                            let rank =
                                election_rank(replica.node_id, &voters, |id| Some(id) != leader && live(id));
                            Decision {
                                tick: true,
                                elect: since.elapsed() >= pace.stagger * rank,
                                leads: false,
                            }
                        }
                    }
                    ServerState::Learner | ServerState::Candidate | ServerState::Shutdown => {
                        idle.remove(&replica.range);
                        awake(true)
                    }
                }
            };
            // Set before the ticker stops, so a write that sees it clear finds the lease fresh.
            replica.quiet.leading.store(d.leads && !d.tick, Ordering::Relaxed);
            let runtime = replica.raft.runtime_config();
            runtime.elect(d.elect);
            runtime.tick(d.tick);
        }
    }
}

/// This replica's place among the `voters` that `counts` accepts (itself always counts),
/// ordered by a hash of their replica ids: every replica computes the same order, and each
/// range orders its replicas differently.
pub(crate) fn election_rank(me: NodeId, voters: &[NodeId], counts: impl Fn(NodeId) -> bool) -> u32 {
    let mix = |id: NodeId| {
        id.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9).rotate_left(31)
    };
    let mine = mix(me);
    let ahead = voters.iter().filter(|&&id| id != me && counts(id) && mix(id) < mine).count();
    u32::try_from(ahead).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::election_rank;

    #[test]
    fn survivors_of_a_range_take_distinct_ranks_and_ranges_differ_in_who_goes_first() {
        let mut firsts = std::collections::HashSet::new();
        for base in (0..40u64).map(|r| r * 3 + 10) {
            let voters = [base, base + 1, base + 2];
            let dead = base;
            let counts = |id| id != dead;
            let mut ranks: Vec<u32> =
                voters[1..].iter().map(|&me| election_rank(me, &voters, counts)).collect();
            ranks.sort_unstable();
            assert_eq!(ranks, [0, 1], "the two survivors of {voters:?} share a rank");
            firsts.extend(
                voters[1..]
                    .iter()
                    .copied()
                    .filter(|&me| election_rank(me, &voters, counts) == 0)
                    .map(|me| me - base),
            );
        }
        assert_eq!(firsts.len(), 2, "the same position always campaigns first: {firsts:?}");
    }
}
