#!/bin/sh
# deps.sh GROUP... - installs the Debian 12 packages a make target needs,
# only those missing. As root it runs apt-get; otherwise it prints the line
# to run and fails. The groups "rock" and "test" also register Debian's
# lua-resty-lrucache with LuaRocks (provide_rocks below).
set -eu

pkgs_for() {
    case "$1" in
    build) echo "gcc make libc6-dev libmemcached-dev libssl-dev" ;;
    runtime) echo "nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache libssl3" ;;
    rock)  echo "luarocks lua-resty-lrucache" ;;
    test)  echo "luajit2 lua-busted lua-check luarocks nginx libnginx-mod-http-lua
                 lua-resty-core lua-resty-lrucache memcached libmemcached-dev libssl-dev curl
                 man-db groff-base bsdextrautils chromium" ;;
    demo)  echo "luajit2 nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache
                 memcached curl" ;;
    bench) echo "luajit2 nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache
                 memcached wrk valgrind curl iproute2" ;;
    bench-import) echo "luajit2 memcached time" ;;
    fuzz)  echo "clang libclang-rt-14-dev luajit2" ;;
    *) echo "deps.sh: unknown group '$1'" >&2; exit 2 ;;
    esac
}

# one dpkg-query for them all (one per package cost make test 0.3 s before
# anything else could start)
wanted=""
for group in "$@"; do
    wanted="$wanted $(pkgs_for "$group")"
done
# shellcheck disable=SC2086
installed=" $(dpkg-query -W -f='${Package} ${Status}\n' $wanted 2>/dev/null \
              | awk '/ install ok installed$/ { printf "%s ", $1 }')"
missing=""
for p in $wanted; do
    case " $missing " in *" $p "*) continue ;; esac
    case "$installed" in *" $p "*) ;; *) missing="$missing $p" ;; esac
done

# LuaRocks does not know about Lua modules installed by dpkg, so a rockspec
# that depends on lua-resty-lrucache would go to the (unreachable) LuaRocks
# registry for it. LuaRocks' documented answer is rocks_provided: rocks the
# system already provides. This writes Debian's version of the package there,
# in LuaRocks' system config file, between two marker lines (rewritten when
# the Debian version changes; delete them to undo).
provide_rocks() {
    dpkg-query -W -f='${Status}' luarocks 2>/dev/null | grep -q 'install ok installed' || return 0
    dpkg-query -W -f='${Status}' lua-resty-lrucache 2>/dev/null | grep -q 'install ok installed' \
        || return 0
    # Debian's 0.13-10 (or 1:0.13+dfsg-2) is upstream 0.13, the rock 0.13-1
    rock_version=$(dpkg-query -W -f='${Version}' lua-resty-lrucache \
                   | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//' -e 's/[+~].*$//')-1
    have=$(cd / && luarocks --lua-version 5.1 config rocks_provided.lua-resty-lrucache 2>/dev/null) \
        || have=""
    [ "$have" = "$rock_version" ] && return 0
    conf=$(cd / && luarocks --lua-version 5.1 config config_files.system.file)
    block="-- BEGIN lua-resty-gray: Debian packages LuaRocks should take as installed
rocks_provided = rocks_provided or {}
rocks_provided[\"lua-resty-lrucache\"] = \"$rock_version\"  -- Debian's lua-resty-lrucache
-- END lua-resty-gray"
    if [ "$(id -u)" != 0 ]; then
        echo "LuaRocks does not know Debian's lua-resty-lrucache; as root add to $conf:" >&2
        echo "$block" | sed 's/^/    /' >&2
        exit 1
    fi
    if [ -f "$conf" ]; then
        sed -i '/^-- BEGIN lua-resty-gray/,/^-- END lua-resty-gray/d' "$conf"
    else
        mkdir -p "$(dirname "$conf")"
    fi
    printf '%s\n' "$block" >> "$conf"
    echo "registered Debian's lua-resty-lrucache as the rock $rock_version in $conf (rocks_provided)"
}

register=""
for group in "$@"; do
    case "$group" in rock|test) register=1 ;; esac
done

if [ -z "$missing" ]; then
    [ -n "$register" ] && provide_rocks
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages; as root run:" >&2
    echo "    apt-get install -y --no-install-recommends$missing" >&2
    exit 1
fi

echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
# Package installs must not start system services (nginx on :80 and the
# like): our targets start their own on free loopback ports.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
fi
cleanup() { [ -n "$made_policy" ] && rm -f "$policy"; return 0; }
trap cleanup EXIT

# a fresh machine has no package lists yet
if ! apt-get install -y --no-install-recommends $missing; then
    apt-get update
    apt-get install -y --no-install-recommends $missing
fi
[ -n "$register" ] && provide_rocks
exit 0
