#!/bin/bash
# bench.sh - `make bench`: what a request costs the router nginx, for the
# drop-in beside a plain proxy_pass, reference rows and a seed-style dep.lua.
# Scenario (the seed's): the client's address in X-Real-IP, sent from a
# trusted loopback proxy (the bench client on 127.0.0.1); memcached says "1"
# for that address; the decision is cached (cache_ttl 1 s).
#
#   plain           proxy_pass to the backend (the 1.00x reference)
#   exec-only       content_by_lua_block { ngx.exec("@server") } (floor)
#   reads-only      $remote_addr and $http_x_real_ip, then ngx.exec (floor
#                   with the reads the decision needs; bench/reads_floor.lua)
#   api-router      gray.new({ client_headers = { "X-Real-IP" } }) once per
#                   worker, router:exec() (bench/api_router.lua). The API
#                   rows cache hourly (and refresh their lists hourly): their
#                   differences measure per-request work, which a once-a-
#                   second expiry billed to a slowed batch would blur
#   reads-ids       reads-only plus User-Agent and Accept (floor of api-ids)
#   api-ids         the Lua API router with two identities (User-Agent and
#                   Accept headers), their entries cached: what each adds
#   api-nocache     the Lua API router with cache_ttl 0: one key per request
#   api-nocache-ids the same with the two identities: three keys per
#                   request, asked in one multi-get (bench/api_routers.lua)
#   api-metrics     api-router with lua_shared_dict gray_metrics declared:
#                   what counting costs
#   dropin          lua/gray/dep.lua, no $gray_* variable anywhere
#   dropin-nocache  lua/gray/dep.lua with set $gray_cache_ttl 0
#   seed            bench/seed_dep.lua: a new memcached connection per request
#   dropin-set      the drop-in with set $gray_cache_ttl 1s (the default: the
#                   cost of a variable read where it is set)
#   dropin-beside-set  the plain drop-in, while another location sets
#                   $gray_cache_ttl: nginx's rewrite module warns "using
#                   uninitialized" on each read here (error_log at warn; the
#                   only warning the bench lets pass)
#   dropin-run      the drop-in given the same setting as run()'s settings
#                   (content_by_lua_block): no variable defined
#   dropin-beside-run  the plain drop-in, while another location gives
#                   run() its settings
#
# Every location gets its own router nginx.conf (that location, @server and
# @server_test; the beside-* rows add the other location), so no $gray_*
# variable is defined where the drop-in runs but in the rows above that say so.
# Every location answers the same URI, /r, so that no row pays more than
# another for parsing and matching a longer one.
# Every location proxies to the same tiny backend nginx through the same
# keepalive upstream. memcached is the bench's own, on 127.0.0.1:11211 (the
# drop-in's default address).
#
#   instr/req  BENCH_PROCESSES fresh router processes per location, each
#              under callgrind: warm-up requests, counters zeroed, exactly
#              BENCH_REQUESTS requests on one keepalive connection (curl),
#              dumped; Ir / requests (user space of the router process only:
#              not the kernel, memcached or the backend). Median, range and
#              every process's value.
#   req/s      wrk against one router process per location, best of
#              BENCH_ROUNDS rounds (the locations take turns).
#
# Every location is checked on every process (status, body, which named
# location answered, for the gray address and another), every measured batch
# is checked (all answers right, one connection), and the router's error log
# must stay clean. bench/report.lua turns the raw figures into the report,
# also written to build/bench-results.txt.
#
# Settings (environment): BENCH_PROCESSES (5), BENCH_REQUESTS (2000),
# BENCH_WARMUP (500), BENCH_DURATION (3 s), BENCH_ROUNDS (3),
# BENCH_CONNECTIONS (16), BENCH_LOCATIONS (all; e.g. "plain reads-only
# dropin" to chase one row), BENCH_KEEP=1 keeps the scratch directory and
# the callgrind dumps.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PROCS=${BENCH_PROCESSES:-5}
N=${BENCH_REQUESTS:-2000}
WARM=${BENCH_WARMUP:-500}
DURATION=${BENCH_DURATION:-3}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-16}
RESULTS=$REPO/build/bench-results.txt
MODS=/usr/lib/nginx/modules
MC=11211
GRAY_IP=192.0.2.10      # memcached says "1" for it
OTHER_IP=10.9.9.9       # not in memcached
BODY="backend ok"

