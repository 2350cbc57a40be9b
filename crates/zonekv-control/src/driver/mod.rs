//! The placement driver (docs/placement.md, "Driver"). On the node whose replica leads the
//! meta range, every `placement.interval-ms`: build the cluster as that node sees it
//! ([`ViewSource`]), plan each range's next step (`plan.rs`), and have the range's leader
//! carry it out (`Placer`, here or on the leader's node through the peers' `place` call) —
//! repairs before any rebalancing, one step per range at a time, at most
//! `placement.max-snapshots` replica copies sent and received per node. Planning is cheap and
//! stateless but for what is in flight and when each range last moved (the cooldown); a new
//! meta leader starts over from the replicated state.

mod meta;
mod plan;
mod view;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use zonekv_engine::Engine;
use zonekv_placement::{Action, Allocator, Millis, NodeState, Planner, Role};
use zonekv_raft::keys::FIRST_RANGE;
use zonekv_raft::{NodeId, RangeDescriptor};
use zonekv_store::Store;

pub use self::plan::What;
use self::plan::{State, copies_to, plan, split_steps};
pub use self::view::{View, ViewSource};
use crate::place::{PlaceStep, StepAction};
use crate::{Error, Membership, PeerError, Peers, PlacementConfig, Placer, Registrar, Result};

/// A pass runs at least this often even when nothing it plans on changed.
const FULL_PASS_EVERY: Duration = Duration::from_secs(10);

/// The driver loop and what it acts through.
pub(crate) struct Driver<E: Engine> {
    pub(crate) store: Store<E>,
    pub(crate) views: ViewSource<E>,
    /// Carries out steps on ranges this node leads.
    pub(crate) placer: Placer<E>,
    /// Sends steps to other ranges' leaders.
    pub(crate) peers: Arc<dyn Peers>,
    pub(crate) members: Membership<E>,
    pub(crate) registrar: Registrar<E>,
    pub(crate) config: PlacementConfig,
    /// How long a replica copy may take to send.
    pub(crate) snapshot_timeout: Duration,
}

/// A digest of what a pass plans on: the meta range's applied log id (the directory and the
/// registry live there), and every node's liveness (live, down, dead: silent for `dead_after`)
/// and the ranges it leads.
fn fingerprint<E: Engine>(views: &ViewSource<E>, dead_after: Duration) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let applied = views.store.meta_applied();
    applied.map(|l| (l.leader_id.term, l.index)).hash(&mut h);
    let mut peers = views.liveness.states();
    peers.sort_by_key(|p| p.node_id);
    for p in peers {
        (p.node_id, p.live, p.silent_for >= dead_after, p.leading).hash(&mut h);
    }
    views.store.leading().hash(&mut h);
    h.finish()
}

/// The step for `what` on range `desc` (planned at its epoch), or `None` for actions that are
/// not steps (`Nothing`, `Unsatisfiable`).
fn step(desc: &RangeDescriptor, what: &What) -> Option<PlaceStep> {
    let n = NodeId::new;
    let action = match what {
        What::Split(key) => StepAction::SplitAt(key.clone()),
        What::Act(Action::Add { role: Role::Voter, to }) => StepAction::AddVoter(n(*to)),
        What::Act(Action::Add { role: Role::NonVoter, to }) => StepAction::AddLearner(n(*to)),
        What::Act(Action::Replace { from, to, .. }) => StepAction::Replace { from: n(*from), to: n(*to) },
        What::Act(Action::Remove { from }) => StepAction::Remove(n(*from)),
        What::Act(Action::TransferLease { to }) => StepAction::TransferLeader(n(*to)),
        What::Act(Action::Nothing | Action::Unsatisfiable(_)) => return None,
    };
    Some(PlaceStep { range: desc.range_id, expected_epoch: desc.epoch, action })
}

