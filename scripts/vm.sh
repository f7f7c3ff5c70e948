#!/usr/bin/env bash
# Runs a command as root inside a Debian kernel under qemu (virtme-ng), so the privileged tests
# can also be run against other kernels than the host's: Debian 12's 6.1 and its 6.12 backport.
#   scripts/vm.sh setup                          install qemu, virtme-ng and the kernel (idempotent)
#   scripts/vm.sh kernel                         print the kernel version used
#   scripts/vm.sh run [--rwdir DIR] [--bridge BR] -- CMD ARGS
#                                                run CMD in the guest, cwd = $PWD, DIR (default
#                                                $PWD) writable; exits with CMD's status. With
#                                                --bridge, the guest has a virtio NIC (eth0, not
#                                                configured) on the host bridge BR.
# Env: TRACEPKT_VM_SERIES=6.1 (default) or 6.12 picks the kernel line; TRACEPKT_VM_KERNEL_VERSION
# pins the exact kernel; TRACEPKT_VM_VERBOSE=1 streams the guest console (its last lines are
# printed anyway when the guest dies). CMD sees the caller's environment plus TRACEPKT_VM_KERNEL.
set -euo pipefail

self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
kroot=/opt/tracepkt-kernel # not /var/tmp: modules unpacked there were invisible to the guest's modprobe
modules="nf_tables ip_tables ip6_tables iptable_filter iptable_nat nft_chain_nat virtio_net"
series=${TRACEPKT_VM_SERIES:-6.1}
case $series in
    6.1) pattern='6\.1\.0-[0-9]+-amd64' ;;      # 6.1.0-N-amd64
    6.12) pattern='6\.12\.[0-9]+\+deb12-amd64' ;; # 6.12.N+deb12-amd64
    *) printf 'vm.sh: unknown TRACEPKT_VM_SERIES %s (6.1 or 6.12)\n' "$series" >&2; exit 2 ;;
esac

die() { printf 'vm.sh: %s\n' "$*" >&2; exit 1; }
log() { printf 'vm.sh: %s\n' "$*" >&2; }

# Guest side: started by virtme-ng's init as root. Its stdout/stderr and exit status do not
# reach the host (no udev, so virtme's script I/O ports are missing), hence the files in the
# shared dir $io.
if [ "${1:-}" = __guest ]; then
    io=$2; shift 3 # __guest IODIR --
    set +e
    exec >"$io/out" 2>"$io/err" </dev/null
    # shellcheck disable=SC1091
    . "$io/env"
    export TRACEPKT_VM_KERNEL=$(uname -r)
    mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
    mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
    # the host's /boot has no config for this kernel; bpftool feature probe and the like read it
    [ -e "/boot/config-$TRACEPKT_VM_KERNEL" ] || mount --bind -o ro "$kroot/$TRACEPKT_VM_KERNEL/boot" /boot
    failed=""
    for m in $modules; do modprobe "$m" 2>/dev/null || failed="$failed $m"; done
    [ -z "$failed" ] || echo "vm.sh: modprobe failed in guest:$failed" >&2
    "$@"
    echo $? >"$io/status"
    exit 0
fi

# The kernel that setup would install: the newest of the series (the signed package carries the
# image; -unsigned only as a fallback; never -cloud-, which lacks 9p, nor -rt-/-dbg).
candidate() {
    local list
    names() { apt-cache search --names-only "^linux-image-${pattern}(-unsigned)?\$" | awk '{print $1}'; }
    list=$(names)
    [ -n "$list" ] || { apt-get update -qq >&2; list=$(names); }
    [ -n "$list" ] || die "apt-cache knows no linux-image package of the $series series"
    printf '%s\n' "$list" | sed 's/^linux-image-//; s/-unsigned$//' | sort -V -u | tail -n1
}

installed() {
    ls -d "$kroot"/*/boot/vmlinuz-* 2>/dev/null | sed -E 's|.*/vmlinuz-||' | grep -E "^${pattern}\$" | sort -V | tail -n1
}

version() { echo "${TRACEPKT_VM_KERNEL_VERSION:-$(installed)}"; }

find_vng() {
    command -v vng && return
    local d
    d=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null) || return 1
    [ -x "$d/vng" ] && echo "$d/vng"
}

