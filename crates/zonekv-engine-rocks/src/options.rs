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
}

impl Default for RocksOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 8 << 20,
            background_jobs: 2,
            max_wal_bytes: 64 << 20,
        }
    }
}
