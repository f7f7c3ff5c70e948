#!/usr/bin/env bash
# tracepkt benchmark harness, as `make bench` runs it (after `make build` and `make bench-floor`).
#
#   make bench                      the full run (about 35 minutes on 2 cores, with a 5-minute soak)
#   BENCH_QUICK=1 make bench        a shortened run for development (about 5 minutes): fewer rounds,
#                                   shorter windows, fewer journey steps, no soak
#   BENCH_QUICK=1 BENCH_PARTS=scale scripts/bench.sh     one part only (parts listed below)
#
# Environment (all optional; the quick defaults are in brackets):
#   BENCH_QUICK=1          shortened run (see above)
#   BENCH_SOAK_SECS=300    length of the 1,000-target memory soak [0]; 0 skips it
#   BENCH_ROUNDS=7         interleaved rounds of the foreign-traffic part [2]
#   BENCH_SECS=5           seconds of each UDP flood, TCP run and closed-port flood [2]
#   BENCH_JOURNEY_RATES="50 100 500 1000 2000 5000 10000 20000 30000 40000 50000 60000 80000 100000"
#                          probe rates stepped through, lowest first, until the first step that
#                          fails [1000 10000 20000 30000 40000 60000]: up to 1,000/s, that many
#                          targets every 1s; above, max(1000, rate/10) targets at the interval
#                          that gives the rate (100ms from 10,000/s on)
#   BENCH_JOURNEY_ROUNDS=2 rounds of each step; a step passes when every round passes [1]
#   BENCH_JOURNEY_SECS=10  measuring window of each journey step [4]
#   BENCH_CPU_SECS=60      CPU window at 100, 1,000 and 10,000 targets [10]
#   BENCH_SCRAPES=50       /metrics scrapes per size, at most 60 s of scraping per size [10]
#   BENCH_SCALE_SIZES="10 100 1000 10000"  target counts of the scale part [the same]
#   BENCH_STARTS=5         start-ups measured per attach mode [2]
#   BENCH_PARTS="startup foreign journey scale"   which parts to run
#   BENCH_FOREIGN_CONFIGS="baseline always in-flight bpftrace floor sized cross-node side-by-side"
#                          the foreign part's configurations (a.–h. below), in this order;
#                          floor-spread (i., not run by default) is the floor with its programs
#                          apart in JIT memory (`tracepkt-floor --spread`), compared with e.
#   TRACEPKT_BIN=target/release/tracepkt               the binary measured
#   TRACEPKT_FLOOR_BIN=target/floor/release/tracepkt-floor   the floor (bench/floor; `make bench-floor`)
#   Both binaries are copied first, so a rebuild during the run changes nothing.
#
# What it measures, in one run (details in BENCHMARKS.md and at the top of each part below), and
# the goals the summary checks:
#   1. foreign: the cost for traffic that is not a probe. Over a veth pair into a namespace this
#      script creates: a UDP 64-byte flood (iperf3 -u -l 64 -b 0), TCP (iperf3), and a UDP
#      64-byte flood to a closed port in the namespace, dropped by its input chain (every packet
#      freed with NETFILTER_DROP, so trace_kfree_skb sees it, and tracepkt's program has to look
#      at the packet: it turns NO_SOCKET frees away from the reason alone). Configurations:
#      a. nothing attached, b. tracepkt serve attach: always, c. tracepkt serve attach:
#      in-flight, d. bench/foreign.bt under bpftrace, e. the floor (bench/floor: an empty tp_btf
#      program on each of tracepkt's five hooks), f. the worst case for sized probes: tracepkt
#      serve attach: always with two targets at an address on the veth's subnet that nobody
#      holds (UNHELD_IP, with a fixed neighbour entry to a MAC nobody has), sized 92 (the
#      floods' own IP length: 20 + 8 + 64) and 1500, with dont_fragment: true, every 1s with a
#      1s timeout: never answered, a probe of each size is in flight nearly all the time, so
#      nearly every UDP flood packet (and every full-size TCP segment) passes the length test
#      and meets the next checks (ethertype, protocol, the PROBES map lookup on its ports),
#      g. tracepkt serve attach: always as in b., with cross_node: {enabled: true}: following
#      other nodes' probes, it holds the programs' in-flight gate open for good, so every packet
#      goes through the length test all the time (and one of a probe's length on to the next
#      checks), h. b. and e. attached together, so that each hook runs tracepkt's program and the
#      floor's on the same packets, one after the other (the order alternates by round: odd
#      rounds attach the floor first); rounds interleaved, the order rotating every round.
#      Per-program ns/run from the kernel's accounting (kernel.bpf_stats_enabled=1 during this
#      part, restored afterwards), the in-flight duty cycle from
#      tracepkt_attached_seconds_total, and for f. the share of time its probes are out, from
#      those that timed out (tracepkt_probe_errors_total, reason timeout) × the timeout.
#      Goal: tracepkt (attach: always) ≤ 1.05× the floor's ns/run on every hook the traffic
#      reaches, kfree_skb included, judged side by side (h.: the same packets, the same cache
#      state), order-balanced (the geometric mean of the two orders' median ratios). b., f. and
#      g. against e. (separate rounds) are reported beside it.
#   2. journey: probe rates stepped upward until the first step that fails (lost events,
#      incomplete journeys, or an achieved rate below 95 % of the asked one); no step is tried
#      after it. The ceiling, and what bounds it: tracepkt's CPU, the machine's CPU, ring-buffer
#      loss, the send rate.
#   3./4. scale: 10, 100 and 1,000 targets every 10 s and 10,000 every 30 s: CPU, /metrics
#      latency and size, RSS, and the kernel memory of tracepkt's maps (bytes_memlock of the maps
#      the process holds); then the RSS soak at 1,000 targets. Goals: at 1,000 targets /metrics
#      median < 50 ms and body < 1 MB; at 10,000 targets /metrics median < 500 ms, RSS < 150 MB,
#      CPU < 10 % of one core over at least 60 s; map memory sized from the config (it grows
#      with the targets).
#   5. startup: fork to "serving /metrics" (goal < 150 ms), to the first scrape, to the first
#      journey.
# Output: the table on stdout and in target/bench/results.md (results.json alongside); every
# raw sample (iperf3 JSON, bpftool snapshots, /metrics bodies, CPU and RSS samples, logs) under
# target/bench/raw/.
#
# Traffic goes only to loopback and to the namespace created here (198.18.40.0/24, from the
# RFC 2544 benchmarking range): host veth tpkbench0 198.18.40.1 <-> tpkbench:eth0 198.18.40.2.
# Everything started here is stopped, and the namespace deleted, on exit (also on Ctrl-C).
# Every loop is bounded in count and in time. Must run as root.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.tools/bin:$HOME/.cargo/bin:$PATH"