impl<E: Engine> Driver<E> {
    /// Runs the driver until the store stops (returns at once if `placement.driver` is off).
    pub(crate) async fn run(self) {
        let config = &self.config;
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
        while self.store.tick(Duration::from_millis(config.interval_ms)).await {
            if self.store.first().ensure_leader().is_err() {
                last_pass = None;
                continue;
            }
            // Nothing it plans on changed: skip the pass, unless time alone could change the
            // plan (cooldowns and backoffs run out; a node turning dead changes the
            // fingerprint).
            let inputs = fingerprint(&self.views, Duration::from_millis(config.dead_after_ms));
            if last_pass.is_some_and(|(f, at)| f == inputs && at.elapsed() < FULL_PASS_EVERY) {
                continue;
            }
            last_pass = Some((inputs, Instant::now()));
            let now = started.elapsed().as_millis() as Millis;
            let view = match self.views.build(now) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "the placement driver could not read the cluster");
                    continue;
                }
            };
            self.retire(&view).await;
            self.keep_meta_quorum(&view, now).await;
            let steps = {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                let policy_of = |range: u64| view.policies.get(&range).unwrap_or(&policy);
                let mut steps = plan(&planner, &policy_of, &view.cluster, now, &mut st, config.max_snapshots);
                steps.extend(split_steps(&view, &mut st, now));
                steps
            };
            for s in steps {
                let request = view.ranges.get(&s.range).and_then(|desc| step(desc, &s.what));
                let (Some(request), Some(addr)) = (request, view.addrs.get(&s.leader)) else {
                    state.lock().unwrap_or_else(|p| p.into_inner()).inflight.remove(&s.range);
                    continue;
                };
                let copies = matches!(&s.what, What::Act(a) if copies_to(a).is_some());
                let timeout = if copies {
                    self.snapshot_timeout + Duration::from_secs(30)
                } else {
                    Duration::from_secs(15)
                };
                let (addr, state, stopped) = (addr.clone(), state.clone(), self.store.stopped());
                let (placer, peers, leader) =
                    (self.placer.clone(), self.peers.clone(), NodeId::new(s.leader));
                let here = leader == self.store.node_id();
                tracing::info!(range = s.range, leader = s.leader, step = ?s.what, "placement step");
                tokio::spawn(async move {
                    let result = tokio::select! {
                        r = send(&placer, peers.as_ref(), here, leader, &addr, request, timeout) => r,
                        () = stopped => return,
                    };
                    drop(placer);
                    let end = started.elapsed().as_millis() as Millis;
                    state.lock().unwrap_or_else(|p| p.into_inner()).ended(
                        s.range,
                        &s.what,
                        result.is_ok(),
                        end,
                    );
                    match result {
                        Ok(()) => tracing::info!(range = s.range, step = ?s.what, "placement step done"),
                        Err(e) => {
                            tracing::warn!(range = s.range, step = ?s.what, error = %e, "placement step failed")
                        }
                    }
                });
            }
        }
    }

    /// Keeps the first range's voters on live nodes (`meta.rs`): one voter change per pass,
    /// demoted voters stay members as learners.
    async fn keep_meta_quorum(&self, view: &View, now: Millis) {
        let (voters, learners) = self.store.first().with_metrics(|m| {
            let membership = m.membership_config.membership();
            let voters: std::collections::BTreeSet<u64> = membership.voter_ids().map(|v| v.get()).collect();
            let learners = membership.learner_ids().map(|v| v.get()).collect();
            (voters, learners)
        });
        let dead_after = self.config.dead_after_ms;
        let Some(next) = meta::next_voters(&voters, &learners, |id| view.cluster.node(id), now, dead_after)
        else {
            return;
        };
        tracing::info!(?voters, ?next, "the first range's voters change to keep its quorum on live nodes");
        let change = self.members.set_voters(next.iter().map(|id| NodeId::new(*id)).collect());
        match tokio::time::timeout(Duration::from_secs(10), change).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the first range's voters did not change"),
            Err(_) => tracing::warn!("the first range's voters did not change within 10 s"),
        }
    }

    /// A decommissioning node that holds nothing but its replica of the first range leaves
    /// the cluster (the first range's membership), so the meta range no longer counts it for
    /// its quorum; then its registry record goes. One per pass, and only while the first
    /// range's other voters keep a live majority without it (else the change could not commit
    /// and would stall the meta range). If it is this node, it hands the first range's
    /// leadership to a live voter first and the next leader's driver removes it.
    async fn retire(&self, view: &View) {
        let Some(&node) = view.decommissioning.iter().find(|id| view.cluster.replicas_on(**id) == 0) else {
            return;
        };
        let voters: Vec<u64> = self.store.first().with_metrics(|m| {
            m.membership_config.membership().voter_ids().map(|v| v.get()).filter(|v| *v != node).collect()
        });
        let up = |id: &u64| view.cluster.node(*id).is_some_and(|x| x.up());
        if voters.iter().filter(|v| up(v)).count() <= voters.len() / 2 {
            tracing::warn!(
                node,
                "a decommissioned node stays in the cluster: without it, most of the others are down"
            );
            return;
        }
        let me = self.store.node_id();
        let live = |id: &&u64| view.cluster.node(**id).is_some_and(|x| x.state == NodeState::Live);
        let result = if node == me.get() {
            let Some(&to) = voters.iter().find(live) else { return };
            let transfer = self.members.transfer_leader(FIRST_RANGE, NodeId::new(to));
            tokio::time::timeout(Duration::from_secs(10), transfer).await
        } else {
            tokio::time::timeout(Duration::from_secs(10), self.members.remove_node(NodeId::new(node))).await
        };
        match result {
            Ok(Ok(())) if node != me.get() => {
                tracing::info!(
                    node,
                    "the decommissioned node holds no replica any more and left the cluster"
                );
                if let Err(e) = self.registrar.forget_node(NodeId::new(node)).await {
                    tracing::warn!(node, error = %e, "the decommissioned node's record stays in the registry");
                }
            }
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(node, error = %e, "a decommissioned node could not leave the cluster")
            }
            Err(_) => tracing::warn!(node, "a decommissioned node did not leave the cluster within 10 s"),
        }
    }
}

/// Has the range's leader carry out `step`: this node's own placer if it leads (`here`), else
/// the leader's node at `addr`; waits at most `timeout`.
async fn send<E: Engine>(
    placer: &Placer<E>,
    peers: &dyn Peers,
    here: bool,
    leader: NodeId,
    addr: &str,
    step: PlaceStep,
    timeout: Duration,
) -> Result<()> {
    let call = async {
        if here {
            return placer.place(step).await.map(drop);
        }
        peers
            .place(addr, &step)
            .await
            .map_err(|e: PeerError| Error::Unavailable(format!("node {leader} ({addr}): {e}")))
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| Error::Unavailable(format!("node {leader} did not finish within {timeout:?}")))?
}
