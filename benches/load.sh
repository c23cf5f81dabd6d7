#!/usr/bin/env bash
# Load comparison: meridian vs gdnsd serving the same zone and geo scenario, driven by dnsperf.
#
#   bash benches/load.sh                     # every run below (about 3 minutes)
#   LOAD_DURATION=20 LOAD_RATE=30000 bash benches/load.sh
#   LOAD_SETS="geo" LOAD_SWAP=0 bash benches/load.sh
#
# Scenario (the demo, zones/): three clusters (New York, Houston, Los Angeles), distance routing
# from the demo GeoIP database (zones/demo-geoip.mmdb), HTTP health checks every 2 s against
# local targets on port 8080 of each cluster address (rise 2, fall 3). The VIPs are moved to
# 127.{110,120,130}.0.1 in a copy of zones/ so the targets here never collide with the demo's. gdnsd gets the same: plugin_geoip with
# auto_dc_coords (city-auto-mode over the same mmdb) and an http_status service type against the
# same targets, and the same static records. Query sets (dnsperf binary input, -B, so every
# query carries its own ECS option):
#   geo     web.shop.demo.svc.gslb.example.com A with ECS from 1024 client prefixes (IPv4 /24,
#           /28 and /32 in the database's networks, IPv6 /56 and /64): one A record + ECS scope;
#   static  static/ns1/ns2/status names of the zone, A and AAAA, EDNS without ECS.
#
# Runs, each LOAD_DURATION seconds, server pinned to core 0 (one UDP worker/thread) and dnsperf
# to core 1:
#   full    as fast as dnsperf goes (-q 200 outstanding);
#   rate    fixed offered load, -Q LOAD_RATE (the CPU-per-query comparison);
#   swap    (meridian only, geo) the fixed-rate run while the snapshot is swapped every 100 ms
#           (SIGHUP reloads: parse, compile, publish), to compare latency with the rate run;
# then, unpinned, one worker per core for both servers, dnsperf with 2 thread pairs: full speed.
#
# Printed per run: qps, average / p99 / max latency (p99 from dnsperf -v per-query latencies,
# fixed-rate runs only: printing every reply slows the client, so full-speed runs have none),
# lost queries, server CPU µs per answered query (user+sys of the server process over the run,
# /proc/PID/stat, ÷ completed queries), and the share of core 0 that *other* processes used
# during the run (noise: the machine is shared). Then ratios meridian / gdnsd.
#
# Traffic goes only to 127.0.0.0/8. Needs root for apt-get when dnsperf/gdnsd are missing.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${LOAD_DURATION:-10}"
RATE="${LOAD_RATE:-20000}"
SETS="${LOAD_SETS:-geo static}"
SWAP="${LOAD_SWAP:-1}"
UNPINNED="${LOAD_UNPINNED:-1}"
MPORT="${LOAD_MERIDIAN_PORT:-15353}"
MADMIN="${LOAD_MERIDIAN_ADMIN:-15153}"
GPORT="${LOAD_GDNSD_PORT:-15354}"
SERVER_CPU=0
CLIENT_CPU=1
WORK="$(mktemp -d "${TMPDIR:-/tmp}/meridian-load.XXXXXX")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
MERIDIAN="$CARGO_TARGET_DIR/release/meridian"
TCK="$(getconf CLK_TCK)"
RESULTS="$WORK/results.tsv"

log() { printf '%s\n' "$*" >&2; }

# ---------------------------------------------------------------- packages and build
apt_updated=0
need() { # need COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  if [[ $apt_updated == 0 ]]; then
    apt-get update -qq >/dev/null
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need dnsperf dnsperf
need gdnsd gdnsd
need python3 python3
need taskset util-linux
need dig dnsutils

log "building meridian (release) in $CARGO_TARGET_DIR"
(cd "$ROOT" && cargo build --release --bin meridian --quiet)

# ---------------------------------------------------------------- cleanup
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do
    if [[ -n "$p" ]]; then kill "$p" 2>/dev/null || true; fi
  done
  for p in "${PIDS[@]:-}"; do
    if [[ -n "$p" ]]; then wait "$p" 2>/dev/null || true; fi
  done
}
trap cleanup EXIT

