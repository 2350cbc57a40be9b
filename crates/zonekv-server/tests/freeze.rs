//! A whole-VM freeze of the leader (docs/disk-faults.md §5): its process stops and, when it
//! resumes, every clock it reads goes on from where it stopped (libfaketime holds them back
//! by the frozen time), as in a VM whose hypervisor restores the guest's clocks after a
//! pause. Meanwhile the others elect a leader and acknowledge a write; then a read reaches
//! the resumed node. With `raft.lease-reads = false` (every linearizable read confirms
//! leadership with a quorum round) that read is never stale; with lease reads it can be — the
//! frozen leader still believes its lease — which is the negative control: the harness
//! catches the hazard the setting exists for.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Proc, admin, cli, client_config, free_port, leader_of, start_node_with};
use zonekv_client::Client;

/// libfaketime's preload library (Debian package `faketime`, which the test command installs).
fn faketime() -> String {
    let lib = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| format!("/usr/lib/{arch}/faketime/libfaketimeMT.so.1"))
        .find(|p| Path::new(p).exists());
    lib.expect("libfaketime is not installed (apt-get install faketime): the freeze test needs it")
}

fn clock_file(dir: &Path, id: u64) -> std::path::PathBuf {
    dir.join(format!("clock-{id}"))
}

/// Three nodes at the default timings, each under libfaketime reading its clock offset from
/// `clock-<id>` (read again at the first clock read in a new second of real time).
fn start(dir: &Path, lease_reads: bool) -> Vec<Proc> {
    let config = dir.join("node.toml");
    std::fs::write(&config, format!("[raft]\nlease-reads = {lease_reads}\n")).unwrap();
    let lib = faketime();
    // An inherited FAKETIME would override the clock files.
    assert!(std::env::var_os("FAKETIME").is_none(), "unset FAKETIME: it overrides the clock files");
    let procs: Vec<Proc> = (1..=3)
        .map(|id| {
            std::fs::write(clock_file(dir, id), "+0").unwrap();
            let file = clock_file(dir, id).display().to_string();
            let env = [
                ("LD_PRELOAD", lib.as_str()),
                ("FAKETIME_TIMESTAMP_FILE", file.as_str()),
                ("FAKETIME_CACHE_DURATION", "0"),
            ];
            let addr = format!("127.0.0.1:{}", free_port());
            start_node_with(id, &addr, dir, &env, &["--config", config.to_str().unwrap()])
        })
        .collect();
    let spec: Vec<String> = procs.iter().map(|p| format!("{}={}", p.id, p.addr)).collect();
    let out = cli(&["init", "--nodes", &spec.join(",")]);
    assert!(out.contains("initialized a cluster of 3 nodes"), "{out}");
    procs
}

fn signal(p: &Proc, sig: &str) {
    assert!(Command::new("kill").args([sig, &p.child.id().to_string()]).status().unwrap().success());
}

/// A client that waits `timeout` for each attempt and retries for 30 s.
fn client(addrs: Vec<String>, timeout: Duration) -> Client {
    let mut config = client_config(addrs);
    config.request_timeout = timeout;
    config.retry_budget = Duration::from_secs(30);
    Client::with_config(config).unwrap()
}

/// `rounds` freezes of the leader; returns how many reads sent to the resumed node answered a
/// value older than a write acknowledged before the read was sent, and how many saw it.
async fn reads_after_freezes(lease_reads: bool, rounds: u32) -> (u32, u32) {
    let dir = tempfile::tempdir().unwrap();
    let procs = start(dir.path(), lease_reads);
    let addrs: Vec<String> = procs.iter().map(|p| p.addr.clone()).collect();
    let admin = admin(addrs.clone());
    client(addrs.clone(), Duration::from_secs(1)).put("k", "v0").await.unwrap();
    let mut held_back = vec![Duration::ZERO; procs.len() + 1];
    let (mut stale, mut fresh) = (0, 0);
    for round in 1..=rounds {
        let deadline = Instant::now() + Duration::from_secs(30);
        let leader = loop {
            if let Some(id) = leader_of(&admin, &procs).await {
                break procs.iter().find(|p| p.id == id).unwrap();
            }
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // A client of the leader alone, its connection open before the freeze, waiting out
        // the freeze.
        let direct = client(vec![leader.addr.clone()], Duration::from_secs(20));
        assert!(direct.get("k").await.unwrap().is_some());

        signal(leader, "-STOP");
        let frozen_at = Instant::now();
        // Wait for the others to elect, then write at the new leader.
        let new_leader = loop {
            let mut found = None;
            for p in procs.iter().filter(|p| p.id != leader.id) {
                if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), admin.status(&p.addr)).await
                    && s.ranges.first().is_some_and(|r| r.state == "leader")
                {
                    found = Some(p.addr.clone());
                }
            }
            if let Some(addr) = found {
                break addr;
            }
            assert!(
                frozen_at.elapsed() < Duration::from_secs(30),
                "no new leader while node {} was frozen",
                leader.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let value = format!("v{round}");
        client(vec![new_leader], Duration::from_secs(5))
            .put("k", value.clone())
            .await
            .unwrap_or_else(|e| panic!("writing without the frozen leader: {e}"));
        // Sent after the write was acknowledged: it must see it.
        let read = tokio::spawn(async move { direct.get("k").await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        held_back[leader.id as usize] += frozen_at.elapsed();
        let offset = format!("-{:.3}", held_back[leader.id as usize].as_secs_f64());
        std::fs::write(clock_file(dir.path(), leader.id), offset).unwrap();
        signal(leader, "-CONT");
        match read.await.unwrap() {
            Ok(got) if got.as_deref() != Some(value.as_bytes()) => {
                println!(
                    "round {round}: the resumed node {} answered {got:?} after {value} was acknowledged",
                    leader.id
                );
                stale += 1;
            }
            Ok(_) => {
                println!("round {round}: read saw {value}");
                fresh += 1;
            }
            Err(e) => println!("round {round}: read refused ({e})"),
        }
        // Let the resumed node learn of the new term before the next round.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (stale, fresh)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_serves_no_stale_read_without_lease_reads() {
    let (stale, fresh) = reads_after_freezes(false, 4).await;
    assert_eq!(stale, 0, "{stale} stale reads with every read confirmed by a quorum round");
    assert_eq!(fresh, 4, "every read, redirected from the deposed node, answers the new value");
}

/// The negative control: the same freezes with lease reads on are caught serving stale reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_with_lease_reads_is_caught_serving_a_stale_read() {
    let (stale, _) = reads_after_freezes(true, 4).await;
    assert!(stale > 0, "4 freezes of a leader with lease reads and not one stale read seen");
}
