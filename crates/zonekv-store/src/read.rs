//! The read path of one replica: a barrier at the requested consistency (a lease read, else a
//! `ReadIndex` round, then the wait for the local apply), the check that the range still holds
//! what is read (a split applied while the read waited moves keys away), then the engine read,
//! with every stored value's checksum verified.

use std::ops::Bound;
use std::time::Duration;

use bytes::Bytes;
use zonekv_engine::{Cf, Engine, KeyRange};
use zonekv_raft::keys::{self, DATA_PREFIX};
use zonekv_raft::{RangeDescriptor, RangeId};

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{LinearizableReadError, RaftError};
use openraft::{LinearizerOption, ReadPolicy};

use crate::replica::RaftGroup;
use crate::{Error, Limits, Replica, Result};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Reflects every write acknowledged before the read started; served by the leader.
    #[default]
    Linearizable,
    /// Served from this replica's applied state, which may lag.
    Stale,
}

/// A range scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Lower bound on user keys.
    pub start: Bound<Bytes>,
    /// Upper bound on user keys.
    pub end: Bound<Bytes>,
    /// Most pairs to return; 0 means the configured default.
    pub limit: u32,
    /// Descending key order.
    pub reverse: bool,
    /// Return keys with empty values.
    pub keys_only: bool,
    /// Freshness.
    pub consistency: ReadConsistency,
}

impl Default for Scan {
    fn default() -> Self {
        Self {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
            limit: 0,
            reverse: false,
            keys_only: false,
            consistency: ReadConsistency::Linearizable,
        }
    }
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    /// Pairs in the requested order.
    pub pairs: Vec<(Bytes, Bytes)>,
    /// True if the limit stopped the scan before the end of the range.
    pub more: bool,
    /// The log index the read reflects.
    pub index: u64,
    /// The range that served the scan: the pairs are all inside it. If the scan's bounds reach
    /// past it, the rest is in the next range (or the previous one, for a reverse scan).
    pub range: RangeDescriptor,
}

impl Scan {
    /// The key a forward scan starts at ("" when unbounded).
    pub(crate) fn start_key(&self) -> &[u8] {
        match &self.start {
            Bound::Included(k) | Bound::Excluded(k) => k,
            Bound::Unbounded => b"",
        }
    }

    /// Whether range `d` is the one to serve this scan: for a forward scan the range holding
    /// its start, for a reverse scan the range holding its last possible key.
    pub(crate) fn starts_in(&self, d: &RangeDescriptor) -> bool {
        if !self.reverse {
            return d.contains(self.start_key());
        }
        match &self.end {
            Bound::Included(k) => d.contains(k),
            Bound::Excluded(k) if k.is_empty() => d.contains(b""),
            Bound::Excluded(k) => d.holds_keys_below(k),
            Bound::Unbounded => d.end.is_none(),
        }
    }

    /// This scan's data-key span, narrowed to the user keys of range `d`.
    fn within(&self, d: &RangeDescriptor) -> KeyRange {
        let start = match &self.start {
            Bound::Included(k) | Bound::Excluded(k) if k[..] < d.start[..] => {
                Bound::Included(d.start.clone())
            }
            Bound::Unbounded => Bound::Included(d.start.clone()),
            b => b.clone(),
        };
        let end = match (&self.end, &d.end) {
            (Bound::Included(k) | Bound::Excluded(k), Some(e)) if k[..] >= e[..] => {
                Bound::Excluded(e.clone())
            }
            (Bound::Unbounded, Some(e)) => Bound::Excluded(e.clone()),
            (b, _) => b.clone(),
        };
        KeyRange {
            start: data_bound(&start, Bound::Included(vec![DATA_PREFIX])),
            end: data_bound(&end, Bound::Excluded(vec![DATA_PREFIX + 1])),
        }
    }
}

fn data_bound(b: &Bound<Bytes>, unbounded: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(keys::data_key(k)),
        Bound::Excluded(k) => Bound::Excluded(keys::data_key(k)),
        Bound::Unbounded => unbounded,
    }
}