setup() {
    [ "$(id -u)" = 0 ] || die "setup needs root (apt-get, /opt, /lib/modules)"
    local missing=() p
    # busybox: virtme-ng builds an initramfs with it, as Debian's 9p/virtio drivers are modules
    for p in qemu-system-x86 kmod busybox-static; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
            die "apt-get install ${missing[*]} failed"
    fi
    if ! find_vng >/dev/null; then
        log "pip install virtme-ng"
        python3 -m pip install -q --root-user-action=ignore virtme-ng >&2 || die "pip install virtme-ng failed"
        find_vng >/dev/null || die "virtme-ng installed but vng is not on PATH"
    fi
    local v=${TRACEPKT_VM_KERNEL_VERSION:-$(installed)}
    [ -n "$v" ] || v=$(candidate)
    if [ ! -f "$kroot/$v/boot/vmlinuz-$v" ]; then
        local tmp pkg
        tmp=$(mktemp -d)
        # apt-get download drops privileges to _apt, which cannot write to mktemp's 0700 dir
        chmod 755 "$tmp"
        for pkg in "linux-image-$v" "linux-image-$v-unsigned"; do
            (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null 2>&1) && break
        done
        ls "$tmp"/*.deb >/dev/null 2>&1 || { rm -rf "$tmp"; die "could not download linux-image-$v"; }
        log "unpacking $(basename "$tmp"/*.deb) into $kroot/$v"
        rm -rf "$kroot/$v.part" && mkdir -p "$kroot/$v.part"
        dpkg-deb -x "$tmp"/*.deb "$kroot/$v.part"
        rm -rf "$tmp"
        [ -f "$kroot/$v.part/boot/vmlinuz-$v" ] || die "linux-image-$v has no boot/vmlinuz-$v"
        mv "$kroot/$v.part" "$kroot/$v"
    fi
    # the guest's modprobe reads the host's /lib/modules
    if [ ! -f "/lib/modules/$v/modules.dep" ]; then
        mkdir -p /lib/modules
        cp -r "$kroot/$v/lib/modules/$v" /lib/modules/
        depmod "$v"
    fi
    echo "$v"
}

run() {
    local rwdir=$PWD net=()
    while [ $# -gt 0 ]; do
        case $1 in
            --rwdir) rwdir=$(cd "$2" && pwd) || die "no directory $2"; shift 2 ;;
            # qemu's bridge helper joins the guest's NIC to BR (allowed in /etc/qemu/bridge.conf)
            --bridge) net=(--network "bridge=$2" --no-dhcp); shift 2 ;;
            --) shift; break ;;
            *) die "usage: vm.sh run [--rwdir DIR] [--bridge BR] -- CMD ARGS..." ;;
        esac
    done
    [ $# -gt 0 ] || die "usage: vm.sh run [--rwdir DIR] [--bridge BR] -- CMD ARGS..."
    local v vng
    v=$(version)
    [ -n "$v" ] && [ -f "$kroot/$v/boot/vmlinuz-$v" ] || die "no $series kernel under $kroot: run scripts/vm.sh setup"
    [ -f "/lib/modules/$v/modules.dep" ] || die "/lib/modules/$v missing: run scripts/vm.sh setup"
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run scripts/vm.sh setup"
    vng=$(find_vng) || die "vng (virtme-ng) missing: run scripts/vm.sh setup"

    # a second shared dir of our own, so the work tree gets no stray files
    io=$(mktemp -d /tmp/tracepkt-vm.XXXXXX)
    # The guest's console is always kept, outside the shared dirs: when the guest dies without
    # a status, its last lines are the only account of why (an oops, a failed boot).
    console=$(mktemp /tmp/tracepkt-vm-console.XXXXXX)
    trap 'rm -rf "$io" "$console"' EXIT
    : >"$io/out"; : >"$io/err"
    # the guest starts from a fresh environment: hand it ours (PATH, CARGO_*, RUST_LOG...)
    export -p | grep -vE '^declare -x (PWD|OLDPWD|SHLVL|_)=' | sed 's/^declare -x/declare -gx/' >"$io/env"

    local cmd
    cmd=$(printf '%q ' "$self" __guest "$io" -- "$@")
    # KVM is present but fails on an MSR here, so emulate; guest writes outside rwdir are discarded
    "$vng" --run "$kroot/$v/boot/vmlinuz-$v" --user root --disable-kvm --memory 2G --cpus 2 \
        --rwdir "$rwdir" --rwdir "$io" "${net[@]}" --verbose --exec "$cmd" </dev/null >"$console" 2>&1 &
    local pid=$!
    # relay the guest's output live (the rwdir is shared over 9p, so the files grow as it writes)
    tail -n +1 -s 0.2 -F --pid=$pid "$io/out" 2>/dev/null &
    local t1=$!
    tail -n +1 -s 0.2 -F --pid=$pid "$io/err" >&2 2>/dev/null &
    local t2=$!
    local t3=""
    if [ "${TRACEPKT_VM_VERBOSE:-0}" = 1 ]; then
        tail -n +1 -s 0.2 -F --pid=$pid "$console" >&2 2>/dev/null &
        t3=$!
    fi
    wait $pid || true
    wait $t1 $t2 $t3 || true
    if [ ! -s "$io/status" ]; then
        log "the guest's console, last 150 lines:"
        tail -n 150 "$console" | sed 's/^/vm.sh: console: /' >&2
        # A guest that never booted may have met a host short of memory or disk.
        log "this machine: $(free -m | awk '/^Mem:/ {print $7 " MiB of memory available"}'), $(df -h --output=avail /tmp | tail -n1 | tr -d ' ') free in /tmp"
        die "guest did not report an exit status (kernel $v): it crashed or did not boot (console above)"
    fi
    return "$(cat "$io/status")"
}

case ${1:-} in
    setup) setup ;;
    kernel) v=$(version); [ -n "$v" ] || v=$(candidate); echo "$v" ;;
    run) shift; run "$@" ;;
    *) die "usage: vm.sh setup | kernel | run [--rwdir DIR] -- CMD ARGS..." ;;
esac
