#!/bin/sh
# fuzz.sh BINARY SEEDS OUT [TARGET...] - libFuzzer on each fuzz target in
# turn (all of them when none is named): FUZZ_RUNS executions each when set
# (libFuzzer -runs), else FUZZ_SECONDS (60) each. A run starts from the
# target's seed corpus SEEDS/<target> (read only) and the inputs found so far
# in OUT/fuzz-corpus/<target> (where new ones go), and writes a finding
# (crash-*, leak-*, timeout-*, oom-*) to OUT/fuzz-findings/<target>/.
# libFuzzer stops a target at its first finding; the next target runs anyway.
# Inputs are cut at the target's max_len (below: the longest input its
# parser's limits make interesting; FUZZ_MAX_LEN overrides it for all).
# An input running FUZZ_TIMEOUT (10) seconds is a finding: raise it for a
# run at low priority on a busy machine (libFuzzer counts wall-clock time).
# Then one table: executions, exec/s and seconds (wall clock), CPU seconds
# (user + system: the machine may be shared), corpus and findings per
# target, in OUT/fuzz-results.txt and as markdown in OUT/fuzz-results.md,
# both rewritten after each target. Exits 1 when anything was found.
set -eu

bin=$1 seeds=$2 out=$3
shift 3
seconds=${FUZZ_SECONDS:-60}
runs=${FUZZ_RUNS:-}
if [ $# -eq 0 ]; then
    set -- $(ls "$seeds")
fi

# The longest input worth feeding each target. Longer inputs only repeat
# what shorter ones reach, at a higher cost per execution (most checks are
# linear in the input, the naive references quadratic). Limits past these
# lengths (a 1,025-byte server host, a 4,097-byte import line) are covered
# by long seeds, which make test's replay runs whole.
max_len() {
    case $1 in
    ip) echo 96 ;;                  # GRAY_HOST_TEXT_MAX 64, "[v6]:port"
    hash) echo 128 ;;               # murmur3: every alignment and tail
    dist) echo 256 ;;               # 4 servers, hosts < 256 bytes
    cli_args) echo 320 ;;           # name:id, 32 + 1 + 200 bytes
    token) echo 400 ;;              # GRAY_TOKEN_MAX 257
    ipset | servers | cli_import) echo 512 ;;
    ranges | image) echo 512 ;;     # dozens of lines; ids up to GRAY_ID_MAX 200
    mc_get | mc_line | mc_meta) echo 1200 ;;   # GRAY_MC_LINE_MAX 1024
    ramp) echo 1100 ;;              # GRAY_RAMP_TEXT_MAX 1024: 64 steps and a start
    *) echo 1024 ;;                 # the headers: xff, forwarded, client
    esac
}

if [ -n "$runs" ]; then
    mode="$runs executions per target"
    limit="-runs=$runs"
else
    mode="${seconds}s per target"
    limit="-max_total_time=$seconds"
fi

# the CPU seconds (user + system) of this shell's children so far, in
# hundredths (times must run in this shell, not in a $(...) subshell)
cpu_used() {
    times > "$out/fuzz-times.txt"
    cpu=$(awk 'NR == 2 { t = 0
        for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] }
        printf "%d\n", t * 100 }' "$out/fuzz-times.txt")
}

results=$out/fuzz-results.txt
markdown=$out/fuzz-results.md
rows=$out/fuzz-rows.txt
mkdir -p "$out"
: > "$rows"
started=$(date -u '+%Y-%m-%d %H:%M UTC')

# both tables from the rows so far (after each target: a run cut short
# still leaves the targets it finished)
tables() {
    {
        echo "libFuzzer, $mode (started $started, $(nproc) cores$1)"
        printf '%-12s %14s %10s %9s %9s %8s %9s %s\n' target executions exec/s seconds cpu-s \
            corpus findings max_len
        cat "$rows"
        awk '{ e += $2; t += $4; c += $5; f += $7 }
             END { printf "%-12s %14d %10s %9d %9d %8s %9d\n", "total", e, "", t, c, "", f }' \
            "$rows"
    } > "$results"
    {
        echo "libFuzzer, $mode (started $started, $(nproc) cores$1)"
        echo
        echo "| target | executions | exec/s | seconds | CPU seconds | max_len | corpus | findings |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
        awk '{ printf "| %s | %d | %s | %d | %d | %s | %s | %d |\n", $1, $2, $3, $4, $5, $8, $6, $7
               e += $2; t += $4; c += $5; f += $7 }
             END { printf "| total | %d | | %d | %d | | | %d |\n", e, t, c, f }' "$rows"
    } > "$markdown"
}

total_found=0
for t in "$@"; do
    [ -d "$seeds/$t" ] || { echo "fuzz.sh: no seed corpus $seeds/$t" >&2; exit 2; }
    corpus=$out/fuzz-corpus/$t
    findings=$out/fuzz-findings/$t
    log=$out/fuzz-$t.log
    len=${FUZZ_MAX_LEN:-$(max_len "$t")}
    mkdir -p "$corpus" "$findings"
    before=$(ls "$findings" | wc -l)
    echo "fuzz: $t, $mode, max_len $len (log $log)"
    t0=$(date +%s)
    cpu_used
    c0=$cpu
    # a finding is a non-zero exit: counted below, not fatal here
    FUZZ_TARGET=$t "$bin" "$limit" -max_len="$len" -timeout="${FUZZ_TIMEOUT:-10}" \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$findings/" \
        "$corpus" "$seeds/$t" > "$log" 2>&1 || true
    took=$(( $(date +%s) - t0 ))
    cpu_used
    cpu=$(( (cpu - c0 + 50) / 100 ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=0
    # exec/s over the whole run (libFuzzer's own figure leaves out loading)
    rate=$(( execs / (took > 0 ? took : 1) ))
    found=$(( $(ls "$findings" | wc -l) - before ))
    total_found=$((total_found + found))
    if [ "$found" -gt 0 ]; then
        grep -m 3 -e "invariant broken" -e "ERROR: " -e "CHECK(" "$log" \
            | sed "s/^/    $t: /" || true
    fi
    printf '%-12s %14s %10s %9s %9s %8s %9s %s\n' "$t" "$execs" "$rate" "$took" "$cpu" \
        "$(ls "$corpus" | wc -l)" "$found" "$len" >> "$rows"
    tables ", running"
done

tables ", finished $(date -u '+%Y-%m-%d %H:%M UTC')"
rm -f "$rows" "$out/fuzz-times.txt"
cat "$results"
if [ "$total_found" -gt 0 ]; then
    echo "fuzz: $total_found finding(s): $out/fuzz-findings/<target>/ (replay one:" \
         "FUZZ_TARGET=<target> $bin <file>)" >&2
    exit 1
fi
