//! Node liveness (docs/multiraft.md, "Idle cost and failover"): every node pings every other
//! node every `raft.node-liveness-interval-ms`; a node is live to this one while its pings keep
//! arriving (within `raft.node-liveness-timeout-ms`). Only pings *received* count: a node that
//! cannot send to us (a one-way partition) is dead to us, as its Raft heartbeats would be.
//! Pings go through the transport's fault table like Raft messages.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;
use zonekv_proto::raft::v1 as pb;
use zonekv_raft::NodeId;

use crate::faults::Verdict;
use crate::node::NodeInner;

/// When each peer node was last heard from.
pub(crate) struct Liveness {
    timeout: Duration,
    last_heard: Mutex<HashMap<NodeId, Instant>>,
}

impl Liveness {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self { timeout, last_heard: Mutex::default() }
    }

    /// A ping from `node` arrived.
    pub(crate) fn heard(&self, node: NodeId) {
        self.last_heard.lock().unwrap_or_else(|p| p.into_inner()).insert(node, Instant::now());
    }

    /// Whether `node` pinged this node within the timeout.
    pub(crate) fn is_live(&self, node: NodeId) -> bool {
        let heard = self.last_heard.lock().unwrap_or_else(|p| p.into_inner()).get(&node).copied();
        heard.is_some_and(|at| at.elapsed() < self.timeout)
    }
}

/// Pings every other member of the first range (every node of the cluster) each `interval`,
/// until the node stops.
pub(crate) async fn run(node: Weak<NodeInner>, interval: Duration) {
    while let Some(n) = crate::node::next_tick(&node, interval).await {
        let me = n.config.node_id;
        let peers: Vec<(NodeId, String)> = {
            let m = n.ranges.first().replica.metrics();
            let membership = m.membership_config.membership();
            membership
                .nodes()
                .filter(|(id, _)| **id != me)
                .map(|(id, info)| (*id, info.addr.clone()))
                .collect()
        };
        for (peer, addr) in peers {
            if let Some(faults) = &n.starter.faults
                && matches!(faults.decide(me, peer), Verdict::Drop)
            {
                continue;
            }
            let Ok(mut client) = n.starter.channels.client(&addr) else { continue };
            // Each ping on its own task: a dead peer must not delay the others' pings.
            tokio::spawn(async move {
                let ping = client.ping(pb::PingRequest { from_node: me });
                let _ = tokio::time::timeout(interval * 4, ping).await;
            });
        }
    }
}
