//! [`Replica`]: one range's replica on this node. Its Raft group, its proposal queue, its
//! descriptor as applied and its quiescence state ([`Quiet`], docs/multiraft.md "Idle cost and
//! failover": the control plane's quiescence loop decides when a replica ticks; the store keeps
//! the state every request path consults); proposing, leadership and membership changes. The
//! read path is in `read.rs`, starting and destroying a replica in `store/lifecycle.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, ForwardToLeader, InitializeError, RaftError};
use openraft::{ChangeMembers, RaftMetrics, ReadPolicy, ServerState};
use tokio::sync::watch;
use tokio::time::Instant;
use zonekv_engine::Engine;
use zonekv_raft::{
    Command, NodeId, NodeInfo, Op, OpResult, Raft, RangeDescriptor, RangeId, ReplicaId, TypeConfig,
};

use crate::proposer::{Propose, Proposer};
use crate::{Error, LeaderHint, Result};

/// One range's replica on this node. Cheap to clone (a shared handle).
pub struct Replica<E: Engine> {
    inner: Arc<Inner<E>>,
}

impl<E: Engine> Clone for Replica<E> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

struct Inner<E: Engine> {
    group: RaftGroup<E>,
    proposer: Proposer,
    /// Set by the first [`Replica::stop`].
    stopped: AtomicBool,
}

/// The Raft group of a replica and what proposing and reading need of it: what the proposer's
/// task holds (the replica holds the proposer).
#[derive(Clone)]
pub(crate) struct RaftGroup<E: Engine> {
    pub(crate) range: RangeId,
    pub(crate) id: ReplicaId,
    pub(crate) node: NodeId,
    pub(crate) raft: Raft<E>,
    pub(crate) engine: E,
    /// Longest a linearizable read waits for the local apply to reach its read index.
    pub(crate) apply_wait: Duration,
    /// Longest a lease read trusts a quorum acknowledgement (`StoreConfig::lease_read_max_age`);
    /// `None`: no lease reads.
    pub(crate) lease: Option<Duration>,
    /// Test hook: linearizable reads skip the leadership check.
    pub(crate) local_reads: bool,
    /// The range's descriptor as of the last apply: which node hosts which replica.
    pub(crate) desc: watch::Receiver<RangeDescriptor>,
    pub(crate) quiet: Arc<Quiet>,
}

impl<E: Engine> Replica<E> {
    pub(crate) fn new(group: RaftGroup<E>, proposer: Proposer) -> Self {
        Self { inner: Arc::new(Inner { group, proposer, stopped: AtomicBool::new(false) }) }
    }

    pub(crate) fn g(&self) -> &RaftGroup<E> {
        &self.inner.group
    }

    /// The range.
    pub fn range_id(&self) -> RangeId {
        self.g().range
    }

    /// This replica's id in the range's group.
    pub fn replica_id(&self) -> ReplicaId {
        self.g().id
    }

    /// The node hosting it (this node).
    pub fn node_id(&self) -> NodeId {
        self.g().node
    }

    /// The engine holding its data.
    pub fn engine(&self) -> &E {
        &self.g().engine
    }

    /// The range's descriptor as of the last apply.
    pub fn descriptor(&self) -> RangeDescriptor {
        self.g().desc.borrow().clone()
    }

    /// Runs `f` on the range's descriptor as of the last apply, without copying it.
    pub fn with_descriptor<T>(&self, f: impl FnOnce(&RangeDescriptor) -> T) -> T {
        f(&self.g().desc.borrow())
    }

    /// Follows the range's descriptor: a new value after every apply that changed it.
    pub fn watch_descriptor(&self) -> watch::Receiver<RangeDescriptor> {
        self.g().desc.clone()
    }

    /// The node hosting replica `replica` of this range.
    pub fn node_of(&self, replica: ReplicaId) -> NodeId {
        self.g().desc.borrow().node_of(replica)
    }

    /// A copy of the replica's Raft metrics.
    pub fn metrics(&self) -> RaftMetrics<TypeConfig> {
        self.g().raft.metrics().borrow_watched().clone()
    }

    /// Runs `f` on the replica's Raft metrics without copying them (they are not small).
    pub fn with_metrics<T>(&self, f: impl FnOnce(&RaftMetrics<TypeConfig>) -> T) -> T {
        let metrics = self.g().raft.metrics();
        let m = metrics.borrow_watched();
        f(&m)
    }

    /// Whether this replica leads its range (as its metrics say).
    pub fn leads(&self) -> bool {
        self.with_metrics(|m| m.state == ServerState::Leader)
    }

