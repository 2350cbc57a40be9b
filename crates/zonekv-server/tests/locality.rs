//! Node localities (docs/placement.md, "Model"): set in the configuration or with
//! `zonekv start --locality`, checked at startup, and learnt by every other node through node
//! liveness pings (one per node pair, not per range).

use std::time::Duration;

use zonekv_server::{LocalCluster, Node, NodeConfig, Peer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_locality_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, why) in [("region", "not key=value"), ("zone=a,zone=b", "twice"), ("zone=a b", "letters")] {
        let config = NodeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().into(),
            locality: bad.into(),
            ..NodeConfig::default()
        };
        let err = match Node::start(config).await {
            Ok(node) => {
                node.shutdown().await;
                panic!("a node started with locality {bad:?}");
            }
            Err(e) => e.to_string(),
        };
        assert!(err.contains("bad locality") && err.contains(why), "{bad:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_learns_where_its_peers_run() {
    let localities: Vec<String> =
        ["region=eu,zone=eu-1", "region=eu,zone=eu-2", "region=us,zone=us-1"].map(String::from).to_vec();
    let cluster = LocalCluster::start_placed(&localities, None, NodeConfig::default()).await.unwrap();
    cluster.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for n in cluster.running() {
        let want: Vec<Peer> = (1..=3u64)
            .filter(|&id| id != n.id())
            .map(|id| Peer { node_id: id.into(), locality: localities[id as usize - 1].clone(), live: true })
            .collect();
        loop {
            let s = n.status().await;
            assert_eq!(s.locality, localities[n.id().get() as usize - 1]);
            if s.peers == want {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "node {}: peers {:?}", n.id(), s.peers);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The placement logic judges a live cluster from one node's status: localities from the
/// pings, replicas from the range status. Three nodes in one zone break survival zone (each
/// voter needs its own zone); three zones keep it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_placement_view_of_a_live_cluster_finds_replicas_that_break_survival() {
    use zonekv_placement::{Planner, Policy};
    for (zones, broken) in [(["a", "b", "c"], false), (["a", "a", "a"], true)] {
        let localities: Vec<String> = zones.iter().map(|z| format!("region=eu,zone={z}")).collect();
        let cluster = LocalCluster::start_placed(&localities, None, NodeConfig::default()).await.unwrap();
        cluster.wait_for_leader(Duration::from_secs(20)).await.unwrap();
        let node = cluster.node(1).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while node.status().await.peers.iter().filter(|p| p.live).count() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "peers never pinged");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let view = zonekv_server::placement::cluster_of(&node.status().await).unwrap();
        let range = view.range(1).unwrap();
        assert_eq!(range.voters().count(), 3);
        let violations = Planner::default().violations(&view, &Policy::default(), range, 0);
        assert_eq!(!violations.is_empty(), broken, "zones {zones:?}: {violations:?}");
        assert_eq!(Policy::default().check(&view).is_err(), broken, "zones {zones:?}");
        cluster.shutdown().await;
    }
}
