//! Membership and catch-up: joining a running cluster, and a follower that fell behind the
//! purged log catching up through a snapshot.

use std::time::Duration;

use zonekv_server::{LocalCluster, Node, NodeConfig, NodeId, RaftConfig, ReadConsistency};

async fn stale_value(node: &Node, key: &str, want: &str, timeout: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v = node.get(key.as_bytes(), ReadConsistency::Stale).await.ok().and_then(|(v, _)| v);
        let v = v.map(|b| String::from_utf8_lossy(&b).into_owned());
        if v.as_deref() == Some(want) || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A 3-node cluster that snapshots every 40 entries and keeps 5, with one follower stopped:
/// (cluster, leader, stopped follower).
async fn a_stopped_follower(raft: RaftConfig) -> (LocalCluster, NodeId, NodeId) {
    let raft = RaftConfig { snapshot_after_entries: 40, keep_entries_after_snapshot: 5, ..raft };
    let template = NodeConfig { raft, ..NodeConfig::default() };
    let mut cluster = LocalCluster::start_with(3, None, template).await.unwrap();
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let lagging = (1..=3u64).map(NodeId::new).find(|id| *id != leader).unwrap();
    cluster.stop_node(lagging).await;
    (cluster, leader, lagging)
}

/// Waits until the leader has snapshotted and purged the entries a follower stopped at the
/// start would need.
async fn wait_for_purge(leader: &Node) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while leader.status().await.ranges[0].purged_index < 100 {
        assert!(tokio::time::Instant::now() < deadline, "leader never purged its log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_joins_a_running_cluster_and_receives_its_data() {
    let cluster = LocalCluster::start(3, None).await.unwrap();
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let l = cluster.node(leader).unwrap();
    for i in 0..50 {
        l.put(format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        node_id: 4,
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().into(),
        join: Some(cluster.addrs()[2].clone()), // any member; redirects reach the leader
        ..NodeConfig::default()
    };
    let joined = Node::start(config).await.expect("join succeeds");
    assert!(joined.is_initialized().await);
    assert_eq!(stale_value(&joined, "k49", "v49", Duration::from_secs(10)).await.as_deref(), Some("v49"));
    let status = l.status().await;
    let voters: Vec<NodeId> = status.ranges[0]
        .members
        .iter()
        .filter(|m| m.role == zonekv_server::Role::Voter)
        .map(|m| m.node_id)
        .collect();
    assert_eq!(voters, vec![1, 2, 3, 4]);
    // Joining again (a restart with --join) is harmless.
    l.add_node(4, joined.addr(), false).await.unwrap();
    // And the node can leave.
    l.remove_node(4).await.unwrap();
    assert_eq!(l.status().await.ranges[0].members.len(), 3);
    joined.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_purged_log_catches_up_by_snapshot() {
    let (mut cluster, leader, lagging) = a_stopped_follower(RaftConfig::default()).await;
    let l = cluster.node(leader).unwrap();
    for i in 0..300 {
        l.put(format!("key-{i:04}"), format!("value-{i}")).await.unwrap();
    }
    l.delete("key-0000").await.unwrap();
    // The stopped follower can only catch up from a snapshot.
    wait_for_purge(l).await;

    cluster.restart_node(lagging).await.unwrap();
    let node = cluster.node(lagging).unwrap();
    assert_eq!(
        stale_value(node, "key-0299", "value-299", Duration::from_secs(20)).await.as_deref(),
        Some("value-299")
    );
    assert_eq!(
        stale_value(node, "key-0150", "value-150", Duration::from_secs(1)).await.as_deref(),
        Some("value-150")
    );
    assert_eq!(node.get(b"key-0000", ReadConsistency::Stale).await.unwrap().0, None);
    let page = node
        .scan(&zonekv_server::Scan {
            consistency: ReadConsistency::Stale,
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.pairs.len(), 299);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_travel_no_faster_than_the_configured_rate() {
    // 64 KiB/s each way, in 16 KiB chunks; ~320 KiB of data, so the snapshot needs ≥ 4.5 s.
    let raft = RaftConfig { snapshot_max_bytes_per_sec: 64 << 10, ..RaftConfig::default() };
    let (mut cluster, leader, lagging) = a_stopped_follower(raft).await;
    let l = cluster.node(leader).unwrap();
    let value = "v".repeat(1024);
    for i in 0..320 {
        l.put(format!("key-{i:04}"), value.clone()).await.unwrap();
    }
    wait_for_purge(l).await;

    let started = tokio::time::Instant::now();
    cluster.restart_node(lagging).await.unwrap();
    let node = cluster.node(lagging).unwrap();
    let got = stale_value(node, "key-0319", &value, Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert_eq!(got.as_deref(), Some(value.as_str()), "the follower never caught up");
    // Unlimited, the same catch-up took 0.2 s.
    assert!(took >= Duration::from_millis(4500), "a ~320 KiB snapshot arrived in {took:?} at 64 KiB/s");
    cluster.shutdown().await;
}