quick=${BENCH_QUICK:-0}
if [ "$quick" = 1 ]; then
    d_rounds=2 d_secs=2 d_rates="1000 10000 20000 30000 40000 60000" d_jrounds=1 d_jsecs=4 d_cpu=10
    d_scrapes=10 d_starts=2 d_soak=0
else
    d_rounds=7 d_secs=5 d_rates="50 100 500 1000 2000 5000 10000 20000 30000 40000 50000 60000 80000 100000"
    d_jrounds=2 d_jsecs=10 d_cpu=60 d_scrapes=50 d_starts=5 d_soak=300
fi
ROUNDS=${BENCH_ROUNDS:-$d_rounds}
SECS=${BENCH_SECS:-$d_secs}
RATES=${BENCH_JOURNEY_RATES:-$d_rates}
JROUNDS=${BENCH_JOURNEY_ROUNDS:-$d_jrounds}
JSECS=${BENCH_JOURNEY_SECS:-$d_jsecs}
CPU_SECS=${BENCH_CPU_SECS:-$d_cpu}
SCRAPES=${BENCH_SCRAPES:-$d_scrapes}
SCALE_SIZES=${BENCH_SCALE_SIZES:-10 100 1000 10000}
STARTS=${BENCH_STARTS:-$d_starts}
SOAK_SECS=${BENCH_SOAK_SECS:-$d_soak}
PARTS=${BENCH_PARTS:-startup foreign journey scale}
FOREIGN_CONFIGS=${BENCH_FOREIGN_CONFIGS:-baseline always in-flight bpftrace floor sized cross-node side-by-side}

NS=tpkbench
HOST_IF=tpkbench0
HOST_IP=198.18.40.1
NS_IP=198.18.40.2
UNHELD_IP=198.18.40.99 # on the veth's subnet, held by nobody (setup_netns gives it a MAC nobody has)
IPERF_PORT=5299
CLOSED_PORT=5399 # nothing listens there, and the namespace's input chain drops it: NETFILTER_DROP
SOAK_EVERY=30
SCRAPE_BUDGET=60 # seconds of scraping per scale size, whatever BENCH_SCRAPES says

out=$root/target/bench
raw=$out/raw
lib=$root/bench/benchlib.py

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
for c in $FOREIGN_CONFIGS; do
    case $c in
        baseline | always | in-flight | bpftrace | floor | sized | cross-node | side-by-side | floor-spread) ;;
        *) die "BENCH_FOREIGN_CONFIGS: unknown configuration $c (baseline always in-flight bpftrace floor sized cross-node side-by-side floor-spread)" ;;
    esac
done
now() { echo "$EPOCHREALTIME"; }
now_us() { echo "${EPOCHREALTIME/./}"; } # integer microseconds, for deadlines
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.4f", b - a }'; }
has_part() { [[ " $PARTS " == *" $1 "* ]]; }

[ "$(id -u)" = 0 ] || die "must run as root (BPF, network namespaces)"
[ -n "${EPOCHREALTIME:-}" ] || die "bash 5 or later is needed (EPOCHREALTIME)"
for part in $PARTS; do
    case $part in startup | foreign | journey | scale) ;; *) die "unknown part $part (startup foreign journey scale)" ;; esac
done

# ------------------------------------------------------------------------------------------
# Tools the bench drives: scripts/deps.sh installs them (Debian packages) when missing.

