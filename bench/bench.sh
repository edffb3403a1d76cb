#!/bin/bash
# bench.sh - `make bench`: the drop-in router beside a plain proxy_pass and a
# seed-style dep.lua, on one nginx ("the router"), every location proxying to
# the same tiny backend nginx through the same keepalive upstream.
#
#   plain           proxy_pass to the backend (the limit)
#   exec-only       content_by_lua_block { ngx.exec("@server") } (reference)
#   reads-only      the nginx variables /dropin reads, then ngx.exec (reference)
#   dropin          lua/gray/dep.lua, default answer cache
#   dropin-nocache  lua/gray/dep.lua with $gray_cache_ttl 0
#   seed            bench/seed_dep.lua: a new memcached connection per request
#
# Two measurements per location:
#   req/s      wrk against the router (one worker), best of BENCH_ROUNDS
#   instr/req  the router as one process under callgrind, a fresh one per
#              location (LuaJIT's traces then depend on that location only):
#              warm-up, counters zeroed, exactly N requests on one keepalive
#              connection (curl), dumped;
#              Ir of that dump / N (user-space instructions of the nginx
#              process only: not the kernel, not memcached, not the backend)
#
# Every location is checked first (status, body, which named location
# answered), every measured batch is checked again (all N answers right, one
# connection, memcached gets per request), and the router's error log must
# stay clean. Results go to build/bench-results.txt too.
#
# Settings (environment): BENCH_REQUESTS (2000), BENCH_WARMUP (500),
# BENCH_DURATION (5 s), BENCH_CONNECTIONS (16), BENCH_ROUNDS (3),
# BENCH_KEEP=1 keeps the scratch directory.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
N=${BENCH_REQUESTS:-2000}
N_SMALL=$((N / 4))
WARM=${BENCH_WARMUP:-500}
DURATION=${BENCH_DURATION:-5}
CONNS=${BENCH_CONNECTIONS:-16}
ROUNDS=${BENCH_ROUNDS:-3}
RESULTS=$REPO/build/bench-results.txt
MODS=/usr/lib/nginx/modules

LOCS="plain exec-only reads-only dropin dropin-nocache seed"
declare -A LABEL=([plain]="plain" [exec-only]="exec-only (ref)" [reads-only]="reads-only (ref)"
                  [dropin]="dropin (cache)"
                  [dropin-nocache]="dropin (ttl 0)" [seed]="seed-style")
# X-Gray-Target each location must answer with for a 127.0.0.1 client
# (memcached says "1" for it), and for X-Real-IP: 10.9.9.9 (not in memcached)
declare -A WANT=([plain]=plain [exec-only]=stable [reads-only]=stable [dropin]=test
                 [dropin-nocache]=test [seed]=test)
declare -A WANT_OTHER=([plain]=plain [exec-only]=stable [reads-only]=stable [dropin]=stable
                       [dropin-nocache]=stable [seed]=stable)
BODY="backend ok"

die() { echo "bench: $*" >&2; exit 1; }

[ -r $MODS/ngx_http_lua_module.so ] || die "Debian's nginx lua module is not installed"
[ -r "$REPO/build/libgray.so" ] || die "build/libgray.so is missing (make)"
for tool in nginx memcached wrk curl valgrind callgrind_control; do
    command -v $tool >/dev/null || die "$tool is not installed (sh tools/deps.sh bench)"
done

DIR=$(mktemp -d /tmp/gray-bench.XXXXXX)
PIDS=""
ok_exit=""

