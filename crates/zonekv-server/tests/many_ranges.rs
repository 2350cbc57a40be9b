//! Issue 5's acceptance test, on real `zonekv` processes: 100,000 keys written by concurrent
//! clients while ranges split on their own (a small key threshold), so the keyspace ends in at
//! least 50 ranges; every acknowledged write reads back, a full scan returns every key once and
//! in order, and after SIGKILL of one node everything is still readable and writable.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Proc, cli, free_port, logs, spawn_logged, wait_serving};
use zonekv_client::{AdminClient, Client, ClientError, ScanOptions};

const KEYS: u32 = 100_000;
const WRITERS: u32 = 256;

fn key(i: u32) -> Bytes {
    // Spread over the keyspace (not in write order), as a hash-keyed identity store would.
    Bytes::from(format!("user/{:08x}", i.wrapping_mul(2_654_435_761)))
}

/// Every key and value of the cluster, by scanning across all ranges page by page.
async fn scan_all(client: &Client) -> Vec<(Bytes, Bytes)> {
    let mut out = Vec::new();
    let mut start = std::ops::Bound::Unbounded;
    loop {
        let opts = ScanOptions { start: start.clone(), limit: 10_000, ..ScanOptions::default() };
        let page = client.scan(&opts).await.expect("scan");
        let last = page.pairs.last().map(|(k, _)| k.clone());
        out.extend(page.pairs);
        match (page.more, last) {
            (true, Some(k)) => start = std::ops::Bound::Excluded(k),
            _ => return out,
        }
    }
}

async fn range_count(admin: &AdminClient, addr: &str) -> usize {
    admin.status(addr).await.map_or(0, |s| s.ranges.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stderr)] // reports the run's figures (with --nocapture)
async fn a_hundred_thousand_keys_split_into_many_ranges_and_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zonekv.toml");
    std::fs::write(&config, "[split]\nrange-max-keys = 1500\ncheck-interval-ms = 100\n").unwrap();
    let config = config.to_str().unwrap().to_string();
    let mut procs: Vec<Proc> = (1..=3)
        .map(|id| {
            let addr = format!("127.0.0.1:{}", free_port());
            let log = std::fs::File::create(dir.path().join(format!("node-{id}.log"))).unwrap();
            let mut child = spawn_logged(id, &addr, dir.path(), &["--config", &config], Stdio::from(log));
            wait_serving(&mut child);
            Proc { id, addr, child }
        })
        .collect();
    let spec: Vec<String> = procs.iter().map(|p| format!("{}={}", p.id, p.addr)).collect();
    cli(&["init", "--nodes", &spec.join(",")]);
    let addrs: Vec<String> = procs.iter().map(|p| p.addr.clone()).collect();
    let admin = common::admin(addrs.clone());
    let mut config = common::client_config(addrs.clone());
    config.retry_budget = Duration::from_secs(30);
    let client = Client::with_config(config).unwrap();

    let t0 = std::time::Instant::now();
    // Concurrent writers; the ranges split under them.
    let acked: Arc<Mutex<BTreeMap<Bytes, Bytes>>> = Arc::default();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, acked) = (client.clone(), acked.clone());
            tokio::spawn(async move {
                let mut unknown = 0;
                for i in (w..KEYS).step_by(WRITERS as usize) {
                    let value = Bytes::from(format!("v{i}"));
                    match client.put(key(i), value.clone()).await {
                        Ok(()) => {
                            acked.lock().unwrap().insert(key(i), value);
                        }
                        Err(ClientError::OutcomeUnknown(_)) => unknown += 1,
                        Err(e) => panic!("write {i} failed: {e}"),
                    }
                }
                unknown
            })
        })
        .collect();
    let mut unknown = 0;
    for w in writers {
        unknown += w.await.unwrap_or_else(|e| panic!("{e}\n{}", logs(dir.path())));
    }
    let during = range_count(&admin, &addrs[0]).await;
    let write_time = t0.elapsed();
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert_eq!(acked.len() + unknown, KEYS as usize);
    assert!(unknown <= 10, "{unknown} writes with unknown outcome without any fault");
    assert!(during >= 20, "only {during} ranges by the end of the writes: splits did not keep up");

    // Splits that were due finish; at least 50 ranges.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut ranges = during;
    while ranges < 50 {
        assert!(tokio::time::Instant::now() < deadline, "only {ranges} ranges\n{}", logs(dir.path()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        ranges = range_count(&admin, &addrs[0]).await;
    }

    // Operators see every range. A range split off a moment ago lists no members until its
    // Raft group has published its first state, so list again until every line has them.
    let complete = |l: &&str| l.contains(" leader ") && l.contains(" KiB  replicas 127.0.0.1:");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let listing = loop {
        let listing = cli(&["ranges", "--addr", &addrs[1]]);
        let settled = listing.lines().filter(|l| l.starts_with("range ")).all(|l| complete(&l));
        if settled || tokio::time::Instant::now() > deadline {
            break listing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lines: Vec<&str> = listing.lines().filter(|l| l.starts_with("range ")).collect();
    assert!(lines.len() >= 50, "{listing}");
    assert!(lines.iter().all(complete), "{listing}");
    assert!(lines[0].starts_with("range 1 [\"\", "), "{listing}");

    // Every acknowledged write reads back; a full scan returns every key once, in order.
    let all = scan_all(&client).await;
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "scan out of order or with a duplicate");
    let scanned: BTreeMap<Bytes, Bytes> = all.into_iter().collect();
    for (k, v) in &acked {
        assert_eq!(scanned.get(k), Some(v), "acknowledged {k:?} missing from the scan");
    }
    assert!(scanned.len() <= KEYS as usize, "the scan returned keys never written");
    for (k, v) in acked.iter().step_by(97) {
        assert_eq!(client.get(k.clone()).await.unwrap().as_ref(), Some(v), "get {k:?}");
    }

    // SIGKILL one node: every key is still readable and the keyspace still writable.
    let victim = procs.remove(0);
    let mut victim = victim;
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let survivors: Vec<String> = procs.iter().map(|p| p.addr.clone()).collect();
    let mut config = common::client_config(survivors.clone());
    config.retry_budget = Duration::from_secs(30);
    let client = Client::with_config(config).unwrap();
    let after = scan_all(&client).await;
    let after: BTreeMap<Bytes, Bytes> = after.into_iter().collect();
    assert_eq!(after, scanned, "the scan changed after the kill");
    for i in (0..KEYS).step_by(331) {
        let k = Bytes::from(format!("after/{:08x}", i.wrapping_mul(2_654_435_761)));
        client.put(k.clone(), "x").await.unwrap_or_else(|e| panic!("write after the kill: {e}"));
        assert_eq!(client.get(k).await.unwrap().as_deref(), Some(&b"x"[..]));
    }
    let ranges = range_count(&admin, &survivors[0]).await;
    eprintln!(
        "{} keys acknowledged in {write_time:?}, {unknown} unknown; {during} ranges at the end of the writes, {ranges} after",
        acked.len()
    );
}