"$root/scripts/deps.sh" bench || die "scripts/deps.sh bench failed"
for c in iperf3 bpftrace bpftool curl ip ss taskset python3 sha256sum timeout gzip; do
    command -v "$c" >/dev/null || die "$c not found after scripts/deps.sh bench"
done

src_bin=${TRACEPKT_BIN:-$root/target/release/tracepkt}
[ -x "$src_bin" ] || die "$src_bin missing: run make build"
src_floor=${TRACEPKT_FLOOR_BIN:-$root/target/floor/release/tracepkt-floor}
if has_part foreign; then
    [ -x "$src_floor" ] || die "$src_floor missing: run make bench-floor"
fi

# ------------------------------------------------------------------------------------------
# Processes, namespace and sysctl: everything undone on exit.

declare -A started=() # pid -> what
stats_knob=/proc/sys/kernel/bpf_stats_enabled
stats_orig=$(cat "$stats_knob" 2>/dev/null || echo 0)
stats_touched=0

stop_pid() { # pid [signal]: signal, wait up to 10 s, then SIGKILL; reaps it
    local pid=$1 sig=${2:-TERM} i
    [ -n "$pid" ] || return 0
    kill -s "$sig" "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid (${started[$pid]:-?}) did not stop on SIG$sig: SIGKILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    unset "started[$pid]"
    return 0
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${!started[@]}"; do
        stop_pid "$pid" TERM
    done
    ip netns pids "$NS" 2>/dev/null | while read -r pid; do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$NS" 2>/dev/null
    if [ "$stats_touched" = 1 ]; then
        echo "$stats_orig" >"$stats_knob"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

bpf_stats() { # on|off (written to /proc directly: no dependency on procps' sysctl)
    if [ "$1" = on ]; then
        stats_touched=1
        echo 1 >"$stats_knob" || die "cannot enable kernel.bpf_stats_enabled"
    else
        echo "$stats_orig" >"$stats_knob"
        stats_touched=0
    fi
}

setup_netns() {
    if ip netns list | grep -qw "$NS"; then
        log "namespace $NS left over from an earlier run: deleting it"
        ip netns pids "$NS" 2>/dev/null | while read -r pid; do kill -KILL "$pid" 2>/dev/null; done
        ip netns del "$NS"
    fi
    if ip -4 route show | grep -q '^198\.18\.40\.'; then
        die "198.18.40.0/24 is already routed on this host: not creating the bench namespace over it"
    fi
    ip netns add "$NS" &&
        ip link add "$HOST_IF" type veth peer name eth0 netns "$NS" &&
        ip addr add "$HOST_IP/24" dev "$HOST_IF" &&
        ip link set "$HOST_IF" up &&
        ip -n "$NS" addr add "$NS_IP/24" dev eth0 &&
        ip -n "$NS" link set eth0 up &&
        ip -n "$NS" link set lo up || die "cannot create namespace $NS"
    # A fixed neighbour for UNHELD_IP, at a MAC nobody has: probes to it cross the veth and are
    # dropped on arrival, never answered. Without it they would wait for ARP, which gives up
    # after 3 s and ends the probes still out with an ICMP error, well before their timeout.
    ip neigh replace "$UNHELD_IP" lladdr 02:00:00:00:00:63 dev "$HOST_IF" nud permanent ||
        die "cannot add the neighbour entry for $UNHELD_IP"
    ip netns exec "$NS" nft "add table inet tpkbench; add chain inet tpkbench in { type filter hook input priority 0; }; add rule inet tpkbench in udp dport $CLOSED_PORT drop" ||
        die "cannot add the drop rule in $NS (nftables)"
    # An ICMP echo from Python's raw socket: needs neither iputils nor the binary under test.
    python3 "$lib" ping "$NS_IP" 5 || die "$NS_IP does not answer an ICMP echo within 5 s"
}

# ------------------------------------------------------------------------------------------
# tracepkt serve

pick_port() {
    local p
    for p in 29977 29978 29979 29980 29981 29982 29983 29984 29985 29986; do
        if [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]; then
            echo "$p"
            return 0
        fi
    done
    die "no free port among 29977-29986"
}

write_config() { # file targets interval timeout attach(""=default) address [extra target fields [extra top-level lines]]
    local f=$1 n=$2 interval=$3 timeout=$4 attach=$5 addr=$6 extra=${7:+, $7} top=${8:-}
    {
        echo "# written by scripts/bench.sh"
        echo "listen: $LISTEN"
        echo "interval: $interval"
        echo "timeout: $timeout"
        [ -n "$attach" ] && echo "attach: $attach"
        [ -n "$top" ] && printf '%s\n' "$top"
        echo "targets:"
        awk -v n="$n" -v a="$addr" -v x="$extra" 'BEGIN { for (i = 1; i <= n; i++) printf "  - {name: t%05d, address: %s%s}\n", i, a, x }'
    } >"$f"
}

SERVE_PID=
start_serve() { # config log: starts tracepkt serve, sets SERVE_PID
    "$BIN" serve --config "$1" >"$2" 2>&1 &
    SERVE_PID=$!
    started[$SERVE_PID]="tracepkt serve"
}

wait_serving() { # pid log seconds: waits for a successful scrape; 1 if it died or timed out
    local pid=$1 logf=$2 deadline i
    deadline=$(($(now_us) + $3 * 1000000))
    for ((i = 0; i < 10000; i++)); do
        kill -0 "$pid" 2>/dev/null || { log "tracepkt exited: $(tail -n 3 "$logf" | tr '\n' ' ')"; return 1; }
        curl -sf -m 5 -o /dev/null "$URL" && return 0
        [ "$(now_us)" -lt "$deadline" ] || break
        sleep 0.05
    done
    log "tracepkt did not serve /metrics within $3 s"
    return 1
}

scrape() { # file: one /metrics body (empty on failure)
    curl -sf -m 30 -o "$1" "$URL" || : >"$1"
}

cpu_ticks() { # pid: utime+stime in clock ticks (comm may hold spaces: cut after the last ")")
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    s=${s##*) }
    awk '{ print $12 + $13 }' <<<"$s"
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

sum_metric() { # file metric: sum of a metric family in a /metrics body
    awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%d", s }' "$1"
}

median_col() { # file column: median of a numeric column
    awk -v c="$2" '{ print $c }' "$1" | sort -n | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print "n/a" }'
}

# ------------------------------------------------------------------------------------------
# Set-up

mkdir -p "$out"
rm -rf "$raw"
mkdir -p "$raw"
BIN=$out/tracepkt
cp -f "$src_bin" "$BIN" || die "cannot copy $src_bin"
FLOOR=$out/tracepkt-floor
if [ -x "$src_floor" ]; then cp -f "$src_floor" "$FLOOR" || die "cannot copy $src_floor"; fi
PORT=$(pick_port)
[ -n "$PORT" ] || die "no free port for tracepkt's /metrics"
LISTEN=127.0.0.1:$PORT
URL=http://$LISTEN/metrics

setup_netns

{
    echo "date:      $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "kernel:    $(uname -r) ($(uname -m))"
    echo "cpus:      $(nproc) × $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "memory:    $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "tracepkt:  $("$BIN" --version 2>/dev/null) sha256 $(sha256sum "$BIN" | cut -c1-16), git $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- exporter probe-ebpf probe-common 2>/dev/null || echo ' + uncommitted changes')"
    if [ -x "$FLOOR" ]; then
        echo "floor:     bench/floor sha256 $(sha256sum "$FLOOR" | cut -c1-16)$(git diff --quiet HEAD -- bench/floor 2>/dev/null || echo ' + uncommitted changes')"
    fi
    echo "tools:     $(iperf3 --version | head -n1 | cut -d' ' -f1-2), bpftrace $(bpftrace --version | awk '{ print $2 }'), bpftool $(bpftool version | awk 'NR == 1 { print $2 }'), $(python3 --version)"
    echo "run:       BENCH_QUICK=$quick parts='$PARTS' rounds=$ROUNDS secs=$SECS rates='$RATES' journey_rounds=$JROUNDS journey_secs=$JSECS cpu_secs=$CPU_SECS scrapes=$SCRAPES scale_sizes='$SCALE_SIZES' starts=$STARTS soak_secs=$SOAK_SECS foreign_configs='$FOREIGN_CONFIGS'"
} >"$raw/env.txt"
cat "$raw/env.txt" >&2

# ------------------------------------------------------------------------------------------
# 5. Start-up: fork to "serving /metrics", to the first scrape, to the first journey.

part_startup() {
    local modes=(in-flight always) mode i
    for ((i = 1; i <= STARTS; i++)); do
        for mode in "${modes[@]}"; do
            local d=$raw/startup/$mode-$i
            mkdir -p "$d"
            write_config "$d/config.yaml" 1 10s 2s "$mode" "$NS_IP"
            local t0 serving=none scr=none jour=none k
            t0=$EPOCHREALTIME
            start_serve "$d/config.yaml" "$d/serve.log"
            local pid=$SERVE_PID
            for ((k = 0; k < 1500; k++)); do # 10 ms steps, at most 15 s
                kill -0 "$pid" 2>/dev/null || break
                if [ "$serving" = none ] && grep -q "serving /metrics" "$d/serve.log" 2>/dev/null; then serving=$(since "$t0"); fi
                if [ "$scr" = none ] || [ "$jour" = none ]; then
                    if curl -sf -m 1 -o "$d/body.txt" "$URL"; then
                        [ "$scr" = none ] && scr=$(since "$t0")
                        if [ "$(sum_metric "$d/body.txt" tracepkt_probe_rtt_seconds_count)" -gt 0 ]; then
                            jour=$(since "$t0")
                        fi
                    fi
                fi
                [ "$serving" != none ] && [ "$scr" != none ] && [ "$jour" != none ] && break
                sleep 0.01
            done
            stop_pid "$pid" TERM
            # The log line's own timestamp (UTC, microseconds) is sharper than the 10 ms polling.
            local ts
            ts=$(grep -m1 "serving /metrics" "$d/serve.log" | awk '{ print $1 }')
            if [ -n "$ts" ] && ts=$(date -u -d "$ts" +%s.%N 2>/dev/null); then
                serving=$(awk -v a="$t0" -v b="$ts" 'BEGIN { printf "%.4f", b - a }')
            fi
            printf 'serving=%s\nscrape=%s\njourney=%s\n' "$serving" "$scr" "$jour" >"$d/times"
            log "startup $mode #$i: serving ${serving}s, scrape ${scr}s, journey ${jour}s"
            sleep 0.5
        done
    done
}

# ------------------------------------------------------------------------------------------
# 1. Foreign traffic: throughput and per-program cost, eight configurations, interleaved.

IPERF_PID=
start_iperf_server() {
    ip netns exec "$NS" nice -n -20 taskset -c 1 iperf3 -s -B "$NS_IP" -p "$IPERF_PORT" >"$raw/foreign/iperf3-server.log" 2>&1 &
    IPERF_PID=$!
    started[$IPERF_PID]="iperf3 server"
    local i
    for ((i = 0; i < 50; i++)); do
        ss -N "$NS" -Hltn "sport = :$IPERF_PORT" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    die "iperf3 server did not start"
}

iperf_run() { # out.json args...: the client on CPU 0, the server on CPU 1; one retry
    local f=$1 try
    shift
    for try in 1 2; do
        if nice -n -20 taskset -c 0 timeout $((SECS + 20)) iperf3 -c "$NS_IP" -p "$IPERF_PORT" -t "$SECS" -J "$@" >"$f" 2>"$f.err" &&
            grep -q '"end"' "$f" && ! grep -q '"error"' "$f"; then
            return 0
        fi
        log "iperf3 $* failed (try $try): $(grep -o '"error":.*' "$f" | head -c 200)"
        sleep 2
    done
    return 1
}

drop_flood() { # out.json: 64-byte UDP datagrams to a closed port in the namespace, SECS seconds, on CPU 0
    if [ -n "$(ss -N "$NS" -Hlun "sport = :$CLOSED_PORT" 2>/dev/null)" ]; then
        log "something listens on UDP $CLOSED_PORT in $NS: the closed-port flood would not be dropped"
        return 1
    fi
    nice -n -20 taskset -c 0 timeout $((SECS + 20)) python3 "$lib" udp-flood "$NS_IP" "$CLOSED_PORT" "$SECS" 64 >"$1" 2>"$1.err"
}

ATT_PID= SBS_PID=
start_attacher() { # config dir round: sets ATT_PID (empty for the baseline), and SBS_PID (the floor
    # beside tracepkt in h., else empty); 1 on failure (note in $d/info)
    local cfg=$1 d=$2 r=$3 i
    ATT_PID= SBS_PID=
    case $cfg in
        baseline) return 0 ;;
        always | in-flight | sized | cross-node)
            if [ "$cfg" = sized ]; then
                # The worst case for foreign packets: a sized probe's length passes the first
                # (length) test only while such a probe is in flight. Unanswered, each probe is
                # out for its whole timeout, and with interval = timeout the next follows at
                # once. 92 is the 64-byte floods' own IP length (20 IP + 8 UDP + 64, as -l 64
                # sends), 1500 a full-size TCP segment's. One target per size: a target's sizes
                # go out one after the other, so a sweep [92, 1500] would let 92 past only half
                # of the time.
                write_config "$d/config.yaml" 1 1s 1s always "$UNHELD_IP" "size: [92], dont_fragment: true"
                echo "  - {name: t00002, address: $UNHELD_IP, size: [1500], dont_fragment: true}" >>"$d/config.yaml"
            elif [ "$cfg" = cross-node ]; then
                # b. with cross_node on: another node's probe may cross at any moment, so the
                # programs' in-flight gate stays open and every packet meets the length test,
                # whether or not a probe of this node is out. attach: always as in b. (cross_node
                # refuses in-flight), so that cross_node is the only difference.
                write_config "$d/config.yaml" 1 1s 1s always "$NS_IP" "" "cross_node: {enabled: true}"
            else
                write_config "$d/config.yaml" 1 1s 1s "$cfg" "$NS_IP"
            fi
            start_tracepkt "$d" || return 1
            ;;
        bpftrace)
            bpftrace "$root/bench/foreign.bt" >"$d/bpftrace.out" 2>"$d/attacher.log" &
            ATT_PID=$!
            started[$ATT_PID]=bpftrace
            for ((i = 0; i < 300; i++)); do # at most 30 s: bpftrace compiles first
                grep -q '^Attaching' "$d/bpftrace.out" && break
                kill -0 "$ATT_PID" 2>/dev/null || break
                sleep 0.1
            done
            if ! grep -q '^Attaching' "$d/bpftrace.out" || ! kill -0 "$ATT_PID" 2>/dev/null; then
                echo "note=bpftrace did not attach: $(tail -n 1 "$d/attacher.log" | tr '=' ':')" >>"$d/info"
                return 1
            fi
            sleep 0.5
            ;;
        floor | floor-spread)
            start_floor "$d" attacher.log ${cfg#floor} || return 1
            ATT_PID=$FLOOR_PID
            ;;
        side-by-side)
            write_config "$d/config.yaml" 1 1s 1s always "$NS_IP"
            # b. and the floor attached together, so that both programs of a hook run on the same
            # packets, one after the other (a tracepoint runs its programs in attach order). The
            # order alternates by round: odd rounds attach the floor first.
            if [ $((r % 2)) = 1 ]; then
                echo "order=floor first" >>"$d/info"
                start_floor "$d" floor.log || return 1
                SBS_PID=$FLOOR_PID
                start_tracepkt "$d" || return 1
            else
                echo "order=tracepkt first" >>"$d/info"
                start_tracepkt "$d" || return 1
                start_floor "$d" floor.log || return 1
                SBS_PID=$FLOOR_PID
            fi
            ;;
    esac
    return 0
}

