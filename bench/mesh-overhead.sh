#!/usr/bin/env bash
# Per-hop cost of the mesh: the same small HTTP request sent directly to an app, and through
# two Trellis proxies (client proxy -> mTLS/HTTP2 -> server proxy -> app), in one run.
#
# Uses wrk (Debian package `wrk`) and a release build. Reports wrk's latency percentiles and
# throughput for each path, and the CPU time and resident memory of the two proxies on the
# meshed path. Every load is bounded by DURATION. Run from the repository root:
#
#   bench/mesh-overhead.sh [DURATION_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
SUBNET=${SUBNET:-9}
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }

cargo build --release -q
BIN=target/release/trellis
TMP=$(mktemp -d /tmp/trellis-bench-XXXXXX)
mkdir -p "$TMP/config"
for f in examples/quickstart/*.yaml; do
  sed "s/127\.0\.1\./127.0.$SUBNET./g" "$f" > "$TMP/config/$(basename "$f")"
done

"$BIN" up "$TMP/config" --listen "127.0.$SUBNET.250:8080" --control "127.0.$SUBNET.251:15012" \
  --data-dir "$TMP/data" >"$TMP/up.log" 2>&1 &
UP=$!
cleanup() { kill -TERM "$UP" 2>/dev/null || true; wait "$UP" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
for _ in $(seq 1 200); do grep -q "mesh is up" "$TMP/up.log" && break; sleep 0.1; done
grep -q "mesh is up" "$TMP/up.log" || { cat "$TMP/up.log"; exit 1; }

# The proxies on the meshed path: productpage's (client side) and ratings' (server side).
CLIENT_PID=$(pgrep -f -- "--workload-name productpage-v1" | while read -r p; do grep -q "$TMP" /proc/$p/cmdline && echo $p; done | head -n1)
SERVER_PID=$(pgrep -f -- "--workload-name ratings-v1" | while read -r p; do grep -q "$TMP" /proc/$p/cmdline && echo $p; done | head -n1)
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)

DIRECT="http://127.0.$SUBNET.6:9080/"
MESHED="http://127.0.$SUBNET.1:15001/"

run() { # name url connections [host]
  local name=$1 url=$2 conns=$3 host=${4:-}
  local hdr=()
  [ -n "$host" ] && hdr=(-H "Host: $host")
  local c0 s0 c1 s1
  c0=$(ticks "$CLIENT_PID"); s0=$(ticks "$SERVER_PID")
  local out
  out=$(wrk -t1 -c"$conns" -d"${DURATION}s" --latency "${hdr[@]}" "$url")
  c1=$(ticks "$CLIENT_PID"); s1=$(ticks "$SERVER_PID")
  local rps p50 p90 p99 errs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p90=$(awk '$1=="90%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  local cpu
  cpu=$(awk -v a=$((c1-c0+s1-s0)) -v hz="$HZ" -v d="$DURATION" 'BEGIN {printf "%.0f%%", 100*a/hz/d}')
  printf '| %-7s | %4s | %10s | %8s | %8s | %8s | %-22s | %s\n' "$name" "$conns" "$rps" "$p50" "$p90" "$p99" "$cpu" "${errs:-none}"
}

echo "# Trellis mesh overhead — $(date -u +%F) — $(nproc) cores, $(uname -r), ${DURATION}s per row"
echo
echo "| path    | conns | requests/s | p50      | p90      | p99      | proxies' CPU (of one core) | errors"
echo "|---------|------:|-----------:|---------:|---------:|---------:|---------------------------|-------"
for c in 1 16; do
  run direct "$DIRECT" "$c" | sed 's/| [0-9]*%  *|/| n\/a |/'
  run meshed "$MESHED" "$c" "ratings:9080"
done
echo
echo "Resident memory after the runs: client proxy $(( $(rss_kb "$CLIENT_PID") / 1024 )) MiB, server proxy $(( $(rss_kb "$SERVER_PID") / 1024 )) MiB."
