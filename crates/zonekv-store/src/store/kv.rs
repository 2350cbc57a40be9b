//! The key-value API of a store, routed: each request is checked ([`validate`]), goes to the
//! local replica of the range holding its key (one lookup), and reports that range with its
//! result, so a response names the range that served it even if a split follows.
//!
//! A batch must stay in one range: it is atomic, and atomicity across ranges needs
//! transactions, so a batch spanning ranges is refused with a clear error. A scan is served by
//! one range and returns only its keys, naming the range, so clients continue past it.

use bytes::Bytes;
use zonekv_engine::Engine;
use zonekv_raft::keys::FIRST_RANGE;
use zonekv_raft::{Mutation, Op, OpResult, RangeDescriptor, RangeId};

use super::Store;
use crate::{Error, ReadConsistency, Replica, Result, Scan, ScanPage};

/// A result and where it was served: the range and the log index it reflects (a read) or was
/// committed at (a write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served<T> {
    /// The result.
    pub value: T,
    /// The range that served the request.
    pub range: RangeId,
    /// The log index.
    pub index: u64,
}

/// The outcome of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the key held the expected value and was changed.
    pub succeeded: bool,
    /// The value found when comparing.
    pub current: Option<Bytes>,
}

/// Where a range is, as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeLocation {
    /// Its descriptor.
    pub desc: RangeDescriptor,
    /// The leader's address, if known.
    pub leader_addr: Option<String>,
    /// The addresses of its replicas' nodes.
    pub replica_addrs: Vec<String>,
}

impl<E: Engine> Store<E> {
    /// Proposes `op` to `replica` and reports the range with the result. A write that
    /// `adds_data` is refused with `DiskFull` while this node leads the range and its disk is
    /// below the reserve (`space.rs`). The replica was found first, so a stopped node answers
    /// `UNAVAILABLE` and a follower `NotLeader` (clients go elsewhere; `DiskFull` makes them
    /// back off against the same leader, which is right only for the leader).
    async fn write(&self, replica: Replica<E>, op: Op, adds_data: bool) -> Result<Served<OpResult>> {
        if adds_data && replica.leads() {
            self.inner.space.check_write(self.engine())?;
        }
        let (value, index) = replica.propose(op).await?;
        Ok(Served { value, range: replica.range_id(), index })
    }

    /// Reads a key.
    pub async fn get(&self, key: &[u8], consistency: ReadConsistency) -> Result<Served<Option<Bytes>>> {
        validate::key(key)?;
        let r = self.replica_for_key(key)?;
        let (value, index) = r.read(key, consistency).await?;
        Ok(Served { value, range: r.range_id(), index })
    }

    /// Writes a key.
    pub async fn put(&self, key: Bytes, value: Bytes) -> Result<Served<()>> {
        validate::put(&self.config().limits, &key, &value)?;
        let r = self.replica_for_key(&key)?;
        let s = self.write(r, Op::Put { key, value }, true).await?;
        Ok(Served { value: (), range: s.range, index: s.index })
    }

    /// Removes a key; the result says whether it existed.
    pub async fn delete(&self, key: Bytes) -> Result<Served<bool>> {
        validate::key(&key)?;
        let r = self.replica_for_key(&key)?;
        // Deletes are how space comes back: never refused for a full disk.
        let s = self.write(r, Op::Delete { key }, false).await?;
        match s.value {
            OpResult::Deleted { existed } => Ok(Served { value: existed, range: s.range, index: s.index }),
            other => Err(Error::Unavailable(format!("unexpected delete result {other:?}"))),
        }
    }

    /// Sets (`new_value = Some`) or removes (`None`) `key` if it currently holds `expected`
    /// (`None`: if it does not exist).
    pub async fn compare_and_swap(
        &self,
        key: Bytes,
        expected: Option<Bytes>,
        new_value: Option<Bytes>,
    ) -> Result<Served<CasOutcome>> {
        validate::key(&key)?;
        for v in expected.iter().chain(new_value.iter()) {
            validate::value(&self.config().limits, v)?;
        }
        let r = self.replica_for_key(&key)?;
        let adds_data = new_value.is_some();
        let s = self.write(r, Op::CompareAndSwap { key, expected, new_value }, adds_data).await?;
        match s.value {
            OpResult::CompareAndSwap { succeeded, current } => {
                Ok(Served { value: CasOutcome { succeeded, current }, range: s.range, index: s.index })
            }
            other => Err(Error::Unavailable(format!("unexpected compare-and-swap result {other:?}"))),
        }
    }

