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
//! Safety does not depend on any of this: Raft's votes and terms decide; the ticker only
//! decides when a replica campaigns and when a leader heartbeats.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;

use crate::node::NodeInner;

/// Looks with an unchanged, fully replicated log before a leader goes quiet.
const IDLE_CHECKS: u32 = 4;

/// Runs until the node stops.
pub(crate) async fn run(node: Weak<NodeInner>, interval: Duration) {
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
            // Set before the ticker stops, so a write that sees it clear finds the lease fresh.
            replica.quiet.store(leads && !tick, std::sync::atomic::Ordering::Relaxed);
            replica.raft.runtime_config().tick(tick);
        }
    }
}
