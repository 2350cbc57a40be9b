#!/bin/bash
# Interleaved A/B comparison of two builds on this machine, one sitting (the machine drifts
# ±10-15 %, so the builds alternate within every round): write and read at 256 clients on 3
# `zonekv` processes with one range and with ~64 ranges (split by key count during the first
# write, then measured settled), and the 1,000-idle-ranges benchmark in one process.
#
#   A=/dir/with/old/binaries B=/dir/with/new/binaries ROUNDS=3 scripts/bench-ab.sh
#
# Each directory holds release builds of `zonekv` and `zonekv-bench` (`cargo build --release
# -p zonekv-server -p zonekv-bench --bins`, copied aside for the old commit). Prints one line
# per measurement (round, build, case, ops/s, p50 and p99 in ms) and writes them to
# $OUT/ab.tsv.
set -euo pipefail
# Plaintext nodes (the zonekv-bench `zonekv=ADDR` target dials plaintext); builds from before
# the security issue ignore the variable. TLS vs insecure: `zonekv-bench compare --targets zonekv,zonekv-insecure`.
export ZONEKV_INSECURE=1
: "${A:?directory of build A}" "${B:?directory of build B}"
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-256}
OUT=${OUT:-/tmp/zonekv-bench-ab}
IDLE_RUNS=${IDLE_RUNS:-2}
mkdir -p "$OUT"
: > "$OUT/ab.tsv"

measure() { # build-dir name case workload -> appends a line
  local bin=$1 name=$2 case=$3 workload=$4 dir=$5
  "$bin/zonekv-bench" run --target "zonekv=127.0.0.1:7111,127.0.0.1:7122,127.0.0.1:7133" \
    --workload "$workload" --clients "$CLIENTS" --duration 20s --warmup 5s --keys 100000 \
    --out "$dir/results-$case-$workload" --quiet > /dev/null
  local json
  json=$(ls -t "$dir/results-$case-$workload"/*.json | head -1)
  python3 - "$json" "$name" "$case" "$workload" "$round" <<'EOF' | tee -a "$OUT/ab.tsv"
import json, sys
path, name, case, workload, rnd = sys.argv[1:]
r = json.load(open(path))["runs"][0]
lat = r["latency_us"]
print(f"{rnd}\t{name}\t{case}\t{workload}\t{r['throughput']:.0f}\t{lat['p50']/1000:.2f}\t{lat['p99']/1000:.2f}\terrors={r['errors']}")
EOF
}

cluster() { # build-dir dir config -> starts 3 nodes and initialises them
  local bin=$1 dir=$2 conf=$3
  rm -rf "$dir"; mkdir -p "$dir"
  printf "$conf" > "$dir/zonekv.toml"
  for i in 1 2 3; do
    "$bin/zonekv" start --config "$dir/zonekv.toml" --node-id $i --listen 127.0.0.1:71$i$i \
      --data-dir "$dir/n$i" > "$dir/n$i.out" 2> "$dir/n$i.log" &
  done
  sleep 2
  "$bin/zonekv" init --nodes 1=127.0.0.1:7111,2=127.0.0.1:7122,3=127.0.0.1:7133 > /dev/null
  sleep 3
}

stop() { # dir
  pkill -f "zonekv start --config $1" || true
  sleep 2
}

one_build() { # build-dir name
  local bin=$1 name=$2
  local d="$OUT/$name-one"
  cluster "$bin" "$d" ""
  measure "$bin" "$name" "1-range" write "$d"
  measure "$bin" "$name" "1-range" read "$d"
  stop "$d"
  d="$OUT/$name-many"
  cluster "$bin" "$d" "[split]\nrange-max-keys = 1500\ncheck-interval-ms = 200\n"
  measure "$bin" "$name" "64-ranges-splitting" write "$d"
  measure "$bin" "$name" "64-ranges" write "$d"
  measure "$bin" "$name" "64-ranges" read "$d"
  "$bin/zonekv" ranges --addr 127.0.0.1:7111 | head -1 | sed "s/^/# $name: /"
  stop "$d"
}

idle() { # build-dir name
  local bin=$1 name=$2
  "$bin/zonekv-bench" ranges --ranges 1000 --idle 10s --balance-leaders 2>/dev/null \
    | grep -Ei "idle|memory|re-led|ranges" | tr '\n' ' ' | sed "s/^/$round\t$name\tidle-1000\t/" | tee -a "$OUT/ab.tsv"
  echo
}

# Runs `$1 DIR NAME` for both builds, $2 times, alternating which goes first (A B, B A, …).
alternate() {
  local what=$1 rounds=$2
  for round in $(seq 1 "$rounds"); do
    if (( round % 2 )); then order="A B"; else order="B A"; fi
    for x in $order; do
      if [ "$x" = A ]; then "$what" "$A" A; else "$what" "$B" B; fi
    done
  done
}

alternate one_build "$ROUNDS"
alternate idle "$IDLE_RUNS"
