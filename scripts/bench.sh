#!/usr/bin/env bash
# The headline comparison: ZoneKV (3 processes) vs etcd (3 members) vs PostgreSQL, interleaved,
# on this machine. Installs what it needs, builds release binaries, then runs
# `zonekv-bench compare` with the arguments given (defaults below). Results (tables, JSON, SVG)
# go to ./bench-results unless --out says otherwise.
#
#   ./scripts/bench.sh                       # write workload, 1/64/256 clients, 20 s, 3 reps
#   ./scripts/bench.sh --workload read --reps 2
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
source scripts/install-bench-deps.sh
source scripts/env.sh
cargo build --release --workspace --bins
args=(--targets zonekv,etcd,postgres --workload write --clients 1,64,256 --duration 20s --reps 3)
# Later flags win, so the caller's arguments override the defaults.
exec "$CARGO_TARGET_DIR/release/zonekv-bench" compare "${args[@]}" "$@"
