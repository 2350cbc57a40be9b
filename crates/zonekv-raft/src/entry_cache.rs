//! The tail of a group's log, kept decoded in memory.
//!
//! On a leader every entry is read back three times right after it is appended (once per
//! follower to replicate it, once to apply it), and on a follower once (to apply it). Serving
//! those reads from memory saves a RocksDB read, a CRC check and a protobuf decode each time;
//! entries hold their keys and values as `Bytes`, so a clone only bumps reference counts.
//!
//! The cache holds a contiguous run of the most recent entries and is updated together with
//! the engine by append, truncate and purge; anything outside it is read from the engine.

use std::collections::VecDeque;

use crate::Entry;

/// Recent entries, contiguous by index.
#[derive(Debug)]
pub(crate) struct EntryCache {
    entries: VecDeque<Entry>,
    capacity: usize,
}

impl EntryCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { entries: VecDeque::with_capacity(capacity.min(1024)), capacity }
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    /// Adds appended entries. A gap or an overwrite in the middle empties the cache first, so
    /// it always stays one contiguous run.
    pub(crate) fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        match self.entries.back() {
            Some(last) if last.log_id.index + 1 == first.log_id.index => {}
            _ => self.entries.clear(),
        }
        self.entries.extend(entries.iter().cloned());
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
    }

    /// Forgets entries after `index` (`None`: all).
    pub(crate) fn truncate_after(&mut self, index: Option<u64>) {
        match index {
            None => self.entries.clear(),
            Some(i) => self.entries.retain(|e| e.log_id.index <= i),
        }
    }

    /// Forgets entries up to and including `index`.
    pub(crate) fn purge(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.log_id.index <= index) {
            self.entries.pop_front();
        }
    }

    /// The entries `[start, end)` if the cache holds all of them. `end = None` means to the
    /// end of the log, which the cache can answer only if it holds the start.
    pub(crate) fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        let from = (start - first) as usize;
        let to = match end {
            Some(e) => (e.saturating_sub(first) as usize).min(self.entries.len()),
            None => self.entries.len(),
        };
        if from > to {
            return Some(Vec::new());
        }
        Some(self.entries.range(from..to).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;

    use super::*;
    use crate::ReplicaId;
    use crate::{LeaderId, LogId};

    fn e(i: u64) -> Entry {
        Entry {
            log_id: LogId::new(LeaderId { term: 1, node_id: ReplicaId::new(1) }, i),
            payload: EntryPayload::Blank,
        }
    }

    fn idx(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn stays_contiguous_through_append_truncate_and_purge() {
        let mut c = EntryCache::new(4);
        c.append(&[e(1), e(2), e(3)]);
        assert_eq!(idx(c.get(2, Some(4))), Some(vec![2, 3]));
        c.append(&[e(4), e(5)]);
        assert_eq!(idx(c.get(2, None)), Some(vec![2, 3, 4, 5]));
        assert_eq!(c.get(1, Some(3)), None, "evicted beyond capacity");
        c.truncate_after(Some(3));
        c.append(&[e(4)]);
        assert_eq!(idx(c.get(2, Some(10))), Some(vec![2, 3, 4]));
        c.append(&[e(9)]); // a gap: start over
        assert_eq!(idx(c.get(9, None)), Some(vec![9]));
        assert_eq!(c.get(4, Some(5)), None);
        c.purge(9);
        assert_eq!(c.get(10, None), None);
    }
}
