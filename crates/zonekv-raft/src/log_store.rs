//! [`LogStore`]: openraft's `RaftLogStorage` for one group in a shared engine.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use zonekv_engine::{Cf, Engine, KeyRange, WriteBatch};

use crate::codec::{self, decode_entry, decode_log_id, decode_vote, encode_entry};
use crate::entry_cache::EntryCache;
use crate::keys::{MetaKey, log_index, log_key, log_span_from, meta_key};
use crate::{Entry, Error, LogId, LogSyncer, RangeId, Result, TypeConfig, Vote};

/// The Raft log, vote and log metadata of one group.
///
/// Clones share the engine; every handle reads what any handle has written.
#[derive(Clone)]
pub struct LogStore<E: Engine> {
    reader: LogReader<E>,
    syncer: LogSyncer,
}

/// Reads a group's log and vote. Sees appends as soon as `append` returns.
#[derive(Clone)]
pub struct LogReader<E: Engine> {
    engine: E,
    group: RangeId,
    cache: Arc<Mutex<EntryCache>>,
    /// Most entry bytes (as encoded on the wire) one replication message carries.
    max_append_bytes: usize,
}

/// Entries of the log tail kept decoded in memory (see `entry_cache`).
const CACHED_ENTRIES: usize = 1024;

impl<E: Engine> LogStore<E> {
    /// The log of `group` in `engine`, made durable by `syncer` (one per engine).
    pub fn new(engine: E, group: RangeId, syncer: LogSyncer) -> Self {
        let cache = Arc::new(Mutex::new(EntryCache::new(CACHED_ENTRIES)));
        Self { reader: LogReader { engine, group, cache, max_append_bytes: usize::MAX }, syncer }
    }

    /// Caps what one replication message carries at `bytes` of encoded entries (at least one
    /// entry, however large): openraft reads what it replicates through
    /// `limited_get_log_entries`, which stops before the entry that would pass the cap.
    /// Unlimited by default.
    pub fn with_max_append_bytes(mut self, bytes: usize) -> Self {
        self.reader.max_append_bytes = bytes;
        self
    }

    fn cache(&self) -> MutexGuard<'_, EntryCache> {
        self.reader.cache()
    }

    /// The group this log belongs to.
    pub fn group(&self) -> RangeId {
        self.reader.group
    }

    fn engine(&self) -> &E {
        &self.reader.engine
    }

    /// Writes `batch` (unsynced: the syncer makes it durable). A failed write stops the node
    /// as a failed sync does ([`LogSyncer::fail_stop`]): the log now differs from what Raft
    /// believes it holds, and the other groups on this disk would meet the same fault (a full
    /// disk). The restart replays what was synced.
    fn write(&self, batch: &WriteBatch, what: &str) -> io::Result<()> {
        self.engine().write(batch, false).map_err(|e| {
            self.syncer.fail_stop(format!(
                "writing {what} of range {} to the Raft log failed ({e}); the node stops so no \
                 replica runs on a log it could not write: {}, then restart the node (the restart \
                 replays what was synced)",
                self.group(),
                crate::syncer::disk_remedy(&e)
            ));
            log_error(self.group(), e.into())
        })
    }

    fn read_log_id(&self, kind: MetaKey, what: &str) -> Result<Option<LogId>> {
        let g = self.group();
        match self.engine().get(Cf::RaftMeta, &meta_key(g, kind))? {
            Some(v) => Ok(Some(decode_log_id(g, what, &v)?)),
            None => Ok(None),
        }
    }

    fn last_entry_id(&self) -> Result<Option<LogId>> {
        let g = self.group();
        let mut it = self.engine().scan(Cf::RaftLog, &log_span_from(g, 0), true)?;
        match it.next() {
            Some(pair) => {
                let (k, v) = pair?;
                let index = log_index(g, &k)
                    .ok_or_else(|| Error::Corruption { group: g, what: format!("bad log key {k:?}") })?;
                Ok(Some(decode_entry(g, index, &v)?.log_id))
            }
            None => Ok(None),
        }
    }
}

