//! Waiting for the machine to go quiet between measurements.
//!
//! Every target shares the same cores and disk. After a heavy measurement a target keeps
//! working in the background (RocksDB compactions, PostgreSQL's background writer, etcd's
//! backend commits), and with targets interleaved that work would land on the *next* target's
//! measurement. Before each measurement the harness therefore waits until the disk and the CPUs
//! have been quiet for a moment, up to a limit; how long it waited is reported.

use std::time::{Duration, Instant};

/// What counts as quiet, per second of a sample window.
#[derive(Debug, Clone, Copy)]
pub struct Quiet {
    /// Most write requests completed by the disks.
    pub disk_writes_per_s: f64,
    /// Most CPU busy share over all cores, 0–1.
    pub cpu_busy: f64,
}

impl Default for Quiet {
    fn default() -> Self {
        Self { disk_writes_per_s: 100.0, cpu_busy: 0.25 }
    }
}

/// Counters read from `/proc` at one instant.
#[derive(Debug, Clone, Copy)]
struct Counters {
    disk_writes: u64,
    cpu_busy: u64,
    cpu_total: u64,
}

impl Counters {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> =
            stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
        let total: u64 = cpu.iter().take(8).sum();
        let idle = cpu.get(3)? + cpu.get(4).unwrap_or(&0);
        let disks = std::fs::read_to_string("/proc/diskstats").ok()?;
        Some(Self { disk_writes: whole_disk_writes(&disks), cpu_busy: total - idle, cpu_total: total })
    }
}

/// Writes completed by whole disks (not partitions, not loop or ram devices) in `/proc/diskstats`.
fn whole_disk_writes(diskstats: &str) -> u64 {
    diskstats
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = *f.get(2)?;
            let whole = !name.starts_with("loop")
                && !name.starts_with("ram")
                && !name.starts_with("dm-")
                && std::path::Path::new(&format!("/sys/block/{name}")).exists();
            if whole { f.get(7)?.parse::<u64>().ok() } else { None }
        })
        .sum()
}

/// Waits until two consecutive `window`s are quiet, or `limit` has passed. Returns the time
/// waited and whether the machine went quiet. Without `/proc` it returns at once.
pub async fn settle(limit: Duration, window: Duration, quiet: Quiet) -> (Duration, bool) {
    let start = Instant::now();
    let Some(mut prev) = Counters::read() else { return (Duration::ZERO, true) };
    let mut quiet_windows = 0;
    while start.elapsed() < limit {
        tokio::time::sleep(window).await;
        let Some(now) = Counters::read() else { return (start.elapsed(), true) };
        let writes = (now.disk_writes - prev.disk_writes) as f64 / window.as_secs_f64();
        let total = (now.cpu_total - prev.cpu_total).max(1) as f64;
        let busy = (now.cpu_busy - prev.cpu_busy) as f64 / total;
        prev = now;
        quiet_windows =
            if writes <= quiet.disk_writes_per_s && busy <= quiet.cpu_busy { quiet_windows + 1 } else { 0 };
        if quiet_windows >= 2 {
            return (start.elapsed(), true);
        }
    }
    (start.elapsed(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_disks_count() {
        // major minor name reads merged sectors ms writes ...
        let stats = "\
 254 0 vda 10 0 0 0 700 0 0 0 0 0 0
 254 1 vda1 5 0 0 0 650 0 0 0 0 0 0
   7 0 loop0 1 0 0 0 99 0 0 0 0 0 0
";
        // vda is a whole disk on any machine this runs on only if /sys/block/vda exists.
        let expected = if std::path::Path::new("/sys/block/vda").exists() { 700 } else { 0 };
        assert_eq!(whole_disk_writes(stats), expected);
    }

    #[tokio::test]
    async fn an_idle_machine_settles_and_a_limit_is_kept() {
        // Nothing to wait for under an impossible-to-miss threshold...
        let lax = Quiet { disk_writes_per_s: f64::MAX, cpu_busy: 1.0 };
        let (waited, quiet) = settle(Duration::from_secs(5), Duration::from_millis(20), lax).await;
        assert!(quiet && waited < Duration::from_secs(1), "{waited:?}");
        // ...and an impossible-to-meet one gives up at the limit.
        let strict = Quiet { disk_writes_per_s: -1.0, cpu_busy: -1.0 };
        let (waited, quiet) = settle(Duration::from_millis(100), Duration::from_millis(20), strict).await;
        assert!(!quiet && waited >= Duration::from_millis(100), "{waited:?}");
    }
}
