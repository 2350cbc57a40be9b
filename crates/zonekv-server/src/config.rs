//! Node configuration: a TOML file (kebab-case keys), overridable from the command line.
//!
//! Every field has a default; an empty file is a valid configuration for a single node on
//! `127.0.0.1:7001` with data in `./zonekv-data`. See `etc/zonekv.toml` for an annotated copy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use zonekv_control::{PlacementConfig, SplitConfig};
use zonekv_raft::meta::allocator::FIRST_ALLOCATED_ID;
pub use zonekv_store::{Limits, MAX_KEY_BYTES};

use crate::{Error, Result};

/// Configuration of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id: unique in the cluster, never reused, from 1 to 2^32 − 1 (ids from 2^32 up
    /// are replica ids the cluster allocates). Default: 1.
    pub node_id: u64,
    /// Address the gRPC server binds to. Port 0 picks a free port. Default: `127.0.0.1:7001`.
    pub listen: SocketAddr,
    /// Address other nodes and clients use to reach this node. Default: the bound address.
    pub advertise_addr: Option<String>,
    /// Directory of the node's RocksDB database. Default: `./zonekv-data`.
    pub data_dir: PathBuf,
    /// Address of any member of an existing cluster to join at startup, if this node does not
    /// belong to a cluster yet. Default: none (wait for `zonekv init`).
    pub join: Option<String>,
    /// Directory of the node's certificates (docs/security.md): `ca.crt`, `node.crt` and
    /// `node.key`. With it, every connection to and from the node is mutual TLS 1.3 and every
    /// call is authorized by its certificate. Default: none — plaintext with no
    /// authentication, meant for an embedded node on loopback; `zonekv start` refuses to run
    /// so unless given `--insecure`.
    pub certs_dir: Option<PathBuf>,
    /// Where this node runs: `key=value` tiers, most global first, e.g.
    /// `region=eu-west,zone=eu-west-1a` (letters, digits, `.`, `_`, `-`; keys unique). Placement
    /// spreads replicas by it (docs/placement.md); `zone` and `region` are the tiers survival
    /// goals count. Default: empty (the node counts as its own zone and region).
    pub locality: String,
    /// Raft timing and log retention.
    pub raft: RaftConfig,
    /// Request size limits.
    pub limits: Limits,
    /// RocksDB tuning.
    pub storage: StorageConfig,
    /// When ranges split.
    pub split: SplitConfig,
    /// Where ranges' replicas and leaders go.
    pub placement: PlacementConfig,
}