    /// Applies puts and deletes atomically; all keys must be in one range.
    pub async fn batch(&self, mutations: Vec<Mutation>) -> Result<Served<()>> {
        validate::batch(&self.config().limits, &mutations)?;
        let first = mutations.first().map_or(&[][..], |m| &m.key()[..]);
        let r = self.replica_for_key(first)?;
        let desc = r.descriptor();
        if let Some(other) = mutations.iter().map(Mutation::key).find(|k| !desc.contains(k)) {
            return Err(Error::InvalidArgument(format!(
                "the batch's keys {first:?} and {other:?} are in different ranges ({desc} holds only the first); \
                 batches across ranges need transactions, which are not built yet"
            )));
        }
        let adds_data = mutations.iter().any(|m| matches!(m, Mutation::Put { .. }));
        let s = self.write(r, Op::Batch(mutations), adds_data).await?;
        Ok(Served { value: (), range: s.range, index: s.index })
    }

    /// Reads the first part of a scan: the part in the range holding its start (a reverse
    /// scan: the range holding its last possible key). The page names the range.
    pub async fn scan(&self, scan: &Scan) -> Result<ScanPage> {
        for b in [&scan.start, &scan.end] {
            if let std::ops::Bound::Included(k) | std::ops::Bound::Excluded(k) = b {
                validate::bound_key(k)?;
            }
        }
        let limits = &self.config().limits;
        let limit = match scan.limit {
            0 => limits.default_scan_limit,
            n => n.min(limits.max_scan_limit),
        } as usize;
        let r = if scan.reverse {
            self.find(|d| scan.starts_in(d))?
        } else {
            self.replica_for_key(scan.start_key())?
        };
        r.scan(scan, limit, limits).await
    }

    /// Which range holds `key` (with `before`, the keys just below `key`; with `before` and
    /// an empty key, the last range), and where: this node's own replica of it if it has one,
    /// else its copy of the range directory (which names no leader).
    pub fn lookup_range(&self, key: &[u8], before: bool) -> Result<RangeLocation> {
        let pred = |d: &RangeDescriptor| match (before, key.is_empty()) {
            (false, _) => d.contains(key),
            (true, true) => d.end.is_none(),
            (true, false) => d.holds_keys_below(key),
        };
        if let Ok(r) = self.find(pred) {
            let leader_addr = r.leader_hint().and_then(|h| h.addr);
            let replica_addrs = r.with_metrics(|m| {
                m.membership_config.membership().nodes().map(|(_, n)| n.addr.clone()).collect()
            });
            return Ok(RangeLocation { desc: r.descriptor(), leader_addr, replica_addrs });
        }
        let meta = self.first();
        let known = zonekv_raft::meta::directory::entries(self.engine(), FIRST_RANGE)?;
        let desc = known.into_iter().find(|d| pred(d)).ok_or_else(|| {
            Error::Unavailable(format!("node {} knows no range holding key {key:?} yet", self.node_id()))
        })?;
        // The first range's replica ids are node ids.
        let replica_addrs = meta.with_metrics(|m| {
            let nodes = m.membership_config.membership();
            desc.replicas
                .iter()
                .filter_map(|r| nodes.get_node(&zonekv_raft::ReplicaId::of_first_range(r.node_id)))
                .map(|n| n.addr.clone())
                .collect()
        });
        Ok(RangeLocation { desc, leader_addr: None, replica_addrs })
    }
}

/// Request validation: every check runs before anything is proposed, so a rejected request
/// changes nothing. Public for the control plane, whose split keys and policy bounds are keys
/// too.
pub mod validate {
    use bytes::Bytes;
    use zonekv_raft::Mutation;

    use crate::config::{Limits, MAX_KEY_BYTES};
    use crate::{Error, Result};

