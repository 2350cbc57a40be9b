//! The meta range's system records: the directory follows the meta range's own splits and
//! membership, takes other ranges' descriptors only when newer, answers lookups; the id
//! allocator never hands out an id twice; both are refused outside the meta range.

use bytes::Bytes;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, Membership};
use zonekv_engine::MemEngine;
use zonekv_raft::meta::allocator::FIRST_ALLOCATED_ID;
use zonekv_raft::meta::{directory, placement};
use zonekv_raft::{
    Command, Entry, LeaderId, LogId, NodeInfo, Op, OpResult, RangeDescriptor, RangeEpoch, RangeId, ReplicaId,
    Split, StateMachine,
};

const META: RangeId = RangeId::new(1);

fn log_id(index: u64) -> LogId {
    LogId::new(LeaderId { term: 1, node_id: ReplicaId::new(1) }, index)
}

fn normal(index: u64, ops: Vec<Op>) -> Entry {
    Entry { log_id: log_id(index), payload: EntryPayload::Normal(Command { ops }) }
}

fn members(index: u64, ids: &[u64]) -> Entry {
    let nodes: std::collections::BTreeMap<ReplicaId, NodeInfo> =
        ids.iter().map(|&i| (ReplicaId::new(i), NodeInfo::new(format!("n{i}")))).collect();
    let m = Membership::new(vec![ids.iter().copied().map(ReplicaId::new).collect()], nodes).unwrap();
    Entry { log_id: log_id(index), payload: EntryPayload::Membership(m) }
}

fn results(sm: &mut StateMachine<MemEngine>, entries: Vec<Entry>) -> Vec<OpResult> {
    sm.apply_entries(&entries).unwrap().into_iter().flat_map(|r| r.results).collect()
}

fn split_at(at: &'static str, epoch: RangeEpoch, new_range_id: u64, ids: &[u64]) -> Op {
    Op::Split(Split {
        split_key: Bytes::from_static(at.as_bytes()),
        expected_epoch: epoch,
        new_range_id: RangeId::new(new_range_id),
        new_replica_ids: ids.iter().copied().map(ReplicaId::new).collect(),
    })
}

#[tokio::test]
async fn the_directory_follows_the_meta_range_and_answers_lookups() {
    let engine = MemEngine::new();
    let mut meta = StateMachine::open(engine.clone(), RangeId::new(1)).unwrap();
    results(&mut meta, vec![members(1, &[1, 2, 3])]);
    let entries = directory::entries(&engine, META).unwrap();
    assert_eq!(entries, vec![meta.descriptor().clone()], "the first membership records range 1");

    let epoch = meta.descriptor().epoch;
    let r = results(&mut meta, vec![normal(2, vec![split_at("m", epoch, 2, &[11, 12, 13])])]);
    let OpResult::Split { left, right } = &r[0] else { panic!("{:?}", r[0]) };
    assert_eq!(directory::entries(&engine, META).unwrap(), vec![(**left).clone(), (**right).clone()]);
    assert_eq!(directory::lookup(&engine, META, b"").unwrap().map(|d| d.range_id.get()), Some(1));
    assert_eq!(directory::lookup(&engine, META, b"l\xff").unwrap().map(|d| d.range_id.get()), Some(1));
    assert_eq!(directory::lookup(&engine, META, b"m").unwrap().map(|d| d.range_id.get()), Some(2));
    assert_eq!(directory::lookup(&engine, META, &[0xff; 9]).unwrap().map(|d| d.range_id.get()), Some(2));

    // Range 2 splits on its own replicas and reports to the meta range: newer entries are
    // taken, a stale report changes nothing.
    let mut shrunk = (**right).clone();
    shrunk.end = Some(Bytes::from_static(b"t"));
    shrunk.epoch.version += 1;
    let third = RangeDescriptor {
        range_id: RangeId::new(3),
        start: Bytes::from_static(b"t"),
        end: None,
        epoch: shrunk.epoch,
        replicas: shrunk.replicas.clone(),
    };
    let update = Op::UpdateDirectory(vec![shrunk.clone(), third.clone()]);
    assert_eq!(
        results(&mut meta, vec![normal(3, vec![update])]),
        vec![OpResult::DirectoryUpdated { written: 2 }]
    );
    let stale = Op::UpdateDirectory(vec![(**right).clone()]);
    assert_eq!(
        results(&mut meta, vec![normal(4, vec![stale])]),
        vec![OpResult::DirectoryUpdated { written: 0 }]
    );
    assert_eq!(directory::lookup(&engine, META, b"p").unwrap(), Some(shrunk));
    assert_eq!(directory::lookup(&engine, META, b"zz").unwrap(), Some(third));

    // A snapshot of the meta range carries the directory.
    let target = MemEngine::new();
    let snap = meta.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let mut copy = StateMachine::open(target.clone(), RangeId::new(1)).unwrap();
    copy.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
    assert_eq!(directory::entries(&target, META).unwrap(), directory::entries(&engine, META).unwrap());
}

