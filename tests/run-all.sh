#!/usr/bin/env bash
# The whole test suite, as a new user or CI runs it:  bash tests/run-all.sh
#
# Installs what the tests need and caches it outside the clone:
#   - Debian packages: dnsutils (dig) — tests compare with a real DNS client; chromium and
#     chromium-driver — the status page is tested in headless Chromium;
#   - kube-apiserver and etcd, built once from the Go module proxy (tests/k8s/provision.sh);
#   - helm and kustomize (Go module proxy) and promtool (unpacked from Debian's prometheus
#     package, nothing started) for the deploy/ tests (tests/k8s/provision-tools.sh);
#   - cargo's build directory ($MERIDIAN_CACHE/target), so a fresh clone builds incrementally.
# Then: rustfmt check, clippy (warnings are errors), every unit and integration test.
# Closes with one line "N passed, M failed" counting every test that ran.
set -euo pipefail
cd "$(dirname "$0")/.."

export MERIDIAN_CACHE="${MERIDIAN_CACHE:-$HOME/.cache/meridian}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MERIDIAN_CACHE/target}"
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p "$MERIDIAN_CACHE"
step() { printf '\n==> %s\n' "$*" >&2; }

step "system packages"
need=()
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The status page is tested in a real browser (tests/integration/status_page.rs).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
echo "dig: $(command -v dig)" >&2

step "kube-apiserver and etcd (built once, cached in $MERIDIAN_CACHE/k8s)"
started=$(date +%s)
eval "$(bash tests/k8s/provision.sh)"
export KUBE_APISERVER ETCD
echo "kube-apiserver: $KUBE_APISERVER ($(( $(date +%s) - started ))s)" >&2

step "helm, kustomize and promtool (built/unpacked once, cached in $MERIDIAN_CACHE/tools)"
started=$(date +%s)
eval "$(bash tests/k8s/provision-tools.sh)"
export HELM KUSTOMIZE PROMTOOL
echo "helm: $HELM, kustomize: $KUSTOMIZE, promtool: $PROMTOOL ($(( $(date +%s) - started ))s)" >&2

step "format and lint"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

step "tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# Benches are compiled by clippy above and run by benches/run.sh, not here.
cargo test --locked --lib --bins --tests 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed_lines=$(grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$log" | awk '{s+=$6} END {print s+0}')
if ((status != 0 && failed_lines == 0)); then
    # A build error or a crashed test binary: count it as a failure, not as silence.
    failed_lines=1
fi

# Coverage-guided fuzzing of the request path, bounded (MERIDIAN_FUZZ_SECONDS, default 60).
# A crash fails the run; the crashing input is left in fuzz/artifacts/ to become a regression
# test. Needs the nightly toolchain (rustup) and cargo-fuzz (installed once into the cache).
fuzz_status=0
if ((status == 0)); then
    step "fuzz (request path, ${MERIDIAN_FUZZ_SECONDS:-60}s)"
    tools="$MERIDIAN_CACHE/tools"
    if [[ ! -x "$tools/bin/cargo-fuzz" ]]; then
        CARGO_TARGET_DIR="$MERIDIAN_CACHE/tools-target" cargo install cargo-fuzz --locked --root "$tools"
    fi
    if ! rustup toolchain list | grep -q '^nightly'; then
        rustup toolchain install nightly --profile minimal
    fi
    corpus_work="$MERIDIAN_CACHE/fuzz-corpus"
    mkdir -p "$corpus_work"
    cp -n fuzz/corpus/respond/* "$corpus_work/" 2>/dev/null || true
    set +e
    PATH="$tools/bin:$PATH" cargo +nightly fuzz run respond --target-dir "$MERIDIAN_CACHE/fuzz-target" \
        "$corpus_work" fuzz/corpus/respond -- -max_total_time="${MERIDIAN_FUZZ_SECONDS:-60}" -rss_limit_mb=4096 2>&1 | grep -v "^#\\|Uses: " | tail -n 60
    fuzz_status=${PIPESTATUS[0]}
    set -e
    if ((fuzz_status == 0)); then
        passed=$((passed + 1))
        echo "fuzz: no crash in ${MERIDIAN_FUZZ_SECONDS:-60}s"
    else
        failed_lines=$((failed_lines + 1))
        echo "fuzz: FAILED (see fuzz/artifacts/respond/)"
        status=1
    fi
fi

echo
echo "${passed} passed, ${failed_lines} failed"
exit "$status"
