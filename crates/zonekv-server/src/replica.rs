//! A range's replica on this node: its Raft group plus the read path to its data.

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError};
use openraft::{RaftMetrics, ReadPolicy, ServerState};
use zonekv_engine_rocks::RocksEngine;
use zonekv_raft::{Command, NodeId, OpResult, Raft, TypeConfig};

use crate::error::LeaderHint;
use crate::{Error, Result};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Reflects every write acknowledged before the read started; served by the leader.
    #[default]
    Linearizable,
    /// Served from this replica's applied state, which may lag.
    Stale,
}

/// One range's replica.
#[derive(Clone)]
pub(crate) struct Replica {
    pub(crate) range: u64,
    pub(crate) node_id: NodeId,
    pub(crate) raft: Raft<RocksEngine>,
    pub(crate) engine: RocksEngine,
    /// Longest a linearizable read waits for the local apply to reach its read index.
    pub(crate) apply_wait: std::time::Duration,
    /// Test hook: linearizable reads skip the leadership check (see `NodeOptions`).
    pub(crate) unsafe_local_reads: bool,
    /// The range's descriptor as of the last apply: which node hosts which replica.
    pub(crate) desc: tokio::sync::watch::Receiver<zonekv_raft::RangeDescriptor>,
    /// Quiescence state (`quiesce.rs`).
    pub(crate) quiet: std::sync::Arc<crate::quiesce::Quiet>,
}

impl Replica {
    pub(crate) fn metrics(&self) -> RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// The node hosting replica `replica_id` of this range.
    pub(crate) fn node_of(&self, replica_id: NodeId) -> NodeId {
        self.desc.borrow().node_of(replica_id)
    }

    /// The leader as this replica knows it.
    pub(crate) fn leader_hint(&self) -> Option<LeaderHint> {
        let m = self.metrics();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id).map(|n| n.addr.clone());
        Some(LeaderHint { node_id: self.node_of(id), addr })
    }

    /// `NotLeader` (with the leader this replica knows of) unless this replica leads.
    pub(crate) fn ensure_leader(&self) -> Result<()> {
        let leads = self.raft.metrics().borrow_watched().current_leader == Some(self.node_id);
        if leads { Ok(()) } else { Err(Error::NotLeader { range: self.range, leader: self.leader_hint() }) }
    }

    /// Asks Raft itself (not the metrics, which may lag an `initialize` by a moment).
    async fn initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(true)
    }

    pub(crate) fn stopped(&self) -> Option<Error> {
        // Borrowed, not `metrics()`: every proposal asks, and a copy of the metrics is not cheap.
        let metrics = self.raft.metrics();
        let fatal = metrics.borrow_watched().running_state.clone().err()?;
        Some(Error::ReplicaStopped { range: self.range, reason: fatal.to_string() })
    }

    async fn not_leader(&self, f: Option<&ForwardToLeader<TypeConfig>>) -> Error {
        if !self.initialized().await {
            return Error::NotInitialized(self.node_id);
        }
        let leader = match f {
            Some(ForwardToLeader { leader_id: Some(id), leader_node, .. }) => Some(LeaderHint {
                node_id: self.node_of(*id),
                addr: leader_node.as_ref().map(|n| n.addr.clone()),
            }),
            // Never name this replica itself (it is not the leader, whatever metrics lag says).
            _ if self.metrics().current_leader == Some(self.node_id) => None,
            _ => self.leader_hint(),
        };
        Error::NotLeader { range: self.range, leader }
    }

    fn fatal(&self, f: impl std::fmt::Display) -> Error {
        self.stopped().unwrap_or_else(|| Error::ReplicaStopped { range: self.range, reason: f.to_string() })
    }

    /// Wakes a quiesced range: its ticker runs again, and one heartbeat round to a quorum
    /// renews the leader's lease, without which openraft refuses writes.
    async fn wake(&self) {
        self.quiet.woke();
        self.raft.runtime_config().tick(true);
        let renew = self.raft.ensure_linearizable(ReadPolicy::ReadIndex);
        if let Ok(Err(e)) = tokio::time::timeout(self.apply_wait, renew).await {
            tracing::debug!(range = self.range, error = %e, "renewing the lease of a quiet range failed");
        }
    }

    /// Runs a leader-only Raft call that openraft refuses without a leader lease (a membership
    /// change): a quiet leader renews its lease first, and a call refused because the lease
    /// lapsed meanwhile is retried once after renewing it.
    pub(crate) async fn leader_write<T, F, Fut>(&self, call: F) -> Result<T>
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
        .map_err(|e| write_error(self, e))
    }

    /// A vote or pre-vote request for this replica arrived: someone campaigns, so the range may
    /// have no leader; the next look of `quiesce.rs` wakes this replica until an election ran.
    pub(crate) fn heard_campaign(&self) {
        let term = self.raft.metrics().borrow_watched().current_term;
        self.quiet.heard_campaign(term);
    }

    /// Proposes `cmd` and waits until it is applied. Returns one result per op and the log
    /// index the command was committed at.
    pub(crate) async fn propose(&self, cmd: Command) -> Result<(Vec<OpResult>, u64)> {
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

    /// Waits until this replica may serve a read at `consistency`; returns the log index the
    /// read reflects.
    pub(crate) async fn read_barrier(&self, consistency: ReadConsistency) -> Result<u64> {
        if let Some(e) = self.stopped() {
            return Err(e);
        }
        if consistency == ReadConsistency::Stale || self.unsafe_local_reads {
            if !self.initialized().await {
                return Err(Error::NotInitialized(self.node_id));
            }
            return Ok(self.metrics().last_applied.map_or(0, |id| id.index));
        }
        // Lease read first: no network round when the leader's lease is fresh.
        let lease = self.raft.get_read_linearizer(ReadPolicy::LeaseRead).await;
        let linearizer = match lease {
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {
                self.raft.get_read_linearizer(ReadPolicy::ReadIndex).await
            }
            other => other,
        };
        let linearizer = match linearizer {
            Ok(l) => l,
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                return Err(self.not_leader(Some(&f)).await);
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(q))) => {
                return Err(Error::Unavailable(format!(
                    "range {}: cannot reach a quorum to confirm leadership: {q}",
                    self.range
                )));
            }
            Err(RaftError::Fatal(f)) => return Err(self.fatal(f)),
        };
        let index = linearizer.read_log_id().index();
        // The read index is known; wait (boundedly) until this replica has applied it.
        match linearizer.try_await_ready(&self.raft, Some(self.apply_wait)).await {
            Ok(Ok(_)) => Ok(index),
            Ok(Err(state)) => Err(Error::Unavailable(format!(
                "range {}: not applied up to the read index {index} within {:?} (applied: {:?})",
                self.range,
                self.apply_wait,
                state.applied().map(|a| a.index)
            ))),
            Err(f) => Err(self.fatal(f)),
        }
    }

    /// A short name of the replica's Raft role.
    pub(crate) fn state_name(m: &RaftMetrics<TypeConfig>) -> &'static str {
        match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        }
    }
}

/// A refused leader write as this crate's error.
fn write_error(r: &Replica, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            // The leader this replica knows of, unless it is this replica itself (whose lease
            // lapsed).
            let other = r.raft.metrics().borrow_watched().current_leader != Some(r.node_id);
            Error::NotLeader { range: r.range, leader: r.leader_hint().filter(|_| other) }
        }
        RaftError::APIError(other) => Error::FailedPrecondition(other.to_string()),
        RaftError::Fatal(f) => Error::ReplicaStopped { range: r.range, reason: f.to_string() },
    }
}
