#!/usr/bin/env bash
# demo.sh start|stop - the classic nginx + lua + memcached gray-release demo,
# with lua/gray/dep.lua as the script, on loopback only.
#
#   start  stops a previous demo, starts memcached, two demo backends (one
#          nginx, two server blocks) and the router nginx, then walks through
#          the demo, printing every command and its output
#   stop   stops every demo process by its pid file (safe to run twice)
#
# State, configs and logs: build/demo/. Run through `make demo` /
# `make demo-stop` (they install what is missing and build libgray.so first).
set -u

REPO=$(cd "$(dirname "$0")/.." && pwd -P)
STATE=$REPO/build/demo
FAILED=0

say()  { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
note() { printf '   # %s\n' "$@"; }

# --- processes ----------------------------------------------------------

# alive PID: the process exists and is not a zombie
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    case $(cat "/proc/$1/stat" 2>/dev/null) in
    *") Z "*) return 1 ;;
    esac
    return 0
}

# stop_pidfile NAME PIDFILE COMM SIGNAL: stops the process named in PIDFILE
# if it is still the COMM we started; removes the pid file.
stop_pidfile() {
    local name=$1 file=$2 comm=$3 sig=$4 pid
    [ -f "$file" ] || return 1
    pid=$(head -n 1 "$file" | tr -dc '0-9')
    if [ -n "$pid" ] && alive "$pid" \
       && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]; then
        kill "-$sig" "$pid" 2>/dev/null
        for _ in $(seq 1 100); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            kill -KILL "$pid" 2>/dev/null
            say "demo: $name (pid $pid) did not stop in 10 s; killed it"
        else
            say "demo: stopped $name (pid $pid)"
        fi
    fi
    rm -f "$file"
    return 0
}

do_stop() {
    local any=""
    stop_pidfile "router nginx" "$STATE/router/nginx.pid" nginx QUIT && any=1
    stop_pidfile "backend nginx" "$STATE/backends/nginx.pid" nginx QUIT && any=1
    stop_pidfile "memcached" "$STATE/memcached.pid" memcached TERM && any=1
    [ -n "$any" ] || say "demo: nothing running"
    return 0
}

# --- ports --------------------------------------------------------------

port_busy() {
    timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

TAKEN=""
# pick VAR WANTED WHAT: the first free port from WANTED up, not already
# picked for another part of the demo
pick() {
    local var=$1 want=$2 what=$3 p=$2
    while port_busy "$p" || case " $TAKEN " in *" $p "*) true ;; *) false ;; esac; do
        p=$((p + 1))
    done
    [ "$p" = "$want" ] || say "demo: port $want is taken; $what uses $p instead"
    TAKEN="$TAKEN $p"
    printf -v "$var" '%s' "$p"
}

wait_port() {
    for _ in $(seq 1 100); do
        port_busy "$1" && return 0
        sleep 0.05
    done
    return 1
}

# --- memcached ----------------------------------------------------------

start_memcached() {
    local user=""
    [ "$(id -u)" = 0 ] && user="-u nobody"
    # shellcheck disable=SC2086
    memcached -l 127.0.0.1 -p "$MC_PORT" -U 0 $user -vv \
        </dev/null >>"$STATE/memcached.log" 2>&1 &
    MC_PID=$!
    echo "$MC_PID" >"$STATE/memcached.pid"
    if ! wait_port "$MC_PORT"; then
        say "demo: memcached did not start; see $STATE/memcached.log"
        tail -n 5 "$STATE/memcached.log"
        return 1
    fi
}

# mc TEXT: sends memcached text-protocol lines (\r\n added to each) and
# prints the exchange the way the seed's telnet session shows it
mc() {
    local line
    printf '$ telnet 127.0.0.1 %s      # (sent over bash /dev/tcp: no telnet needed)\n' "$MC_PORT"
    if ! exec 3<>"/dev/tcp/127.0.0.1/$MC_PORT"; then
        FAILED=1
        return 1
    fi
    for line in "$@"; do
        say "$line"
        printf '%s\r\n' "$line" >&3
    done
    while IFS= read -r -t 2 line <&3; do
        line=${line%$'\r'}
        say "$line"
        case $line in
        STORED|NOT_STORED|EXISTS|NOT_FOUND|DELETED|END|ERROR*|CLIENT_ERROR*|SERVER_ERROR*)
            break ;;
        esac
    done
    exec 3>&-
}

# --- nginx --------------------------------------------------------------

module_dir() {
    local d
    for d in /usr/lib/nginx/modules /usr/share/nginx/modules; do
        [ -f "$d/ngx_http_lua_module.so" ] && { echo "$d"; return; }
    done
    say "demo: Debian's nginx lua module (libnginx-mod-http-lua) is not installed" >&2
    return 1
}

