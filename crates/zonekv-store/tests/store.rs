//! The store on `MemEngine`, one node, no network: the read and write paths, the proposer,
//! splits as the store sees them (the right half starts and takes its keys), and the replica
//! lifecycle (reopen, create, destroy). Durability and corruption on RocksDB are the server's
//! and the engine's tests.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use zonekv_engine::{Cf, Engine, KeyRange, MemEngine, Reader, WriteBatch};
use zonekv_raft::keys::{self, FIRST_RANGE};
use zonekv_raft::meta::allocator::FIRST_ALLOCATED_ID;
use zonekv_raft::{Mutation, NodeId, Op, OpResult, RangeDescriptor, RangeId, ReplicaDesc, ReplicaId, Split};
use zonekv_store::{Error, NoTransport, ReadConsistency, Scan, Store, StoreConfig};

const ADDR: &str = "127.0.0.1:7001";

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn open(engine: &MemEngine, node: u64) -> zonekv_store::Result<Store<MemEngine>> {
    Store::open(engine.clone(), StoreConfig::single_node(NodeId::new(node)), Arc::new(NoTransport)).await
}

/// A store of node 1 that leads its one-node cluster.
async fn bootstrapped() -> (MemEngine, Store<MemEngine>) {
    let engine = MemEngine::new();
    let store = open(&engine, 1).await.unwrap();
    store.bootstrap_alone(ADDR).await.unwrap();
    (engine, store)
}

async fn close(store: Store<MemEngine>) {
    store.shutdown().await;
    store.close();
}

fn last_log_index(store: &Store<MemEngine>) -> u64 {
    store.first().with_metrics(|m| m.last_log_index.unwrap_or(0))
}

