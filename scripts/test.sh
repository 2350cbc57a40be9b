#!/usr/bin/env bash
# The test command: formatting, lints, and every test of the workspace.
# Works on a fresh Debian machine as root; installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
# The benchmark harness's adapter tests run real etcd and PostgreSQL servers.
scripts/install-bench-deps.sh
source scripts/env.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
# Always the whole workspace: selecting fewer packages changes the unified features of build
# dependencies and would rebuild RocksDB.
cargo test --workspace "$@"
