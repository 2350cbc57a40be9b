//! zonekv-client
