//! The Raft transport between nodes (docs/multiraft.md "Transport"): the Raft messages of
//! every range between two nodes travel on one batch stream, however many ranges there are.

use std::time::Duration;

use zonekv_client::{Client, ClientError};
use zonekv_server::LocalCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_range_replicates_over_one_batch_stream_per_node_pair() {
    let cluster = LocalCluster::start(3, None).await.unwrap();
    cluster.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let client = Client::new(cluster.addrs()).unwrap();
    let admin = client.admin();
    let bounds = ["b", "d", "f", "h", "j", "l", "n"];
    for at in bounds {
        admin.split(at).await.unwrap();
    }
    // One writer per range, all at once.
    let writers = ('a'..='o').step_by(2).map(|c| {
        let client = &client;
        async move {
            for i in 0..20 {
                client.put(format!("{c}{i:02}"), format!("v{i}")).await?;
            }
            Ok::<_, ClientError>(())
        }
    });
    futures::future::try_join_all(writers).await.unwrap();

    // Every node runs all eight ranges, each with every write applied on it...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut behind = vec![];
        let mut streams = vec![];
        for n in cluster.running() {
            let s = n.status().await;
            assert_eq!(s.ranges.len(), bounds.len() + 1, "node {}", n.id());
            // Each range took its split (and its new leader's blank entry) and 20 writes.
            behind.extend(s.ranges.iter().filter(|r| r.applied_index < 20).map(|r| (n.id(), r.range_id)));
            streams.push(s.raft_streams_from_peers);
        }
        // ...and all of it came over one batch stream from each of its two peers.
        if behind.is_empty() && streams == [2, 2, 2] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replicas behind: {behind:?}; batch streams from peers per node: {streams:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in cluster.running() {
        let s = n.status().await;
        assert!(s.raft_batches_sent > 0 && s.raft_frames_sent >= s.raft_batches_sent, "{s:?}");
    }
}

/// A 3-node cluster with one follower stopped: the cluster, its leader, the stopped node.
async fn with_a_follower_stopped(
    template: zonekv_server::NodeConfig,
) -> (LocalCluster, zonekv_server::NodeHandle, zonekv_server::NodeId) {
    let mut cluster = LocalCluster::start_with(3, None, template).await.unwrap();
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let lagging = (1..=3u64).map(zonekv_server::NodeId::new).find(|id| *id != leader).unwrap();
    cluster.stop_node(lagging).await;
    let l = cluster.node(leader).unwrap().handle();
    (cluster, l, lagging)
}

/// Restarts node `lagging` and waits (30 s at most) until its first range has applied `target`.
async fn restart_and_catch_up(
    cluster: &mut LocalCluster,
    lagging: zonekv_server::NodeId,
    target: u64,
) -> zonekv_server::NodeHandle {
    cluster.restart_node(lagging).await.unwrap();
    let follower = cluster.node(lagging).unwrap().handle();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while follower.status().await.ranges[0].applied_index < target {
        assert!(tokio::time::Instant::now() < deadline, "the follower did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    follower
}

/// A follower far behind catches up from the log through many requests of one entry each,
/// far more than a replication session keeps in flight (its window): answers reopen the
/// window, nothing stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_catches_up_through_the_request_window() {
    let mut template = zonekv_server::NodeConfig::default();
    template.raft.max_entries_per_append = 1;
    template.raft.snapshot_after_entries = 100_000;
    let (mut cluster, l, lagging) = with_a_follower_stopped(template).await;
    // One writer: one entry per write.
    for i in 0..400 {
        l.put(format!("k{i:03}"), "v").await.unwrap();
    }
    let target = l.status().await.ranges[0].applied_index;
    assert!(target >= 400, "applied {target}");
    restart_and_catch_up(&mut cluster, lagging, target).await;
    drop(l);
    cluster.shutdown().await;
}

/// A follower far behind catches up on entries that, `max-entries-per-append` at a time, would
/// not fit in one Raft message: replication reads are cut at `raft.max-bytes-per-append`, so
/// the transport's message limit follows the entry size, not the entry count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_cut_by_bytes_so_large_entries_fit_the_message_limit() {
    let mut template = zonekv_server::NodeConfig::default();
    template.limits.max_value_bytes = 64 << 10;
    template.limits.max_batch_bytes = 64 << 10;
    template.raft.max_bytes_per_entry = 64 << 10;
    template.raft.max_bytes_per_append = 100 << 10;
    template.raft.snapshot_after_entries = 100_000;
    let limit = template.raft_message_limit();
    let value = vec![b'v'; 60 << 10];
    let entries = template.raft.max_entries_per_append as usize;
    assert!(entries * value.len() > limit, "64 entries must exceed the {limit}-byte limit");
    let (mut cluster, l, lagging) = with_a_follower_stopped(template).await;
    // One writer: one 60 KiB entry per write.
    for i in 0..150 {
        l.put(format!("k{i:03}"), value.clone()).await.unwrap();
    }
    let target = l.status().await.ranges[0].applied_index;
    let follower = restart_and_catch_up(&mut cluster, lagging, target).await;
    let (v, _) = follower.get(b"k149", zonekv_server::ReadConsistency::Stale).await.unwrap();
    assert_eq!(v.as_deref(), Some(&value[..]));
    drop(l);
    cluster.shutdown().await;
}
