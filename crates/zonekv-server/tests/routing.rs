//! The client over many ranges (docs/multiraft.md, "Routing"): it routes each key to its
//! range's leader, finds moved keys again after splits, scans across ranges in order exactly
//! once, and refuses batches that span ranges; splits of ranges led away from the meta range's
//! leader reach it over the network; ranges split on their own past a threshold.

use std::ops::Bound;
use std::time::Duration;

use bytes::Bytes;
use zonekv_client::{Client, ClientError, Mutation, ScanOptions};
use zonekv_server::{LocalCluster, NodeConfig, NodeHandle};

fn key(i: u32) -> Bytes {
    Bytes::from(format!("k{i:03}"))
}

fn keys(page: &zonekv_client::ScanPage) -> Vec<Bytes> {
    page.pairs.iter().map(|(k, _)| k.clone()).collect()
}

/// The node whose replica of `range` leads it, once one does.
async fn leader_of(cluster: &LocalCluster, range: impl Into<zonekv_server::RangeId>) -> NodeHandle {
    let range = range.into();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        for n in cluster.running() {
            let status = n.status().await;
            if status.ranges.iter().any(|r| r.range_id == range && r.state == "leader") {
                return n.handle();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "range {range} has no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_routes_by_range_and_scans_across_ranges() {
    let cluster = LocalCluster::start(3, None).await.unwrap();
    cluster.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let client = Client::new(cluster.addrs()).unwrap();
    for i in 0..200 {
        client.put(key(i), format!("v{i}")).await.unwrap();
    }
    // The client cached one range for everything; splits make that stale.
    let admin = client.admin();
    let mut ids = vec![];
    for at in [50, 100, 150] {
        let (_, right) = admin.split(key(at)).await.unwrap();
        ids.push(right);
    }
    for i in 0..200 {
        client.put(key(i), format!("w{i}")).await.unwrap();
    }
    for i in (0..200).step_by(7) {
        assert_eq!(client.get(key(i)).await.unwrap(), Some(Bytes::from(format!("w{i}"))), "key {i}");
    }

    // Every key once, in order, across the four ranges.
    let all = client.scan(&ScanOptions::default()).await.unwrap();
    assert_eq!(keys(&all), (0..200).map(key).collect::<Vec<_>>());
    assert!(!all.more);
    assert!(all.pairs.iter().enumerate().all(|(i, (_, v))| v == &format!("w{i}")));
    // A limit that stops inside the third range.
    let opts = ScanOptions { start: Bound::Included(key(40)), limit: 70, ..ScanOptions::default() };
    let page = client.scan(&opts).await.unwrap();
    assert_eq!(keys(&page), (40..110).map(key).collect::<Vec<_>>());
    assert!(page.more);
    // Bounds inside two ranges, both exclusive.
    let opts = ScanOptions {
        start: Bound::Excluded(key(45)),
        end: Bound::Excluded(key(55)),
        ..ScanOptions::default()
    };
    assert_eq!(keys(&client.scan(&opts).await.unwrap()), (46..55).map(key).collect::<Vec<_>>());
    // Reverse: all of it, and from before a range's first key down across a boundary.
    let rev = client.scan(&ScanOptions { reverse: true, ..ScanOptions::default() }).await.unwrap();
    assert_eq!(keys(&rev), (0..200).rev().map(key).collect::<Vec<_>>());
    let opts =
        ScanOptions { end: Bound::Excluded(key(100)), limit: 60, reverse: true, ..ScanOptions::default() };
    let page = client.scan(&opts).await.unwrap();
    assert_eq!(keys(&page), (40..100).rev().map(key).collect::<Vec<_>>());
    assert!(page.more);
    // Exactly at a boundary: the limit ends the scan at the end of a range.
    let opts = ScanOptions { start: Bound::Included(key(0)), limit: 50, ..ScanOptions::default() };
    let page = client.scan(&opts).await.unwrap();
    assert_eq!((page.pairs.len(), page.more), (50, true));

    // A batch inside one range is atomic; across ranges it is refused and writes nothing.
    client.batch(vec![Mutation::Put(key(1), "b".into()), Mutation::Put(key(2), "b".into())]).await.unwrap();
    let err = client
        .batch(vec![Mutation::Put(key(3), "x".into()), Mutation::Put(key(160), "x".into())])
        .await
        .unwrap_err();
    assert!(matches!(&err, ClientError::InvalidArgument(m) if m.contains("different ranges")), "{err:?}");
    assert_eq!(client.get(key(3)).await.unwrap(), Some(Bytes::from("w3")));
    assert_eq!(client.get(key(1)).await.unwrap(), Some(Bytes::from("b")));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_led_away_from_the_meta_leader_splits_through_it() {
    let cluster = LocalCluster::start(3, None).await.unwrap();
    cluster.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let meta = leader_of(&cluster, 1).await;
    let (_, right) = meta.split("m").await.unwrap();
    // Move the new range's leadership to a node that does not lead the meta range.
    let other = cluster.running().map(|n| n.handle()).find(|n| n.id() != meta.id()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let leader = leader_of(&cluster, right.range_id).await;
        if leader.id() == other.id() {
            break;
        }
        let _ = leader.transfer_leader(right.range_id, other.id()).await;
        assert!(tokio::time::Instant::now() < deadline, "leadership never moved");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(leader_of(&cluster, 1).await.id(), other.id(), "the meta range stayed where it was");
    // Status names nodes (and, separately, the range's own replica ids).
    let status = other.status().await;
    let r = status.ranges.iter().find(|r| r.range_id == right.range_id).unwrap();
    assert_eq!(r.leader.as_ref().map(|l| l.0), Some(other.id()));
    let mut nodes: Vec<(u64, u64)> =
        r.members.iter().map(|m| (m.node_id.get(), m.replica_id.get())).collect();
    nodes.sort_unstable();
    let mut want: Vec<(u64, u64)> =
        right.replicas.iter().map(|x| (x.node_id.get(), x.replica_id.get())).collect();
    want.sort_unstable();
    assert_eq!(nodes, want);
    assert_eq!(nodes.iter().map(|n| n.0).collect::<Vec<_>>(), [1, 2, 3]);

    // Ids come from the meta range's leader on another node; the directory learns the split.
    other.put("x", "1").await.unwrap();
    let (left, newer) = other.split("t").await.unwrap();
    assert_eq!(left.range_id, right.range_id);
    assert!(newer.range_id > right.range_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Ask a node for a key's range from its directory copy: the meta leader's node holds
        // every range here, so use the directory through the range lookup of each node.
        let found = meta.lookup_range(b"x", false).unwrap().desc;
        if found.range_id == newer.range_id {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no node serves the new range");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = Client::new(cluster.addrs()).unwrap();
    assert_eq!(client.get("x").await.unwrap(), Some(Bytes::from("1")));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_split_on_their_own_past_the_key_threshold() {
    let mut template = NodeConfig::default();
    template.split.range_max_keys = 100;
    template.split.check_interval_ms = 100;
    let cluster = LocalCluster::start_with(3, None, template).await.unwrap();
    cluster.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let client = Client::new(cluster.addrs()).unwrap();
    let writers: Vec<_> = (0..4u32)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in (w..1000).step_by(4) {
                    client.put(format!("auto/{i:04}"), format!("v{i}")).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let node = cluster.running().next().unwrap().handle();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while node.range_ids().len() < 8 {
        assert!(tokio::time::Instant::now() < deadline, "only {} ranges", node.range_ids().len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opts = ScanOptions { limit: 5000, ..ScanOptions::default() };
    let all = client.scan(&opts).await.unwrap();
    let want: Vec<Bytes> = (0..1000).map(|i| Bytes::from(format!("auto/{i:04}"))).collect();
    assert_eq!(keys(&all), want);
    cluster.shutdown().await;
}