/// Raft settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RaftConfig {
    /// Leader heartbeat period, in milliseconds; also the AppendEntries RPC deadline (openraft
    /// ties the two). Default: 200.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election timeout, in milliseconds. Default: 1000.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the election timeout, in milliseconds; also the leader lease: followers
    /// refuse to vote for this long after hearing from their leader, and a leader serves lease
    /// reads for this long, shortened by `max-clock-rate-error-percent`, after a quorum
    /// acknowledged it. Default: 2000.
    pub election_timeout_max_ms: u64,
    /// The largest rate difference between two nodes' monotonic clocks that lease reads stay
    /// safe under, in percent: a leader serves lease reads for the lease × (100 − this) / 100
    /// (a leader whose clock runs this much slower than a follower's still stops serving
    /// before the follower may vote for someone else). A larger rate error is outside the
    /// model. 0–50. Default: 5.
    pub max_clock_rate_error_percent: u32,
    /// Serve linearizable reads on the leader's lease while it is fresh, without a network
    /// round. Off (the default), every linearizable read confirms leadership with a quorum
    /// round (ReadIndex), which no clock can fool. A lease is safe only while no node's
    /// monotonic clock runs more than `max-clock-rate-error-percent` slower than another's:
    /// a VM whose hypervisor pauses it and restores its clocks (QEMU/KVM after a pause, memory
    /// snapshots, some live migrations) resumes believing its lease, and a leader frozen
    /// longer than an election (about 1–2 s) serves stale reads (test: `freeze.rs`). Turn on
    /// only where no node can be paused so. Default: false.
    pub lease_reads: bool,
    /// Build a snapshot (and purge the log) after this many applied entries. Default: 10000.
    pub snapshot_after_entries: u64,
    /// Log entries kept after a snapshot, so slightly lagging followers catch up from the log.
    /// Default: 1000.
    pub keep_entries_after_snapshot: u64,
    /// Most entries per AppendEntries message. Default: 64.
    pub max_entries_per_append: u64,
    /// Most bytes of entries (as encoded) per AppendEntries message; a message holds fewer
    /// entries once they reach this, and a single larger entry goes alone. With the largest
    /// entry it sets the size limit of the Raft transport's messages (`raft_message_limit`).
    /// Default: 16777216 (16 MiB).
    pub max_bytes_per_append: usize,
    /// Deadline for sending a whole snapshot to a follower, in milliseconds. Default: 60000.
    pub snapshot_timeout_ms: u64,
    /// Most snapshot bytes per second this node sends, and likewise receives, summed over all
    /// its ranges (catching up a follower must not starve the writes); 0 means unlimited.
    /// Default: 67108864 (64 MiB/s: a full-size range in about a second).
    pub snapshot_max_bytes_per_sec: u64,
    /// Largest snapshot this node accepts from a peer, in bytes: a snapshot is held in memory
    /// while it is installed, and at most two are received at once, so this bounds what
    /// snapshots can take (a peer sending more is refused with RESOURCE_EXHAUSTED). Must
    /// exceed the largest range (`split.range-max-bytes` plus what arrives before a split).
    /// Default: 1073741824 (1 GiB).
    pub max_snapshot_bytes: u64,
    /// Most client writes batched into one log entry. Default: 1024.
    pub max_ops_per_entry: usize,
    /// A batch stops growing once its writes' encoding reaches this size, in bytes (an entry is
    /// at most this plus one write). Default: 1 MiB (1048576).
    pub max_bytes_per_entry: usize,
    /// Log entries proposed and not yet applied at once; while they are in flight, new writes
    /// gather into the next batch. Default: 2 (one entry syncing while the next fills): on a
    /// 2-core machine, 2 gave 40k writes/s at 256 clients where 8 gave 29k (bigger batches,
    /// less per-entry work; see docs/benchmarks.md).
    pub max_proposals_in_flight: usize,
    /// Bytes of client writes the node holds at once, waiting to be proposed or in flight,
    /// over all its ranges (each write's encoding plus 256 bytes). A write past it is
    /// refused at once with RESOURCE_EXHAUSTED (nothing applied, safe to retry after a
    /// backoff), so the queues stay bounded however many clients send. Default: 268435456
    /// (256 MiB).
    pub max_queued_write_bytes: usize,
    /// Let idle ranges stop their Raft timers (no heartbeats, no election timers) while their
    /// leader's node is live; node liveness pings replace them, and any vote request wakes a
    /// replica (docs/multiraft.md, "Idle cost and failover"). Default: true.
    pub quiesce: bool,
    /// How often each node pings every other node (node liveness), in milliseconds; also how
    /// often replicas are checked for quiescence. Default: 250.
    pub node_liveness_interval_ms: u64,
    /// A node that has not pinged this one for this long is taken for dead: the ranges it led
    /// wake up and elect. Milliseconds. Default: 2000.
    pub node_liveness_timeout_ms: u64,
}

/// RocksDB settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct StorageConfig {
    /// Block cache size, in bytes. Default: 64 MiB (67108864).
    pub block_cache_bytes: usize,
    /// Memtable size per column family, in bytes. Default: 8 MiB (8388608): smaller memtables
    /// make the random-key inserts of the apply path cheaper (fewer cache misses).
    pub write_buffer_bytes: usize,
    /// Write-ahead log size, in bytes, past which the column families holding its oldest file
    /// are flushed; bounds what a restart replays. Default: 64 MiB (67108864). Without it the
    /// small Raft metadata column family pins every log file (376 MB after 16 s of writes).
    pub max_wal_bytes: u64,
    /// Buffer the write-ahead log of unsynced writes in memory until the next sync (RocksDB's
    /// `manual_wal_flush`) instead of one `write()` per batch. Acknowledged writes are always
    /// synced first, so this only decides whether a crashed process loses what it never
    /// promised to keep. Default: true.
    pub manual_wal_flush: bool,
    /// A log sync (fsync) running longer than this makes the node stop vouching for itself in
    /// liveness pings, so the quiet ranges it leads elect leaders on healthy nodes (a hung
    /// disk is a gray failure: the process runs, its Raft I/O does not). Milliseconds; must be
    /// above 0. Default: 2000.
    pub max_sync_stall_ms: u64,
    /// Bytes of the data directory's file system kept free for Raft's own writes (log appends,
    /// applies, compactions, snapshots). While less is free, client writes that add data are
    /// refused with `RESOURCE_EXHAUSTED` naming this setting; reads and deletes go on, and
    /// writes resume once space is freed (docs/disk-faults.md). 0 turns the reserve off.
    /// Default: 256 MiB (268435456).
    pub min_free_bytes: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            listen: "127.0.0.1:7001".parse().expect("valid address"),
            advertise_addr: None,
            data_dir: PathBuf::from("zonekv-data"),
            join: None,
            certs_dir: None,
            locality: String::new(),
            raft: RaftConfig::default(),
            limits: Limits::default(),
            storage: StorageConfig::default(),
            split: SplitConfig::default(),
            placement: PlacementConfig::default(),
        }
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 200,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            max_clock_rate_error_percent: 5,
            lease_reads: false,
            snapshot_after_entries: 10_000,
            keep_entries_after_snapshot: 1000,
            max_entries_per_append: 64,
            max_bytes_per_append: 16 << 20,
            snapshot_timeout_ms: 60_000,
            snapshot_max_bytes_per_sec: 64 << 20,
            max_snapshot_bytes: 1 << 30,
            max_ops_per_entry: 1024,
            max_bytes_per_entry: 1 << 20,
            max_proposals_in_flight: 2,
            max_queued_write_bytes: 256 << 20,
            quiesce: true,
            node_liveness_interval_ms: 250,
            node_liveness_timeout_ms: 2000,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        let d = zonekv_engine_rocks::RocksOptions::default();
        Self {
            block_cache_bytes: d.block_cache_bytes,
            write_buffer_bytes: d.write_buffer_bytes,
            max_wal_bytes: d.max_wal_bytes,
            manual_wal_flush: d.manual_wal_flush,
            max_sync_stall_ms: 2000,
            min_free_bytes: 256 << 20,
        }
    }
}