stop_pid() {    # pid [seconds]: TERM, wait, then KILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < ${2:-20} * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in $PIDS; do
        stop_pid "$pid" 30
    done
    if [ -n "$ok_exit" ] && [ -z "${BENCH_KEEP:-}" ]; then
        rm -rf "$DIR"
    else
        echo "bench: scratch directory kept: $DIR" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

forget_pid() { PIDS=$(echo " $PIDS " | sed "s/ $1 / /"); }

# CPUs: the router alone on CPU 0, everything else (wrk, curl, backend,
# memcached) on the others, when there are at least two.
if [ "$(nproc)" -ge 2 ]; then
    PIN_ROUTER="taskset -c 0"
    PIN_OTHER="taskset -c 1-$(($(nproc) - 1))"
else
    PIN_ROUTER=""
    PIN_OTHER=""
fi

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Ports come from below the ephemeral range (the seed-style location opens
# a connection per request, tens of thousands of them).
EPHEMERAL_LOW=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$EPHEMERAL_LOW" -gt 12000 ] || EPHEMERAL_LOW=61000
TAKEN=" "
pick_port() {   # VAR: sets VAR to a loopback port nothing listens on
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
        case "$TAKEN" in *" $p "*) continue ;; esac
        if ! port_in_use $p; then
            TAKEN="$TAKEN$p "
            printf -v "$1" '%s' "$p"
            return
        fi
    done
    die "no free loopback port"
}

# wait_port port seconds pid what: 0 once it listens, 1 if the process
# exited (a port taken meanwhile: the caller tries another one)
wait_port() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        port_in_use "$1" && return 0
        if ! kill -0 "$3" 2>/dev/null; then
            wait "$3" 2>/dev/null || true
            forget_pid "$3"
            return 1
        fi
        sleep 0.1
    done
    die "$4 did not listen on $1 within $2 s (see $DIR)"
}

# ---- memcached -------------------------------------------------------------

mc_cmd() {      # raw protocol text -> reply
    bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$MC"'; printf "%b" "$1" >&3; timeout 0.3 cat <&3' \
        _ "$1" || true
}
# "<cmd_get> <total_connections>" (the stats connection counts itself)
mc_stats() {
    mc_cmd 'stats\r\n' | tr -d '\r' \
        | awk '$1 == "STAT" { v[$2] = $3 } END { print v["cmd_get"], v["total_connections"] }'
}

user=""
[ "$(id -u)" = 0 ] && user="-u nobody"
for attempt in 1 2 3 4 5; do
    pick_port MC
    $PIN_OTHER memcached -l 127.0.0.1 -p "$MC" -U 0 -t 1 $user >"$DIR/memcached.log" 2>&1 &
    PIDS="$PIDS $!"
    wait_port "$MC" 10 $! memcached && break
    [ "$attempt" -lt 5 ] || die "memcached did not start: $(cat "$DIR/memcached.log")"
done
reply=$(mc_cmd 'set 127.0.0.1 0 0 1\r\n1\r\n')
case "$reply" in STORED*) ;; *) die "memcached set: $reply" ;; esac

# ---- nginx configurations ----------------------------------------------------

common_main() {     # prefix
    cat <<EOF
$([ "$(id -u)" = 0 ] && echo "user root root;")
load_module $MODS/ndk_http_module.so;
load_module $MODS/ngx_http_lua_module.so;
daemon off;
master_process off;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 1024; }
EOF
}

common_http() {     # prefix
    cat <<EOF
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
EOF
}

mkdir -p "$DIR/backend" "$DIR/router" "$DIR/cg" "$DIR/curl"
write_backend_conf() {
    common_main "$DIR/backend"
    echo "http {"
    common_http "$DIR/backend"
    cat <<EOF
    server {
        listen 127.0.0.1:$BACKEND;
        location / { return 200 "$BODY\n"; }
    }
}
EOF
}

# The router: every location ends in the same upstream, with the same
# keepalive, and sets X-Gray-Target (so the checks can see who answered).
write_router_conf() {
    common_main "$DIR/router"
    echo "http {"
    common_http "$DIR/router"
    cat <<EOF
    lua_package_path '$REPO/lua/?.lua;$REPO/bench/?.lua;;';
    lua_package_cpath '$REPO/build/?.so;;';

    upstream backend {
        server 127.0.0.1:$BACKEND;
        keepalive 16;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:$ROUTER;
        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location = /plain {
            add_header X-Gray-Target plain always;
            proxy_pass http://backend;
        }
        location = /exec-only {
            content_by_lua_block { ngx.exec("@server") }
        }
        # the nginx variables /dropin reads, and nothing else (bench/reads_floor.lua)
        location = /reads-only {
            set \$gray_memcached "127.0.0.1:$MC";
            set \$gray_cache_ttl 1;
            content_by_lua_file $REPO/bench/reads_only.lua;
        }
        # \$gray_cache_ttl is set here to its default (1) because /dropin-nocache
        # sets it: read unset in this location, nginx would log "using
        # uninitialized variable" at warn level on every request
        location = /dropin {
            set \$gray_memcached "127.0.0.1:$MC";
            set \$gray_cache_ttl 1;
            content_by_lua_file $REPO/lua/gray/dep.lua;
        }
        location = /dropin-nocache {
            set \$gray_memcached "127.0.0.1:$MC";
            set \$gray_cache_ttl 0;
            content_by_lua_file $REPO/lua/gray/dep.lua;
        }
        location = /seed {
            set \$seed_memcached "127.0.0.1:$MC";
            content_by_lua_file $REPO/bench/seed_dep.lua;
        }
        location @server {
            add_header X-Gray-Target stable always;
            proxy_pass http://backend;
        }
        location @server_test {
            add_header X-Gray-Target test always;
            proxy_pass http://backend;
        }
    }
}
EOF
}

