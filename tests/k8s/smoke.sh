#!/usr/bin/env bash
# Smoke test for tests/k8s/provision.sh: start one etcd and TWO kube-apiservers
# sharing it under different --etcd-prefix values (the layout meridian's Rust
# integration tests use: one apiserver per simulated cluster), wait for /readyz,
# list namespaces, check that the two apiservers are isolated from each other,
# then tear everything down. Loopback (127.0.0.1) only; ports picked at random.
#
# Usage: tests/k8s/smoke.sh        (KEEP_TMP=1 keeps the temp dir and logs)
#
# ---------------------------------------------------------------------------
# How to start the processes (the Rust integration-test harness must do the same;
# start_etcd / start_apiserver below are the reference):
#
# etcd, one per test run (C, P = free loopback ports, DIR = fresh temp dir):
#   etcd --name meridian-test --data-dir DIR \
#        --listen-client-urls http://127.0.0.1:C --advertise-client-urls http://127.0.0.1:C \
#        --listen-peer-urls http://127.0.0.1:P --initial-advertise-peer-urls http://127.0.0.1:P \
#        --initial-cluster meridian-test=http://127.0.0.1:P --initial-cluster-state new \
#        --initial-cluster-token meridian-test-<unique> \
#        --unsafe-no-fsync --quota-backend-bytes 1073741824 --log-level warn
#   (--unsafe-no-fsync: throwaway test data, makes writes much faster.)
#   Ready when GET http://127.0.0.1:C/health returns {"health":"true",...}
#   (typically < 0.5 s).
#
# kube-apiserver, one per simulated cluster, all on the same etcd:
#   kube-apiserver --etcd-servers=http://127.0.0.1:C --etcd-prefix=/<unique-per-cluster> \
#        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=S \
#        --cert-dir=CERTDIR --token-auth-file=TOKENS.csv --authorization-mode=RBAC \
#        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
#        --service-account-key-file=sa.pub --service-account-signing-key-file=sa.key \
#        --service-cluster-ip-range=10.96.0.0/16 --endpoint-reconciler-type=none \
#        --disable-admission-plugins=ServiceAccount --profiling=false
#   Ready when GET https://127.0.0.1:S/readyz with the Bearer token returns "ok"
#   (about 3-4 s here, even with two started at once on 2 cores).
#   Notes:
#   - --etcd-prefix gives each apiserver its own keyspace: independent clusters
#     (a namespace created on one is 404 on the other). Verified below.
#   - --token-auth-file: CSV lines `token,user,uid,"group1,group2"`; a token in
#     group system:masters is cluster-admin under RBAC. No token -> 401.
#   - --service-account-key-file / --service-account-signing-key-file /
#     --service-account-issuer are mandatory: startup fails without them. An RSA
#     key from `openssl genrsa 2048` (+ `openssl rsa -pubout`) works.
#   - --cert-dir: the apiserver generates a serving cert there at startup:
#     apiserver.crt holds the leaf (SANs: IP 127.0.0.1, IP 10.96.0.1,
#     kubernetes, kubernetes.default, kubernetes.default.svc -- NOT localhost)
#     followed by its self-signed CA, so clients can use apiserver.crt as their
#     CA bundle (`curl --cacert`, checked below) and connect to 127.0.0.1, or
#     skip verification. The file exists once the apiserver is serving.
#   - --endpoint-reconciler-type=none: without it the apiserver tries every 10 s
#     to publish its --advertise-address as the endpoint of the `kubernetes`
#     service and logs an error (loopback endpoints are invalid). Harmless but noisy.
#   - --disable-admission-plugins=ServiceAccount: there is no
#     kube-controller-manager, so namespaces get no `default` ServiceAccount and
#     creating a Pod would fail ("serviceaccount default not found").
#   - No controller-manager also means: no EndpointSlice controller (tests must
#     create EndpointSlices / Service status themselves), no garbage collection,
#     and a deleted namespace stays `Terminating` forever (use fresh namespace
#     names rather than deleting and recreating).
#   - Stop apiservers (SIGTERM, exits in 1-2 s) before etcd, or they log gRPC
#     reconnect warnings.
# ---------------------------------------------------------------------------
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
log() { printf 'smoke: %s\n' "$*" >&2; }
die() { printf 'smoke: FAIL: %s\n' "$*" >&2; exit 1; }

for tool in curl openssl; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

# --------------------------------------------------------------- binaries
prov_out="$("$HERE/provision.sh")" || die "provision.sh failed"
KUBE_APISERVER="" ETCD=""
while IFS='=' read -r key val; do
    case "$key" in
        KUBE_APISERVER) KUBE_APISERVER="$val" ;;
        ETCD) ETCD="$val" ;;
    esac
done <<<"$prov_out"
[[ -x "$KUBE_APISERVER" && -x "$ETCD" ]] || die "provision.sh printed no usable binaries: $prov_out"
log "kube-apiserver: $KUBE_APISERVER"
log "etcd:           $ETCD"

