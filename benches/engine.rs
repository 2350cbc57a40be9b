//! Engine micro-benchmarks: synced batch writes, point gets, scans (RocksDB engine).

#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use zonekv_engine::{Cf, Engine, KeyRange, Reader, WriteBatch};
use zonekv_engine_rocks::{RocksEngine, RocksOptions};

fn open() -> (RocksEngine, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = RocksEngine::open(dir.path(), &RocksOptions::default()).expect("open");
    (e, dir)
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:010}").into_bytes()
}

fn write(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine/write");
    for (batch, sync) in [(1usize, true), (64, true), (1, false), (64, false)] {
        let (e, _dir) = open();
        let mut n = 0u64;
        g.throughput(Throughput::Elements(batch as u64));
        let name = if sync { "synced" } else { "unsynced" };
        g.bench_function(BenchmarkId::new(name, batch), |b| {
            b.iter(|| {
                let mut wb = WriteBatch::new();
                for _ in 0..batch {
                    wb.put(Cf::Data, key(n), vec![7u8; 256]);
                    n += 1;
                }
                e.write(&wb, sync).expect("write");
            })
        });
    }
    g.finish();
}

fn loaded(n: u64) -> (RocksEngine, tempfile::TempDir) {
    let (e, dir) = open();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut wb = WriteBatch::new();
        for i in chunk {
            wb.put(Cf::Data, key(*i), vec![7u8; 256]);
        }
        e.write(&wb, false).expect("load");
    }
    e.flush().expect("flush");
    (e, dir)
}

fn read(c: &mut Criterion) {
    const N: u64 = 100_000;
    let (e, _dir) = loaded(N);
    let mut g = c.benchmark_group("engine/read");
    let mut i = 0u64;
    g.throughput(Throughput::Elements(1));
    g.bench_function("get", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            e.get(Cf::Data, &key(i)).expect("get").expect("present")
        })
    });
    for reverse in [false, true] {
        g.throughput(Throughput::Elements(100));
        let name = if reverse { "scan100-reverse" } else { "scan100" };
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 7919) % (N - 200);
                let r = KeyRange::half_open(key(i), key(i + 100));
                let n = e.scan(Cf::Data, &r, reverse).expect("scan").count();
                assert_eq!(n, 100);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, write, read);
criterion_main!(benches);