# ---------------------------------------------------------------- zone and health-check targets
# The demo zones, with the clusters' VIPs moved from 127.{10,20,30}.0.x to 127.{110,120,130}.0.x
# so this benchmark's targets never collide with the demo's or the integration tests' (which
# bind the demo addresses and stop them to test failover).
ZONES="$WORK/zones"
mkdir -p "$ZONES"
cp "$ROOT"/zones/*.zone "$ROOT"/zones/*.yaml "$ROOT"/zones/*.mmdb "$ZONES/"
sed -i -e 's/127\.10\.0\./127.110.0./g' -e 's/127\.20\.0\./127.120.0./g' \
  -e 's/127\.30\.0\./127.130.0./g' "$ZONES"/*.yaml
VIP_NY=127.110.0.1 VIP_HOU=127.120.0.1 VIP_LA=127.130.0.1
log "starting health-check targets on $VIP_NY, $VIP_HOU, $VIP_LA port 8080"
for ip in $VIP_NY $VIP_HOU $VIP_LA; do
  mkdir -p "$WORK/www-$ip"
  echo ok >"$WORK/www-$ip/index.html"
  python3 -m http.server 8080 --bind "$ip" --directory "$WORK/www-$ip" >"$WORK/target-$ip.log" 2>&1 &
  PIDS+=("$!")
done
for ip in $VIP_NY $VIP_HOU $VIP_LA; do
  for _ in $(seq 1 50); do
    python3 -c 'import socket, sys; socket.create_connection((sys.argv[1], 8080), timeout=0.2).close()' "$ip" 2>/dev/null && break
    sleep 0.1
  done
done

# ---------------------------------------------------------------- query files
python3 - "$WORK" <<'PY'
import ipaddress, random, struct, sys
work = sys.argv[1]
rng = random.Random(5)

def name(n):
    out = b""
    for label in n.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"

def ecs(addr, prefix):
    ip = ipaddress.ip_address(addr)
    fam = 1 if ip.version == 4 else 2
    nbytes = (prefix + 7) // 8
    raw = bytearray(ip.packed[:nbytes])
    if prefix % 8:
        raw[-1] &= (0xFF << (8 - prefix % 8)) & 0xFF
    data = struct.pack("!HBB", fam, prefix, 0) + bytes(raw)
    return struct.pack("!HH", 8, len(data)) + data

def query(qid, qname, qtype, opt=None):
    # RD clear (resolvers ask authorities without it); EDNS payload 1232.
    p = struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 1)
    p += name(qname) + struct.pack("!HH", qtype, 1)
    rdata = opt or b""
    p += b"\0" + struct.pack("!HHIH", 41, 1232, 0, len(rdata)) + rdata
    return p

A, AAAA = 1, 28
# Client networks the demo database places (README: San Francisco, San Diego, New York, Dallas,
# Miami; San Jose, Boston, Austin).
v4 = ["192.0.2.0/25", "192.0.2.128/25", "198.51.100.0/24", "203.0.113.0/25", "203.0.113.128/25"]
v6 = ["2001:db8:1::/48", "2001:db8:2::/48", "2001:db8:3::/48"]
geo = []
for i in range(1024):
    if i % 4 == 3:
        net = ipaddress.ip_network(rng.choice(v6))
        prefix = rng.choice([56, 64])
        host = net.network_address + rng.randrange(net.num_addresses >> 64) * (1 << 64)
    else:
        net = ipaddress.ip_network(rng.choice(v4))
        prefix = rng.choice([24, 28, 32, 32])
        host = net.network_address + rng.randrange(net.num_addresses)
    geo.append(query(i, "web.shop.demo.svc.gslb.example.com", A, ecs(str(host), prefix)))
static = []
for i, (n, t) in enumerate([
    ("static.gslb.example.com", A), ("static.gslb.example.com", AAAA),
    ("ns1.gslb.example.com", A), ("ns2.gslb.example.com", AAAA),
    ("status.gslb.example.com", A), ("ns2.gslb.example.com", A),
] * 16):
    static.append(query(i, n, t))
for fname, pkts in (("geo.bin", geo), ("static.bin", static)):
    with open(f"{work}/{fname}", "wb") as f:
        for p in pkts:
            f.write(struct.pack("!H", len(p)) + p)
PY

# ---------------------------------------------------------------- gdnsd configuration
GD="$WORK/gdnsd"
mkdir -p "$GD/zones" "$GD/geoip" "$GD/run" "$GD/state"
cp "$ROOT/zones/demo-geoip.mmdb" "$GD/geoip/demo-geoip.mmdb"
gdnsd_config() { # gdnsd_config UDP_THREADS
  cat >"$GD/config" <<EOF
options => {
  listen => { 127.0.0.1:$GPORT => { udp_threads => $1, tcp_threads => 1 } }
  run_dir => $GD/run
  state_dir => $GD/state
}
service_types => {
  # As zones/demo.yaml: HTTP GET / on port 8080 every 2 s, timeout 1 s, rise 2, fall 3.
  web_http => { plugin => http_status, port => 8080, url_path => /, interval => 2, timeout => 1,
                up_thresh => 2, ok_thresh => 2, down_thresh => 3 }
}
plugins => {
  geoip => {
    maps => {
      demo => {
        geoip2_db => demo-geoip.mmdb,
        datacenters => [new-york, houston, los-angeles],
        auto_dc_coords => {
          new-york => [40.7128, -74.0060],
          houston => [29.7604, -95.3698],
          los-angeles => [34.0522, -118.2437],
        }
      }
    }
    resources => {
      web => {
        map => demo
        service_types => web_http
        dcmap => {
          new-york => $VIP_NY,
          houston => $VIP_HOU,
          los-angeles => $VIP_LA,
        }
      }
    }
  }
}
EOF
}
# The demo zone (zones/gslb.example.com.zone plus demo.yaml's names, as meridian serves them).
cat >"$GD/zones/gslb.example.com" <<'EOF'
$TTL 300
@       SOA ns1.gslb.example.com. hostmaster.example.com. 2026112501 7200 3600 1209600 60
@       NS  ns1.gslb.example.com.
@       NS  ns2.gslb.example.com.
@       TXT "meridian demo zone"
@       MX  10 mail.example.com.
ns1     A   192.0.2.53
ns2     A   198.51.100.53
ns2     AAAA 2001:db8::53
static  A   192.0.2.10
static  AAAA 2001:db8::10
docs    CNAME www.gslb.example.com.
www 60  CNAME web.shop.demo.svc.gslb.example.com.
web.shop.demo.svc 30 DYNA geoip!web
status 120 A 192.0.2.80
status 120 A 192.0.2.81
status 120 TXT "v=status1"
EOF

# ---------------------------------------------------------------- servers
SERVER_PID=""
start_meridian() { # start_meridian WORKERS [taskset-cpu]
  local pin=()
  [[ -n "${2:-}" ]] && pin=(taskset -c "$2")
  "${pin[@]}" "$MERIDIAN" serve --zones "$ZONES" --listen "127.0.0.1:$MPORT" \
    --admin "127.0.0.1:$MADMIN" --udp-workers "$1" >"$WORK/meridian.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
}
start_gdnsd() { # start_gdnsd THREADS [taskset-cpu]
  local pin=()
  [[ -n "${2:-}" ]] && pin=(taskset -c "$2")
  gdnsd_config "$1"
  "${pin[@]}" gdnsd -c "$GD" start >"$WORK/gdnsd.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
}
stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
# Waits until the server answers the geo name for San Francisco with Los Angeles (health checks
# have passed: both servers need two successful probes), or fails.
wait_ready() { # wait_ready PORT NAME
  local ans=""
  for _ in $(seq 1 60); do
    ans="$(dig +time=1 +tries=1 +short @127.0.0.1 -p "$1" web.shop.demo.svc.gslb.example.com A \
      +subnet=192.0.2.0/24 2>/dev/null || true)"
    if [[ "$ans" == "$VIP_LA" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
      sleep 5 # two more probe rounds: every target is up
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.5
  done
  log "$2 did not become ready (last answer: '$ans'); log:"
  tail -20 "$WORK/$2.log" >&2
  return 1
}

# ---------------------------------------------------------------- measurement
cpu_ticks() { # user+sys ticks of a process (all threads)
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
core_busy() { # busy ticks of one CPU (user nice system irq softirq steal)
  awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}
stat_of() { # stat_of FILE KEY: a number from dnsperf's summary
  case "$2" in
    completed) awk '/Queries completed:/ { print $3 }' "$1" ;;
    lost) awk '/Queries lost:/ { print $3 }' "$1" ;;
    qps) awk '/Queries per second:/ { print $4 }' "$1" ;;
    avg) awk '/Average Latency/ { print $4 }' "$1" ;;
    max) awk '/Average Latency/ { gsub(/[(),]/, ""); print $8 }' "$1" ;;
  esac
}
p99_of() { # p99 latency (s) from dnsperf -v lines "> NOERROR ... 0.000123"
  awk '/^> / { print $NF }' "$1" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "-"; exit } i = int(NR * 0.99); if (i < 1) i = 1; print v[i] }'
}

printf 'server\tset\tmode\tqps\tavg_ms\tp99_ms\tmax_ms\tlost\tcompleted\tcpu_us_per_q\tcore0_other_pct\tload1\n' >"$RESULTS"

# run SERVER SET MODE PORT [extra dnsperf args...]
run() {
  local server="$1" set="$2" mode="$3" port="$4"
  shift 4
  local out="$WORK/dnsperf-$server-$set-$mode.txt" verbose=() qps_arg=() pin=(taskset -c "$CLIENT_CPU") threads=(-T 1)
  case "$mode" in
    rate | swap) qps_arg=(-Q "$RATE"); verbose=(-v) ;;
    unpinned) pin=(); threads=(-T 2) ;;
  esac
  local load1 t0 t1 c0 c1 swapper=""
  load1="$(cut -d' ' -f1 /proc/loadavg)"
  t0="$(cpu_ticks "$SERVER_PID")"
  c0="$(core_busy "$SERVER_CPU")"
  if [[ "$mode" == swap ]]; then
    # One process that forks nothing (a shell loop would fork `sleep` every 100 ms), on the
    # client's core: what the run measures is the server's swap, not the swapper.
    taskset -c "$CLIENT_CPU" python3 -c '
import os, signal, sys, time
pid, end = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        break
    time.sleep(0.1)
' "$SERVER_PID" "$DURATION" &
    swapper=$!
  fi
  "${pin[@]}" dnsperf -B -d "$WORK/$set.bin" -s 127.0.0.1 -p "$port" -l "$DURATION" -c 8 \
    "${threads[@]}" -q 200 -t 2 "${qps_arg[@]}" "${verbose[@]}" "$@" >"$out" 2>&1 || true
  if [[ -n "$swapper" ]]; then wait "$swapper" 2>/dev/null || true; fi
  t1="$(cpu_ticks "$SERVER_PID")"
  c1="$(core_busy "$SERVER_CPU")"
  local completed lost qps avg max p99 cpu_us other
  completed="$(stat_of "$out" completed)"
  lost="$(stat_of "$out" lost)"
  qps="$(stat_of "$out" qps)"
  avg="$(stat_of "$out" avg)"
  max="$(stat_of "$out" max)"
  p99="-"
  [[ ${#verbose[@]} -gt 0 ]] && p99="$(p99_of "$out")"
  if [[ -z "$completed" || "$completed" == 0 ]]; then
    log "$server $set $mode: dnsperf failed:"
    tail -5 "$out" >&2
    return 0
  fi
  cpu_us="$(awk -v a="$t0" -v b="$t1" -v n="$completed" -v t="$TCK" 'BEGIN { printf "%.2f", (b - a) / t * 1e6 / n }')"
  # Core 0's busy time not spent in the server (only meaningful when the server is pinned).
  other="$(awk -v a="$c0" -v b="$c1" -v s0="$t0" -v s1="$t1" -v d="$DURATION" -v t="$TCK" -v m="$mode" 'BEGIN {
    if (m == "unpinned") { print "-"; exit }
    o = ((b - a) - (s1 - s0)) / t / d * 100; if (o < 0) o = 0; printf "%.0f", o }')"
  # shellcheck disable=SC2016 # an awk program, not a shell expansion
  local ms='{ if ($1 == "-") print "-"; else printf "%.3f", $1 * 1000 }'
  printf '%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$set" "$mode" "$qps" \
    "$(echo "$avg" | awk "$ms")" "$(echo "$p99" | awk "$ms")" "$(echo "$max" | awk "$ms")" \
    "$lost" "$completed" "$cpu_us" "$other" "$load1" >>"$RESULTS"
  log "$(tail -1 "$RESULTS")"
}

log "runs: ${DURATION}s each, fixed rate ${RATE} qps, sets: $SETS; results in $RESULTS"
log "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# Pinned: server on core 0 with one worker, dnsperf on core 1.
for server in meridian gdnsd; do
  if [[ $server == meridian ]]; then start_meridian 1 "$SERVER_CPU"; port=$MPORT; else start_gdnsd 1 "$SERVER_CPU"; port=$GPORT; fi
  wait_ready "$port" "$server"
  for set in $SETS; do
    run "$server" "$set" full "$port"
    run "$server" "$set" rate "$port"
    if [[ $server == meridian && $set == geo && $SWAP == 1 ]]; then
      run "$server" "$set" swap "$port"
    fi
  done
  stop_server
done

# Unpinned: one worker per core for both, dnsperf free to run anywhere.
if [[ $UNPINNED == 1 ]]; then
  cores="$(nproc)"
  for server in meridian gdnsd; do
    if [[ $server == meridian ]]; then start_meridian "$cores"; port=$MPORT; else start_gdnsd "$cores"; port=$GPORT; fi
    wait_ready "$port" "$server"
    for set in $SETS; do
      run "$server" "$set" unpinned "$port"
    done
    stop_server
  done
fi

# ---------------------------------------------------------------- report
echo
echo "meridian $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?') vs gdnsd $(gdnsd -h 2>&1 | awk '/gdnsd version/ { print $3; exit }'), dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ { print $2 }'); ${DURATION}s runs; fixed rate ${RATE} qps"
echo "server pinned to core $SERVER_CPU (1 UDP worker), dnsperf to core $CLIENT_CPU; 'unpinned': $(nproc) workers each, nothing pinned"
echo "core0 other %: share of the server's core used by other processes during the run (noise)"
echo
column -t -s $'\t' "$RESULTS"
echo
echo "ratios meridian / gdnsd (CPU per query: lower is better; qps: higher is better)"
awk -F'\t' 'NR > 1 { k = $2 "\t" $3; v[$1, k, "cpu"] = $10; v[$1, k, "qps"] = $4; v[$1, k, "max"] = $7;
    v[$1, k, "lost"] = $8; v[$1, k, "p99"] = $6; keys[k] = 1 }
  END {
    for (k in keys) {
      if (!((("meridian", k, "cpu") in v) && (("gdnsd", k, "cpu") in v))) continue
      split(k, p, "\t")
      r = "-"; if (v["gdnsd", k, "cpu"] > 0) r = sprintf("%.2f", v["meridian", k, "cpu"] / v["gdnsd", k, "cpu"])
      q = "-"; if (v["gdnsd", k, "qps"] > 0) q = sprintf("%.2f", v["meridian", k, "qps"] / v["gdnsd", k, "qps"])
      l = "-"; if (v["gdnsd", k, "max"] > 0) l = sprintf("%.2f", v["meridian", k, "max"] / v["gdnsd", k, "max"])
      pp = "-"; if (v["gdnsd", k, "p99"] != "-" && v["gdnsd", k, "p99"] > 0) pp = sprintf("%.2f", v["meridian", k, "p99"] / v["gdnsd", k, "p99"])
      printf "%-8s %-9s %10s %10s %10s %10s %16s\n", p[1], p[2], r, q, pp, l, v["meridian", k, "lost"] " / " v["gdnsd", k, "lost"]
    }
  }' "$RESULTS" | sort -k1,1 -k2,2 | { printf "%-8s %-9s %10s %10s %10s %10s %16s\n" set mode cpu/query qps p99 "max lat" "lost (m / g)"; cat; }
echo
echo "raw dnsperf output and server logs: $WORK"
