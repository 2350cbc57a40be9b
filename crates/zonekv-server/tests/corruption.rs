//! Damaged data and malformed messages: reported with a clear error, never served, nothing
//! changed.

mod common;

use std::time::Duration;

use common::raw;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;
use zonekv_engine::{Cf, Engine, KeyRange, Reader, WriteBatch};
use zonekv_engine_rocks::{RocksEngine, RocksOptions};
use zonekv_proto::raft::v1 as pb;
use zonekv_server::{Error, Node, NodeConfig, ReadConsistency, StoreError};

fn config(dir: &std::path::Path) -> NodeConfig {
    NodeConfig { listen: "127.0.0.1:0".parse().unwrap(), data_dir: dir.into(), ..NodeConfig::default() }
}

async fn single_node(dir: &std::path::Path) -> Node {
    let node = Node::start(config(dir)).await.expect("start");
    if !node.is_initialized().await {
        node.initialize(&[(node.id(), node.addr().to_string())]).await.unwrap();
    }
    node.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    node
}

/// Flips a bit in the last byte of every stored value matching `pick` in `cf`.
fn damage(dir: &std::path::Path, cf: Cf, pick: impl Fn(&[u8]) -> bool) -> usize {
    let engine = RocksEngine::open(dir, &RocksOptions::default()).unwrap();
    let mut b = WriteBatch::new();
    for pair in engine.scan(cf, &KeyRange::all(), false).unwrap() {
        let (k, mut v) = pair.unwrap();
        if pick(&k) {
            let last = v.len() - 1;
            v[last] ^= 0x10;
            b.put(cf, k, v);
        }
    }
    let n = b.len();
    engine.write(&b, true).unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_value_is_reported_as_data_loss_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path()).await;
    node.put("good", "fine").await.unwrap();
    node.put("bad", "soon damaged").await.unwrap();
    node.shutdown().await;
    assert_eq!(damage(dir.path(), Cf::Data, |k| k.ends_with(b"bad")), 1);

    let node = single_node(dir.path()).await;
    assert_eq!(node.get(b"good", ReadConsistency::Linearizable).await.unwrap().0.unwrap(), "fine");
    let err = node.get(b"bad", ReadConsistency::Linearizable).await.unwrap_err();
    assert!(err.to_string().contains("CRC32"), "{err}");
    let status: tonic::Status = err.into();
    assert_eq!(status.code(), Code::DataLoss);
    // A scan over the damaged key fails instead of skipping it.
    assert!(node.scan(&zonekv_server::Scan::default()).await.is_err());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_entry_stops_the_replica_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path()).await;
    for i in 0..20 {
        node.put(format!("k{i}"), "v").await.unwrap();
    }
    node.shutdown().await;
    // Damage every stored log entry of range 1.
    let damaged = damage(dir.path(), Cf::RaftLog, |k| k.starts_with(&1u64.to_be_bytes()));
    assert!(damaged >= 20);
    let err = match Node::start(config(dir.path())).await {
        Err(e) => e,
        Ok(node) => {
            let s = node.status().await;
            let fatal = s.ranges[0].fatal_error.clone();
            node.shutdown().await;
            panic!("node started on a damaged log; replica fatal error: {fatal:?}");
        }
    };
    assert!(matches!(err, Error::Store(StoreError::ReplicaStopped { range, .. }) if range == 1), "{err}");
    assert!(err.to_string().contains("CRC32"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path()).await;
    let channel = Channel::from_shared(format!("http://{}", node.addr())).unwrap().connect().await.unwrap();
    let cases: [(&str, Vec<u8>); 4] = [
        ("/zonekv.kv.v1.Kv/Put", vec![0x0a, 0xff, 0xff, 0xff, 0x0f, 1, 2]), // length past the end
        ("/zonekv.kv.v1.Kv/Batch", vec![0x0a, 0x03, 0x0a, 0x05, 0x00]),     // nested length overflow
        ("/zonekv.raft.v1.RaftTransport/Ping", vec![0x12, 0x02, 0x08]),
        ("/zonekv.admin.v1.Admin/AddNode", vec![0x07]), // invalid tag
    ];
    for (path, body) in cases {
        let err = raw::call(&channel, path, body).await.expect_err(path);
        assert!(
            matches!(err.code(), Code::Internal | Code::InvalidArgument),
            "{path}: {:?} {}",
            err.code(),
            err.message()
        );
        assert!(
            err.message().to_lowercase().contains("decode") || err.message().contains("header"),
            "{path}: {}",
            err.message()
        );
    }
    // The Raft batch stream: a message that does not decode ends the stream with the decode
    // error; a frame that decodes but is wrong is answered with an error frame naming why.
    let batch = "/zonekv.raft.v1.RaftTransport/Batch";
    let err = raw::stream_once(&channel, batch, vec![0x0a, 0x05, 0x08]).await.expect_err("bad batch");
    assert_eq!(err.code(), Code::Internal, "{}", err.message());
    assert!(err.message().contains("decode"), "{}", err.message());
    let headerless = pb::RaftBatch {
        frames: vec![pb::RaftFrame {
            id: 7,
            body: Some(pb::raft_frame::Body::Vote(pb::VoteRequest::default())),
        }],
    };
    let answers = raw::stream_once(&channel, batch, headerless.encode_to_vec()).await.unwrap();
    let frames: Vec<pb::RaftFrame> =
        answers.iter().flat_map(|a| pb::RaftBatch::decode(&a[..]).unwrap().frames).collect();
    match &frames[..] {
        [pb::RaftFrame { id: 7, body: Some(pb::raft_frame::Body::Error(e)) }] => {
            assert_eq!(e.code, Code::InvalidArgument as i32);
            assert!(e.message.contains("without a header"), "{}", e.message);
        }
        other => panic!("expected one error frame for frame 7, got {other:?}"),
    }

    let page = node.scan(&zonekv_server::Scan::default()).await.unwrap();
    assert!(page.pairs.is_empty());
    assert_eq!(node.status().await.ranges[0].members.len(), 1);
    node.shutdown().await;
}