    /// The group's Raft handle, for the transport's receiving side (votes, appends, snapshots)
    /// and nothing else: proposals go through [`Replica::propose`], membership changes through
    /// the methods below.
    pub fn raft(&self) -> &Raft<E> {
        &self.g().raft
    }

    /// The replica's quiescence state (the control plane's quiescence loop sets it).
    pub fn quiet(&self) -> &Quiet {
        &self.g().quiet
    }

    /// Turns the replica's Raft ticker (heartbeats, election timer) on or off, and whether it
    /// may start an election (the quiescence loop).
    pub fn set_ticking(&self, tick: bool, elect: bool) {
        let runtime = self.g().raft.runtime_config();
        runtime.elect(elect);
        runtime.tick(tick);
    }

    /// The leader as this replica knows it.
    pub fn leader_hint(&self) -> Option<LeaderHint> {
        self.g().leader_hint()
    }

    /// `NotLeader` (with the leader this replica knows of) unless this replica leads.
    pub fn ensure_leader(&self) -> Result<()> {
        self.g().ensure_leader()
    }

    /// Why the replica stopped (a fatal storage error, or shutdown), if it did.
    pub fn stopped(&self) -> Option<Error> {
        self.g().stopped()
    }

    /// Proposes `op` batched with other writes to this range, and waits until it is applied.
    /// Returns its result and the log index of the entry that carried it. An op refused at
    /// apply because the range no longer holds its key is `RangeKeyMismatch`.
    pub async fn propose(&self, op: Op) -> Result<(OpResult, u64)> {
        self.inner.proposer.propose(op).await
    }

    /// Confirms with a quorum round that this replica still leads (a leader cut off from its
    /// range may not know what its successor did).
    pub async fn confirm_leadership(&self) -> Result<()> {
        let g = self.g();
        g.ensure_leader()?;
        g.raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map_err(|e| Error::Unavailable(format!("range {}: leadership not confirmed: {e}", g.range)))?;
        Ok(())
    }

    /// A vote or pre-vote request for this replica arrived: someone campaigns, so the range may
    /// have no leader; the quiescence loop wakes this replica until an election ran.
    pub fn heard_campaign(&self) {
        let term = self.with_metrics(|m| m.current_term);
        self.g().quiet.heard_campaign(term);
    }

    /// Bootstraps the range's group with `members` (only the first range is bootstrapped;
    /// others are born of splits). Refused if it already has a membership.
    pub async fn initialize(&self, members: BTreeMap<ReplicaId, NodeInfo>) -> Result<()> {
        let g = self.g();
        match g.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Err(Error::FailedPrecondition(
                format!("node {} already belongs to an initialized cluster", g.node),
            )),
            Err(RaftError::APIError(e)) => Err(Error::InvalidArgument(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(Error::ReplicaStopped { range: g.range, reason: f.to_string() }),
        }
    }

    /// Adds `replica` (hosted as `info` says) as a learner and waits until it has caught up.
    /// Must run on the leader.
    pub async fn add_learner(&self, replica: ReplicaId, info: NodeInfo) -> Result<()> {
        let raft = &self.g().raft;
        self.g().leader_write(|| raft.add_learner(replica, info.clone(), true)).await.map(drop)
    }

    /// Changes the range's membership (voters in one joint-consensus change). Must run on
    /// the leader.
    pub async fn change_membership(&self, change: ChangeMembers<ReplicaId, NodeInfo>) -> Result<()> {
        let raft = &self.g().raft;
        self.g().leader_write(|| raft.change_membership(change.clone(), false)).await.map(drop)
    }

    /// Makes exactly `voters` the range's voters (one joint-consensus change); voters left out
    /// stay in the membership as learners. Must run on the leader.
    pub async fn change_voters_keeping_learners(&self, voters: BTreeSet<ReplicaId>) -> Result<()> {
        let raft = &self.g().raft;
        let change = ChangeMembers::ReplaceAllVoters(voters);
        self.g().leader_write(|| raft.change_membership(change.clone(), true)).await.map(drop)
    }

    /// Asks this replica, the leader, to hand leadership to `to` (a voter of the range).
    pub async fn transfer_leader(&self, to: ReplicaId) -> Result<()> {
        let g = self.g();
        g.ensure_leader()?;
        g.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|f| Error::ReplicaStopped { range: g.range, reason: f.to_string() })
    }

    /// Stops the replica as a fatal storage error would, leaving the node and its other
    /// replicas running: fault injection for tests. Requests to it fail with `ReplicaStopped`
    /// until the store reopens.
    pub async fn halt(&self) -> Result<()> {
        let g = self.g();
        g.raft.shutdown().await.map_err(|e| Error::ReplicaStopped { range: g.range, reason: e.to_string() })
    }

