# lua-resty-gray
#
#   make            build build/libgray.so and build/gray-admin
#   make test       install missing Debian packages, build, run every check
#   make demo       install, build, start the demo stack (see README)
#   make demo-stop  stop the demo stack (safe to run twice)
#   make microbench C core vs pure Lua, ns/op
#   make bench      instructions per request: the drop-in and the Lua API beside their floors
#   make bench-shm  memcached's load from 8 workers, without and with the shared cache
#   make bench-meta get vs the meta protocol's mg: bytes on the wire, C decode instructions
#   make bench-import  gray-admin import of 1M lines: wall time and max RSS
#   make install    libgray.so, the Lua files, gray-admin and its man page under
#                   PREFIX (and DESTDIR)
#   make deps       as root: the Debian packages to build and run it
#   make deps-rock  as root: those, LuaRocks, and lrucache registered in LuaRocks
#   make rock-check luarocks make into a scratch tree, then nginx runs from it
#   make fuzz       libFuzzer on the C parsers (FUZZ_SECONDS each)

PREFIX      ?= /usr/local
DESTDIR     ?=
LUA_VERSION := 5.1
# luarocks passes these two; the defaults are where LuaJIT and Debian's nginx
# lua module look without any lua_package_path.
INST_LIBDIR ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
INST_LUADIR ?= $(PREFIX)/share/lua/$(LUA_VERSION)
# gray-admin goes here (a rockspec would pass its $(BINDIR))
INST_BINDIR ?= $(PREFIX)/bin
# and its man page here (the rockspecs pass the rock's doc directory)
INST_MANDIR ?= $(PREFIX)/share/man/man1

CC      ?= cc
CFLAGS  ?= -O2 -g
LIBFLAG ?= -shared
GRAY_CFLAGS := -std=c11 -fPIC -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
SANITIZE := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

SRC := csrc/error.c csrc/ip.c csrc/ipset.c csrc/rangelist.c csrc/xff.c csrc/mc.c csrc/hash.c csrc/dist.c \
       csrc/token.c
# libcrypto (OpenSSL): HMAC-SHA256 for signed tokens (csrc/token.c)
GRAY_LIBS := -lcrypto
HDR := csrc/gray.h csrc/internal.h

LUAJIT  ?= luajit
BUSTED  ?= busted
FUZZ_SECONDS ?= 60
REPLAY_ITERATIONS ?= 20000

.PHONY: all test deps deps-rock deps-test spec lint asan rock-check install uninstall \
        microbench fuzz clean

all: build/libgray.so build/gray-admin

build/libgray.so: $(SRC) $(HDR)
	@mkdir -p build
	$(CC) $(CFLAGS) $(GRAY_CFLAGS) $(LIBFLAG) -o $@ $(SRC) $(GRAY_LIBS)

# ---- tests -----------------------------------------------------------------

deps:
	@sh tools/deps.sh build runtime

# as deps, plus LuaRocks, with Debian's lua-resty-lrucache registered in it
deps-rock:
	@sh tools/deps.sh build runtime rock

deps-test:
	@sh tools/deps.sh build test

# Builds on both cores, then the checks that do not time anything (lint,
# the ASan replay, the rock) side by side, then the specs alone: they assert
# on latencies, so nothing else of ours runs beside them.
test: deps-test
	$(MAKE) -j2 all build/fake-mc build/replay-asan
	$(MAKE) -j2 --output-sync=target lint asan rock-check
	$(MAKE) spec

spec: build/libgray.so build/fake-mc build/gray-admin
	$(BUSTED) --lua=$(LUAJIT) spec

