#!/usr/bin/env bash
# Instructions per query of the query path, counted by valgrind's callgrind: deterministic (no
# timing noise, independent of machine load), so a regression shows as a changed number.
#
#   bash benches/callgrind.sh            # every case, N=20000 queries each
#   CALLGRIND_N=5000 bash benches/callgrind.sh static geo_ecs
#
# For each case the bench binary (benches/callgrind.rs) runs twice under callgrind, answering N
# and 0 queries; (Ir(N) - Ir(0)) / N is the instruction count of one `dns::answer::respond`
# (parse → lookup → GeoIP → routing → encode), start-up cancelled out. "+count" adds the
# per-query Prometheus counting the UDP worker does (shown for static and geo_ecs). Socket syscalls are not included.
# Hash tables are seeded per process, which moves a count by up to ~2% from run to run, so each
# figure is the median of CALLGRIND_RUNS (default 3) such pairs.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
N="${CALLGRIND_N:-20000}"
RUNS="${CALLGRIND_RUNS:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
CASES=("$@")
[[ ${#CASES[@]} -eq 0 ]] && CASES=(static geo_ecs geo_ecs_many cname_chain nxdomain)

if ! command -v valgrind >/dev/null 2>&1; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi

BIN="$(cd "$ROOT" && cargo bench --bench callgrind --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "callgrind" and m.get("executable"):
        print(m["executable"])')"
[[ -x "$BIN" ]] || { echo "callgrind bench binary not built" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/meridian-callgrind.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
ir() { # ir ARGS...: total instructions of one run
  valgrind --tool=callgrind --callgrind-out-file="$WORK/out" "$BIN" "$@" 2>"$WORK/err" >/dev/null
  awk '/Collected :/ { print $NF }' "$WORK/err"
}

printf '%-22s %12s\n' "case (N=$N)" "instr/query"
for case in "${CASES[@]}"; do
  modes=("")
  # Counting costs only routed answers something; one routed and one static case show it.
  [[ $case == geo_ecs || $case == static ]] && modes+=(count)
  for mode in "${modes[@]}"; do
    per=()
    extra=()
    [[ -n "$mode" ]] && extra=("$mode")
    for _ in $(seq 1 "$RUNS"); do
      base="$(ir "$case" 0 "${extra[@]}")"
      full="$(ir "$case" "$N" "${extra[@]}")"
      per+=("$(awk -v a="$base" -v b="$full" -v n="$N" 'BEGIN { printf "%.0f", (b - a) / n }')")
    done
    label="$case${mode:++count}"
    printf '%-22s %12s   (runs: %s)\n' "$label" "$(printf '%s\n' "${per[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')" "${per[*]}"
  done
done
