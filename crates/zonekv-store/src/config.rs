//! How a store runs: the settings the node hands it, and the request limits (which are part of
//! the node's configuration file, `[limits]`).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zonekv_raft::NodeId;

/// The largest key accepted, in bytes. Fixed: keys are part of the on-disk layout.
pub const MAX_KEY_BYTES: usize = 4096;

/// Limits on client requests. Requests over a limit fail with `INVALID_ARGUMENT` and change
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Limits {
    /// Largest value, in bytes. Default: 8 MiB (8388608).
    pub max_value_bytes: usize,
    /// Most mutations in one `Batch`. Default: 10000.
    pub max_batch_ops: usize,
    /// Largest total of keys and values in one `Batch`, in bytes. Default: 8 MiB (8388608).
    pub max_batch_bytes: usize,
    /// Pairs a `Scan` returns when it sets no limit. Default: 1000.
    pub default_scan_limit: u32,
    /// Most pairs one `Scan` returns, whatever limit it asks for. Default: 10000.
    pub max_scan_limit: u32,
    /// Largest total of keys and values one `Scan` response carries; the scan stops early (with
    /// `more = true`) once it is reached, after at least one pair. Default: 16 MiB (16777216).
    pub max_scan_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_value_bytes: 8 << 20,
            max_batch_ops: 10_000,
            max_batch_bytes: 8 << 20,
            default_scan_limit: 1000,
            max_scan_limit: 10_000,
            max_scan_bytes: 16 << 20,
        }
    }
}

/// How writes are batched into log entries (`raft.max-ops-per-entry`, `max-bytes-per-entry`,
/// `max-proposals-in-flight` in the node's configuration).
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most writes in one entry.
    pub max_ops: usize,
    /// An entry stops growing once its writes' encoding reaches this size.
    pub max_bytes: usize,
    /// Entries proposed and not yet applied at once, per replica.
    pub max_in_flight: usize,
    /// Bytes of writes the whole node holds at once, queued or in flight, over all its
    /// replicas (each write's encoding plus a fixed cost); past it, writes are shed with
    /// [`crate::Error::Overloaded`].
    pub max_queued_bytes: usize,
}

/// What a store is told by the node that opens it.
#[derive(Clone)]
pub struct StoreConfig {
    /// The node this store belongs to (recorded in the data directory on first open).
    pub node_id: NodeId,
    /// openraft's settings, shared by every group.
    pub raft: Arc<openraft::Config>,
    /// Write batching.
    pub batch: BatchLimits,
    /// Most bytes of encoded entries one replication message carries (at least one entry).
    pub max_append_bytes: usize,
    /// Longest a linearizable read waits for the local apply to reach its read index (and a
    /// quiet leader for the heartbeat round that renews its lease).
    pub apply_wait: Duration,
    /// The shortest election timeout: how long a new range's preferred first leader is given
    /// before the parent's leader campaigns in its place (`lifecycle.rs`).
    pub election_timeout_min: Duration,
    /// A log sync running longer than this means the node's disk is stalled: requests are
    /// refused at once (`Unavailable`, nothing done) and liveness stops vouching for the node.
    pub max_sync_stall: Duration,
    /// Longest a leader serves lease reads after a quorum acknowledged it: the leader lease
    /// (openraft's, the election timeout's upper bound) shortened by the maximum clock-rate
    /// error between nodes. `None`: no lease reads, every linearizable read takes a quorum
    /// round (ReadIndex).
    pub lease_read_max_age: Option<Duration>,
    /// Bytes of disk that must stay free for Raft's own writes: below it, client writes that
    /// add data are refused with [`crate::Error::DiskFull`] (`space.rs`). 0 turns it off.
    pub min_free_bytes: u64,
    /// Request limits.
    pub limits: Limits,
    /// Unsafe switches for negative controls; all off by default.
    pub hooks: StoreHooks,
}

/// Switches that make the store unsafe on purpose, so the checkers can prove they catch what
/// they are for. They exist only with the `test-hooks` feature; without it every one is off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreHooks {
    /// Serve linearizable reads from the local applied state on any replica, without
    /// confirming leadership or a read index.
    #[cfg(feature = "test-hooks")]
    pub unsafe_local_reads: bool,
    /// Report Raft log appends durable without an fsync.
    #[cfg(feature = "test-hooks")]
    pub unsafe_ack_before_sync: bool,
}

impl StoreHooks {
    /// Whether linearizable reads skip the leadership check.
    pub(crate) fn local_reads(&self) -> bool {
        #[cfg(feature = "test-hooks")]
        return self.unsafe_local_reads;
        #[cfg(not(feature = "test-hooks"))]
        false
    }

    /// Whether appends are acknowledged before they are synced.
    pub(crate) fn ack_before_sync(&self) -> bool {
        #[cfg(feature = "test-hooks")]
        return self.unsafe_ack_before_sync;
        #[cfg(not(feature = "test-hooks"))]
        false
    }
}

impl StoreConfig {
    /// Settings for a store whose ranges have one replica each (tests, tools): short Raft
    /// timeouts, the node's default batching and limits, no hooks.
    pub fn single_node(node_id: NodeId) -> Self {
        let raft = openraft::Config {
            cluster_name: "zonekv".into(),
            heartbeat_interval: 50,
            election_timeout_min: 150,
            election_timeout_max: 300,
            enable_pre_vote: Some(true),
            enable_leader_restore: Some(false),
            ..Default::default()
        }
        .validate()
        .expect("valid Raft settings");
        Self {
            node_id,
            raft: Arc::new(raft),
            batch: BatchLimits {
                max_ops: 1024,
                max_bytes: 1 << 20,
                max_in_flight: 2,
                max_queued_bytes: 256 << 20,
            },
            max_append_bytes: 16 << 20,
            apply_wait: Duration::from_secs(1),
            election_timeout_min: Duration::from_millis(150),
            max_sync_stall: Duration::from_secs(2),
            // The node's default (`raft.lease-reads = false`): a quorum round per read.
            lease_read_max_age: None,
            // The node's default (`storage.min-free-bytes`).
            min_free_bytes: 256 << 20,
            limits: Limits::default(),
            hooks: StoreHooks::default(),
        }
    }
}
