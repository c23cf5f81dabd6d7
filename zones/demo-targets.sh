#!/usr/bin/env bash
# Local stand-ins for the demo clusters' VIPs, so meridian's health checks have something to
# probe: a tiny HTTP server on port 8080 of each cluster's address (zones/demo.yaml probes
# http://VIP:8080/ for web.shop.demo.svc.gslb.example.com).
#
#   zones/demo-targets.sh start [cluster...]   start targets (default: all three)
#   zones/demo-targets.sh stop  [cluster...]   stop targets (default: all three)
#   zones/demo-targets.sh status               show which targets run
#
# Clusters: new-york (127.10.0.1), houston (127.20.0.1), los-angeles (127.30.0.1).
# Stop one and watch meridian fail over, e.g.:
#   zones/demo-targets.sh start
#   zones/demo-targets.sh stop los-angeles
#   dig @127.0.0.1 -p 5353 +subnet=192.0.2.0/24 web.shop.demo.svc.gslb.example.com
#
# Needs python3. Pid and log files live in ${TMPDIR:-/tmp}/meridian-demo. Linux routes all of
# 127.0.0.0/8 to loopback, so no address needs configuring.
set -euo pipefail

PORT=8080
DIR="${TMPDIR:-/tmp}/meridian-demo"
ALL=(new-york houston los-angeles)

vip() {
  case "$1" in
    new-york) echo 127.10.0.1 ;;
    houston) echo 127.20.0.1 ;;
    los-angeles) echo 127.30.0.1 ;;
    *) echo "unknown cluster: $1 (expected one of: ${ALL[*]})" >&2; return 1 ;;
  esac
}

running() {
  local pidfile="$DIR/$1.pid"
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# Waits until the target accepts connections; fails if its process died (e.g. the address is
# already served by something else, such as a test run's stand-in).
wait_listening() {
  local cluster="$1" ip="$2"
  for _ in $(seq 1 50); do
    running "$cluster" || break
    if python3 - "$ip" "$PORT" <<'PY' 2>/dev/null; then
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.2).close()
PY
      sleep 0.1
      running "$cluster" && return 0
      break
    fi
    sleep 0.1
  done
  rm -f "$DIR/$cluster.pid"
  echo "$cluster: target did not start on $ip:$PORT:" >&2
  tail -n 3 "$DIR/$cluster.log" >&2
  return 1
}

start() {
  local cluster="$1" ip
  ip="$(vip "$cluster")"
  if running "$cluster"; then
    echo "$cluster: already running on $ip:$PORT (pid $(cat "$DIR/$cluster.pid"))"
    return 0
  fi
  mkdir -p "$DIR/$cluster-root"
  printf 'ok %s\n' "$cluster" >"$DIR/$cluster-root/index.html"
  # setsid: the target outlives this shell and ignores its terminal's signals.
  setsid python3 -m http.server "$PORT" --bind "$ip" --directory "$DIR/$cluster-root" \
    >"$DIR/$cluster.log" 2>&1 </dev/null &
  echo $! >"$DIR/$cluster.pid"
  wait_listening "$cluster" "$ip"
  echo "$cluster: started on $ip:$PORT (pid $(cat "$DIR/$cluster.pid"))"
}

stop() {
  local cluster="$1" pid
  vip "$cluster" >/dev/null
  if ! running "$cluster"; then
    rm -f "$DIR/$cluster.pid"
    echo "$cluster: not running"
    return 0
  fi
  pid="$(cat "$DIR/$cluster.pid")"
  kill "$pid"
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  rm -f "$DIR/$cluster.pid"
  echo "$cluster: stopped"
}

status() {
  local cluster
  for cluster in "${ALL[@]}"; do
    if running "$cluster"; then
      echo "$cluster: running on $(vip "$cluster"):$PORT (pid $(cat "$DIR/$cluster.pid"))"
    else
      echo "$cluster: stopped"
    fi
  done
}

cmd="${1:-}"
shift || true
mkdir -p "$DIR"
clusters=("$@")
[[ ${#clusters[@]} -eq 0 ]] && clusters=("${ALL[@]}")
case "$cmd" in
  start) for c in "${clusters[@]}"; do start "$c"; done ;;
  stop) for c in "${clusters[@]}"; do stop "$c"; done ;;
  status) status ;;
  *)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
