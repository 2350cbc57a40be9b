//! Tuning knobs of the RocksDB engine.

/// Options for [`crate::RocksEngine::open`]. The server exposes them in its `[storage]` config
/// section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RocksOptions {
    /// Size of the block cache shared by all column families. Default: 64 MiB.
    pub block_cache_bytes: usize,
    /// Size of one memtable (per column family). Default: 8 MiB.
    pub write_buffer_bytes: usize,
    /// Background flush and compaction threads. Default: 2.
    pub background_jobs: i32,
    /// Write-ahead log kept before the column families that still need its oldest file are
    /// flushed. Bounds the log replayed at start-up: the small `raft-meta` column family
    /// would otherwise never fill its memtable and would pin every WAL file. Default: 64 MiB.
    pub max_wal_bytes: u64,
    /// Keep the write-ahead log of unsynced writes in a memory buffer until the next sync
    /// (RocksDB's `manual_wal_flush`) instead of a `write()` per batch. Synced writes and
    /// [`zonekv_engine::Engine::sync`] still reach the disk before they return, so the
    /// durability contract is unchanged; a killed process loses exactly what a power cut
    /// would (everything not synced), which the crash tests rely on. Default: true.
    pub manual_wal_flush: bool,
}

impl Default for RocksOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 8 << 20,
            background_jobs: 2,
            max_wal_bytes: 64 << 20,
            manual_wal_flush: true,
        }
    }
}
