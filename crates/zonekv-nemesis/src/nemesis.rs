//! Faults and the seeded schedule that orders them.
//!
//! A fault is a [`Fault`] over some cluster type: it knows how to start and how to undo
//! itself. In-process clusters (`local`) have network, node, leader and membership faults;
//! clusters of processes (`procs`) have process faults. Later capabilities join by adding a
//! `Fault` to the list a run is given: range splits and replica moves will be faults like any
//! other.

use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// A fault the nemesis can inject into a cluster of type `C` and undo.
#[async_trait]
pub trait Fault<C>: Send + Sync {
    /// A short name for schedules and reports.
    fn name(&self) -> &'static str;
    /// Starts the fault. Returns what was done, or `None` if it does not apply now.
    async fn inject(&self, cluster: &C, rng: &mut StdRng) -> Option<String>;
    /// Undoes it. Must be safe to call when the fault is not active.
    async fn heal(&self, cluster: &C);
}

/// One step of a schedule: wait `gap_ms`, start fault `fault` (index into the catalogue),
/// hold it `hold_ms`, undo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Index into the fault list.
    pub fault: usize,
    /// Quiet time before the fault.
    pub gap_ms: u64,
    /// How long the fault lasts.
    pub hold_ms: u64,
}

/// The schedule of `seed`: enough steps to fill `total` with faults from a list of `faults`.
pub fn schedule(seed: u64, faults: usize, total: Duration) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e656d65_73697321);
    let mut steps = Vec::new();
    let mut t = 0;
    while t < total.as_millis() as u64 {
        let step = Step {
            fault: rng.random_range(0..faults),
            gap_ms: rng.random_range(200..1000),
            hold_ms: rng.random_range(500..3000),
        };
        t += step.gap_ms + step.hold_ms;
        steps.push(step);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_gives_the_same_schedule() {
        let total = Duration::from_secs(30);
        let a = schedule(42, 10, total);
        assert_eq!(a, schedule(42, 10, total));
        assert_ne!(a, schedule(43, 10, total));
        let spanned: u64 = a.iter().map(|s| s.gap_ms + s.hold_ms).sum();
        assert!(spanned >= 30_000 && a.iter().all(|s| s.fault < 10));
    }
}