start_nginx() {     # name [wrapper...]: starts nginx in $DIR/name, sets STARTED
    local name=$1
    shift
    "$@" nginx -p "$DIR/$name" -e "$DIR/$name/error.log" -c "$DIR/$name/nginx.conf" \
        >"$DIR/$name/stdout.log" 2>&1 &
    STARTED=$!
    PIDS="$PIDS $STARTED"
}

# start_nginx_on name port-variable wrapper...: picks a port, writes the
# configuration, starts; another port if the one picked was taken meanwhile
start_nginx_on() {
    local name=$1 var=$2 attempt
    shift 2
    for attempt in 1 2 3 4 5; do
        pick_port "$var"
        "write_${name}_conf" >"$DIR/$name/nginx.conf"
        start_nginx "$name" "$@"
        wait_port "${!var}" 10 "$STARTED" "$name nginx" && return 0
    done
    die "$name nginx did not start: $(tail -5 "$DIR/$name/error.log" "$DIR/$name/stdout.log")"
}

start_nginx_on backend BACKEND $PIN_OTHER

# ---- checks ------------------------------------------------------------------

check_locations() {     # [locations]: verifies them (default: all) through the router
    local loc out
    for loc in ${1:-$LOCS}; do
        out=$(curl -s -m 30 -o "$DIR/body" -w '%{http_code} %header{x-gray-target}' \
              "http://127.0.0.1:$ROUTER/$loc") || true
        [ "$out" = "200 ${WANT[$loc]}" ] && [ "$(cat "$DIR/body")" = "$BODY" ] \
            || die "/$loc answered '$out' body '$(head -c 200 "$DIR/body")'," \
                   "expected '200 ${WANT[$loc]}' body '$BODY'"
        out=$(curl -s -m 30 -o "$DIR/body" -w '%{http_code} %header{x-gray-target}' \
              -H 'X-Real-IP: 10.9.9.9' "http://127.0.0.1:$ROUTER/$loc") || true
        [ "$out" = "200 ${WANT_OTHER[$loc]}" ] && [ "$(cat "$DIR/body")" = "$BODY" ] \
            || die "/$loc with X-Real-IP 10.9.9.9 answered '$out', expected" \
                   "'200 ${WANT_OTHER[$loc]}'"
    done
}

check_error_log() {     # router error.log: nothing at warn level or worse
    local bad
    bad=$(grep -E '\[(warn|error|crit|alert|emerg)\]|global variable' "$DIR/router/error.log" \
          | sort | uniq -c | sort -rn || true)
    [ -z "$bad" ] || die "router error.log:"$'\n'"$(echo "$bad" | head -20)"
}

# curl_batch loc count: count sequential requests on one keepalive connection;
# checks every answer and that curl connected once.
curl_batch() {
    local loc=$1 count=$2 cfg="$DIR/curl/$1.$2" out
    if [ ! -f "$cfg" ]; then
        local i
        for ((i = 0; i < count; i++)); do
            printf 'url = "http://127.0.0.1:%s/%s"\noutput = "/dev/null"\n' "$ROUTER" "$loc"
        done >"$cfg"
    fi
    $PIN_OTHER curl -s -m 600 --config "$cfg" \
        -w '%{http_code} %header{x-gray-target} %{num_connects}\n' >"$DIR/curl/out" \
        || die "curl failed on /$loc"
    out=$(awk '{ n[$1 " " $2]++; c += $3 } END { for (k in n) print n[k], k; print "connects", c }' \
          "$DIR/curl/out" | sort)
    [ "$out" = "$count 200 ${WANT[$loc]}"$'\n'"connects 1" ] \
        || die "/$loc batch of $count: unexpected answers:"$'\n'"$out"
}

# ---- 1. throughput: wrk ----------------------------------------------------------

