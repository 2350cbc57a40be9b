//! The synced mark: how far the write-ahead log was known durable, kept outside the WAL, so a
//! restart can tell a WAL that lost synced writes from one that lost only a torn, unsynced
//! tail (docs/disk-faults.md, "Lost acknowledged entries").
//!
//! RocksDB replays the WAL up to its first damaged record and silently drops the rest
//! (`PointInTime` recovery). After a crash that is right: only writes never synced can be
//! torn. But a bit flip or a truncation *inside* the synced part drops writes that were
//! acknowledged, and the replica would come back having forgotten log entries and votes it
//! promised to keep. So every successful [`crate::RocksEngine`] sync records the sequence
//! number it covered in the file `ZONEKV-SYNCED` next to the database, and the open compares:
//! a database that replays to a lower sequence number lost synced writes and is refused.
//!
//! Layout: two 16-byte slots, written alternately: `seq: u64 LE ‖ 0: u32 ‖ crc32 of the first
//! 12 bytes: u32 LE`. The intact slot with the higher sequence number wins (the mark only
//! grows), so a torn write of one slot leaves the other. The file is written after the
//! WAL's fsync and never synced itself: after a power cut it may be older than the WAL (a
//! lower bound, still correct), never newer.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use zonekv_engine::{Error, Result};

/// The file's name inside the database directory.
pub const FILE_NAME: &str = "ZONEKV-SYNCED";

const SLOT: usize = 16;

/// The synced mark of one open database.
pub(crate) struct SyncedMark {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    file: File,
    /// The slot the next record goes to.
    next_slot: u64,
    seq: u64,
    /// A failed write was reported once (the mark is best effort: it only ever lags).
    warned: bool,
}

impl SyncedMark {
    /// Opens (creating if missing) the mark in `dir`; returns it and the sequence number it
    /// records (0 for a new file).
    pub(crate) fn open(dir: &Path) -> Result<(Self, u64)> {
        let path = dir.join(FILE_NAME);
        let io = |e: std::io::Error| Error::Open { path: path.display().to_string(), reason: e.to_string() };
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        let mut buf = [0u8; 2 * SLOT];
        let len = file.read_at(&mut buf, 0).map_err(io)?;
        let slots = [0, 1]
            .map(|i| buf.get(i * SLOT..(i + 1) * SLOT).filter(|_| (i + 1) * SLOT <= len).and_then(decode));
        let seq = slots.iter().flatten().copied().max().unwrap_or(0);
        // Overwrite the older slot first.
        let next_slot = if slots[0] == Some(seq) { 1 } else { 0 };
        let state = State { file, next_slot, seq, warned: false };
        Ok((Self { path, state: Mutex::new(state) }, seq))
    }

    /// Records that every write up to sequence number `seq` is durable. Call only after the
    /// sync that made it so has returned.
    pub(crate) fn record(&self, seq: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if seq <= s.seq {
            return;
        }
        match s.file.write_at(&encode(seq), s.next_slot * SLOT as u64) {
            Ok(_) => {
                s.next_slot = 1 - s.next_slot;
                s.seq = seq;
            }
            Err(e) if !s.warned => {
                s.warned = true;
                tracing::warn!(path = %self.path.display(), error = %e,
                    "cannot update the synced mark; a restart will check the WAL against an older one");
            }
            Err(_) => {}
        }
    }
}

fn encode(seq: u64) -> [u8; SLOT] {
    let mut b = [0u8; SLOT];
    b[..8].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&b[..12]);
    b[12..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The sequence number of a slot whose checksum matches.
fn decode(b: &[u8]) -> Option<u64> {
    let crc = u32::from_le_bytes(b[12..16].try_into().ok()?);
    if crc32fast::hash(&b[..12]) != crc {
        return None;
    }
    Some(u64::from_le_bytes(b[..8].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_survives_a_reopen_and_only_grows() {
        let dir = tempfile::tempdir().unwrap();
        let (mark, seq) = SyncedMark::open(dir.path()).unwrap();
        assert_eq!(seq, 0);
        mark.record(10);
        mark.record(7);
        mark.record(12);
        drop(mark);
        assert_eq!(SyncedMark::open(dir.path()).unwrap().1, 12);
    }

    #[test]
    fn a_torn_slot_falls_back_to_the_other_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mark, _) = SyncedMark::open(dir.path()).unwrap();
        mark.record(5); // slot 0
        mark.record(9); // slot 1
        drop(mark);
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT + 3] ^= 0x40; // damage slot 1
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(SyncedMark::open(dir.path()).unwrap().1, 5, "the older intact slot is the mark");
    }
}
