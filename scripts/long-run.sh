#!/usr/bin/env bash
# The long nemesis runs (docs/testing.md): release build, the node's default timings, every
# fault of each mode (disk faults and dead-node replacement included), 200 in-process seeds
# and 100 process seeds, then 20 process seeds with lease reads turned on
# (`--lease-reads`, where the clock-rate fault tests the lease), one after the other. Appends one row per run to the results table of
# docs/testing.md (commit, date, machine, totals) and keeps each run's log and the reports of
# failing seeds in $OUT (default ./long-run-results). Exits non-zero if any seed failed.
#
#   ./scripts/long-run.sh                                  # 200 + 100 seeds (about 1.5 h here)
#   IN_PROCESS_SEEDS=20 PROCESS_SEEDS=10 LEASE_SEEDS=5 ./scripts/long-run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
source scripts/env.sh
in_process=${IN_PROCESS_SEEDS:-200}
processes=${PROCESS_SEEDS:-100}
lease=${LEASE_SEEDS:-20}
out=${OUT:-long-run-results}
mkdir -p "$out"
# The whole workspace, as scripts/bench.sh builds it: another package selection would unify
# features differently and build RocksDB again.
cargo build --release --workspace --bins
commit=$(git rev-parse --short HEAD)
day=$(date -u +%F)
machine="$(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB"
failed=0

# run LABEL SEEDS ARGS...: runs zonekv-nemesis on SEEDS seeds, prints its seed lines, appends
# a row to the table.
run() {
  local label=$1 seeds=$2
  shift 2
  local log="$out/$label.log" start end status
  start=$(date +%s)
  set +e
  "$CARGO_TARGET_DIR/release/zonekv-nemesis" --seeds "$seeds" "$@" --out "$out/$label" 2>&1 | tee "$log" | grep -E '^(seed|total)'
  status=${PIPESTATUS[0]}
  set -e
  end=$(date +%s)
  [ "$status" -eq 0 ] || failed=1
  local total unknown recovery
  total=$(grep '^total:' "$log" || echo "total: no summary (exit $status)")
  unknown=$( (grep -o '([0-9]* unknown)' "$log" || true) | tr -dc '0-9\n' | awk '{s += $1} END {print s + 0}')
  recovery=$( (grep -o 'recovered in [0-9.]* s' "$log" || true) | awk '{if ($3 > m) m = $3} END {printf "%.1f s", m}')
  if grep -q 'NOT within' "$log"; then recovery="NOT within 30 s (see $log)"; fi
  # total: N operations, F faults injected, L lost …, V linearizability violations, I inconclusive keys …, K failing seeds [...]
  local ops faults lost violations inconclusive failing
  read -r ops faults lost violations inconclusive failing < <(echo "$total" |
    sed -E 's/total: ([0-9]+) operations, ([0-9]+) faults injected, ([0-9]+) lost[^,]*, ([0-9]+) linearizability violations, ([0-9]+) inconclusive[^,]*, ([0-9]+) failing.*/\1 \2 \3 \4 \5 \6/')
  local row="| $label, long run ($commit, $day, release build, default timings; $machine; $(((end - start) / 60)) min) | \`zonekv-nemesis --seeds $seeds${*:+ $*}\` | ${failing:-?} failing of $seeds | ${ops:-?} ($unknown) | ${faults:-?} | **${lost:-?}** | **${violations:-?}** (inconclusive keys: ${inconclusive:-?}) | $recovery |"
  echo "$row"
  # Insert after the last row of the table under "## Results".
  awk -v row="$row" '
    /^## / { section = $0 }
    { lines[NR] = $0; if (section == "## Results" && /^\|/) last = NR }
    END { for (i = 1; i <= NR; i++) { print lines[i]; if (i == last) print row } }
  ' docs/testing.md >"$out/testing.md.new"
  mv "$out/testing.md.new" docs/testing.md
}

run in-process "$in_process"
run processes "$processes" --processes
[ "$lease" -eq 0 ] || run processes-lease-reads "$lease" --processes --lease-reads
echo "rows appended to docs/testing.md; logs in $out"
exit "$failed"