    /// Checks a key: not empty, at most [`MAX_KEY_BYTES`].
    pub fn key(k: &[u8]) -> Result<()> {
        if k.is_empty() {
            return Err(Error::InvalidArgument("key must not be empty".into()));
        }
        if k.len() > MAX_KEY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "key is {} bytes; the limit is {MAX_KEY_BYTES}",
                k.len()
            )));
        }
        Ok(())
    }

    /// Checks a scan bound key: may be empty, at most [`MAX_KEY_BYTES`].
    pub fn bound_key(k: &[u8]) -> Result<()> {
        if k.len() > MAX_KEY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "scan bound is {} bytes; the limit is {MAX_KEY_BYTES}",
                k.len()
            )));
        }
        Ok(())
    }

    /// Checks a value against the configured limit.
    pub fn value(limits: &Limits, v: &[u8]) -> Result<()> {
        if v.len() > limits.max_value_bytes {
            return Err(Error::InvalidArgument(format!(
                "value is {} bytes; the limit is {} (limits.max-value-bytes)",
                v.len(),
                limits.max_value_bytes
            )));
        }
        Ok(())
    }

    /// Checks a key and value pair.
    pub fn put(limits: &Limits, k: &Bytes, v: &Bytes) -> Result<()> {
        key(k)?;
        value(limits, v)
    }

    /// Checks a batch: not empty, within the op and byte limits, every key and value valid.
    pub fn batch(limits: &Limits, mutations: &[Mutation]) -> Result<()> {
        if mutations.is_empty() {
            return Err(Error::InvalidArgument("batch has no mutations".into()));
        }
        if mutations.len() > limits.max_batch_ops {
            return Err(Error::InvalidArgument(format!(
                "batch has {} mutations; the limit is {} (limits.max-batch-ops)",
                mutations.len(),
                limits.max_batch_ops
            )));
        }
        let mut total = 0usize;
        for (i, m) in mutations.iter().enumerate() {
            let at = |e: Error| match e {
                Error::InvalidArgument(m) => Error::InvalidArgument(format!("mutation {i}: {m}")),
                other => other,
            };
            match m {
                Mutation::Put { key: k, value: v } => put(limits, k, v).map_err(at)?,
                Mutation::Delete { key: k } => key(k).map_err(at)?,
            }
            total += m.bytes();
        }
        if total > limits.max_batch_bytes {
            return Err(Error::InvalidArgument(format!(
                "batch holds {total} bytes of keys and values; the limit is {} (limits.max-batch-bytes)",
                limits.max_batch_bytes
            )));
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn b(s: &[u8]) -> Bytes {
            Bytes::copy_from_slice(s)
        }

        #[test]
        fn keys_values_and_batches_over_the_limits_are_named_in_the_error() {
            let limits =
                Limits { max_value_bytes: 10, max_batch_ops: 2, max_batch_bytes: 12, ..Limits::default() };
            assert!(key(b"").unwrap_err().to_string().contains("empty"));
            assert!(key(&[1; 4097]).unwrap_err().to_string().contains("4097 bytes"));
            key(&[1; 4096]).unwrap();
            assert!(value(&limits, &[0; 11]).unwrap_err().to_string().contains("max-value-bytes"));
            assert!(batch(&limits, &[]).unwrap_err().to_string().contains("no mutations"));
            let put = |k: &[u8], v: &[u8]| Mutation::Put { key: b(k), value: b(v) };
            let three = [put(b"a", b""), put(b"b", b""), put(b"c", b"")];
            assert!(batch(&limits, &three).unwrap_err().to_string().contains("max-batch-ops"));
            let err = batch(&limits, &[put(b"a", b"1"), Mutation::Delete { key: b(b"") }]).unwrap_err();
            assert!(err.to_string().starts_with("mutation 1: key must not be empty"), "{err}");
            let err = batch(&limits, &[put(b"aa", b"0123456789"), put(b"b", b"")]).unwrap_err();
            assert!(err.to_string().contains("max-batch-bytes"), "{err}");
            batch(&limits, &[put(b"a", b"0123456789")]).unwrap();
        }
    }
}