start_tracepkt() { # dir: tracepkt serve on $d/config.yaml, sets ATT_PID; 1 on failure (note in $d/info)
    local d=$1
    start_serve "$d/config.yaml" "$d/attacher.log"
    ATT_PID=$SERVE_PID
    if ! wait_serving "$ATT_PID" "$d/attacher.log" 20; then
        echo "note=tracepkt serve did not start: $(tail -n 1 "$d/attacher.log" | tr '=' ':')" >>"$d/info"
        return 1
    fi
    sleep 1.5 # a probe or two done
}

FLOOR_PID=
start_floor() { # dir log [-spread]: the floor, attached; sets FLOOR_PID; 1 on failure (note in $d/info)
    local d=$1 log=$2 spread=${3:+--spread} i
    "$FLOOR" --seconds $((3 * SECS + 120)) $spread >"$d/floor.out" 2>"$d/$log" &
    FLOOR_PID=$!
    started[$FLOOR_PID]="tracepkt-floor"
    for ((i = 0; i < 150; i++)); do # at most 15 s
        grep -q 'attached' "$d/$log" && break
        kill -0 "$FLOOR_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ! kill -0 "$FLOOR_PID" 2>/dev/null || ! grep -q 'attached' "$d/$log"; then
        echo "note=the floor did not attach: $(tail -n 1 "$d/$log" | tr '=' ':')" >>"$d/info"
        return 1
    fi
    sleep 0.3
}