ALL_LOCS="plain exec-only reads-only api-router dropin dropin-nocache seed"
ALL_LOCS="$ALL_LOCS reads-ids api-ids api-nocache api-nocache-ids api-metrics"
ALL_LOCS="$ALL_LOCS dropin-set dropin-beside-set dropin-run dropin-beside-run"
# the rows whose nginx.conf defines or names a $gray_* variable
GRAY_VAR_LOCS=" dropin-nocache dropin-set dropin-beside-set dropin-run dropin-beside-run "
LOCS=${BENCH_LOCATIONS:-$ALL_LOCS}
# X-Gray-Target each location must answer with, for GRAY_IP and OTHER_IP
declare -A WANT=([plain]=plain [exec-only]=stable [reads-only]=stable [api-router]=test
                 [dropin]=test [dropin-nocache]=test [seed]=test [reads-ids]=stable
                 [api-ids]=test [api-nocache]=test [api-nocache-ids]=test [api-metrics]=test
                 [dropin-set]=test [dropin-beside-set]=test [dropin-run]=test
                 [dropin-beside-run]=test)
declare -A WANT_OTHER=([plain]=plain [exec-only]=stable [reads-only]=stable
                       [api-router]=stable [dropin]=stable [dropin-nocache]=stable [seed]=stable
                       [reads-ids]=stable [api-ids]=stable [api-nocache]=stable
                       [api-nocache-ids]=stable [api-metrics]=stable [dropin-set]=stable
                       [dropin-beside-set]=stable [dropin-run]=stable [dropin-beside-run]=stable)

die() { echo "bench: $*" >&2; exit 1; }

[ -r $MODS/ngx_http_lua_module.so ] || die "Debian's nginx lua module is not installed"
[ -r "$REPO/build/libgray.so" ] || die "build/libgray.so is missing (make)"
for tool in nginx memcached wrk curl valgrind callgrind_control luajit; do
    command -v $tool >/dev/null || die "$tool is not installed (sh tools/deps.sh bench)"
done
for loc in $LOCS; do
    [[ " $ALL_LOCS " == *" $loc "* ]] || die "BENCH_LOCATIONS: no location '$loc' ($ALL_LOCS)"
done
[[ " $LOCS " == *" plain "* ]] || die "BENCH_LOCATIONS must include plain (the reference)"
for v in PROCS N WARM DURATION ROUNDS CONNS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_* settings are positive integers ($v=${!v})"
done

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_in_use $MC && die "127.0.0.1:$MC is in use: the bench starts its own memcached there" \
    "(the drop-in's default address). Stop what listens there first (the demo: make demo-stop)."

DIR=$(mktemp -d /tmp/gray-bench.XXXXXX)
RAW=$DIR/raw.tsv
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
forget_pid() { PIDS=$(echo " $PIDS " | sed "s/ $1 / /"); }

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

# The router alone on CPU 0, everything else (wrk, curl, backend, memcached)
# on the others, when there are at least two.
if [ "$(nproc)" -ge 2 ]; then
    PIN_ROUTER="taskset -c 0"
    PIN_OTHER="taskset -c 1-$(($(nproc) - 1))"
else
    PIN_ROUTER=""
    PIN_OTHER=""
fi

# Ports come from below the ephemeral range (the seed-style location opens
# a connection per request, tens of thousands of them).
EPHEMERAL_LOW=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$EPHEMERAL_LOW" -gt 12000 ] || EPHEMERAL_LOW=61000
pick_port() {   # prints a loopback port nothing listens on
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((12000 + RANDOM % (EPHEMERAL_LOW - 12000)))
        port_in_use $p || { echo $p; return; }
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
$PIN_OTHER memcached -l 127.0.0.1 -p $MC -U 0 -t 1 $user >"$DIR/memcached.log" 2>&1 &
PIDS="$PIDS $!"
wait_port $MC 10 $! memcached \
    || die "memcached did not start on 127.0.0.1:$MC: $(cat "$DIR/memcached.log")"
reply=$(mc_cmd "set $GRAY_IP 0 0 1\r\n1\r\n")
case "$reply" in STORED*) ;; *) die "memcached set: $reply" ;; esac

# ---- nginx -------------------------------------------------------------------

common() {     # prefix: main and events blocks, start of http
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
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
EOF
}

write_backend_conf() {  # prefix port
    common "$1"
    cat <<EOF
    server {
        listen 127.0.0.1:$2;
        location / { return 200 "$BODY\n"; }
    }
}
EOF
}

