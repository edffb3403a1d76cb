-- soak.lua - `make soak`: the router under load while its memcached fails.
--
-- One nginx (SOAK_WORKERS workers, the Lua API router: X-Real-IP from the
-- trusted loopback client, cache_ttl 1 s) and one memcached on a fixed
-- loopback port; wrk sends SOAK_CLIENTS distinct client addresses (1 in 100
-- a member: its entry "1" is set) for SOAK_SECONDS in all, split over six
-- phases, the server on the memcached port changing between them:
--
--   normal     the real memcached, entries set
--   killed     nothing listens (memcached stopped)
--   restarted  a new memcached, entries set again
--   trickling  build/fake-mc trickle-line: "VALUE <key> 0 1", then 1 byte
--              every 30 ms, never a reply's end
--   garbage    build/fake-mc garbage: bytes no memcached sends
--   back       a new real memcached, entries set again
--
-- The locations answer "<gray|stable> <client address>", so wrk's response()
-- checks each answer against the member list: a non-member sent to gray, or
-- any non-2xx answer, is wrong; a member sent to stable is expected only
-- while memcached is failing. Per phase: requests, wrong answers, members
-- sent to stable, p50/p99 latency (wrk), the largest worker RSS at the end
-- of the phase, and error.log lines (the library's, "gray: ...", apart from
-- nginx's own). One table; also build/soak-results.txt.
--
--   LUA_PATH='spec/?.lua;bench/?.lua;;' luajit bench/soak.lua
--
-- Settings (environment): SOAK_SECONDS (240), SOAK_CLIENTS (100000),
-- SOAK_WORKERS (2), SOAK_CONNECTIONS (32), SOAK_THREADS (2).

local harness = require "helpers.harness"
local wrk_load = require "wrk_load"

local SECONDS = tonumber(os.getenv("SOAK_SECONDS") or "240")
local CLIENTS = tonumber(os.getenv("SOAK_CLIENTS") or "100000")
local WORKERS = tonumber(os.getenv("SOAK_WORKERS") or "2")
local CONNS = tonumber(os.getenv("SOAK_CONNECTIONS") or "32")
local THREADS = tonumber(os.getenv("SOAK_THREADS") or "2")
local MEMBER_EVERY = 100
local PHASES = { "normal", "killed", "restarted", "trickling", "garbage", "back" }
local PHASE_SECONDS = math.max(1, math.floor(SECONDS / #PHASES))
local fmt = string.format

-- client i: an address in 198.18.0.0/15 (RFC 2544's benchmark range)
local function address(i)
    return fmt("198.%d.%d.%d", 18 + math.floor(i / 65536), math.floor(i / 256) % 256, i % 256)
end

local CONF = wrk_load.server("", " $http_x_real_ip")

-- wrk: each thread walks the clients from its own start; response() sorts
-- every answer; done() prints the phase's counts and latencies on one line
local WRK_SCRIPT = wrk_load.walk(CLIENTS, '"198." .. (18 + math.floor(n / 65536)) .. "."'
                                 .. ' .. math.floor(n / 256) % 256 .. "." .. n % 256') .. [[
local every = ]] .. MEMBER_EVERY .. [[

-- the counters are globals of each thread's state: done() reads them
wrong, non2xx, member_stable, member_gray, stable = 0, 0, 0, 0, 0
local threads = {}
local walk_setup = setup

function setup(thread)
    walk_setup(thread)
    threads[#threads + 1] = thread
end

function response(status, headers, body)
    if status < 200 or status > 299 then
        non2xx = non2xx + 1
        wrong = wrong + 1
        return
    end
    local where, a, b, c = body:match("^(%a+) 198%.(%d+)%.(%d+)%.(%d+)\n$")
    if not where then
        wrong = wrong + 1
        return
    end
    local i = (tonumber(a) - 18) * 65536 + tonumber(b) * 256 + tonumber(c)
    local member = i % every == 0
    if where == "gray" then
        if member then member_gray = member_gray + 1 else wrong = wrong + 1 end
    elseif where == "stable" then
        if member then member_stable = member_stable + 1 else stable = stable + 1 end
    else
        wrong = wrong + 1
    end
end

function done(summary, latency, requests)
    local names = { "wrong", "non2xx", "member_stable", "member_gray", "stable" }
    local t = { 0, 0, 0, 0, 0 }
    for _, thread in ipairs(threads) do
        for k, name in ipairs(names) do
            t[k] = t[k] + (tonumber(thread:get(name)) or 0)
        end
    end
    io.write(string.format("SOAK requests=%d errors=%d wrong=%d non2xx=%d member_stable=%d"
                           .. " member_gray=%d stable=%d p50=%d p99=%d\n", summary.requests,
                           summary.errors.connect + summary.errors.read + summary.errors.write
                           + summary.errors.timeout, t[1], t[2], t[3], t[4], t[5],
                           latency:percentile(50), latency:percentile(99)))
end
]]

local script = wrk_load.script_file("soak_wrk.lua", WRK_SCRIPT)

-- the members' entries, one pipelined file
local function set_members(mc)
    wrk_load.set_members(mc, CLIENTS, MEMBER_EVERY, address)
end

local mc = harness.memcached()
local port = mc.port
set_members(mc)
local fake
local nginx = harness.nginx({ memcached_port = port, workers = WORKERS, log_level = "warn",
                              servers = CONF })

-- the answers are right before any load
for _, i in ipairs({ 0, 100, 1, 99, 101 }) do
    local body = nginx:get("/", { headers = { ["X-Real-IP"] = address(i) } }).body
    local want = (i % MEMBER_EVERY == 0 and "gray " or "stable ") .. address(i) .. "\n"
    assert(body == want, address(i) .. " got " .. body)
end

local function worker_rss_mb()
    local out = harness.sh("ps -o rss= --ppid " .. nginx:pid())
    local max = 0
    for kb in out:gmatch("%d+") do
        max = math.max(max, tonumber(kb))
    end
    return max / 1024
end

local function log_counts()
    local lib, own = 0, 0
    for line in nginx:error_log():gmatch("[^\n]+") do
        if line:find("%[%a+%]") then
            if line:find("gray: ", 1, true) then
                lib = lib + 1
            else
                own = own + 1
            end
        end
    end
    return lib, own
end

local switch = {
    normal = function() end,
    killed = function() mc:stop() end,
    restarted = function()
        mc = harness.memcached({ port = port })
        set_members(mc)
    end,
    trickling = function()
        mc:stop()
        fake = harness.fake_memcached({ mode = "trickle-line", port = port, interval = 30,
                                        bytes = 1, lifetime = 86400 })
    end,
    garbage = function()
        fake:destroy()
        fake = harness.fake_memcached({ mode = "garbage", port = port, lifetime = 86400 })
    end,
    back = function()
        fake:destroy()
        fake = nil
        mc = harness.memcached({ port = port })
        set_members(mc)
    end,
}

local rows = {}
local rss_start = worker_rss_mb()
local lib0, own0 = log_counts()
for _, phase in ipairs(PHASES) do
    switch[phase]()
    local out = harness.sh(fmt("wrk -t%d -c%d -d%ds --timeout 5s -s %s http://127.0.0.1:%d/",
                               THREADS, CONNS, PHASE_SECONDS, script, nginx.port))
    local line = out:match("SOAK [^\n]+")
    assert(line, "wrk: " .. out)
    local r = { phase = phase }
    for k, v in line:gmatch("([%w_]+)=(%d+)") do
        r[k] = tonumber(v)
    end
    r.rss = worker_rss_mb()
    local lib, own = log_counts()
    r.lib, r.own = lib - lib0, own - own0
    lib0, own0 = lib, own
    rows[#rows + 1] = r
    io.stderr:write(fmt("soak: %-9s %s rss %.1f MB\n", phase, line, r.rss))
end

local bad = harness.bad_log_lines(nginx:error_log())
local kinds = {}
for line in nginx:error_log():gmatch("[^\n]+") do
    local level = line:match("%[(%a+)%]")
    if level then
        local what = line:match("gray: ([^,:]+)") or line:match("%] %d+#%d+: %*?%d* ?([^,(]+)")
        local k = level .. ": " .. ((what or "?"):gsub("%d+", "N"):sub(1, 60))
        kinds[k] = (kinds[k] or 0) + 1
    end
end
nginx:stop()
if fake then
    fake:destroy()
end
mc:destroy()

local total = { phase = "all", requests = 0, errors = 0, wrong = 0, non2xx = 0,
                member_stable = 0, member_gray = 0, lib = 0, own = 0 }
for _, r in ipairs(rows) do
    for k in pairs(total) do
        if k ~= "phase" then
            total[k] = total[k] + r[k]
        end
    end
end

local lines = {
    fmt("fault soak: %d s (%d phases of %d s), %d distinct clients (1 in %d a member), wrk -t%d"
        .. " -c%d, %d nginx workers; worker RSS %.1f MB at the start",
        #PHASES * PHASE_SECONDS, #PHASES, PHASE_SECONDS, CLIENTS, MEMBER_EVERY, THREADS, CONNS,
        WORKERS, rss_start),
    "",
    "| phase | requests | wrong | non-2xx | socket errors | members to stable | members to gray"
        .. " | p50 ms | p99 ms | worker RSS MB | log: library | log: nginx |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
}
for _, r in ipairs(rows) do
    lines[#lines + 1] = fmt("| %s | %d | %d | %d | %d | %d | %d | %.2f | %.2f | %.1f | %d | %d |",
                            r.phase, r.requests, r.wrong, r.non2xx, r.errors, r.member_stable,
                            r.member_gray, r.p50 / 1000, r.p99 / 1000, r.rss, r.lib, r.own)
end
lines[#lines + 1] = fmt("| all | %d | %d | %d | %d | %d | %d | | | | %d | %d |", total.requests,
                        total.wrong, total.non2xx, total.errors, total.member_stable,
                        total.member_gray,
                        total.lib, total.own)
lines[#lines + 1] = ""
lines[#lines + 1] = "error.log lines by kind (warn and above):"
local sorted = {}
for k, n in pairs(kinds) do
    sorted[#sorted + 1] = { k = k, n = n }
end
table.sort(sorted, function(a, b) return a.n > b.n end)
for _, e in ipairs(sorted) do
    lines[#lines + 1] = fmt("  %6d  %s", e.n, e.k)
end
wrk_load.write_results(table.concat(lines, "\n") .. "\n", "build/soak-results.txt")
if total.wrong > 0 or total.errors > 0 or #bad > 0 then
    io.stderr:write("soak: " .. total.wrong .. " wrong answers, " .. total.errors
                    .. " socket errors; bad log lines:\n"
                    .. table.concat(bad, "\n", 1, math.min(#bad, 20)) .. "\n")
    os.exit(1)
end
