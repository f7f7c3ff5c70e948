#!/usr/bin/env bash
# The whole test suite, as `make test` runs it:
#   1. host: every unit and integration test on this machine's kernel (privileged tests run
#      when root, as CI is);
#   2. vm:   the privileged integration tests again, inside a VM on a Debian 6.1 kernel, where
#            kprobes exist and netfilter lives in modules (scripts/vm.sh).
# Skips are logged with their reason and summed up per kernel at the end; never a silent pass.
#   scripts/test.sh [all|host|vm]
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.tools/bin:$HOME/.cargo/bin:$PATH"
mode=${1:-all}
results=$root/target/test-results
mkdir -p "$results"
rm -f "$results"/*.log
export TRACEPKT_SKIP_LOG=$results/skips.log
: >"$TRACEPKT_SKIP_LOG"
failed=0

host() {
    echo "=== kernel $(uname -r) (this machine): cargo test" >&2
    cargo test --locked 2>&1 | tee "$results/host.log"
    [ "${PIPESTATUS[0]}" = 0 ] || failed=1
}

vm() {
    scripts/vm.sh setup >/dev/null || { echo "vm: setup failed" >&2; failed=1; return; }
    local kernel bins
    kernel=$(scripts/vm.sh kernel)
    # Build on the host (the guest shares the file system), run the integration binaries there.
    bins=$(cargo test --locked --tests --no-run 2>&1 | sed -nE 's/.*Executable tests\/[^ ]+ \((.*)\)/\1/p')
    if [ -z "$bins" ]; then
        echo "vm: no integration test binaries were built" >&2
        failed=1
        return
    fi
    echo "=== kernel $kernel (VM): $(echo "$bins" | xargs -n1 basename | tr '\n' ' ')" >&2
    local script="$results/vm-run.sh"
    {
        echo 'set -u; rc=0'
        for b in $bins; do echo "$b --test-threads=1 || rc=1"; done
        echo 'exit $rc'
    } >"$script"
    scripts/vm.sh run -- bash "$script" 2>&1 | tee "$results/vm.log"
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
for log in "$results"/host.log "$results"/vm.log; do
    [ -f "$log" ] || continue
    k=$(if [ "$(basename "$log")" = host.log ]; then uname -r; else scripts/vm.sh kernel; fi)
    p=$(sed -nE 's/^test result: .*\. ([0-9]+) passed; ([0-9]+) failed.*/\1/p' "$log" | paste -sd+ | bc)
    f=$(sed -nE 's/^test result: .*\. ([0-9]+) passed; ([0-9]+) failed.*/\2/p' "$log" | paste -sd+ | bc)
    s=$(grep "^SKIP kernel=$k " "$TRACEPKT_SKIP_LOG" | sort -u | grep -c . || true)
    echo "kernel $k: ${p:-0} passed, ${f:-0} failed, $s of them skipped"
    grep "^SKIP kernel=$k " "$TRACEPKT_SKIP_LOG" | sed 's/^/  /' | sort -u || true
    passed=$((passed + ${p:-0})); fails=$((fails + ${f:-0}))
done
skipped=$(sort -u "$TRACEPKT_SKIP_LOG" | grep -c '^SKIP' || true)
[ "$failed" = 0 ] || [ "$fails" -gt 0 ] || fails=1
echo "$((passed - skipped)) passed, $fails failed, $skipped skipped"
[ "$failed" = 0 ] && [ "$fails" = 0 ]
