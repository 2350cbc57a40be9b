//! An acknowledged write survives SIGKILL: a helper process writes and acknowledges on stdout,
//! gets killed mid-stream, and the reopened storage must hold everything acknowledged.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use openraft::storage::{RaftLogReader, RaftLogStorage};
use zonekv_engine::{Cf, KeyRange, Reader};
use zonekv_engine_rocks::{RocksEngine, RocksOptions};
use zonekv_raft::{LogStore, LogSyncer, RangeId};

const HELPER: &str = env!("CARGO_BIN_EXE_crash-helper");
const GROUP: RangeId = RangeId::new(3);

/// Starts the helper, waits for `acks` acknowledgements, SIGKILLs it and returns the last
/// acknowledged number.
fn run_and_kill(mode: &str, dir: &std::path::Path, acks: u64) -> u64 {
    let mut child: Child = Command::new(HELPER)
        .args([mode, dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn helper");
    let stdout = child.stdout.take().unwrap();
    let mut last = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read helper output");
        let n: u64 = line.strip_prefix("ack ").expect("ack line").parse().unwrap();
        last = Some(n);
        if n >= acks {
            break;
        }
    }
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "helper must die by the signal, not exit");
    last.expect("helper acknowledged nothing")
}

fn reopen(dir: &std::path::Path) -> RocksEngine {
    RocksEngine::open(dir, &RocksOptions::default()).expect("reopen after SIGKILL")
}

#[test]
fn engine_writes_acknowledged_before_sigkill_survive() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let last = run_and_kill("engine", dir.path(), 200 + round * 50);
        let e = reopen(dir.path());
        for n in 0..=last {
            let v = e.get(Cf::Data, format!("key-{n:08}").as_bytes()).unwrap();
            assert_eq!(v, Some(vec![(n % 251) as u8; 512]), "acknowledged write {n} lost (round {round})");
        }
        let stored_last =
            u64::from_be_bytes(e.get(Cf::RaftMeta, b"last").unwrap().unwrap().try_into().unwrap());
        assert!(stored_last >= last);
        // The helper restarts from 0 each round, so later rounds overwrite; still no holes.
        assert!(e.scan(Cf::Data, &KeyRange::all(), false).unwrap().count() as u64 > last);
    }
}

#[tokio::test]
async fn raft_log_entries_reported_durable_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let last = run_and_kill("raft-log", dir.path(), 300);
    let engine = reopen(dir.path());
    let mut log = LogStore::new(engine.clone(), GROUP, LogSyncer::start(engine));
    let entries = log.try_get_log_entries(1..=last).await.expect("read log after crash");
    assert_eq!(entries.len() as u64, last, "durable entries lost");
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.log_id.index, i as u64 + 1);
    }
    let state = log.get_log_state().await.unwrap();
    assert!(state.last_log_id.unwrap().index >= last);
}

#[tokio::test]
async fn a_vote_reported_saved_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let last = run_and_kill("vote", dir.path(), 150);
    let engine = reopen(dir.path());
    let mut log = LogStore::new(engine.clone(), GROUP, LogSyncer::start(engine));
    let vote = log.read_vote().await.unwrap().expect("vote survives");
    assert!(vote.leader_id.term >= last, "vote went back from term {last} to {}", vote.leader_id.term);
    assert!(vote.committed);
}
