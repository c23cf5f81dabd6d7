#!/usr/bin/env bash
# Provision real `kube-apiserver` and `etcd` binaries for meridian's Kubernetes
# integration tests, built from source fetched through the Go module proxy
# (no GitHub, no dl.k8s.io, no prebuilt binaries).
#
# Usage:  tests/k8s/provision.sh
# Output (stdout, nothing else is printed there):
#     KUBE_APISERVER=/abs/path/kube-apiserver-vX.Y.Z
#     ETCD=/abs/path/etcd-vA.B.C
# All build chatter goes to stderr. Exit status is non-zero on any failure.
#
# Environment (all optional):
#   KUBE_VERSION        k8s.io/kubernetes version to build   (default below)
#   ETCD_VERSION        go.etcd.io/etcd/server/v3 version     (default below)
#   MERIDIAN_CACHE      cache root (default: $HOME/.cache/meridian). Binaries go to
#                       $MERIDIAN_CACHE/k8s/, the Go module and build caches to
#                       $MERIDIAN_CACHE/go/{mod,build}, so re-runs are fast.
#   MERIDIAN_BUILD_JOBS go build -p value (default 2: the machines have 2 cores and
#                       other builds may run concurrently).
#   GO                  path to the go command (default: PATH, then /usr/local/go/bin/go).
#
# How kube-apiserver is built: k8s.io/kubernetes's go.mod replaces every k8s.io/*
# staging module with ./staging/src/k8s.io/X, which only works inside the
# kubernetes repo. We create a throwaway module (in a temp dir, never in the repo)
# that requires k8s.io/kubernetes vX.Y.Z and replaces each of those staging modules
# with the published k8s.io/X v0.Y.Z, then `go build k8s.io/kubernetes/cmd/kube-apiserver`.
#
# Why not Debian's etcd-server: bookworm ships 3.4.23, while Kubernetes >= 1.31
# needs etcd >= 3.4.29 / 3.5.11. etcd's main package is the module root
# go.etcd.io/etcd/server/v3 (server/main.go), built the same way.
#
# Second and later runs are instant: a cached binary is never rebuilt. Binaries are
# built into a temp file, checked with --version, then renamed into place
# atomically, so an interrupted build never leaves a broken cached binary. A lock
# (flock) serialises concurrent invocations (e.g. parallel test processes).
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.34.12}"
ETCD_VERSION="${ETCD_VERSION:-v3.5.35}"

CACHE_ROOT="${MERIDIAN_CACHE:-${HOME:?neither MERIDIAN_CACHE nor HOME is set}/.cache/meridian}"
BUILD_JOBS="${MERIDIAN_BUILD_JOBS:-2}"

# Keep stdout clean for the KEY=path result lines: fd 3 is the real stdout, and
# everything else (including the go command's own output) goes to stderr.
exec 3>&1 1>&2

log() { printf 'provision: %s\n' "$*" >&2; }
die() { printf 'provision: ERROR: %s\n' "$*" >&2; exit 1; }

