#!/usr/bin/env bash
# Provision `helm`, `kustomize` and `promtool` for meridian's deploy tests (tests/integration/deploy.rs),
# cached under $MERIDIAN_CACHE/tools so that second and later runs are instant.
#
# Usage:  tests/k8s/provision-tools.sh
# Output (stdout, nothing else is printed there):
#     HELM=/abs/path/helm-vX.Y.Z
#     KUSTOMIZE=/abs/path/kustomize-vX.Y.Z
#     PROMTOOL=/abs/path/promtool-X.Y.Z
# All chatter goes to stderr. Exit status is non-zero on any failure.
#
#   helm, kustomize: not packaged in Debian bookworm; built once with `go install` from the Go
#             module proxy (same GOMODCACHE/GOCACHE as tests/k8s/provision.sh). kustomize is
#             the standalone one (kubectl -k embeds the same library), so the tests build
#             deploy/ and its components exactly as an operator's `kubectl apply -k` would.
#   promtool: Debian bookworm's `prometheus` package ships it. The package is downloaded with
#             apt and only *unpacked* (dpkg-deb -x) into the cache: installing it would start a
#             Prometheus server from its init script, which the tests do not want.
#
# Environment (all optional): HELM_VERSION, KUSTOMIZE_VERSION, MERIDIAN_CACHE, MERIDIAN_BUILD_JOBS, GO.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.7.1}"
CACHE_ROOT="${MERIDIAN_CACHE:-${HOME:?neither MERIDIAN_CACHE nor HOME is set}/.cache/meridian}"
BUILD_JOBS="${MERIDIAN_BUILD_JOBS:-2}"

exec 3>&1 1>&2
log() { printf 'provision-tools: %s\n' "$*" >&2; }
die() { printf 'provision-tools: ERROR: %s\n' "$*" >&2; exit 1; }

[[ "$HELM_VERSION" =~ ^v3\.[0-9]+\.[0-9]+$ ]] || die "HELM_VERSION must look like v3.Y.Z (got '$HELM_VERSION')"
[[ "$KUSTOMIZE_VERSION" =~ ^v5\.[0-9]+\.[0-9]+$ ]] || die "KUSTOMIZE_VERSION must look like v5.Y.Z (got '$KUSTOMIZE_VERSION')"

mkdir -p "$CACHE_ROOT/tools"
CACHE_ROOT="$(cd "$CACHE_ROOT" && pwd -P)"
BIN_DIR="$CACHE_ROOT/tools"
HELM_BIN="$BIN_DIR/helm-$HELM_VERSION"
KUSTOMIZE_BIN="$BIN_DIR/kustomize-$KUSTOMIZE_VERSION"
# promtool's name carries the Debian version it came from, found after the download.
promtool_cached() { compgen -G "$BIN_DIR/promtool-*" | grep -v '\.tmp\.' | sort -V | tail -n1 || true; }

emit() {
    printf 'HELM=%s\n' "$HELM_BIN" >&3
    printf 'KUSTOMIZE=%s\n' "$KUSTOMIZE_BIN" >&3
    printf 'PROMTOOL=%s\n' "$(promtool_cached)" >&3
}

cached() { [[ -x "$HELM_BIN" && -x "$KUSTOMIZE_BIN" && -n "$(promtool_cached)" ]]; }
if cached; then
    emit
    exit 0
fi

exec 9>"$BIN_DIR/.provision.lock"
if ! flock -n 9; then
    log "another provision-tools.sh is running; waiting for its lock..."
    flock 9
fi
if cached; then
    emit
    exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/meridian-tools.XXXXXX")"
trap 'rm -rf "$WORK"; rm -f "$BIN_DIR"/.*.tmp.$$ 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM

# go_tool NAME PACKAGE VERSION FINAL LDFLAGS: `go install PACKAGE@VERSION`, check that
# `NAME version` names VERSION, then rename into place (never a broken cached binary).
go_tool() {
    local name="$1" pkg="$2" version="$3" final="$4" ldflags="$5" go="${GO:-}" start=$SECONDS tmp out
    [[ -n "$go" ]] || go="$(command -v go || true)"
    [[ -n "$go" ]] || { [[ -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go; }
    [[ -n "$go" && -x "$go" ]] || die "no go toolchain found to build $name (set GO=/path/to/go)"
    log "building $name $version with $go (a cold build takes a few minutes)"
    export GOMODCACHE="$CACHE_ROOT/go/mod" GOCACHE="$CACHE_ROOT/go/build"
    export GOFLAGS="-p=$BUILD_JOBS -modcacherw -trimpath -buildvcs=false"
    export CGO_ENABLED=0 GOWORK=off GO111MODULE=on GOTOOLCHAIN=local
    mkdir -p "$WORK/gobin"
    (cd "$WORK" && GOBIN="$WORK/gobin" "$go" install -ldflags "-s -w $ldflags" "$pkg@$version") \
        || die "go install $pkg@$version failed"
    tmp="$BIN_DIR/.$name.tmp.$$"
    mv "$WORK/gobin/$name" "$tmp"
    out="$("$tmp" version 2>&1)" || die "$name version failed: $out"
    [[ "$out" == *"$version"* ]] || die "built $name reports '$out', expected $version"
    chmod 0755 "$tmp"
    mv -f "$tmp" "$final"
    log "$name $version built in $((SECONDS - start))s"
}

fetch_promtool() {
    local start=$SECONDS deb ver tmp
    command -v apt-get >/dev/null 2>&1 || die "promtool comes from Debian's prometheus package, but there is no apt-get"
    log "downloading Debian's prometheus package to unpack promtool"
    if ! (cd "$WORK" && apt-get download prometheus >&2); then
        if [[ "$(id -u)" == 0 ]]; then
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        else
            sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        fi
        (cd "$WORK" && apt-get download prometheus >&2) || die "apt-get download prometheus failed"
    fi
    deb="$(compgen -G "$WORK/prometheus_*.deb" | head -n1)" || die "apt-get download left no .deb"
    ver="$(dpkg-deb -f "$deb" Version)"
    ver="${ver%%+*}"
    dpkg-deb -x "$deb" "$WORK/x" || die "dpkg-deb -x $deb failed"
    [[ -x "$WORK/x/usr/bin/promtool" ]] || die "$deb has no usr/bin/promtool"
    tmp="$BIN_DIR/.promtool.tmp.$$"
    mv "$WORK/x/usr/bin/promtool" "$tmp"
    "$tmp" --version >&2 || die "promtool --version failed"
    mv -f "$tmp" "$BIN_DIR/promtool-$ver"
    log "promtool $ver unpacked in $((SECONDS - start))s"
}

[[ -n "$(promtool_cached)" ]] || fetch_promtool
# Versions are stamped the way the projects' own release builds do, so `version` tells the truth.
[[ -x "$HELM_BIN" ]] || go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "$HELM_BIN" \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
[[ -x "$KUSTOMIZE_BIN" ]] || go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION" \
    "$KUSTOMIZE_BIN" "-X sigs.k8s.io/kustomize/api/provenance.version=$KUSTOMIZE_VERSION"
emit
