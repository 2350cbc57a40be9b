//! The RocksDB engine: the shared conformance suite, reopening, and damaged files.

use tempfile::TempDir;
use zonekv_engine::{Cf, Engine, KeyRange, Reader, WriteBatch};
use zonekv_engine_rocks::{RocksEngine, RocksOptions};

fn open(dir: &TempDir) -> RocksEngine {
    RocksEngine::open(dir.path(), &RocksOptions::default()).expect("open")
}

fn fresh() -> (RocksEngine, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    (open(&dir), dir)
}

zonekv_engine::engine_conformance_tests!(fresh);

#[test]
fn synced_writes_survive_reopen_in_every_column_family() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = open(&dir);
        let mut b = WriteBatch::new();
        for cf in Cf::ALL {
            for i in 0..100u32 {
                b.put(cf, i.to_be_bytes(), cf.name().as_bytes());
            }
        }
        b.delete(Cf::Data, 7u32.to_be_bytes());
        e.write(&b, true).unwrap();
    }
    let e = open(&dir);
    for cf in Cf::ALL {
        let n = e.scan(cf, &KeyRange::all(), false).unwrap().count();
        assert_eq!(n, if cf == Cf::Data { 99 } else { 100 }, "{}", cf.name());
    }
    assert_eq!(e.get(Cf::RaftLog, &3u32.to_be_bytes()).unwrap().unwrap(), b"raft-log");
}

#[test]
fn free_space_is_what_the_file_system_reports() {
    let (e, dir) = fresh();
    let free = e.free_space().unwrap().expect("a disk engine knows its free space");
    let s = rustix::fs::statvfs(dir.path()).unwrap();
    let df = s.f_bavail * s.f_frsize;
    // Other processes write meanwhile: equal within 1 GiB.
    assert!(free.abs_diff(df) < 1 << 30, "engine says {free}, statvfs says {df}");
    assert!(free > 0);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let (_e, dir) = fresh();
    let err = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap_err();
    assert!(err.to_string().contains("cannot open storage"), "{err}");
}

#[test]
fn a_damaged_current_file_fails_the_open_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = open(&dir);
        let mut b = WriteBatch::new();
        b.put(Cf::Data, &b"k"[..], &b"v"[..]);
        e.write(&b, true).unwrap();
    }
    std::fs::write(dir.path().join("CURRENT"), b"MANIFEST-999999\n").unwrap();
    let err = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap_err();
    assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
}

/// Flips bytes in the middle of every SST file. Reading the data back must then either fail
/// (open or read reports corruption) or return exactly what was written: never a wrong value.
#[test]
fn damaged_table_files_are_reported_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let value = |i: u32| format!("value-{i:06}-").repeat(20).into_bytes();
    {
        let e = open(&dir);
        let mut b = WriteBatch::new();
        for i in 0..5000u32 {
            b.put(Cf::Data, format!("key-{i:06}").into_bytes(), value(i));
        }
        e.write(&b, true).unwrap();
        e.flush().unwrap();
    }
    let mut damaged = 0;
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_some_and(|x| x == "sst") {
            let mut bytes = std::fs::read(&path).unwrap();
            let mid = bytes.len() / 3;
            for b in &mut bytes[mid..mid + 16] {
                *b ^= 0x5a;
            }
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "flush produced no table file");
    let e = match RocksEngine::open(dir.path(), &RocksOptions::default()) {
        Err(err) => {
            assert!(err.is_corruption() || err.to_string().contains("orrupt"), "{err}");
            return;
        }
        Ok(e) => e,
    };
    let mut saw_error = false;
    for pair in e.scan(Cf::Data, &KeyRange::all(), false).unwrap() {
        match pair {
            Ok((k, v)) => {
                let i: u32 = std::str::from_utf8(&k[4..]).unwrap().parse().unwrap();
                assert_eq!(v, value(i), "a damaged file served a wrong value");
            }
            Err(err) => {
                assert!(err.is_corruption(), "expected a corruption error, got {err}");
                saw_error = true;
                break;
            }
        }
    }
    assert!(saw_error, "16 flipped bytes in a data block went unnoticed");
}

