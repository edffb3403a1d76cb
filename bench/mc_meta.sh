#!/bin/sh
# make bench-meta: get vs mg, bytes on the wire and the C decoder's
# instructions per lookup (callgrind: a run of 2N decodes less a run of N,
# so start-up and set-up cancel out). See bench/mc_meta.c for the cases.
set -eu
BIN=${1:-build/mc-meta-bench}
N=${MC_META_N:-20000}
command -v valgrind >/dev/null || { echo "bench-meta: valgrind is missing (tools/deps.sh bench)"; exit 1; }

instructions() {   # case iterations -> Ir of the whole run
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$1" "$2" 2>&1 >/dev/null \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

"$BIN" | while read -r name req reply total; do
    if [ "$name" = case ]; then
        printf '%-14s %9s %9s %9s %14s\n' case request reply total "instr/lookup"
        continue
    fi
    n=$N
    [ "$name" = gets-cas-1MB ] && n=20
    a=$(instructions "$name" "$n")
    b=$(instructions "$name" $((n * 2)))
    printf '%-14s %9s %9s %9s %14s\n' "$name" "$req" "$reply" "$total" $(((b - a) / n))
done
