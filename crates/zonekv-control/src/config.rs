//! The control plane's settings: the `[split]` and `[placement]` tables of the node's
//! configuration file, and what the node tells it at start.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zonekv_raft::NodeId;

/// The placement driver (docs/placement.md, "Driver"): on the node that leads the meta range,
/// it keeps every range's replicas where the policy wants them — repairing ranges with
/// replicas on dead or decommissioning nodes, adding or removing replicas, moving leaders to
/// their preferred places and evening out replica counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct PlacementConfig {
    /// Run the driver when this node leads the meta range. Default: true.
    pub driver: bool,
    /// How often the driver looks at every range, in milliseconds. Default: 1000.
    pub interval_ms: u64,
    /// A node silent this long is dead: its replicas are replaced on other nodes. Must exceed
    /// `raft.node-liveness-timeout-ms`. Milliseconds. Default: 300000 (5 minutes).
    pub dead_after_ms: u64,
    /// A range whose replicas moved is not moved again to even out counts for this long (no
    /// flapping); repairs do not wait. Milliseconds. Default: 300000 (5 minutes).
    pub cooldown_ms: u64,
    /// Most replica copies (snapshots) a node sends, and likewise receives, for the driver at
    /// once. Default: 2.
    pub max_snapshots: usize,
    /// The policy of every range: `voters` (default 3), `non-voters` (0), `constraints` and
    /// `voter-constraints` (`+key=value[:count]`, `-key=value`), `lease-preferences` (lists of
    /// `+key=value`), `survival` (`zone`, the default, or `region`). Default: 3 voters in
    /// distinct zones.
    pub policy: zonekv_placement::scenario::PolicySpec,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            driver: true,
            interval_ms: 1000,
            dead_after_ms: 300_000,
            cooldown_ms: 300_000,
            max_snapshots: 2,
            policy: zonekv_placement::scenario::PolicySpec::default(),
        }
    }
}

/// Automatic range splits (docs/multiraft.md, "Split"). The leader of a range checks it
/// periodically and splits it in the middle once it passes a threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct SplitConfig {
    /// Split a range once its data passes this size, in bytes, as RocksDB estimates it from
    /// flushed files (0: never by size). Default: 64 MiB (67108864).
    pub range_max_bytes: u64,
    /// Split a range once it holds more keys than this (0: never by count). Counting keys
    /// means scanning them, so this is for tests and small deployments. Default: 0.
    pub range_max_keys: u64,
    /// How often the leader of a range that took writes checks it, in milliseconds.
    /// Default: 1000.
    pub check_interval_ms: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self { range_max_bytes: 64 << 20, range_max_keys: 0, check_interval_ms: 1000 }
    }
}

/// What the node tells its control plane at start.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// This node.
    pub node_id: NodeId,
    /// The address other nodes reach it at.
    pub addr: String,
    /// Its locality (`region=…,zone=…`), validated.
    pub locality: String,
    /// Its data directory (the disk whose use pings report).
    pub data_dir: PathBuf,
    /// Automatic splits.
    pub split: SplitConfig,
    /// The placement driver.
    pub placement: PlacementConfig,
    /// How often this node pings every other node, and looks at its replicas for quiescence.
    pub liveness_interval: Duration,
    /// A node whose pings stop for this long is taken for dead.
    pub liveness_timeout: Duration,
    /// Let idle ranges quiesce (stop their Raft timers).
    pub quiesce: bool,
    /// The election timeout's bounds (quiescence paces wake-ups by them).
    pub election_timeout: (Duration, Duration),
    /// How long a snapshot may take to send (a placement step that copies a replica waits
    /// that long and more).
    pub snapshot_timeout: Duration,
}
