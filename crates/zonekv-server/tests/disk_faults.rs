//! Disk faults injected under a running in-process cluster (docs/disk-faults.md): a failed
//! fsync fail-stops its node; a hung fsync makes its node's liveness stop vouching for it, so
//! the quiet ranges it leads elect elsewhere. No acknowledged write is lost in either.

use std::collections::BTreeMap;
use std::time::Duration;

use zonekv_client::Client;
use zonekv_server::{
    DiskFaultTable, LocalCluster, NodeConfig, NodeId, NodeOptions, RangeId, ReadConsistency,
};

/// Test timings: quick elections, quiescence on, liveness noticing a silent node within 1 s.
fn template() -> NodeConfig {
    let mut t = NodeConfig::default();
    t.raft.heartbeat_interval_ms = 100;
    t.raft.election_timeout_min_ms = 400;
    t.raft.election_timeout_max_ms = 800;
    t.raft.quiesce = true;
    t.raft.node_liveness_interval_ms = 100;
    t.raft.node_liveness_timeout_ms = 1000;
    t
}

async fn start(size: usize) -> (DiskFaultTable, LocalCluster) {
    let disks = DiskFaultTable::new();
    let options = NodeOptions { disk_faults: Some(disks.clone()), ..NodeOptions::default() };
    let cluster = LocalCluster::start_with_options(size, None, template(), options).await.unwrap();
    cluster.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    (disks, cluster)
}

