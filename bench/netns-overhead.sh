#!/usr/bin/env bash
# Per-hop cost of the mesh in network namespaces, open loop, against a direct connection and
# an nginx reverse proxy, in one run.
#
# Topology: a bridge (its own namespace, 198.18.S.1, where the control plane runs) and three
# hosts, each a namespace on a veth:
#   client 198.18.S.2  the load generator and a Trellis proxy (transparent capture)
#   server 198.18.S.3  nginx serving a 1 KB file on 8080, 8081 and 8090, and a Trellis proxy
#   ref    198.18.S.4  nginx as a one-hop reverse proxy to server:8081 (keep-alive upstream)
# Cases, alternated within each round so drift and neighbours hit them alike:
#   direct  client -> server:8081                         (capture excludes 8081 both ends)
#   nginx   client -> ref:8082 -> server:8081
#   mesh-l7 client -> VIP:8080, captured -> client proxy -> mTLS HTTP/2 -> server proxy -> app
#   mesh-tcp the same pair, port 8090 declared `tcp`: HTTP/2 CONNECT tunnel, bytes opaque
#   mesh-l7-off  mesh-l7 with both proxies' request telemetry switched off for the case
#           (admin `POST /telemetry?enabled=off`; not in the default CASES)
#   direct-newconn, mesh-l7-newconn, mesh-tcp-newconn  (not in the default CASES)
#           the same paths with a NEW TCP connection per request (loadgen --new-connection:
#           connect included in the latency, the client closes first), NEWCONN_RATE
#           connections/s, each run right after a BURST-second burst at BURST_RATE
#           connections/s through the same path (so through the same capture listener).
#           Also reports p99.9, the connect step's p99, and what the kernel counted during
#           the measured run: SYN retransmissions and listen-queue drops in both namespaces.
# The snapshot carries 100 further services, so the proxies' memory is measured with a
# realistic registry rather than an empty one.
#
# Open loop (bench/src/bin/loadgen.rs: fixed schedule, latency measured from the scheduled
# send time): RATE requests/s over CONNS keep-alive connections for DURATION seconds per case
# and ROUNDS rounds. Then closed-loop maximum throughput with wrk (CONNS connections,
# MAXDUR seconds per case). Reports medians over rounds of p50/p90/p99 and of what each case
# adds over direct, proxy CPU seconds per 1,000 requests, and RSS idle and peak.
#
#   bench/netns-overhead.sh                   # defaults: 1000 rps, 16 conns, 30 s, 3 rounds
#   RATE=1000 CONNS=16 DURATION=30 ROUNDS=3 MAXDUR=10 bench/netns-overhead.sh
#   PERF_OUT=/tmp/mesh.perf bench/netns-overhead.sh   # also perf-record both proxies (mesh-l7)
#   HOLD=1 bench/netns-overhead.sh                     # set up, then wait (profiling by hand)
#   NOBUILD=1 …                                        # use the release binaries already built
#   CASES="direct mesh-l7 mesh-l7-off" …               # a subset, or telemetry on vs off
#   CASES="direct-newconn mesh-l7-newconn mesh-tcp-newconn" DURATION=10 ROUNDS=2 …
#                                                      # connection set-up after a burst
#   NEWCONN_RATE=500 BURST_RATE=3000 BURST=3 …         # (the new-connection cases' defaults)
#   SERVER_CLOSES=1 …                                  # new-connection requests say
#                                                      # `Connection: close`: the server side
#                                                      # (the proxy, when captured) closes first
#
# Needs root, iproute2, nftables, nginx and wrk (apt-get install iproute2 nftables nginx wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-1000}
CONNS=${CONNS:-16}
DURATION=${DURATION:-30}
ROUNDS=${ROUNDS:-3}
MAXDUR=${MAXDUR:-10}
NEWCONN_RATE=${NEWCONN_RATE:-500}
BURST_RATE=${BURST_RATE:-3000}
BURST=${BURST:-3}
SERVER_CLOSES=${SERVER_CLOSES:-}
S=${SUBNET:-40}
NET=198.18.$S
VIP=198.19.$S.10

[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, nftables)" >&2; exit 1; }
for tool in ip nft nginx wrk python3; do
  command -v $tool >/dev/null || { echo "$tool is required (apt-get install iproute2 nftables nginx wrk python3)" >&2; exit 1; }
done

