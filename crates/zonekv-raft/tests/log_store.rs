//! Log store behaviour beyond openraft's suite: checksums, group isolation, durability order.

use bytes::Bytes;
use openraft::EntryPayload;
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
use zonekv_engine::{Cf, Engine, KeyRange, MemEngine, Reader, WriteBatch};
use zonekv_raft::{Command, Entry, LeaderId, LogId, LogStore, LogSyncer, Op, RangeId, ReplicaId, keys};

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(LeaderId { term, node_id: ReplicaId::new(1) }, index)
}

fn entry(term: u64, index: u64) -> Entry {
    let op = Op::Put { key: Bytes::from(format!("k{index}")), value: Bytes::from_static(b"v") };
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(Command::single(op)) }
}

async fn append<E: Engine>(log: &mut LogStore<E>, entries: Vec<Entry>) {
    log.blocking_append(entries).await.expect("append made durable");
}

#[tokio::test]
async fn a_corrupted_log_entry_is_an_error_not_a_shorter_log() {
    let engine = MemEngine::new();
    let mut log = LogStore::new(engine.clone(), RangeId::new(1), LogSyncer::start(engine.clone()));
    append(&mut log, (1..=5).map(|i| entry(1, i)).collect()).await;

    // Flip one bit in the stored bytes of entry 3.
    let key = keys::log_key(RangeId::new(1), 3);
    let mut stored = engine.get(Cf::RaftLog, &key).unwrap().unwrap();
    let last = stored.len() - 1;
    stored[last] ^= 0x01;
    let mut b = WriteBatch::new();
    b.put(Cf::RaftLog, key, stored);
    engine.write(&b, false).unwrap();

    // What the process holds in memory is intact; what a restarted process reads from disk is
    // not: reopen the log over the same engine.
    let mut log = LogStore::new(engine.clone(), RangeId::new(1), LogSyncer::start(engine.clone()));
    let mut reader = log.get_log_reader().await;
    let err = reader.try_get_log_entries(1..6).await.expect_err("corrupt entry must not be served");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("log entry 3") && err.to_string().contains("CRC32"), "{err}");
    // Entries before the damage are still readable on their own; the damaged one never is.
    assert_eq!(reader.try_get_log_entries(1..3).await.unwrap().len(), 2);
    assert!(reader.try_get_log_entries(3..4).await.is_err());
    // The log state (which reads the last entry) is unaffected by damage in the middle...
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 5)));
    // ...but damage to the last entry makes the log state itself fail.
    let key = keys::log_key(RangeId::new(1), 5);
    let mut b = WriteBatch::new();
    b.put(Cf::RaftLog, key, b"\0\0\0\0garbage".to_vec());
    engine.write(&b, false).unwrap();
    assert!(log.get_log_state().await.is_err());
}

#[tokio::test]
async fn a_hole_in_the_log_is_reported() {
    let engine = MemEngine::new();
    let mut log = LogStore::new(engine.clone(), RangeId::new(1), LogSyncer::start(engine.clone()));
    append(&mut log, (1..=5).map(|i| entry(1, i)).collect()).await;
    let mut b = WriteBatch::new();
    b.delete(Cf::RaftLog, keys::log_key(RangeId::new(1), 3));
    engine.write(&b, false).unwrap();
    let mut reopened = LogStore::new(engine.clone(), RangeId::new(1), LogSyncer::start(engine.clone()));
    let err = reopened.try_get_log_entries(1..6).await.unwrap_err();
    assert!(err.to_string().contains("hole"), "{err}");
}