#[test]
fn ids_are_allocated_once_and_only_by_the_meta_range() {
    let engine = MemEngine::new();
    let mut meta = StateMachine::open(engine.clone(), RangeId::new(1)).unwrap();
    results(&mut meta, vec![members(1, &[1])]);
    // Two allocations in one apply call, and one after a reopen.
    let r = results(
        &mut meta,
        vec![normal(2, vec![Op::AllocateIds { count: 4 }]), normal(3, vec![Op::AllocateIds { count: 1 }])],
    );
    assert_eq!(
        r,
        vec![OpResult::Ids { first: FIRST_ALLOCATED_ID }, OpResult::Ids { first: FIRST_ALLOCATED_ID + 4 }]
    );
    let mut meta = StateMachine::open(engine.clone(), RangeId::new(1)).unwrap();
    let r = results(&mut meta, vec![normal(4, vec![Op::AllocateIds { count: 2 }])]);
    assert_eq!(r, vec![OpResult::Ids { first: FIRST_ALLOCATED_ID + 5 }]);

    // The right-hand range of a split does not own the system records.
    let epoch = meta.descriptor().epoch;
    results(&mut meta, vec![normal(5, vec![split_at("k", epoch, 9, &[FIRST_ALLOCATED_ID + 5])])]);
    let mut right = StateMachine::open(engine.clone(), RangeId::new(9)).unwrap();
    let own = right.descriptor().clone();
    let r = results(
        &mut right,
        vec![normal(6, vec![Op::AllocateIds { count: 1 }, Op::UpdateDirectory(vec![own])])],
    );
    assert_eq!(r, vec![OpResult::NotMetaRange, OpResult::NotMetaRange]);
}

/// Placement records are set, replaced and cleared by the meta range only, read back whole,
/// and a damaged one is reported, never returned.
#[test]
fn placement_records_are_kept_by_the_meta_range_and_checked() {
    use zonekv_engine::{Cf, Engine, Reader, WriteBatch};

    let engine = MemEngine::new();
    let mut meta = StateMachine::open(engine.clone(), RangeId::new(1)).unwrap();
    results(&mut meta, vec![members(1, &[1])]);
    let set = |k: &'static str, v: Option<&'static str>| Op::SetPlacement {
        key: Bytes::from_static(k.as_bytes()),
        value: v.map(|v| Bytes::from_static(v.as_bytes())),
    };
    let r = results(&mut meta, vec![normal(2, vec![set("node/a", Some("x")), set("policy/", Some("p1"))])]);
    assert_eq!(r, vec![OpResult::Done, OpResult::Done]);
    results(
        &mut meta,
        vec![normal(3, vec![set("policy/", Some("p2")), set("node/a", None), set("node/b", Some("y"))])],
    );
    let records = placement::records(&engine, META).unwrap();
    let want: Vec<(Bytes, Bytes)> =
        [("node/b", "y"), ("policy/", "p2")].map(|(k, v)| (Bytes::from(k), Bytes::from(v))).to_vec();
    assert_eq!(records, want);

    // Outside the meta range: refused, nothing written.
    let epoch = meta.descriptor().epoch;
    results(&mut meta, vec![normal(4, vec![split_at("k", epoch, 9, &[FIRST_ALLOCATED_ID])])]);
    let mut right = StateMachine::open(engine.clone(), RangeId::new(9)).unwrap();
    assert_eq!(
        results(&mut right, vec![normal(5, vec![set("node/c", Some("z"))])]),
        vec![OpResult::NotMetaRange]
    );
    assert_eq!(placement::records(&engine, META).unwrap(), want);

    // One flipped byte in a stored record: an error naming it.
    let key = placement::placement_key(b"node/b");
    let mut stored = engine.get(Cf::Data, &key).unwrap().unwrap();
    *stored.last_mut().unwrap() ^= 1;
    let mut b = WriteBatch::new();
    b.put(Cf::Data, key, stored);
    engine.write(&b, true).unwrap();
    let err = placement::records(&engine, META).unwrap_err().to_string();
    assert!(err.contains("placement record"), "{err}");
}
