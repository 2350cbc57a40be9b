//! zonekv-server
