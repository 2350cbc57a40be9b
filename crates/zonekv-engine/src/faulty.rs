//! [`FaultyEngine`]: an engine wrapper that injects disk faults, for tests and the nemesis.
//!
//! Only with the `faults` feature. The wrapper forwards every call to the engine inside it
//! unless its [`DiskFaults`] switchboard says otherwise; tests and the nemesis hold a clone of
//! the switchboard and flip faults on and off while the node runs:
//!
//! - [`DiskFaults::fail_syncs`]: every `sync()` (and every `write(.., sync = true)`) fails with
//!   an I/O error (EIO), as an fsync of a dying device does;
//! - [`DiskFaults::stall_syncs`]: every sync first blocks its thread for a while, as a hung
//!   device or a saturated queue does;
//! - [`DiskFaults::fill_disk`]: every write that stores bytes fails with [`Error::NoSpace`]
//!   (deletes still pass: they are how space comes back), and the free space is 0;
//! - [`DiskFaults::report_free_space`]: the free space the engine reports, without failing any
//!   write (a disk that is nearly full: the store's reserve is reached, the disk is not).
//!
//! Damage to the files themselves (bit flips, truncation) is done to a stopped node's files by
//! the tests of `zonekv-engine-rocks`, which know the file layout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Cf, Engine, Error, KeyRange, KvIter, Reader, Result, WriteBatch, WriteOp};

/// The switchboard of a [`FaultyEngine`]: which faults are on. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct DiskFaults {
    inner: Arc<Switches>,
}

#[derive(Debug, Default)]
struct Switches {
    fail_syncs: AtomicBool,
    stall_ms: AtomicU64,
    disk_full: AtomicBool,
    /// The free space to report instead of the inner engine's.
    free_space: Mutex<Option<u64>>,
    /// Syncs that failed because of `fail_syncs`.
    failed_syncs: AtomicU64,
}

impl DiskFaults {
    /// No faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every sync from now on fails with EIO (`on = false` heals the device).
    pub fn fail_syncs(&self, on: bool) {
        self.inner.fail_syncs.store(on, Ordering::SeqCst);
    }

    /// Every sync from now on blocks for `stall` first (`Duration::ZERO` ends the stall for
    /// syncs that start afterwards; one already sleeping sleeps on).
    pub fn stall_syncs(&self, stall: Duration) {
        self.inner.stall_ms.store(stall.as_millis() as u64, Ordering::SeqCst);
    }

    /// The disk is full (`true`) or has space again (`false`).
    pub fn fill_disk(&self, full: bool) {
        self.inner.disk_full.store(full, Ordering::SeqCst);
    }

    /// The engine reports `bytes` free (`None`: what the engine inside reports). Writes are
    /// not affected.
    pub fn report_free_space(&self, bytes: Option<u64>) {
        *self.inner.free_space.lock().unwrap_or_else(|e| e.into_inner()) = bytes;
    }

    /// The free space to report instead of the inner engine's, if any.
    fn free_space(&self) -> Option<u64> {
        if self.inner.disk_full.load(Ordering::SeqCst) {
            return Some(0);
        }
        *self.inner.free_space.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Syncs that failed because of [`DiskFaults::fail_syncs`] so far.
    pub fn failed_syncs(&self) -> u64 {
        self.inner.failed_syncs.load(Ordering::SeqCst)
    }

    /// Runs the sync faults: the stall, then the failure.
    fn before_sync(&self) -> Result<()> {
        let stall = self.inner.stall_ms.load(Ordering::SeqCst);
        if stall > 0 {
            std::thread::sleep(Duration::from_millis(stall));
        }
        if self.inner.fail_syncs.load(Ordering::SeqCst) {
            self.inner.failed_syncs.fetch_add(1, Ordering::SeqCst);
            return Err(Error::Io(std::io::Error::from_raw_os_error(EIO)));
        }
        Ok(())
    }

    fn before_write(&self, batch: &WriteBatch) -> Result<()> {
        let stores_bytes = batch.ops().iter().any(|op| matches!(op, WriteOp::Put { .. }));
        if stores_bytes && self.inner.disk_full.load(Ordering::SeqCst) {
            return Err(Error::NoSpace("no space left on device (injected)".into()));
        }
        Ok(())
    }
}

/// Linux's EIO.
const EIO: i32 = 5;

/// An engine that behaves like `E` except for the faults its [`DiskFaults`] switch on.
#[derive(Debug, Clone)]
pub struct FaultyEngine<E> {
    inner: E,
    faults: DiskFaults,
}

impl<E: Engine> FaultyEngine<E> {
    /// Wraps `inner`; `faults` switches the faults.
    pub fn new(inner: E, faults: DiskFaults) -> Self {
        Self { inner, faults }
    }

