//! Changing where a range's replicas are (docs/placement.md, "Moving a replica"): moving one
//! (a fresh replica id, an empty replica created on the target, added as a learner that
//! catches up by snapshot, then one joint-consensus change that swaps it in as a voter and
//! removes the old one, then the directory updated), adding one, removing one. Voters change
//! only in one membership change, so a failure at any point leaves the range with its quorum.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::ChangeMembers;
use zonekv_engine::{Cf, Engine, Reader, WriteBatch};
use zonekv_proto::raft::v1 as pb;
use zonekv_raft::directory::FIRST_ALLOCATED_ID;
use zonekv_raft::keys::{FIRST_RANGE, MetaKey, meta_key};
use zonekv_raft::{NodeId, NodeInfo, RangeDescriptor, ReplicaDesc, codec};

use crate::node::NodeInner;
use crate::ranges::RangeReplica;
use crate::{Error, NodeHandle, Result};

impl NodeHandle {
    /// Moves the replica of range `range_id` on node `from` to node `to` (a member of the
    /// cluster without a replica of the range): a voter is swapped in one joint-consensus
    /// change, a learner replaced by a learner. Must run on the range's leader, and `from` must
    /// not be the leader's own node (transfer the leadership first). Returns the range's
    /// descriptor after the move.
    pub async fn move_replica(&self, range_id: u64, from: NodeId, to: NodeId) -> Result<RangeDescriptor> {
        let (range, desc) = self.changeable(range_id)?;
        let old = self.replica_to_remove(&desc, from)?;
        let id = self.add_learner_on(&range, &desc, to).await?;
        let r = &range.replica;
        let change = if old.learner {
            ChangeMembers::RemoveNodes(BTreeSet::from([old.replica_id]))
        } else {
            let m = r.metrics();
            let voters = m.membership_config.membership().voter_ids();
            ChangeMembers::ReplaceAllVoters(voters.filter(|v| *v != old.replica_id).chain([id]).collect())
        };
        r.leader_write(|| r.raft.change_membership(change.clone(), false)).await?;
        let moved = self
            .settle(&range, |d| {
                d.replicas.iter().any(|x| x.replica_id == id && x.learner == old.learner)
                    && d.replicas.iter().all(|x| x.replica_id != old.replica_id)
            })
            .await?;
        tracing::info!(range = range_id, from, to, replica = id, desc = %moved, "replica moved");
        Ok(moved)
    }

    /// Adds a replica of range `range_id` on node `to`: a learner that catches up, then, if
    /// `voter`, a voter. Must run on the range's leader. Returns the descriptor after it.
    pub async fn add_replica(&self, range_id: u64, to: NodeId, voter: bool) -> Result<RangeDescriptor> {
        let (range, desc) = self.changeable(range_id)?;
        let id = self.add_learner_on(&range, &desc, to).await?;
        let r = &range.replica;
        if voter {
            let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
            r.leader_write(|| r.raft.change_membership(change.clone(), false)).await?;
        }
        let added = self
            .settle(&range, |d| d.replicas.iter().any(|x| x.replica_id == id && x.learner != voter))
            .await?;
        tracing::info!(range = range_id, to, voter, replica = id, desc = %added, "replica added");
        Ok(added)
    }

    /// Removes the replica of range `range_id` on node `from` (not the leader's own). Must run
    /// on the range's leader. Returns the descriptor after it.
    pub async fn remove_replica(&self, range_id: u64, from: NodeId) -> Result<RangeDescriptor> {
        let (range, desc) = self.changeable(range_id)?;
        let old = self.replica_to_remove(&desc, from)?;
        let r = &range.replica;
        let change = if old.learner {
            ChangeMembers::RemoveNodes(BTreeSet::from([old.replica_id]))
        } else {
            ChangeMembers::RemoveVoters(BTreeSet::from([old.replica_id]))
        };
        r.leader_write(|| r.raft.change_membership(change.clone(), false)).await?;
        let removed =
            self.settle(&range, |d| d.replicas.iter().all(|x| x.replica_id != old.replica_id)).await?;
        tracing::info!(range = range_id, from, desc = %removed, "replica removed");
        Ok(removed)
    }

