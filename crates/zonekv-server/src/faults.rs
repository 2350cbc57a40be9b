//! Fault injection for in-process clusters (tests and the nemesis): the Raft transport's
//! [`NetFaults`] and the engines' [`DiskFaultTable`].
//!
//! Only with the `test-hooks` feature. A [`NetFaults`] table is shared by every node of a
//! [`crate::LocalCluster`]. Before a node
//! sends a Raft message to a peer, its transport asks the table what happens to that message on
//! the directed link `from → to`: delivered (possibly after a delay, possibly twice) or lost.
//! A lost unary RPC fails as `Unreachable`; a lost message on a replication stream breaks the
//! stream (as a reset TCP connection would), and openraft reconnects.
//!
//! The model is per RPC: a link rule applies to the messages a node *initiates*; replies ride
//! on the initiator's request. So a one-way partition `a → b` stops `a`'s requests to `b`
//! while `b` can still reach `a` and get answers, which is how openraft's own test router
//! models it. Decisions draw from a seeded RNG, but which message meets which draw depends on
//! thread timing: a seed replays the fault *schedule*, not the exact interleaving.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zonekv_raft::NodeId;

pub use crate::hooks::Verdict;

/// What happens to the messages on one directed link.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkRule {
    /// Every message is lost (a partition).
    pub blocked: bool,
    /// Probability that a message is lost, 0.0–1.0.
    pub drop: f64,
    /// Probability that a unary RPC is delivered twice, 0.0–1.0.
    pub duplicate: f64,
    /// Each message is held for a uniformly random time in `[min, max]` before it is sent;
    /// different delays reorder concurrent RPCs.
    pub delay: Option<(Duration, Duration)>,
}

/// Counters of injected faults.
#[derive(Debug, Default)]
pub struct FaultStats {
    /// Messages lost.
    pub dropped: AtomicU64,
    /// Messages delayed.
    pub delayed: AtomicU64,
    /// Messages sent twice.
    pub duplicated: AtomicU64,
}

/// The fault table of a cluster. Cloning shares it.
#[derive(Clone)]
pub struct NetFaults {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    stats: FaultStats,
}

struct State {
    rules: HashMap<(NodeId, NodeId), LinkRule>,
    rng: StdRng,
}

impl std::fmt::Debug for NetFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetFaults").field("rules", &self.state().rules).finish()
    }
}

impl NetFaults {
    /// An empty table (every message delivered at once) drawing from an RNG seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        let state = State { rules: HashMap::new(), rng: StdRng::seed_from_u64(seed) };
        Self { inner: Arc::new(Inner { state: Mutex::new(state), stats: FaultStats::default() }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the rule of the directed link `from → to` (replacing any earlier one).
    pub fn set(&self, from: impl Into<NodeId>, to: impl Into<NodeId>, rule: LinkRule) {
        self.state().rules.insert((from.into(), to.into()), rule);
    }

    /// Sets `rule` on every directed link between distinct nodes of `nodes`.
    pub fn set_all(&self, nodes: &[NodeId], rule: &LinkRule) {
        let mut s = self.state();
        for &a in nodes {
            for &b in nodes.iter().filter(|&&b| b != a) {
                s.rules.insert((a, b), rule.clone());
            }
        }
    }

    /// Blocks `from → to` only (a one-way partition).
    pub fn block(&self, from: impl Into<NodeId>, to: impl Into<NodeId>) {
        self.state().rules.entry((from.into(), to.into())).or_default().blocked = true;
    }

    /// Blocks both directions between every node of `a` and every node of `b`.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.block(x, y);
                self.block(y, x);
            }
        }
    }

    /// Removes every rule: all links deliver at once again.
    pub fn heal(&self) {
        self.state().rules.clear();
    }

    /// Decides the fate of the next message on `from → to`.
    pub fn decide(&self, from: impl Into<NodeId>, to: impl Into<NodeId>) -> Verdict {
        let mut s = self.state();
        let Some(rule) = s.rules.get(&(from.into(), to.into())).cloned() else {
            return Verdict::DELIVER;
        };
        let stats = &self.inner.stats;
        if rule.blocked || (rule.drop > 0.0 && s.rng.random_bool(rule.drop.min(1.0))) {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Verdict::Drop;
        }
        let delay = match rule.delay {
            Some((lo, hi)) if hi > lo => s.rng.random_range(lo..=hi),
            Some((lo, _)) => lo,
            None => Duration::ZERO,
        };
        if !delay.is_zero() {
            stats.delayed.fetch_add(1, Ordering::Relaxed);
        }
        let duplicate = rule.duplicate > 0.0 && s.rng.random_bool(rule.duplicate.min(1.0));
        if duplicate {
            stats.duplicated.fetch_add(1, Ordering::Relaxed);
        }
        Verdict::Deliver { delay, duplicate }
    }

    /// Counters since the table was created.
    pub fn stats(&self) -> &FaultStats {
        &self.inner.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver_now() -> Verdict {
        Verdict::Deliver { delay: Duration::ZERO, duplicate: false }
    }

    #[test]
    fn partitions_are_directed_and_heal_clears_them() {
        let f = NetFaults::new(1);
        assert_eq!(f.decide(1, 2), deliver_now());
        f.block(1, 2);
        assert_eq!(f.decide(1, 2), Verdict::Drop);
        assert_eq!(f.decide(2, 1), deliver_now());
        f.partition(&[NodeId::new(3)], &[NodeId::new(1), NodeId::new(2)]);
        assert_eq!((f.decide(3, 1), f.decide(2, 3)), (Verdict::Drop, Verdict::Drop));
        f.heal();
        assert_eq!(f.decide(1, 2), deliver_now());
        assert_eq!(f.stats().dropped.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn probabilistic_rules_follow_their_rates_and_the_seed() {
        let draw = |seed| {
            let f = NetFaults::new(seed);
            let rule = LinkRule {
                drop: 0.3,
                duplicate: 0.5,
                delay: Some((Duration::from_millis(1), Duration::from_millis(9))),
                ..LinkRule::default()
            };
            f.set_all(&[NodeId::new(1), NodeId::new(2)], &rule);
            (0..2000).map(|_| f.decide(1, 2)).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7), "same seed, same decisions");
        assert_ne!(a, draw(8));
        let dropped = a.iter().filter(|v| **v == Verdict::Drop).count();
        assert!((450..750).contains(&dropped), "{dropped} of 2000 dropped at 30 %");
        let delivered: Vec<_> = a
            .iter()
            .filter_map(|v| match v {
                Verdict::Deliver { delay, duplicate } => Some((*delay, *duplicate)),
                Verdict::Drop => None,
            })
            .collect();
        assert!(delivered.iter().all(|(d, _)| (1..=9).contains(&d.as_millis())));
        let dups = delivered.iter().filter(|(_, dup)| *dup).count();
        assert!(dups * 3 > delivered.len() && dups * 3 < 2 * delivered.len(), "{dups} duplicates");
    }
}

/// The disk faults of every node of a cluster: each node's engine consults its own
/// [`DiskFaults`] switchboard (created on first use, kept across restarts).
#[derive(Debug, Clone, Default)]
pub struct DiskFaultTable {
    nodes: Arc<Mutex<HashMap<NodeId, zonekv_engine::DiskFaults>>>,
}

impl DiskFaultTable {
    /// No faults on any node.
    pub fn new() -> Self {
        Self::default()
    }

    /// Node `id`'s switchboard.
    pub fn node(&self, id: impl Into<NodeId>) -> zonekv_engine::DiskFaults {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.entry(id.into()).or_default().clone()
    }
}