    /// Stops the group, then its proposer (queued writes that were never proposed fail as
    /// `Unavailable`, not applied). Later calls do nothing.
    pub(crate) async fn stop(&self) {
        if self.inner.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.g().raft.shutdown().await {
            tracing::warn!(range = %self.range_id(), error = %e, "raft shutdown");
        }
        self.inner.proposer.close().await;
    }
}

impl<E: Engine> RaftGroup<E> {
    fn leader_hint(&self) -> Option<LeaderHint> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id).map(|n| n.addr.clone());
        Some(LeaderHint { node_id: self.desc.borrow().node_of(id), addr })
    }

    fn leads(&self) -> bool {
        self.raft.metrics().borrow_watched().current_leader == Some(self.id)
    }

    fn ensure_leader(&self) -> Result<()> {
        if self.leads() {
            Ok(())
        } else {
            Err(Error::NotLeader { range: self.range, leader: self.leader_hint() })
        }
    }

    /// Asks Raft itself (not the metrics, which may lag an `initialize` by a moment).
    pub(crate) async fn initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(true)
    }

    pub(crate) fn stopped(&self) -> Option<Error> {
        // Borrowed, not copied: every proposal asks, and a copy of the metrics is not cheap.
        let metrics = self.raft.metrics();
        let fatal = metrics.borrow_watched().running_state.clone().err()?;
        Some(Error::ReplicaStopped { range: self.range, reason: fatal.to_string() })
    }

    pub(crate) async fn not_leader(&self, f: Option<&ForwardToLeader<TypeConfig>>) -> Error {
        if !self.initialized().await {
            return Error::NotInitialized(self.node);
        }
        let leader = match f {
            Some(ForwardToLeader { leader_id: Some(id), leader_node, .. }) => Some(LeaderHint {
                node_id: self.desc.borrow().node_of(*id),
                addr: leader_node.as_ref().map(|n| n.addr.clone()),
            }),
            // Never name this replica itself (it is not the leader, whatever metrics lag says).
            _ if self.leads() => None,
            _ => self.leader_hint(),
        };
        Error::NotLeader { range: self.range, leader }
    }

    pub(crate) fn fatal(&self, f: impl std::fmt::Display) -> Error {
        self.stopped().unwrap_or_else(|| Error::ReplicaStopped { range: self.range, reason: f.to_string() })
    }

    /// Wakes a quiesced range: its ticker runs again, and one heartbeat round to a quorum
    /// renews the leader's lease, without which openraft refuses writes.
    async fn wake(&self) {
        self.quiet.woke();
        self.raft.runtime_config().tick(true);
        let renew = self.raft.ensure_linearizable(ReadPolicy::ReadIndex);
        if let Ok(Err(e)) = tokio::time::timeout(self.apply_wait, renew).await {
            tracing::debug!(range = %self.range, error = %e, "renewing the lease of a quiet range failed");
        }
    }

    /// Runs a leader-only Raft call that openraft refuses without a leader lease (a membership
    /// change): a quiet leader renews its lease first, and a call refused because the lease
    /// lapsed meanwhile is retried once after renewing it.
    async fn leader_write<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::result::Result<T, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>>,
    {
        if self.quiet.leads_quietly() {
            self.wake().await;
        }
        match call().await {
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                if f.reason == openraft::errors::ForwardReason::LeaseExpired =>
            {
                self.wake().await;
                call().await
            }
            other => other,
        }
        .map_err(|e| self.write_error(e))
    }

    /// A refused leader write as this crate's error.
    fn write_error(&self, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Error {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                // The leader this replica knows of, unless it is this replica itself (whose
                // lease lapsed).
                let other = !self.leads();
                Error::NotLeader { range: self.range, leader: self.leader_hint().filter(|_| other) }
            }
            RaftError::APIError(other) => Error::FailedPrecondition(other.to_string()),
            RaftError::Fatal(f) => Error::ReplicaStopped { range: self.range, reason: f.to_string() },
        }
    }

    /// Proposes `cmd` as one log entry and waits until it is applied. Returns one result per op
    /// and the log index the command was committed at.
    async fn propose_entry(&self, cmd: Command) -> Result<(Vec<OpResult>, u64)> {
        // A replica that had stopped before the write came proposes nothing: the client may
        // safely try elsewhere (another replica leads by now, or soon).
        if let Some(Error::ReplicaStopped { reason, .. }) = self.stopped() {
            return Err(Error::Unavailable(format!(
                "range {}: the replica on this node has stopped ({reason}); nothing was written",
                self.range
            )));
        }
        if self.quiet.leads_quietly() {
            self.wake().await;
        }
        // openraft refuses a write, appending nothing, when the leader's lease has lapsed: the
        // range went quiet after the check above, or a new leader has no quorum ack yet. One
        // heartbeat round renews it; then the write is tried once more (a copy is kept for
        // that: shared buffers, cheap next to a Raft round).
        let retry = cmd.clone();
        let result = match self.raft.client_write(cmd).await {
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                if f.reason == openraft::errors::ForwardReason::LeaseExpired =>
            {
                self.wake().await;
                self.raft.client_write(retry).await
            }
            other => other,
        };
        match result {
            Ok(resp) => Ok((resp.data.results, resp.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                if f.reason == openraft::errors::ForwardReason::LeaseExpired =>
            {
                Err(Error::Unavailable(format!(
                    "range {}: the leader cannot renew its lease (no quorum answers); nothing was written",
                    self.range
                )))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(self.not_leader(Some(&f)).await)
            }
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(f))) => Err(Error::OutcomeUnknown(
                format!("leadership moved (now {:?}) before the write was applied", f.leader_id),
            )),
            Err(RaftError::APIError(other)) => Err(Error::FailedPrecondition(other.to_string())),
            // The entry may already be in the log and be committed by the next leader.
            Err(RaftError::Fatal(f)) => Err(Error::OutcomeUnknown(format!(
                "range {} replica stopped while the write was in flight: {f}",
                self.range
            ))),
        }
    }
}