# the directives every demo nginx shares; $1 = its prefix directory
nginx_common() {
    local dir=$1
    [ "$(id -u)" = 0 ] && echo "user root root;"
    cat <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log notice;
events { worker_connections 256; }
EOF
}

nginx_temp_paths() {
    local dir=$1
    cat <<EOF
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
EOF
}

write_backends_conf() {
    local dir=$STATE/backends
    mkdir -p "$dir"
    {
        echo "# the two demo backends (the seed's two Flask apps)"
        nginx_common "$dir"
        echo "http {"
        echo "    access_log $dir/access.log;"
        nginx_temp_paths "$dir"
        cat <<EOF
    server {
        listen 127.0.0.1:$STABLE_PORT;
        default_type text/plain;
        location / { return 200 "backend $STABLE_PORT (stable)\n"; }
    }
    server {
        listen 127.0.0.1:$GRAY_PORT;
        default_type text/plain;
        location / { return 200 "backend $GRAY_PORT (gray)\n"; }
    }
}
EOF
    } >"$dir/nginx.conf"
}

write_router_conf() {
    local dir=$STATE/router mods mc_line=""
    mods=$(module_dir) || return 1
    mkdir -p "$dir"
    if [ "$MC_PORT" != 11211 ]; then
        mc_line="            set \$gray_memcached 127.0.0.1:$MC_PORT;"
    fi
    {
        echo "# the gray-release router: the seed's location layout, lua/gray/dep.lua as the script"
        echo "load_module $mods/ndk_http_module.so;"
        echo "load_module $mods/ngx_http_lua_module.so;"
        nginx_common "$dir"
        echo "http {"
        echo "    log_format gray '\$remote_addr xff=\"\$http_x_forwarded_for\" -> \$upstream_addr \$status \"\$request\"';"
        echo "    access_log $dir/access.log gray;"
        nginx_temp_paths "$dir"
        cat <<EOF
    lua_package_path "$REPO/lua/?.lua;;";
    lua_package_cpath "$REPO/build/?.so;;";

    server {
        listen 127.0.0.1:$ROUTER_PORT;

        location / {
            default_type "text/html";
            # only 127.0.0.1 counts as a proxy whose X-Real-IP/X-Forwarded-For
            # is believed (the default is 127.0.0.0/8 and ::1)
            set \$gray_trusted "127.0.0.1";
$mc_line
            content_by_lua_file $REPO/lua/gray/dep.lua;
        }

        location @server {
            proxy_pass http://127.0.0.1:$STABLE_PORT;
        }

        location @server_test {
            proxy_pass http://127.0.0.1:$GRAY_PORT;
        }
    }
}
EOF
    } >"$dir/nginx.conf"
}

start_nginx() {
    local name=$1 dir=$2 port out
    shift 2
    if ! out=$(nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" 2>&1); then
        say "demo: $name nginx did not start:" "$out"
        tail -n 5 "$dir/error.log" 2>/dev/null
        return 1
    fi
    for port in "$@"; do
        wait_port "$port" || { say "demo: $name nginx does not listen on $port"; return 1; }
    done
}

# --- the walk-through ---------------------------------------------------

# show CMD EXPECT: prints and runs a command, prints its output, and checks
# that the output names the expected backend ("stable" or "gray")
show() {
    local cmd=$1 expect=${2:-} out
    say "\$ $cmd"
    out=$(eval "$cmd" 2>&1)
    say "$out"
    if [ -n "$expect" ]; then
        case $out in
        *"($expect)"*) ;;
        *) say "   !!! UNEXPECTED: wanted the $expect backend"; FAILED=1 ;;
        esac
    fi
}