start_nginx_on router ROUTER $PIN_ROUTER
ROUTER_PID=$STARTED
echo "bench: memcached :$MC, backend :$BACKEND, router :$ROUTER, scratch $DIR"
check_locations

declare -A RPS CPU_US LOAD
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$ROUTER_PID/stat"; }   # user + system
# run_wrk loc seconds -> "requests/s router-CPU-us/request router-CPU-load"
run_wrk() {
    local out t0 t1 reqs
    t0=$(cpu_ticks)
    out=$($PIN_OTHER wrk -t1 -c"$CONNS" -d"$2"s "http://127.0.0.1:$ROUTER/$1" 2>&1) \
        || die "wrk failed on /$1: $out"
    t1=$(cpu_ticks)
    if echo "$out" | grep -qE 'Non-2xx|Socket errors'; then
        die "wrk on /$1 saw errors:"$'\n'"$out"
    fi
    reqs=$(echo "$out" | awk '/ requests in / { print $1 }')
    echo "$out" | awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v n="$reqs" -v d="$2" \
        '/^Requests\/sec:/ { printf "%s %.1f %.0f%%\n", $2, t / hz * 1e6 / n, t / hz / d * 100 }'
}
echo "bench: wrk -t1 -c$CONNS -d${DURATION}s per location, best of $ROUNDS rounds"
for ((round = 1; round <= ROUNDS; round++)); do
    for loc in $LOCS; do
        run_wrk "$loc" 1 >/dev/null || die "wrk warm-up on /$loc failed"
        out=$(run_wrk "$loc" "$DURATION")
        read -r rps cpu load <<<"$out"
        [ -n "$cpu" ] || die "wrk on /$loc: no result"
        echo "  round $round  /$loc  $rps req/s, router CPU $cpu us/req ($load busy)"
        if [ -z "${RPS[$loc]:-}" ] || awk -v a="$rps" -v b="${RPS[$loc]}" 'BEGIN { exit !(a > b) }'; then
            RPS[$loc]=$rps
            CPU_US[$loc]=$cpu
            LOAD[$loc]=$load
        fi
    done
done
check_locations
check_error_log
stop_pid "$ROUTER_PID" 20
forget_pid "$ROUTER_PID"

# ---- 2. instructions per request: callgrind ----------------------------------------

echo "bench: router under callgrind, a fresh process per location (so no location's" \
     "JIT state depends on another's); per location: $WARM warm-up requests, then" \
     "$N_SMALL and $N counted"

# cg_dump tag: dumps the counters with that tag and prints the dump's Ir
cg_dump() {
    callgrind_control -d "$1" "$ROUTER_PID" >"$DIR/cg/control.log" 2>&1 \
        || die "callgrind_control -d failed: $(cat "$DIR/cg/control.log")"
    local file="" total="" i
    for ((i = 0; i < 300; i++)); do
        file=$(grep -l -x "desc: Trigger: dump $1" "$DIR"/cg/callgrind.out.* 2>/dev/null || true)
        if [ -n "$file" ]; then
            [ "$(echo "$file" | wc -l)" = 1 ] || die "several callgrind dumps tagged '$1'"
            total=$(awk '/^totals: [0-9]+$/ { print $2 }' "$file")
            [ -n "$total" ] && break
        fi
        sleep 0.1
    done
    [ -n "$total" ] || die "no complete callgrind dump tagged '$1' in $DIR/cg"
    echo "$total"
}
cg_zero() {
    callgrind_control -z "$ROUTER_PID" >"$DIR/cg/control.log" 2>&1 \
        || die "callgrind_control -z failed: $(cat "$DIR/cg/control.log")"
}

