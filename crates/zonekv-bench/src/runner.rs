//! One measurement: load, warm up, then count operations and latencies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use serde::Serialize;

use crate::targets::{Conn, Target};
use crate::workload::{Op, OpGen, Spec, value};

/// When a measurement ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Measure {
    /// After this long.
    Duration(Duration),
    /// After this many operations.
    Ops(u64),
}

/// How to run one measurement.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// Concurrent client tasks.
    pub clients: usize,
    /// Connections the clients share (client `i` uses connection `i % conns`).
    pub conns: usize,
    /// Time spent running the workload before measuring.
    pub warmup: Duration,
    /// The measured part.
    pub measure: Measure,
    /// Seed of the key and operation choice.
    pub seed: u64,
    /// Show a progress bar.
    pub progress: bool,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
}

/// What one measurement found.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Target name.
    pub target: String,
    /// Workload name.
    pub workload: String,
    /// Client tasks.
    pub clients: usize,
    /// Connections.
    pub conns: usize,
    /// Repetition number (0-based).
    pub rep: usize,
    /// Length of the measured window, in seconds.
    pub seconds: f64,
    /// Operations completed in the window.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Reads that found no value although the keyspace was loaded.
    pub misses: u64,
    /// Operations per second.
    pub throughput: f64,
    /// Latency of successful operations.
    pub latency_us: Latency,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Time waited for the machine to go quiet before the warm-up (see [`crate::settle`]);
    /// set by the caller, 0 when it did not wait.
    pub settle_ms: u64,
}

async fn connect_all(target: &dyn Target, n: usize) -> Result<Vec<Arc<dyn Conn>>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        conns.push(target.connect().await?);
    }
    Ok(conns)
}

/// Writes every key of the keyspace once, with `tasks` writers over as many connections.
pub async fn load(target: &dyn Target, spec: &Spec, tasks: usize) -> Result<()> {
    let tasks = tasks.clamp(1, 64);
    let conns = connect_all(target, tasks).await?;
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for conn in conns {
        let (next, spec) = (next.clone(), spec.clone());
        handles.push(tokio::spawn(async move {
            let gen_ = OpGen::new(&spec);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= spec.keys {
                    return Ok::<_, anyhow::Error>(());
                }
                conn.put(&gen_.key(i), &value(&spec, i)).await?;
            }
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(())
}

struct Shared {
    recording: AtomicBool,
    stop: AtomicBool,
    remaining: AtomicI64,
    done: AtomicU64,
    counted: bool,
}

struct TaskResult {
    hist: Histogram<u64>,
    errors: u64,
    misses: u64,
    first_error: Option<String>,
}

async fn client_task(conn: Arc<dyn Conn>, spec: Spec, seed: u64, shared: Arc<Shared>) -> TaskResult {
    let gen_ = OpGen::new(&spec);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut r = TaskResult {
        hist: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds"),
        errors: 0,
        misses: 0,
        first_error: None,
    };
    let val = value(&spec, seed);
    while !shared.stop.load(Ordering::Relaxed) {
        let recording = shared.recording.load(Ordering::Relaxed);
        if recording && shared.counted && shared.remaining.fetch_sub(1, Ordering::Relaxed) <= 0 {
            break;
        }
        let op = gen_.next(&mut rng);
        let start = Instant::now();
        let outcome = match &op {
            Op::Put(k) => conn.put(k, &val).await.map(|()| true),
            Op::Get(k) => conn.get(k).await.map(|v| v.is_some()),
            Op::Scan(k) => conn.scan(k, spec.scan_len).await.map(|n| n > 0),
        };
        let micros = start.elapsed().as_micros() as u64;
        if !recording {
            continue;
        }
        match outcome {
            Ok(found) => {
                r.hist.saturating_record(micros.max(1));
                shared.done.fetch_add(1, Ordering::Relaxed);
                if !found && spec.workload.needs_load() {
                    r.misses += 1;
                }
            }
            Err(e) => {
                r.errors += 1;
                if r.first_error.is_none() {
                    r.first_error = Some(format!("{e:#}"));
                }
            }
        }
    }
    r
}

/// Runs `spec` against `target` and measures it.
pub async fn run(
    target: &dyn Target,
    name: &str,
    spec: &Spec,
    cfg: &RunConfig,
    rep: usize,
) -> Result<RunResult> {
    if cfg.clients == 0 {
        bail!("at least one client is needed");
    }
    let conns = connect_all(target, cfg.conns.min(cfg.clients)).await?;
    let (counted, remaining) = match cfg.measure {
        Measure::Ops(n) => (true, n as i64),
        Measure::Duration(_) => (false, 0),
    };
    let shared = Arc::new(Shared {
        recording: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        remaining: AtomicI64::new(remaining),
        done: AtomicU64::new(0),
        counted,
    });
    let handles: Vec<_> = (0..cfg.clients)
        .map(|i| {
            let conn = conns[i % conns.len()].clone();
            let seed = cfg.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
            tokio::spawn(client_task(conn, spec.clone(), seed, shared.clone()))
        })
        .collect();

    tokio::time::sleep(cfg.warmup).await;
    let bar = progress_bar(cfg, name, spec, rep);
    shared.recording.store(true, Ordering::SeqCst);
    let started = Instant::now();
    match cfg.measure {
        Measure::Duration(d) => {
            while started.elapsed() < d {
                tokio::time::sleep(Duration::from_millis(100).min(d)).await;
                bar.set_position(started.elapsed().as_millis().min(d.as_millis()) as u64);
                bar.set_message(format!("{} ops", shared.done.load(Ordering::Relaxed)));
            }
            shared.stop.store(true, Ordering::SeqCst);
        }
        Measure::Ops(_) => {
            while handles.iter().any(|h| !h.is_finished()) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                bar.set_position(shared.done.load(Ordering::Relaxed));
            }
        }
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds");
    let (mut errors, mut misses, mut first_error) = (0, 0, None);
    for h in handles {
        let r = h.await?;
        hist.add(&r.hist)?;
        errors += r.errors;
        misses += r.misses;
        first_error = first_error.or(r.first_error);
    }
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let ops = hist.len();
    Ok(RunResult {
        target: name.to_string(),
        workload: spec.workload.to_string(),
        clients: cfg.clients,
        conns: conns.len(),
        rep,
        seconds,
        ops,
        errors,
        misses,
        throughput: ops as f64 / seconds,
        latency_us: Latency {
            mean: hist.mean(),
            p50: hist.value_at_quantile(0.50),
            p90: hist.value_at_quantile(0.90),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
        },
        first_error,
        settle_ms: 0,
    })
}

fn progress_bar(cfg: &RunConfig, name: &str, spec: &Spec, rep: usize) -> ProgressBar {
    if !cfg.progress {
        return ProgressBar::hidden();
    }
    let (len, template) = match cfg.measure {
        Measure::Duration(d) => (d.as_millis() as u64, "{prefix} [{bar:30}] {elapsed}/{duration} {msg}"),
        Measure::Ops(n) => (n, "{prefix} [{bar:30}] {pos}/{len} ops"),
    };
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("{name:<16} {} c={:<4} rep {rep}", spec.workload, cfg.clients));
    bar
}
