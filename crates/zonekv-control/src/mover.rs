//! Changing where a range's replicas are (docs/placement.md, "Moving a replica"): moving one
//! (a fresh replica id, an empty replica created on the target, added as a learner that
//! catches up by snapshot, then one joint-consensus change that swaps it in as a voter and
//! removes the old one, then the directory updated), adding one, removing one. Voters change
//! only in one membership change, so a failure at any point leaves the range with its quorum.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::ChangeMembers;
use zonekv_engine::Engine;
use zonekv_raft::keys::FIRST_RANGE;
use zonekv_raft::{NodeId, NodeInfo, RangeDescriptor, RangeId, ReplicaDesc, ReplicaId};
use zonekv_store::{Replica, Store, voters};

use crate::{Error, Membership, MetaClient, Peers, Result};

/// Moves, adds and removes replicas of ranges led by this node.
pub struct Mover<E: Engine> {
    store: Store<E>,
    meta: MetaClient<E>,
    peers: Arc<dyn Peers>,
    members: Membership<E>,
}

impl<E: Engine> Clone for Mover<E> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            meta: self.meta.clone(),
            peers: self.peers.clone(),
            members: self.members.clone(),
        }
    }
}

impl<E: Engine> Mover<E> {
    /// Moves through `store`'s replicas, with ids from `meta`, creating replicas on other
    /// nodes through `peers`.
    pub fn new(store: Store<E>, meta: MetaClient<E>, peers: Arc<dyn Peers>) -> Self {
        let members = Membership::new(store.clone());
        Self { store, meta, peers, members }
    }

    /// Moves the replica of range `range_id` on node `from` to node `to` (a member of the
    /// cluster without a replica of the range): a voter is swapped in one joint-consensus
    /// change, a learner replaced by a learner. Must run on the range's leader, and `from` must
    /// not be the leader's own node (transfer the leadership first). Returns the range's
    /// descriptor after the move.
    pub async fn move_replica(&self, range_id: RangeId, from: NodeId, to: NodeId) -> Result<RangeDescriptor> {
        let (range, desc) = self.changeable(range_id)?;
        let old = self.replica_to_remove(&desc, from)?;
        let id = self.add_learner_on(&range, &desc, to).await?;
        let change = if old.learner {
            ChangeMembers::RemoveNodes(BTreeSet::from([old.replica_id]))
        } else {
            let voters = range.with_metrics(voters);
            ChangeMembers::ReplaceAllVoters(
                voters.into_iter().filter(|v| *v != old.replica_id).chain([id]).collect(),
            )
        };
        range.change_membership(change).await?;
        let moved = self
            .settle(&range, |d| {
                d.replicas.iter().any(|x| x.replica_id == id && x.learner == old.learner)
                    && d.replicas.iter().all(|x| x.replica_id != old.replica_id)
            })
            .await?;
        tracing::info!(range = %range_id, %from, %to, replica = %id, desc = %moved, "replica moved");
        Ok(moved)
    }

    /// Adds a replica of range `range_id` on node `to`: a learner that catches up, then, if
    /// `voter`, a voter. Must run on the range's leader. Returns the descriptor after it.
    pub async fn add_replica(&self, range_id: RangeId, to: NodeId, voter: bool) -> Result<RangeDescriptor> {
        let (range, desc) = self.changeable(range_id)?;
        let id = self.add_learner_on(&range, &desc, to).await?;
        if voter {
            range.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?;
        }
        let added = self
            .settle(&range, |d| d.replicas.iter().any(|x| x.replica_id == id && x.learner != voter))
            .await?;
        tracing::info!(range = %range_id, %to, voter, replica = %id, desc = %added, "replica added");
        Ok(added)
    }

