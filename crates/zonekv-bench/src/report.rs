//! Tables, ratios against a baseline, and the JSON result file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::machine::Machine;
use crate::runner::RunResult;

/// Everything one invocation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When it started (UTC, RFC 3339).
    pub started_at: String,
    /// The command line.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// Server version per target.
    pub versions: BTreeMap<String, String>,
    /// The workload settings.
    pub workload: crate::workload::Spec,
    /// Baseline target of the ratios.
    pub baseline: Option<String>,
    /// Every measurement, in the order run.
    pub runs: Vec<RunResult>,
}

/// The runs of one (target, clients) cell, summarised over repetitions.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Target.
    pub target: String,
    /// Client count.
    pub clients: usize,
    /// Median throughput over repetitions.
    pub throughput: f64,
    /// Lowest and highest throughput over repetitions.
    pub spread: (f64, f64),
    /// Median of each repetition's p50 latency (µs).
    pub p50: u64,
    /// Median p90 (µs).
    pub p90: u64,
    /// Median p99 (µs).
    pub p99: u64,
    /// Median p99.9 (µs).
    pub p999: u64,
    /// Highest max (µs).
    pub max: u64,
    /// Errors over all repetitions.
    pub errors: u64,
    /// Repetitions.
    pub reps: usize,
}

/// The median; with an even count, the mean of the two middle values.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

impl Report {
    /// Summaries per (target, clients), in first-run order.
    pub fn cells(&self) -> Vec<Cell> {
        let mut keys: Vec<(String, usize)> = Vec::new();
        for r in &self.runs {
            let k = (r.target.clone(), r.clients);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys.into_iter()
            .map(|(target, clients)| {
                let runs: Vec<&RunResult> =
                    self.runs.iter().filter(|r| r.target == target && r.clients == clients).collect();
                let tps: Vec<f64> = runs.iter().map(|r| r.throughput).collect();
                let lat = |f: fn(&RunResult) -> u64| {
                    median(runs.iter().map(|r| f(r) as f64).collect()).round() as u64
                };
                Cell {
                    target,
                    clients,
                    throughput: median(tps.clone()),
                    spread: (
                        tps.iter().copied().fold(f64::INFINITY, f64::min),
                        tps.iter().copied().fold(0.0, f64::max),
                    ),
                    p50: lat(|r| r.latency_us.p50),
                    p90: lat(|r| r.latency_us.p90),
                    p99: lat(|r| r.latency_us.p99),
                    p999: lat(|r| r.latency_us.p999),
                    max: runs.iter().map(|r| r.latency_us.max).max().unwrap_or(0),
                    errors: runs.iter().map(|r| r.errors).sum(),
                    reps: runs.len(),
                }
            })
            .collect()
    }

    /// The human-readable tables: one per target, then ratios against the baseline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "machine: {}", self.machine.summary());
        for (t, v) in &self.versions {
            let _ = writeln!(out, "{t}: {v}");
        }
        let w = &self.workload;
        let _ = writeln!(
            out,
            "workload {}: {} keys, {} B keys, {} B values, {:?} keys{}",
            w.workload,
            w.keys,
            w.key_size,
            w.value_size,
            w.dist,
            if w.workload == crate::workload::Workload::Scan {
                format!(", scans of {}", w.scan_len)
            } else {
                String::new()
            }
        );
        let cells = self.cells();
        let mut targets: Vec<String> = Vec::new();
        for c in &cells {
            if !targets.contains(&c.target) {
                targets.push(c.target.clone());
            }
        }
        for t in &targets {
            let _ = writeln!(out, "\n{t}");
            let _ = writeln!(
                out,
                "{:>8} {:>12} {:>21} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>4}",
                "clients",
                "ops/s",
                "spread (min-max)",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
                "errors",
                "reps"
            );
            for c in cells.iter().filter(|c| &c.target == t) {
                let _ = writeln!(
                    out,
                    "{:>8} {:>12.0} {:>10.0}-{:<10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>4}",
                    c.clients,
                    c.throughput,
                    c.spread.0,
                    c.spread.1,
                    ms(c.p50),
                    ms(c.p90),
                    ms(c.p99),
                    ms(c.p999),
                    ms(c.max),
                    c.errors,
                    c.reps
                );
            }
        }
        if let Some(base) = &self.baseline {
            let _ = writeln!(
                out,
                "\nratios against {base} (throughput: higher is better; latency: lower is better)"
            );
            let _ =
                writeln!(out, "{:<16} {:>8} {:>10} {:>9} {:>9}", "target", "clients", "ops/s", "p50", "p99");
            for c in cells.iter().filter(|c| &c.target != base) {
                if let Some(b) = cells.iter().find(|b| &b.target == base && b.clients == c.clients) {
                    let _ = writeln!(
                        out,
                        "{:<16} {:>8} {:>9.2}x {:>8.2}x {:>8.2}x",
                        c.target,
                        c.clients,
                        c.throughput / b.throughput.max(f64::MIN_POSITIVE),
                        c.p50 as f64 / (b.p50.max(1)) as f64,
                        c.p99 as f64 / (b.p99.max(1)) as f64,
                    );
                }
            }
        }
        out
    }

    /// Writes `<dir>/<stem>.json` and `<dir>/<stem>.svg`; returns their paths.
    pub fn write_files(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let json = dir.join(format!("{stem}.json"));
        std::fs::write(&json, serde_json::to_string_pretty(self)?)?;
        let svg = dir.join(format!("{stem}.svg"));
        std::fs::write(&svg, crate::chart::render(self))?;
        Ok((json, svg))
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![7.0]), 7.0);
    }
}
