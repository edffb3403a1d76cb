-- shm_load.lua - `make bench-shm`: how many requests a second memcached gets
-- from one nginx with 8 workers, without and with the shared decision cache
-- (option shm), in the same run, under the same load.
--
-- Scenario: BENCH_CLIENTS client addresses (X-Real-IP from the trusted
-- loopback client), one in ten gray; cache_ttl 1 s; wrk with BENCH_CONNECTIONS
-- connections cycles through the addresses for BENCH_DURATION seconds.
-- memcached's own counters (stats: cmd_get, get_hits, get_misses) before and
-- after give its load; wrk gives the router's req/s. Every answer must come
-- from the expected location (checked before the load: a sample of gray and
-- stable addresses), and non-2xx answers under load fail the bench.
--
-- Per configuration the bound to compare with: a key is asked about at most
-- once per worker per TTL without the shared cache (8 x clients / ttl), at
-- most once per node per TTL with it (clients / ttl).
--
--   LUA_PATH='spec/?.lua;bench/?.lua;;' luajit bench/shm_load.lua
--
-- Settings (environment): BENCH_WORKERS (8), BENCH_CLIENTS (200),
-- BENCH_DURATION (10 s), BENCH_CONNECTIONS (64), BENCH_ROUNDS (2: the
-- configurations take turns).

local harness = require "helpers.harness"
local wrk_load = require "wrk_load"

local WORKERS = tonumber(os.getenv("BENCH_WORKERS") or "8")
local CLIENTS = tonumber(os.getenv("BENCH_CLIENTS") or "200")
local DURATION = tonumber(os.getenv("BENCH_DURATION") or "10")
local CONNS = tonumber(os.getenv("BENCH_CONNECTIONS") or "64")
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "2")
local TTL = 1

local function address(i)
    return "198.18." .. math.floor(i / 256) .. "." .. i % 256
end

local function conf(shm)
    return wrk_load.server("cache_ttl = " .. TTL .. ", shm = " .. shm .. ", ", "")
end

-- wrk's request script: the addresses in turn, each thread from its own
-- starting point
local WRK_SCRIPT = wrk_load.walk(CLIENTS, '"198.18." .. math.floor(n / 256) .. "." .. n % 256')

local function stats(mc)
    local out = {}
    for name, v in mc:cmd("stats\r\n"):gmatch("STAT (%S+) (%S+)") do
        out[name] = tonumber(v)
    end
    return out
end

local mc = harness.memcached()
local script = wrk_load.script_file("rotate.lua", WRK_SCRIPT)
-- one in ten gray
wrk_load.set_members(mc, CLIENTS, 10, address)

local results = { without = {}, with = {} }
for round = 1, ROUNDS do
    for _, which in ipairs({ "without", "with" }) do
        local nginx = harness.nginx({
            memcached_port = mc.port, workers = WORKERS, log_level = "warn",
            http = "lua_shared_dict gray_cache 16m;",
            servers = conf(which == "with" and '"gray_cache"' or "false"),
        })
        -- the answers are right
        for _, i in ipairs({ 0, 10, 190 % CLIENTS, 1, 7, 11 }) do
            local body = nginx:get("/", { headers = { ["X-Real-IP"] = address(i) } }).body
            local want = i % 10 == 0 and "gray\n" or "stable\n"
            assert(body == want, which .. ": " .. address(i) .. " got " .. body)
        end
        -- warm every worker's timers and code paths, then measure
        harness.sh("wrk -t2 -c" .. CONNS .. " -d1s -s " .. script .. " http://127.0.0.1:"
                   .. nginx.port .. "/ >/dev/null 2>&1")
        harness.sleep(TTL + 0.2)
        local before = stats(mc)
        local t0 = tonumber((harness.sh("date +%s.%N")))
        local out = harness.sh("wrk -t2 -c" .. CONNS .. " -d" .. DURATION .. "s -s " .. script
                               .. " http://127.0.0.1:" .. nginx.port .. "/")
        local elapsed = tonumber((harness.sh("date +%s.%N"))) - t0
        local after = stats(mc)
        local bad = out:match("Non%-2xx or 3xx responses: (%d+)")
        assert(not bad, which .. ": " .. out)
        local rps = assert(tonumber(out:match("Requests/sec:%s*([%d%.]+)")), out)
        local gets = after.cmd_get - before.cmd_get
        local r = {
            -- per second of the window between the two stats, wrk's start
            -- and exit included
            rps = rps, gets = gets / elapsed,
            errors = #harness.bad_log_lines(nginx:error_log()),
        }
        results[which][round] = r
        io.stderr:write(string.format("round %d %-7s shm: %8.0f req/s, memcached %7.0f get/s\n",
                                      round, which, r.rps, r.gets))
        assert(r.errors == 0, nginx:error_log():sub(-2000))
        nginx:stop()
    end
end
mc:destroy()

local function median(list, field)
    local v = {}
    for i, r in ipairs(list) do
        v[i] = r[field]
    end
    table.sort(v)
    local mid = #v / 2
    if mid % 1 == 0 then
        return (v[mid] + v[mid + 1]) / 2
    end
    return v[math.ceil(mid)]
end

local lines = {
    string.format("shared decision cache, %d workers, %d clients (1 in 10 gray), cache_ttl %d s,"
                  .. " wrk -c%d, %d s x %d rounds (median)", WORKERS, CLIENTS, TTL, CONNS,
                  DURATION, ROUNDS),
    "",
    "| | router req/s | memcached get/s | one per key per asker per ttl | gets per key per ttl |",
    "|---|---|---|---|---|",
}
for _, which in ipairs({ "without", "with" }) do
    local rps, gets = median(results[which], "rps"), median(results[which], "gets")
    local bound = which == "with" and CLIENTS / TTL or WORKERS * CLIENTS / TTL
    lines[#lines + 1] = string.format("| %s shm | %.0f | %.0f | %.0f | %.2f |", which, rps, gets,
                                      bound, gets * TTL / CLIENTS)
end
wrk_load.write_results(table.concat(lines, "\n") .. "\n", "build/bench-shm-results.txt")
