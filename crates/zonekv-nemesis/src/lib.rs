//! ZoneKV's reliability harness: seeded fault schedules against an in-process cluster, a
//! recorded client history, and the checkers that judge it.
//!
//! - [`nemesis`]: the fault trait and the seeded schedule that orders faults;
//! - [`local`]: an in-process cluster and its faults (partitions, flaky links, node stops,
//!   leader transfers, membership changes); [`procs`]: a cluster of `zonekv` processes and
//!   its faults (SIGKILL of one node, the leader or a majority; SIGSTOP/SIGCONT);
//! - [`workload`]: register clients (read / write / compare-and-swap) and set clients
//!   (append-only adds by read + compare-and-swap), which record every outcome, unknown ones
//!   included;
//! - [`linearizable`]: per-key linearizability of the register history;
//! - [`set`]: every acknowledged add present exactly once at the end;
//! - [`run`]: one seed from start to report.
//!
//! `zonekv-nemesis --seeds N` runs seeds 1..=N; `--seed S` replays one. See docs/testing.md.

pub mod backend;
pub mod history;
pub mod linearizable;
pub mod local;
pub mod nemesis;
pub mod procs;
pub mod run;
pub mod set;
pub mod workload;

/// Errors of a run (not findings: those are in the report).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster could not be started or read.
    #[error(transparent)]
    Node(#[from] zonekv_server::Error),
    /// A client task or the final read failed in a way the run cannot judge.
    #[error("{0}")]
    Client(String),
    /// The run was configured wrongly (e.g. an unknown fault name).
    #[error("{0}")]
    Config(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
