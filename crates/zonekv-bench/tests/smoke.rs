//! The harness cannot rot: every workload runs against the embedded cluster and counts its
//! operations exactly, and every target adapter passes the same small conformance check
//! against a real server (etcd and PostgreSQL must be installed: this fails loudly otherwise).

use std::time::Duration;

use zonekv_bench::runner::{self, Measure, RunConfig};
use zonekv_bench::targets::{self, StartOptions, Target, TargetSpec};
use zonekv_bench::workload::{Spec, Workload};

fn cfg(clients: usize, measure: Measure) -> RunConfig {
    RunConfig { clients, conns: 2, warmup: Duration::from_millis(200), measure, seed: 7, progress: false }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_against_the_embedded_cluster_and_counts_exactly() {
    let t = targets::start(&TargetSpec::ZonekvEmbedded, &StartOptions::default()).await.unwrap();
    let mut loaded = false;
    for w in Workload::ALL {
        let spec = Spec { workload: w, keys: 500, ..Spec::default() };
        if w.needs_load() && !loaded {
            runner::load(t.as_ref(), &spec, 8).await.unwrap();
            loaded = true;
        }
        let r =
            runner::run(t.as_ref(), "zonekv-embedded", &spec, &cfg(8, Measure::Ops(300)), 0).await.unwrap();
        assert_eq!(r.errors, 0, "{w}: {:?}", r.first_error);
        assert_eq!(r.ops, 300, "{w}: counted {} operations", r.ops);
        assert_eq!(r.misses, 0, "{w}: reads missed loaded keys");
        assert!(
            r.latency_us.p50 > 0
                && r.latency_us.p50 <= r.latency_us.p99
                && r.latency_us.p99 <= r.latency_us.max
        );
        assert!((r.throughput - r.ops as f64 / r.seconds).abs() < 1e-6);
    }
    // A timed run: the operation count and the throughput agree with the window.
    let spec = Spec { workload: Workload::YcsbA, keys: 500, ..Spec::default() };
    let r = runner::run(
        t.as_ref(),
        "zonekv-embedded",
        &spec,
        &cfg(4, Measure::Duration(Duration::from_secs(1))),
        0,
    )
    .await
    .unwrap();
    assert!(r.ops > 0 && r.errors == 0);
    assert!(r.seconds >= 1.0 && r.seconds < 3.0, "window of {} s", r.seconds);
    t.shutdown().await;
}

/// The same checks for every adapter: what is written is read back, scans are ordered and
/// limited, and a short measured run completes without errors.
async fn adapter_conformance(spec: TargetSpec) {
    let t: Box<dyn Target> = targets::start(&spec, &StartOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{spec} must be available for this test: {e:#}"));
    let conn = t.connect().await.unwrap();
    for i in 0..5u8 {
        conn.put(format!("adapter-{i}").as_bytes(), &[i; 10]).await.unwrap();
    }
    conn.put(b"adapter-2", b"overwritten").await.unwrap();
    assert_eq!(conn.get(b"adapter-2").await.unwrap().as_deref(), Some(&b"overwritten"[..]));
    assert_eq!(conn.get(b"adapter-4").await.unwrap(), Some(vec![4u8; 10]));
    assert_eq!(conn.get(b"adapter-9").await.unwrap(), None);
    assert_eq!(conn.scan(b"adapter-1", 3).await.unwrap(), 3);
    assert_eq!(conn.scan(b"adapter-3", 10).await.unwrap(), 2);
    let w = Spec { workload: Workload::YcsbA, keys: 200, ..Spec::default() };
    runner::load(t.as_ref(), &w, 4).await.unwrap();
    let r = runner::run(t.as_ref(), spec.name(), &w, &cfg(4, Measure::Ops(200)), 0).await.unwrap();
    assert_eq!((r.ops, r.errors, r.misses), (200, 0, 0), "{spec}: {:?}", r.first_error);
    assert!(!t.version().is_empty());
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_adapter_works_against_a_real_etcd_cluster() {
    adapter_conformance(TargetSpec::Etcd(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_adapter_works_against_a_real_postgres() {
    adapter_conformance(TargetSpec::Postgres(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zonekv_process_adapter_works_against_real_processes() {
    adapter_conformance(TargetSpec::Zonekv(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_adapter_passes_the_same_checks() {
    adapter_conformance(TargetSpec::ZonekvEmbedded).await;
}