location_body() {   # location name -> its directives
    case $1 in
    plain)          echo 'add_header X-Gray-Target plain always; proxy_pass http://backend;' ;;
    exec-only)      echo 'content_by_lua_block { ngx.exec("@server") }' ;;
    reads-only)     echo "content_by_lua_file $REPO/bench/reads_only.lua;" ;;
    api-router)     echo 'content_by_lua_block {
                (package.loaded.api_router or require("api_router")):exec()
            }' ;;
    dropin)         echo "content_by_lua_file $REPO/lua/gray/dep.lua;" ;;
    dropin-nocache) echo "set \$gray_cache_ttl 0;
            content_by_lua_file $REPO/lua/gray/dep.lua;" ;;
    seed)           echo "content_by_lua_file $REPO/bench/seed_dep.lua;" ;;
    reads-ids)      echo 'content_by_lua_block {
                (package.loaded.reads_floor or require("reads_floor")).run_ids()
            }' ;;
    api-ids|api-nocache|api-nocache-ids) echo "content_by_lua_block {
                (package.loaded.api_routers or require(\"api_routers\"))(\"$1\"):exec()
            }" ;;
    api-metrics)    echo 'content_by_lua_block {
                (package.loaded.api_router or require("api_router")):exec()
            }' ;;
    dropin-set)     echo "set \$gray_cache_ttl 1s;
            content_by_lua_file $REPO/lua/gray/dep.lua;" ;;
    dropin-run)     echo 'content_by_lua_block {
                require("gray.dep").run("$gray_cache_ttl 1s")
            }' ;;
    dropin-beside-set|dropin-beside-run)
                    echo "content_by_lua_file $REPO/lua/gray/dep.lua;" ;;
    *) die "no location $1" ;;
    esac
}

other_location() {  # location name -> another location beside /r, or nothing
    case $1 in
    dropin-beside-set) echo "location = /b {
            set \$gray_cache_ttl 0;
            content_by_lua_file $REPO/lua/gray/dep.lua;
        }" ;;
    dropin-beside-run) echo 'location = /b {
            content_by_lua_block { require("gray.dep").run("$gray_cache_ttl 0") }
        }' ;;
    esac
}