impl NodeConfig {
    /// Reads a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Checks the configuration for values that cannot work.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Config(m));
        if self.node_id == 0 || self.node_id >= FIRST_ALLOCATED_ID {
            return fail(format!(
                "node-id must be between 1 and {} (got {}); larger ids are replica ids the cluster allocates",
                FIRST_ALLOCATED_ID - 1,
                self.node_id
            ));
        }
        self.locality.parse::<zonekv_placement::Locality>().map_err(|e| Error::Config(e.to_string()))?;
        let r = &self.raft;
        if r.heartbeat_interval_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_interval_ms {
            return fail(format!(
                "raft.election-timeout-min-ms ({}) must exceed raft.heartbeat-interval-ms ({}), which must not be 0",
                r.election_timeout_min_ms, r.heartbeat_interval_ms
            ));
        }
        if r.max_clock_rate_error_percent > 50 {
            return fail(format!(
                "raft.max-clock-rate-error-percent ({}) must be at most 50",
                r.max_clock_rate_error_percent
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return fail("raft.election-timeout-max-ms must exceed raft.election-timeout-min-ms".into());
        }
        if r.max_entries_per_append == 0 || r.snapshot_after_entries == 0 || r.max_bytes_per_append == 0 {
            return fail("raft.max-entries-per-append and raft.snapshot-after-entries must not be 0".into());
        }
        if r.max_ops_per_entry == 0
            || r.max_bytes_per_entry == 0
            || r.max_proposals_in_flight == 0
            || r.max_queued_write_bytes == 0
        {
            return fail(
                "raft.max-ops-per-entry, max-bytes-per-entry, max-proposals-in-flight and \
                 max-queued-write-bytes must not be 0"
                    .into(),
            );
        }
        if r.node_liveness_interval_ms == 0 || r.node_liveness_timeout_ms <= 2 * r.node_liveness_interval_ms {
            return fail(format!(
                "raft.node-liveness-timeout-ms ({}) must exceed twice raft.node-liveness-interval-ms ({}), which must not be 0",
                r.node_liveness_timeout_ms, r.node_liveness_interval_ms
            ));
        }
        let l = &self.limits;
        if l.max_value_bytes == 0 || l.max_batch_ops == 0 || l.max_batch_bytes == 0 {
            return fail("limits must not be 0".into());
        }
        if l.default_scan_limit == 0 || l.default_scan_limit > l.max_scan_limit || l.max_scan_bytes == 0 {
            return fail("limits.default-scan-limit must be between 1 and limits.max-scan-limit".into());
        }
        let st = &self.storage;
        if st.write_buffer_bytes == 0 || st.max_wal_bytes < st.write_buffer_bytes as u64 {
            return fail(format!(
                "storage.max-wal-bytes ({}) must be at least storage.write-buffer-bytes ({}), which must not be 0",
                st.max_wal_bytes, st.write_buffer_bytes
            ));
        }
        if self.split.check_interval_ms == 0 {
            return fail("split.check-interval-ms must not be 0".into());
        }
        let p = &self.placement;
        if p.interval_ms == 0 || p.max_snapshots == 0 {
            return fail("placement.interval-ms and placement.max-snapshots must not be 0".into());
        }
        if self.storage.max_sync_stall_ms == 0 {
            return fail("storage.max-sync-stall-ms must be above 0".into());
        }
        if p.dead_after_ms <= r.node_liveness_timeout_ms {
            return fail(format!(
                "placement.dead-after-ms ({}) must exceed raft.node-liveness-timeout-ms ({})",
                p.dead_after_ms, r.node_liveness_timeout_ms
            ));
        }
        p.policy.to_policy().map_err(|e| Error::Config(format!("placement.policy: {e}")))?;
        Ok(())
    }

    /// The openraft configuration derived from this one.
    pub fn openraft(&self) -> Result<openraft::Config> {
        let r = &self.raft;
        openraft::Config {
            cluster_name: "zonekv".into(),
            heartbeat_interval: r.heartbeat_interval_ms,
            election_timeout_min: r.election_timeout_min_ms,
            election_timeout_max: r.election_timeout_max_ms,
            install_snapshot_timeout: r.snapshot_timeout_ms,
            max_payload_entries: r.max_entries_per_append,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_after_entries),
            max_in_snapshot_log_to_keep: r.keep_entries_after_snapshot,
            enable_pre_vote: Some(true),
            // A leader that restarts must not resume leadership in its old term. Followers may
            // have durably accepted (and committed, and a client may have been told about)
            // entries that the leader had written but not yet synced itself; a crash loses them
            // from its log, and resuming in the same term would make it create different
            // entries under the same log ids, which followers take for the ones they have:
            // replicas diverge and acknowledged writes vanish. The process nemesis found this
            // (docs/testing.md). An election after a restart costs a little availability.
            enable_leader_restore: Some(false),
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Config(format!("raft: {e}")))
    }