bpf_snaps() { # dir n: the BPF accounting of the attached process (bpfN.json), and of the floor
    # beside it in h. (besideN.json)
    [ -n "$ATT_PID" ] && python3 "$lib" bpf-snap "$ATT_PID" >"$1/bpf$2.json"
    [ -n "$SBS_PID" ] && python3 "$lib" bpf-snap "$SBS_PID" >"$1/beside$2.json"
    return 0
}

foreign_round() { # round config
    local r=$1 cfg=$2
    local d=$raw/foreign/r$r-$cfg
    mkdir -p "$d"
    : >"$d/info"
    if ! start_attacher "$cfg" "$d" "$r"; then
        echo "status=failed" >>"$d/info"
        log "foreign r$r $cfg: $(grep '^note=' "$d/info" | cut -d= -f2-)"
        [ -n "$ATT_PID" ] && stop_pid "$ATT_PID" TERM
        [ -n "$FLOOR_PID" ] && [ -n "${started[$FLOOR_PID]:-}" ] && stop_pid "$FLOOR_PID" TERM
        return 0
    fi
    python3 "$lib" bpf-others ${ATT_PID:+"$ATT_PID"} ${SBS_PID:+"$SBS_PID"} "$IPERF_PID" "$$" >"$d/others.json" 2>/dev/null
    local serve=0
    case $cfg in always | in-flight | sized | cross-node | side-by-side) serve=1 ;; esac
    # Snapshots: bpf0 | UDP flood | bpf1 | TCP | bpf2 | closed-port flood | bpf3
    {
        echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
        python3 "$lib" cpu-snap "$$" >"$d/cpu0.json"
        [ $serve = 1 ] && { echo "prom0=$(now)"; scrape "$d/prom0.txt"; }
        bpf_snaps "$d" 0
        echo "udp0=$(now)"
    } >>"$d/times"
    local ok=1
    iperf_run "$d/udp.json" -u -l 64 -b 0 || ok=0
    {
        echo "udp1=$(now)"
        bpf_snaps "$d" 1
        echo "tcp0=$(now)"
    } >>"$d/times"
    iperf_run "$d/tcp.json" || ok=0
    {
        echo "tcp1=$(now)"
        bpf_snaps "$d" 2
        echo "drop0=$(now)"
    } >>"$d/times"
    drop_flood "$d/drop.json" || { ok=0; log "closed-port flood failed: $(head -c 200 "$d/drop.json.err")"; }
    {
        echo "drop1=$(now)"
        bpf_snaps "$d" 3
        [ $serve = 1 ] && { echo "prom2=$(now)"; scrape "$d/prom2.txt"; }
        python3 "$lib" cpu-snap "$$" >"$d/cpu2.json"
    } >>"$d/times"
    local alive=1
    if [ -n "$ATT_PID" ]; then
        kill -0 "$ATT_PID" 2>/dev/null || alive=0
        if [ "$cfg" = bpftrace ]; then stop_pid "$ATT_PID" INT; else stop_pid "$ATT_PID" TERM; fi
    fi
    if [ -n "$SBS_PID" ]; then
        kill -0 "$SBS_PID" 2>/dev/null || alive=0
        stop_pid "$SBS_PID" TERM
    fi
    if [ $ok = 1 ] && [ $alive = 1 ]; then
        echo "status=ok" >>"$d/info"
    else
        echo "status=failed" >>"$d/info"
        [ $alive = 1 ] || echo "note=the attached process exited during the round" >>"$d/info"
        [ $ok = 1 ] || echo "note=iperf3 or the closed-port flood failed" >>"$d/info"
    fi
    log "foreign r$r $cfg: $(python3 "$lib" round-line "$d" 2>/dev/null)"
    sleep 1
}

