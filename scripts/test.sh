#!/usr/bin/env bash
# The whole test suite, as `make test` runs it:
#   1. host: every unit and integration test on this machine's kernel (privileged tests run
#      when root, as CI is); with TRACEPKT_FUZZ_SECONDS=N, every fuzz target for N s as well
#      (scripts/fuzz.sh; `make fuzz` runs them on its own: their sanitizer build of every
#      dependency is a build of its own, longer than the suite can spare);
#   2. vm:   the privileged integration tests again, inside VMs on Debian's 6.1 and 6.12
#            kernels, where kprobes exist and netfilter lives in modules (scripts/vm.sh); then
#            the netfilter contention test in a VM whose NIC sits on a bridge made here, with
#            this machine flooding it (scripts/flood.py; only the VM's address on that bridge);
#            then the cross-node journeys: a tracepkt here and one in the first series' VM, on
#            a bridge made here, with VXLAN between them.
# Skips are logged with their reason and summed up per kernel at the end; never a silent pass.
#   scripts/test.sh [all|host|vm]      TRACEPKT_VM_SERIES_LIST="6.1 6.12" picks the VM kernels,
#                                      TRACEPKT_VM_CONTENTION_LIST="6.1" those flooded on a bridge
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.tools/bin:$HOME/.cargo/bin:$PATH"
mode=${1:-all}
series_list=${TRACEPKT_VM_SERIES_LIST:-6.1 6.12}
# Only 6.1 by default: attaching tracepkt's programs while the flood runs the patched code on the
# other vCPU crashed the 6.12 guest now and then under qemu's software emulation (see README).
contention_list=${TRACEPKT_VM_CONTENTION_LIST:-6.1}
results=$root/target/test-results
mkdir -p "$results"
rm -f "$results"/*.log "$results"/*.done "$results"/guest-deaths.txt
export TRACEPKT_SKIP_LOG=$results/skips.log
: >"$TRACEPKT_SKIP_LOG"
failed=0

host() {
    echo "=== kernel $(uname -r) (this machine): cargo test" >&2
    cargo test --locked 2>&1 | tee "$results/host.log"
    [ "${PIPESTATUS[0]}" = 0 ] || failed=1
    local fuzz_seconds=${TRACEPKT_FUZZ_SECONDS:-0}
    [ "$fuzz_seconds" = 0 ] && return
    scripts/deps.sh fuzz || { failed=1; return; }
    echo "=== kernel $(uname -r) (this machine): fuzz targets, ${fuzz_seconds} s each" >&2
    scripts/fuzz.sh "$fuzz_seconds" 2>&1 | tee "$results/host-fuzz.log"
    [ "${PIPESTATUS[0]}" = 0 ] || failed=1
}

# The contention test's network: a bridge with this machine at .1 and the VM at .2.
BRIDGE=tpkctbr0
BRIDGE_HOST=198.18.60.1
BRIDGE_GUEST=198.18.60.2

bridge_up() {
    ip link del "$BRIDGE" 2>/dev/null
    ip link add "$BRIDGE" type bridge && ip addr add "$BRIDGE_HOST/24" dev "$BRIDGE" && ip link set "$BRIDGE" up || return 1
    mkdir -p /etc/qemu
    grep -qx "allow $BRIDGE" /etc/qemu/bridge.conf 2>/dev/null || echo "allow $BRIDGE" >>/etc/qemu/bridge.conf
}

# Tests whose subject does not depend on the kernel (rendering the chart or the page, TLS,
# scrapers, /etc/hosts, promtool, pod names from /proc and /var/log/pods, DNS answers,
# capability sets, bad config files and command lines): they run
# on the host only, and are left out of the VMs by name, where software emulation would make
# them the slowest part of the suite.
HOST_ONLY="chart_grants_least_privilege chart_lints_renders_and_validates \
metrics_over_tls_with_basic_auth_and_client_certificates a_bad_web_config_is_refused_at_start \
a_second_instance_coexists_on_another_port_and_is_refused_on_the_same_one sigint_leaves_nothing_in_the_kernel \
fifty_scrapers_and_reloads_under_load_change_nothing_else \
a_name_that_stops_resolving_and_a_namespace_deleted_while_probed alert_rules_pass_promtool \
the_page_shows_each_target_and_where_failing_probes_stop a_pods_namespace_is_shown_by_its_pod_name \
a_probe_starts_inside_a_pod_named_on_the_command_line serve_probes_from_a_pod_and_labels_its_namespace \
serve_exports_the_answer_check serve_gives_up_the_capabilities_it_never_uses \
bad_config_files config_files_that_cannot_be_read bad_command_lines bad_namespace_names chart_turns_cross_node_on \
targets_that_resolve_to_nothing pod_template_is_unchanged_by_a_chart_version_bump schema_refuses_bad_values \
schema_accepts_every_documented_config_key chart_renders_image_priority_resources_job_and_runbooks \
checkov_finds_only_what_tracepkt_needs every_alert_has_a_runbook_section_and_promtool_cases \
exporter_toolkit_files_it_refuses_are_refused exporter_toolkit_files_it_serves_are_served_alike \
changes_on_disk_take_effect_at_the_next_handshake_or_request the_rate_limit_lets_its_burst_through_then_answers_429 \
slow_headers_and_a_connection_flood_leave_metrics_answering \
chart_takes_a_web_config_and_binds_to_the_node_address"
# Kernel-dependent but slow under emulation, where one kernel with kprobes proves them: run in
# the first VM series only.
FIRST_VM_ONLY="every_dashboard_and_alert_query_returns_data_on_a_live_topology \
a_full_ring_buffer_is_counted_and_marks_journeys_incomplete \
fragmentation_needed_names_the_mtu a_sweep_exports_the_path_mtu"
# Binaries whose subject is user space alone (exporting traces, the page, the web config, HTTP
# floods, health, pods' names, command lines): the host proves them, and no VM runs them.
HOST_ONLY_BINS="cli_errors health http_floods otlp otlp_harness pods web web_config"
# Binaries whose subject is what user space makes of the kernel's events (serving, DNS answers,
# the dashboards' queries, odd names, the chart's capability set, a full ring buffer, clean
# exits), not the events themselves: the host and the first VM series prove them; later series
# run only the binaries that watch the kernel's own paths (hooks, drops, netfilter, NAT, MTU,
# tunnels, contention).
FIRST_VM_ONLY_BINS="bad_input chart dashboards dns faults lifecycle serve"
first_series=${series_list%% *}

# Runs a guest script made by guest_script in a VM of series S (more vm.sh run options after
# the log), appending to LOG. The script records each step it finishes in its .done file. A guest
# that dies (an oops or a failed boot under emulation: vm.sh prints the console's last lines)
# leaves no "(all)" line there: the VM is then started once more, and runs only the steps it had
# not finished. A second death fails; every death is listed in the summary.
guest_run() { # S SCRIPT LOG [vm.sh run options...]
    local s=$1 script=$2 log=$3 attempt at
    shift 3
    local done_file=${script%.sh}.done
    for attempt in 1 2; do
        TRACEPKT_VM_SERIES=$s scripts/vm.sh run "$@" -- bash "$script" 2>&1 | tee -a "$log"
        if grep -q '^(all) ' "$done_file"; then
            if grep -qv ' 0$' "$done_file"; then failed=1; fi
            return
        fi
        at=$(guest_steps "$script" | grep -vxFf <(cut -d' ' -f1 "$done_file") | head -n1)
        echo "$(basename "$log" .log): the guest died (boot $attempt) in ${at:-its boot}" |
            tee -a "$results/guest-deaths.txt" >&2
    done
    failed=1
}

guest_steps() { sed -nE 's/^step ([^ ]+) .*/\1/p' "$1"; }

