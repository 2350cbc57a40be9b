//! A replica's life on this node, in one place: started from its stored state (at open, and
//! when a local split creates its range), created empty on request (a move), destroyed when
//! it was moved away. What is stored per group, and so what destroying deletes, is
//! `zonekv_raft::keys` (`clear_group`); the data of a range's span is shared with no other
//! range on the node except where spans overlap after a split (a replica that never started).

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::mpsc;
use zonekv_engine::{Cf, Engine, Reader, WriteBatch};
use zonekv_raft::keys::{self, FIRST_RANGE, MetaKey, NODE_GROUP};
use zonekv_raft::meta::allocator::FIRST_ALLOCATED_ID;
use zonekv_raft::{
    LogStore, NodeId, RangeDescriptor, RangeId, ReplicaDesc, ReplicaId, StateMachine, codec, read_descriptor,
    spans_owned_by_no_other, stored_descriptors, stored_groups,
};

use super::Store;
use crate::proposer::Proposer;
use crate::replica::RaftGroup;
use crate::replica::election_rank;
use crate::transport::GroupNetwork;
use crate::{Error, Replica, Result};

/// Records which node owns the engine's data on first open, and refuses to open it as another
/// node: two nodes with the same identity would corrupt the cluster.
pub(super) fn check_identity<E: Engine>(engine: &E, node_id: NodeId) -> Result<()> {
    let key = keys::meta_key(NODE_GROUP, MetaKey::NodeIdent);
    match engine.get(Cf::RaftMeta, &key)? {
        Some(stored) => {
            let owner = codec::decode_node_ident(&stored)?;
            if owner != node_id {
                return Err(Error::OtherNode { owner, node: node_id });
            }
        }
        None => {
            let mut b = WriteBatch::new();
            b.put(Cf::RaftMeta, key, codec::encode_node_ident(node_id));
            engine.write(&b, true)?;
        }
    }
    Ok(())
}

/// The ids of every range with a descriptor stored in `engine`, the first range always
/// included.
pub fn stored_ranges<R: Reader>(engine: &R) -> Result<Vec<RangeId>> {
    let mut ids = vec![FIRST_RANGE];
    ids.extend(stored_groups(engine)?.into_iter().filter(|id| *id != FIRST_RANGE));
    Ok(ids)
}

impl<E: Engine> Store<E> {
    /// Starts a replica of every range stored here (at open).
    pub(super) async fn start_stored(&self) -> Result<()> {
        for range in stored_ranges(self.engine())? {
            if let Some(r) = self.start_group(range).await? {
                self.inner.replicas.insert(r);
            }
        }
        Ok(())
    }

    /// Starts the group of `range` from its stored state. `None` if the range has no replica
    /// on this node (it was moved away).
    async fn start_group(&self, range: RangeId) -> Result<Option<Replica<E>>> {
        let inner = &self.inner;
        let node = inner.config.node_id;
        let sm = StateMachine::open(inner.engine.clone(), range)?
            .with_split_listener(inner.split_tx.clone())
            .with_fail_stop(inner.syncer.clone());
        let desc = sm.descriptor().clone();
        // The first range names no replicas until its cluster is initialised; its replica ids
        // are node ids.
        let id = match desc.replicas.iter().find(|r| r.node_id == node) {
            Some(r) => r.replica_id,
            None if range == FIRST_RANGE => ReplicaId::of_first_range(node),
            None => return Ok(None),
        };
        let desc_rx = sm.watch_descriptor();
        let log = LogStore::new(inner.engine.clone(), range, inner.syncer.clone())
            .with_max_append_bytes(inner.config.max_append_bytes);
        let network =
            GroupNetwork { transport: inner.transport.clone(), range, replica: id, desc: desc_rx.clone() };
        let raft = zonekv_raft::Raft::new(id, inner.config.raft.clone(), network, log, sm)
            .await
            .map_err(|e| Error::ReplicaStopped { range, reason: e.to_string() })?;
        let group = RaftGroup {
            range,
            id,
            node,
            raft,
            engine: inner.engine.clone(),
            apply_wait: inner.config.apply_wait,
            lease: inner.config.lease_read_max_age,
            local_reads: inner.config.hooks.local_reads(),
            desc: desc_rx,
            quiet: Default::default(),
        };
        let proposer = Proposer::start(group.clone(), inner.config.batch, inner.write_budget.clone());
        tracing::info!(%range, replica_id = %id, %desc, "range replica started");
        Ok(Some(Replica::new(group, proposer)))
    }

