//! `zonekv demo`: a 3-node cluster in one process that survives the loss of its leader.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use zonekv_client::{Client, ClientConfig, ClientError, ReadConsistency, ScanOptions};

use crate::{Error, LocalCluster, Result};

/// What the demo found; it fails if anything acknowledged was lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemoReport {
    /// Writes acknowledged to the client.
    pub acknowledged: usize,
    /// Acknowledged writes read back after the failover.
    pub read_back: usize,
    /// Writes whose outcome the client could not know (not counted as acknowledged).
    pub outcome_unknown: usize,
    /// The leader that was stopped, and the one that replaced it.
    pub old_leader: zonekv_raft::NodeId,
    /// The new leader.
    pub new_leader: zonekv_raft::NodeId,
    /// Time from stopping the leader to the first acknowledged write after it.
    pub failover: Duration,
}

fn step(n: u32, text: impl AsRef<str>) {
    println!("[{n}] {}", text.as_ref());
}

fn client_error(e: ClientError) -> Error {
    Error::Unavailable(format!("client: {e}"))
}

/// Runs the demo, printing each step. Data goes under `data_dir`, or a temporary directory.
pub async fn run(data_dir: Option<&Path>) -> Result<DemoReport> {
    let started = Instant::now();
    // Secure by default, as `zonekv start` is: a CA, a certificate per node and one for the
    // client user root, created for this run.
    let certs_temp = tempfile::Builder::new()
        .prefix("zonekv-demo-certs-")
        .tempdir()
        .map_err(|e| Error::Config(format!("temporary directory: {e}")))?;
    let certs = data_dir.map_or_else(|| certs_temp.path().to_path_buf(), |d| d.join("certs"));
    step(
        1,
        format!(
            "starting a 3-node cluster in this process on loopback ports, mutual TLS on every connection (certificates in {})",
            certs.display()
        ),
    );
    let template = crate::NodeConfig { certs_dir: Some(certs), ..crate::NodeConfig::default() };
    let mut cluster = LocalCluster::start_with(3, data_dir, template).await?;
    let tls = cluster.client_tls()?;
    let connect = |addrs: Vec<String>| {
        let mut config = ClientConfig::new(addrs);
        config.tls = tls.clone();
        Client::with_config(config).map_err(client_error)
    };
    for (id, addr) in cluster.members() {
        println!("      node {id} at {addr}");
    }
    let old_leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    step(2, format!("cluster initialised; node {old_leader} was elected leader"));

    let client = connect(cluster.addrs())?;
    for i in 0..100u32 {
        client.put(format!("user/{i:03}"), format!("name-{i}")).await.map_err(client_error)?;
    }
    let v = client.get("user/042").await.map_err(client_error)?;
    step(
        3,
        format!(
            "wrote 100 keys through the client; user/042 = {:?}",
            v.as_deref().map(String::from_utf8_lossy)
        ),
    );
    let cas = client
        .compare_and_swap("user/042", v.clone(), Some(Bytes::from_static(b"renamed")))
        .await
        .map_err(client_error)?;
    let page = client
        .scan(&ScanOptions {
            start: std::ops::Bound::Included(Bytes::from_static(b"user/040")),
            limit: 3,
            ..Default::default()
        })
        .await
        .map_err(client_error)?;
    let keys: Vec<_> = page
        .pairs
        .iter()
        .map(|(k, v)| format!("{}={}", String::from_utf8_lossy(k), String::from_utf8_lossy(v)))
        .collect();
    step(
        4,
        format!(
            "compare-and-swap on user/042 succeeded: {}; scan from user/040 (limit 3): {}",
            cas.succeeded,
            keys.join(", ")
        ),
    );

    step(5, "starting a writer that puts demo/ack/<n> continuously and records every acknowledgement");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(client.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    step(6, format!("stopping the leader, node {old_leader}, abruptly"));
    cluster.stop_node(old_leader).await;
    let stopped_at = Instant::now();
    let new_leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    step(7, format!("node {new_leader} is the new leader after {:.1?}", stopped_at.elapsed()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let log = writer.await.map_err(|e| Error::Unavailable(format!("writer task: {e}")))?;
    let failover = log.first_ack_after(stopped_at).map_or(Duration::ZERO, |t| t - stopped_at);
    step(
        8,
        format!(
            "writer stopped: {} writes acknowledged ({} after the leader stopped; first one {:.1?} after), \
             {} with unknown outcome, {} refused{}",
            log.acked.len(),
            log.acked.iter().filter(|(_, t)| *t > stopped_at).count(),
            failover,
            log.unknown.len(),
            log.failed,
            log.last_error.as_ref().map_or(String::new(), |e| format!(" (last: {e})")),
        ),
    );

    let mut read_back = 0;
    let mut missing = Vec::new();
    for (i, _) in &log.acked {
        match client.get(format!("demo/ack/{i:06}")).await.map_err(client_error)? {
            Some(v) if v == format!("{i}") => read_back += 1,
            _ => missing.push(*i),
        }
    }
    let mut unknown_applied = 0;
    for i in &log.unknown {
        if client.get(format!("demo/ack/{i:06}")).await.map_err(client_error)?.is_some() {
            unknown_applied += 1;
        }
    }
    step(
        9,
        format!(
            "read back {read_back} of {} acknowledged writes from the new leader; {} missing \
             (of the {} writes with unknown outcome, {unknown_applied} were applied)",
            log.acked.len(),
            missing.len(),
            log.unknown.len(),
        ),
    );

    cluster.restart_node(old_leader).await?;
    let restarted = cluster.node(old_leader).expect("just restarted");
    let target = cluster.node(new_leader).expect("running").status().await.ranges[0].committed_index;
    let deadline = Instant::now() + Duration::from_secs(30);
    while restarted.status().await.ranges[0].applied_index < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = log.acked.last().map(|(i, _)| *i).unwrap_or(0);
    let (stale, _) =
        restarted.get(format!("demo/ack/{last:06}").as_bytes(), crate::ReadConsistency::Stale).await?;
    let stale_client = connect(vec![restarted.addr().to_string()])?;
    let via_stale = stale_client.get_with("user/042", ReadConsistency::Stale).await.map_err(client_error)?;
    step(
        10,
        format!(
            "restarted node {old_leader}; it caught up to index {target} and serves stale reads: demo/ack/{last:06} = {:?}, user/042 = {:?}",
            stale.as_deref().map(String::from_utf8_lossy),
            via_stale.as_deref().map(String::from_utf8_lossy),
        ),
    );

    for n in cluster.running() {
        let s = n.status().await;
        let r = &s.ranges[0];
        println!(
            "      node {}: {:<9} term {} last log {} committed {} applied {}",
            s.node_id, r.state, r.term, r.last_log_index, r.committed_index, r.applied_index
        );
    }
    cluster.shutdown().await;
    let report = DemoReport {
        acknowledged: log.acked.len(),
        read_back,
        outcome_unknown: log.unknown.len(),
        old_leader,
        new_leader,
        failover,
    };
    if !missing.is_empty() {
        return Err(Error::Unavailable(format!("acknowledged writes lost: {missing:?}")));
    }
    step(11, format!("done in {:.1?}: no acknowledged write was lost", started.elapsed()));
    Ok(report)
}

struct WriteLog {
    acked: Vec<(u64, Instant)>,
    unknown: Vec<u64>,
    /// Writes refused with a definite error (nothing was written), with the last error.
    failed: usize,
    last_error: Option<String>,
}

impl WriteLog {
    fn first_ack_after(&self, t: Instant) -> Option<Instant> {
        self.acked.iter().map(|(_, at)| *at).find(|at| *at > t)
    }
}

async fn write_until(client: Client, stop: Arc<AtomicBool>) -> WriteLog {
    let mut log = WriteLog { acked: Vec::new(), unknown: Vec::new(), failed: 0, last_error: None };
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        match client.put(format!("demo/ack/{i:06}"), format!("{i}")).await {
            Ok(()) => log.acked.push((i, Instant::now())),
            Err(ClientError::OutcomeUnknown(_)) => log.unknown.push(i),
            Err(e) => {
                tracing::warn!(error = %e, "demo write failed");
                log.failed += 1;
                log.last_error = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        i += 1;
    }
    log
}
