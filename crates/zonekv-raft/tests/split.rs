//! Splits applied by the state machine: the parent shrinks, the right-hand range is created
//! with a Raft state openraft accepts, refused splits change nothing, and writes that reach a
//! range after it lost their key are refused (docs/multiraft.md).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, Membership};
use zonekv_engine::MemEngine;
use zonekv_raft::range::split_initial_log_id;
use zonekv_raft::{
    Command, Entry, LeaderId, LogId, LogStore, LogSyncer, NodeInfo, Op, OpResult, RangeEpoch, RangeId,
    ReplicaId, Split, StateMachine, read_descriptor, read_user_value,
};

const PARENT: RangeId = RangeId::new(1);
const RIGHT: RangeId = RangeId::new(2);

fn log_id(index: u64) -> LogId {
    LogId::new(LeaderId { term: 1, node_id: ReplicaId::new(1) }, index)
}

fn membership(ids: &[u64]) -> zonekv_raft::Membership {
    let nodes: BTreeMap<ReplicaId, NodeInfo> =
        ids.iter().map(|&i| (ReplicaId::new(i), NodeInfo::new(format!("n{i}")))).collect();
    Membership::new(vec![ids.iter().copied().map(ReplicaId::new).collect()], nodes).unwrap()
}

fn put(key: &'static str) -> Op {
    Op::Put { key: Bytes::from_static(key.as_bytes()), value: Bytes::from_static(b"v") }
}

fn split(at: &'static str, epoch: RangeEpoch, ids: &[u64]) -> Op {
    Op::Split(Split {
        split_key: Bytes::from_static(at.as_bytes()),
        expected_epoch: epoch,
        new_range_id: RIGHT,
        new_replica_ids: ids.iter().copied().map(ReplicaId::new).collect(),
    })
}

/// Applies `entries` and returns the results of each.
async fn apply(sm: &mut StateMachine<MemEngine>, entries: Vec<Entry>) -> Vec<Vec<OpResult>> {
    sm.apply_entries(&entries).unwrap().into_iter().map(|r| r.results).collect()
}

fn normal(index: u64, ops: Vec<Op>) -> Entry {
    Entry { log_id: log_id(index), payload: EntryPayload::Normal(Command { ops }) }
}

fn members(index: u64, ids: &[u64]) -> Entry {
    Entry { log_id: log_id(index), payload: EntryPayload::Membership(membership(ids)) }
}

/// A parent range 1 with replicas {1, 2, 3} holding a, m and x.
async fn parent() -> (MemEngine, StateMachine<MemEngine>) {
    let engine = MemEngine::new();
    let mut sm = StateMachine::open(engine.clone(), PARENT).unwrap();
    apply(&mut sm, vec![members(1, &[1, 2, 3]), normal(2, vec![put("a"), put("m"), put("x")])]).await;
    (engine, sm)
}

