#!/usr/bin/env bash
# The main job: a 3-node cluster in one process that loses its leader and keeps every
# acknowledged write. Works on a fresh Debian machine as root; installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
source scripts/env.sh
cargo build --workspace --bins
exec "$CARGO_TARGET_DIR/debug/zonekv" demo "$@"
