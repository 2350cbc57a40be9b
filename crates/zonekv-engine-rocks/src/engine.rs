//! [`RocksEngine`]: the engine traits on one RocksDB with a column family per [`Cf`].

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, IteratorMode, Options, ReadOptions,
    SnapshotWithThreadMode, WriteOptions,
};
use zonekv_engine::{Cf, Engine, Error, KeyRange, KvIter, Reader, Result, WriteBatch, WriteOp};

use crate::RocksOptions;
use crate::synced::SyncedMark;

/// A RocksDB-backed engine. Cloning shares the same database.
#[derive(Clone)]
pub struct RocksEngine {
    db: Arc<DB>,
    /// How far the WAL is known synced (checked at the next open).
    synced: Arc<SyncedMark>,
}

/// A consistent point-in-time view of a [`RocksEngine`].
pub struct RocksSnapshot<'a> {
    db: &'a DB,
    snap: SnapshotWithThreadMode<'a, DB>,
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine").field("path", &self.db.path()).finish()
    }
}

impl RocksEngine {
    /// Opens the database in `path`, creating it and its column families if missing.
    ///
    /// Fails with [`Error::Corruption`] if RocksDB finds damaged files while opening or if the
    /// write-ahead log replays to less than a sync once made durable (`synced.rs`), and with
    /// [`Error::Open`] if the directory cannot be used (locked by another process, not a
    /// directory, permissions).
    pub fn open(path: &Path, opts: &RocksOptions) -> Result<Self> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_paranoid_checks(true);
        db_opts.set_max_background_jobs(opts.background_jobs);
        db_opts.set_max_total_wal_size(opts.max_wal_bytes);
        db_opts.set_manual_wal_flush(opts.manual_wal_flush);
        // Record the size of every synced WAL file in the MANIFEST, so a WAL file that is
        // missing or shorter than what was synced (truncation, a lost file) fails the open
        // instead of being replayed as a torn tail: that would silently drop writes this
        // replica acknowledged.
        db_opts.set_track_and_verify_wals_in_manifest(true);
        let cache = Cache::new_lru_cache(opts.block_cache_bytes);
        let cfs = Cf::ALL.map(|cf| {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            let mut cf_opts = Options::default();
            cf_opts.set_block_based_table_factory(&table);
            cf_opts.set_write_buffer_size(opts.write_buffer_bytes);
            ColumnFamilyDescriptor::new(cf.name(), cf_opts)
        });
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|e| match e.kind() {
            rocksdb::ErrorKind::Corruption => {
                Error::Corruption(format!("{}: {}", path.display(), e.into_string()))
            }
            _ => Error::Open { path: path.display().to_string(), reason: e.into_string() },
        })?;
        let (synced, synced_seq) = SyncedMark::open(path)?;
        let replayed = db.latest_sequence_number();
        if replayed < synced_seq {
            return Err(Error::Corruption(format!(
                "{}: the write-ahead log lost writes that were synced: a sync covered sequence number \
                 {synced_seq}, but the log replays only to {replayed} (a damaged or truncated WAL file). \
                 This node may have forgotten Raft entries and votes it acknowledged, so it must not \
                 serve or vote with this data: remove the node from the cluster, then wipe the directory \
                 and join it again as a new node (docs/disk-faults.md)",
                path.display()
            )));
        }
        tracing::debug!(path = %path.display(), replayed, synced_seq, "opened RocksDB engine");
        Ok(Self { db: Arc::new(db), synced: Arc::new(synced) })
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Flushes every memtable to SST files (used by tests that need data in files).
    pub fn flush(&self) -> Result<()> {
        for cf in Cf::ALL {
            self.db.flush_cf(cf_handle(&self.db, cf)).map_err(map_err)?;
        }
        Ok(())
    }
}

fn cf_handle(db: &DB, cf: Cf) -> &ColumnFamily {
    db.cf_handle(cf.name()).expect("column families are created when the engine opens")
}