#[tokio::test]
async fn a_split_shrinks_the_parent_and_seeds_the_right_hand_range() {
    let (engine, mut sm) = parent().await;
    let epoch = sm.descriptor().epoch;
    assert_eq!(epoch, RangeEpoch { version: 0, conf_ver: 1 }, "one membership change so far");
    let mut watch = sm.watch_descriptor();

    // The split and, in the same entry, writes on both sides of the split key.
    let cmd = vec![put("b"), split("m", epoch, &[11, 12, 13]), put("q"), put("c")];
    let results = apply(&mut sm, vec![normal(3, cmd)]).await.remove(0);

    let OpResult::Split { left, right } = &results[1] else { panic!("split result: {:?}", results[1]) };
    assert_eq!((left.start.as_ref(), left.end.as_deref()), (&b""[..], Some(&b"m"[..])));
    assert_eq!(left.epoch, RangeEpoch { version: 1, conf_ver: 1 });
    assert_eq!((right.range_id, right.start.as_ref(), right.end.as_deref()), (RIGHT, &b"m"[..], None));
    let ids: Vec<_> = right.replicas.iter().map(|r| (r.replica_id.get(), r.node_id.get())).collect();
    assert_eq!(ids, vec![(11, 1), (12, 2), (13, 3)], "new replica ids on the same nodes");
    assert!(matches!(&results[2], OpResult::RangeKeyMismatch(d) if d.end.as_deref() == Some(&b"m"[..])));
    assert_eq!(results[0], OpResult::Done);
    assert_eq!(results[3], OpResult::Done);
    assert_eq!(read_user_value(&engine, PARENT, b"q").unwrap(), None, "the refused write left nothing");
    assert!(read_user_value(&engine, PARENT, b"x").unwrap().is_some(), "data stays where it is");

    // Persisted, announced, and survives a reopen.
    assert!(watch.has_changed().unwrap());
    assert_eq!(*watch.borrow_and_update(), **left);
    assert_eq!(read_descriptor(&engine, PARENT).unwrap().as_ref(), Some(&**left));
    assert_eq!(read_descriptor(&engine, RIGHT).unwrap().as_ref(), Some(&**right));
    let reopened = StateMachine::open(engine.clone(), PARENT).unwrap();
    assert_eq!(reopened.descriptor(), &**left);

    // The right-hand range's Raft state: log empty and purged at L0, applied at L0, with the
    // new replica ids as voters.
    let l0 = split_initial_log_id();
    let mut rhs = StateMachine::open(engine.clone(), RIGHT).unwrap();
    let (applied, stored) = rhs.applied_state().await.unwrap();
    assert_eq!(applied, Some(l0));
    assert_eq!(stored.log_id(), &Some(l0));
    assert_eq!(
        stored.membership().voter_ids().collect::<BTreeSet<_>>(),
        BTreeSet::from([11, 12, 13].map(ReplicaId::new))
    );
    assert_eq!(stored.membership().get_node(&ReplicaId::new(12)).map(|n| n.addr.as_str()), Some("n2"));
    let mut log = LogStore::new(engine.clone(), RIGHT, LogSyncer::start(engine.clone()));
    let state = log.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(l0), Some(l0)));

    // Snapshots follow the descriptors: the parent's carries only [.., m), the right's [m, ..).
    let left_snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let right_snap = rhs.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let target = MemEngine::new();
    let mut t_left = StateMachine::open(target.clone(), PARENT).unwrap();
    t_left.install_snapshot(&left_snap.meta, left_snap.snapshot).await.unwrap();
    assert_eq!(t_left.descriptor(), &**left, "the installed descriptor is the snapshot's");
    let mut t_right = StateMachine::open(target.clone(), RIGHT).unwrap();
    t_right.install_snapshot(&right_snap.meta, right_snap.snapshot).await.unwrap();
    for (key, present) in [("a", true), ("b", true), ("c", true), ("m", true), ("x", true), ("q", false)] {
        assert_eq!(read_user_value(&target, PARENT, key.as_bytes()).unwrap().is_some(), present, "{key}");
    }
}

#[tokio::test]
async fn refused_splits_change_nothing() {
    let (engine, mut sm) = parent().await;
    let epoch = sm.descriptor().epoch;
    let before = sm.descriptor().clone();
    let stale = RangeEpoch { version: epoch.version, conf_ver: epoch.conf_ver + 1 };
    let cases = [
        (split("m", stale, &[11, 12, 13]), "changed since the split was planned"),
        (split("", epoch, &[11, 12, 13]), "not strictly inside"),
        (split("m", epoch, &[11, 12]), "3 replicas"),
        (split("m", epoch, &[11, 11, 13]), "distinct"),
        (split("m", epoch, &[11, 0, 13]), "non-zero"),
    ];
    let mut index = 3;
    for (op, why) in cases {
        let results = apply(&mut sm, vec![normal(index, vec![op])]).await;
        index += 1;
        match &results[0][0] {
            OpResult::SplitRejected { reason, current } => {
                assert!(reason.contains(why), "{reason:?} should say {why:?}");
                assert_eq!(**current, before);
            }
            other => panic!("expected a refusal ({why}), got {other:?}"),
        }
        assert_eq!(sm.descriptor(), &before);
        assert_eq!(read_descriptor(&engine, RIGHT).unwrap(), None, "no range was created");
    }

    // A split at the boundary of an already split range, and a second split with the epoch
    // the first one consumed.
    let results = apply(&mut sm, vec![normal(index, vec![split("m", epoch, &[11, 12, 13])])]).await;
    assert!(matches!(results[0][0], OpResult::Split { .. }));
    let after = sm.descriptor().clone();
    for (op, why) in [
        (split("m", after.epoch, &[21, 22, 23]), "not strictly inside"),
        (split("f", epoch, &[21, 22, 23]), "changed since the split was planned"),
    ] {
        index += 1;
        let results = apply(&mut sm, vec![normal(index, vec![op])]).await;
        assert!(
            matches!(&results[0][0], OpResult::SplitRejected { reason, .. } if reason.contains(why)),
            "{:?}",
            results[0][0]
        );
        assert_eq!(sm.descriptor(), &after);
    }
}

/// A network for a single-replica group: there is nobody to talk to.
struct Nobody;

