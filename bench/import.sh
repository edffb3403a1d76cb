#!/usr/bin/env bash
# make bench-import: one gray-admin import of IMPORT_LINES (1,000,000) lines
# into a real memcached (-m 1024) on a free loopback port: wall time and
# maximum RSS from /usr/bin/time -v, then the count memcached holds.
# The file mixes IPv4, IPv6 and uid entries, targets 1, v2, v3 or none, and
# --ttl 3600 on every 10th line. Figures also in build/bench-import-results.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${IMPORT_LINES:-1000000}
BIN=build/gray-admin
DIR=$(mktemp -d /tmp/gray-bench-import.XXXXXX)
MCPID=
USER_OPT=
if [ "$(id -u)" = 0 ]; then USER_OPT="-u nobody"; fi
cleanup() {
    if [ -n "$MCPID" ]; then kill "$MCPID" 2>/dev/null || true; fi
    rm -rf "$DIR"
}
trap cleanup EXIT

# memcached on a free port (another, when one is taken meanwhile)
for try in 1 2 3 4 5; do
    while :; do
        PORT=$((20000 + RANDOM % 12000))   # below the ephemeral ports
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || break
    done
    # shellcheck disable=SC2086
    memcached -l 127.0.0.1 -p "$PORT" -U 0 -m 1024 $USER_OPT >"$DIR/mc.log" 2>&1 &
    MCPID=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break 2
        kill -0 "$MCPID" 2>/dev/null || break
        sleep 0.1
    done
    kill "$MCPID" 2>/dev/null || true
    MCPID=
    if [ "$try" = 5 ]; then
        echo "bench-import: memcached did not start:"; cat "$DIR/mc.log"; exit 1
    fi
done

awk -v n="$LINES" 'BEGIN {
    split("1 v2 v3 -", t, " ")
    for (i = 0; i < n; i++) {
        k = i % 20
        if (k < 12)      key = sprintf("10.%d.%d.%d", int(i / 65536) % 256, int(i / 256) % 256, i % 256)
        else if (k < 15) key = sprintf("2001:db8:%x::%x", int(i / 65536), i % 65536)
        else             key = sprintf("uid:%d", i)
        tg = t[i % 4 + 1]
        line = key (tg == "-" ? "" : " " tg)
        if (i % 10 == 0) line = line " --ttl 3600"
        print line
    }
}' >"$DIR/in.txt"

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
/usr/bin/time -v "$BIN" --servers "127.0.0.1:$PORT" import "$DIR/in.txt" \
    >"$DIR/out.txt" 2>"$DIR/time.txt" || { cat "$DIR/out.txt" "$DIR/time.txt"; exit 1; }
wall=$(sed -n 's/.*Elapsed (wall clock) time.*: //p' "$DIR/time.txt")
rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$DIR/time.txt")
cpu_user=$(sed -n 's/.*User time (seconds): //p' "$DIR/time.txt")
cpu_sys=$(sed -n 's/.*System time (seconds): //p' "$DIR/time.txt")
items=$(exec 3<>"/dev/tcp/127.0.0.1/$PORT"; printf 'stats\r\nquit\r\n' >&3
        sed -n 's/^STAT curr_items \([0-9]*\).*/\1/p' <&3)
{
    echo "gray-admin import, $LINES lines ($(du -h "$DIR/in.txt" | cut -f1)), memcached -m 1024:"
    echo "  $(cat "$DIR/out.txt")"
    echo "  wall ${wall} (gray-admin's CPU: ${cpu_user} s user, ${cpu_sys} s system), max RSS" \
         "$((rss / 1024)) MB ($rss kB), memcached holds ${items:-?} items"
    echo "  load average before: $LOAD"
} | tee build/bench-import-results.txt
