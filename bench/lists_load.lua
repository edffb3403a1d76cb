-- lists_load.lua - `make bench-lists`: the lists as node-wide images (issue
-- 13), with real nginx and memcached:
--   1. compile time of 1M ids and 1M ranges: the C image (what the fetching
--      worker's thread runs) beside the Lua compile the lists had before;
--   2. memory per node: the sum of the workers' PSS (/proc/<pid>/smaps_rollup)
--      with both lists mapped, minus the same before, for 1, 4 and 8 workers;
--   3. latency under wrk (4 workers) while the 1M-id list and the 1M-range
--      list each change five times, beside the same run with no change;
--   4. memcached's traffic while nothing changes (stats bytes_read +
--      bytes_written), per second, for the node.
--
--   LUA_PATH='spec/?.lua;lua/?.lua;;' LUA_CPATH='build/?.so;;' luajit bench/lists_load.lua
--
-- Settings (environment): BENCH_ENTRIES (1000000), BENCH_DURATION (20 s of
-- wrk per run), BENCH_CONNECTIONS (16), BENCH_IDLE (20 s for the bytes),
-- BENCH_WRK_PIN (below).

local harness = require "helpers.harness"
local gray_ffi = require "gray.ffi"

local N = tonumber(os.getenv("BENCH_ENTRIES") or "1000000")
local DURATION = tonumber(os.getenv("BENCH_DURATION") or "20")
local CONNS = tonumber(os.getenv("BENCH_CONNECTIONS") or "16")
local IDLE = tonumber(os.getenv("BENCH_IDLE") or "20")
local PART = 900 * 1000
-- BENCH_ONLY=latency: the latency and bytes runs alone
local ONLY = os.getenv("BENCH_ONLY")
-- BENCH_WARMUP: s of the warm-up run (DURATION). BENCH_LISTS_DIR: lists_dir
-- (default: a directory of each nginx's own on /dev/shm, a tmpfs, as
-- lists_dir's default and the README ask; "$LOGDIR/images" puts it beside
-- the logs, on the disk). BENCH_CACHE_TTL: the router's cache_ttl (3600 s:
-- longer than the bench, so that no run sees the cached entries expire; at
-- 60 s, the 1,007 keys that the warm-up caches in its first ms expire
-- together near the end of the changing run, 3,761 memcached gets against
-- 100, measured as the lists' cost). BENCH_PERF=1: `perf sched record` 6 s
-- of the changing run, and its `perf sched latency` (each task's longest
-- wait for a CPU) printed.
local WARMUP = tonumber(os.getenv("BENCH_WARMUP") or tostring(DURATION))
local LISTS_DIR = os.getenv("BENCH_LISTS_DIR") or "/dev/shm/gray-bench-lists-$PORT"
local PERF = os.getenv("BENCH_PERF")
local CACHE_TTL = os.getenv("BENCH_CACHE_TTL") or "3600"
-- BENCH_WRK_PIN=1: wrk as one single-thread process per CPU (taskset), each
-- with CONNS / ncpu connections; p99 and max are the worst of the processes'.
-- With one wrk of 2 threads the scheduler at times puts both threads on one
-- CPU beside one or two workers. nginx (a daemon: a session, so an autogroup,
-- of its own) and wrk (this process's session) are two scheduling groups;
-- on that CPU the workers ran about 1 % of the time, each wakeup of a wrk
-- thread preempting them after 15-30 us, and their event loops waited
-- 20-224 ms for a CPU: ftrace (sched_switch/wakeup) of 3 runs at 1M, kernel
-- 6.18, 2 vCPUs, all 49 lags >= 20 ms of the changing runs were such waits,
-- and that placement covered 33-43 % of the changing runs against 4-10 % of
-- the runs without changes. Pinned (1 run): 0 lags >= 20 ms, the longest
-- worker wait 12 ms, but wrk's own threads waited up to 66 ms for their CPU
-- (p99 10 ms without changes): a bench of the lists' cost, not of latency.
local WRK_PIN = os.getenv("BENCH_WRK_PIN")
-- BENCH_SPLIT=1: the load generator off the node, as clients and the store
-- are in production: the node (nginx's master and workers, and so the
-- compile helpers they start) pinned to the last CPU, wrk (one thread), the
-- change script and memcached to the others. The two scheduling groups
-- (nginx's session, this one) then never share a CPU, and what the changes
-- add is what the node does for them. Needs 2 CPUs or more.
local SPLIT = os.getenv("BENCH_SPLIT")
local NCPU = tonumber((harness.sh("nproc")))
assert(not SPLIT or NCPU >= 2, "BENCH_SPLIT needs 2 CPUs or more")
assert(not (SPLIT and WRK_PIN), "BENCH_SPLIT and BENCH_WRK_PIN exclude each other")
local NODE_CPU, CLIENT_CPUS = NCPU - 1, "0-" .. (NCPU - 2)
local WRK_CPUS = {}
if WRK_PIN then
    for cpu = 0, NCPU - 1 do
        WRK_CPUS[#WRK_CPUS + 1] = cpu
    end
end
local PERF_DATA = "/dev/shm/gray-bench-lists-perf-" .. tostring(os.time()) .. ".data"

local function now()
    return tonumber((harness.sh("date +%s.%N")))
end

local function v4(i)
    return "10." .. math.floor(i / 65536) % 256 .. "." .. math.floor(i / 256) % 256 .. "."
           .. i % 256
end

-- the lists: every 7th line names v2; gen changes the last line's target
local function id_text(gen)
    local t = {}
    for i = 1, N do
        t[i] = "u" .. i .. (i % 7 == 0 and " v2" or "")
    end
    t[N] = "u" .. N .. (gen % 2 == 0 and "" or " v2")
    return table.concat(t, "\n") .. "\n"
end

local function range_text(gen)
    local t = {}
    for i = 1, N do
        t[i] = v4(i * 2) .. (i % 7 == 0 and " v2" or "")
    end
    t[N] = v4(N * 2) .. (gen % 2 == 0 and "" or " v2")
    return table.concat(t, "\n") .. "\n"
end

local function split(text)
    local parts, pos = {}, 1
    while pos <= #text do
        local cut = text:find("\n", math.min(#text, pos + PART), true) or #text
        parts[#parts + 1] = text:sub(pos, cut)
        pos = cut + 1
    end
    return parts
end

local out_lines = {}
local function say(fmt, ...)
    local line = string.format(fmt, ...)
    out_lines[#out_lines + 1] = line
    io.write(line, "\n")
    io.flush()
end

-- 1. compile time -------------------------------------------------------------

local names = { "1", "v2", "stable" }
local function lua_ids(text)               -- the lists' Lua compile before issue 13
    local ids, by_name = {}, { ["1"] = 1, v2 = 2, stable = 3 }
    for line in text:gmatch("[^\n]+") do
        local id, name, rest = line:match("^%s*([^%s#]%S*)%s*(%S*)%s*(%S*)")
        if id and rest == "" and #id <= 200 then
            ids[id] = by_name[name == "" and "1" or name] or 4
        end
    end
    return ids
end

local scratch = harness.tmpdir()
local function best(f, rounds)
    local b = math.huge
    for _ = 1, rounds do
        collectgarbage()
        local t0 = os.clock()
        f()
        b = math.min(b, os.clock() - t0)
    end
    return b * 1000
end

if not ONLY then
    local ids, ranges = id_text(0), range_text(0)
    local path = scratch .. "/bench.img"
    local ids_c = best(function()
        assert(gray_ffi.image_compile("ids", split(ids), names, 1, path, 4))
    end, 3)
    local ranges_c = best(function()
        assert(gray_ffi.image_compile("ranges", split(ranges), names, 1, path, 4))
    end, 3)
    local ids_lua = best(function() lua_ids(ids) end, 2)
    local ranges_lua = best(function()
        assert(gray_ffi.new_rangeset(ranges, names, 4))
    end, 2)
    say("compile, %d lines (CPU ms, best of 3 / 2):", N)
    say("")
    say("| list | before (Lua, in the worker) | image (C, in a thread) |")
    say("|---|---|---|")
    say("| ids | %.0f ms | %.0f ms |", ids_lua, ids_c)
    say("| ranges | %.0f ms | %.0f ms |", ranges_lua, ranges_c)
    say("")
end

-- the node ---------------------------------------------------------------------

local mc = harness.memcached({ memory_mb = 1024 })

-- writes a list's parts under a new tag; returns its header (set it to
-- publish the list)
local tags = 0
local function stage(key, text)
    tags = tags + 1
    local parts = split(text)
    for i, part in ipairs(parts) do
        mc:set(key .. ":t" .. tags .. ":" .. i, part)
    end
    return "#gray-parts " .. #parts .. " t" .. tags
end

local function publish(key, text)
    mc:set(key, stage(key, text))
end

local CONF = [[
  server {
    listen 127.0.0.1:$PORT;
    location / {
        content_by_lua_block {
            local r = package.loaded.bench_lists
            if not r then
                r = assert(require("gray").new({ memcached = "127.0.0.1:$MC",
                    client_headers = { "X-Real-IP" }, targets = { v2 = "@v2" },
                    ids = "dev=header:X-Device-Id", lists = "dev", ranges_key = "b:ranges",
                    percent_key = false,
                    ramp_key = false, cache_ttl = $CACHE_TTL, lists_dir = "$LOGDIR/images",
                    metrics_shm = false }))
                package.loaded.bench_lists = r
            end
            return r:exec()
        }
    }
    location = /stats {
        content_by_lua_block {
            local r = package.loaded.bench_lists
            local s = r and r:list_stats() or { lists = {}, ranges = 0 }
            ngx.say(ngx.worker.pid(), " ", s.lists.dev or 0, " ", s.ranges)
        }
    }
    location @server      { return 200 "stable\n"; }
    location @server_test { return 200 "gray\n"; }
    location @v2          { return 200 "v2\n"; }
  }
]]

-- The event-loop lag probe: a timer in each worker that asks to run every
-- LAG_PERIOD s and records how late it ran (ngx.now() after update_time,
-- so in ms): the longest time that worker's event loop did not come back,
-- whatever held it (Lua, a syscall, the kernel's scheduler). /lag answers
-- the max over the workers and the count of lags of 5 ms and more, and
-- starts them again.
local LAG_HTTP = [[
  lua_shared_dict bench_lag 1m;
  init_worker_by_lua_block {
    -- the worker's main-thread CPU time (CLOCK_THREAD_CPUTIME_ID): what
    -- its own work took between two ticks, apart from the time the kernel
    -- ran something else (a lag with little CPU is the machine's, not ours)
    local ffi = require "ffi"
    pcall(ffi.cdef, "typedef struct { long sec; long nsec; } bench_ts_t;"
                    .. " int clock_gettime(int clock, bench_ts_t *ts);")
    local ts = ffi.new("bench_ts_t")
    local function cpu_ms()
        ffi.C.clock_gettime(3, ts)
        return tonumber(ts.sec) * 1000 + tonumber(ts.nsec) / 1e6
    end
    -- /proc/thread-self/schedstat: the time this thread waited runnable
    -- for a CPU; the rest of a lag, neither running nor runnable, is time
    -- blocked (a lock such as mmap_lock, a page in). Not always: in 3 of
    -- 49 lags >= 20 ms that ftrace showed runnable (preempted, on the run
    -- queue) on kernel 6.18, run_delay had not grown and this said blocked
    local function run_delay_ms()
        local f = io.open("/proc/thread-self/schedstat", "r")
        if not f then return 0 end
        local line = f:read("*l") or ""
        f:close()
        local wait = line:match("^%d+ (%d+)")
        return (tonumber(wait) or 0) / 1e6
    end
    local dict, PERIOD = ngx.shared.bench_lag, 0.002
    local id = ngx.worker.id()
    local function tick(premature, expect, cpu0, wait0, t0)
        if premature then return end
        ngx.update_time()
        local t, cpu, wait = ngx.now(), cpu_ms(), run_delay_ms()
        local lag, own = (t - expect) * 1000, cpu - cpu0
        local blocked = (t - t0) * 1000 - own - (wait - wait0)
        if lag > (dict:get("max:" .. id) or 0) then dict:set("max:" .. id, lag) end
        if own > (dict:get("cpu:" .. id) or 0) then dict:set("cpu:" .. id, own) end
        if blocked > (dict:get("blk:" .. id) or 0) then dict:set("blk:" .. id, blocked) end
        if lag >= 5 then dict:incr("n5:" .. id, 1, 0) end
        if lag >= 20 then
            dict:incr("n20:" .. id, 1, 0)
            ngx.log(ngx.INFO, string.format("lag %.0f ms (own CPU %.1f ms, blocked %.1f ms) at %.3f",
                                            lag, own, blocked, t))
        end
        ngx.timer.at(PERIOD, tick, t + PERIOD, cpu, wait, t)
    end
    ngx.update_time()
    ngx.timer.at(PERIOD, tick, ngx.now() + PERIOD, cpu_ms(), run_delay_ms(), ngx.now())
  }
]]
local LAG_LOCATION = [[
    location = /lag {
        content_by_lua_block {
            local dict, max, cpu, n5, n20, per = ngx.shared.bench_lag, 0, 0, 0, 0, {}
            local blk = 0
            for _, k in ipairs(dict:get_keys(0)) do
                local v = dict:get(k)
                if k:find("^cpu:") then
                    cpu = math.max(cpu, v)
                elseif k:find("^blk:") then
                    blk = math.max(blk, v)
                elseif k:find("^max:") then
                    max = math.max(max, v)
                    per[#per + 1] = string.format("%.0f", v)
                elseif k:find("^n5:") then n5 = n5 + v
                elseif k:find("^n20:") then n20 = n20 + v end
            end
            if ngx.var.arg_reset then dict:flush_all() end
            ngx.say(string.format("%.1f %d %d %s %.1f %.1f", max, n5, n20, table.concat(per, "/"),
                                  cpu, blk))
        }
    }
    location = /stats {]]
CONF = CONF:gsub("    location = /stats {", function() return LAG_LOCATION end, 1)
CONF = CONF:gsub("%$CACHE_TTL", function() return CACHE_TTL end)
CONF = CONF:gsub("%$LOGDIR/images", function() return LISTS_DIR end)

-- an nginx's lists_dir, and its removal (on /dev/shm, nginx's own)
local function lists_dir(nginx)
    return (LISTS_DIR:gsub("%$LOGDIR", nginx.dir):gsub("%$PORT", tostring(nginx.port)))
end
local function stop(nginx)
    nginx:stop()
    local dir = lists_dir(nginx)
    if dir:find("^/dev/shm/gray%-bench%-lists%-%d+$") then
        harness.sh("rm -rf " .. dir)
    end
end

local function lag(nginx, reset)
    local body = nginx:get("/lag" .. (reset and "?reset=1" or ""),
                           { headers = { Connection = "close" } }).body
    local max, n5, n20, per, cpu, blk = body:match("([%d.]+) (%d+) (%d+) (%S*) ([%d.]+) ([%d.-]+)")
    return { max = tonumber(max), n5 = tonumber(n5), n20 = tonumber(n20), per = per,
             cpu = tonumber(cpu), blocked = tonumber(blk) }
end

local function workers_of(nginx)
    local pids = {}
    for pid in harness.sh("ps -o pid= --ppid " .. nginx:pid()):gmatch("%d+") do
        pids[#pids + 1] = tonumber(pid)
    end
    return pids
end

local function pss_kb(pids)
    local sum = 0
    for _, pid in ipairs(pids) do
        local text = harness.read_file("/proc/" .. pid .. "/smaps_rollup") or ""
        sum = sum + (tonumber(text:match("\nPss:%s+(%d+)")) or 0)
    end
    return sum
end

-- every worker has answered and maps lists of want ids and ranges
local function all_mapped(nginx, nworkers, want_ids, want_ranges, seconds)
    local deadline = now() + seconds
    while now() < deadline do
        local ok = {}
        for _ = 1, nworkers * 8 do
            nginx:get("/", { headers = { Connection = "close", ["X-Real-IP"] = "192.0.2.1" } })
            local body = nginx:get("/stats", { headers = { Connection = "close" } }).body
            local pid, ids, ranges = body:match("(%d+) (%d+) (%d+)")
            if pid and tonumber(ids) == want_ids and tonumber(ranges) == want_ranges then
                ok[pid] = true
            end
        end
        local n = 0
        for _ in pairs(ok) do
            n = n + 1
        end
        if n >= nworkers then
            return true
        end
        harness.sleep(0.2)
    end
    error("not every worker mapped the lists within " .. seconds .. " s")
end

local function stats(m)
    local out = {}
    for name, v in m:cmd("stats\r\n"):gmatch("STAT (%S+) (%S+)") do
        out[name] = tonumber(v)
    end
    return out
end

-- 2. memory --------------------------------------------------------------------

say("memory per node, %d ids and %d ranges mapped (sum of the workers' PSS, after minus"
    .. " before the lists):", N, N)
say("")
say("| workers | before | after | the lists | image files (page cache, once per node) |")
say("|---|---|---|---|---|")
for _, w in ipairs(ONLY and {} or { 1, 4, 8 }) do
    -- before: the same router, its list keys not in memcached
    mc:cmd("delete gray:list:dev\r\n")
    mc:cmd("delete b:ranges\r\n")
    local nginx = harness.nginx({ servers = CONF, memcached_port = mc.port, workers = w,
                                  log_level = "warn" })
    all_mapped(nginx, w, 0, 0, 20)
    harness.sleep(1)
    local before = pss_kb(workers_of(nginx))
    publish("gray:list:dev", id_text(0))
    publish("b:ranges", range_text(0))
    all_mapped(nginx, w, N, N, 60)
    harness.sleep(1)
    local after = pss_kb(workers_of(nginx))
    -- a worker's PSS counts the image pages it has touched, not the rest
    -- of the files: their bytes are the node's too
    local files = 0
    for size in harness.sh("find " .. lists_dir(nginx) .. " -name '*.img' -printf '%s\\n'")
                        :gmatch("%d+") do
        files = files + tonumber(size)
    end
    say("| %d | %.1f MB | %.1f MB | %.1f MB | %.1f MB |", w, before / 1024, after / 1024,
        (after - before) / 1024, files / 1048576)
    stop(nginx)
end
say("")

-- 3. latency under load, 4. bytes while unchanged -------------------------------

publish("gray:list:dev", id_text(0))
publish("b:ranges", range_text(0))
local nginx = harness.nginx({ servers = CONF, memcached_port = mc.port, workers = 4,
                              log_level = "info",
                              http = LAG_HTTP })
all_mapped(nginx, 4, N, N, 60)
if SPLIT then
    -- every thread of the node's processes, and of memcached (the store)
    for _, pid in ipairs(workers_of(nginx)) do
        harness.sh("taskset -a -p -c " .. NODE_CPU .. " " .. pid .. " >/dev/null")
    end
    harness.sh("taskset -a -p -c " .. NODE_CPU .. " " .. nginx:pid() .. " >/dev/null")
    harness.sh("taskset -a -p -c " .. CLIENT_CPUS .. " " .. mc.pid .. " >/dev/null")
end
local script = scratch .. "/mix.lua"
local f = assert(io.open(script, "wb"))
f:write([[
local n = 0
function request()
    n = n + 1
    return wrk.format(nil, "/", { ["X-Device-Id"] = "u" .. (n % 1000 + 1),
                                  ["X-Real-IP"] = "10.0." .. (n % 7) .. ".2" })
end
]])
f:close()

-- CPU seconds (user + system, every thread) of the processes pids
local function cpu_s(pids)
    local sum = 0
    for _, pid in ipairs(pids) do
        local stat = harness.read_file("/proc/" .. pid .. "/stat") or ""
        local fields = {}
        for field in stat:gsub("^.*%) ", ""):gmatch("%S+") do
            fields[#fields + 1] = field
        end
        sum = sum + (tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0)
    end
    return sum / 100            -- USER_HZ
end

-- the summed CPU and run_delay (ms, schedstat) of every thread of pids
local function sched_ms(pids)
    local run, wait = 0, 0
    for _, pid in ipairs(pids) do
        for line in harness.sh("cat /proc/" .. pid .. "/task/*/schedstat 2>/dev/null")
                            :gmatch("[^\n]+") do
            local a, b = line:match("^(%d+) (%d+)")
            run, wait = run + (tonumber(a) or 0) / 1e6, wait + (tonumber(b) or 0) / 1e6
        end
    end
    return run, wait
end

-- /proc/stat's cpu line: steal and softirq, in ms
local function proc_stat()
    local line = harness.read_file("/proc/stat"):match("^cpu +([^\n]+)")
    local t = {}
    for v in line:gmatch("%d+") do
        t[#t + 1] = tonumber(v) * 10
    end
    return { softirq = t[7], steal = t[8], idle = t[4] }
end

local softirqds = {}
for pid in harness.sh("pgrep ksoftirqd"):gmatch("%d+") do
    softirqds[#softirqds + 1] = tonumber(pid)
end

local function wrk_run(changes, seconds)
    seconds = seconds or DURATION
    -- BENCH_WRK_PIN=1: one wrk process (1 thread, half the connections)
    -- pinned to each CPU, so that the scheduler never puts both of wrk's
    -- threads on one CPU beside a worker (see WRK_PIN above)
    local outs = {}
    for i = 1, WRK_PIN and #WRK_CPUS or 1 do
        outs[i] = scratch .. "/wrk.out." .. i
        os.remove(outs[i])
    end
    lag(nginx, true)
    local workers = workers_of(nginx)
    local cpu0, mc0 = cpu_s(workers), cpu_s({ mc.pid })
    local wrun0, wwait0 = sched_ms(workers)
    local mrun0, mwait0 = sched_ms({ mc.pid })
    local st0 = proc_stat()
    local ms0 = stats(mc)
    local wrk_pids = {}
    for i, out in ipairs(outs) do
        local cmd = "wrk -t2 -c" .. CONNS
        if SPLIT then
            cmd = "taskset -c " .. CLIENT_CPUS .. " wrk -t" .. (NCPU - 1) .. " -c" .. CONNS
        elseif WRK_PIN then
            cmd = "taskset -c " .. WRK_CPUS[i] .. " wrk -t1 -c" .. math.floor(CONNS / #outs)
        end
        wrk_pids[i] = tonumber((harness.sh(cmd .. " -d" .. seconds .. "s --latency -s " .. script
                                           .. " http://127.0.0.1:" .. nginx.port .. "/ >" .. out
                                           .. " 2>&1 & echo $!")):match("%d+"))
    end
    local krun0, kwait0 = sched_ms(wrk_pids)
    local srun0, swait0 = sched_ms(softirqds)
    local t0 = now()
    if PERF and changes then
        harness.sh("perf sched record -a -o " .. PERF_DATA .. " -- sleep 6"
                   .. " >/dev/null 2>&1 & echo")
    end
    if changes then
        -- only the headers are set during the run, by a shell script started
        -- beside wrk: the parts are staged before it, so that this process's
        -- own work does not load the node
        local step = (DURATION - 2) / 10
        local sh = { "sleep 1" }
        local function set(key, header)
            sh[#sh + 1] = "exec 3<>/dev/tcp/127.0.0.1/" .. mc.port .. "; printf 'set " .. key
                          .. " 0 0 " .. #header .. "\\r\\n" .. header .. "\\r\\n' >&3;"
                          .. " read -t 2 line <&3; exec 3<&-"
            sh[#sh + 1] = "sleep " .. step
        end
        for i = 1, 5 do
            set("gray:list:dev", changes.ids[i])
            set("b:ranges", changes.ranges[i])
        end
        local script_path = scratch .. "/changes.sh"
        local fh = assert(io.open(script_path, "wb"))
        fh:write(table.concat(sh, "\n"), "\n")
        fh:close()
        harness.sh((SPLIT and "taskset -c " .. CLIENT_CPUS .. " " or "") .. "bash " .. script_path
                   .. " >/dev/null 2>&1 & echo")
    end
    -- wrk's own threads, read just before it ends
    while now() < t0 + seconds - 1.5 do
        harness.sleep(1)
    end
    -- wrk's connections per worker (ss), most first: nginx hands the 16
    -- connections out unevenly, differently in each run, and a worker that
    -- waits for a CPU delays all of its connections' requests
    local held = {}
    for pid in harness.sh("ss -tnpH state established '( sport = :" .. nginx.port .. " )'"
                          .. " 2>/dev/null"):gmatch("pid=(%d+)") do
        held[pid] = (held[pid] or 0) + 1
    end
    local spread = {}
    for _, pid in ipairs(workers) do
        spread[#spread + 1] = held[tostring(pid)] or 0
    end
    table.sort(spread, function(a, b) return a > b end)
    local krun1, kwait1 = sched_ms(wrk_pids)
    local srun1, swait1 = sched_ms(softirqds)
    local wrun1, wwait1 = sched_ms(workers)
    local mrun1, mwait1 = sched_ms({ mc.pid })
    local st1 = proc_stat()
    local ms1 = stats(mc)
    local sched = { gets = ms1.cmd_get - ms0.cmd_get, conns = ms1.total_connections
                    - ms0.total_connections, wrk_cpu = krun1 - krun0, wrk_wait = kwait1 - kwait0,
                    w_cpu = wrun1 - wrun0, w_wait = wwait1 - wwait0,
                    mc_cpu = mrun1 - mrun0, mc_wait = mwait1 - mwait0,
                    si_cpu = srun1 - srun0, si_wait = swait1 - swait0,
                    steal = st1.steal - st0.steal, softirq = st1.softirq - st0.softirq,
                    idle = st1.idle - st0.idle, span = (now() - t0) * 1000 }
    local function ms(v, unit)
        return tonumber(v) * ({ us = 0.001, ms = 1, s = 1000 })[unit]
    end
    -- with several wrk processes: requests/s summed, the max of their max
    -- and of their p99 (an upper bound of the p99 of all requests)
    local p99, max, rps = 0, 0, 0
    for _, out in ipairs(outs) do
        while not (harness.read_file(out) or ""):find("Requests/sec", 1, true) do
            assert(now() < t0 + seconds + 30, "wrk did not finish")
            harness.sleep(1)
        end
        local text = harness.read_file(out)
        assert(not text:find("Non%-2xx"), text)
        max = math.max(max, ms(text:match("Latency%s+%S+%s+%S+%s+([%d.]+)(%a+)")))
        p99 = math.max(p99, ms(text:match("99%%%s+([%d.]+)(%a+)")))
        rps = rps + tonumber(text:match("Requests/sec:%s*([%d.]+)"))
    end
    return { p99 = p99, max = max, rps = rps, lag = lag(nginx, true), spread = spread,
             cpu = cpu_s(workers) - cpu0, mc_cpu = cpu_s({ mc.pid }) - mc0, sched = sched }
end

local changes = { ids = {}, ranges = {} }
for i = 1, 5 do
    changes.ids[i] = stage("gray:list:dev", id_text(i))
    changes.ranges[i] = stage("b:ranges", range_text(i))
end
wrk_run(false, WARMUP)          -- warm up: the caches, the traces
local quiet = wrk_run(false)
local busy = wrk_run(changes)
-- the last change reached every worker
all_mapped(nginx, 4, N, N, 60)
say("latency, 4 workers, wrk -c%d%s %d s (a listed id and an address per request; cache_ttl %s,"
    .. " lists_dir %s):", CONNS, WRK_PIN and " (one 1-thread wrk pinned to each CPU)"
    or SPLIT and " (BENCH_SPLIT: the node on CPU " .. NODE_CPU .. ", wrk and memcached on "
                 .. CLIENT_CPUS .. ")" or "",
    DURATION, CACHE_TTL, LISTS_DIR)
say("")
say("| run | req/s | p99 | max | event-loop lag, max (per worker) | lags >= 5 / >= 20 ms"
    .. " | longest own CPU between two ticks | longest blocked between two ticks |")
say("|---|---|---|---|---|---|---|---|")
local label = N % 1000000 == 0 and math.floor(N / 1000000) .. "M" or tostring(N)
for _, r in ipairs({ { "no change", quiet },
                     { label .. " ids and " .. label .. " ranges, 5 changes each", busy } }) do
    local v = r[2]
    say("| %s | %.0f | %.2f ms | %.2f ms | %.1f ms (%s) | %d / %d | %.1f ms | %.1f ms |", r[1],
        v.rps, v.p99, v.max, v.lag.max, v.lag.per, v.lag.n5, v.lag.n20, v.lag.cpu, v.lag.blocked)
end
say("| added | | %+.2f ms | %+.2f ms | %+.1f ms | | %+.1f ms | %+.1f ms |", busy.p99 - quiet.p99,
    busy.max - quiet.max, busy.lag.max - quiet.lag.max, busy.lag.cpu - quiet.lag.cpu,
    busy.lag.blocked - quiet.lag.blocked)
say("")
say("wrk's connections per worker (ss, most first): %s without changes, %s with",
    table.concat(quiet.spread, "/"), table.concat(busy.spread, "/"))
say("")
for _, r in ipairs({ { "no change", quiet }, { "changes", busy } }) do
    local v = r[2].sched
    say("%s, ms of CPU and of wait for a CPU (schedstat) over %.0f ms: memcached gets %d,"
        .. " connections %d; wrk CPU %.0f,"
        .. " wait %.0f; workers CPU %.0f, wait %.0f;"
        .. " memcached CPU %.0f, wait %.0f; ksoftirqd CPU %.0f, wait %.0f; node steal %.0f,"
        .. " softirq %.0f, idle %.0f", r[1],
        v.span, v.gets, v.conns, v.wrk_cpu, v.wrk_wait, v.w_cpu, v.w_wait, v.mc_cpu, v.mc_wait,
        v.si_cpu, v.si_wait, v.steal, v.softirq, v.idle)
end
say("")
if PERF then
    say("%s", (harness.sh("perf sched latency -i " .. PERF_DATA .. " --sort max 2>/dev/null"
                         .. " | head -30; rm -f " .. PERF_DATA)))
end
say("CPU during the runs (s): the workers (their threads too) %.1f without changes, %.1f with;"
    .. " memcached %.2f, %.2f; per request: %.0f us, %.0f us", quiet.cpu, busy.cpu, quiet.mc_cpu,
    busy.mc_cpu, quiet.cpu / (quiet.rps * DURATION) * 1e6, busy.cpu / (busy.rps * DURATION) * 1e6)
say("")

-- each change's steps, from the fetching worker's log (info)
local steps = { fetch = 0, start = 0, compile = 0, thread = 0, map = 0, n = 0, bytes = 0 }
for fetch, bytes, start, comp, thread, map in nginx:error_log():gmatch(
        "fetched in (%d+) ms %(%d+ parts, (%d+) bytes%), job started in ([%d.]+) ms, compiled"
        .. " in (%d+) ms %(%a+: [%d.]+ ms, ([%d.]+) ms CPU%), mapped in ([%d.]+) ms") do
    steps.n = steps.n + 1
    steps.fetch = math.max(steps.fetch, tonumber(fetch))
    steps.bytes = math.max(steps.bytes, tonumber(bytes))
    steps.start = math.max(steps.start, tonumber(start))
    steps.compile = math.max(steps.compile, tonumber(comp))
    steps.thread = math.max(steps.thread, tonumber(thread))
    steps.map = math.max(steps.map, tonumber(map))
end
say("a change's steps, the longest of %d (the fetching worker's log): fetch %d ms (%.1f MB,"
    .. " yielding between reads), the job's start %.1f ms and the map %.1f ms (on the event"
    .. " loop), the compile %d ms (%d ms of the helper's CPU)", steps.n, steps.fetch,
    steps.bytes / 1e6, steps.start, steps.map, steps.compile, steps.thread)
say("")

harness.sleep(2)
local reply = mc:cmd("stats\r\n")
local s0, t0 = stats(mc), now()
harness.sleep(IDLE)
local s1, t1 = stats(mc), now()
-- less the first stats command and its reply (counted after the snapshot)
local bytes = (s1.bytes_read - s0.bytes_read) + (s1.bytes_written - s0.bytes_written)
              - #"stats\r\n" - #reply
say("memcached traffic while unchanged (4 workers, refresh_interval 2 s, both lists):"
    .. " %.0f bytes/s for the node", bytes / (t1 - t0))
say("")
assert(#harness.bad_log_lines(nginx:error_log()) == 0, nginx:error_log():sub(-3000))
stop(nginx)
mc:destroy()

local out = io.open("build/bench-lists-results.txt", "wb")
if out then
    out:write(table.concat(out_lines, "\n"), "\n")
    out:close()
end
