//! The meta range's quorum (docs/disk-faults.md): the placement driver keeps the first range's
//! voters on live nodes, so a minority lost for good does not leave the meta range one
//! failure from stopping (id allocation, splits, moves, the directory and the driver itself).

use std::collections::BTreeSet;
use std::time::Duration;

use zonekv_server::{FIRST_RANGE, LocalCluster, NodeConfig, NodeId, Role};

/// The first range's voters as its leader reports them, once a running node leads it.
async fn meta_voters(cluster: &LocalCluster) -> Option<(NodeId, BTreeSet<NodeId>)> {
    for n in cluster.running() {
        let s = n.status().await;
        if let Some(r) = s.ranges.iter().find(|r| r.range_id == FIRST_RANGE && r.state == "leader") {
            let voters = r.members.iter().filter(|m| m.role == Role::Voter).map(|m| m.node_id).collect();
            return Some((n.id(), voters));
        }
    }
    None
}

/// 5 nodes; 2 are stopped for good and declared dead after `dead-after` (3 s here): the
/// driver demotes them, so the 3 survivors are the voters. Then the meta leader is killed too,
/// and the meta range still elects, allocates ids and splits with 2 of the 5 nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meta_range_survives_two_dead_nodes_and_then_a_third() {
    let mut template = NodeConfig::default();
    template.raft.heartbeat_interval_ms = 100;
    template.raft.election_timeout_min_ms = 400;
    template.raft.election_timeout_max_ms = 800;
    template.raft.node_liveness_interval_ms = 100;
    template.raft.node_liveness_timeout_ms = 1000;
    template.placement.interval_ms = 200;
    template.placement.dead_after_ms = 3000;
    let mut cluster = LocalCluster::start_with(5, None, template).await.unwrap();
    cluster.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let (leader, voters) = meta_voters(&cluster).await.expect("a meta leader");
    assert_eq!(voters.len(), 5, "{voters:?}");

    // Two followers of the meta range die for good.
    let dead: Vec<NodeId> = voters.iter().copied().filter(|&v| v != leader).take(2).collect();
    for &d in &dead {
        cluster.stop_node(d).await;
    }
    let survivors: BTreeSet<NodeId> = voters.iter().copied().filter(|v| !dead.contains(v)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((_, v)) = meta_voters(&cluster).await
            && v == survivors
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the meta range's voters are {:?} 30 s after nodes {dead:?} died, not {survivors:?}",
            meta_voters(&cluster).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // One more failure: the meta leader itself.
    cluster.stop_node(leader).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (new_leader, _) = loop {
        if let Some(found) = meta_voters(&cluster).await {
            break found;
        }
        assert!(tokio::time::Instant::now() < deadline, "no meta leader among the last two nodes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let meta = cluster.node(new_leader).unwrap().handle();
    // Splitting allocates a range id and writes the directory: the meta range takes writes.
    let (left, right) = meta.split("m").await.expect("the meta range took no write with 2 of 5 nodes");
    assert_ne!(left.range_id, right.range_id);
    meta.put("a", "written with 2 of 5 nodes").await.unwrap();
    cluster.shutdown().await;
}
