#!/usr/bin/env bash
# The soak: `tracepkt serve` for SOAK_MINUTES (default 30) with 200 targets, some failing, and a
# reload every minute; RSS, the series count and the log are sampled every 30 s.
#   targets: 150 answering (loopback and a namespace), 30 timing out (an nft DROP in a
#   namespace), 20 whose name never resolves (.invalid); each reload adds or removes 10 more
#   answering ones, so the count alternates between 200 and 210.
# Passes when RSS at the end is within 20 % (or 8 MiB) of RSS after the warm-up (the first
# quarter); when, for each target set, the series count of the last quarter is level and at
# most 10 % above the first sample after the warm-up (series that appear with a target's first
# error of a kind, or with its last journey's stages, come and go within that bound; a leak
# keeps growing); and when the log has no panic and no error. Writes target/soak/summary.txt,
# target/soak/samples.tsv and the series per family at the first and last samples.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
minutes=${SOAK_MINUTES:-30}
bin=${TRACEPKT_BIN:-target/release/tracepkt}
out=$root/target/soak
mkdir -p "$out"
rm -f "$out"/*
port=19988
config=$out/config.yaml
log=$out/serve.log

[ "$(id -u)" = 0 ] || { echo "soak: needs root" >&2; exit 2; }
[ -x "$bin" ] || { echo "soak: $bin not built (make build)" >&2; exit 2; }

cleanup() {
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    ip netns del tpksoak-ok 2>/dev/null || true
    ip netns del tpksoak-drop 2>/dev/null || true
}
trap cleanup EXIT

# Two namespaces: one answers, one drops every echo request.
for ns in ok drop; do
    ip netns del "tpksoak-$ns" 2>/dev/null || true
    ip netns add "tpksoak-$ns"
done
ip link add tpksoak0 type veth peer name eth0 netns tpksoak-ok
ip addr add 198.18.140.1/24 dev tpksoak0 && ip link set tpksoak0 up
ip -n tpksoak-ok addr add 198.18.140.2/24 dev eth0 && ip -n tpksoak-ok link set eth0 up
ip link add tpksoak1 type veth peer name eth0 netns tpksoak-drop
ip addr add 198.18.141.1/24 dev tpksoak1 && ip link set tpksoak1 up
ip -n tpksoak-drop addr add 198.18.141.2/24 dev eth0 && ip -n tpksoak-drop link set eth0 up
ip netns exec tpksoak-drop nft add table inet tpksoak
ip netns exec tpksoak-drop nft add chain inet tpksoak input '{ type filter hook input priority 0; }'
ip netns exec tpksoak-drop nft add rule inet tpksoak input icmp type echo-request drop

write_config() { # extra answering targets
    {
        echo "listen: 127.0.0.1:$port"
        echo "interval: 5s"
        echo "timeout: 1s"
        echo "targets:"
        for i in $(seq 1 140); do echo "  - {name: lo$i, address: 127.0.$((i / 250)).$((i % 250 + 1))}"; done
        for i in $(seq 1 10); do echo "  - {name: ns$i, address: 198.18.140.2, labels: {copy: \"$i\"}}"; done
        for i in $(seq 1 30); do echo "  - {name: dropped$i, address: 198.18.141.2, labels: {copy: \"$i\"}}"; done
        for i in $(seq 1 20); do echo "  - {name: unresolved$i, address: soak-$i.invalid}"; done
        for i in $(seq 1 "$1"); do echo "  - {name: extra$i, address: 127.1.0.$i}"; done
    } >"$config"
}

write_config 0
"$bin" serve --config "$config" 2>"$log" &
pid=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.2
done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { echo "soak: tracepkt did not start"; cat "$log"; exit 1; }

printf 'seconds\ttargets\trss_kib\tseries\tprobes_sent\n' >"$out/samples.tsv"
start=$(date +%s)
end=$((start + minutes * 60))
extra=0
next_reload=$((start + 60))
while [ "$(date +%s)" -lt "$end" ]; do
    sleep 30
    kill -0 "$pid" 2>/dev/null || { echo "soak: tracepkt died"; cat "$log"; exit 1; }
    now=$(date +%s)
    if [ "$now" -ge "$next_reload" ]; then
        extra=$((10 - extra))
        write_config "$extra"
        kill -HUP "$pid"
        next_reload=$((now + 60))
        sleep 10 # let the reload settle before sampling
    fi
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    metrics=$(curl -sf --max-time 10 "http://127.0.0.1:$port/metrics" || true)
    series=$(grep -vc '^#' <<<"$metrics" || true)
    # Series per family, first and last sample: where a change in the count comes from.
    families=$(grep -v '^#' <<<"$metrics" | sed -E 's/[{ ].*//' | sort | uniq -c)
    [ -f "$out/families-first.txt" ] || echo "$families" >"$out/families-first.txt"
    echo "$families" >"$out/families-last.txt"
    sent=$(awk '/^tracepkt_probes_sent_total/ {s += $2} END {print s + 0}' <<<"$metrics")
    printf '%s\t%s\t%s\t%s\t%s\n' "$((now - start))" "$((200 + extra))" "$rss" "$series" "$sent" >>"$out/samples.tsv"
done

kill -TERM "$pid"
wait "$pid" && status=0 || status=$?
pid=

python3 "$root/scripts/soak-summary.py" "$out" "$minutes" "$status"