# the operators' CLI, on libmemcached (Debian's libmemcached-dev) and the C core
CLI_SRC := $(wildcard csrc/cli/*.c)
build/gray-admin: $(CLI_SRC) csrc/cli/cli.h $(SRC) $(HDR)
	@mkdir -p build
	$(CC) $(CFLAGS) $(GRAY_CFLAGS) -o $@ $(CLI_SRC) $(SRC) -lmemcached $(GRAY_LIBS)

# a scriptable hostile memcached for the deadline and memory specs
build/fake-mc: csrc/test/fake_mc.c
	@mkdir -p build
	$(CC) $(CFLAGS) $(GRAY_CFLAGS) -o $@ csrc/test/fake_mc.c

lint:
	luacheck --std ngx_lua --codes lua spec bench tools

# The C parsers under AddressSanitizer + UndefinedBehaviorSanitizer: seeds,
# every prefix, and seeded mutations through the fuzz target. One level of
# quicksort, then heapsort, so that both of the range set's sorts run.
build/replay-asan: csrc/test/replay.c csrc/test/fuzz_target.c $(SRC) $(HDR)
	@mkdir -p build
	$(CC) -O1 -g $(GRAY_CFLAGS) $(SANITIZE) -DGRAY_SORT_LEVELS=1 -o $@ csrc/test/replay.c \
	    csrc/test/fuzz_target.c $(SRC) $(GRAY_LIBS)

# The replay is deterministic (fixed seeds, a fixed generator): it runs
# again only when the binary or REPLAY_ITERATIONS changes (the stamp).
ASAN_STAMP := build/asan-$(REPLAY_ITERATIONS).ok
asan: $(ASAN_STAMP)
$(ASAN_STAMP): build/replay-asan
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ./build/replay-asan $(REPLAY_ITERATIONS)
	@touch $@

# The rockspec installs offline into a scratch tree (Debian's lua-resty-lrucache
# is registered as provided by tools/deps.sh), then LuaJIT and nginx load the
# modules, libgray.so and the drop-in from that tree alone (tools/rock_check.lua).
ROCK_TREE := $(CURDIR)/build/rock-tree
rock-check:
	@sh tools/deps.sh rock
	@for r in rockspec/*.rockspec; do \
	    luarocks --lua-version $(LUA_VERSION) lint $$r || { echo "rock-check: $$r"; exit 1; }; done
	@rm -rf build/rock-tree
	luarocks --lua-version $(LUA_VERSION) make --tree $(ROCK_TREE) \
	    rockspec/lua-resty-gray-scm-1.rockspec >build/rock-check.log 2>&1 \
	    || { cat build/rock-check.log; exit 1; }
	LUA_PATH='$(ROCK_TREE)/share/lua/5.1/?.lua;$(CURDIR)/spec/?.lua' \
	    LUA_CPATH='$(ROCK_TREE)/lib/lua/5.1/?.so' $(LUAJIT) tools/rock_check.lua $(ROCK_TREE)

# ---- benchmarks and fuzzing -----------------------------------------------

microbench: build/libgray.so
	@sh tools/deps.sh build test
	LUA_PATH='lua/?.lua;bench/?.lua;;' LUA_CPATH='build/?.so;;' $(LUAJIT) bench/micro.lua

# The rows of bench/locations.lua (X-Real-IP from a trusted loopback proxy,
# no $gray_* variables but where a row says so): router instructions/request
# (callgrind, the median of BENCH_PROCESSES fresh nginx processes per row)
# and req/s (wrk) for proxy_pass, the floors (ngx.exec alone, with the
# necessary reads, a pooled memcached get of 1 and 3 keys), the Lua API
# router, the drop-in (cached, uncached), the classic dep.lua script and
# misses from 100,000 clients (bench/bench.lua on the spec harness). Also
# written to build/bench-results.txt, and the chart to build/bench.svg (the
# README shows a copy: cp build/bench.svg bench/bench.svg). Settings:
# BENCH_LOCATIONS, BENCH_PROCESSES, BENCH_REQUESTS, BENCH_WARMUP,
# BENCH_DURATION, BENCH_ROUNDS, BENCH_CONNECTIONS, BENCH_KEEP (bench.lua).
.PHONY: bench
bench:
	@sh tools/deps.sh build bench
	@$(MAKE) --no-print-directory build/libgray.so
	$(if $(BENCH_KEEP),GRAY_KEEP_TMP=1) LUA_PATH='spec/?.lua;bench/?.lua;;' $(LUAJIT) bench/bench.lua

# memcached's load from one 8-worker nginx without and with the shared
# decision cache (shm), in the same run; also build/bench-shm-results.txt
.PHONY: bench-shm
bench-shm:
	@sh tools/deps.sh build bench
	@$(MAKE) --no-print-directory build/libgray.so
	LUA_PATH='spec/?.lua;;' $(LUAJIT) bench/shm_load.lua

# get vs mg (the meta protocol) for 1 and 3 keys and for "has it changed?":
# bytes each way, and the C decoder's instructions per lookup (callgrind)
build/mc-meta-bench: bench/mc_meta.c $(SRC) $(HDR)
	@mkdir -p build
	$(CC) $(CFLAGS) -std=c11 -Wall -Wextra -Werror -o $@ bench/mc_meta.c $(SRC) $(GRAY_LIBS)

.PHONY: bench-meta
bench-meta: build/mc-meta-bench
	@sh tools/deps.sh build bench
	LUA_PATH='spec/?.lua;;' $(LUAJIT) bench/mc_meta_bench.lua build/mc-meta-bench

# one gray-admin import of 1,000,000 entry lines (IPv4, IPv6, uid; mixed
# targets; --ttl on every 10th) into a real memcached -m 1024: wall time and
# max RSS from /usr/bin/time -v; also build/bench-import-results.txt
.PHONY: bench-import
bench-import:
	@sh tools/deps.sh build bench-import
	@$(MAKE) --no-print-directory build/gray-admin
	LUA_PATH='spec/?.lua;;' $(LUAJIT) bench/import.lua

build/fuzz: csrc/test/fuzz_target.c $(SRC) $(HDR)
	@sh tools/deps.sh fuzz
	@mkdir -p build
	clang -O1 -g -std=c11 -fsanitize=fuzzer,address,undefined -o $@ csrc/test/fuzz_target.c $(SRC) $(GRAY_LIBS)

fuzz: build/fuzz
	@mkdir -p build/fuzz-corpus
	./build/fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=2048 build/fuzz-corpus

# ---- demo ------------------------------------------------------------------

# The classic memcached demo on loopback, then gray-admin, an id in a
# cookie, a sticky percentage and the metrics page (tools/demo.lua on the
# spec harness); state in build/demo.
.PHONY: demo demo-stop

demo:
	@sh tools/deps.sh build demo
	@$(MAKE) --no-print-directory build/libgray.so build/gray-admin
	@LUA_PATH='spec/?.lua;;' $(LUAJIT) tools/demo.lua start

demo-stop:
	@LUA_PATH='spec/?.lua;;' $(LUAJIT) tools/demo.lua stop

# ---- install ---------------------------------------------------------------

install: build/libgray.so build/gray-admin
	install -d $(DESTDIR)$(INST_LIBDIR) $(DESTDIR)$(INST_LUADIR)/gray $(DESTDIR)$(INST_BINDIR) \
	    $(DESTDIR)$(INST_MANDIR)
	install -m 0755 build/gray-admin $(DESTDIR)$(INST_BINDIR)/gray-admin
	install -m 0644 csrc/cli/gray-admin.1 $(DESTDIR)$(INST_MANDIR)/gray-admin.1
	install -m 0755 build/libgray.so $(DESTDIR)$(INST_LIBDIR)/libgray.so
	$(if $(wildcard lua/*.lua),install -m 0644 $(wildcard lua/*.lua) $(DESTDIR)$(INST_LUADIR)/)
	install -m 0644 lua/gray/*.lua $(DESTDIR)$(INST_LUADIR)/gray/

uninstall:
	rm -f $(DESTDIR)$(INST_BINDIR)/gray-admin $(DESTDIR)$(INST_MANDIR)/gray-admin.1
	rm -f $(DESTDIR)$(INST_LIBDIR)/libgray.so $(DESTDIR)$(INST_LUADIR)/gray.lua
	rm -rf $(DESTDIR)$(INST_LUADIR)/gray

clean:
	rm -rf build
