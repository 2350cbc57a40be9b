//! Splitting a range (docs/multiraft.md, "Split"): fresh ids from the meta range, one `Split`
//! op in the range's log (its apply shrinks the range and seeds the right half on every
//! replica's node, where the store starts its group), then both halves reported to the
//! directory.

use std::time::Duration;

use bytes::Bytes;
use zonekv_engine::Engine;
use zonekv_raft::keys::FIRST_RANGE;
use zonekv_raft::{Op, OpResult, RangeDescriptor, RangeId, ReplicaId, Split};
use zonekv_store::Store;

use crate::{Error, MetaClient, Result};

/// Splits ranges led by this node.
pub struct Splits<E: Engine> {
    store: Store<E>,
    meta: MetaClient<E>,
}

impl<E: Engine> Clone for Splits<E> {
    fn clone(&self) -> Self {
        Self { store: self.store.clone(), meta: self.meta.clone() }
    }
}

impl<E: Engine> Splits<E> {
    /// Splits through `store`'s replicas, with ids from `meta`.
    pub fn new(store: Store<E>, meta: MetaClient<E>) -> Self {
        Self { store, meta }
    }

    /// Splits the range holding `key` at `key`: `[start, key)` stays, `[key, end)` becomes a new
    /// range with fresh replica ids on the same nodes. Must run on the leader of that range.
    /// Returns both halves once the right half's group runs on this node.
    pub async fn split(&self, key: Bytes) -> Result<(RangeDescriptor, RangeDescriptor)> {
        zonekv_store::validate::key(&key)?;
        let range = self.store.replica_for_key(&key)?;
        let desc = range.descriptor();
        if !desc.can_split_at(&key) {
            return Err(Error::InvalidArgument(format!(
                "split key {key:?} is not strictly inside {desc} (a split key must leave both halves non-empty)"
            )));
        }
        let count = 1 + desc.replicas.len() as u64;
        let first = self.meta.allocate_ids(count).await?;
        let split = Split {
            split_key: key,
            expected_epoch: desc.epoch,
            new_range_id: RangeId::new(first),
            new_replica_ids: (first + 1..first + count).map(ReplicaId::new).collect(),
        };
        let (result, _) = range.propose(Op::Split(split)).await?;
        let (left, right) = match result {
            OpResult::Split { left, right } => (*left, *right),
            OpResult::SplitRejected { reason, .. } => return Err(Error::FailedPrecondition(reason)),
            other => return Err(Error::FailedPrecondition(format!("unexpected split result {other:?}"))),
        };
        // The meta range records its own splits itself; other ranges report theirs.
        if range.range_id() != FIRST_RANGE {
            self.meta.report_to_directory(vec![left.clone(), right.clone()]).await;
        }
        // The new group starts asynchronously once the split is applied here; until it runs, this
        // node holds no replica for the right half's keys. Return once it does.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.store.try_replica(right.range_id).is_none() {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "split applied, but range {} has not started on node {} within 5 s",
                    right.range_id,
                    self.store.node_id()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::info!(left = %left, right = %right, "range split");
        Ok((left, right))
    }
}