do_start() {
    local url
    do_stop >/dev/null
    rm -rf "$STATE"
    mkdir -p "$STATE"

    pick MC_PORT 11211 memcached
    pick STABLE_PORT 5001 "the stable backend"
    pick GRAY_PORT 5002 "the gray backend"
    pick ROUTER_PORT 8080 "the router"
    cat >"$STATE/ports.env" <<EOF
MC_PORT=$MC_PORT
STABLE_PORT=$STABLE_PORT
GRAY_PORT=$GRAY_PORT
ROUTER_PORT=$ROUTER_PORT
EOF
    url=http://127.0.0.1:$ROUTER_PORT/

    write_backends_conf
    write_router_conf || exit 1
    if ! start_memcached \
       || ! start_nginx backend "$STATE/backends" "$STABLE_PORT" "$GRAY_PORT" \
       || ! start_nginx router "$STATE/router" "$ROUTER_PORT"; then
        do_stop
        exit 1
    fi
    say "demo: memcached 127.0.0.1:$MC_PORT (pid $MC_PID), backends 127.0.0.1:$STABLE_PORT" \
        "(stable) and 127.0.0.1:$GRAY_PORT (gray), router http://127.0.0.1:$ROUTER_PORT/"
    say "demo: router config $STATE/router/nginx.conf"
    trap 'say ""; say "demo: interrupted; the stack keeps running: make demo-stop"; exit 130' INT

    step "0. The two backends, asked directly"
    show "curl -s http://127.0.0.1:$STABLE_PORT/"
    show "curl -s http://127.0.0.1:$GRAY_PORT/"

    step "1. Through the router, address not in memcached -> stable"
    show "curl -s $url" stable

    step "2. Put the client's address (127.0.0.1) in memcached with value 1"
    mc "set 127.0.0.1 0 0 1" "1"
    note "the router caches each answer for 1 s (\$gray_cache_ttl), so wait a moment"
    say "\$ sleep 1.2"
    sleep 1.2
    show "curl -s $url" gray

    step "3. X-Forwarded-For is believed only from trusted proxies"
    note "the classic dep.lua believed X-Real-IP / X-Forwarded-For from anybody: any" \
         "client could claim a gray address. This demo trusts only 127.0.0.1" \
         "(set \$gray_trusted \"127.0.0.1\"; the default is 127.0.0.0/8 and ::1)," \
         "so 127.0.0.2 plays an outside client and 127.0.0.1 your load balancer."
    mc "set 192.168.2.20 0 0 1" "1"
    note "127.0.0.2 claims to be 192.168.2.20: ignored, its key is 127.0.0.2 -> stable"
    show "curl -s --interface 127.0.0.2 -H 'X-Forwarded-For: 192.168.2.20' $url" stable
    note "the trusted proxy 127.0.0.1 forwards for 192.168.2.20: believed -> gray"
    show "curl -s -H 'X-Forwarded-For: 192.168.2.20' $url" gray
    note "and for 10.1.2.3 (not in memcached): stable, although 127.0.0.1 itself is gray"
    show "curl -s -H 'X-Forwarded-For: 10.1.2.3' $url" stable

    step "4. memcached goes away: requests still succeed"
    say "\$ kill $MC_PID      # memcached"
    kill "$MC_PID"
    wait "$MC_PID" 2>/dev/null
    rm -f "$STATE/memcached.pid"
    say "\$ sleep 1.2"
    sleep 1.2
    note "127.0.0.1: memcached fails, the worker's recent answer (kept up to 60 s) is used"
    show "curl -s -w 'HTTP %{http_code}\n' $url" gray
    note "a client the worker has not seen: the stable backend, never an error page"
    show "curl -s -w 'HTTP %{http_code}\n' --interface 127.0.0.3 $url" stable
    note "the router logs the failure (one line per kind of failure per 5 s)"
    show "grep -o 'gray: [^,]*' $STATE/router/error.log | tail -n 2"

    step "5. memcached back (empty: it keeps its data in memory only)"
    start_memcached || exit 1
    say "\$ memcached -l 127.0.0.1 -p $MC_PORT -U 0 ...      # pid $MC_PID"
    say "\$ sleep 1.2"
    sleep 1.2
    note "127.0.0.1 is no longer in memcached -> stable; set it again to go gray"
    show "curl -s $url" stable

    step "Try it yourself (the stack keeps running)"
    cat <<EOF
  curl $url
  bash -c 'exec 3<>/dev/tcp/127.0.0.1/$MC_PORT; printf "set 127.0.0.1 0 0 1\\r\\n1\\r\\n" >&3; head -n1 <&3'
  sleep 1; curl $url
  bash -c 'exec 3<>/dev/tcp/127.0.0.1/$MC_PORT; printf "delete 127.0.0.1\\r\\n" >&3; head -n1 <&3'
  curl --interface 127.0.0.2 -H 'X-Forwarded-For: 192.168.2.20' $url
  (with telnet: telnet 127.0.0.1 $MC_PORT, then type "set 127.0.0.1 0 0 1" and "1")

Configs and logs: $STATE/
  router/nginx.conf  router/error.log  router/access.log (which backend served each request)
  backends/access.log  memcached.log (-vv: every command)  ports.env
Stop everything: make demo-stop
EOF
    if [ "$FAILED" != 0 ]; then
        say ""
        say "demo: some steps did not route as expected (marked !!! above)"
        exit 1
    fi
}

case ${1:-} in
start) do_start ;;
stop)  do_stop ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
