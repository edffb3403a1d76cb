# lua-resty-gray
#
#   make            build build/libgray.so, build/gray-admin and its man page
#   make test       install missing Debian packages, build, run every check
#   make demo       install, build, start the demo stack (see README)
#   make demo-stop  stop the demo stack (safe to run twice)
#   make microbench C core vs pure Lua, ns/op
#   make bench      instructions per request: the drop-in and the Lua API beside their floors
#   make bench-shm  memcached's load from 8 workers, without and with the shared cache
#   make bench-meta get vs the meta protocol's mg: bytes on the wire, C decode instructions
#   make bench-import  gray-admin import of 1M lines: wall time and max RSS
#   make bench-image list images: compile time, bytes per entry, map time, 1M ids and ranges
#   make bench-lists the lists in nginx: compile, PSS per node, latency during changes, bytes/s
#   make install    libgray.so, the Lua files, gray-admin and its man page under
#                   PREFIX (and DESTDIR)
#   make deps       as root: the Debian packages to build and run it
#   make deps-rock  as root: those, LuaRocks, and lrucache registered in LuaRocks
#   make rock-check luarocks make into a scratch tree, then nginx runs from it
#   make fuzz       the long ASan replay, then libFuzzer on each C parser in turn
#                   (FUZZ_SECONDS or FUZZ_RUNS each), a table
#   make soak       the router under load while memcached fails (SOAK_SECONDS)

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
       csrc/token.c csrc/idlist.c csrc/image.c csrc/imagejob.c csrc/listdir.c \
       csrc/ramp.c
# libcrypto (OpenSSL): HMAC-SHA256 for signed tokens (csrc/token.c); the
# list images compile in a thread (csrc/imagejob.c)
GRAY_LIBS := -lcrypto -lpthread
# never unmapped (dlclose) while the process lives: a list image's compile
# thread may still run in it when a worker exits and closes its Lua VM,
# which unloads what ffi.load loaded (a worker stopped by a reload mid-compile
# died on SIGSEGV at its exit)
GRAY_SO_LDFLAGS := -Wl,-z,nodelete
HDR := csrc/gray.h csrc/internal.h csrc/image_internal.h

LUAJIT  ?= luajit
BUSTED  ?= busted
FUZZ_SECONDS ?= 60
FUZZ_RUNS ?=
# seeded mutations per fuzz target: make test's replay, and make fuzz's
# longer one (see asan below)
REPLAY_ITERATIONS ?= 20000
REPLAY_ITERATIONS_LONG ?= 200000

.PHONY: all test deps deps-rock deps-test spec lint asan rock-check install uninstall \
        microbench fuzz soak clean

all: build/libgray.so build/gray-admin build/gray-admin.1 build/gray-compile

