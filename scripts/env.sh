# Shared settings for the scripts; sourced, not run.
# Keep one build directory outside the checkout so RocksDB's C++ build (10-17 minutes on two
# cores) happens once per machine, not once per clone. Override with CARGO_TARGET_DIR.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/zonekv-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