# Starts the guest script SCRIPT; append "step NAME CMD ARGS" lines, then call guest_script_end.
guest_script() { # SCRIPT
    local done_file=${1%.sh}.done
    : >"$done_file"
    cat >"$1" <<EOF
set -u
done_file=$done_file
step() { # NAME CMD ARGS: runs CMD unless an earlier boot of this guest finished it
    local name=\$1
    shift
    grep -q "^\$name " "\$done_file" && return
    "\$@"
    echo "\$name \$?" >>"\$done_file"
}
EOF
}

guest_script_end() { # SCRIPT
    echo "echo '(all) 0' >>\"\$done_file\"" >>"$1"
}

vm_series() { # series bins
    local s=$1 bins=$2 kernel script
    TRACEPKT_VM_SERIES=$s scripts/vm.sh setup >/dev/null || { echo "vm $s: setup failed" >&2; failed=1; return; }
    kernel=$(TRACEPKT_VM_SERIES=$s scripts/vm.sh kernel)
    echo "=== kernel $kernel (VM): $(echo "$bins" | xargs -n1 basename | tr '\n' ' ')" >&2
    script="$results/vm-run-$s.sh"
    guest_script "$script"
    {
        local skips="" t
        for t in $HOST_ONLY; do skips="$skips --skip $t"; done
        if [ "$s" != "$first_series" ]; then
            for t in $FIRST_VM_ONLY; do skips="$skips --skip $t"; done
        fi
        # The netfilter contention test runs below, in a VM of its own on a flooded bridge.
        for b in $bins; do
            [[ " $HOST_ONLY_BINS " == *" $(basename "${b%-*}") "* ]] && continue
            if [ "$s" != "$first_series" ] && [[ " $FIRST_VM_ONLY_BINS " == *" $(basename "${b%-*}") "* ]]; then
                continue
            fi
            case $b in
                */contention-*) echo "step $(basename "$b") $b --test-threads=1 --skip netfilter_rows_carry$skips" ;;
                # The two-kernel test runs on this machine, which boots its VM: see crossnode().
                */crossnode-*) echo "step $(basename "$b") $b --test-threads=1 --skip across_two_kernels$skips" ;;
                *) echo "step $(basename "$b") $b --test-threads=1$skips" ;;
            esac
        done
    } >>"$script"
    guest_script_end "$script"
    guest_run "$s" "$script" "$results/vm-$s.log"

    local contention
    contention=$(echo "$bins" | tr ' ' '\n' | grep '/contention-' | head -n1)
    [ -n "$contention" ] || return
    case " $contention_list " in *" $s "*) ;; *) return ;; esac
    echo "=== kernel $kernel (VM on bridge $BRIDGE, flooded from here): contention" >&2
    if ! bridge_up; then
        echo "vm $s: cannot create bridge $BRIDGE" >&2
        failed=1
        return
    fi
    # Bounded: the flood ends by itself; it only reaches the VM once the VM answers ARP.
    python3 scripts/flood.py --to "$BRIDGE_GUEST" --seconds 900 --pps 9000 >"$results/flood-$s.log" 2>&1 &
    local flood=$!
    script="$results/vm-run-$s-contention.sh"
    guest_script "$script"
    echo "step contention $contention --test-threads=1 --nocapture netfilter_rows_carry" >>"$script"
    guest_script_end "$script"
    TRACEPKT_CONTENTION_PEER=$BRIDGE_HOST TRACEPKT_CONTENTION_ADDR=$BRIDGE_GUEST/24 \
        guest_run "$s" "$script" "$results/vm-$s-contention.log" --bridge "$BRIDGE"
    kill "$flood" 2>/dev/null
    wait "$flood" 2>/dev/null
    ip link del "$BRIDGE" 2>/dev/null
}