#[tokio::test]
async fn groups_sharing_an_engine_do_not_see_each_other() {
    let engine = MemEngine::new();
    let syncer = LogSyncer::start(engine.clone());
    let mut a = LogStore::new(engine.clone(), RangeId::new(1), syncer.clone());
    let mut b = LogStore::new(engine.clone(), RangeId::new(2), syncer.clone());
    let mut max = LogStore::new(engine.clone(), RangeId::new(u64::MAX), syncer.clone());
    append(&mut a, (1..=10).map(|i| entry(1, i)).collect()).await;
    append(&mut b, (1..=4).map(|i| entry(2, i)).collect()).await;
    append(&mut max, (1..=3).map(|i| entry(3, i)).collect()).await;

    a.truncate_after(Some(log_id(1, 6))).await.unwrap();
    b.purge(log_id(2, 2)).await.unwrap();
    max.truncate_after(None).await.unwrap();

    assert_eq!(a.try_get_log_entries(..).await.unwrap().len(), 6);
    let b_entries = b.try_get_log_entries(..).await.unwrap();
    assert_eq!(b_entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![3, 4]);
    assert!(max.try_get_log_entries(..).await.unwrap().is_empty());
    assert_eq!(b.get_log_state().await.unwrap().last_purged_log_id, Some(log_id(2, 2)));
    assert_eq!(a.get_log_state().await.unwrap().last_purged_log_id, None);

    let vote = openraft::Vote::new_committed(9, ReplicaId::new(2));
    b.save_vote(&vote).await.unwrap();
    assert_eq!(b.read_vote().await.unwrap(), Some(vote));
    assert_eq!(a.read_vote().await.unwrap(), None);
    // Every key in the log column family belongs to one of the three groups.
    let n = engine.scan(Cf::RaftLog, &KeyRange::all(), false).unwrap().count();
    assert_eq!(n, 6 + 2);
    assert!(syncer.stats().syncs.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}

fn big_entry(term: u64, index: u64, value_bytes: usize) -> Entry {
    let op = Op::Put { key: Bytes::from(format!("k{index}")), value: Bytes::from(vec![7u8; value_bytes]) };
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(Command::single(op)) }
}

#[tokio::test]
async fn replication_reads_stop_at_the_byte_cap_but_never_return_nothing() {
    let engine = MemEngine::new();
    let one = zonekv_raft::codec::entry_wire_bytes(&big_entry(1, 1, 100_000));
    // Room for two entries and a half.
    let cap = 2 * one + one / 2;
    let mut log = LogStore::new(engine.clone(), RangeId::new(1), LogSyncer::start(engine.clone()))
        .with_max_append_bytes(cap);
    append(&mut log, (1..=10).map(|i| big_entry(1, i, 100_000)).collect()).await;
    let mut reader = log.get_log_reader().await;
    let got = reader.limited_get_log_entries(1, 11).await.unwrap();
    assert_eq!(got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![1, 2]);
    let got = reader.limited_get_log_entries(9, 11).await.unwrap();
    assert_eq!(got.len(), 2, "what fits is returned whole");
    // Unlimited reads are not cut.
    assert_eq!(reader.try_get_log_entries(1..11).await.unwrap().len(), 10);

    // An entry larger than the cap goes alone.
    let mut tight = LogStore::new(engine.clone(), RangeId::new(1), LogSyncer::start(engine.clone()))
        .with_max_append_bytes(one / 3);
    let mut reader = tight.get_log_reader().await;
    let got = reader.limited_get_log_entries(4, 11).await.unwrap();
    assert_eq!(got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![4]);
    assert_eq!(tight.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 10)));
}

#[tokio::test]
async fn a_log_write_that_fails_stops_every_group_of_the_engine() {
    use zonekv_engine::{DiskFaults, FaultyEngine};
    let faults = DiskFaults::new();
    let engine = FaultyEngine::new(MemEngine::new(), faults.clone());
    let syncer = LogSyncer::start(engine.clone());
    let mut full = LogStore::new(engine.clone(), RangeId::new(1), syncer.clone());
    let mut other = LogStore::new(engine.clone(), RangeId::new(2), syncer.clone());
    append(&mut full, vec![entry(1, 1)]).await;

    faults.fill_disk(true);
    let err = full.blocking_append(vec![entry(1, 2)]).await.expect_err("the disk is full");
    assert!(err.to_string().contains("no space") || err.to_string().contains("No space"), "{err}");
    let reason = syncer.failure().expect("a failed log write latches the syncer");
    assert!(reason.contains("range 1") && reason.contains("restart"), "{reason}");

    // Space comes back, but nothing is reported durable any more: the node must restart.
    faults.fill_disk(false);
    assert!(other.blocking_append(vec![entry(1, 1)]).await.is_err(), "another group stops too");
    assert!(full.save_vote(&openraft::Vote::new(2, ReplicaId::new(1))).await.is_err());
    // What was written before the fault is there, the refused append is not.
    let mut reader = full.get_log_reader().await;
    assert_eq!(reader.try_get_log_entries(1..3).await.unwrap().len(), 1);
}
