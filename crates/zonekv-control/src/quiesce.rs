//! Quiescence (docs/multiraft.md, "Idle cost and failover"): idle ranges stop their Raft timers,
//! so a thousand idle ranges cost nothing but one liveness ping per node pair.
//!
//! Every `raft.node-liveness-interval-ms` this node looks at each of its replicas and turns
//! openraft's ticker (election timer and heartbeats) on or off:
//! - a **leader** stops ticking once its log has not grown for `IDLE_CHECKS` looks and every
//!   follower on a live node has all of it; it ticks again as soon as the log grows or a
//!   follower's node comes back (it is behind). Its leader lease lapses
//!   without heartbeats, and openraft refuses writes without one, so the first write to a
//!   quiet range renews it with one heartbeat round first (the store's `Replica::propose`); reads on a quiet
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
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::time::Instant;
use zonekv_engine::Engine;
use zonekv_raft::RangeId;
use zonekv_store::{Replica, Store, election_rank};

use crate::Liveness;

/// Looks with an unchanged, fully replicated log before a leader goes quiet.
const IDLE_CHECKS: u32 = 4;

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

/// The quiescence loop: the replicas it looks at and the liveness it trusts.
pub(crate) struct Quiescer<E: Engine> {
    pub(crate) store: Store<E>,
    pub(crate) liveness: Arc<Liveness>,
    pub(crate) pace: Pace,
}

/// What the loop remembers between looks.
#[derive(Default)]
struct Looks {
    /// Range → (the leader's last log index at the last look, looks it has stayed there).
    idle: HashMap<RangeId, (Option<u64>, u32)>,
    /// Range → when its follower here woke (stopped trusting its leader).
    woke: HashMap<RangeId, Instant>,
}

impl<E: Engine> Quiescer<E> {
    /// Runs until the store stops.
    pub(crate) async fn run(self) {
        let mut looks = Looks::default();
        while self.store.tick(self.pace.interval).await {
            for r in self.store.replicas() {
                let d = self.decide(&r, &mut looks);
                // Set before the ticker stops, so a write that sees it clear finds the lease fresh.
                r.quiet().set_leads_quietly(d.leads && !d.tick);
                r.set_ticking(d.tick, d.elect);
            }
        }
    }

    fn decide(&self, replica: &Replica<E>, looks: &mut Looks) -> Decision {
        let (liveness, pace) = (&self.liveness, &self.pace);
        let range = replica.range_id();
        let me = replica.replica_id();
        replica.with_metrics(|m| {
            let unresolved = replica.quiet().campaign_unresolved(pace.campaign_window, m.current_term);
            let awake = |tick| Decision { tick, elect: true, leads: false };
            if m.state != ServerState::Follower {
                looks.woke.remove(&range);
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
                                || !liveness.is_live(replica.node_of(*id))
                        })
                    });
                    let seen = looks.idle.entry(range).or_insert((None, 0));
                    if seen.0 == last && replicated {
                        seen.1 = seen.1.saturating_add(1);
                    } else {
                        *seen = (last, 0);
                    }
                    Decision { tick: seen.1 < IDLE_CHECKS || unresolved, elect: true, leads: true }
                }
                ServerState::Follower => {
                    looks.idle.remove(&range);
                    let leader = m.current_leader.filter(|&l| l != me);
                    let live = |id| id == me || liveness.is_live(replica.node_of(id));
                    let runs = |id| liveness.runs(replica.node_of(id), range);
                    if leader.is_some_and(runs) && !unresolved {
                        looks.woke.remove(&range);
                        awake(false)
                    } else {
                        let since = *looks.woke.entry(range).or_insert_with(Instant::now);
                        let voters = m.membership_config.membership().voter_ids().collect::<Vec<_>>();
                        let rank = election_rank(me, &voters, |id| Some(id) != leader && live(id));
                        Decision { tick: true, elect: since.elapsed() >= pace.stagger * rank, leads: false }
                    }
                }
                ServerState::Learner | ServerState::Candidate | ServerState::Shutdown => {
                    looks.idle.remove(&range);
                    awake(true)
                }
            }
        })
    }
}