fn corrupt(range: RangeId, what: String) -> Error {
    Error::Raft(zonekv_raft::Error::Corruption { group: range, what })
}

impl<E: Engine> Replica<E> {
    /// Waits until this replica may serve a read at `consistency`; returns the log index the
    /// read reflects.
    pub async fn read_barrier(&self, consistency: ReadConsistency) -> Result<u64> {
        self.g().read_barrier(consistency).await
    }

    /// Reads `key`. Returns the value (if any) and the log index the read reflects.
    pub async fn read(&self, key: &[u8], consistency: ReadConsistency) -> Result<(Option<Bytes>, u64)> {
        let index = self.read_barrier(consistency).await?;
        // A split applied while the read waited may have moved the key to another range, which
        // may since have taken writes this replica does not see.
        if !self.with_descriptor(|d| d.contains(key)) {
            return Err(Error::RangeKeyMismatch(Box::new(self.descriptor())));
        }
        let value = zonekv_raft::read_user_value(self.engine(), self.range_id(), key)?;
        Ok((value, index))
    }

    /// Reads this range's part of `scan`, at most `limit` pairs and about
    /// `limits.max-scan-bytes` bytes.
    pub async fn scan(&self, scan: &Scan, limit: usize, limits: &Limits) -> Result<ScanPage> {
        let index = self.read_barrier(scan.consistency).await?;
        // The descriptor as of the barrier: a split applied meanwhile shrank the range.
        let desc = self.descriptor();
        if !scan.starts_in(&desc) {
            return Err(Error::RangeKeyMismatch(Box::new(desc)));
        }
        let span = scan.within(&desc);
        let mut page = ScanPage { index, more: false, pairs: Vec::new(), range: desc };
        let mut bytes = 0usize;
        for pair in self.engine().scan(Cf::Data, &span, scan.reverse)? {
            let (k, stored) = pair?;
            if page.pairs.len() == limit || (bytes >= limits.max_scan_bytes && !page.pairs.is_empty()) {
                page.more = true;
                break;
            }
            let range = self.range_id();
            let user_key = keys::user_key(&k)
                .ok_or_else(|| corrupt(range, format!("data key {k:?} without the data prefix")))?;
            let value = zonekv_raft::value::decode(&stored)
                .map_err(|why| corrupt(range, format!("value of key {user_key:?}: {why}")))?;
            let value = if scan.keys_only { Bytes::new() } else { value };
            bytes += user_key.len() + value.len();
            page.pairs.push((Bytes::copy_from_slice(user_key), value));
        }
        Ok(page)
    }
}

impl<E: Engine> RaftGroup<E> {
    /// Waits until this replica may serve a read at `consistency`; returns the log index the
    /// read reflects.
    pub(crate) async fn read_barrier(&self, consistency: ReadConsistency) -> Result<u64> {
        if let Some(e) = self.stopped() {
            return Err(e);
        }
        if consistency == ReadConsistency::Stale || self.local_reads {
            if !self.initialized().await {
                return Err(Error::NotInitialized(self.node));
            }
            return Ok(self.raft.metrics().borrow_watched().last_applied.map_or(0, |id| id.index));
        }
        // Lease read first, if the node serves them: no network round when the leader's lease
        // is fresh. The lease is openraft's, shortened by the clock-rate error the cluster is
        // configured to tolerate (`lease`): openraft's own `LeaseRead` trusts the whole lease.
        let lease = match self.lease {
            Some(age) => {
                let lease_read = LinearizerOption::new(Some(age), false).with_wait_timeout(Duration::ZERO);
                Some(self.raft.get_read_linearizer(lease_read).await)
            }
            None => None,
        };
        let linearizer = match lease {
            None | Some(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_)))) => {
                self.raft.get_read_linearizer(ReadPolicy::ReadIndex).await
            }
            Some(other) => other,
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
}
