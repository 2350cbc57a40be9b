//! zonekv-benches
