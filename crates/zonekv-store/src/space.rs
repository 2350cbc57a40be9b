//! The disk-space reserve: client writes stop while the engine's disk has less free space than
//! `storage.min-free-bytes`, so the space left is Raft's own (appends, applies, compactions,
//! snapshots) and a full disk never fails a log write half-way (docs/disk-faults.md, "Full
//! disk").
//!
//! A refused write gets [`Error::DiskFull`] (`RESOURCE_EXHAUSTED`, nothing proposed); reads
//! and deletes go on, and writes resume by themselves once space returns. Free space is asked
//! of the engine at most every [`REFRESH`], so the check costs a lock and a clock read.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use zonekv_engine::Engine;
use zonekv_raft::NodeId;

use crate::{Error, Result};

/// How long a free-space reading is trusted.
pub(crate) const REFRESH: Duration = Duration::from_millis(100);

/// The reserve of one store, and its last reading of the engine's free space.
pub(crate) struct SpaceGuard {
    node: NodeId,
    /// Bytes that must stay free; 0 turns the check off.
    min_free: u64,
    last: Mutex<Option<Reading>>,
}

#[derive(Clone, Copy)]
struct Reading {
    at: Instant,
    /// `None`: the engine cannot tell (in memory, or the query failed).
    free: Option<u64>,
}

impl SpaceGuard {
    pub(crate) fn new(node: NodeId, min_free: u64) -> Self {
        Self { node, min_free, last: Mutex::new(None) }
    }

    /// `Ok` if a client write may take space now, else [`Error::DiskFull`] naming the node,
    /// the free bytes and the setting.
    pub(crate) fn check_write<E: Engine>(&self, engine: &E) -> Result<()> {
        if self.min_free == 0 {
            return Ok(());
        }
        match self.free(engine) {
            Some(free) if free < self.min_free => Err(Error::DiskFull(format!(
                "node {}'s disk has {free} bytes free, below its reserve of {} bytes \
                 (storage.min-free-bytes): writes are refused until space is freed; reads and \
                 deletes still work; nothing was written",
                self.node, self.min_free
            ))),
            _ => Ok(()),
        }
    }

    /// The free space, read again if the last reading is older than [`REFRESH`]. Logs each
    /// crossing of the reserve once.
    fn free<E: Engine>(&self, engine: &E) -> Option<u64> {
        let mut last = self.last.lock().expect("space reading lock");
        let now = Instant::now();
        if let Some(r) = *last
            && now.duration_since(r.at) < REFRESH
        {
            return r.free;
        }
        let free = engine.free_space().unwrap_or_else(|e| {
            tracing::warn!(node = %self.node, "cannot read the disk's free space, not enforcing the reserve: {e}");
            None
        });
        let was_low = last.and_then(|r| r.free).is_some_and(|f| f < self.min_free);
        // Each crossing of the reserve is logged once; a failed reading is no crossing.
        match free {
            Some(f) if f < self.min_free && !was_low => tracing::error!(
                node = %self.node,
                "disk almost full: {f} bytes free, reserve {} (storage.min-free-bytes); client writes are refused",
                self.min_free
            ),
            Some(f) if f >= self.min_free && was_low => {
                tracing::info!(node = %self.node, "disk space is back above the reserve; writes resume")
            }
            _ => {}
        }
        *last = Some(Reading { at: now, free });
        free
    }
}

#[cfg(test)]
mod tests {
    use zonekv_engine::{DiskFaults, FaultyEngine, MemEngine};

    use super::*;

    #[test]
    fn writes_are_refused_below_the_reserve_and_resume_when_space_returns() {
        let faults = DiskFaults::new();
        let engine = FaultyEngine::new(MemEngine::new(), faults.clone());
        let guard = SpaceGuard::new(NodeId::new(3), 1000);
        guard.check_write(&engine).expect("an engine that cannot tell is not refused");

        faults.report_free_space(Some(999));
        std::thread::sleep(REFRESH);
        let err = guard.check_write(&engine).unwrap_err();
        assert!(matches!(err, Error::DiskFull(_)) && err.not_applied());
        let msg = err.to_string();
        assert!(msg.contains("node 3") && msg.contains("999 bytes free"), "{msg}");
        assert!(msg.contains("storage.min-free-bytes"), "{msg}");

        faults.report_free_space(Some(1000));
        std::thread::sleep(REFRESH);
        guard.check_write(&engine).expect("the reserve is met again");
    }

    #[test]
    fn a_reserve_of_zero_never_refuses() {
        let faults = DiskFaults::new();
        let engine = FaultyEngine::new(MemEngine::new(), faults.clone());
        faults.fill_disk(true);
        SpaceGuard::new(NodeId::new(1), 0).check_write(&engine).unwrap();
    }
}