/// Waits until `node` has applied at least `index`.
async fn wait_applied(node: &Node, index: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while node.status().await.ranges[0].applied_index < index {
        assert!(tokio::time::Instant::now() < deadline, "node {} did not catch up to {index}", node.id());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_damaged_log_is_refused_then_rebuilt_from_the_healthy_ones() {
    let mut cluster = zonekv_server::LocalCluster::start(3, None).await.unwrap();
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await.unwrap();
    let victim = if leader == 3 { 2 } else { 3 };
    let h = cluster.node(leader).unwrap().handle();
    for i in 0..200 {
        h.put(format!("key-{i:03}"), format!("value {i}")).await.unwrap();
    }
    let victim_config = cluster.node(victim).unwrap().config().clone();
    cluster.stop_node(victim).await;

    // Bit rot in the victim's Raft log: it must refuse to start, naming the damage.
    let damaged = damage(&victim_config.data_dir, Cf::RaftLog, |k| k.starts_with(&1u64.to_be_bytes()));
    assert!(damaged > 0);
    let err = cluster.restart_node(victim).await.expect_err("started on a damaged log");
    assert!(err.to_string().contains("CRC32"), "{err}");

    // The healthy majority keeps serving, and never saw the damage.
    h.put("after-damage", "still writable").await.unwrap();

    // Repair: drop the damaged replica, wipe it, and rebuild it under a new node id (ids are
    // never reused) from the healthy replicas.
    h.remove_node(victim).await.unwrap();
    std::fs::remove_dir_all(&victim_config.data_dir).unwrap();
    let rebuilt = Node::start(NodeConfig {
        node_id: 10 + victim,
        join: Some(h.addr().to_string()),
        ..config(&victim_config.data_dir)
    })
    .await
    .expect("the rebuilt replica joins");
    let target = h.status().await.ranges[0].applied_index;
    wait_applied(&rebuilt, target).await;
    for i in 0..200 {
        let (v, _) = rebuilt.get(format!("key-{i:03}").as_bytes(), ReadConsistency::Stale).await.unwrap();
        assert_eq!(v.as_deref(), Some(format!("value {i}").as_bytes()), "key-{i:03} on the rebuilt replica");
    }
    let (v, _) = rebuilt.get(b"after-damage", ReadConsistency::Stale).await.unwrap();
    assert_eq!(v.as_deref(), Some(&b"still writable"[..]));
    for n in cluster.running() {
        wait_applied(n, target).await;
        let page =
            n.scan(&zonekv_server::Scan { consistency: ReadConsistency::Stale, ..Default::default() }).await;
        assert_eq!(page.expect("healthy replicas read cleanly").pairs.len(), 201, "node {}", n.id());
    }
    rebuilt.shutdown().await;
    cluster.shutdown().await;
}
