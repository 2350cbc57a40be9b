//! zonekv-tests