    /// Creates replica `replica_id` of the range `desc` describes on this node and starts its
    /// group, which then catches up from its leader. Idempotent for the same replica; refused
    /// if this node holds another replica of the range or state left from one.
    pub async fn create_replica(&self, desc: RangeDescriptor, replica_id: ReplicaId) -> Result<()> {
        let me = self.node_id();
        let range = desc.range_id;
        if range == FIRST_RANGE || range == NODE_GROUP || replica_id.get() < FIRST_ALLOCATED_ID {
            return Err(Error::InvalidArgument(format!(
                "replica {replica_id} of range {range}: only allocated replicas of ranges other than the first are created"
            )));
        }
        if !desc.replicas.iter().any(|x| x.replica_id == replica_id && x.node_id == me) {
            return Err(Error::InvalidArgument(format!(
                "the descriptor of range {range} does not place replica {replica_id} on node {me}"
            )));
        }
        let _one_at_a_time = self.inner.lifecycle.lock().await;
        if let Some(existing) = self.try_replica(range) {
            if existing.replica_id() == replica_id {
                return Ok(());
            }
            return Err(Error::FailedPrecondition(format!(
                "node {me} already holds replica {} of range {range}",
                existing.replica_id()
            )));
        }
        if self.is_stopping() {
            return Err(Error::Unavailable("the node is shutting down".into()));
        }
        let engine = self.engine();
        let leftover = || {
            Error::FailedPrecondition(format!(
                "node {me} holds state of an earlier replica of range {range} (it is deleted once the directory shows the move)"
            ))
        };
        if engine.get(Cf::RaftMeta, &keys::meta_key(range, MetaKey::Vote))?.is_some() {
            return Err(leftover());
        }
        let new = ReplicaDesc { replica_id, node_id: me, learner: true };
        let stored = match read_descriptor(engine, range)? {
            // This node applied the split that made the range (as a replica of its parent that
            // joined after the split was decided) but hosts no replica of it: the seeded state
            // (log purged at the split, applied there, the data as of then) is exactly the
            // range at that index, so the new replica starts from it and replays the log from
            // there. Its span and epoch stay those of that index; later entries change them.
            Some(mut d) if !d.replicas.iter().any(|x| x.node_id == me) => {
                d.replicas.push(new);
                d
            }
            Some(_) => return Err(leftover()),
            // Nothing here: the replica starts empty and catches up by snapshot, which carries
            // the range's descriptor and data.
            None if engine.get(Cf::RaftMeta, &keys::meta_key(range, MetaKey::Applied))?.is_none() => desc,
            None => {
                return Err(Error::FailedPrecondition(format!(
                    "node {me} holds applied state of range {range} without a descriptor"
                )));
            }
        };
        // Durable before the group starts: a restart finds the replica.
        let mut b = WriteBatch::new();
        b.put(Cf::RaftMeta, keys::meta_key(range, MetaKey::Descriptor), codec::encode_descriptor(&stored));
        engine.write(&b, true)?;
        match self.start_group(range).await? {
            // Shutdown began while the group started: it must not outlive the store.
            Some(r) if self.is_stopping() => {
                r.stop().await;
                Err(Error::Unavailable("the node is shutting down".into()))
            }
            Some(r) => {
                self.inner.replicas.insert(r);
                tracing::info!(%range, %replica_id, "created an empty replica; waiting for its snapshot");
                Ok(())
            }
            None => Err(Error::FailedPrecondition(format!("range {range} did not start on node {me}"))),
        }
    }

