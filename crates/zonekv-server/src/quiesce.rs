//! Quiescence (docs/multiraft.md, "Idle cost and failover"): idle ranges stop their Raft timers,
//! so a thousand idle ranges cost nothing but one liveness ping per node pair.
//!
//! Every `raft.node-liveness-interval-ms` this node looks at each of its replicas and turns
//! openraft's ticker (election timer and heartbeats) on or off:
//! - a **leader** stops ticking once its log has not grown for `IDLE_CHECKS` looks and every
//!   follower has all of it; it ticks again as soon as the log grows. Its leader lease lapses
//!   without heartbeats, and openraft refuses writes without one, so the first write to a
//!   quiet range renews it with one heartbeat round first (`Replica::wake`); reads on a quiet
//!   leader confirm leadership with a round of their own (ReadIndex) anyway;
//! - a **follower** stops ticking while it knows its leader and the leader's node is live
//!   (node liveness, `liveness.rs`); when that node goes quiet, or the leader is unknown (a
//!   new term began), it ticks again and campaigns after its election timeout.
//!
//! - **any replica** that receives a vote or pre-vote request ticks for the next
//!   `campaign_window`, whatever it believes: someone is campaigning, so the range may have no
//!   leader. This is what catches a node restarted within the liveness timeout: its replicas
//!   come back as followers (leader restore is off), and the quiet followers of a range it led
//!   still trust it and its node still pings; if its log came back behind (entries committed
//!   by the other two but not yet flushed here), only they can win, and they now campaign.
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

use crate::node::NodeInner;

/// Looks with an unchanged, fully replicated log before a leader goes quiet.
const IDLE_CHECKS: u32 = 4;

/// A replica's quiescence state, shared by its handles.
#[derive(Default)]
pub(crate) struct Quiet {
    /// Set while this replica leads a quiesced range: its heartbeats are off, so its leader
    /// lease lapses and openraft refuses writes until a quorum round renews it.
    leading: AtomicBool,
    /// When a vote or pre-vote request for this replica last arrived.
    campaign_heard: Mutex<Option<Instant>>,
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

    /// A vote or pre-vote request arrived: keep ticking for a while (see the module doc).
    pub(crate) fn heard_campaign(&self) {
        *self.campaign_heard.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn campaign_within(&self, window: Duration) -> bool {
        let heard = *self.campaign_heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.is_some_and(|at| at.elapsed() < window)
    }
}

/// Runs until the node stops. A replica that heard a campaign ticks for `campaign_window`.
pub(crate) async fn run(node: Weak<NodeInner>, interval: Duration, campaign_window: Duration) {
    // Range → (the leader's last log index at the last look, looks it has stayed there).
    let mut idle: HashMap<u64, (Option<u64>, u32)> = HashMap::new();
    while let Some(n) = crate::node::next_tick(&node, interval).await {
        for r in n.ranges.all() {
            let replica = &r.replica;
            let (tick, leads) = {
                let metrics = replica.raft.metrics();
                let m = metrics.borrow_watched();
                match m.state {
                    ServerState::Leader => {
                        let last = m.last_log_index;
                        let replicated = m.replication.as_ref().is_some_and(|rep| {
                            rep.values().all(|matched| matched.as_ref().map(|l| l.index) == last)
                        });
                        let seen = idle.entry(replica.range).or_insert((None, 0));
                        if seen.0 == last && replicated {
                            seen.1 = seen.1.saturating_add(1);
                        } else {
                            *seen = (last, 0);
                        }
                        (seen.1 < IDLE_CHECKS, true)
                    }
                    ServerState::Follower | ServerState::Learner => {
                        idle.remove(&replica.range);
                        let leader = m.current_leader.filter(|&l| l != replica.node_id);
                        (!leader.is_some_and(|l| n.liveness.is_live(replica.node_of(l))), false)
                    }
                    ServerState::Candidate | ServerState::Shutdown => (true, false),
                }
            };
            let tick = tick || replica.quiet.campaign_within(campaign_window);
            // Set before the ticker stops, so a write that sees it clear finds the lease fresh.
            replica.quiet.leading.store(leads && !tick, Ordering::Relaxed);
            replica.raft.runtime_config().tick(tick);
        }
    }
}