    /// The engine inside.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// The switchboard.
    pub fn faults(&self) -> &DiskFaults {
        &self.faults
    }
}

impl<E: Engine> Reader for FaultyEngine<E> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(cf, key)
    }

    fn scan(&self, cf: Cf, range: &KeyRange, reverse: bool) -> Result<KvIter<'_>> {
        self.inner.scan(cf, range, reverse)
    }
}

impl<E: Engine> Engine for FaultyEngine<E> {
    type Snapshot<'a> = E::Snapshot<'a>;

    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        self.faults.before_write(batch)?;
        if !sync {
            return self.inner.write(batch, false);
        }
        // The batch reaches the engine like any write; only making it durable fails.
        self.inner.write(batch, false)?;
        self.faults.before_sync()?;
        self.inner.sync()
    }

    fn sync(&self) -> Result<()> {
        self.faults.before_sync()?;
        self.inner.sync()
    }

    fn snapshot(&self) -> Self::Snapshot<'_> {
        self.inner.snapshot()
    }

    fn approximate_size(&self, cf: Cf, range: &KeyRange) -> Result<u64> {
        self.inner.approximate_size(cf, range)
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn free_space(&self) -> Result<Option<u64>> {
        match self.faults.free_space() {
            Some(bytes) => Ok(Some(bytes)),
            None => self.inner.free_space(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::MemEngine;

    fn engine() -> FaultyEngine<MemEngine> {
        FaultyEngine::new(MemEngine::new(), DiskFaults::new())
    }

    fn put(key: &[u8]) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put(Cf::Data, key.to_vec(), b"v".to_vec());
        b
    }

    #[test]
    fn without_faults_it_is_the_engine_inside() {
        let e = engine();
        e.write(&put(b"a"), true).unwrap();
        e.sync().unwrap();
        assert_eq!(e.get(Cf::Data, b"a").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(e.inner().get(Cf::Data, b"a").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn failed_syncs_are_eio_until_healed() {
        let e = engine();
        e.faults().fail_syncs(true);
        let err = e.sync().unwrap_err();
        assert!(matches!(&err, Error::Io(io) if io.raw_os_error() == Some(EIO)), "{err:?}");
        // A synced write reaches the engine but reports the failed sync.
        assert!(e.write(&put(b"a"), true).is_err());
        assert!(e.write(&put(b"b"), false).is_ok(), "unsynced writes do not sync");
        assert_eq!(e.faults().failed_syncs(), 2);
        e.faults().fail_syncs(false);
        e.sync().unwrap();
    }

    #[test]
    fn stalled_syncs_block_for_the_stall() {
        let e = engine();
        e.faults().stall_syncs(Duration::from_millis(200));
        let t = Instant::now();
        e.sync().unwrap();
        assert!(t.elapsed() >= Duration::from_millis(200), "{:?}", t.elapsed());
        e.faults().stall_syncs(Duration::ZERO);
        let t = Instant::now();
        e.sync().unwrap();
        assert!(t.elapsed() < Duration::from_millis(200), "{:?}", t.elapsed());
    }

    #[test]
    fn a_full_disk_refuses_puts_but_not_deletes_and_nothing_is_written() {
        let e = engine();
        e.write(&put(b"a"), false).unwrap();
        e.faults().fill_disk(true);
        let err = e.write(&put(b"b"), false).unwrap_err();
        assert!(matches!(err, Error::NoSpace(_)), "{err:?}");
        assert_eq!(e.free_space().unwrap(), Some(0));
        assert_eq!(e.get(Cf::Data, b"b").unwrap(), None, "a refused batch wrote nothing");
        let mut del = WriteBatch::new();
        del.delete(Cf::Data, b"a".to_vec());
        e.write(&del, false).unwrap();
        e.faults().fill_disk(false);
        e.write(&put(b"b"), false).unwrap();
    }

    #[test]
    fn a_reported_free_space_changes_no_write() {
        let e = engine();
        assert_eq!(e.free_space().unwrap(), None, "the memory engine cannot tell");
        e.faults().report_free_space(Some(0));
        assert_eq!(e.free_space().unwrap(), Some(0));
        e.write(&put(b"a"), true).unwrap();
        e.faults().report_free_space(Some(u64::MAX));
        assert_eq!(e.free_space().unwrap(), Some(u64::MAX));
        e.faults().report_free_space(None);
        assert_eq!(e.free_space().unwrap(), None);
    }
}
