//! Criterion micro-benchmarks live in `engine.rs` and `raft_log.rs`; run `cargo bench -p zonekv-benches`.
