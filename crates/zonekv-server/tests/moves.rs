//! Moving a range's replica to another node (docs/placement.md, "Moving a replica"): the new
//! replica catches up by snapshot, the voters swap in one joint change, the descriptor and the
//! directory name the new node, and the range serves there, also after a restart.

use std::time::Duration;

use bytes::Bytes;
use zonekv_server::{
    FIRST_RANGE, LocalCluster, Node, NodeConfig, NodeHandle, NodeId, RangeId, ReadConsistency,
};

/// The node whose replica of `range` leads it.
async fn leader_of(nodes: &[NodeHandle], range: impl Into<RangeId>) -> NodeHandle {
    let range = range.into();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        for n in nodes {
            if n.leading().contains(&range) {
                return n.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "range {range} has no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Node 4, joining `cluster`, with data in `dir`.
fn fourth_node(cluster: &LocalCluster, dir: &std::path::Path, template: NodeConfig) -> NodeConfig {
    NodeConfig {
        node_id: 4,
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.into(),
        join: Some(cluster.addrs()[0].clone()),
        ..template
    }
}

async fn stale(node: &NodeHandle, key: &str) -> Option<Bytes> {
    node.get(key.as_bytes(), ReadConsistency::Stale).await.ok().and_then(|(v, _)| v)
}

/// The node that joins after the split replays the first range's log, split included (it
/// then holds the range's state as of the split, but no replica of it): the new replica
/// starts from that state and replays the range's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_moves_to_a_node_that_applied_the_split() {
    move_to_a_new_node(NodeConfig::default()).await;
}

/// The first range's log is purged past the split before the node joins, so it receives the
/// first range by snapshot and knows nothing of the split-off range: the new replica starts
/// empty and catches up by snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_moves_to_a_node_that_never_saw_the_range() {
    let mut template = NodeConfig::default();
    template.raft.snapshot_after_entries = 5;
    template.raft.keep_entries_after_snapshot = 0;
    move_to_a_new_node(template).await;
}

async fn move_to_a_new_node(template: NodeConfig) {
    let purged = template.raft.keep_entries_after_snapshot == 0;
    let cluster = LocalCluster::start_with(3, None, template.clone()).await.unwrap();
    cluster.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let handles: Vec<NodeHandle> = cluster.running().map(Node::handle).collect();
    let meta = leader_of(&handles, 1).await;
    let (_, right) = meta.split("m").await.unwrap();
    let split_index = meta.status().await.ranges[0].applied_index;
    let r = leader_of(&handles, right.range_id).await;
    for i in 0..100 {
        r.put(format!("x{i:03}"), format!("v{i}")).await.unwrap();
    }
    if purged {
        // Enough entries in the first range for a snapshot that purges the split; the purge
        // follows the snapshot build, so wait for it.
        for i in 0..30 {
            meta.put(format!("a{i:03}"), "v").await.unwrap();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while meta.status().await.ranges[0].purged_index < split_index {
            assert!(tokio::time::Instant::now() < deadline, "the first range never purged the split");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // A fourth node joins the cluster: it holds the first range only.
    let dir = tempfile::tempdir().unwrap();
    let config = fourth_node(&cluster, dir.path(), template);
    let fourth = Node::start(config.clone()).await.unwrap();
    assert_eq!(fourth.range_ids(), vec![1]);
    // Whether node 4 has the split-off range's state as of the split: once it has the first
    // range as of the split (by log or by snapshot), its purged index says how it came.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fourth.status().await.ranges[0].applied_index < split_index {
        assert!(tokio::time::Instant::now() < deadline, "node 4 never caught up with the first range");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seeded = fourth.status().await.ranges[0].purged_index == 0;
    assert_eq!(
        seeded,
        !purged,
        "the first range reached node 4 by {}",
        if purged { "log" } else { "snapshot" }
    );

    // Bad moves change nothing.
    let from = (1..=3u64).map(NodeId::new).find(|n| *n != r.id()).unwrap();
    for (range, a, b, why) in [
        (right.range_id, NodeId::new(4), NodeId::new(1), "holds no replica"),
        (right.range_id, from, r.id(), "already holds"),
        (right.range_id, from, NodeId::new(9), "not a member"),
        (FIRST_RANGE, from, NodeId::new(4), "first range"),
    ] {
        let err = r.move_replica(range, a, b).await.unwrap_err();
        assert!(err.to_string().contains(why), "{range} {a}->{b}: {err}");
    }
    let before = r.status().await.ranges.iter().find(|s| s.range_id == right.range_id).unwrap().members.len();
    assert_eq!(before, 3);

    let moved = r.move_replica(right.range_id, from, 4).await.unwrap();
    let nodes: Vec<(NodeId, bool)> = moved.replicas.iter().map(|x| (x.node_id, x.learner)).collect();
    assert!(nodes.contains(&(NodeId::new(4), false)) && !nodes.iter().any(|(n, _)| *n == from), "{moved:?}");
    assert_eq!(moved.replicas.len(), 3);
    assert!(moved.epoch.conf_ver > right.epoch.conf_ver, "{} -> {}", right.epoch, moved.epoch);

    // The new replica has the data and takes new writes.
    r.put("x999", "after the move").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stale(&fourth.handle(), "x999").await.as_deref() != Some(&b"after the move"[..]) {
        assert!(tokio::time::Instant::now() < deadline, "node 4 never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stale(&fourth.handle(), "x042").await.as_deref(), Some(&b"v42"[..]));
    // Clients find the range's leader and read through it.
    let mut addrs = cluster.addrs();
    addrs.push(fourth.addr().to_string());
    let client = zonekv_client::Client::new(addrs).unwrap();
    assert_eq!(client.get("x999").await.unwrap().as_deref(), Some(&b"after the move"[..]));
    drop(client); // its open streams would hold the nodes' servers at shutdown

    // Still there after a restart (on the same address: the cluster knows it by it).
    let listen = fourth.listen_addr().unwrap();
    fourth.shutdown().await;
    let fourth = Node::start(NodeConfig { listen, join: None, ..config }).await.unwrap();
    assert_eq!(fourth.range_ids(), vec![FIRST_RANGE, right.range_id]);
    assert_eq!(stale(&fourth.handle(), "x999").await.as_deref(), Some(&b"after the move"[..]));

    // The replica moved away is deleted from its old node (the directory shows the move)...
    let old = cluster.node(from).unwrap().handle();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while old.range_ids().contains(&right.range_id) {
        assert!(tokio::time::Instant::now() < deadline, "node {from} kept its removed replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...which can then take the range back, as a new replica.
    let back = r.move_replica(right.range_id, 4, from).await.unwrap();
    assert!(back.replicas.iter().any(|x| x.node_id == from && !x.learner), "{back:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stale(&old, "x999").await.as_deref() != Some(&b"after the move"[..]) {
        assert!(tokio::time::Instant::now() < deadline, "node {from} never caught up again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stale(&old, "x042").await.as_deref(), Some(&b"v42"[..]));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fourth.range_ids().contains(&right.range_id) {
        assert!(tokio::time::Instant::now() < deadline, "node 4 kept its removed replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    fourth.shutdown().await;
    drop((handles, meta, r, old)); // handles keep a node's storage open past its shutdown
    cluster.shutdown().await;
}

/// A replica created for a move that is then given up (never added to its range) is deleted
/// after a grace period, once the range's leader says it is no member; a placement step
/// planned at an older shape of the range is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_replica_is_deleted_and_a_stale_step_is_refused() {
    use zonekv_proto::raft::v1 as pb;
    use zonekv_proto::raft::v1::raft_transport_client::RaftTransportClient;

    let mut template = NodeConfig::default();
    template.placement.driver = false; // nothing else changes the ranges
    let cluster = LocalCluster::start_with(3, None, template.clone()).await.unwrap();
    cluster.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let handles: Vec<NodeHandle> = cluster.running().map(Node::handle).collect();
    let (_, right) = leader_of(&handles, 1).await.split("m").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fourth = Node::start(fourth_node(&cluster, dir.path(), template)).await.unwrap();

    // Node 4 is asked to create a replica that its range's leader never adds.
    let replica_id = zonekv_raft::ReplicaId::new(1 << 40);
    let mut desc = right.clone();
    desc.replicas.push(zonekv_raft::ReplicaDesc { replica_id, node_id: NodeId::new(4), learner: true });
    let mut client = RaftTransportClient::connect(format!("http://{}", fourth.addr())).await.unwrap();
    let create = pb::CreateReplicaRequest {
        descriptor: Some(zonekv_raft::codec::descriptor_to_pb(&desc)),
        replica_id: replica_id.get(),
    };
    client.create_replica(create).await.unwrap();
    assert!(fourth.range_ids().contains(&right.range_id));
    let created = tokio::time::Instant::now();
    let deadline = created + Duration::from_secs(40);
    while fourth.range_ids().contains(&right.range_id) {
        assert!(tokio::time::Instant::now() < deadline, "the abandoned replica was kept");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(created.elapsed() >= Duration::from_secs(10), "deleted before the grace period");

    // A step planned at another epoch: refused, nothing changed.
    let r = leader_of(&handles, right.range_id).await;
    let before = r.status().await.ranges.into_iter().find(|s| s.range_id == right.range_id).unwrap().members;
    let mut client = RaftTransportClient::connect(format!("http://{}", r.addr())).await.unwrap();
    let stale = pb::PlaceRequest {
        range_id: right.range_id.get(),
        expected_epoch: Some(pb::RangeEpoch {
            version: right.epoch.version,
            conf_ver: right.epoch.conf_ver + 7,
        }),
        action: Some(pb::place_request::Action::AddVoter(4)),
    };
    let err = client.place(stale).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("the step was planned at"), "{err:?}");
    let after = r.status().await.ranges.into_iter().find(|s| s.range_id == right.range_id).unwrap().members;
    assert_eq!(before, after);
    drop((client, handles, r));
    fourth.shutdown().await;
    cluster.shutdown().await;
}