    /// The largest gRPC message a node accepts: a full batch or value plus framing.
    pub fn max_message_bytes(&self) -> usize {
        self.limits.max_batch_bytes.max(self.limits.max_value_bytes) + MAX_KEY_BYTES + (1 << 20)
    }

    /// Snapshot send deadline.
    pub fn snapshot_timeout(&self) -> Duration {
        Duration::from_millis(self.raft.snapshot_timeout_ms)
    }

    /// The largest log entry, encoded: a batch grows until it reaches `max-bytes-per-entry`,
    /// and its last write can be a whole client request (at most `max_message_bytes`; counted
    /// twice, as the log's encoding of a request's writes is never twice its own).
    pub fn max_entry_bytes(&self) -> usize {
        self.raft.max_bytes_per_entry.saturating_add(self.max_message_bytes().saturating_mul(2))
    }

    /// The largest Raft message a node sends and accepts: an AppendEntries carries entries up
    /// to `max-bytes-per-append`, or one larger entry alone (docs/security.md, "Bounded
    /// resources"); a margin covers the message's own fields. About 20 MiB with the defaults.
    pub fn raft_message_limit(&self) -> usize {
        self.raft.max_bytes_per_append.max(self.max_entry_bytes()).saturating_add(1 << 20)
    }

    /// The node's id as the cluster knows it.
    pub fn id(&self) -> zonekv_raft::NodeId {
        zonekv_raft::NodeId::new(self.node_id)
    }

    /// How the node's store runs, from this configuration.
    pub(crate) fn store_config(&self, hooks: zonekv_store::StoreHooks) -> Result<zonekv_store::StoreConfig> {
        let r = &self.raft;
        Ok(zonekv_store::StoreConfig {
            node_id: self.id(),
            raft: std::sync::Arc::new(self.openraft()?),
            batch: zonekv_store::BatchLimits {
                max_ops: r.max_ops_per_entry,
                max_bytes: r.max_bytes_per_entry,
                max_in_flight: r.max_proposals_in_flight,
                max_queued_bytes: r.max_queued_write_bytes,
            },
            max_append_bytes: r.max_bytes_per_append,
            apply_wait: Duration::from_millis(2 * r.election_timeout_max_ms),
            election_timeout_min: Duration::from_millis(r.election_timeout_min_ms),
            max_sync_stall: Duration::from_millis(self.storage.max_sync_stall_ms),
            min_free_bytes: self.storage.min_free_bytes,
            lease_read_max_age: r.lease_reads.then(|| {
                Duration::from_millis(
                    r.election_timeout_max_ms * u64::from(100 - r.max_clock_rate_error_percent.min(50)) / 100,
                )
            }),
            limits: self.limits.clone(),
            hooks,
        })
    }