fn map_err(e: rocksdb::Error) -> Error {
    match e.kind() {
        rocksdb::ErrorKind::Corruption => Error::Corruption(e.into_string()),
        // RocksDB reports ENOSPC as an I/O error with this text (its `kNoSpace` subcode).
        rocksdb::ErrorKind::IOError if e.as_ref().contains("No space left on device") => {
            Error::NoSpace(e.into_string())
        }
        rocksdb::ErrorKind::IOError => Error::Io(std::io::Error::other(e.into_string())),
        _ => Error::Backend(e.into_string()),
    }
}

fn read_options(range: &KeyRange) -> ReadOptions {
    let mut ro = ReadOptions::default();
    let (lower, upper) = range.to_half_open();
    if let Some(l) = lower {
        ro.set_iterate_lower_bound(l);
    }
    if let Some(u) = upper {
        ro.set_iterate_upper_bound(u);
    }
    ro
}

fn mode(reverse: bool) -> IteratorMode<'static> {
    if reverse { IteratorMode::End } else { IteratorMode::Start }
}

fn convert<'a, I>(iter: I) -> KvIter<'a>
where
    I: Iterator<Item = std::result::Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>> + Send + 'a,
{
    Box::new(iter.map(|r| r.map(|(k, v)| (k.into_vec(), v.into_vec())).map_err(map_err)))
}

impl Reader for RocksEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(cf_handle(&self.db, cf), key).map_err(map_err)
    }

    fn scan(&self, cf: Cf, range: &KeyRange, reverse: bool) -> Result<KvIter<'_>> {
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let it = self.db.iterator_cf_opt(cf_handle(&self.db, cf), read_options(range), mode(reverse));
        Ok(convert(it))
    }
}

impl Reader for RocksSnapshot<'_> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snap.get_cf(cf_handle(self.db, cf), key).map_err(map_err)
    }

    fn scan(&self, cf: Cf, range: &KeyRange, reverse: bool) -> Result<KvIter<'_>> {
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let it = self.snap.iterator_cf_opt(cf_handle(self.db, cf), read_options(range), mode(reverse));
        Ok(convert(it))
    }
}

impl Engine for RocksEngine {
    type Snapshot<'a> = RocksSnapshot<'a>;

    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            match op {
                WriteOp::Put { cf, key, value } => wb.put_cf(cf_handle(&self.db, *cf), key, value),
                WriteOp::Delete { cf, key } => wb.delete_cf(cf_handle(&self.db, *cf), key),
                WriteOp::DeleteRange { cf, start, end } => {
                    wb.delete_range_cf(cf_handle(&self.db, *cf), start, end)
                }
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(wb, &wo).map_err(map_err)
    }

    fn sync(&self) -> Result<()> {
        // Every write with a sequence number up to `seq` is in the WAL (or its buffer) already:
        // RocksDB publishes a sequence number after the write's WAL record.
        let seq = self.db.latest_sequence_number();
        self.db.flush_wal(true).map_err(map_err)?;
        self.synced.record(seq);
        Ok(())
    }

    fn snapshot(&self) -> RocksSnapshot<'_> {
        RocksSnapshot { db: &self.db, snap: self.db.snapshot() }
    }

    fn approximate_size(&self, cf: Cf, range: &KeyRange) -> Result<u64> {
        if range.is_empty() {
            return Ok(0);
        }
        // RocksDB wants [start, end); an open end becomes a key above the keys we store (data
        // keys start with a one-byte prefix below 0xff, group ids stay far below 2^56).
        let (lower, upper) = range.to_half_open();
        let (lower, upper) = (lower.unwrap_or_default(), upper.unwrap_or_else(|| vec![0xff; 8]));
        let sizes =
            self.db.get_approximate_sizes_cf(cf_handle(&self.db, cf), &[rocksdb::Range::new(&lower, &upper)]);
        Ok(sizes.first().copied().unwrap_or(0))
    }

    fn flush(&self) -> Result<()> {
        for cf in Cf::ALL {
            self.db.flush_cf(cf_handle(&self.db, cf)).map_err(map_err)?;
        }
        Ok(())
    }

    fn free_space(&self) -> Result<Option<u64>> {
        // What an unprivileged writer may still use (`f_bavail`), as `df` reports it.
        let s = rustix::fs::statvfs(self.db.path()).map_err(|e| Error::Io(e.into()))?;
        Ok(Some(s.f_bavail.saturating_mul(s.f_frsize)))
    }
}