/// Total size of the write-ahead log files in the database directory.
fn wal_bytes(dir: &TempDir) -> u64 {
    std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn a_rarely_written_column_family_does_not_pin_the_write_ahead_log() {
    let dir = TempDir::new().unwrap();
    let opts =
        RocksOptions { write_buffer_bytes: 1 << 20, max_wal_bytes: 4 << 20, ..RocksOptions::default() };
    let engine = RocksEngine::open(dir.path(), &opts).unwrap();
    // One small write to the metadata column family, then 32 MiB to the data one: without a
    // WAL limit the metadata memtable never fills, never flushes, and keeps every log file.
    let mut b = WriteBatch::new();
    b.put(Cf::RaftMeta, b"vote".to_vec(), b"1".to_vec());
    engine.write(&b, true).unwrap();
    let value = vec![7u8; 4096];
    for i in 0..8192u32 {
        let mut b = WriteBatch::new();
        b.put(Cf::Data, i.to_be_bytes().to_vec(), value.clone());
        engine.write(&b, false).unwrap();
    }
    let wal = wal_bytes(&dir);
    assert!(wal < 12 << 20, "{wal} bytes of WAL kept after 32 MiB of writes with a 4 MiB limit");
    drop(engine);
    let engine = open(&dir);
    assert_eq!(engine.get(Cf::RaftMeta, b"vote").unwrap(), Some(b"1".to_vec()));
    assert_eq!(engine.get(Cf::Data, &8191u32.to_be_bytes()).unwrap(), Some(value));
}

/// Truncation of a WAL file that is no longer the live one is refused at open (RocksDB's
/// point-in-time recovery sees the hole before later files). The live file's tail is a known
/// gap: cut there, it looks like a torn write and is dropped (docs/testing.md).
#[test]
fn a_truncated_older_write_ahead_log_fails_the_open() {
    let dir = TempDir::new().unwrap();
    // A huge WAL limit: the metadata column family keeps the old WAL files alive.
    let opts =
        RocksOptions { write_buffer_bytes: 1 << 20, max_wal_bytes: 1 << 40, ..RocksOptions::default() };
    let engine = RocksEngine::open(dir.path(), &opts).unwrap();
    let mut b = WriteBatch::new();
    b.put(Cf::RaftMeta, b"vote".to_vec(), b"acknowledged".to_vec());
    engine.write(&b, true).unwrap();
    for i in 0..2048u32 {
        let mut b = WriteBatch::new();
        b.put(Cf::Data, i.to_be_bytes().to_vec(), vec![1u8; 4096]);
        engine.write(&b, true).unwrap();
    }
    drop(engine);
    let wals = wal_files(&dir);
    assert!(wals.len() >= 2, "the writes should have rotated the WAL: {wals:?}");
    // Cut the oldest WAL, which holds the synced vote, by a few hundred bytes.
    let oldest = std::fs::OpenOptions::new().write(true).open(&wals[0]).unwrap();
    let len = oldest.metadata().unwrap().len();
    oldest.set_len(len.saturating_sub(300)).unwrap();
    drop(oldest);
    let err = RocksEngine::open(dir.path(), &opts).expect_err("opened on a truncated synced WAL");
    assert!(matches!(err, zonekv_engine::Error::Corruption(_) | zonekv_engine::Error::Open { .. }), "{err}");
}

/// The write-ahead log files in `dir`, oldest first.
fn wal_files(dir: &TempDir) -> Vec<std::path::PathBuf> {
    let mut wals: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    wals.sort();
    wals
}

/// Writes `n` keys to the data column family, each made durable the way Raft appends are (an
/// unsynced write, then `sync`), closes the engine and returns the path of the live WAL file.
fn synced_keys_then_close(dir: &TempDir, n: u32) -> std::path::PathBuf {
    let engine = open(dir);
    for i in 0..n {
        let mut b = WriteBatch::new();
        b.put(Cf::Data, i.to_be_bytes().to_vec(), vec![7u8; 100]);
        engine.write(&b, false).unwrap();
        engine.sync().unwrap();
    }
    drop(engine);
    wal_files(dir).pop().expect("a live WAL file")
}

/// Asserts the open fails as lost synced writes; then, as the negative control, that without
/// the synced mark the same damaged directory opens and silently lacks key `n - 1` (the damage
/// is real and only the mark catches it).
fn assert_lost_synced_writes_are_refused(dir: &TempDir, n: u32) {
    let err = RocksEngine::open(dir.path(), &RocksOptions::default())
        .expect_err("opened a WAL that lost synced writes");
    assert!(
        matches!(&err, zonekv_engine::Error::Corruption(m) if m.contains("lost writes that were synced")),
        "{err}"
    );
    std::fs::remove_file(dir.path().join(zonekv_engine_rocks::SYNCED_MARK_FILE)).unwrap();
    let engine = open(dir);
    assert_eq!(
        engine.get(Cf::Data, &(n - 1).to_be_bytes()).unwrap(),
        None,
        "without the mark the damage should drop synced writes silently (else this test proves nothing)"
    );
}

/// A cut inside the synced part of the live WAL (docs/disk-faults.md): RocksDB's point-in-time
/// recovery would replay up to the cut and drop the rest silently; the synced mark refuses it.
#[test]
fn a_cut_in_the_live_write_ahead_log_is_refused_as_lost_synced_writes() {
    let dir = TempDir::new().unwrap();
    let wal = synced_keys_then_close(&dir, 200);
    let file = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len / 2).unwrap();
    drop(file);
    assert_lost_synced_writes_are_refused(&dir, 200);
}

/// A bit flip inside the synced part of the live WAL: replay stops at the damaged record.
#[test]
fn a_bit_flip_in_the_live_write_ahead_log_is_refused_as_lost_synced_writes() {
    let dir = TempDir::new().unwrap();
    let wal = synced_keys_then_close(&dir, 200);
    let mut bytes = std::fs::read(&wal).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&wal, &bytes).unwrap();
    assert_lost_synced_writes_are_refused(&dir, 200);
}

/// What a crash may legitimately leave — a torn record after the last sync — is not damage:
/// the open succeeds with every synced write.
#[test]
fn a_torn_tail_after_the_last_sync_opens_with_every_synced_write() {
    let dir = TempDir::new().unwrap();
    let wal = synced_keys_then_close(&dir, 200);
    let mut file = std::fs::OpenOptions::new().append(true).open(&wal).unwrap();
    std::io::Write::write_all(&mut file, &[0x5a; 21]).unwrap();
    drop(file);
    let engine = open(&dir);
    for i in 0..200u32 {
        assert!(engine.get(Cf::Data, &i.to_be_bytes()).unwrap().is_some(), "synced key {i} lost");
    }
}