impl<E: Engine> Propose for RaftGroup<E> {
    fn propose(&self, cmd: Command) -> impl Future<Output = Result<(Vec<OpResult>, u64)>> + Send {
        self.propose_entry(cmd)
    }
}

/// The voters of a membership, for building changes.
pub fn voters(m: &RaftMetrics<TypeConfig>) -> BTreeSet<ReplicaId> {
    m.membership_config.membership().voter_ids().collect()
}

/// A replica's quiescence state, shared by its handles.
#[derive(Default)]
pub struct Quiet {
    /// Set while this replica leads a quiesced range: its heartbeats are off, so its leader
    /// lease lapses and openraft refuses writes until a quorum round renews it.
    leading: AtomicBool,
    /// When a vote or pre-vote request for this replica last arrived, and the replica's term
    /// then.
    campaign_heard: Mutex<Option<(Instant, u64)>>,
}

impl Quiet {
    /// Whether this replica leads a quiesced range.
    pub fn leads_quietly(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Records whether this replica now leads a quiesced range. Set before its ticker stops,
    /// so a write that sees it clear finds the lease fresh.
    pub fn set_leads_quietly(&self, quiet: bool) {
        self.leading.store(quiet, Ordering::Relaxed);
    }

    /// The replica is awake again (its ticker runs).
    pub(crate) fn woke(&self) {
        self.leading.store(false, Ordering::Relaxed);
    }

    /// A vote or pre-vote request arrived while the replica's term was `term`: keep ticking
    /// until an election has run or a while has passed.
    pub(crate) fn heard_campaign(&self, term: u64) {
        *self.campaign_heard.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), term));
    }

    /// Whether a campaign heard within `window` is still unresolved at term `now_term`.
    pub fn campaign_unresolved(&self, window: Duration, now_term: u64) -> bool {
        let heard = *self.campaign_heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.is_some_and(|(at, term)| at.elapsed() < window && now_term <= term)
    }
}

/// This replica's place among the `voters` that `counts` accepts (itself always counts),
/// ordered by a hash of their replica ids: every replica computes the same order, and each
/// range orders its replicas differently. Decides who campaigns first when a range needs a
/// leader (a new range, a woken quiet range) without splitting the vote.
pub fn election_rank(me: ReplicaId, voters: &[ReplicaId], counts: impl Fn(ReplicaId) -> bool) -> u32 {
    let mix = |id: ReplicaId| {
        id.get().wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9).rotate_left(31)
    };
    let mine = mix(me);
    let ahead = voters.iter().filter(|&&id| id != me && counts(id) && mix(id) < mine).count();
    u32::try_from(ahead).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survivors_of_a_range_take_distinct_ranks_and_ranges_differ_in_who_goes_first() {
        let mut firsts = std::collections::HashSet::new();
        for base in (0..40u64).map(|r| r * 3 + 10) {
            let voters = [base, base + 1, base + 2].map(ReplicaId::new);
            let dead = voters[0];
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
                    .map(|me| me.get() - base),
            );
        }
        assert_eq!(firsts.len(), 2, "the same position always campaigns first: {firsts:?}");
    }
}
