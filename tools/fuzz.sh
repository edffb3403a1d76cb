#!/bin/sh
# fuzz.sh BINARY SEEDS OUT [TARGET...] - libFuzzer on each fuzz target in
# turn (all of them when none is named), FUZZ_SECONDS (60) each: a run
# starts from the target's seed corpus SEEDS/<target> and the inputs found so
# far in OUT/fuzz-corpus/<target>, and writes a finding (crash-*, leak-*,
# timeout-*, oom-*) to OUT/fuzz-findings/<target>/. libFuzzer stops a target
# at its first finding; the next target runs anyway. Then one table:
# executions and findings per target (also OUT/fuzz-results.txt). Exits 1
# when anything was found.
set -eu

bin=$1 seeds=$2 out=$3
shift 3
seconds=${FUZZ_SECONDS:-60}
if [ $# -eq 0 ]; then
    set -- $(ls "$seeds")
fi

results=$out/fuzz-results.txt
rows=$out/fuzz-rows.txt
: > "$rows"
total_found=0
for t in "$@"; do
    [ -d "$seeds/$t" ] || { echo "fuzz.sh: no seed corpus $seeds/$t" >&2; exit 2; }
    corpus=$out/fuzz-corpus/$t
    findings=$out/fuzz-findings/$t
    log=$out/fuzz-$t.log
    mkdir -p "$corpus" "$findings"
    before=$(ls "$findings" | wc -l)
    echo "fuzz: $t for ${seconds}s (log $log)"
    # a finding is a non-zero exit: counted below, not fatal here
    FUZZ_TARGET=$t "$bin" -max_total_time="$seconds" -max_len=4096 -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$findings/" \
        "$corpus" "$seeds/$t" > "$log" 2>&1 || true
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=0
    secs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    found=$(( $(ls "$findings" | wc -l) - before ))
    total_found=$((total_found + found))
    if [ "$found" -gt 0 ]; then
        grep -m 3 -e "invariant broken" -e "ERROR: " -e "CHECK(" "$log" \
            | sed "s/^/    $t: /" || true
    fi
    printf '%-12s %14s %10s %8s %9s\n' "$t" "$execs" "${secs:-0}" \
        "$(ls "$corpus" | wc -l)" "$found" >> "$rows"
done

{
    echo "libFuzzer, ${seconds}s per target ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores)"
    printf '%-12s %14s %10s %8s %9s\n' target executions exec/s corpus findings
    cat "$rows"
    awk '{ e += $2 } END { printf "%-12s %14d\n", "total", e }' "$rows"
} > "$results"
rm -f "$rows"
cat "$results"
if [ "$total_found" -gt 0 ]; then
    echo "fuzz: $total_found finding(s): $out/fuzz-findings/<target>/ (replay one:" \
         "FUZZ_TARGET=<target> $bin <file>)" >&2
    exit 1
fi
