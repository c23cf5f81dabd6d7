#!/usr/bin/env bash
# Every benchmark, in one command:
#
#   bash benches/run.sh
#
# 1. criterion micro-benchmarks of the query path (short measurement time);
# 2. snapshot compile for 1k/10k/100k ServiceDNSRecords: memory table and criterion timings;
# 3. instructions per query under callgrind (deterministic; benches/callgrind.sh);
# 4. the load comparison with gdnsd under dnsperf (benches/load.sh; installs dnsperf and gdnsd);
# 5. the failover drill timing, `cargo bench --bench failover`;
# 6. health checks at scale, `cargo bench --bench health_scale` (10k targets at 1 s);
# 7. Kubernetes change -> DNS answer propagation, from the integration test that drives a real
#    etcd + kube-apiserver (provisioned and cached by tests/k8s/provision.sh).
#
# Skip parts with BENCH_SKIP="load callgrind ..." (names: query_path compile callgrind load
# failover health propagation). Criterion reports land in $CARGO_TARGET_DIR/criterion. The machine is shared and
# has 2 cores: each part prints the load average first; compare runs made under similar load.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SKIP=" ${BENCH_SKIP:-} "
want() { [[ "$SKIP" != *" $1 "* ]]; }
section() { printf '\n=== %s (load average %s)\n' "$1" "$(cut -d' ' -f1-3 /proc/loadavg)"; }
# summary GROUP...: criterion's median estimate (and its 95% interval) for every benchmark of
# the groups, from $CARGO_TARGET_DIR/criterion/GROUP/*/new/estimates.json.
summary() {
  python3 - "$CARGO_TARGET_DIR/criterion" "$@" <<'PY'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
def fmt(ns):
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= div:
            return f"{ns / div:.3g} {unit}"
    return f"{ns:.3g} ns"
print(f"{'benchmark':40} {'median':>10}   95% interval")
for group in sys.argv[2:]:
    for est in sorted((root / group).glob("**/new/estimates.json")):
        name = str(est.parent.parent.relative_to(root))
        m = json.loads(est.read_text())["median"]
        ci = m["confidence_interval"]
        print(f"{name:40} {fmt(m['point_estimate']):>10}   [{fmt(ci['lower_bound'])} .. {fmt(ci['upper_bound'])}]")
PY
}

if want query_path; then
  section "query path (criterion)"
  cargo bench --bench query_path -- --warm-up-time 0.5 --measurement-time 2
  summary respond respond_and_count parts
fi
if want compile; then
  section "snapshot compile (criterion + memory)"
  cargo bench --bench compile -- --warm-up-time 0.5 --measurement-time 3
  summary compile
fi
if want callgrind; then
  section "instructions per query (callgrind)"
  bash benches/callgrind.sh
fi
if want load; then
  section "load: meridian vs gdnsd (dnsperf)"
  bash benches/load.sh
fi
if want failover && [[ -f benches/failover.rs ]]; then
  section "failover drill"
  cargo bench --bench failover
fi
if want health; then
  section "health checks at scale"
  cargo bench --bench health_scale
fi
if want propagation; then
  section "Kubernetes propagation (real etcd + kube-apiserver)"
  eval "$(bash tests/k8s/provision.sh)"
  export KUBE_APISERVER ETCD
  cargo test --release --test integration kubernetes_federated_service_and_ingress_records \
    -- --nocapture 2>&1 | grep -E "kubernetes change -> DNS answer|propagation_seconds|test result"
fi