# The router for one location: it, @server and @server_test, each ending in
# the same upstream with the same keepalive and setting X-Gray-Target (so
# the checks can see who answered).
write_router_conf() {   # prefix port location
    common "$1"
    cat <<EOF
    lua_package_path '$REPO/lua/?.lua;$REPO/bench/?.lua;;';
    lua_package_cpath '$REPO/build/?.so;;';
    $([ "$3" = api-metrics ] && echo "lua_shared_dict gray_metrics 1m;")

    upstream backend {
        server 127.0.0.1:$BACKEND;
        keepalive 16;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:$2;
        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location = /r {
            $(location_body "$3")
        }
        $(other_location "$3")
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

# start_nginx kind prefix location wrapper...: writes the configuration on a
# free port and starts nginx; another port if that one was taken meanwhile.
# Sets PORT and STARTED (the pid).
start_nginx() {
    local kind=$1 prefix=$2 loc=$3 attempt
    shift 3
    mkdir -p "$prefix"
    for attempt in 1 2 3 4 5; do
        PORT=$(pick_port)
        "write_${kind}_conf" "$prefix" "$PORT" "$loc" >"$prefix/nginx.conf"
        if [[ "$GRAY_VAR_LOCS" != *" $loc "* ]] && grep -q '\$gray_' "$prefix/nginx.conf"; then
            die "$prefix/nginx.conf defines a \$gray_* variable"
        fi
        "$@" nginx -p "$prefix" -e "$prefix/error.log" -c "$prefix/nginx.conf" \
            >"$prefix/stdout.log" 2>&1 &
        STARTED=$!
        PIDS="$PIDS $STARTED"
        wait_port "$PORT" 120 "$STARTED" "$kind nginx ($prefix)" && return 0
    done
    die "$kind nginx did not start: $(tail -5 "$prefix/error.log" "$prefix/stdout.log")"
}

stop_nginx() {  # pid
    stop_pid "$1" 60
    forget_pid "$1"
}

start_nginx backend "$DIR/backend" - $PIN_OTHER
BACKEND=$PORT

# ---- checks ------------------------------------------------------------------

check_location() {      # port location prefix
    local port=$1 loc=$2 out ip want
    for ip in $GRAY_IP $OTHER_IP; do
        want=${WANT[$loc]}
        [ $ip = $GRAY_IP ] || want=${WANT_OTHER[$loc]}
        out=$(curl -s -m 60 -o "$DIR/body" -w '%{http_code} %header{x-gray-target}' \
              -H "X-Real-IP: $ip" "http://127.0.0.1:$port/r") || true
        [ "$out" = "200 $want" ] && [ "$(cat "$DIR/body")" = "$BODY" ] \
            || die "/$loc with X-Real-IP $ip answered '$out' body '$(head -c 200 "$DIR/body")'," \
                   "expected '200 $want' body '$BODY' (see $3)"
    done
}

check_error_log() {     # prefix location: nothing at warn level or worse
    local bad allowed='^$'
    # what dropin-beside-set measures: nginx's warning on every read
    [ "${2:-}" != dropin-beside-set ] || allowed='using uninitialized "gray_cache_ttl" variable'
    bad=$(grep -E '\[(warn|error|crit|alert|emerg)\]|global variable' "$1/error.log" \
          | grep -v -e "$allowed" | sort | uniq -c | sort -rn || true)
    [ -z "$bad" ] || die "$1/error.log:"$'\n'"$(echo "$bad" | head -20)"
}

# curl_batch port location count: count sequential requests with the gray
# X-Real-IP on one keepalive connection; checks every answer and that curl
# connected once.
curl_batch() {
    local port=$1 loc=$2 count=$3 cfg="$DIR/curl.cfg" out
    awk -v n="$count" -v url="http://127.0.0.1:$port/r" -v ip="$GRAY_IP" 'BEGIN {
        printf "header = \"X-Real-IP: %s\"\n", ip
        for (i = 0; i < n; i++) printf "url = \"%s\"\noutput = \"/dev/null\"\n", url
    }' >"$cfg"
    $PIN_OTHER curl -s -m 900 --config "$cfg" \
        -w '%{http_code} %header{x-gray-target} %{num_connects}\n' >"$DIR/curl.out" \
        || die "curl failed on /$loc"
    out=$(awk '{ n[$1 " " $2]++; c += $3 } END { for (k in n) print n[k], k; print "connects", c }' \
          "$DIR/curl.out" | sort)
    [ "$out" = "$count 200 ${WANT[$loc]}"$'\n'"connects 1" ] \
        || die "/$loc batch of $count: unexpected answers:"$'\n'"$out"
}

# ---- 1. throughput: wrk, one router process per location ----------------------

declare -A WRK_PORT WRK_PID
for loc in $LOCS; do
    start_nginx router "$DIR/wrk/$loc" "$loc" $PIN_ROUTER
    WRK_PORT[$loc]=$PORT
    WRK_PID[$loc]=$STARTED
    check_location "$PORT" "$loc" "$DIR/wrk/$loc"
done
echo "bench: memcached :$MC, backend :$BACKEND, scratch $DIR"
echo "bench: wrk -t1 -c$CONNS -d${DURATION}s per location, best of $ROUNDS rounds"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }   # user + system
# run_wrk location seconds -> "requests/s router-CPU-us/request router-CPU-load"
run_wrk() {
    local pid=${WRK_PID[$1]} out t0 t1 reqs
    t0=$(cpu_ticks "$pid")
    out=$($PIN_OTHER wrk -t1 -c"$CONNS" -d"$2"s -H "X-Real-IP: $GRAY_IP" \
          "http://127.0.0.1:${WRK_PORT[$1]}/r" 2>&1) || die "wrk failed on /$1: $out"
    t1=$(cpu_ticks "$pid")
    if echo "$out" | grep -qE 'Non-2xx|Socket errors'; then
        die "wrk on /$1 saw errors:"$'\n'"$out"
    fi
    reqs=$(echo "$out" | awk '/ requests in / { print $1 }')
    echo "$out" | awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v n="$reqs" -v d="$2" \
        '/^Requests\/sec:/ { printf "%s %.1f %.0f\n", $2, t / hz * 1e6 / n, t / hz / d * 100 }'
}
for ((round = 1; round <= ROUNDS; round++)); do
    for loc in $LOCS; do
        run_wrk "$loc" 1 >/dev/null
        read -r rps cpu load < <(run_wrk "$loc" "$DURATION")
        [ -n "${load:-}" ] || die "wrk on /$loc: no result"
        echo "  round $round  /$loc  $rps req/s, router CPU $cpu us/req ($load% busy)"
        printf 'wrk\t%s\t%s\t%s\t%s\t%s\n' "$loc" "$round" "$rps" "$cpu" "$load" >>"$RAW"
    done
done
for loc in $LOCS; do
    check_location "${WRK_PORT[$loc]}" "$loc" "$DIR/wrk/$loc"
    check_error_log "$DIR/wrk/$loc" "$loc"
    stop_nginx "${WRK_PID[$loc]}"
done

# ---- 2. instructions per request: callgrind, fresh processes -------------------

