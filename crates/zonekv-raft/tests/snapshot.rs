//! Snapshots never carry damage: a replica refuses to build a snapshot over a value that fails
//! its checksum, and refuses to install a snapshot that contains one.

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use zonekv_engine::{Cf, Engine, KeyRange, MemEngine, Reader, WriteBatch, export};
use zonekv_raft::{LeaderId, LogId, RangeId, ReplicaId, SnapshotMeta, StateMachine, keys, value};

/// An engine holding `good` = "fine" and `bad` with one bit flipped in its payload.
fn damaged_engine() -> MemEngine {
    let engine = MemEngine::new();
    let mut bad = value::encode(b"soon damaged");
    *bad.last_mut().unwrap() ^= 0x01;
    let mut b = WriteBatch::new();
    b.put(Cf::Data, keys::data_key(b"good"), value::encode(b"fine"));
    b.put(Cf::Data, keys::data_key(b"bad"), bad);
    engine.write(&b, true).unwrap();
    engine
}

#[tokio::test]
async fn a_damaged_value_stops_the_snapshot_build() {
    let engine = damaged_engine();
    let mut sm = StateMachine::open(engine, RangeId::new(1)).unwrap();
    let err = sm.get_snapshot_builder().await.build_snapshot().await.unwrap_err();
    assert!(err.to_string().contains("CRC32"), "{err}");
}

#[tokio::test]
async fn a_snapshot_carrying_a_damaged_value_is_refused_and_nothing_is_written() {
    // A stream whose own checksums are intact, made from a damaged store.
    let source = damaged_engine();
    let mut data = Vec::new();
    export::export(&source.snapshot(), &[(Cf::Data, keys::all_user_data())], &mut data).unwrap();

    let target = MemEngine::new();
    let mut b = WriteBatch::new();
    b.put(Cf::Data, keys::data_key(b"existing"), value::encode(b"kept"));
    target.write(&b, true).unwrap();
    let mut sm = StateMachine::open(target.clone(), RangeId::new(1)).unwrap();
    let meta = SnapshotMeta {
        last_log_id: Some(LogId::new(LeaderId { term: 1, node_id: ReplicaId::new(1) }, 7)),
        ..SnapshotMeta::default()
    };
    let err = sm.install_snapshot(&meta, data).await.unwrap_err();
    assert!(err.to_string().contains("CRC32"), "{err}");
    let pairs: Vec<_> = target.scan(Cf::Data, &KeyRange::all(), false).unwrap().collect();
    assert_eq!(pairs.len(), 1, "the install must not have written anything");
    assert_eq!(sm.applied_state().await.unwrap().0, None);
}

/// openraft's policy snapshots (`force = false`) only advance the purge point: they carry the
/// applied state and no data, and that empty stream can never be installed over a span.
#[tokio::test]
async fn a_policy_snapshot_carries_the_applied_state_and_no_data() {
    use bytes::Bytes;
    use zonekv_raft::{Command, Entry, Op};

    let engine = MemEngine::new();
    let mut sm = StateMachine::open(engine.clone(), RangeId::new(1)).unwrap();
    let log_id = LogId::new(LeaderId { term: 2, node_id: ReplicaId::new(1) }, 9);
    let put = Op::Put { key: Bytes::from_static(b"k"), value: Bytes::from_static(b"v") };
    let entry = Entry { log_id, payload: openraft::EntryPayload::Normal(Command { ops: vec![put] }) };
    sm.apply(futures::stream::iter([Ok((entry, None))])).await.unwrap();

    let policy = sm.try_create_snapshot_builder(false).await.unwrap().build_snapshot().await.unwrap();
    assert_eq!(policy.meta.last_log_id, Some(log_id));
    assert!(policy.snapshot.is_empty(), "a policy build must not export the span");

    let full = sm.try_create_snapshot_builder(true).await.unwrap().build_snapshot().await.unwrap();
    assert_eq!(full.meta.last_log_id, Some(log_id));
    assert!(!full.snapshot.is_empty(), "a forced build exports the span");

    // The empty stream is refused, and the span is left as it was.
    let target = MemEngine::new();
    let mut b = WriteBatch::new();
    b.put(Cf::Data, keys::data_key(b"existing"), value::encode(b"kept"));
    target.write(&b, true).unwrap();
    let mut other = StateMachine::open(target.clone(), RangeId::new(1)).unwrap();
    let err = other.install_snapshot(&policy.meta, policy.snapshot).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("corrupt"), "{err}");
    let pairs: Vec<_> = target.scan(Cf::Data, &KeyRange::all(), false).unwrap().collect();
    assert_eq!(pairs.len(), 1, "the refused install must not have written anything");
}

/// A replica that missed a split installs a snapshot of its range taken after it: the part of
/// the span it held that the snapshot no longer covers is deleted (nothing else owns it), while
/// data owned by another range stored on the node stays (docs/disk-faults.md §4).
#[tokio::test]
async fn a_narrower_snapshot_deletes_the_data_no_range_owns_any_more() {
    use bytes::Bytes;
    use zonekv_raft::{RangeDescriptor, codec, read_user_value};

    let group = RangeId::new(1);
    let put = |engine: &MemEngine, group: RangeId, desc: Option<&RangeDescriptor>, keys_: &[&str]| {
        let mut b = WriteBatch::new();
        if let Some(d) = desc {
            b.put(
                Cf::RaftMeta,
                keys::meta_key(group, keys::MetaKey::Descriptor),
                codec::encode_descriptor(d),
            );
        }
        for k in keys_ {
            b.put(Cf::Data, keys::data_key(k.as_bytes()), value::encode(b"v"));
        }
        engine.write(&b, true).unwrap();
    };
    // The leader's side: the range after the split, [.., m), holding "a".
    let narrowed =
        RangeDescriptor { end: Some(Bytes::from_static(b"m")), ..RangeDescriptor::whole_keyspace(group) };
    let source = MemEngine::new();
    put(&source, group, Some(&narrowed), &["a"]);
    let mut leader = StateMachine::open(source, group).unwrap();
    let snap = leader.try_create_snapshot_builder(true).await.unwrap().build_snapshot().await.unwrap();

    // The follower: still the whole keyspace with "a" and "x" (the split's right half, which
    // no range here owns any more) and "y", which range 7 stored here owns.
    let target = MemEngine::new();
    let seven = RangeDescriptor {
        start: Bytes::from_static(b"y"),
        ..RangeDescriptor::whole_keyspace(RangeId::new(7))
    };
    put(&target, RangeId::new(7), Some(&seven), &[]);
    put(&target, group, None, &["a", "x", "y"]);
    let mut follower = StateMachine::open(target.clone(), group).unwrap();
    let meta = SnapshotMeta {
        last_log_id: Some(LogId::new(LeaderId { term: 1, node_id: ReplicaId::new(1) }, 7)),
        ..SnapshotMeta::default()
    };
    follower.install_snapshot(&meta, snap.snapshot).await.unwrap();
    assert!(read_user_value(&target, group, b"a").unwrap().is_some());
    assert_eq!(read_user_value(&target, group, b"x").unwrap(), None, "orphaned data of the right half kept");
    assert!(
        read_user_value(&target, RangeId::new(7), b"y").unwrap().is_some(),
        "another range's data deleted"
    );
}