    /// The range `range_id` if its replica here leads and its membership may be changed, and
    /// its descriptor.
    fn changeable(&self, range_id: u64) -> Result<(Arc<RangeReplica>, RangeDescriptor)> {
        if range_id == FIRST_RANGE {
            return Err(Error::InvalidArgument(
                "the first range has a replica on every node: add or remove nodes instead".into(),
            ));
        }
        let range = self.inner.range(range_id)?;
        range.replica.ensure_leader()?;
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
        if from == self.id() {
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
        range: &RangeReplica,
        desc: &RangeDescriptor,
        to: NodeId,
    ) -> Result<NodeId> {
        let range_id = desc.range_id;
        if desc.replicas.iter().any(|x| x.node_id == to) {
            return Err(Error::InvalidArgument(format!(
                "node {to} already holds a replica of range {range_id}"
            )));
        }
        let addr = {
            let m = self.inner.ranges.first().replica.metrics();
            m.membership_config.membership().get_node(&to).map(|n| n.addr.clone())
        }
        .ok_or_else(|| Error::NotFound(format!("node {to} is not a member of the cluster")))?;

        let id = self.allocate_ids(1).await?;
        let mut target = desc.clone();
        target.replicas.push(ReplicaDesc { replica_id: id, node_id: to, learner: true });
        let request =
            pb::CreateReplicaRequest { descriptor: Some(codec::descriptor_to_pb(&target)), replica_id: id };
        let mut client = self.inner.starter.channels.client(&addr).map_err(Error::Unavailable)?;
        client.create_replica(request).await.map_err(|s| {
            Error::Unavailable(format!(
                "node {to} did not create replica {id} of range {range_id}: {}",
                s.message()
            ))
        })?;
        let r = &range.replica;
        let info = NodeInfo::on_node(to, addr);
        r.leader_write(|| r.raft.add_learner(id, info.clone(), true)).await?;
        Ok(id)
    }

    /// Waits until the range's applied descriptor passes `done` (a membership change committed
    /// applies moments later), records it in the directory and returns it.
    async fn settle(
        &self,
        range: &RangeReplica,
        done: impl Fn(&RangeDescriptor) -> bool,
    ) -> Result<RangeDescriptor> {
        let range_id = range.replica.range;
        let mut rx = range.desc.clone();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|d| done(d)))
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "the membership change of range {range_id} committed but did not apply within 10 s"
                ))
            })?
            .map_err(|_| Error::Unavailable("the range stopped".into()))?;
        let now = range.descriptor();
        self.report_to_directory(vec![now.clone()]).await;
        Ok(now)
    }
}

impl NodeInner {
    /// Creates the replica `replica_id` of the range `desc` describes on this node and starts
    /// its group, which then catches up from its leader. Idempotent for the same replica;
    /// refused if this node holds another replica of the range or state left from one
    /// (removed replicas are not cleaned up yet).
    pub(crate) async fn create_replica(&self, desc: RangeDescriptor, replica_id: NodeId) -> Result<()> {
        let me = self.config.node_id;
        let range = desc.range_id;
        if range == FIRST_RANGE || replica_id < FIRST_ALLOCATED_ID {
            return Err(Error::InvalidArgument(format!(
                "replica {replica_id} of range {range}: only allocated replicas of ranges other than the first are created"
            )));
        }
        if !desc.replicas.iter().any(|x| x.replica_id == replica_id && x.node_id == me) {
            return Err(Error::InvalidArgument(format!(
                "the descriptor of range {range} does not place replica {replica_id} on node {me}"
            )));
        }
        let _one_at_a_time = self.creating.lock().await;
        if let Some(existing) = self.ranges.get(range) {
            if existing.replica.node_id == replica_id {
                return Ok(());
            }
            return Err(Error::FailedPrecondition(format!(
                "node {me} already holds replica {} of range {range}",
                existing.replica.node_id
            )));
        }
        if *self.stopping.borrow() {
            return Err(Error::Unavailable("the node is shutting down".into()));
        }
        let engine = &self.starter.engine;
        if engine.get(Cf::RaftMeta, &meta_key(range, MetaKey::Vote))?.is_some() {
            return Err(Error::FailedPrecondition(format!(
                "node {me} holds state of an earlier replica of range {range} (removed replicas are not cleaned up yet)"
            )));
        }
        let new = ReplicaDesc { replica_id, node_id: me, learner: true };
        let stored = match zonekv_raft::read_descriptor(engine, range)? {
            // This node applied the split that made the range (as a replica of its parent that
            // joined after the split was decided) but hosts no replica of it: the seeded state
            // (log purged at the split, applied there, the data as of then) is exactly the
            // range at that index, so the new replica starts from it and replays the log from
            // there. Its span and epoch stay those of that index; later entries change them.
            Some(mut d) if !d.replicas.iter().any(|x| x.node_id == me) => {
                d.replicas.push(new);
                d
            }
            Some(_) => {
                return Err(Error::FailedPrecondition(format!(
                    "node {me} holds state of an earlier replica of range {range} (removed replicas are not cleaned up yet)"
                )));
            }
            // Nothing here: the replica starts empty and catches up by snapshot, which carries
            // the range's descriptor and data.
            None if engine.get(Cf::RaftMeta, &meta_key(range, MetaKey::Applied))?.is_none() => desc,
            None => {
                return Err(Error::FailedPrecondition(format!(
                    "node {me} holds applied state of range {range} without a descriptor"
                )));
            }
        };
        // Durable before the group starts: a restart finds the replica.
        let mut b = WriteBatch::new();
        b.put(Cf::RaftMeta, meta_key(range, MetaKey::Descriptor), codec::encode_descriptor(&stored));
        engine.write(&b, true)?;
        match self.starter.start(range).await? {
            Some(r) => {
                self.ranges.insert(r);
                tracing::info!(range, replica_id, "created an empty replica; waiting for its snapshot");
                Ok(())
            }
            None => Err(Error::FailedPrecondition(format!("range {range} did not start on node {me}"))),
        }
    }
}
