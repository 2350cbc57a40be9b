//! `zonekv-bench`: runs a workload against ZoneKV, etcd and PostgreSQL and compares them.

// A command-line tool reports to its user on stderr.
#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use zonekv_bench::machine::Machine;
use zonekv_bench::report::Report;
use zonekv_bench::runner::{self, Measure, RunConfig, RunResult};
use zonekv_bench::settle;
use zonekv_bench::targets::{self, StartOptions, TargetSpec};
use zonekv_bench::workload::{KeyDist, Spec, Workload};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Benchmarks ZoneKV against etcd and PostgreSQL on the same machine, in one run.
#[derive(Parser)]
#[command(name = "zonekv-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one target.
    #[command(args_override_self = true)]
    Run {
        /// zonekv-embedded, zonekv[=ADDR,...], etcd[=URL,...] or postgres[=CONNSTR].
        #[arg(long, default_value = "zonekv-embedded")]
        target: String,
        #[command(flatten)]
        opts: Opts,
    },
    /// Runs several targets interleaved (A B A B ...) and prints ratios against a baseline.
    /// A flag given twice takes its last value.
    #[command(args_override_self = true)]
    Compare {
        /// Comma-separated targets (see `run --target`).
        #[arg(long, default_value = "zonekv,etcd,postgres")]
        targets: String,
        /// The target ratios are computed against (default: etcd if present, else the first).
        #[arg(long)]
        baseline: Option<String>,
        #[command(flatten)]
        opts: Opts,
    },
    /// A 3-node cluster in this process split into many ranges: CPU and memory while idle, and
    /// how long the ranges led by a node take to get new leaders once it is cut off.
    Ranges {
        /// Ranges to create.
        #[arg(long, default_value_t = 1000)]
        ranges: usize,
        /// How long to measure idleness (e.g. 10s).
        #[arg(long, default_value = "10s")]
        idle: String,
        /// A node config file (TOML) for the nodes.
        #[arg(long)]
        zonekv_config: Option<PathBuf>,
        /// Before idling, spread leadership evenly over the nodes (what a leader-balancing
        /// placement driver would do); without it, the node that ran the splits leads nearly
        /// every range, the worst case for failover.
        #[arg(long)]
        balance_leaders: bool,
    },
}

#[derive(Args, Clone)]
struct Opts {
    /// write, read, ycsb-a, ycsb-b or scan.
    #[arg(long, default_value = "write")]
    workload: Workload,
    /// Comma-separated client counts; each is one measurement.
    #[arg(long, default_value = "64")]
    clients: String,
    /// Connections shared by the clients (default: one per client for postgres, one per
    /// eight clients, at most 64, for the others).
    #[arg(long)]
    conns: Option<usize>,
    /// Length of each measurement (e.g. 20s, 500ms); ignored with --ops.
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Measure this many operations instead of a duration.
    #[arg(long)]
    ops: Option<u64>,
    /// Warm-up before each measurement.
    #[arg(long, default_value = "2s")]
    warmup: String,
    /// Repetitions of each (target, clients) measurement. Each repetition starts the round of
    /// targets one further along (A B C, then B C A, …), so no target always follows the same one.
    #[arg(long, default_value_t = 1)]
    reps: usize,
    /// Before each measurement, wait at most this long for the disks and CPUs to go quiet
    /// (targets' background work after a heavy measurement); 0s measures back to back.
    #[arg(long, default_value = "30s")]
    settle: String,
    /// Keys in the keyspace.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Key size in bytes.
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Key distribution: uniform or zipfian.
    #[arg(long, default_value = "uniform")]
    dist: KeyDist,
    /// Keys per scan (scan workload).
    #[arg(long, default_value_t = 10)]
    scan_len: usize,
    /// Directory for the JSON and SVG result files.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Keep targets' data and logs here instead of temporary directories.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// The zonekv binary for the `zonekv` target (default: next to this program, then PATH).
    #[arg(long)]
    zonekv_bin: Option<PathBuf>,
    /// A node config file (TOML, see etc/zonekv.toml) for the nodes of the `zonekv` target;
    /// id, address and data directory are set by the harness.
    #[arg(long)]
    zonekv_config: Option<PathBuf>,
    /// Seed of the key and operation choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error")))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let work = runtime.spawn(run(Cli::parse()));
    let outcome = runtime.block_on(until_interrupted(work));
    // Dropping the runtime drops the run if it is still going, and with it the targets it
    // started: their drop stops the etcd, PostgreSQL and `zonekv` processes.
    drop(runtime);
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Waits for `work` unless SIGINT or SIGTERM comes first.
async fn until_interrupted(work: tokio::task::JoinHandle<Result<()>>) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = work => r.map_err(|e| anyhow::anyhow!("the run failed: {e}"))?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; stopping the targets"),
        _ = term.recv() => anyhow::bail!("terminated; stopping the targets"),
    }
}