    /// Removes the replica of range `range_id` on node `from` (not the leader's own). Must run
    /// on the range's leader. Returns the descriptor after it.
    pub async fn remove_replica(&self, range_id: RangeId, from: NodeId) -> Result<RangeDescriptor> {
        let (range, desc) = self.changeable(range_id)?;
        let old = self.replica_to_remove(&desc, from)?;
        let change = if old.learner {
            ChangeMembers::RemoveNodes(BTreeSet::from([old.replica_id]))
        } else {
            ChangeMembers::RemoveVoters(BTreeSet::from([old.replica_id]))
        };
        range.change_membership(change).await?;
        let removed =
            self.settle(&range, |d| d.replicas.iter().all(|x| x.replica_id != old.replica_id)).await?;
        tracing::info!(range = %range_id, %from, desc = %removed, "replica removed");
        Ok(removed)
    }

    /// The range `range_id` if its replica here leads and its membership may be changed, and
    /// its descriptor.
    fn changeable(&self, range_id: RangeId) -> Result<(Replica<E>, RangeDescriptor)> {
        if range_id == FIRST_RANGE {
            return Err(Error::InvalidArgument(
                "the first range has a replica on every node: add or remove nodes instead".into(),
            ));
        }
        let range = self.store.replica(range_id)?;
        range.ensure_leader()?;
        let desc = range.descriptor();
        Ok((range, desc))
    }

    /// The replica of `desc` on node `from`, if it may be removed: it exists and is not the
    /// leader's own (a leader does not remove itself; it hands the leadership over first).
    fn replica_to_remove(&self, desc: &RangeDescriptor, from: NodeId) -> Result<ReplicaDesc> {
        let range_id = desc.range_id;
        let old = desc.replicas.iter().find(|x| x.node_id == from).cloned().ok_or_else(|| {
            Error::InvalidArgument(format!("node {from} holds no replica of range {range_id}"))
        })?;
        if from == self.store.node_id() {
            return Err(Error::FailedPrecondition(format!(
                "node {from} holds the leader of range {range_id}: transfer the leadership first"
            )));
        }
        Ok(old)
    }

    /// Creates an empty replica of `range` on node `to` with a fresh replica id and adds it as
    /// a learner; returns once it has caught up (by snapshot: the range's log starts past its
    /// split point). Returns its replica id.
    async fn add_learner_on(
        &self,
        range: &Replica<E>,
        desc: &RangeDescriptor,
        to: NodeId,
    ) -> Result<ReplicaId> {
        let range_id = desc.range_id;
        if desc.replicas.iter().any(|x| x.node_id == to) {
            return Err(Error::InvalidArgument(format!(
                "node {to} already holds a replica of range {range_id}"
            )));
        }
        let addr = self
            .members
            .address_of(to)
            .ok_or_else(|| Error::NotFound(format!("node {to} is not a member of the cluster")))?;
        let id = ReplicaId::new(self.meta.allocate_ids(1).await?);
        let mut target = desc.clone();
        target.replicas.push(ReplicaDesc { replica_id: id, node_id: to, learner: true });
        self.peers.create_replica(&addr, &target, id).await.map_err(|e| {
            Error::Unavailable(format!("node {to} did not create replica {id} of range {range_id}: {e}"))
        })?;
        range.add_learner(id, NodeInfo::on_node(to, addr)).await?;
        Ok(id)
    }

    /// Waits until the range's applied descriptor passes `done` (a membership change committed
    /// applies moments later), records it in the directory and returns it.
    async fn settle(
        &self,
        range: &Replica<E>,
        done: impl Fn(&RangeDescriptor) -> bool,
    ) -> Result<RangeDescriptor> {
        let range_id = range.range_id();
        let mut rx = range.watch_descriptor();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|d| done(d)))
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "the membership change of range {range_id} committed but did not apply within 10 s"
                ))
            })?
            .map_err(|_| Error::Unavailable("the range stopped".into()))?;
        let now = range.descriptor();
        self.meta.report_to_directory(vec![now.clone()]).await;
        Ok(now)
    }
}
