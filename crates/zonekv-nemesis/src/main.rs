//! `zonekv-nemesis`: run fault schedules against an in-process cluster and check the history.
//!
//! ```text
//! zonekv-nemesis --seeds 200                 # seeds 1..=200, the long suite
//! zonekv-nemesis --seed 17                   # replay one seed
//! zonekv-nemesis --seeds 3 --unsafe-local-reads   # negative control: must find violations
//! zonekv-nemesis --processes --seeds 20      # zonekv processes, SIGKILL / SIGSTOP faults
//! ```
//! Prints one line per seed and the totals; exits non-zero if any acknowledged write was lost,
//! any key's history is not linearizable, a set check failed, or the cluster did not serve
//! within 30 s of the last heal. A failing seed's report (schedule, faults, history) is written
//! to `--out`.

// A command-line tool reports to its user on stderr.
#![allow(clippy::print_stderr)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tracing_subscriber::EnvFilter;
use zonekv_nemesis::run::{Mode, RunConfig, SeedReport, Timings, run};

#[derive(Parser, Debug)]
#[command(version, about = "Fault injection and linearizability checking for ZoneKV")]
struct Cli {
    /// Run seeds 1..=N.
    #[arg(long, default_value_t = 5, conflicts_with = "seed")]
    seeds: u64,
    /// Run (replay) only this seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds of faults per seed.
    #[arg(long, default_value_t = 10)]
    fault_secs: u64,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Register clients.
    #[arg(long, default_value_t = 6)]
    clients: u32,
    /// Registers.
    #[arg(long, default_value_t = 4)]
    keys: u32,
    /// Set clients.
    #[arg(long, default_value_t = 2)]
    set_clients: u32,
    /// Sets.
    #[arg(long, default_value_t = 2)]
    sets: u32,
    /// Run `zonekv` processes (SIGKILL and SIGSTOP faults) instead of in-process nodes
    /// (network, node, leader and membership faults).
    #[arg(long)]
    processes: bool,
    /// Negative control: serve linearizable reads without a leadership check (in-process).
    #[arg(long, conflicts_with = "processes")]
    unsafe_local_reads: bool,
    /// Negative control: acknowledge log appends before their fsync (with --processes).
    #[arg(long, requires = "processes")]
    unsafe_ack_before_sync: bool,
    /// Only these faults, comma-separated (e.g. kill-all,pause-leader); default: every fault of
    /// the mode.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Node timings: `default` (the node's defaults, with a 3 s `placement.dead-after-ms` so
    /// dead-node replacement runs under faults) or `fast` (short Raft timeouts, snapshots every
    /// 500 entries).
    #[arg(long, default_value = "default", value_parser = parse_timings)]
    timings: Timings,
    /// Nodes serve lease reads (`raft.lease-reads = true`; off by default). The freeze faults
    /// are then left out unless named in --faults (a frozen leader believes its lease).
    #[arg(long)]
    lease_reads: bool,
    /// Directory for the reports of failing seeds.
    #[arg(long, default_value = "nemesis-results")]
    out: PathBuf,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<std::process::ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error,openraft=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let seeds: Vec<u64> = match cli.seed {
        Some(s) => vec![s],
        None => (1..=cli.seeds).collect(),
    };
    let (mut ops, mut faults, mut lost, mut violations, mut failed) = (0, 0, 0, 0, Vec::new());
    let mut inconclusive = 0;
    for seed in seeds {
        let config = RunConfig {
            seed,
            mode: if cli.processes { Mode::Processes } else { Mode::InProcess },
            nodes: cli.nodes,
            fault_time: Duration::from_secs(cli.fault_secs),
            clients: cli.clients,
            keys: cli.keys,
            set_clients: cli.set_clients,
            sets: cli.sets,
            unsafe_local_reads: cli.unsafe_local_reads,
            unsafe_ack_before_sync: cli.unsafe_ack_before_sync,
            max_states: 2_000_000,
            // Process mode: node logs kept next to the report if the seed fails.
            logs: cli.processes.then(|| cli.out.join(format!("seed-{seed}-logs"))),
            faults: cli.faults.clone(),
            timings: cli.timings,
            lease_reads: cli.lease_reads,
        };
        let logs = config.logs.clone();
        let report = run(config).await.with_context(|| format!("seed {seed}"))?;
        if report.passed()
            && let Some(dir) = logs
        {
            let _ = std::fs::remove_dir_all(dir);
        }
        eprintln!("{}", summary(&report));
        ops += report.operations;
        faults += report.injected.len();
        lost += report.lost_writes;
        violations += report.violations.len();
        inconclusive += report.check_timeouts.len();
        if !report.passed() {
            std::fs::create_dir_all(&cli.out)?;
            let path = cli.out.join(format!("seed-{seed}.json"));
            std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
            eprintln!(
                "  report: {}; replay: zonekv-nemesis --seed {seed} {}",
                path.display(),
                replay_flags(&cli)
            );
            if cli.processes {
                eprintln!("  node logs: {}", cli.out.join(format!("seed-{seed}-logs")).display());
            }
            failed.push(seed);
        }
    }
    eprintln!(
        "total: {ops} operations, {faults} faults injected, {lost} lost acknowledged writes, \
         {violations} linearizability violations, {inconclusive} inconclusive keys (the check gave \
         up), {} failing seeds {failed:?}",
        failed.len()
    );
    Ok(if failed.is_empty() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE })
}

fn summary(r: &SeedReport) -> String {
    format!(
        "seed {:>4}: {:>6} ops ({} unknown), {:>2} faults, {} lost, {} violations{}{}, recovered {}",
        r.config.seed,
        r.operations,
        r.unknown,
        r.injected.len(),
        r.lost_writes,
        r.violations.len(),
        if r.check_timeouts.is_empty() {
            String::new()
        } else {
            format!(", INCONCLUSIVE: the check gave up on keys {:?}", r.check_timeouts)
        },
        if r.sets.valid() {
            String::new()
        } else {
            format!(
                ", set check failed: {} lost, {} duplicated, {} unexpected",
                r.sets.lost.len(),
                r.sets.duplicated.len(),
                r.sets.unexpected.len()
            )
        },
        r.recovered_after_s.map_or("NOT within 30 s".into(), |s| format!("in {s:.1} s")),
    )
}

fn replay_flags(cli: &Cli) -> String {
    let mut f = format!("--fault-secs {} --nodes {}", cli.fault_secs, cli.nodes);
    for (set, flag) in [
        (cli.processes, " --processes"),
        (cli.unsafe_local_reads, " --unsafe-local-reads"),
        (cli.unsafe_ack_before_sync, " --unsafe-ack-before-sync"),
        (cli.timings == Timings::Fast, " --timings fast"),
        (cli.lease_reads, " --lease-reads"),
    ] {
        if set {
            f.push_str(flag);
        }
    }
    if !cli.faults.is_empty() {
        f.push_str(&format!(" --faults {}", cli.faults.join(",")));
    }
    f
}

fn parse_timings(s: &str) -> std::result::Result<Timings, String> {
    match s {
        "default" => Ok(Timings::Default),
        "fast" => Ok(Timings::Fast),
        other => Err(format!("{other:?}: the timings are `default` and `fast`")),
    }
}