[ -n "${NOBUILD:-}" ] || cargo build --release -q -p trellis-cli -p trellis-bench
BIN=$PWD/target/release/trellis
LOADGEN=$PWD/target/release/loadgen
TMP=$(mktemp -d /tmp/trellis-netns-bench-XXXXXX)
PREFIX=trbench-$S
LAN=$PREFIX-lan
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  # nginx's masters by their pid files too, in case one was started in a way $! missed.
  for f in "$TMP"/*.pid; do [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null; done
  for ns in client server ref; do ip netns del "$PREFIX-$ns" 2>/dev/null || true; done
  ip netns del "$LAN" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
# Leftovers of an earlier run that was killed.
for ns in client server ref lan; do ip netns del "$PREFIX-$ns" 2>/dev/null || true; done

ip netns add "$LAN"
ip -n "$LAN" link set lo up
ip -n "$LAN" link add br0 type bridge
ip -n "$LAN" addr add "$NET.1/24" dev br0
ip -n "$LAN" link set br0 up
k=2
for h in client server ref; do
  ns=$PREFIX-$h
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$LAN" link add "v-$h" type veth peer name eth0 netns "$ns"
  ip -n "$LAN" link set "v-$h" master br0 up
  ip -n "$ns" addr add "$NET.$k/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$NET.1"
  k=$((k + 1))
done
in_ns() { local h=$1; shift; ip netns exec "$PREFIX-$h" "$@"; }

# --- configuration: the backend service, the client, and 100 more services
mkdir -p "$TMP/config" "$TMP/data" "$TMP/www"
cat > "$TMP/config/mesh.yaml" <<EOF
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  clusterIP: $VIP
  selector: {app: backend}
  ports:
  - {name: http, port: 8080}
  - {name: tcp-raw, port: 8090}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-1}
spec:
  address: $NET.3
  serviceAccount: backend
  labels: {app: backend}
  ports: {http: 8080, tcp-raw: 8090}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-1}
spec:
  address: $NET.2
  serviceAccount: client
  labels: {app: client}
EOF
for i in $(seq 1 100); do
  cat >> "$TMP/config/mesh.yaml" <<EOF
---
apiVersion: v1
kind: Service
metadata: {name: filler-$i}
spec:
  selector: {app: filler-$i}
  ports:
  - {name: http, port: 8080}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: filler-$i-1}
spec:
  address: 198.19.255.$i
  serviceAccount: filler-$i
  labels: {app: filler-$i}
  ports: {http: 8080}
EOF
done
head -c 1024 /dev/zero | tr '\0' 'x' > "$TMP/www/1k"
# nginx's workers run as an unprivileged user; mktemp made the directory private.
chmod 755 "$TMP" "$TMP/www"; chmod 644 "$TMP/www/1k"

cat > "$TMP/backend.conf" <<EOF
worker_processes auto;
pid $TMP/backend.pid;
error_log $TMP/backend.err warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  server {
    listen $NET.3:8080; listen $NET.3:8081; listen $NET.3:8090;
    root $TMP/www;
  }
}
EOF
cat > "$TMP/ref.conf" <<EOF
worker_processes auto;
pid $TMP/ref.pid;
error_log $TMP/ref.err warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server $NET.3:8081; keepalive 64; }
  server {
    listen $NET.4:8082;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF

ip netns exec "$LAN" "$BIN" control --config "$TMP/config" --data-dir "$TMP/data" \
  --listen "$NET.1:15012" --api-listen "$NET.1:15014" >"$TMP/control.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$TMP/data/ca/root.pem" ] && break; sleep 0.1; done
sleep 0.3
token() { "$BIN" token create --data-dir "$TMP/data" --namespace default --service-account "$1"; }

# Started directly (not through a shell function) so that $! is nginx's master itself.
ip netns exec "$PREFIX-server" nginx -c "$TMP/backend.conf" >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
ip netns exec "$PREFIX-ref" nginx -c "$TMP/ref.conf" >"$TMP/ref.log" 2>&1 &
PIDS+=($!)

start_proxy() { # host sa ip log args…
  local h=$1 sa=$2 ip=$3; shift 3
  TRELLIS_JOIN_TOKEN=$(token "$sa") ip netns exec "$PREFIX-$h" "$BIN" proxy \
    --mode transparent --capture --control "$NET.1:15012" --ca-bundle "$TMP/data/ca/root.pem" \
    --namespace default --service-account "$sa" --workload-name "$sa-1" --address "$ip" \
    "$@" >"$TMP/proxy-$h.log" 2>&1 &
  PIDS+=($!)
}
start_proxy server backend "$NET.3" --port http=8080 --port tcp-raw=8090 --exclude-inbound-ports 8081
start_proxy client client "$NET.2" --exclude-outbound-ports 8081,8082
for h in server client; do
  ip=$NET.$([ $h = client ] && echo 2 || echo 3)
  for _ in $(seq 1 100); do
    in_ns $h curl -sf -o /dev/null "http://$ip:15020/healthz/ready" && break
    sleep 0.1
  done
  in_ns $h curl -sf -o /dev/null "http://$ip:15020/healthz/ready" || { cat "$TMP/proxy-$h.log"; exit 1; }
done
sleep 1

# The proxies' processes: `ip netns exec` execs the program, so the PIDs are the proxies'.
proxy_pid() { pgrep -f -- "--workload-name $1-1" | while read -r p; do grep -q "$TMP" /proc/$p/cmdline 2>/dev/null && echo $p; done | head -n1; }
CLIENT_PID=$(proxy_pid client)
SERVER_PID=$(proxy_pid backend)
REF_PIDS=$(pgrep -f -- "nginx -c $TMP/ref.conf" | tr '\n' ' '; pgrep -P "$(cat "$TMP/ref.pid")" | tr '\n' ' ')
HZ=$(getconf CLK_TCK)
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
kb() { awk -v k="$2" '$1==k":" {print $2}' "/proc/$1/status"; }

declare -A URL=(
  [direct]="http://$NET.3:8081/1k"
  [nginx]="http://$NET.4:8082/1k"
  [mesh-l7]="http://$VIP:8080/1k"
  [mesh-tcp]="http://$VIP:8090/1k"
  [mesh-l7-off]="http://$VIP:8080/1k"
  [direct-newconn]="http://$NET.3:8081/1k"
  [mesh-l7-newconn]="http://$VIP:8080/1k"
  [mesh-tcp-newconn]="http://$VIP:8090/1k"
)
read -r -a CASES <<< "${CASES:-direct nginx mesh-l7 mesh-tcp}"
# Request telemetry of both proxies, switched for the mesh-l7-off case.
telemetry() { # on|off
  in_ns client curl -sf -X POST "http://127.0.0.1:15000/telemetry?enabled=$1" >/dev/null
  in_ns server curl -sf -X POST "http://127.0.0.1:15000/telemetry?enabled=$1" >/dev/null
}
around() { # case before|after: telemetry off before mesh-l7-off, back on after it
  [ "$1" = mesh-l7-off ] || return 0
  if [ "$2" = before ]; then telemetry off; else telemetry on; fi
}

# Every case answers before anything is measured.
for c in "${CASES[@]}"; do
  [ -n "${URL[$c]:-}" ] || { echo "unknown case $c (cases: ${!URL[*]})" >&2; exit 1; }
  got=$(in_ns client curl -s -o /dev/null -w '%{http_code} %{size_download}' "${URL[$c]}")
  [ "$got" = "200 1024" ] || { echo "case $c: got '$got' from ${URL[$c]}" >&2; tail -n 20 "$TMP"/proxy-*.log >&2; exit 1; }
done
pss() { awk '$1=="Pss:" {print $2}' "/proc/$1/smaps_rollup"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k/1024}'; }
# RSS counts the binary's code pages, which every trellis process on the host shares;
# PSS divides shared pages among their users, and RssAnon is the proxy's own heap and stacks.
memory() { # pid
  echo "RSS $(mib "$(kb "$1" VmRSS)") MiB, PSS $(mib "$(pss "$1")") MiB, anonymous $(mib "$(kb "$1" RssAnon)") MiB"
}
IDLE_CLIENT=$(memory "$CLIENT_PID"); IDLE_SERVER=$(memory "$SERVER_PID")
if [ -n "${HOLD:-}" ]; then
  # For profiling by hand: everything stays up until this script is interrupted.
  echo "holding: client proxy $CLIENT_PID, server proxy $SERVER_PID; cases:" >&2
  for c in "${CASES[@]}"; do echo "  $c: ip netns exec $PREFIX-client ... ${URL[$c]}" >&2; done
  while :; do sleep 3600; done
fi

# Kernel counters of a namespace, as JSON: SYN retransmissions (a connection whose first
# SYN went unanswered waits a full second for the second), listen-queue overflows and drops,
# and resets sent. `nstat -a` prints absolute values; the difference over a run is taken below.
counters() { # host
  in_ns "$1" nstat -asz TcpExtTCPSynRetrans TcpExtListenOverflows TcpExtListenDrops TcpOutRsts \
    TcpExtTCPTimeWaitOverflow TcpExtTW 2>/dev/null |
    awk 'BEGIN {printf "{"} NR > 1 && $1 !~ /^#/ {printf "%s\"%s\":%s", (n++ ? "," : ""), $1, $2} END {printf "}"}'
}
RESULTS=$TMP/results.jsonl
for r in $(seq 1 "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    around "$c" before
    rate=$RATE; mode=(); burst=null
    kb=$(counters client); ksb=$(counters server)
    if [[ $c == *-newconn ]]; then
      rate=$NEWCONN_RATE; mode=(--new-connection)
      [ -z "$SERVER_CLOSES" ] || mode+=(--server-closes)
      # The burst: many short connections through the same path (the same capture listener,
      # for the mesh cases) just before the measured run, as a busy neighbour would leave it.
      burst=$(in_ns client "$LOADGEN" --url "${URL[$c]}" --host backend --rate "$BURST_RATE" \
        --duration "$BURST" --warmup 0 "${mode[@]}")
    fi
    kc0=$(counters client); ks0=$(counters server)
    c0=$(ticks "$CLIENT_PID"); s0=$(ticks "$SERVER_PID"); n0=$(ticks $REF_PIDS)
    if [ -n "${PERF_OUT:-}" ] && [ "$c" = mesh-l7 ] && [ "$r" = 1 ]; then
      perf record -q -F 4999 -g -p "$CLIENT_PID,$SERVER_PID" -o "$PERF_OUT" -- sleep "$DURATION" 2>/dev/null &
    fi
    out=$(in_ns client "$LOADGEN" --url "${URL[$c]}" --host backend --rate "$rate" \
      --connections "$CONNS" --duration "$DURATION" --warmup 2 "${mode[@]}")
    c1=$(ticks "$CLIENT_PID"); s1=$(ticks "$SERVER_PID"); n1=$(ticks $REF_PIDS)
    kc1=$(counters client); ks1=$(counters server)
    around "$c" after
    echo "{\"round\":$r,\"case\":\"$c\",\"client_ticks\":$((c1 - c0)),\"server_ticks\":$((s1 - s0)),\"ref_ticks\":$((n1 - n0)),\"kernel\":{\"client\":[$kb,$kc0,$kc1],\"server\":[$ksb,$ks0,$ks1]},\"burst\":$burst,\"load\":$out}" >> "$RESULTS"
    echo "round $r $c: $out" >&2
  done
done

MAXRESULTS=$TMP/max.txt
: > "$MAXRESULTS"
for c in "${CASES[@]}"; do
  # wrk keeps its connections alive: the new-connection cases have no closed-loop figure.
  [[ $c == *-newconn ]] && continue
  around "$c" before
  rps=$(in_ns client wrk -t2 -c"$CONNS" -d"${MAXDUR}s" -H "Host: backend" "${URL[$c]}" | awk '/Requests\/sec/ {print $2}')
  around "$c" after
  echo "$c $rps" >> "$MAXRESULTS"
  echo "max $c: $rps" >&2
done
PEAK_CLIENT="peak RSS $(mib "$(kb "$CLIENT_PID" VmHWM)") MiB; after load $(memory "$CLIENT_PID")"
PEAK_SERVER="peak RSS $(mib "$(kb "$SERVER_PID" VmHWM)") MiB; after load $(memory "$SERVER_PID")"

python3 - "$RESULTS" "$MAXRESULTS" "$HZ" "$DURATION" "${CASES[*]}" <<EOF
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
maxes = dict(l.split() for l in open(sys.argv[2]))
hz, dur = int(sys.argv[3]), float(sys.argv[4])
cases = sys.argv[5].split()
med = statistics.median
def by(case): return [r for r in rows if r["case"] == case]
def pct(case, p): return med(r["load"][p] for r in by(case))
def added(case, p):
    d = {r["round"]: r["load"][p] for r in by("direct")}
    return med(r["load"][p] - d[r["round"]] for r in by(case))
newconn = [c for c in cases if c.endswith("-newconn")]
cases = [c for c in cases if not c.endswith("-newconn")]
def kdelta(r, host, name, during):
    """A counter's increase in a namespace during the burst (0) or the measured run (1)."""
    k = r["kernel"][host]
    return k[during + 1].get(name, 0) - k[during].get(name, 0)
if newconn:
    closes = " (Connection: close, the server closes first)" if "$SERVER_CLOSES" else ""
    print(f"New connection per request{closes}: $NEWCONN_RATE connections/s, 1 KB responses, {int(dur)} s per case, $ROUNDS rounds,")
    print("each run right after a $BURST s burst at $BURST_RATE connections/s through the same path")
    print("(medians over rounds; latency in µs from each request's start, connect included;")
    print("kernel counters summed over rounds, burst / measured run).")
    print()
    print("| case | p50 | p90 | p99 | p99.9 | max | connect p99 | errors | burst p99 | burst connect p99 | SYN retransmits, client ns | listen drops, client ns | listen drops, server ns | RSTs sent (client, server ns) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|")
    for c in newconn:
        rs = by(c)
        s = lambda host, name: "%d / %d" % tuple(sum(kdelta(r, host, name, d) for r in rs) for d in (0, 1))
        burst = lambda p: med(r["burst"][p] for r in rs)
        print(f"| {c} | {pct(c,'p50_us'):.0f} | {pct(c,'p90_us'):.0f} | {pct(c,'p99_us'):.0f} | {pct(c,'p999_us'):.0f} | {pct(c,'max_us'):.0f} | {pct(c,'connect_p99_us'):.0f} | {sum(r['load']['errors'] for r in rs)} | {burst('p99_us'):.0f} | {burst('connect_p99_us'):.0f} | {s('client','TcpExtTCPSynRetrans')} | {s('client','TcpExtListenDrops')} | {s('server','TcpExtListenDrops')} | {s('client','TcpOutRsts')}; {s('server','TcpOutRsts')} |")
    print()
if cases:
  print(f"Open loop: $RATE requests/s, $CONNS connections, 1 KB responses, {int(dur)} s per case, $ROUNDS rounds")
  print("(medians over rounds; latency in µs, measured from each request's scheduled send time).")
  print()
  print("| case | p50 | p90 | p99 | added p50 | added p90 | added p99 | errors | CPU s / 1000 req (client, server proxy) | max req/s (closed loop) | vs direct |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
  direct_max = float(maxes["direct"])
  for c in cases:
      errs = sum(r["load"]["errors"] for r in by(c))
      reqs = sum(r["load"]["sent"] for r in by(c))
      if c.startswith("mesh"):
          cpu = "%.4f, %.4f" % (sum(r["client_ticks"] for r in by(c)) / hz / reqs * 1000,
                               sum(r["server_ticks"] for r in by(c)) / hz / reqs * 1000)
      elif c == "nginx":
          cpu = "%.4f (nginx)" % (sum(r["ref_ticks"] for r in by(c)) / hz / reqs * 1000)
      else:
          cpu = "–"
      add = ["–"] * 3 if c == "direct" else ["%+d" % added(c, p) for p in ("p50_us", "p90_us", "p99_us")]
      print(f"| {c} | {pct(c,'p50_us'):.0f} | {pct(c,'p90_us'):.0f} | {pct(c,'p99_us'):.0f} | {add[0]} | {add[1]} | {add[2]} | {errs} | {cpu} | {float(maxes[c]):.0f} | {float(maxes[c])/direct_max:.2f}× |")
  print()
if "mesh-l7" in cases and "mesh-l7-off" in cases:
    def cpu(case, who): return sum(r[who + "_ticks"] for r in by(case)) / sum(r["load"]["sent"] for r in by(case))
    for who in ("client", "server"):
        on, off = cpu("mesh-l7", who), cpu("mesh-l7-off", who)
        print(f"Telemetry on vs off, {who} proxy: CPU per request {on / off:.3f}× ({(on / off - 1) * 100:+.1f} %).")
    print()
print("vCPU per 1,000 requests/s = CPU s per 1,000 requests (the two are the same number).")
print()
print("Client proxy idle: $IDLE_CLIENT; $PEAK_CLIENT.")
print("Server proxy idle: $IDLE_SERVER; $PEAK_SERVER.")
print("102 services in the snapshot.")
EOF
echo
echo "Machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(uname -r); commit $(git rev-parse --short HEAD)$(git diff --quiet || echo +changes); $(date -u +%FT%TZ)"
