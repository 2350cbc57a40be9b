#!/bin/bash
# Write throughput of three zonekv processes with one range or many (docs/benchmarks.md,
# "1 range vs 64 ranges"). Usage:
#   scripts/bench-ranges.sh one  ""                                                  # one range
#   SECOND=1 scripts/bench-ranges.sh many "[split]\nrange-max-keys = 1500\ncheck-interval-ms = 200\n"
# CLIENTS=N sets the benchmark clients (default 256). Needs the release binaries: cargo build --release -p zonekv-server -p zonekv-bench --bins
set -e
# Plaintext nodes (the zonekv-bench `zonekv=ADDR` target dials plaintext); builds from before
# the security issue ignore the variable. TLS vs insecure: `zonekv-bench compare --targets zonekv,zonekv-insecure`.
export ZONEKV_INSECURE=1
NAME=$1; CONF=$2
BIN=${CARGO_TARGET_DIR:-/var/tmp/zonekv-target}/release
D=${WORK_DIR:-/tmp/zonekv-bench-ranges}/$NAME; rm -rf "$D"; mkdir -p "$D"
printf "$CONF" > "$D/zonekv.toml"
for i in 1 2 3; do
  "$BIN/zonekv" start --config "$D/zonekv.toml" --node-id $i --listen 127.0.0.1:71$i$i --data-dir "$D/n$i" > "$D/n$i.out" 2> "$D/n$i.log" &
done
trap 'pkill -f "zonekv start --config $D" || true' EXIT
sleep 2
"$BIN/zonekv" init --nodes 1=127.0.0.1:7111,2=127.0.0.1:7122,3=127.0.0.1:7133 > /dev/null
sleep 3
bench() {
  "$BIN/zonekv-bench" run --target zonekv=127.0.0.1:7111,127.0.0.1:7122,127.0.0.1:7133 --workload write \
    --clients ${CLIENTS:-256} --duration 20s --warmup 5s --keys 100000 --out "$D/results" --quiet
}
status() {
  for i in 1 2 3; do "$BIN/zonekv" status --addr 127.0.0.1:71$i$i | grep -E "^(log|raft)"; done
  "$BIN/zonekv" ranges --addr 127.0.0.1:7111 > "$D/ranges.txt"; head -1 "$D/ranges.txt"
}
bench
status
if [ -n "$SECOND" ]; then
  bench
  status
fi
