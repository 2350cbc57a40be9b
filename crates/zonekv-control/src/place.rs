//! One placement step, as the driver asks it of a range's leader (the peers' `place` call) and
//! as the leader carries it out here: add, replace or remove a replica, hand the leadership
//! over, or split at a policy bound. One step per range at a time, and only at the epoch it
//! was planned at.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use zonekv_engine::Engine;
use zonekv_raft::{NodeId, RangeDescriptor, RangeEpoch, RangeId};
use zonekv_store::Store;

use crate::{Error, Membership, MetaClient, Mover, Result, Splits};

/// A placement step on one range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceStep {
    /// The range.
    pub range: RangeId,
    /// The epoch it was planned at; the step is refused if the range has changed since.
    pub expected_epoch: RangeEpoch,
    /// What to do.
    pub action: StepAction,
}

/// What a placement step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepAction {
    /// Add a voter on this node.
    AddVoter(NodeId),
    /// Add a learner on this node.
    AddLearner(NodeId),
    /// Move the replica on `from` to `to`.
    Replace {
        /// The node losing its replica.
        from: NodeId,
        /// The node getting one.
        to: NodeId,
    },
    /// Remove the replica on this node.
    Remove(NodeId),
    /// Hand the leadership to the replica on this node.
    TransferLeader(NodeId),
    /// Split the range at this key.
    SplitAt(Bytes),
}

/// Carries out placement steps on the ranges this node leads.
pub struct Placer<E: Engine> {
    store: Store<E>,
    meta: MetaClient<E>,
    mover: Mover<E>,
    splits: Splits<E>,
    members: Membership<E>,
    /// Ranges with a step running here.
    placing: Arc<Mutex<HashSet<RangeId>>>,
}

impl<E: Engine> Clone for Placer<E> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            meta: self.meta.clone(),
            mover: self.mover.clone(),
            splits: self.splits.clone(),
            members: self.members.clone(),
            placing: self.placing.clone(),
        }
    }
}

impl<E: Engine> Placer<E> {
    pub(crate) fn new(store: Store<E>, meta: MetaClient<E>, mover: Mover<E>, splits: Splits<E>) -> Self {
        let members = Membership::new(store.clone());
        Self { store, meta, mover, splits, members, placing: Default::default() }
    }

    /// Carries out one placement step on this node's replica of the range, which must lead
    /// it. One step per range at a time; refused, changing nothing, if the range's epoch is no
    /// longer the one the step was planned at. The step runs to its end even if the caller
    /// goes away (a half-done membership change is worse than a slow one). Whenever it does
    /// not succeed, the directory gets the range's current descriptor, so the next plan is
    /// made on it (a learner a failed step left behind, say).
    pub async fn place(&self, step: PlaceStep) -> Result<RangeDescriptor> {
        let placer = self.clone();
        tokio::spawn(async move {
            let range_id = step.range;
            let result = placer.place_now(step).await;
            if result.is_err()
                && let Ok(range) = placer.store.replica(range_id)
                && range.ensure_leader().is_ok()
            {
                placer.meta.report_to_directory(vec![range.descriptor()]).await;
            }
            result
        })
        .await
        .map_err(|e| Error::Unavailable(format!("the placement step ended abnormally: {e}")))?
    }

    async fn place_now(&self, step: PlaceStep) -> Result<RangeDescriptor> {
        let id = step.range;
        let _one_step = PlacingGuard::take(&self.placing, id)?;
        let range = self.store.replica(id)?;
        range.ensure_leader()?;
        let desc = range.descriptor();
        if desc.epoch != step.expected_epoch {
            return Err(Error::FailedPrecondition(format!(
                "range {id} is at epoch {}, the step was planned at {}",
                desc.epoch, step.expected_epoch
            )));
        }
        match step.action {
            StepAction::AddVoter(to) => self.mover.add_replica(id, to, true).await,
            StepAction::AddLearner(to) => self.mover.add_replica(id, to, false).await,
            StepAction::Replace { from, to } => self.mover.move_replica(id, from, to).await,
            StepAction::Remove(from) => self.mover.remove_replica(id, from).await,
            StepAction::TransferLeader(to) => {
                self.members.transfer_leader(id, to).await?;
                Ok(range.descriptor())
            }
            StepAction::SplitAt(key) => Ok(self.splits.split(key).await?.0),
        }
    }
}

/// Marks a range as having a placement step running on this node, until dropped.
struct PlacingGuard {
    placing: Arc<Mutex<HashSet<RangeId>>>,
    range: RangeId,
}

impl PlacingGuard {
    fn take(placing: &Arc<Mutex<HashSet<RangeId>>>, range: RangeId) -> Result<PlacingGuard> {
        if !placing.lock().unwrap_or_else(|p| p.into_inner()).insert(range) {
            return Err(Error::FailedPrecondition(format!(
                "a placement step is already running on range {range}"
            )));
        }
        Ok(PlacingGuard { placing: placing.clone(), range })
    }
}

impl Drop for PlacingGuard {
    fn drop(&mut self) {
        self.placing.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.range);
    }
}