# one object per source file, compiled side by side under -j, shared by
# libgray.so and gray-admin (GRAY_CFLAGS has -fPIC)
OBJ := $(SRC:csrc/%.c=build/obj/%.o)
build/obj/%.o: csrc/%.c $(HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(GRAY_CFLAGS) -c -o $@ $<

build/libgray.so: $(OBJ)
	$(CC) $(CFLAGS) $(GRAY_CFLAGS) $(LIBFLAG) $(GRAY_SO_LDFLAGS) -o $@ $(OBJ) $(GRAY_LIBS)

# the list images' compile, in a process of its own (imagejob.c starts it
# from beside libgray.so: installed there too); linked with the objects it
# uses alone: no libcrypto to load at each start (1.2 -> 0.4 ms of CPU)
HELPER_OBJ := $(addprefix build/obj/,error.o ip.o ipset.o rangelist.o hash.o idlist.o image.o)
build/gray-compile: build/obj/compile_helper.o $(HELPER_OBJ)
	$(CC) $(CFLAGS) $(GRAY_CFLAGS) -o $@ build/obj/compile_helper.o $(HELPER_OBJ)

# ---- tests -----------------------------------------------------------------

deps:
	@sh tools/deps.sh build runtime

# as deps, plus LuaRocks, with Debian's lua-resty-lrucache registered in it
deps-rock:
	@sh tools/deps.sh build runtime rock

deps-test:
	@sh tools/deps.sh build test

# The guard's A/A run (spec-slow) is 60 s of load by design (issue 14): it
# bounds make test's wall time from below, so it goes first. libgray.so,
# all it needs, is built alone on every core; then one make graph starts
# spec-slow at once (first in TEST_LANES, nothing left to build) and every
# other lane in its shadow as soon as what it needs is built (the other
# specs need gray-admin and fake-mc too; the replay its own ASan build), so
# the specs wait on their servers while the compiler, lint and the replay
# use the CPU. spec-timed (the specs that assert on latencies) and
# spec-slow (until its load starts, the critical path) run at normal
# priority; everything else under nice 10, the compiler of this second
# graph included (CC), so that it yields the CPU to spec-timed's 50 ms
# deadlines and to the A/A run's start (a clean clone's A/A lane took
# 1.2 s from its start to its load beside 12 compilers at nice 0).
TEST_LANES := spec-slow spec-timed spec-other-a spec-other-b spec-other-c spec-other-d spec-unit \
              asan lint rock-check
BUILD_JOBS := $(shell nproc 2>/dev/null || echo 2)
test: deps-test
	$(MAKE) -j$(BUILD_JOBS) build/libgray.so
	$(MAKE) -j$(words $(TEST_LANES)) --output-sync=target $(TEST_LANES) CC='$(NICE) $(CC)'

# The specs in busted processes side by side. spec-unit: the specs that
# start no server. spec-timed: those that assert on latencies (deadlines,
# timeouts, a refusal's time). spec-other-a/-b/-c/-d: the rest (imports,
# generated cases, differential checks: CPU, no tight latency asserted),
# in four lanes of 30-35 s each on an idle machine (busted's wall time per
# file, tools/spec_times.lua). readme_spec waits on its examples
# (refreshes, ramps: about 40 s, little CPU), so its examples are split by
# name over two lanes: spec-other-d runs the recipes whose name starts with
# a to o (busted --filter), then ramp; spec-other-c the others
# (--filter-out of the same pattern: together, every test), beside every
# spec file not listed here (a new one goes there). spec-slow: the guard's
# A/A run, 60 s of load by design (issue 14), in a lane of its own from
# the start: it bounds make test's wall time from below. Each spec takes
# its own free ports.
SPEC_UNIT := cache dist ffi guard hash ip mc rangeset token xff
SPEC_TIMED := deadline memcached gray memory shcache metrics targeting trust halt
SPEC_OTHER_A := lists image outcome vars
SPEC_OTHER_B := admin check_diff cluster harness client dep pinning options admin_doc realip route
SPEC_OTHER_D := ramp
SPEC_SLOW := guard_aa
# a Lua pattern without spaces: busted's launcher splits its arguments again
README_PART := examples%sruns%srecipe:%s[a-o]
SPEC_UNIT_FILES := $(SPEC_UNIT:%=spec/%_spec.lua)
SPEC_TIMED_FILES := $(SPEC_TIMED:%=spec/%_spec.lua)
SPEC_OTHER_A_FILES := $(SPEC_OTHER_A:%=spec/%_spec.lua)
SPEC_OTHER_B_FILES := $(SPEC_OTHER_B:%=spec/%_spec.lua)
SPEC_OTHER_D_FILES := $(SPEC_OTHER_D:%=spec/%_spec.lua)
SPEC_SLOW_FILES := $(SPEC_SLOW:%=spec/%_spec.lua)
SPEC_OTHER_C_FILES := $(filter-out $(SPEC_UNIT_FILES) $(SPEC_TIMED_FILES) $(SPEC_OTHER_A_FILES) \
                        $(SPEC_OTHER_B_FILES) $(SPEC_OTHER_D_FILES) $(SPEC_SLOW_FILES),$(sort $(wildcard spec/*_spec.lua)))
SPEC_SERVERS := build/libgray.so build/fake-mc build/gray-admin
NICE := nice -n 10

.PHONY: spec-unit spec-timed spec-other spec-other-a spec-other-b spec-other-c spec-other-d \
        spec-slow
spec:
	$(MAKE) -j7 --output-sync=target spec-slow spec-timed spec-other-a spec-other-b spec-other-c \
	    spec-other-d spec-unit

spec-unit: build/libgray.so build/gray-admin
	$(NICE) $(BUSTED) --lua=$(LUAJIT) $(SPEC_UNIT_FILES)

spec-timed: $(SPEC_SERVERS)
	$(BUSTED) --lua=$(LUAJIT) $(SPEC_TIMED_FILES)

spec-other: spec-other-a spec-other-b spec-other-c spec-other-d

spec-other-a: $(SPEC_SERVERS)
	$(NICE) $(BUSTED) --lua=$(LUAJIT) $(SPEC_OTHER_A_FILES)

spec-other-b: $(SPEC_SERVERS)
	$(NICE) $(BUSTED) --lua=$(LUAJIT) $(SPEC_OTHER_B_FILES)

# readme_spec's --filter-out in a run of its own: a pattern given to a run
# applies to every file in it, and could skip a matching test elsewhere
spec-other-c: $(SPEC_SERVERS)
	$(NICE) $(BUSTED) --lua=$(LUAJIT) --filter-out='$(README_PART)' spec/readme_spec.lua; r=$$?; \
	    $(NICE) $(BUSTED) --lua=$(LUAJIT) $(filter-out spec/readme_spec.lua,$(SPEC_OTHER_C_FILES)) \
	    && exit $$r

# two busted runs (a --filter applies to every file of its run); the
# second runs whatever the first says, and the lane fails if either does
spec-other-d: $(SPEC_SERVERS)
	$(NICE) $(BUSTED) --lua=$(LUAJIT) --filter='$(README_PART)' spec/readme_spec.lua; r=$$?; \
	    $(NICE) $(BUSTED) --lua=$(LUAJIT) $(SPEC_OTHER_D_FILES) && exit $$r

# libgray.so alone: the A/A run starts no fake-mc and no gray-admin. Not
# niced: see test (its nginx nodes run in their own sessions anyway, and
# the load is paced: about 5 s of CPU in 60)
spec-slow: build/libgray.so
	$(BUSTED) --lua=$(LUAJIT) $(SPEC_SLOW_FILES)

# the operators' CLI, on libmemcached (Debian's libmemcached-dev) and the C core
CLI_SRC := $(wildcard csrc/cli/*.c)
CLI_OBJ := $(CLI_SRC:csrc/%.c=build/obj/%.o)
$(CLI_OBJ): csrc/cli/cli.h
build/gray-admin: $(CLI_OBJ) $(OBJ)
	$(CC) $(CFLAGS) $(GRAY_CFLAGS) -o $@ $(CLI_OBJ) $(OBJ) -lmemcached $(GRAY_LIBS)

# its man page: the hand-written skeleton with the COMMANDS section that
# gray-admin --man prints from its command table (csrc/cli/main.c) in place
# of the skeleton's @COMMANDS@ line
build/gray-admin.1: csrc/cli/gray-admin.1.in build/gray-admin
	./build/gray-admin --man >$@.commands
	sed -e '/^\.\\" @COMMANDS@/{r $@.commands' -e 'd;}' csrc/cli/gray-admin.1.in >$@.tmp
	rm -f $@.commands
	mv $@.tmp $@

# a scriptable hostile memcached for the deadline and memory specs
build/fake-mc: csrc/test/fake_mc.c
	@mkdir -p build
	$(CC) $(CFLAGS) $(GRAY_CFLAGS) -o $@ csrc/test/fake_mc.c

lint:
	$(NICE) luacheck --std ngx_lua --codes lua spec bench tools

# The C parsers under AddressSanitizer + UndefinedBehaviorSanitizer: every
# fuzz target (csrc/test/fuzz_target.c's table, gray-admin's parsers in
# fuzz_cli.c) over its corpus csrc/test/corpus/<target>: each file, every
# prefix, and REPLAY_ITERATIONS (20,000) seeded mutations per target, shared
# by its files (the cost stays put as a corpus grows). This is make test's
# fuzz smoke: gcc only (no clang), deterministic, about 4 s of CPU; make
# fuzz first replays REPLAY_ITERATIONS_LONG (200,000) per target, then runs
# libFuzzer. One level of quicksort, then heapsort, so that both of the
# range set's sorts run.
# csrc/test/ref: main's list compile before compile6 under ref_ names, the
# reference of image_diff.c's differential checks
REF_SRC := csrc/test/ref/image.c csrc/test/ref/idlist.c csrc/test/ref/ipset.c \
           csrc/test/ref/rangelist.c
REF_HDR := csrc/test/ref/rename.h csrc/test/ref/image_internal.h
FUZZ_SRC := csrc/test/fuzz_target.c csrc/test/fuzz_cli.c csrc/test/image_diff.c $(REF_SRC) \
            $(filter-out csrc/cli/main.c,$(CLI_SRC))
FUZZ_HDR := csrc/test/fuzz.h csrc/cli/cli.h $(HDR) $(REF_HDR)
FUZZ_CORPUS := $(wildcard csrc/test/corpus/*/*)
build/replay-asan: csrc/test/replay.c csrc/test/image_files.c $(FUZZ_SRC) $(FUZZ_HDR) $(SRC)
	@mkdir -p build
	$(NICE) $(CC) -O1 -g $(GRAY_CFLAGS) $(SANITIZE) -DGRAY_SORT_LEVELS=1 -DGRAY_RADIX_MIN=8 \
	    -o $@ csrc/test/replay.c \
	    csrc/test/image_files.c $(FUZZ_SRC) $(SRC) -lmemcached $(GRAY_LIBS)

# image_diff.c alone, optimized and at the library's own sort thresholds:
# IMAGE_DIFF_LISTS generated lists of up to IMAGE_DIFF_LINES lines, each
# compiled as ids and as ranges by today's code and by main's before
# compile6 (csrc/test/ref), the images compared byte for byte
IMAGE_DIFF_LISTS ?= 300
IMAGE_DIFF_LINES ?= 200000
build/image-diff: csrc/test/image_diff.c $(REF_SRC) $(REF_HDR) csrc/test/fuzz.h $(SRC) $(HDR)
	@mkdir -p build
	$(CC) $(CFLAGS) $(GRAY_CFLAGS) -DIMAGE_DIFF_MAIN -o $@ csrc/test/image_diff.c $(REF_SRC) \
	    $(SRC) $(GRAY_LIBS)
.PHONY: image-diff
image-diff: build/image-diff
	./build/image-diff $(IMAGE_DIFF_LISTS) $(IMAGE_DIFF_LINES)

# The replay is deterministic (fixed seeds, a fixed generator): it runs
# again only when the binary, the corpus or REPLAY_ITERATIONS changes (the stamp).
ASAN_STAMP := build/asan-$(REPLAY_ITERATIONS).ok
.PHONY: asan-long
asan: $(ASAN_STAMP)
asan-long:
	@$(MAKE) --no-print-directory asan REPLAY_ITERATIONS=$(REPLAY_ITERATIONS_LONG)
$(ASAN_STAMP): build/replay-asan $(FUZZ_CORPUS)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    $(NICE) ./build/replay-asan $(REPLAY_ITERATIONS) csrc/test/corpus
	@touch $@

# The rockspec installs offline into a scratch tree (Debian's lua-resty-lrucache
# is registered as provided by tools/deps.sh), then LuaJIT and nginx load the
# modules, libgray.so and the drop-in from that tree alone (tools/rock_check.lua).
# luarocks runs "make all" here: it goes after ours, never beside it.
ROCK_TREE := $(CURDIR)/build/rock-tree
rock-check: all
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
	LUA_PATH='spec/?.lua;bench/?.lua;;' $(LUAJIT) bench/shm_load.lua

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

# list images (image.c) for 1M ids and 1M ranges: compile time, bytes per
# entry, map time and lookups, beside today's compile of the same text;
# also build/bench-image-results.txt
.PHONY: bench-image
bench-image: build/libgray.so
	LUA_PATH='lua/?.lua;;' LUA_CPATH='build/?.so;;' $(LUAJIT) bench/image_bench.lua

# the lists as node-wide images in real nginx + memcached: compile time, the
# workers' PSS with 1M ids and 1M ranges (1, 4, 8 workers), latency under
# wrk while both change five times, memcached bytes/s while unchanged; also
# build/bench-lists-results.txt
.PHONY: bench-lists
bench-lists: build/libgray.so
	@sh tools/deps.sh build bench
	LUA_PATH='spec/?.lua;lua/?.lua;;' LUA_CPATH='build/?.so;;' $(LUAJIT) bench/lists_load.lua

# The ASan replay with REPLAY_ITERATIONS_LONG mutations per target (gcc),
# then libFuzzer (clang) on each fuzz target in turn, FUZZ_SECONDS each, or
# FUZZ_RUNS executions each when set (make fuzz FUZZ_RUNS=10000000), from its
# seed corpus csrc/test/corpus/<target> (new inputs go to
# $(FUZZ_OUT)/fuzz-corpus, never into the seeds); then a table of executions,
# exec/s, seconds and findings per target (tools/fuzz.lua), also in
# $(FUZZ_OUT)/fuzz-results.txt and .md. FUZZ_TARGETS picks some:
# make fuzz FUZZ_TARGETS="ip dist"; FUZZ_OUT (build) takes the run elsewhere;
# FUZZ_TIMEOUT (10 s) and FUZZ_MAX_LEN (per target) as tools/fuzz.lua says.
FUZZ_TARGETS ?=
FUZZ_OUT ?= build
# csrc/test/fuzz-nocov.txt: code left out of the coverage tracing (the
# harness's references, MD5's rounds), still under the sanitizers.
build/fuzz: csrc/test/fuzz.h csrc/test/fuzz-nocov.txt $(FUZZ_SRC) $(FUZZ_HDR) $(SRC)
	@sh tools/deps.sh build fuzz
	@mkdir -p build
	clang -O1 -g -std=c11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	    -fsanitize-coverage-ignorelist=csrc/test/fuzz-nocov.txt \
	    -DFUZZ_LIBFUZZER -o $@ $(FUZZ_SRC) $(SRC) -lmemcached $(GRAY_LIBS)

fuzz: build/fuzz asan-long
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_RUNS=$(FUZZ_RUNS) FUZZ_TIMEOUT=$(FUZZ_TIMEOUT) \
	    FUZZ_MAX_LEN=$(FUZZ_MAX_LEN) LUA_PATH='spec/?.lua;;' \
	    $(LUAJIT) tools/fuzz.lua build/fuzz csrc/test/corpus $(FUZZ_OUT) $(FUZZ_TARGETS)

# The fault soak (bench/soak.lua): wrk with SOAK_CLIENTS (100,000) distinct
# clients against nginx + memcached for SOAK_SECONDS (240) while memcached is
# killed, restarted, replaced by a trickling then a garbage-answering server
# (build/fake-mc); one table, also build/soak-results.txt
SOAK_SECONDS ?= 240
.PHONY: soak
soak:
	@sh tools/deps.sh build bench
	@$(MAKE) --no-print-directory build/libgray.so build/fake-mc
	SOAK_SECONDS=$(SOAK_SECONDS) LUA_PATH='spec/?.lua;bench/?.lua;;' $(LUAJIT) bench/soak.lua

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

install: build/libgray.so build/gray-admin build/gray-admin.1 build/gray-compile
	install -d $(DESTDIR)$(INST_LIBDIR) $(DESTDIR)$(INST_LUADIR)/gray $(DESTDIR)$(INST_BINDIR) \
	    $(DESTDIR)$(INST_MANDIR)
	install -m 0755 build/gray-admin $(DESTDIR)$(INST_BINDIR)/gray-admin
	install -m 0644 build/gray-admin.1 $(DESTDIR)$(INST_MANDIR)/gray-admin.1
	install -m 0755 build/libgray.so $(DESTDIR)$(INST_LIBDIR)/libgray.so
	install -m 0755 build/gray-compile $(DESTDIR)$(INST_LIBDIR)/gray-compile
	$(if $(wildcard lua/*.lua),install -m 0644 $(wildcard lua/*.lua) $(DESTDIR)$(INST_LUADIR)/)
	install -m 0644 lua/gray/*.lua $(DESTDIR)$(INST_LUADIR)/gray/

uninstall:
	rm -f $(DESTDIR)$(INST_BINDIR)/gray-admin $(DESTDIR)$(INST_MANDIR)/gray-admin.1
	rm -f $(DESTDIR)$(INST_LIBDIR)/libgray.so $(DESTDIR)$(INST_LIBDIR)/gray-compile \
	    $(DESTDIR)$(INST_LUADIR)/gray.lua
	rm -rf $(DESTDIR)$(INST_LUADIR)/gray

clean:
	rm -rf build
