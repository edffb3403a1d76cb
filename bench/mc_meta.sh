#!/bin/sh
# make bench-meta: get vs mg, bytes on the wire and the C decoder's
# instructions per lookup (callgrind: a run of 2N decodes less a run of N,
# so start-up and set-up cancel out), in C alone and through gray.ffi
# (bench/mc_meta.lua). See bench/mc_meta.c for the cases.
set -eu
BIN=${1:-build/mc-meta-bench}
N=${MC_META_N:-20000}
command -v valgrind >/dev/null || { echo "bench-meta: valgrind is missing (tools/deps.sh bench)"; exit 1; }

LUAJIT=${LUAJIT:-luajit}

instructions() {   # command... -> Ir of the whole run
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

per_lookup() {     # n command... -> (Ir of 2n lookups - Ir of n) / n
    n=$1
    shift
    a=$(instructions "$@" "$n")
    b=$(instructions "$@" $((n * 2)))
    echo $(((b - a) / n))
}

"$BIN" | while read -r name req reply total; do
    if [ "$name" = case ]; then
        printf '%-14s %9s %9s %9s %10s %10s\n' case request reply total "C instr" "Lua instr"
        continue
    fi
    n=$N
    [ "$name" = gets-cas-1MB ] && n=20
    c=$(per_lookup "$n" "$BIN" "$name")
    lua=-
    if grep -q "\"$name\"" bench/mc_meta.lua; then
        # LuaJIT's traces form a little differently run to run (a 3-key
        # loop may become its own trace): the median of 3 fresh processes
        lua=$(for _ in 1 2 3; do
                  LUA_PATH='lua/?.lua;;' LUA_CPATH='build/?.so;;' \
                      per_lookup "$N" "$LUAJIT" bench/mc_meta.lua "$name"
              done | sort -n | sed -n 2p)
    fi
    printf '%-14s %9s %9s %9s %10s %10s\n' "$name" "$req" "$reply" "$total" "$c" "$lua"
done
echo "bytes: request and reply on the wire; C instr: gray_mc_parse_get/_meta per lookup;"
echo "Lua instr: gray.ffi's decode (FFI call, value strings, result table) per lookup,"
echo "the median of 3 processes"
