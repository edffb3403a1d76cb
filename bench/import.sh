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
cleanup() {
    if [ -n "$MCPID" ]; then kill "$MCPID" 2>/dev/null || true; fi
    rm -rf "$DIR"
}
trap cleanup EXIT

# a port nothing listens on
while :; do
    PORT=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || break
done
USER_OPT=
if [ "$(id -u)" = 0 ]; then USER_OPT="-u nobody"; fi
# shellcheck disable=SC2086
memcached -l 127.0.0.1 -p "$PORT" -U 0 -m 1024 $USER_OPT >"$DIR/mc.log" 2>&1 &
MCPID=$!
for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
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

/usr/bin/time -v "$BIN" --servers "127.0.0.1:$PORT" import "$DIR/in.txt" \
    >"$DIR/out.txt" 2>"$DIR/time.txt" || { cat "$DIR/out.txt" "$DIR/time.txt"; exit 1; }
wall=$(sed -n 's/.*Elapsed (wall clock) time.*: //p' "$DIR/time.txt")
rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$DIR/time.txt")
items=$(exec 3<>"/dev/tcp/127.0.0.1/$PORT"; printf 'stats\r\nquit\r\n' >&3
        sed -n 's/^STAT curr_items \([0-9]*\).*/\1/p' <&3)
{
    echo "gray-admin import, $LINES lines ($(du -h "$DIR/in.txt" | cut -f1)), memcached -m 1024:"
    echo "  $(cat "$DIR/out.txt")"
    echo "  wall ${wall}, max RSS $((rss / 1024)) MB ($rss kB), memcached holds ${items:-?} items"
} | tee build/bench-import-results.txt