    /// A Raft message came for replica `to` of `range`, which this node does not run. If this
    /// node's copy of the directory places `to` here and no replica running here overlaps the
    /// range, the replica was missed: this node installed a snapshot of the parent taken after
    /// the split that made the range, so it never applied the split that would have started it
    /// (docs/disk-faults.md §4). It is created empty and catches up from its leader by
    /// snapshot. At most one attempt per range a second, off the message path.
    pub(super) fn adopt_missed_replica(&self, range: RangeId, to: ReplicaId) {
        if range == FIRST_RANGE || range == NODE_GROUP || self.is_stopping() {
            return;
        }
        {
            let mut tried = self.inner.adoptions.lock().unwrap_or_else(|p| p.into_inner());
            if tried.get(&range).is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
                return;
            }
            if tried.len() > 10_000 {
                tried.clear();
            }
            tried.insert(range, std::time::Instant::now());
        }
        let store = self.clone();
        tokio::spawn(async move {
            match store.try_adopt(range, to).await {
                Ok(true) => {
                    tracing::info!(%range, replica_id = %to, "created a replica this node missed (a split it skipped)")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(%range, replica_id = %to, error = %e, "a missed replica was not created")
                }
            }
        });
    }

    async fn try_adopt(&self, range: RangeId, to: ReplicaId) -> Result<bool> {
        let me = self.node_id();
        let entries = zonekv_raft::meta::directory::entries(self.engine(), FIRST_RANGE)?;
        let Some(desc) = entries.into_iter().find(|d| d.range_id == range) else { return Ok(false) };
        if !desc.replicas.iter().any(|r| r.replica_id == to && r.node_id == me) {
            return Ok(false);
        }
        // A replica here still covering part of the span (a parent that has not applied the
        // split or installed a snapshot past it yet) owns that data: wait for it.
        if let Some(r) = self.replicas().into_iter().find(|r| r.with_descriptor(|d| d.overlaps(&desc))) {
            tracing::debug!(%range, covering = %r.descriptor(), "a missed replica waits for the replica covering its span");
            return Ok(false);
        }
        self.create_replica(desc, to).await?;
        Ok(true)
    }

    /// Stops this node's replica of `range` and deletes everything it stored: its log and
    /// Raft state (`keys::clear_group`) and the data of its span that no other range stored
    /// here owns, in one synced write. The replica was moved off this node; a later move back
    /// creates a new one.
    pub async fn destroy_replica(&self, range: RangeId) -> Result<()> {
        if range == FIRST_RANGE || range == NODE_GROUP {
            return Err(Error::InvalidArgument(format!(
                "range {range}: the first range has a replica on every node, and range 0 is no range"
            )));
        }
        let Some(r) = self.inner.replicas.remove(range) else { return Ok(()) };
        r.stop().await;
        let desc = r.descriptor();
        drop(r);
        // No replica is created meanwhile (one could cover part of this span).
        let _one_at_a_time = self.inner.lifecycle.lock().await;
        let engine = self.engine();
        let others: Vec<RangeDescriptor> =
            stored_descriptors(engine)?.into_iter().filter(|d| d.range_id != range).collect();
        let mut b = WriteBatch::new();
        keys::clear_group(&mut b, range);
        for (start, end) in spans_owned_by_no_other(&desc.data_spans(), &others) {
            b.delete_range(Cf::Data, start, end);
        }
        engine.write(&b, true)?;
        tracing::info!(%range, %desc, "removed replica deleted: it was moved off this node");
        Ok(())
    }
}

/// Starts the group of every range a local split creates, until the store stops or is gone.
/// Holds the store only while starting one.
pub(super) async fn start_split_ranges<E: Engine>(
    store: std::sync::Weak<super::Inner<E>>,
    mut rx: mpsc::UnboundedReceiver<RangeDescriptor>,
) {
    let Some(stopped) = store.upgrade().map(|inner| Store { inner }.stopped()) else { return };
    tokio::pin!(stopped);
    loop {
        let desc = tokio::select! {
            () = &mut stopped => return,
            d = rx.recv() => match d { Some(d) => d, None => return },
        };
        let Some(inner) = store.upgrade() else { return };
        let store = Store { inner };
        if store.try_replica(desc.range_id).is_some() || store.is_stopping() {
            continue;
        }
        match store.start_group(desc.range_id).await {
            Ok(Some(r)) if store.is_stopping() => r.stop().await,
            Ok(Some(r)) => {
                campaign_for_new_range(&store, &r);
                store.inner.replicas.insert(r);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(range = %desc.range_id, error = %e, "starting a range created by a split failed")
            }
        }
    }
}

/// A range made by a split has no leader until its first election, one election timeout
/// (1–2 s) after it starts: requests for its keys wait that long. So one replica campaigns at
/// once instead, after a moment for the others to apply the split and start the group too:
/// the first by the hash order of replica ids ([`election_rank`]), so the new ranges'
/// leaders spread over the nodes instead of piling onto the parent leader's node. Should that
/// replica not win within half an election timeout (its node is down or slow to apply), the
/// node leading the parent, which surely applied the split, campaigns.
fn campaign_for_new_range<E: Engine>(store: &Store<E>, right: &Replica<E>) {
    let (voters, start): (Vec<ReplicaId>, _) = right.with_descriptor(|d| {
        (d.replicas.iter().filter(|r| !r.learner).map(|r| r.replica_id).collect(), d.start.clone())
    });
    let first = election_rank(right.replica_id(), &voters, |_| true) == 0;
    let parent = store.find(|d| d.end.as_ref() == Some(&start));
    let parent_leads = parent.is_ok_and(|p| p.with_metrics(|m| m.current_leader) == Some(p.replica_id()));
    let wait = match (first, parent_leads) {
        (true, _) => Duration::from_millis(50),
        (false, true) => Duration::from_millis(50) + store.config().election_timeout_min / 2,
        (false, false) => return,
    };
    let raft = right.raft().clone();
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        if !first && raft.metrics().borrow_watched().current_leader.is_some() {
            return;
        }
        if let Err(e) = raft.trigger().elect(true).await {
            tracing::debug!(error = %e, "campaigning for a range made by a split failed");
        }
    });
}
