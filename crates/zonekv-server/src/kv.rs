//! The key-value API of a node ([`NodeHandle`]), shared by the gRPC service and embedding hosts.

use std::ops::Bound;

use bytes::Bytes;
use zonekv_engine::{Cf, KeyRange, Reader};
use zonekv_raft::keys::{self, DATA_PREFIX};
use zonekv_raft::{Mutation, Op, OpResult, RangeDescriptor};

use crate::replica::ReadConsistency;
use crate::{Error, NodeHandle, Result, validate};

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

impl Scan {
    /// The key a forward scan starts at ("" when unbounded).
    pub(crate) fn start_key(&self) -> &[u8] {
        match &self.start {
            Bound::Included(k) | Bound::Excluded(k) => k,
            Bound::Unbounded => b"",
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

    /// Whether range `d` is the one to serve this scan (see `NodeHandle::scan_range`).
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

/// The outcome of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the key held the expected value and was changed.
    pub succeeded: bool,
    /// The value found when comparing.
    pub current: Option<Bytes>,
    /// The log index of the command.
    pub index: u64,
}

fn data_bound(b: &Bound<Bytes>, unbounded: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(keys::data_key(k)),
        Bound::Excluded(k) => Bound::Excluded(keys::data_key(k)),
        Bound::Unbounded => unbounded,
    }
}

impl NodeHandle {
    /// Reads a key. Returns the value (if any) and the log index the read reflects.
    pub async fn get(&self, key: &[u8], consistency: ReadConsistency) -> Result<(Option<Bytes>, u64)> {
        validate::key(key)?;
        let range = self.range_of(key)?;
        let r = &range.replica;
        let index = r.read_barrier(consistency).await?;
        // A split applied while the read waited may have moved the key to another range, which
        // may since have taken writes this replica does not see.
        let desc = range.desc.borrow();
        if !desc.contains(key) {
            return Err(Error::RangeKeyMismatch(Box::new(desc.clone())));
        }
        drop(desc);
        let value = zonekv_raft::read_user_value(&r.engine, r.range, key)?;
        Ok((value, index))
    }

    /// Writes a key. Returns the log index the write committed at.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<u64> {
        let (key, value) = (key.into(), value.into());
        validate::put(&self.inner.config.limits, &key, &value)?;
        let (_, index) = self.range_of(&key)?.proposer.propose(Op::Put { key, value }).await?;
        Ok(index)
    }

    /// Removes a key. Returns whether it existed and the log index.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<(bool, u64)> {
        let key = key.into();
        validate::key(&key)?;
        let (result, index) = self.range_of(&key)?.proposer.propose(Op::Delete { key }).await?;
        match result {
            OpResult::Deleted { existed } => Ok((existed, index)),
            other => Err(Error::Unavailable(format!("unexpected delete result {other:?}"))),
        }
    }

    /// Sets (`new_value = Some`) or removes (`None`) `key` if it currently holds `expected`
    /// (`None`: if it does not exist).
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        new_value: Option<Bytes>,
    ) -> Result<CasOutcome> {
        let key = key.into();
        let limits = &self.inner.config.limits;
        validate::key(&key)?;
        for v in expected.iter().chain(new_value.iter()) {
            validate::value(limits, v)?;
        }
        let range = self.range_of(&key)?;
        let op = Op::CompareAndSwap { key, expected, new_value };
        let (result, index) = range.proposer.propose(op).await?;
        match result {
            OpResult::CompareAndSwap { succeeded, current } => Ok(CasOutcome { succeeded, current, index }),
            other => Err(Error::Unavailable(format!("unexpected compare-and-swap result {other:?}"))),
        }
    }

    /// Applies puts and deletes atomically. Returns the log index.
    pub async fn batch(&self, mutations: Vec<Mutation>) -> Result<u64> {
        validate::batch(&self.inner.config.limits, &mutations)?;
        let range = self.batch_range(&mutations)?;
        let (_, index) = range.proposer.propose(Op::Batch(mutations)).await?;
        Ok(index)
    }

    /// Reads a range of keys.
    pub async fn scan(&self, scan: &Scan) -> Result<ScanPage> {
        for b in [&scan.start, &scan.end] {
            if let Bound::Included(k) | Bound::Excluded(k) = b {
                validate::bound_key(k)?;
            }
        }
        let limits = &self.inner.config.limits;
        let limit = match scan.limit {
            0 => limits.default_scan_limit,
            n => n.min(limits.max_scan_limit),
        } as usize;
        let replica = self.scan_range(scan)?;
        let r = &replica.replica;
        let index = r.read_barrier(scan.consistency).await?;
        // The descriptor as of the barrier: a split applied meanwhile shrank the range.
        let desc = replica.descriptor();
        if !scan.starts_in(&desc) {
            return Err(Error::RangeKeyMismatch(Box::new(desc)));
        }
        let range = scan.within(&desc);
        let mut page = ScanPage { index, more: false, pairs: Vec::new(), range: desc };
        let mut bytes = 0usize;
        for pair in r.engine.scan(Cf::Data, &range, scan.reverse)? {
            let (k, stored) = pair?;
            if page.pairs.len() == limit || (bytes >= limits.max_scan_bytes && !page.pairs.is_empty()) {
                page.more = true;
                break;
            }
            let user_key = keys::user_key(&k).ok_or_else(|| zonekv_raft::Error::Corruption {
                group: r.range,
                what: format!("data key {k:?} without the data prefix"),
            })?;
            let value =
                zonekv_raft::value::decode(&stored).map_err(|why| zonekv_raft::Error::Corruption {
                    group: r.range,
                    what: format!("value of key {user_key:?}: {why}"),
                })?;
            let value = if scan.keys_only { Bytes::new() } else { value };
            bytes += user_key.len() + value.len();
            page.pairs.push((Bytes::copy_from_slice(user_key), value));
        }
        Ok(page)
    }
}