/// Splits the first range at `key`, as a split op with made-up fresh ids (the meta range's
/// allocator is the control plane's), and waits until the right half runs.
async fn split(store: &Store<MemEngine>, key: &str, right: u64) -> RangeDescriptor {
    let desc = store.replica_for_key(key.as_bytes()).unwrap().descriptor();
    let op = Op::Split(Split {
        split_key: b(key),
        expected_epoch: desc.epoch,
        new_range_id: RangeId::new(right),
        new_replica_ids: vec![ReplicaId::new(right + 1)],
    });
    let (result, _) = store.replica(desc.range_id).unwrap().propose(op).await.unwrap();
    let OpResult::Split { right: new, .. } = result else { panic!("split refused: {result:?}") };
    for _ in 0..500 {
        if let Some(r) = store.try_replica(new.range_id)
            && r.ensure_leader().is_ok()
        {
            return *new;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("range {right} did not start and elect itself");
}

fn keys_of(engine: &MemEngine, cf: Cf, span: &KeyRange) -> Vec<Vec<u8>> {
    engine.scan(cf, span, false).unwrap().map(|p| p.unwrap().0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_serves_writes_and_reads_and_names_the_range() {
    let (_engine, store) = bootstrapped().await;
    let put = store.put(b("user/1"), b("alice")).await.unwrap();
    assert_eq!(put.range, FIRST_RANGE);
    let got = store.get(b"user/1", ReadConsistency::Linearizable).await.unwrap();
    assert_eq!((got.value, got.range), (Some(b("alice")), FIRST_RANGE));
    assert!(got.index >= put.index, "a read reflects the write it follows");
    let stale = store.get(b"user/1", ReadConsistency::Stale).await.unwrap();
    assert_eq!(stale.value, Some(b("alice")));

    let cas = store.compare_and_swap(b("user/1"), Some(b("bob")), Some(b("carol"))).await.unwrap();
    assert!(!cas.value.succeeded && cas.value.current == Some(b("alice")));
    let cas = store.compare_and_swap(b("user/1"), Some(b("alice")), Some(b("carol"))).await.unwrap();
    assert!(cas.value.succeeded);
    store
        .batch(vec![Mutation::Put { key: b("user/2"), value: b("x") }, Mutation::Delete { key: b("user/1") }])
        .await
        .unwrap();
    assert!(!store.delete(b("user/1")).await.unwrap().value, "the batch deleted it");

    let page = store.scan(&Scan { start: Bound::Included(b("user/")), ..Scan::default() }).await.unwrap();
    assert_eq!(page.pairs, vec![(b("user/2"), b("x"))]);
    assert_eq!(page.range.range_id, FIRST_RANGE);
    let location = store.lookup_range(b"user/2", false).unwrap();
    assert_eq!((location.desc.range_id, location.leader_addr.as_deref()), (FIRST_RANGE, Some(ADDR)));
    close(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_before_anything_is_proposed() {
    let (_engine, store) = bootstrapped().await;
    let before = last_log_index(&store);
    let too_big = Bytes::from(vec![0u8; store.config().limits.max_value_bytes + 1]);
    let refusals = [
        store.put(Bytes::new(), b("v")).await.unwrap_err(),
        store.put(b("k"), too_big).await.unwrap_err(),
        store.batch(vec![]).await.unwrap_err(),
        store.get(&[7; 4097], ReadConsistency::Linearizable).await.unwrap_err(),
    ];
    for e in &refusals {
        assert!(matches!(e, Error::InvalidArgument(_)) && e.not_applied(), "{e}");
    }
    assert_eq!(last_log_index(&store), before, "nothing reached the log");
    close(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_no_cluster_says_so() {
    let engine = MemEngine::new();
    let store = open(&engine, 3).await.unwrap();
    let e = store.get(b"k", ReadConsistency::Linearizable).await.unwrap_err();
    assert!(matches!(e, Error::NotInitialized(n) if n == 3), "{e}");
    assert!(!store.is_initialized().await);
    close(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_log_entries() {
    let (_engine, store) = bootstrapped().await;
    let before = last_log_index(&store);
    let writes: Vec<_> = (0..400)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move { s.put(Bytes::from(format!("k/{i:03}")), b("v")).await })
        })
        .collect();
    for w in writes {
        w.await.unwrap().unwrap();
    }
    let entries = last_log_index(&store) - before;
    assert!(entries < 200, "400 concurrent writes took {entries} log entries");
    let page =
        store.scan(&Scan { start: Bound::Included(b("k/")), limit: 1000, ..Scan::default() }).await.unwrap();
    assert_eq!(page.pairs.len(), 400);
    close(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_starts_the_right_range_which_takes_its_keys() {
    let (_engine, store) = bootstrapped().await;
    store.put(b("a"), b("left")).await.unwrap();
    store.put(b("p"), b("right")).await.unwrap();
    let right = split(&store, "m", 100).await;
    assert_eq!((right.start, right.end), (b("m"), None));

    assert_eq!(store.range_ids(), vec![FIRST_RANGE, RangeId::new(100)]);
    let got = store.get(b"p", ReadConsistency::Linearizable).await.unwrap();
    assert_eq!(
        (got.value, got.range),
        (Some(b("right")), RangeId::new(100)),
        "the right half holds its data"
    );
    assert_eq!(store.put(b("z"), b("1")).await.unwrap().range, RangeId::new(100));
    assert_eq!(store.put(b("b"), b("1")).await.unwrap().range, FIRST_RANGE);

    let across = store.batch(vec![
        Mutation::Put { key: b("b"), value: b("2") },
        Mutation::Put { key: b("q"), value: b("2") },
    ]);
    let e = across.await.unwrap_err();
    assert!(e.to_string().contains("different ranges"), "{e}");
    // A scan returns the part of the range holding its start, naming the range; a reverse scan
    // starts in the last range.
    let page = store.scan(&Scan::default()).await.unwrap();
    assert_eq!(page.pairs.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), vec![b("a"), b("b")]);
    assert_eq!(page.range.end, Some(b("m")));
    let reverse = store.scan(&Scan { reverse: true, ..Scan::default() }).await.unwrap();
    assert_eq!(reverse.pairs.first().map(|(k, _)| k.clone()), Some(b("z")));
    assert_eq!(reverse.range.range_id, RangeId::new(100));
    // The meta range recorded the split in its directory: a lookup finds either half.
    assert_eq!(store.lookup_range(b"q", false).unwrap().desc.range_id, RangeId::new(100));
    close(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_store_restarts_every_stored_range() {
    let (engine, store) = bootstrapped().await;
    split(&store, "m", 100).await;
    store.put(b("x"), b("1")).await.unwrap();
    close(store).await;

    let store = open(&engine, 1).await.unwrap();
    assert_eq!(store.range_ids(), vec![FIRST_RANGE, RangeId::new(100)]);
    let got = store.get(b"x", ReadConsistency::Stale).await.unwrap();
    assert_eq!((got.value, got.range), (Some(b("1")), RangeId::new(100)));
    close(store).await;
    // The data belongs to node 1.
    let e = open(&engine, 2).await.err().expect("opened as another node");
    assert!(matches!(e, Error::OtherNode { owner, node } if owner == 1 && node == 2), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroying_a_replica_deletes_all_it_stored_and_nothing_else() {
    let (engine, store) = bootstrapped().await;
    for k in ["a", "b", "p", "q"] {
        store.put(b(k), b("v")).await.unwrap();
    }
    let right = split(&store, "m", 100).await;
    store.put(b("r"), b("v")).await.unwrap();
    let id = right.range_id;
    let group_meta = keys::group_meta(id);
    let group_log = keys::log_span_from(id, 0);
    assert!(!keys_of(&engine, Cf::RaftMeta, &group_meta).is_empty());

    store.destroy_replica(id).await.unwrap();
    assert!(store.try_replica(id).is_none());
    assert!(keys_of(&engine, Cf::RaftMeta, &group_meta).is_empty(), "every raft-meta record of the group");
    assert!(keys_of(&engine, Cf::RaftLog, &group_log).is_empty(), "the group's whole log");
    let right_data = &right.data_spans()[0];
    assert!(keys_of(&engine, Cf::Data, right_data).is_empty(), "the data of its span");
    // The first range lost nothing, and a request for a moved key is refused, not misrouted.
    assert_eq!(store.get(b"a", ReadConsistency::Linearizable).await.unwrap().value, Some(b("v")));
    assert!(store.get(b"q", ReadConsistency::Linearizable).await.is_err());
    assert!(store.destroy_replica(FIRST_RANGE).await.is_err(), "the first range is on every node");
    close(store).await;

    let store = open(&engine, 1).await.unwrap();
    assert_eq!(store.range_ids(), vec![FIRST_RANGE], "a destroyed replica does not come back");
    close(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_replica_is_durable_and_creation_is_checked() {
    let (engine, store) = bootstrapped().await;
    let me = NodeId::new(1);
    let range = RangeId::new(FIRST_ALLOCATED_ID + 7);
    let replica = ReplicaId::new(FIRST_ALLOCATED_ID + 8);
    let desc = |r: ReplicaId, node: NodeId| RangeDescriptor {
        range_id: range,
        start: b("m"),
        end: None,
        epoch: Default::default(),
        replicas: vec![ReplicaDesc { replica_id: r, node_id: node, learner: true }],
    };
    let e = store.create_replica(desc(replica, NodeId::new(2)), replica).await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "a descriptor that does not place it here: {e}");
    let first = RangeDescriptor { range_id: FIRST_RANGE, ..desc(replica, me) };
    assert!(matches!(store.create_replica(first, replica).await, Err(Error::InvalidArgument(_))));

    store.create_replica(desc(replica, me), replica).await.unwrap();
    store.create_replica(desc(replica, me), replica).await.expect("the same replica again is a no-op");
    let other = ReplicaId::new(FIRST_ALLOCATED_ID + 9);
    let e = store.create_replica(desc(other, me), other).await.unwrap_err();
    assert!(matches!(e, Error::FailedPrecondition(_)), "another replica of the same range: {e}");
    assert_eq!(store.replica(range).unwrap().replica_id(), replica);
    close(store).await;

    let store = open(&engine, 1).await.unwrap();
    assert_eq!(store.replica(range).unwrap().replica_id(), replica, "created before its group started");
    close(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_value_is_reported_never_served() {
    let (engine, store) = bootstrapped().await;
    store.put(b("k"), b("value")).await.unwrap();
    let key = keys::data_key(b"k");
    let mut stored = engine.get(Cf::Data, &key).unwrap().unwrap();
    let last = stored.len() - 1;
    stored[last] ^= 0x01;
    let mut batch = WriteBatch::new();
    batch.put(Cf::Data, key, stored);
    engine.write(&batch, true).unwrap();

    let e = store.get(b"k", ReadConsistency::Linearizable).await.unwrap_err();
    assert!(e.is_corruption(), "{e}");
    let e = store.scan(&Scan::default()).await.unwrap_err();
    assert!(e.is_corruption(), "{e}");
    close(store).await;
}
