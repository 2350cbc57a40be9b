//! A process for crash tests to SIGKILL. It writes to a RocksDB engine in a loop and prints
//! `ack N` only after write N is reported durable; the test kills it mid-loop, reopens the
//! directory and checks that every printed acknowledgement is there.
//!
//! Usage: `crash-helper engine|raft-log|vote DIR`

use std::io::Write;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use openraft::EntryPayload;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use zonekv_engine::{Cf, Engine, WriteBatch};
use zonekv_engine_rocks::{RocksEngine, RocksOptions};
use zonekv_raft::{Command, Entry, LeaderId, LogId, LogStore, LogSyncer, Op, RangeId, ReplicaId};

/// The Raft group the helper writes to.
pub const GROUP: RangeId = RangeId::new(3);

fn ack(n: u64) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ack {n}")?;
    out.flush()?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (mode, dir) = match args.as_slice() {
        [_, mode, dir] => (mode.as_str(), dir.as_str()),
        _ => bail!("usage: crash-helper engine|raft-log|vote DIR"),
    };
    let engine = RocksEngine::open(dir.as_ref(), &RocksOptions::default()).context("open")?;
    match mode {
        "engine" => {
            for n in 0u64.. {
                let mut b = WriteBatch::new();
                b.put(Cf::Data, format!("key-{n:08}").into_bytes(), vec![(n % 251) as u8; 512]);
                b.put(Cf::RaftMeta, b"last".to_vec(), n.to_be_bytes().to_vec());
                engine.write(&b, true)?;
                ack(n)?;
            }
        }
        "raft-log" => {
            let mut log = LogStore::new(engine.clone(), GROUP, LogSyncer::start(engine.clone()));
            for n in 1u64.. {
                let op = Op::Put { key: Bytes::from(format!("k{n}")), value: Bytes::from(vec![7u8; 256]) };
                let entry = Entry {
                    log_id: LogId::new(LeaderId { term: 1, node_id: ReplicaId::new(1) }, n),
                    payload: EntryPayload::Normal(Command::single(op)),
                };
                log.blocking_append([entry]).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                ack(n)?;
            }
        }
        "vote" => {
            let mut log = LogStore::new(engine.clone(), GROUP, LogSyncer::start(engine.clone()));
            for term in 1u64.. {
                log.save_vote(&openraft::Vote::new_committed(term, ReplicaId::new(1))).await?;
                ack(term)?;
            }
        }
        other => bail!("unknown mode {other}"),
    }
    Ok(())
}
