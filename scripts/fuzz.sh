#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for a bounded time each.
#   scripts/fuzz.sh [SECONDS]    per target; default 25. FUZZ_TARGETS="config btf" picks targets.
# Each target starts from its committed seeds (fuzz/corpus/TARGET, never written to) and from
# what earlier runs found (target/fuzz/corpus/TARGET, where libFuzzer adds new inputs). A crash,
# an input slower than 10 s or one needing more than 2 GB fails the run and prints the input's
# path. The last line counts targets as `cargo test` counts tests, so scripts/test.sh's summary
# counts them with the rest.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.tools/bin:$HOME/.cargo/bin:$PATH"
seconds=${1:-25}
targets=${FUZZ_TARGETS:-config event btf tracefs}
work=$root/target/fuzz
started=$(date +%s)
# Overflow checks on: an overflow that would wrap silently in a release build is a finding.
fuzz=(cargo +nightly fuzz)
flags=(--debug-assertions --target-dir "$work")

summary() { # passed failed
    echo "test result: $([ "$2" = 0 ] && echo ok || echo FAILED). $1 passed; $2 failed; 0 ignored; 0 measured; 0 filtered out; finished in $(($(date +%s) - started))s"
}

echo "=== fuzz: building the targets ($targets)" >&2
if ! "${fuzz[@]}" build "${flags[@]}" >"$work.build.log" 2>&1; then
    tail -n 30 "$work.build.log"
    echo "fuzz: the targets did not build (log: $work.build.log)"
    summary 0 "$(echo "$targets" | wc -w)"
    exit 1
fi

passed=0
failed=0
for t in $targets; do
    corpus=$work/corpus/$t
    artifacts=$work/artifacts/$t
    log=$work/logs/$t.log
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    "${fuzz[@]}" run "${flags[@]}" "$t" "$corpus" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" >"$log" 2>&1
    rc=$?
    execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n1)
    rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$log" | tail -n1)
    if [ "$rc" = 0 ]; then
        passed=$((passed + 1))
        echo "fuzz $t: ok, ${execs:-?} runs in ${seconds} s (${rate:-?}/s), corpus $(find "$corpus" -type f | wc -l) inputs"
    else
        failed=$((failed + 1))
        echo "fuzz $t: FAILED (exit $rc) after ${execs:-?} runs; log: $log"
        grep -E '^(==[0-9]+== ERROR|thread .* panicked|SUMMARY|ALARM|Test unit written to|MS: )' "$log" | head -n 20 | sed 's/^/  /'
        for input in $(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$log"); do
            echo "  crash input: $input"
            echo "  reproduce:   cargo +nightly fuzz run --debug-assertions --target-dir target/fuzz $t $input"
        done
    fi
done
summary "$passed" "$failed"
[ "$failed" = 0 ]
