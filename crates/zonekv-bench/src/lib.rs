//! `zonekv-bench`: the same workload against ZoneKV, etcd and PostgreSQL, side by side.
//!
//! - [`workload`]: what the clients do (write, read, YCSB-A/B, scan) and which keys they touch
//!   (uniform or zipfian);
//! - [`targets`]: the systems under test, started on loopback by the harness or reached at given
//!   endpoints, all behind one small [`targets::Conn`] interface;
//! - [`runner`]: load, warm-up and a timed or counted measurement with N client tasks over M
//!   connections, latencies in an HDR histogram;
//! - [`settle`]: waiting for the machine to go quiet between measurements, so one target's
//!   background work does not land on the next one's;
//! - [`ranges`]: the idle cost and failover time of many ranges in one process;
//! - [`report`]: tables, ratios against a baseline, the JSON result file; [`chart`] the SVG.
//!
//! A benchmark harness, so errors are `anyhow` throughout.

pub mod chart;
pub mod machine;
pub mod procs;
pub mod ranges;
pub mod report;
pub mod runner;
pub mod settle;
pub mod targets;
pub mod workload;
mod zipf;