async fn run(cli: Cli) -> Result<()> {
    let (targets, baseline, opts) = match cli.command {
        Command::Ranges { ranges, idle, zonekv_config, balance_leaders } => {
            let template = match zonekv_config {
                Some(path) => zonekv_server::NodeConfig::from_file(&path)?,
                None => zonekv_server::NodeConfig::default(),
            };
            let report =
                zonekv_bench::ranges::run(ranges, parse_duration(&idle)?, template, balance_leaders).await?;
            eprintln!(
                "{} ranges (3 replicas each, one process) made in {:.1} s; idle: {:.1} % of one core, {} MiB resident; \
                 a node leading {} ranges cut off: all had new leaders after {:.2} s",
                report.ranges,
                report.split_secs,
                report.idle_cpu_share * 100.0,
                report.rss_bytes >> 20,
                report.victim_led,
                report.failover_secs
            );
            println!("{}", serde_json::to_string(&report)?);
            return Ok(());
        }
        Command::Run { target, opts } => (target, None, opts),
        Command::Compare { targets, baseline, opts } => (targets, baseline, opts),
    };
    let specs = TargetSpec::parse_list(&targets)?;
    let names: Vec<&str> = specs.iter().map(TargetSpec::name).collect();
    let baseline = match baseline {
        Some(b) if !names.contains(&b.as_str()) => {
            bail!("baseline {b:?} is not one of the targets {names:?}")
        }
        Some(b) => Some(b),
        None if specs.len() > 1 => {
            Some(if names.contains(&"etcd") { "etcd".into() } else { names[0].to_string() })
        }
        None => None,
    };
    let clients: Vec<usize> = opts
        .clients
        .split(',')
        .map(|c| c.trim().parse().with_context(|| format!("{c:?} is not a client count")))
        .collect::<Result<_>>()?;
    let spec = Spec {
        workload: opts.workload,
        keys: opts.keys,
        key_size: opts.key_size,
        value_size: opts.value_size,
        dist: opts.dist,
        scan_len: opts.scan_len,
    };
    let measure = match opts.ops {
        Some(n) => Measure::Ops(n),
        None => Measure::Duration(parse_duration(&opts.duration)?),
    };
    let warmup = parse_duration(&opts.warmup)?;
    let start_opts = StartOptions {
        work_dir: opts.work_dir.clone(),
        zonekv_bin: opts.zonekv_bin.clone(),
        zonekv_config: opts.zonekv_config.clone(),
    };

    let mut report = Report {
        started_at: now_rfc3339(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine::detect(),
        versions: BTreeMap::new(),
        workload: spec.clone(),
        baseline,
        runs: Vec::new(),
    };
    eprintln!("starting {}", names.join(", "));
    let mut running = Vec::new();
    for s in &specs {
        let t = targets::start(s, &start_opts).await.with_context(|| format!("starting {s}"))?;
        report.versions.insert(s.name().to_string(), t.version());
        if spec.workload.needs_load() {
            eprintln!("loading {} keys into {s}", spec.keys);
            runner::load(t.as_ref(), &spec, 64).await.with_context(|| format!("loading {s}"))?;
        }
        running.push((s.name(), t));
    }
    let result = measure_all(&mut report, &running, &spec, &clients, &opts, measure, warmup).await;
    for (_, t) in running {
        t.shutdown().await;
    }
    result?;
    println!("{}", report.render());
    let stem = format!("{}-{}", report.started_at.replace([':', '-'], ""), spec.workload);
    let (json, svg) = report.write_files(&opts.out, &stem)?;
    println!("results: {} and {}", json.display(), svg.display());
    Ok(())
}

async fn measure_all(
    report: &mut Report,
    running: &[(&str, Box<dyn targets::Target>)],
    spec: &Spec,
    clients: &[usize],
    opts: &Opts,
    measure: Measure,
    warmup: Duration,
) -> Result<()> {
    let settle_limit = parse_duration(&opts.settle)?;
    for rep in 0..opts.reps.max(1) {
        for &c in clients {
            let n = running.len();
            for (name, t) in (0..n).map(|i| &running[(i + rep) % n]) {
                let (waited, quiet) = if settle_limit.is_zero() {
                    (Duration::ZERO, true)
                } else {
                    settle::settle(settle_limit, Duration::from_millis(500), settle::Quiet::default()).await
                };
                if !quiet {
                    eprintln!("machine not quiet after {waited:.0?}; measuring {name} anyway");
                }
                let conns = opts.conns.unwrap_or(if *name == "postgres" { c } else { c.div_ceil(8).min(64) });
                let cfg = RunConfig {
                    clients: c,
                    conns,
                    warmup,
                    measure,
                    seed: opts.seed + rep as u64,
                    progress: !opts.quiet,
                };
                let r = runner::run(t.as_ref(), name, spec, &cfg, rep)
                    .await
                    .with_context(|| format!("measuring {name}"))?;
                let r = RunResult { settle_ms: waited.as_millis() as u64, ..r };
                eprintln!(
                    "{name:<16} {} clients={c:<4} conns={:<4} rep={rep}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors, settled {:.1} s{}",
                    spec.workload,
                    r.conns,
                    r.throughput,
                    r.latency_us.p50 as f64 / 1000.0,
                    r.latency_us.p99 as f64 / 1000.0,
                    r.errors,
                    waited.as_secs_f64(),
                    r.first_error.as_ref().map_or(String::new(), |e| format!(" (first: {e})"))
                );
                report.runs.push(r);
            }
        }
    }
    Ok(())
}

fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = num.parse().with_context(|| format!("{s:?} is not a duration like 20s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => bail!("{s:?}: unknown unit {unit:?} (ms, s, m)"),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    /// scripts/bench.sh passes defaults first and the caller's flags after them.
    #[test]
    fn a_repeated_flag_takes_its_last_value() {
        let cli = Cli::try_parse_from([
            "zonekv-bench",
            "compare",
            "--workload",
            "write",
            "--reps",
            "3",
            "--workload",
            "read",
        ])
        .expect("repeated flags parse");
        let Command::Compare { opts, .. } = cli.command else { panic!("not compare") };
        assert_eq!(opts.workload.to_string(), "read");
        assert_eq!(opts.reps, 3);
    }
}