# --------------------------------------------------------------- scratch + teardown
TMP="$(mktemp -d "${TMPDIR:-/tmp}/meridian-k8s-smoke.XXXXXX")"
PIDS=()
FAILED=1
stop_wait() { # stop_wait PID...: wait up to 10 s for each to exit, then SIGKILL
    local pid
    for pid in "$@"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
teardown() {
    # Stop the apiservers first, etcd (PIDS[0]) last, so that the apiservers
    # do not log etcd reconnect noise while shutting down.
    if ((${#PIDS[@]} > 1)); then
        kill -TERM "${PIDS[@]:1}" 2>/dev/null || true
        stop_wait "${PIDS[@]:1}"
    fi
    if ((${#PIDS[@]} > 0)); then
        kill -TERM "${PIDS[0]}" 2>/dev/null || true
        stop_wait "${PIDS[0]}"
    fi
    if [[ "$FAILED" == 1 ]]; then
        for f in "$TMP"/*.log; do
            [[ -f "$f" ]] || continue
            printf '\n----- last lines of %s -----\n' "$f" >&2
            tail -n 25 "$f" >&2
        done
    fi
    if [[ -n "${KEEP_TMP:-}" ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap teardown EXIT
trap 'exit 130' INT TERM

# free_port: ask the kernel for an unused loopback TCP port.
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
    else
        local p
        while :; do
            p=$((20000 + RANDOM % 40000))
            ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return; }
        done
    fi
}

# --------------------------------------------------------------- credentials
TOKEN="$(openssl rand -hex 24)"
# token,user,uid,"groups"
printf '%s,meridian-admin,meridian-admin,"system:masters"\n' "$TOKEN" >"$TMP/tokens.csv"
# Service-account signing key pair (RSA, PKCS#8 private key + PEM public key).
openssl genrsa -out "$TMP/sa.key" 2048 2>/dev/null
openssl rsa -in "$TMP/sa.key" -pubout -out "$TMP/sa.pub" 2>/dev/null
chmod 600 "$TMP/tokens.csv" "$TMP/sa.key"

# --------------------------------------------------------------- etcd
ETCD_CLIENT_PORT="$(free_port)"
ETCD_PEER_PORT="$(free_port)"
ETCD_URL="http://127.0.0.1:$ETCD_CLIENT_PORT"

start_etcd() {
    "$ETCD" \
        --name meridian-test \
        --data-dir "$TMP/etcd-data" \
        --listen-client-urls "$ETCD_URL" \
        --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "meridian-test=http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster-state new \
        --initial-cluster-token "meridian-test-$$" \
        --unsafe-no-fsync \
        --quota-backend-bytes $((1024 * 1024 * 1024)) \
        --log-level warn \
        >"$TMP/etcd.log" 2>&1 &
    PIDS+=("$!")
}

log "starting etcd on $ETCD_URL (peer port $ETCD_PEER_PORT)"
start_etcd
etcd_pid="${PIDS[-1]}"
for _ in $(seq 1 100); do
    kill -0 "$etcd_pid" 2>/dev/null || die "etcd exited early"
    if curl -fsS --max-time 1 "$ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"'; then
        break
    fi
    sleep 0.1
done
curl -fsS --max-time 1 "$ETCD_URL/health" | grep -q '"health":"true"' || die "etcd not healthy after 10 s"
log "etcd healthy"

# --------------------------------------------------------------- kube-apiserver
# start_apiserver NAME SECURE_PORT ETCD_PREFIX
start_apiserver() {
    local name="$1" port="$2" prefix="$3"
    mkdir -p "$TMP/certs-$name"
    "$KUBE_APISERVER" \
        --etcd-servers="$ETCD_URL" \
        --etcd-prefix="$prefix" \
        --bind-address=127.0.0.1 \
        --advertise-address=127.0.0.1 \
        --secure-port="$port" \
        --cert-dir="$TMP/certs-$name" \
        --token-auth-file="$TMP/tokens.csv" \
        --authorization-mode=RBAC \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$TMP/sa.pub" \
        --service-account-signing-key-file="$TMP/sa.key" \
        --service-cluster-ip-range=10.96.0.0/16 \
        --endpoint-reconciler-type=none \
        --disable-admission-plugins=ServiceAccount \
        --profiling=false \
        >"$TMP/apiserver-$name.log" 2>&1 &
    PIDS+=("$!")
}

# wait_ready NAME PORT PID: poll /readyz for up to 120 s; prints seconds taken.
wait_ready() {
    local name="$1" port="$2" pid="$3" start=$SECONDS body
    while ((SECONDS - start < 120)); do
        kill -0 "$pid" 2>/dev/null || die "kube-apiserver $name exited early"
        body="$(curl -ksS --max-time 2 -H "Authorization: Bearer $TOKEN" \
            "https://127.0.0.1:$port/readyz" 2>/dev/null || true)"
        if [[ "$body" == "ok" ]]; then
            return 0
        fi
        sleep 0.2
    done
    curl -ksS --max-time 5 -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$port/readyz?verbose" >&2 || true
    die "kube-apiserver $name not ready after 120 s"
}

api() { # api PORT [curl args...] PATH
    local port="$1"; shift
    curl -ksS --fail-with-body --max-time 10 -H "Authorization: Bearer $TOKEN" "$@"
}

PORT_A="$(free_port)"
PORT_B="$(free_port)"
[[ "$PORT_A" != "$PORT_B" ]] || PORT_B="$(free_port)"

log "starting kube-apiserver A on https://127.0.0.1:$PORT_A (etcd prefix /meridian-a)"
t0="$(date +%s.%N)"
start_apiserver a "$PORT_A" /meridian-a
pid_a="${PIDS[-1]}"
log "starting kube-apiserver B on https://127.0.0.1:$PORT_B (etcd prefix /meridian-b)"
start_apiserver b "$PORT_B" /meridian-b
pid_b="${PIDS[-1]}"

wait_ready a "$PORT_A" "$pid_a"
t_a="$(date +%s.%N)"
wait_ready b "$PORT_B" "$pid_b"
t_b="$(date +%s.%N)"
log "$(printf 'apiserver A ready after %.1f s, B after %.1f s (both started together on 2 cores)' \
    "$(awk "BEGIN{print $t_a-$t0}")" "$(awk "BEGIN{print $t_b-$t0}")")"

# --------------------------------------------------------------- checks
log "GET https://127.0.0.1:$PORT_A/version"
api "$PORT_A" "https://127.0.0.1:$PORT_A/version" | grep '"gitVersion"' >&2 \
    || die "GET /version failed"

log "GET /version again, verifying TLS with --cacert certs-a/apiserver.crt instead of -k"
curl -sS --fail --max-time 10 --cacert "$TMP/certs-a/apiserver.crt" -H "Authorization: Bearer $TOKEN" \
    "https://127.0.0.1:$PORT_A/version" >/dev/null || die "TLS verification against certs-a/apiserver.crt failed"

log "GET https://127.0.0.1:$PORT_A/api/v1/namespaces"
ns_a="$(api "$PORT_A" "https://127.0.0.1:$PORT_A/api/v1/namespaces")" || die "list namespaces on A failed: $ns_a"
names_a="$(grep -o '"name": *"[^"]*"' <<<"$ns_a" | sed 's/.*"\([^"]*\)"$/\1/' | sort -u | tr '\n' ' ')"
log "namespaces on A: $names_a"
grep -qw default <<<"$names_a" || die "namespace 'default' missing on A"
grep -qw kube-system <<<"$names_a" || die "namespace 'kube-system' missing on A"

log "creating namespace meridian-smoke on A only"
api "$PORT_A" -X POST -H 'Content-Type: application/json' \
    -d '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"meridian-smoke"}}' \
    "https://127.0.0.1:$PORT_A/api/v1/namespaces" >/dev/null || die "create namespace on A failed"
api "$PORT_A" "https://127.0.0.1:$PORT_A/api/v1/namespaces/meridian-smoke" >/dev/null \
    || die "namespace meridian-smoke not found on A"
log "creating a Pod in it (works only thanks to --disable-admission-plugins=ServiceAccount)"
api "$PORT_A" -X POST -H 'Content-Type: application/json' \
    -d '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"example.invalid/none"}]}}' \
    "https://127.0.0.1:$PORT_A/api/v1/namespaces/meridian-smoke/pods" >/dev/null || die "create pod on A failed"
code_b="$(curl -ksS -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $TOKEN" \
    "https://127.0.0.1:$PORT_B/api/v1/namespaces/meridian-smoke")"
[[ "$code_b" == 404 ]] || die "namespace meridian-smoke visible on B (HTTP $code_b): prefixes are not isolated"
log "B answers 404 for it: the two apiservers are isolated"

log "anonymous/unauthorised request is refused"
code_anon="$(curl -ksS -o /dev/null -w '%{http_code}' --max-time 10 "https://127.0.0.1:$PORT_A/api/v1/namespaces")"
[[ "$code_anon" == 401 || "$code_anon" == 403 ]] || die "unauthenticated request got HTTP $code_anon"

# Keys really live under the two prefixes (etcd v3 JSON gateway, count only).
count_prefix() {
    local b64s b64e
    b64s="$(printf '%s/' "$1" | base64 | tr -d '\n')"
    b64e="$(printf '%s0' "$1" | base64 | tr -d '\n')"
    curl -fsS --max-time 5 -X POST "$ETCD_URL/v3/kv/range" \
        -d "{\"key\":\"$b64s\",\"range_end\":\"$b64e\",\"count_only\":true}" \
        | grep -o '"count":"[0-9]*"' | grep -o '[0-9][0-9]*' || echo 0
}
keys_a="$(count_prefix /meridian-a)"
keys_b="$(count_prefix /meridian-b)"
log "etcd keys under /meridian-a/: $keys_a, under /meridian-b/: $keys_b"
[[ "$keys_a" -gt 0 && "$keys_b" -gt 0 ]] || die "expected keys under both etcd prefixes"

FAILED=0
log "OK"
echo "1 passed, 0 failed"