declare -A IPR MARGINAL MC_GETS MC_CONNS
for loc in $LOCS; do
    start_nginx router $PIN_ROUTER valgrind --tool=callgrind \
        --callgrind-out-file="$DIR/cg/callgrind.out.%p" --dump-line=no
    ROUTER_PID=$STARTED
    wait_port "$ROUTER" 120 "$ROUTER_PID" "router nginx under valgrind" \
        || die "router nginx under valgrind exited at start: $(tail -5 "$DIR/router/stdout.log")"
    check_locations "$loc"
    curl_batch "$loc" "$WARM"
    cg_zero
    curl_batch "$loc" "$N_SMALL"
    ir_small=$(cg_dump "bench-$loc-$N_SMALL")
    read -r gets0 conns0 < <(mc_stats)
    cg_zero
    curl_batch "$loc" "$N"
    ir=$(cg_dump "bench-$loc-$N")
    read -r gets1 conns1 < <(mc_stats)
    IPR[$loc]=$(awk -v a="$ir" -v n="$N" 'BEGIN { printf "%.0f", a / n }')
    MARGINAL[$loc]=$(awk -v a="$ir" -v b="$ir_small" -v n="$N" -v m="$N_SMALL" \
                     'BEGIN { printf "%.0f", (a - b) / (n - m) }')
    # (the stats connection itself counts once in total_connections)
    MC_GETS[$loc]=$(awk -v a="$gets0" -v b="$gets1" -v n="$N" 'BEGIN { printf "%.3f", (b - a) / n }')
    MC_CONNS[$loc]=$(awk -v a="$conns0" -v b="$conns1" -v n="$N" \
                     'BEGIN { printf "%.3f", (b - a - 1) / n }')
    echo "  /$loc  $ir Ir / $N = ${IPR[$loc]} instr/req (marginal ${MARGINAL[$loc]})"
    check_error_log
    stop_pid "$ROUTER_PID" 60
    forget_pid "$ROUTER_PID"
done

# ---- report ----------------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
within() { awk -v a="$1" -v b="$2" -v f="$3" 'BEGIN { exit !(a <= b * f) }'; }
verdict() { if "$@"; then echo "MET"; else echo "NOT MET"; fi; }

{
    echo "lua-resty-gray bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "$(nginx -v 2>&1), $(valgrind --version), $(nproc) CPUs; router on one CPU, the rest elsewhere"
    echo "req/s: wrk -t1 -c$CONNS -d${DURATION}s, best of $ROUNDS; instr/req: callgrind Ir of the router" \
         "process / $N keepalive requests"
    echo
    printf '%-18s %8s %9s %10s %9s  | %11s %14s\n' location "req/s" "vs plain" "instr/req" \
        "vs plain" "router CPU" "memcached"
    printf '%-18s %8s %9s %10s %9s  | %11s %14s\n' "" "" "" "" "" "us/req" "gets,conns/req"
    for loc in $LOCS; do
        printf '%-18s %8.0f %9s %10s %9s  | %11s %14s\n' "${LABEL[$loc]}" "${RPS[$loc]}" \
            "$(ratio "${RPS[$loc]}" "${RPS[plain]}")" "${IPR[$loc]}" \
            "$(ratio "${IPR[$loc]}" "${IPR[plain]}")" "${CPU_US[$loc]}" \
            "$(printf '%.2f,%.2f' "${MC_GETS[$loc]}" "${MC_CONNS[$loc]}")"
    done
    echo "(router CPU: user+system time of the router process during the wrk run / requests;"
    echo " it includes the kernel work (connect, close) that callgrind does not count)"
    echo
    echo "marginal instr/req ((Ir[$N] - Ir[$N_SMALL]) / $((N - N_SMALL)), no per-connection cost):"
    for loc in $LOCS; do
        printf '  %-18s %s\n' "${LABEL[$loc]}" "${MARGINAL[$loc]}"
    done
    echo
    echo "aims:"
    printf '  cached drop-in within 1.25x of plain (instr/req): %s x -> %s  (bare ngx.exec: %s)\n' \
        "$(ratio "${IPR[dropin]}" "${IPR[plain]}" | tr -d x)" \
        "$(verdict within "${IPR[dropin]}" "${IPR[plain]}" 1.25)" \
        "$(ratio "${IPR[exec-only]}" "${IPR[plain]}")"
    printf '    of which nginx variable reads alone (reads-only): %s; the router'"'"'s own work: %s instr/req\n' \
        "$(ratio "${IPR[reads-only]}" "${IPR[plain]}")" \
        "$((IPR[dropin] - IPR[reads-only]))"
    printf '  uncached drop-in >= 25%% fewer instr/req than seed-style: %s fewer -> %s\n' \
        "$(awk -v a="${IPR[dropin-nocache]}" -v b="${IPR[seed]}" 'BEGIN { printf "%.0f%%", (1 - a / b) * 100 }')" \
        "$(verdict within "${IPR[dropin-nocache]}" "${IPR[seed]}" 0.75)"
} >"$DIR/results.txt"

mkdir -p "$(dirname "$RESULTS")"
cp "$DIR/results.txt" "$RESULTS"
echo
cat "$RESULTS"
echo "(also in build/bench-results.txt)"
ok_exit=1