part_foreign() {
    mkdir -p "$raw/foreign"
    start_iperf_server
    bpf_stats on
    local configs r k n
    read -ra configs <<<"$FOREIGN_CONFIGS"
    n=${#configs[@]}
    for ((r = 1; r <= ROUNDS; r++)); do
        for ((k = 0; k < n; k++)); do
            foreign_round "$r" "${configs[$(((k + r - 1) % n))]}"
        done
    done
    bpf_stats off
    stop_pid "$IPERF_PID" TERM
}

# ------------------------------------------------------------------------------------------
# 2. Journey throughput: N targets × 1/interval probes per second, stepped upward until the
#    first step that fails.

journey_step() { # rate round: one fresh tracepkt serve; 0 if the step passed, 1 if not
    local rate=$1 r=$2
    local d=$raw/journey/r$r-rate$rate n interval_ms interval
    mkdir -p "$d"
    if [ "$rate" -le 1000 ]; then
        n=$rate interval_ms=1000
    else
        n=$((rate / 10 > 1000 ? rate / 10 : 1000))
        interval_ms=$((n * 1000 / rate))
    fi
    if [ "$interval_ms" -lt 100 ]; then
        printf 'status=failed\nnote=needs an interval under 100ms\n' >"$d/info"
        return 1
    fi
    interval=${interval_ms}ms
    printf 'targets=%s\ninterval=%s\n' "$n" "$interval" >"$d/info"
    write_config "$d/config.yaml" "$n" "$interval" "$interval" "" "$NS_IP"
    start_serve "$d/config.yaml" "$d/serve.log"
    local pid=$SERVE_PID
    if ! wait_serving "$pid" "$d/serve.log" 60; then
        printf 'status=failed\nnote=did not start\n' >>"$d/info"
        stop_pid "$pid" TERM
        return 1
    fi
    # every target started (they are spread over one interval), then one more interval
    sleep "$(awk -v ms="$interval_ms" 'BEGIN { printf "%.2f", 2 * ms / 1000 + 1 }')"
    {
        echo "prom0=$(now)"
        scrape "$d/prom0.txt"
        echo "$(now) $(cpu_ticks "$pid")" >"$d/cpu"
        head -n1 /proc/stat >"$d/stat0"
        python3 "$lib" cpu-snap "$$" >"$d/cpu0.json"
    } >>"$d/times"
    sleep "$JSECS"
    {
        python3 "$lib" cpu-snap "$$" >"$d/cpu1.json"
        head -n1 /proc/stat >"$d/stat1"
        echo "$(now) $(cpu_ticks "$pid")" >>"$d/cpu"
        echo "prom1=$(now)"
        scrape "$d/prom1.txt"
    } >>"$d/times"
    if kill -0 "$pid" 2>/dev/null && [ -s "$d/prom1.txt" ]; then
        echo "status=ok" >>"$d/info"
    else
        printf 'status=failed\nnote=tracepkt exited or stopped answering\n' >>"$d/info"
    fi
    echo "rss_kb=$(rss_kb "$pid")" >>"$d/info"
    echo "threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)" >>"$d/info"
    stop_pid "$pid" TERM
    grep -c -E ' (WARN|ERROR) ' "$d/serve.log" | sed 's/^/log_warnings=/' >>"$d/info"
    local verdict rc
    verdict=$(python3 "$lib" journey-step "$d" "$rate")
    rc=$?
    log "journey r$r ${rate}/s ($n × $interval): $verdict"
    sleep 1
    return $rc
}

part_journey() {
    local rate r failed=
    for rate in $RATES; do
        for ((r = 1; r <= JROUNDS; r++)); do
            journey_step "$rate" "$r" || { failed=$rate; break; }
        done
        if [ -n "$failed" ]; then
            log "journey: ${failed}/s did not pass: no higher step is tried"
            break
        fi
    done
}

# ------------------------------------------------------------------------------------------
# 3./4. CPU, scrape latency and size, RSS, map memory at each size; the soak at 1,000.

scale_interval() { # targets: the probe interval of that size
    if [ "$1" -ge 10000 ]; then echo 30; else echo 10; fi
}

part_scale() {
    local n
    for n in $SCALE_SIZES; do
        local d=$raw/scale/n$n iv
        iv=$(scale_interval "$n")
        mkdir -p "$d"
        printf 'interval=%ss\n' "$iv" >"$d/info"
        write_config "$d/config.yaml" "$n" "${iv}s" 2s "" "$NS_IP"
        local t0=$EPOCHREALTIME
        start_serve "$d/config.yaml" "$d/serve.log"
        local pid=$SERVE_PID i
        if ! wait_serving "$pid" "$d/serve.log" 60; then
            printf 'status=failed\nnote=did not start: %s\n' "$(tail -n 1 "$d/serve.log" | tr '=' ':')" >>"$d/info"
            stop_pid "$pid" TERM
            continue
        fi
        echo "first_scrape_s=$(since "$t0")" >>"$d/info"
        # Every target is started within one interval; then 5 s more.
        log "scale $n targets every ${iv}s: warm-up $((iv + 5)) s"
        sleep $((iv + 5))
        python3 "$lib" maps "$pid" >"$d/maps.json"
        if [ "$n" -ge 100 ]; then
            log "scale $n targets: CPU over $CPU_SECS s (no scrapes meanwhile)"
            : >"$d/cpu"
            for ((i = 0; i <= CPU_SECS / 10; i++)); do
                echo "$(now) $(cpu_ticks "$pid")" >>"$d/cpu"
                [ "$i" -lt $((CPU_SECS / 10)) ] && sleep 10
            done
        fi
        rss_kb "$pid" >"$d/rss_kb"
        : >"$d/scrapes"
        local s0
        s0=$(now_us)
        for ((i = 0; i < SCRAPES; i++)); do
            curl -s -m 30 -o /dev/null -w '%{http_code} %{time_total} %{size_download}\n' "$URL" >>"$d/scrapes"
            [ $(($(now_us) - s0)) -lt $((SCRAPE_BUDGET * 1000000)) ] || break
            sleep 0.1
        done
        scrape "$d/prom.txt"
        rss_kb "$pid" >>"$d/rss_kb"
        log "scale $n targets: RSS $(paste -sd/ "$d/rss_kb") kB (warm-up/scrapes), scrape median $(median_col "$d/scrapes" 2) s over $(wc -l <"$d/scrapes"), $(tail -n1 "$d/scrapes" | awk '{ print $3 }') B, maps $(python3 "$lib" maps-total "$d/maps.json") B memlock"
        if [ "$n" = 1000 ] && [ "$SOAK_SECS" -gt 0 ]; then
            soak "$pid" "${iv}s"
        elif [ "$n" = 1000 ]; then
            mkdir -p "$raw/soak"
            printf 'note=skipped: BENCH_SOAK_SECS=0\n' >"$raw/soak/info"
        fi
        if kill -0 "$pid" 2>/dev/null; then echo "status=ok" >>"$d/info"; else echo "status=failed" >>"$d/info"; fi
        stop_pid "$pid" TERM
        grep -c -E ' (WARN|ERROR) ' "$d/serve.log" | sed 's/^/log_warnings=/' >>"$d/info"
    done
}

soak() { # pid interval: RSS (and CPU) every SOAK_EVERY s for SOAK_SECS s, with a scrape each time
    local pid=$1 d=$raw/soak i steps t0
    mkdir -p "$d"
    printf 'interval=%s\nevery=%s\n' "$2" "$SOAK_EVERY" >"$d/info"
    steps=$((SOAK_SECS / SOAK_EVERY))
    log "soak: 1000 targets for $SOAK_SECS s, RSS every $SOAK_EVERY s"
    echo "elapsed_s rss_kb cpu_ticks" >"$d/rss.tsv"
    t0=$EPOCHREALTIME
    for ((i = 0; i <= steps; i++)); do
        kill -0 "$pid" 2>/dev/null || { log "soak: tracepkt exited"; break; }
        echo "$(since "$t0") $(rss_kb "$pid") $(cpu_ticks "$pid")" >>"$d/rss.tsv"
        curl -s -m 10 -o /dev/null "$URL"
        [ "$i" -lt "$steps" ] && sleep "$SOAK_EVERY"
    done
    scrape "$d/prom_end.txt"
    log "soak: RSS kB $(awk 'NR > 1 { printf "%s ", $2 }' "$d/rss.tsv")"
}

# ------------------------------------------------------------------------------------------

log "output in $out (raw samples in $raw); listen $LISTEN"
for part in $PARTS; do
    case $part in
        startup) log "== 5. start-up"; part_startup ;;
        foreign) log "== 1. foreign traffic ($ROUNDS rounds × $(wc -w <<<"$FOREIGN_CONFIGS") configurations × ${SECS}s UDP + ${SECS}s TCP + ${SECS}s closed-port UDP)"; part_foreign ;;
        journey) log "== 2. journey throughput (rates: $RATES; up to $JROUNDS rounds × ${JSECS}s each, until the first failure)"; part_journey ;;
        scale) log "== 3./4. scale, scrape, memory (sizes: $SCALE_SIZES; soak ${SOAK_SECS}s)"; part_scale ;;
    esac
done

python3 "$lib" summarise "$out"
# /metrics bodies at 1,000+ targets are megabytes each: compress the big ones (the summariser
# reads FILE.gz too, so `python3 bench/benchlib.py summarise target/bench` still works).
find "$raw" -name '*.txt' -size +1M -exec gzip -f {} + 2>/dev/null
log "results: $out/results.md"