/// The node leading range `range`, once one does.
async fn leader_of(cluster: &LocalCluster, range: impl Into<RangeId>) -> NodeId {
    let range = range.into();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(n) = cluster.running().find(|n| n.leading().contains(&range)) {
            return n.id();
        }
        assert!(tokio::time::Instant::now() < deadline, "range {range} has no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `k000`… for every `i` in `keys` through `client`; returns those acknowledged (a
/// write whose outcome is unknown or that was refused is not), panicking on failures if
/// `must_succeed`.
async fn write_keys(
    client: &Client,
    keys: std::ops::Range<u32>,
    must_succeed: bool,
) -> BTreeMap<String, String> {
    let mut acked = BTreeMap::new();
    for i in keys {
        let (k, v) = (format!("k{i:03}"), format!("v{i}"));
        match client.put(k.clone(), v.clone()).await {
            Ok(_) => {
                acked.insert(k, v);
            }
            Err(e) => assert!(!must_succeed, "writing {k}: {e}"),
        }
    }
    acked
}

/// Reads every key of `acked` back through `client` (linearizable) and checks its value.
async fn read_back(client: &Client, acked: &BTreeMap<String, String>) {
    for (k, v) in acked {
        let got = client.get(k.clone()).await.unwrap_or_else(|e| panic!("reading acknowledged {k}: {e}"));
        assert_eq!(got.as_deref(), Some(v.as_bytes()), "acknowledged write {k} = {v} lost");
    }
}

/// Stops node `id` (stopped for good after a disk fault), restarts it on its data and waits
/// until it has applied `key` = `value` (written while it was down), with its storage healthy.
async fn restart_and_catch_up(cluster: &mut LocalCluster, id: NodeId, key: &str, value: &str) {
    cluster.stop_node(id).await;
    cluster.restart_node(id).await.unwrap();
    let restarted = cluster.node(id).unwrap().handle();
    assert_eq!(restarted.storage_failure(), None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while restarted.get(key.as_bytes(), ReadConsistency::Stale).await.ok().and_then(|s| s.0).as_deref()
        != Some(value.as_bytes())
    {
        assert!(tokio::time::Instant::now() < deadline, "the restarted node {id} never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A failed fsync on the leader: the node stops for good — it does not retry the sync and
/// carry on, even once its disk works again — its requests fail naming the cause, the others
/// elect a leader, and every acknowledged write is there. Restarted, the node rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_on_the_leader_stops_its_node_and_loses_nothing() {
    let (disks, mut cluster) = start(3).await;
    let client = Client::new(cluster.addrs()).unwrap();
    let mut acked = write_keys(&client, 0..100, true).await;
    let victim = leader_of(&cluster, 1u64).await;
    disks.node(victim).fail_syncs(true);
    // Writes go on; the ones acknowledged during and after the failure must survive too.
    acked.extend(write_keys(&client, 100..200, false).await);
    let node = cluster.node(victim).unwrap().handle();
    let reason = tokio::time::timeout(Duration::from_secs(10), node.storage_failed())
        .await
        .expect("the node did not stop within 10 s of its fsync failing");
    assert!(reason.contains("syncing the Raft log failed"), "{reason}");
    assert!(disks.node(victim).failed_syncs() >= 1);
    // The disk works again: the node stays stopped (it cannot know what the failed sync lost).
    disks.node(victim).fail_syncs(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = node.put("after", "heal").await.expect_err("a stopped node took a write");
    assert!(err.to_string().contains("has stopped") && err.to_string().contains("syncing"), "{err}");
    let err = node.get(b"k000", ReadConsistency::Stale).await.expect_err("a stopped node served a read");
    assert!(err.to_string().contains("has stopped"), "{err}");
    assert!(node.status().await.ranges.iter().all(|r| r.state != "leader"), "a stopped node still leads");

    // The others serve every acknowledged write.
    let others: Vec<String> =
        cluster.running().filter(|n| n.id() != victim).map(|n| n.addr().to_string()).collect();
    let survivors = Client::new(others).unwrap();
    read_back(&survivors, &acked).await;
    survivors.put("k-after", "written without the stopped node").await.unwrap();
    acked.insert("k-after".into(), "written without the stopped node".into());

    // Restarted (its disk checked), the node replays what survived and catches up.
    drop(node);
    restart_and_catch_up(&mut cluster, victim, "k-after", "written without the stopped node").await;
    read_back(&client, &acked).await;
    cluster.shutdown().await;
}

/// How many of the cluster's ranges have a quiet leader.
async fn quiet_ranges(cluster: &LocalCluster) -> usize {
    let mut quiet = 0;
    for n in cluster.running() {
        quiet += n.status().await.ranges.iter().filter(|r| r.quiesced).count();
    }
    quiet
}

/// A 10 s fsync stall on the node leading the most of 100 quiet ranges (a gray failure: the
/// process runs, its Raft I/O hangs): its liveness pings stop once a sync has run for
/// `storage.max-sync-stall-ms` (2 s), so the quiet followers wake and every range it led has a
/// leader elsewhere within 10 s of the stall's start; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_fsync_moves_the_leadership_of_quiet_ranges_within_10_s() {
    const RANGES: usize = 100;
    let (disks, cluster) = start(3).await;
    let meta = cluster.node(leader_of(&cluster, 1u64).await).unwrap().handle();
    // Split from the top down: every split key is in the first range, which `meta` leads.
    let keys: Vec<String> = (0..RANGES).map(|i| format!("r{i:03}")).collect();
    for k in keys[1..].iter().rev() {
        meta.split(k.clone()).await.unwrap_or_else(|e| panic!("splitting at {k}: {e}"));
    }
    let client = Client::new(cluster.addrs()).unwrap();
    let mut acked = BTreeMap::new();
    for k in &keys {
        client.put(k.clone(), "before").await.unwrap();
        acked.insert(k.clone(), "before".to_string());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while quiet_ranges(&cluster).await < RANGES {
        assert!(tokio::time::Instant::now() < deadline, "the ranges never all went quiet");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let victim = cluster.running().max_by_key(|n| n.leading().len()).unwrap().handle();
    let led = victim.leading();
    assert!(led.len() >= RANGES / 3, "node {} leads only {} ranges", victim.id(), led.len());

    let stalled_at = tokio::time::Instant::now();
    disks.node(victim.id()).stall_syncs(Duration::from_secs(10));
    loop {
        let mut moved = 0;
        for n in cluster.running().filter(|n| n.id() != victim.id()) {
            moved += n.leading().iter().filter(|r| led.contains(r)).count();
        }
        if moved == led.len() {
            break;
        }
        assert!(
            stalled_at.elapsed() < Duration::from_secs(10),
            "{moved} of the {} ranges node {} led have a new leader 10 s into its fsync stall",
            led.len(),
            victim.id()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let moved_after = stalled_at.elapsed();
    // The ranges serve without the stalled node: writes commit on the other two.
    for k in &keys {
        client.put(k.clone(), "during").await.unwrap_or_else(|e| panic!("writing {k} during the stall: {e}"));
        acked.insert(k.clone(), "during".to_string());
    }
    disks.node(victim.id()).stall_syncs(Duration::ZERO);
    read_back(&client, &acked).await;
    assert!(moved_after < Duration::from_secs(10), "{moved_after:?}");
    cluster.shutdown().await;
}

/// The newest (live) write-ahead log file in a node's data directory.
fn live_wal(dir: &std::path::Path) -> std::path::PathBuf {
    let mut wals: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    wals.sort();
    wals.pop().expect("a live WAL file")
}

/// A follower whose live WAL is damaged (a bit flip inside what it had synced) would come
/// back having forgotten log entries and votes it acknowledged; it refuses to start instead,
/// so it neither votes nor serves. The leader is then killed too: the other three elect and
/// serve every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_damaged_live_wal_refuses_to_start_and_nothing_is_lost() {
    let (_disks, mut cluster) = start(5).await;
    let client = Client::new(cluster.addrs()).unwrap();
    let acked = write_keys(&client, 0..200, true).await;
    let leader = leader_of(&cluster, 1u64).await;
    let follower = cluster.running().map(|n| n.id()).find(|&id| id != leader).unwrap();
    // Every write is on the follower before it stops.
    let node = cluster.node(follower).unwrap().handle();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while node.get(b"k199", ReadConsistency::Stale).await.ok().and_then(|s| s.0).is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the follower never got every write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = node.config().data_dir.clone();
    drop(node);
    cluster.stop_node(follower).await;
    let wal = live_wal(&dir);
    let mut bytes = std::fs::read(&wal).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x08;
    std::fs::write(&wal, &bytes).unwrap();

    let err = match cluster.restart_node(follower).await {
        Ok(()) => panic!("node {follower} started on a WAL that lost synced writes"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("lost writes that were synced"), "{err}");
    cluster.stop_node(leader).await;
    let survivors = Client::new(cluster.running().map(|n| n.addr().to_string()).collect::<Vec<_>>()).unwrap();
    read_back(&survivors, &acked).await;
    survivors.put("k-after", "three of five").await.unwrap();
    cluster.shutdown().await;
}

/// Puts `key` at the leader of the first range (which holds every test key), following a
/// leadership change: returns the first answer that is not `NotLeader`.
async fn put_at_leader(cluster: &LocalCluster, key: &str, value: &str) -> zonekv_server::Result<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let leader = cluster.node(leader_of(cluster, 1u64).await).unwrap().handle();
        match leader.put(key.to_string(), value.to_string()).await {
            Err(zonekv_server::Error::Store(zonekv_server::StoreError::NotLeader { .. }))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => return other,
        }
    }
}

/// Every node's disk below its free-space reserve (`storage.min-free-bytes`, 256 MiB by
/// default): writes that add data are refused with `RESOURCE_EXHAUSTED` naming the disk and
/// the setting, and write nothing; reads and deletes go on; no node stops. Once space returns,
/// writes work again by themselves, and every acknowledged write is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_below_its_reserve_refuses_writes_serves_reads_and_recovers() {
    let (disks, cluster) = start(3).await;
    let client = Client::new(cluster.addrs()).unwrap();
    let mut acked = write_keys(&client, 0..50, true).await;
    let ids: Vec<NodeId> = cluster.running().map(|n| n.id()).collect();
    for &id in &ids {
        disks.node(id).report_free_space(Some(1 << 20));
    }
    // A free-space reading is trusted for 100 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let err = put_at_leader(&cluster, "k-full", "refused").await.expect_err("a full disk took a write");
    let msg = err.to_string();
    assert!(msg.contains("1048576 bytes free") && msg.contains("storage.min-free-bytes"), "{msg}");
    assert!(msg.contains("nothing was written"), "{msg}");
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let leader = cluster.node(leader_of(&cluster, 1u64).await).unwrap().handle();
    // Only the leader refuses for its disk; a follower sends the client to the leader.
    let follower = cluster.running().find(|n| n.id() != leader.id()).unwrap().handle();
    let err = follower.put("k-full", "refused").await.expect_err("a follower took a write");
    assert!(matches!(err, zonekv_server::Error::Store(zonekv_server::StoreError::NotLeader { .. })), "{err}");
    let batch = vec![zonekv_server::Mutation::Put { key: "k-batch".into(), value: "refused".into() }];
    assert!(leader.batch(batch).await.unwrap_err().to_string().contains("storage.min-free-bytes"));
    let cas = leader.compare_and_swap("k001", Some("v1".into()), Some("refused".into())).await;
    assert!(cas.unwrap_err().to_string().contains("storage.min-free-bytes"));

    // Reads are served, deletes free space and are taken, nothing refused was written.
    read_back(&client, &acked).await;
    assert_eq!(client.get("k-full").await.unwrap(), None, "a refused write was applied");
    assert_eq!(client.get("k-batch").await.unwrap(), None, "a refused batch was applied");
    assert!(client.delete("k000").await.unwrap(), "k000 existed");
    acked.remove("k000");
    assert!(cluster.running().all(|n| n.handle().storage_failure().is_none()), "a node stopped");

    // Space returns: writes resume without a restart.
    for &id in &ids {
        disks.node(id).report_free_space(None);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    put_at_leader(&cluster, "k-full", "accepted").await.expect("space is back");
    acked.insert("k-full".into(), "accepted".into());
    acked.extend(write_keys(&client, 50..100, true).await);
    read_back(&client, &acked).await;
    assert_eq!(client.get("k000").await.unwrap(), None, "the delete was lost");
    cluster.shutdown().await;
}

/// A follower's disk full to the last byte (ENOSPC inside the reserve, which a burst of
/// replication can reach): its first failed log write stops the node — it never runs on a log
/// it could not write — naming the cause; the other two keep committing. With space back and
/// the node restarted, it catches up and serves in a quorum without the old leader; no
/// acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_on_a_follower_stops_its_node_until_restarted_and_loses_nothing() {
    let (disks, mut cluster) = start(3).await;
    let client = Client::new(cluster.addrs()).unwrap();
    let mut acked = write_keys(&client, 0..50, true).await;
    let leader = leader_of(&cluster, 1u64).await;
    let victim = cluster.running().map(|n| n.id()).find(|&id| id != leader).unwrap();
    disks.node(victim).fill_disk(true);
    acked.extend(write_keys(&client, 50..150, false).await);
    let node = cluster.node(victim).unwrap().handle();
    let reason = tokio::time::timeout(Duration::from_secs(10), node.storage_failed())
        .await
        .expect("the node did not stop within 10 s of its disk filling up");
    assert!(
        reason.contains("failed") && reason.contains("free space") && reason.contains("restart"),
        "{reason}"
    );
    assert!(reason.to_lowercase().contains("no space"), "the cause is named: {reason}");
    // The stopped node answers UNAVAILABLE (not "disk full", which would make a client back
    // off against it): a client that tries it first goes on to the leader.
    let leader_addr = cluster.node(leader).unwrap().handle().addr().to_string();
    let via_stopped = Client::new(vec![node.addr().to_string(), leader_addr]).unwrap();
    via_stopped.put("k-via", "the stopped node first").await.expect("the client moved on to the leader");
    acked.insert("k-via".into(), "the stopped node first".into());
    acked.extend(write_keys(&client, 150..200, true).await);

    disks.node(victim).fill_disk(false);
    drop(node);
    restart_and_catch_up(&mut cluster, victim, "k199", "v199").await;
    // Without the old leader, the quorum is the restarted node and the other follower.
    cluster.stop_node(leader).await;
    let others: Vec<String> = cluster.running().map(|n| n.addr().to_string()).collect();
    read_back(&Client::new(others).unwrap(), &acked).await;
    cluster.shutdown().await;
}
