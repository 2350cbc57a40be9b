//! Whole-cluster power loss: every node SIGKILLed at the same moment while writes are in
//! flight. Nodes buffer unsynced WAL writes in memory (`storage.manual-wal-flush`, the
//! default), so a killed process loses everything it had not synced, as a power cut would.
//! Every acknowledged write must be there after the restart. The negative control runs the
//! same with appends acknowledged before their fsync and must lose writes: proof that this
//! test can fail.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Proc, logs, start_cluster, start_node};
use zonekv_client::Client;

/// Writes from 16 tasks for a while, kills every node at once, restarts them, and returns
/// (acknowledged writes, those missing afterwards).
async fn power_loss(env: &[(&str, &str)]) -> (usize, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = start_cluster(3, dir.path(), env);
    let addrs: Vec<String> = procs.iter().map(|p| p.addr.clone()).collect();
    let mut config = common::client_config(addrs.clone());
    config.request_timeout = Duration::from_secs(2);
    config.retry_budget = Duration::from_secs(5);
    let client = Client::with_config(config.clone()).unwrap();
    client.put("warm-up", "x").await.expect("the cluster serves");

    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut writers = tokio::task::JoinSet::new();
    for t in 0..16 {
        let (client, acked) = (client.clone(), acked.clone());
        writers.spawn(async move {
            for i in 0.. {
                let key = format!("w{t:02}-{i:06}");
                if client.put(key.clone(), format!("value of {key}")).await.is_ok() {
                    acked.lock().unwrap().push(key);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The power cut: every node at once, writes still in flight.
    for p in &mut procs {
        p.child.kill().unwrap();
    }
    for p in &mut procs {
        p.child.wait().unwrap();
    }
    writers.abort_all();
    while writers.join_next().await.is_some() {}
    let acked: Vec<String> = acked.lock().unwrap().clone();

    let ids_addrs: Vec<(u64, String)> = procs.iter().map(|p| (p.id, p.addr.clone())).collect();
    drop(procs);
    let _restarted: Vec<Proc> =
        ids_addrs.iter().map(|(id, addr)| start_node(*id, addr, dir.path(), env)).collect();
    config.retry_budget = Duration::from_secs(30);
    let reader = Client::with_config(config).unwrap();
    let mut missing = Vec::new();
    for key in &acked {
        match reader.get(key.clone()).await {
            Ok(Some(v)) => assert_eq!(v, format!("value of {key}").as_bytes(), "{key} has a wrong value"),
            Ok(None) => missing.push(key.clone()),
            Err(e) => panic!("reading {key} after the restart: {e}\n{}", logs(dir.path())),
        }
    }
    (acked.len(), missing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_whole_cluster_power_loss() {
    for round in 0..2 {
        let (acked, missing) = power_loss(&[]).await;
        println!("round {round}: {acked} writes acknowledged before the cut, {} lost", missing.len());
        assert!(acked >= 200, "round {round}: only {acked} writes acknowledged before the cut");
        assert!(
            missing.is_empty(),
            "round {round}: {} of {acked} acknowledged writes lost: {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_before_the_fsync_is_caught() {
    let (acked, missing) = power_loss(&[("ZONEKV_UNSAFE_ACK_BEFORE_SYNC", "1")]).await;
    println!("acknowledged before the fsync: {acked} writes, {} lost", missing.len());
    assert!(acked >= 200, "only {acked} writes acknowledged before the cut");
    assert!(
        !missing.is_empty(),
        "{acked} writes acknowledged without fsync and none lost: the test cannot tell"
    );
}