fn unreachable<E>() -> openraft::errors::RPCError<zonekv_raft::TypeConfig, E>
where
    E: std::error::Error,
{
    openraft::errors::RPCError::Unreachable(openraft::errors::Unreachable::new(&std::io::Error::other(
        "no peers",
    )))
}

impl openraft::network::v2::RaftNetworkV2<zonekv_raft::TypeConfig> for Nobody {
    type SnapshotData = zonekv_raft::SnapshotData;

    async fn append_entries(
        &mut self,
        _: openraft::raft::AppendEntriesRequest<zonekv_raft::TypeConfig>,
        _: openraft::network::RPCOption,
    ) -> Result<
        openraft::raft::AppendEntriesResponse<zonekv_raft::TypeConfig>,
        openraft::errors::RPCError<zonekv_raft::TypeConfig>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _: openraft::raft::VoteRequest<zonekv_raft::TypeConfig>,
        _: openraft::network::RPCOption,
    ) -> Result<
        openraft::raft::VoteResponse<zonekv_raft::TypeConfig>,
        openraft::errors::RPCError<zonekv_raft::TypeConfig>,
    > {
        Err(unreachable())
    }

    async fn full_snapshot(
        &mut self,
        _: zonekv_raft::Vote,
        _: openraft::type_config::alias::SnapshotOf<zonekv_raft::TypeConfig, zonekv_raft::SnapshotData>,
        _: impl Future<Output = openraft::errors::ReplicationClosed> + Send + 'static,
        _: openraft::network::RPCOption,
    ) -> Result<
        openraft::raft::SnapshotResponse<zonekv_raft::TypeConfig>,
        openraft::errors::StreamingError<zonekv_raft::TypeConfig>,
    > {
        Err(openraft::errors::StreamingError::Unreachable(openraft::errors::Unreachable::new(
            &std::io::Error::other("no peers"),
        )))
    }
}

struct NobodyFactory;

impl openraft::network::RaftNetworkFactory<zonekv_raft::TypeConfig> for NobodyFactory {
    type Network = Nobody;

    async fn new_client(&mut self, _: ReplicaId, _: &NodeInfo) -> Nobody {
        Nobody
    }
}

/// openraft starts a group from the seeded state (no `initialize`), elects, and commits after L0.
#[tokio::test]
async fn openraft_runs_the_right_hand_range_from_its_seeded_state() {
    let engine = MemEngine::new();
    let mut sm = StateMachine::open(engine.clone(), PARENT).unwrap();
    apply(&mut sm, vec![members(1, &[1]), normal(2, vec![put("x")])]).await;
    let epoch = sm.descriptor().epoch;
    let results = apply(&mut sm, vec![normal(3, vec![split("m", epoch, &[7])])]).await;
    assert!(matches!(results[0][0], OpResult::Split { .. }), "{:?}", results[0][0]);

    let syncer = LogSyncer::start(engine.clone());
    let log = LogStore::new(engine.clone(), RIGHT, syncer.clone());
    let rhs = StateMachine::open(engine.clone(), RIGHT).unwrap();
    let config = Arc::new(
        openraft::Config {
            election_timeout_min: 150,
            election_timeout_max: 300,
            heartbeat_interval: 50,
            ..Default::default()
        }
        .validate()
        .unwrap(),
    );
    let raft = zonekv_raft::Raft::new(ReplicaId::new(7), config, NobodyFactory, log, rhs).await.unwrap();
    // Leadership is visible before the leader's blank entry is applied; wait for both.
    let m = raft
        .wait(Some(std::time::Duration::from_secs(5)))
        .metrics(
            |m| m.current_leader == Some(ReplicaId::new(7)) && m.last_applied.is_some_and(|id| id.index >= 6),
            "the only replica leads and applied its blank entry",
        )
        .await
        .unwrap();
    assert_eq!(m.last_applied.map(|id| id.index), Some(6), "L0 + the new leader's blank entry");

    let resp = raft.client_write(Command { ops: vec![put("y"), put("c")] }).await.unwrap();
    assert_eq!(resp.log_id.index, 7);
    assert_eq!(resp.data.results[0], OpResult::Done);
    assert!(matches!(&resp.data.results[1], OpResult::RangeKeyMismatch(d) if d.range_id == RIGHT));
    assert!(read_user_value(&engine, RIGHT, b"y").unwrap().is_some());
    assert!(read_user_value(&engine, RIGHT, b"c").unwrap().is_none());
    raft.shutdown().await.unwrap();
    syncer.close();
}