impl<E: Engine> LogReader<E> {
    fn cache(&self) -> MutexGuard<'_, EntryCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads entries with indexes in `[start, end)` (`end = None`: to the last entry), from the
    /// in-memory tail when it holds them, else from the engine, checking every checksum and
    /// that the indexes are contiguous.
    pub fn read_range(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry>> {
        if let Some(hit) = self.cache().get(start, end) {
            return Ok(hit);
        }
        self.read_stored(start, end)
    }

    /// Reads entries from the engine only (no cache).
    pub fn read_stored(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry>> {
        let g = self.group;
        let range = match end {
            Some(end) if end <= start => return Ok(Vec::new()),
            Some(end) => KeyRange::half_open(log_key(g, start), log_key(g, end)),
            None => log_span_from(g, start),
        };
        let mut out: Vec<Entry> = Vec::new();
        for pair in self.engine.scan(Cf::RaftLog, &range, false)? {
            let (k, v) = pair?;
            let index = log_index(g, &k)
                .ok_or_else(|| Error::Corruption { group: g, what: format!("bad log key {k:?}") })?;
            if let Some(prev) = out.last()
                && index != prev.log_id.index + 1
            {
                return Err(Error::Corruption {
                    group: g,
                    what: format!("hole in the log between {} and {index}", prev.log_id.index),
                });
            }
            out.push(decode_entry(g, index, &v)?);
        }
        Ok(out)
    }

    fn vote(&self) -> Result<Option<Vote>> {
        match self.engine.get(Cf::RaftMeta, &meta_key(self.group, MetaKey::Vote))? {
            Some(v) => Ok(Some(decode_vote(self.group, &v)?)),
            None => Ok(None),
        }
    }
}

fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.checked_add(1),
        Bound::Excluded(e) => Some(*e),
        Bound::Unbounded => None,
    };
    (start, end)
}

fn log_error(group: RangeId, e: Error) -> io::Error {
    tracing::error!(%group, error = %e, "Raft log storage failed");
    e.into()
}

impl<E: Engine> RaftLogReader<TypeConfig> for LogReader<E> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let (start, end) = bounds(&range);
        self.read_range(start, end).map_err(|e| log_error(self.group, e))
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.vote().map_err(|e| log_error(self.group, e))
    }

    /// What replication sends: entries `[start, end)`, cut to the longest prefix whose encoded
    /// size stays within the cap (never empty).
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        let mut entries = self.read_range(start, Some(end)).map_err(|e| log_error(self.group, e))?;
        let keep = codec::prefix_within(&entries, self.max_append_bytes);
        entries.truncate(keep);
        Ok(entries)
    }
}

impl<E: Engine> RaftLogReader<TypeConfig> for LogStore<E> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        self.reader.try_get_log_entries(range).await
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.reader.read_vote().await
    }
}

impl<E: Engine> RaftLogStorage<TypeConfig> for LogStore<E> {
    type LogReader = LogReader<E>;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let g = self.group();
        let purged = self.read_log_id(MetaKey::Purged, "last purged log id").map_err(|e| log_error(g, e))?;
        let last = self.last_entry_id().map_err(|e| log_error(g, e))?;
        Ok(LogState { last_log_id: last.or(purged), last_purged_log_id: purged })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let mut b = WriteBatch::new();
        b.put(Cf::RaftMeta, meta_key(self.group(), MetaKey::Vote), codec::encode_vote(vote));
        self.write(&b, "the vote")?;
        // Durable in the next group commit, like appends: the election of many ranges at once
        // shares fsyncs, no runtime thread blocks on one, and after a failed sync nothing is
        // made durable any more (`LogSyncer`).
        self.syncer.sync().await.map_err(|e| log_error(self.group(), Error::Engine(e.into())))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        let key = meta_key(self.group(), MetaKey::Committed);
        let mut b = WriteBatch::new();
        match committed {
            Some(id) => b.put(Cf::RaftMeta, key, codec::encode_log_id(&id)),
            None => b.delete(Cf::RaftMeta, key),
        }
        self.write(&b, "the committed index")
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        self.read_log_id(MetaKey::Committed, "committed log id").map_err(|e| log_error(self.group(), e))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let g = self.group();
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut b = WriteBatch::new();
        for entry in &entries {
            b.put(Cf::RaftLog, log_key(g, entry.log_id.index), encode_entry(entry));
        }
        if let Err(e) = self.write(&b, "log entries") {
            callback.io_completed(Err(io::Error::other(e.to_string())));
            return Err(e);
        }
        self.cache().append(&entries);
        self.syncer.submit(callback);
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> io::Result<()> {
        let g = self.group();
        let from = last.map_or(0, |id| id.index + 1);
        self.cache().truncate_after(last.map(|id| id.index));
        let mut b = WriteBatch::new();
        b.delete_range(Cf::RaftLog, log_key(g, from), log_span_end(g));
        self.write(&b, "a log truncation")
    }

    async fn purge(&mut self, upto: LogId) -> io::Result<()> {
        let g = self.group();
        self.cache().purge(upto.index);
        let mut b = WriteBatch::new();
        b.put(Cf::RaftMeta, meta_key(g, MetaKey::Purged), codec::encode_log_id(&upto));
        match upto.index.checked_add(1) {
            Some(end) => b.delete_range(Cf::RaftLog, log_key(g, 0), log_key(g, end)),
            None => b.delete_range(Cf::RaftLog, log_key(g, 0), log_span_end(g)),
        }
        self.write(&b, "a log purge")
    }
}

/// A key after every log key of `group` and before the next group's log.
fn log_span_end(group: RangeId) -> Vec<u8> {
    let mut k = log_key(group, u64::MAX).to_vec();
    k.push(0);
    k
}
