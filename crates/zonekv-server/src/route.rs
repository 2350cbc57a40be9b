//! Which local range serves a request, and splitting a range (docs/multiraft.md).
//!
//! Requests are served by the range that holds their key. A scan is served by one range and
//! returns only its keys, naming the range, so clients continue past it. A batch must stay in
//! one range: it is atomic, and atomicity across ranges needs transactions, which are not built
//! yet, so a batch spanning ranges is refused with a clear error.

use std::sync::Arc;

use bytes::Bytes;
use zonekv_raft::{Mutation, Op, OpResult, RangeDescriptor, Split};

use crate::kv::Scan;
use crate::node::FIRST_RANGE;
use crate::ranges::RangeReplica;
use crate::{Error, NodeHandle, Result};

impl NodeHandle {
    /// The local replica of the range holding `key`.
    pub(crate) fn range_of(&self, key: &[u8]) -> Result<Arc<RangeReplica>> {
        self.inner.ranges.for_key(self.id(), key)
    }

    /// The id of the range holding `key` on this node (0 if none), for response headers.
    pub(crate) fn range_id_of(&self, key: &[u8]) -> u64 {
        self.range_of(key).map_or(0, |r| r.replica.range)
    }

    /// The range of a batch: all its keys must be in one range.
    pub(crate) fn batch_range(&self, mutations: &[Mutation]) -> Result<Arc<RangeReplica>> {
        let first = mutations.first().map_or(&[][..], |m| &m.key()[..]);
        let range = self.range_of(first)?;
        let desc = range.descriptor();
        if let Some(other) = mutations.iter().map(Mutation::key).find(|k| !desc.contains(k)) {
            return Err(Error::InvalidArgument(format!(
                "the batch's keys {first:?} and {other:?} are in different ranges ({desc} holds only the first); \
                 batches across ranges need transactions, which are not built yet"
            )));
        }
        Ok(range)
    }

    /// The range that serves (the first part of) a scan: for a forward scan the range holding
    /// its start, for a reverse scan the range holding its last possible key. The scan returns
    /// only that range's keys ([`Scan::within`]); clients continue past it.
    pub(crate) fn scan_range(&self, scan: &Scan) -> Result<Arc<RangeReplica>> {
        if !scan.reverse {
            return self.range_of(scan.start_key());
        }
        self.inner.ranges.find(self.id(), |d| scan.starts_in(d))
    }

    /// Which range holds `key` (with `before`, the keys just below `key`; with `before` and
    /// an empty key, the last range), and where: this node's own replica of it if it has one,
    /// else its copy of the range directory. Returns the descriptor, the leader's address if
    /// known, and the addresses of the replicas' nodes.
    pub fn lookup_range(
        &self,
        key: &[u8],
        before: bool,
    ) -> Result<(RangeDescriptor, Option<String>, Vec<String>)> {
        let pred = |d: &RangeDescriptor| match (before, key.is_empty()) {
            (false, _) => d.contains(key),
            (true, true) => d.end.is_none(),
            (true, false) => d.holds_keys_below(key),
        };
        if let Ok(range) = self.inner.ranges.find(self.id(), pred) {
            let leader = range.replica.leader_hint().and_then(|h| h.addr);
            let m = range.replica.metrics();
            let addrs = m.membership_config.membership().nodes().map(|(_, n)| n.addr.clone()).collect();
            return Ok((range.descriptor(), leader, addrs));
        }
        let meta = self.inner.ranges.first();
        let known = zonekv_raft::directory::entries(&meta.replica.engine, FIRST_RANGE)?;
        let desc = known.into_iter().find(|d| pred(d)).ok_or_else(|| {
            Error::Unavailable(format!("node {} knows no range holding key {key:?} yet", self.id()))
        })?;
        let m = meta.replica.metrics();
        let nodes = m.membership_config.membership();
        let addrs =
            desc.replicas.iter().filter_map(|r| nodes.get_node(&r.node_id)).map(|n| n.addr.clone()).collect();
        Ok((desc, None, addrs))
    }

    /// Splits the range holding `key` at `key`: `[start, key)` stays, `[key, end)` becomes a new
    /// range with fresh replica ids on the same nodes. Must run on the leader of that range; the
    /// meta range (which allocates the ids), wherever it leads, is asked over the network.
    /// Returns both halves.
    pub async fn split(&self, key: impl Into<Bytes>) -> Result<(RangeDescriptor, RangeDescriptor)> {
        let key = key.into();
        crate::validate::key(&key)?;
        let range = self.range_of(&key)?;
        let desc = range.descriptor();
        if !desc.can_split_at(&key) {
            return Err(Error::InvalidArgument(format!(
                "split key {key:?} is not strictly inside {desc} (a split key must leave both halves non-empty)"
            )));
        }
        let count = 1 + desc.replicas.len() as u64;
        let first = self.allocate_ids(count).await?;
        let split = Split {
            split_key: key,
            expected_epoch: desc.epoch,
            new_range_id: first,
            new_replica_ids: (first + 1..first + count).collect(),
        };
        let (result, _) = range.proposer.propose(Op::Split(split)).await?;
        let (left, right) = match result {
            OpResult::Split { left, right } => (*left, *right),
            OpResult::SplitRejected { reason, .. } => return Err(Error::FailedPrecondition(reason)),
            other => return Err(Error::FailedPrecondition(format!("unexpected split result {other:?}"))),
        };
        // The meta range records its own splits itself; other ranges report theirs.
        if range.replica.range != FIRST_RANGE {
            self.report_to_directory(vec![left.clone(), right.clone()]).await;
        }
        // The new group starts asynchronously once the split is applied here; until it runs, this
        // node holds no replica for the right half's keys. Return once it does.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.inner.ranges.get(right.range_id).is_none() {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "split applied, but range {} has not started on node {} within 5 s",
                    right.range_id,
                    self.id()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        tracing::info!(left = %left, right = %right, "range split");
        Ok((left, right))
    }

    /// The ids of the ranges this node runs a replica of, in order.
    pub fn range_ids(&self) -> Vec<u64> {
        self.inner.ranges.all().iter().map(|r| r.replica.range).collect()
    }
}