echo "bench: callgrind, $PROCS fresh router processes per location (the locations" \
     "take turns); each: $WARM warm-up requests, then $N counted"

# cg_dump pid dir tag: dumps the counters with that tag, prints the dump's Ir
cg_dump() {
    callgrind_control -d "$3" "$1" >"$2/control.log" 2>&1 \
        || die "callgrind_control -d failed: $(cat "$2/control.log")"
    local file="" total="" i
    for ((i = 0; i < 300; i++)); do
        file=$(grep -l -x "desc: Trigger: dump $3" "$2"/callgrind.out.* 2>/dev/null || true)
        if [ -n "$file" ]; then
            [ "$(echo "$file" | wc -l)" = 1 ] || die "several callgrind dumps tagged '$3'"
            total=$(awk '/^totals: [0-9]+$/ { print $2 }' "$file")
            [ -n "$total" ] && break
        fi
        sleep 0.1
    done
    [ -n "$total" ] || die "no complete callgrind dump tagged '$3' in $2"
    echo "$total"
}

# What the router runs (lua/ may be edited while the bench runs): a hash
# taken before the process starts and after its measured batch.
code_hash() {
    cat "$REPO"/lua/*.lua "$REPO"/lua/gray/*.lua "$REPO"/bench/*.lua "$REPO/build/libgray.so" \
        2>/dev/null | md5sum | cut -c1-8
}

for ((p = 1; p <= PROCS; p++)); do
    for loc in $LOCS; do
        run="$DIR/cg/$loc.$p"
        code=$(code_hash)
        start_nginx router "$run" "$loc" $PIN_ROUTER valgrind --tool=callgrind \
            --callgrind-out-file="$run/callgrind.out.%p" --dump-line=no \
            --toggle-collect=ngx_http_lua_timer_handler --collect-atstart=yes
        pid=$STARTED
        check_location "$PORT" "$loc" "$run"
        curl_batch "$PORT" "$loc" "$WARM"
        callgrind_control -z "$pid" >"$run/control.log" 2>&1 \
            || die "callgrind_control -z failed: $(cat "$run/control.log")"
        read -r gets0 conns0 < <(mc_stats)
        curl_batch "$PORT" "$loc" "$N"
        ir=$(cg_dump "$pid" "$run" "bench-$loc-$p")
        read -r gets1 conns1 < <(mc_stats)
        [ "$(code_hash)" = "$code" ] || code="$code-changed"
        check_location "$PORT" "$loc" "$run"
        check_error_log "$run" "$loc"
        stop_nginx "$pid"
        # (the stats connection counts once in total_connections)
        printf 'cg\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$loc" "$p" "$ir" "$N" "$((gets1 - gets0))" \
            "$((conns1 - conns0 - 1))" "$code" >>"$RAW"
        echo "  process $p  /$loc  $((ir / N)) instr/req, memcached gets $((gets1 - gets0))," \
             "code $code"
        # BENCH_KEEP keeps the dumps, to compare an outlier with its peers
        # (callgrind_annotate)
        [ -n "${BENCH_KEEP:-}" ] || rm -f "$run"/callgrind.out.*
    done
done

# ---- report ------------------------------------------------------------------------

dirty=""
[ -z "$(git -C "$REPO" status --porcelain -- lua bench 2>/dev/null)" ] \
    || dirty=" (lua/ or bench/ with uncommitted changes)"
{
    echo "lua-resty-gray bench, $(date -u '+%Y-%m-%d %H:%M UTC')," \
         "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$dirty"
    echo "$(nginx -v 2>&1), $(valgrind --version), $(nproc) CPUs; router on one CPU, the rest elsewhere"
    echo "scenario: X-Real-IP $GRAY_IP from a trusted loopback proxy, memcached says \"1\"," \
         "decision cached (cache_ttl 1 s); one nginx.conf per location, no \$gray_* variable" \
         "but dropin-nocache's \$gray_cache_ttl 0 and the dropin-set/beside/run rows"
    echo "instr/req: callgrind Ir of the router process / $N keepalive requests after $WARM" \
         "warm-up, $PROCS fresh processes per location;" \
         "req/s: wrk -t1 -c$CONNS -d${DURATION}s, best of $ROUNDS"
    echo
    luajit "$REPO/bench/report.lua" "$RAW"
} >"$DIR/results.txt" || die "report failed"

mkdir -p "$(dirname "$RESULTS")"
cp "$DIR/results.txt" "$RESULTS"
echo
cat "$RESULTS"
echo "(also in build/bench-results.txt)"
ok_exit=1
