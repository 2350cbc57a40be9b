//! Raft log micro-benchmarks: `LogStore::append` waiting for durability (write + group-commit
//! fsync) and without an fsync (the syncer runs on an in-memory engine).

#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use openraft::EntryPayload;
use openraft::storage::RaftLogStorageExt;
use zonekv_engine::MemEngine;
use zonekv_engine_rocks::{RocksEngine, RocksOptions};
use zonekv_raft::{Command, Entry, LeaderId, LogId, LogStore, LogSyncer, Op, RangeId, ReplicaId};

fn entry(index: u64) -> Entry {
    let op = Op::Put { key: Bytes::from(format!("key-{index:010}")), value: Bytes::from(vec![7u8; 256]) };
    Entry {
        log_id: LogId::new(LeaderId { term: 1, node_id: ReplicaId::new(1) }, index),
        payload: EntryPayload::Normal(Command::single(op)),
    }
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut g = c.benchmark_group("raft_log/append");
    for (entries, synced) in [(1u64, true), (16, true), (1, false), (16, false)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = RocksEngine::open(dir.path(), &RocksOptions::default()).expect("open");
        let syncer =
            if synced { LogSyncer::start(engine.clone()) } else { LogSyncer::start(MemEngine::new()) };
        let mut log = LogStore::new(engine, RangeId::new(1), syncer);
        let mut next = 1u64;
        g.throughput(Throughput::Elements(entries));
        let name = if synced { "synced" } else { "unsynced" };
        g.bench_function(BenchmarkId::new(name, entries), |b| {
            b.iter(|| {
                let batch: Vec<Entry> = (next..next + entries).map(entry).collect();
                next += entries;
                rt.block_on(log.blocking_append(batch)).expect("append");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