vm() {
    local bins s
    # Build on the host (the guest shares the file system), run the integration binaries there.
    bins=$(cargo test --locked --tests --no-run 2>&1 | sed -nE 's/.*Executable tests\/[^ ]+ \((.*)\)/\1/p')
    if [ -z "$bins" ]; then
        echo "vm: no integration test binaries were built" >&2
        failed=1
        return
    fi
    for s in $series_list; do vm_series "$s" "$bins"; done
    crossnode "$bins"
}

crossnode() { # bins: this machine and the first series' VM, one tracepkt on each
    local bin s=$first_series
    bin=$(echo "$1" | tr ' ' '\n' | grep '/crossnode-' | head -n1)
    [ -n "$bin" ] && [ -n "$s" ] || return
    echo "=== kernels $(uname -r) (this machine) and $(TRACEPKT_VM_SERIES=$s scripts/vm.sh kernel) (VM on a bridge): cross-node journeys" >&2
    TRACEPKT_CROSSNODE_VM=$s "$bin" --test-threads=1 --nocapture across_two_kernels 2>&1 |
        tee "$results/host-crossnode.log"
    [ "${PIPESTATUS[0]}" = 0 ] || failed=1
}

case $mode in
    all) host; vm ;;
    host) host ;;
    vm) vm ;;
    *) echo "usage: scripts/test.sh [all|host|vm]" >&2; exit 2 ;;
esac

# Summary: per kernel, what passed, failed and was skipped (and why).
passed=0; fails=0
echo
echo "=== summary"
kernel_of() { # log file
    local s
    case $(basename "$1") in
        host.log | host-fuzz.log | host-crossnode.log) uname -r ;;
        vm-*) s=${1##*/vm-}; s=${s%.log}; s=${s%-contention}; TRACEPKT_VM_SERIES=$s scripts/vm.sh kernel ;;
    esac
}
declare -A seen_kernel=()
for log in "$results"/host.log "$results"/host-fuzz.log "$results"/host-crossnode.log "$results"/vm-*.log; do
    [ -f "$log" ] || continue
    k=$(kernel_of "$log")
    p=$(sed -nE 's/^test result: .*\. ([0-9]+) passed; ([0-9]+) failed.*/\1/p' "$log" | paste -sd+ | bc)
    f=$(sed -nE 's/^test result: .*\. ([0-9]+) passed; ([0-9]+) failed.*/\2/p' "$log" | paste -sd+ | bc)
    echo "kernel $k ($(basename "$log" .log)): ${p:-0} passed, ${f:-0} failed"
    passed=$((passed + ${p:-0})); fails=$((fails + ${f:-0}))
    seen_kernel[$k]=1
done
for k in "${!seen_kernel[@]}"; do
    s=$(grep "^SKIP kernel=$k " "$TRACEPKT_SKIP_LOG" | sort -u | grep -c . || true)
    echo "kernel $k: $s skipped"
    grep "^SKIP kernel=$k " "$TRACEPKT_SKIP_LOG" | sed 's/^/  /' | sort -u || true
done
if [ -s "$results/guest-deaths.txt" ]; then
    echo "guest kernels that died and were booted again (each console is in the log above):"
    sed 's/^/  /' "$results/guest-deaths.txt"
fi
skipped=$(sort -u "$TRACEPKT_SKIP_LOG" | grep -c '^SKIP' || true)
[ "$failed" = 0 ] || [ "$fails" -gt 0 ] || fails=1
echo "$((passed - skipped)) passed, $fails failed, $skipped skipped"
[ "$failed" = 0 ] && [ "$fails" = 0 ]