    /// How the node's control plane runs, from this configuration; `addr` is where the node
    /// is reached.
    pub(crate) fn control_config(&self, addr: &str) -> zonekv_control::ControlConfig {
        let r = &self.raft;
        zonekv_control::ControlConfig {
            node_id: self.id(),
            addr: addr.to_string(),
            locality: self.locality.clone(),
            data_dir: self.data_dir.clone(),
            split: self.split.clone(),
            placement: self.placement.clone(),
            liveness_interval: Duration::from_millis(r.node_liveness_interval_ms),
            liveness_timeout: Duration::from_millis(r.node_liveness_timeout_ms),
            quiesce: r.quiesce,
            election_timeout: (
                Duration::from_millis(r.election_timeout_min_ms),
                Duration::from_millis(r.election_timeout_max_ms),
            ),
            snapshot_timeout: self.snapshot_timeout(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults_and_keys_are_kebab_case() {
        let c: NodeConfig = toml::from_str("").unwrap();
        assert_eq!(c, NodeConfig::default());
        let c: NodeConfig =
            toml::from_str("node-id = 3\nlisten = \"127.0.0.1:9000\"\n[limits]\nmax-value-bytes = 1024\n")
                .unwrap();
        assert_eq!((c.node_id, c.limits.max_value_bytes), (3, 1024));
        assert_eq!(c.limits.max_batch_ops, Limits::default().max_batch_ops);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_impossible_values_are_refused() {
        assert!(toml::from_str::<NodeConfig>("node_id = 3\n").is_err());
        let mut c = NodeConfig { node_id: 0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("node-id"));
        c.node_id = 1 << 32;
        assert!(c.validate().unwrap_err().to_string().contains("node-id must be between 1 and 4294967295"));
        c.node_id = 1;
        c.raft.election_timeout_min_ms = 50;
        assert!(c.validate().is_err());
        let mut c = NodeConfig::default();
        c.storage.max_wal_bytes = 1 << 20;
        assert!(c.validate().unwrap_err().to_string().contains("storage.max-wal-bytes"));
        let mut c = NodeConfig::default();
        c.storage.max_sync_stall_ms = 0;
        assert!(c.validate().unwrap_err().to_string().contains("storage.max-sync-stall-ms"));
        let mut c = NodeConfig::default();
        c.raft.max_clock_rate_error_percent = 51;
        assert!(c.validate().unwrap_err().to_string().contains("raft.max-clock-rate-error-percent"));
        NodeConfig::default().openraft().unwrap();
    }

    #[test]
    fn lease_reads_trust_the_lease_shortened_by_the_clock_rate_error() {
        let mut c = NodeConfig::default();
        let lease =
            |c: &NodeConfig| c.store_config(zonekv_store::StoreHooks::default()).unwrap().lease_read_max_age;
        assert_eq!(lease(&c), None, "by default every linearizable read takes a quorum round");
        c.raft.lease_reads = true;
        assert_eq!(lease(&c), Some(Duration::from_millis(1900)), "2000 ms less 5 %");
        c.raft.max_clock_rate_error_percent = 0;
        assert_eq!(lease(&c), Some(Duration::from_millis(c.raft.election_timeout_max_ms)));
    }

    #[test]
    fn the_raft_message_limit_follows_the_entry_and_append_limits() {
        let c = NodeConfig::default();
        let limit = c.raft_message_limit();
        assert!(limit >= c.max_entry_bytes() && limit >= c.raft.max_bytes_per_append, "{limit}");
        assert!(limit < 32 << 20, "the defaults give about 20 MiB, not {limit}");
        // Bigger appends or values raise it; more entries per append do not.
        let mut more = c.clone();
        more.raft.max_entries_per_append = 10_000;
        assert_eq!(more.raft_message_limit(), limit);
        more.raft.max_bytes_per_append = 64 << 20;
        assert_eq!(more.raft_message_limit(), (64 << 20) + (1 << 20));
        let mut big = c.clone();
        big.limits.max_value_bytes = 32 << 20;
        big.limits.max_batch_bytes = 32 << 20;
        assert!(big.raft_message_limit() > 2 * (32 << 20));
    }

    #[test]
    fn the_shipped_template_parses_to_the_defaults() {
        let text = include_str!("../../../etc/zonekv.toml");
        let c: NodeConfig = toml::from_str(text).unwrap();
        assert_eq!(c, NodeConfig::default());
    }
}