[[ "$KUBE_VERSION" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] \
    || die "KUBE_VERSION must look like v1.Y.Z (got '$KUBE_VERSION')"
STAGING_VERSION="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
[[ "$ETCD_VERSION" =~ ^v3\.[0-9]+\.[0-9]+$ ]] \
    || die "ETCD_VERSION must look like v3.Y.Z (got '$ETCD_VERSION')"

mkdir -p "$CACHE_ROOT"
CACHE_ROOT="$(cd "$CACHE_ROOT" && pwd -P)"
BIN_DIR="$CACHE_ROOT/k8s"
KUBE_APISERVER_BIN="$BIN_DIR/kube-apiserver-$KUBE_VERSION"
ETCD_BIN="$BIN_DIR/etcd-$ETCD_VERSION"
mkdir -p "$BIN_DIR"

emit() {
    printf 'KUBE_APISERVER=%s\n' "$KUBE_APISERVER_BIN" >&3
    printf 'ETCD=%s\n' "$ETCD_BIN" >&3
}

# Fast path: nothing to do, and no go toolchain needed at all.
if [[ -x "$KUBE_APISERVER_BIN" && -x "$ETCD_BIN" ]]; then
    emit
    exit 0
fi

# Serialise builds across concurrent invocations; re-check after taking the lock.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$BIN_DIR/.provision.lock"
    if ! flock -n 9; then
        log "another provision.sh is building; waiting for its lock..."
        flock 9
    fi
    if [[ -x "$KUBE_APISERVER_BIN" && -x "$ETCD_BIN" ]]; then
        emit
        exit 0
    fi
fi

# ---------------------------------------------------------------- go toolchain
find_go() {
    if [[ -n "${GO:-}" ]]; then
        [[ -x "$GO" ]] || die "GO=$GO is not executable"
        return
    fi
    if command -v go >/dev/null 2>&1; then
        GO="$(command -v go)"
    elif [[ -x /usr/local/go/bin/go ]]; then
        GO=/usr/local/go/bin/go
    else
        # Last resort. Note: Debian bookworm's golang is 1.19, older than what
        # current Kubernetes needs; the version check below then fails clearly.
        log "no go toolchain found; installing Debian's golang package"
        command -v apt-get >/dev/null 2>&1 || die "no go toolchain and no apt-get to install one"
        [[ "$(id -u)" == 0 ]] || die "no go toolchain found (and not root, so cannot apt-get install golang)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang >&2
        GO="$(command -v go)" || die "apt-get install golang did not provide a go command"
    fi
}
find_go

# Build environment: caches under $CACHE_ROOT, pure-Go static binaries, no VCS
# stamping, no go.work from anywhere, and never switch toolchains behind our back.
export GOMODCACHE="$CACHE_ROOT/go/mod"
export GOCACHE="$CACHE_ROOT/go/build"
export GOFLAGS="-p=$BUILD_JOBS -modcacherw -trimpath -buildvcs=false"
export CGO_ENABLED=0
export GOWORK=off
export GO111MODULE=on
export GOTOOLCHAIN=local
unset GOOS GOARCH
mkdir -p "$GOMODCACHE" "$GOCACHE"

GO_VERSION="$("$GO" env GOVERSION)" || die "'$GO env GOVERSION' failed"
GO_VERSION="${GO_VERSION#go}"
log "using $GO (go$GO_VERSION), GOMODCACHE=$GOMODCACHE, GOCACHE=$GOCACHE, -p=$BUILD_JOBS"

# version_ge A B: true if A >= B (dotted versions).
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

# go_line FILE: the `go X.Y[.Z]` directive of a go.mod.
go_line() { sed -n 's/^go[[:space:]]\{1,\}\([0-9][0-9.]*\)[[:space:]]*$/\1/p' "$1" | head -n1; }

require_go() { # require_go GOMOD WHAT
    local need
    need="$(go_line "$1")"
    [[ -n "$need" ]] || die "cannot read the go directive of $1"
    version_ge "$GO_VERSION" "$need" \
        || die "$2 needs go >= $need but $GO is go$GO_VERSION; install a newer Go (or set GO=/path/to/go)"
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/meridian-k8s-build.XXXXXX")"
cleanup() {
    rm -rf "$WORK"
    rm -f "$BIN_DIR"/.*.tmp.$$ 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# mod_download MODULE@VERSION -> prints the path of its downloaded go.mod
mod_download() {
    local json gomod
    if ! json="$(cd "$WORK" && "$GO" mod download -json "$1")"; then
        printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Error":[[:space:]]*//p' >&2
        die "go mod download $1 failed (is that version available on the Go module proxy?)"
    fi
    gomod="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p' | head -n1)"
    [[ -n "$gomod" && -f "$gomod" ]] || die "go mod download $1 gave no GoMod path: $json"
    printf '%s\n' "$gomod"
}

# install_checked TMP FINAL VERSION-REGEX: check TMP --version, then rename it to FINAL.
install_checked() {
    local tmp="$1" final="$2" want="$3" out
    out="$("$tmp" --version 2>&1)" || die "$tmp --version failed: $out"
    grep -Eq -- "$want" <<<"$out" || die "$tmp --version printed '$out', expected /$want/"
    chmod 0755 "$tmp"
    mv -f "$tmp" "$final"
    log "installed $final ($(head -n1 <<<"$out"))"
}

# ------------------------------------------------------------- kube-apiserver
build_kube_apiserver() {
    local mod_dir="$WORK/kube-apiserver" k8s_gomod replaces n tmp start
    start=$SECONDS
    log "building kube-apiserver $KUBE_VERSION (staging modules at $STAGING_VERSION); a cold build takes several minutes"
    mkdir -p "$mod_dir"

    k8s_gomod="$(mod_download "k8s.io/kubernetes@$KUBE_VERSION")"
    require_go "$k8s_gomod" "k8s.io/kubernetes $KUBE_VERSION"

    # Every `k8s.io/X => ./staging/src/k8s.io/X` (block or single-line form)
    # becomes `k8s.io/X => k8s.io/X v0.Y.Z`.
    replaces="$(sed -n 's#^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\(k8s\.io/[^[:space:]]\{1,\}\)[[:space:]]\{1,\}=>[[:space:]]\{1,\}\./staging/src/\(k8s\.io/[^[:space:]]\{1,\}\)[[:space:]]*$#\2#p' "$k8s_gomod" | sort -u)"
    n="$(grep -c . <<<"$replaces" || true)"
    [[ "$n" -gt 0 ]] || die "found no ./staging/src replace directives in $k8s_gomod"
    log "pinning $n staging modules to $STAGING_VERSION"

    {
        echo "module meridian.test/kube-apiserver-build"
        echo
        echo "go $(go_line "$k8s_gomod")"
        echo
        # Same GODEBUG defaults as an upstream build of this release.
        grep -E '^godebug[[:space:]]' "$k8s_gomod" || true
        echo
        echo "require k8s.io/kubernetes $KUBE_VERSION"
        echo
        echo "replace ("
        while read -r m; do
            printf '\t%s => %s %s\n' "$m" "$m" "$STAGING_VERSION"
        done <<<"$replaces"
        echo ")"
    } >"$mod_dir/go.mod"

    (cd "$mod_dir" && "$GO" get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION") \
        || die "go get k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION failed (see $mod_dir/go.mod above)"

    # Version stamping as in kubernetes' hack/lib/version.sh, so that
    # `--version` and GET /version report the real release.
    local major minor ldflags pkg
    major=1
    minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done

    tmp="$BIN_DIR/.kube-apiserver-$KUBE_VERSION.tmp.$$"
    (cd "$mod_dir" && "$GO" build -ldflags="$ldflags" -o "$tmp" k8s.io/kubernetes/cmd/kube-apiserver) \
        || die "go build k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION failed"
    install_checked "$tmp" "$KUBE_APISERVER_BIN" "^Kubernetes ${KUBE_VERSION//./\\.}\$"
    log "kube-apiserver $KUBE_VERSION built in $((SECONDS - start))s"
}

# ----------------------------------------------------------------------- etcd
build_etcd() {
    local mod_dir="$WORK/etcd" etcd_gomod tmp start
    start=$SECONDS
    log "building etcd $ETCD_VERSION"
    mkdir -p "$mod_dir"

    etcd_gomod="$(mod_download "go.etcd.io/etcd/server/v3@$ETCD_VERSION")"
    require_go "$etcd_gomod" "go.etcd.io/etcd/server/v3 $ETCD_VERSION"

    {
        echo "module meridian.test/etcd-build"
        echo
        echo "go $(go_line "$etcd_gomod")"
        echo
        echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    } >"$mod_dir/go.mod"

    (cd "$mod_dir" && "$GO" get "go.etcd.io/etcd/server/v3@$ETCD_VERSION") \
        || die "go get go.etcd.io/etcd/server/v3@$ETCD_VERSION failed"

    tmp="$BIN_DIR/.etcd-$ETCD_VERSION.tmp.$$"
    (cd "$mod_dir" && "$GO" build -ldflags="-s -w" -o "$tmp" go.etcd.io/etcd/server/v3) \
        || die "go build go.etcd.io/etcd/server/v3@$ETCD_VERSION failed"
    install_checked "$tmp" "$ETCD_BIN" "^etcd Version: ${ETCD_VERSION#v}\$"
    log "etcd $ETCD_VERSION built in $((SECONDS - start))s"
}

[[ -x "$ETCD_BIN" ]] || build_etcd
[[ -x "$KUBE_APISERVER_BIN" ]] || build_kube_apiserver

emit
