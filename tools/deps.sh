#!/bin/sh
# deps.sh GROUP... - installs the Debian 12 packages a make target needs,
# only those missing. As root it runs apt-get; otherwise it prints the line
# to run and fails.
set -eu

pkgs_for() {
    case "$1" in
    build) echo "gcc make libc6-dev" ;;
    test)  echo "luajit2 lua-busted lua-check luarocks nginx libnginx-mod-http-lua
                 lua-resty-core lua-resty-lrucache memcached libmemcached-dev curl" ;;
    demo)  echo "nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache
                 memcached curl" ;;
    bench) echo "luajit2 nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache
                 memcached wrk valgrind" ;;
    fuzz)  echo "clang libclang-rt-14-dev" ;;
    *) echo "deps.sh: unknown group '$1'" >&2; exit 2 ;;
    esac
}

missing=""
for group in "$@"; do
    for p in $(pkgs_for "$group"); do
        case " $missing " in *" $p "*) continue ;; esac
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing="$missing $p"
        fi
    done
done

[ -z "$missing" ] && exit 0

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
