-- gray.guard: halts a gray target that does worse than stable. Once a
-- second, one worker per node (worker 0) compares each gray target with
-- stable over a sliding window of gray.outcome's counts (every worker's, in
-- the metrics dict), and halts the target fleet-wide (gray.halt: `add
-- <halt_key>:<target>`) when, with at least min_requests in the window on
-- both sides:
--
--   errors   its 5xx ratio exceeds stable's by more than error_delta AND a
--            one-sided two-proportion z-test gives p < 0.001 (z > 3.09);
--   latency  its p95 (from the histogram's buckets) exceeds latency_ratio x
--            stable's p95.
--
--   gray.new({ guard = "on" })    -- or "error_delta=0.03, latency_ratio=2,
--                                 --  min_requests=200, window=60, node=web1"
--
-- After a halt or a resume the window starts again from that moment: what
-- was counted before it is not held against the target again. The window
-- and the comparison are this node's; the halt is everybody's.

local ngx = ngx
local type, tostring, tonumber, pairs, ipairs, pcall = type, tostring, tonumber, pairs,
    ipairs, pcall
local sqrt, exp, floor, min = math.sqrt, math.exp, math.floor, math.min
local format = string.format

local _M = { _VERSION = "0.1.0" }

local DEFAULTS = {
    error_delta = 0.03,     -- 5xx ratio above stable's that can halt (with p < 0.001):
                            -- an A/A window of 500 requests a side at 1% 5xx halts with
                            -- p = 1.6e-6 (0.02: 1.7e-4; spec/guard_spec.lua)
    latency_ratio = 2,      -- p95 / stable's p95 that halts
    min_requests = 200,     -- requests in the window, each side, before any judgement
    window = 60,            -- s of the sliding window (gray.outcome keeps 60)
    node = false,           -- this node's name in a halt (default: the host name)
}
_M.DEFAULTS = DEFAULTS
-- one-sided p < 0.001: z above the standard normal's 0.999 quantile
local Z_CRIT = 3.090232306167813
_M.Z_CRIT = Z_CRIT
local INTERVAL = 1          -- s between two checks
local watches = {}          -- this worker's guards, by what they watch (start)

-- { min, max, integer } of the numeric settings
local LIMITS = {
    error_delta = { 0, 1, false },
    latency_ratio = { 1, 1000, false },
    min_requests = { 1, 1e9, true },
    window = { 1, 60, true },
}

--- Parses the guard setting: true or "on" (the defaults), a string
-- "name=value, ..." (a leading "on," is allowed) or a table of the same
-- names. Returns the record (every setting filled in) or nil, err.
function _M.parse(v)
    local given = {}
    if v == true or v == "on" then
        given = {}
    elseif type(v) == "table" then
        for k, x in pairs(v) do
            given[k] = x
        end
    elseif type(v) == "string" then
        for item in v:gmatch("[^,]+") do
            item = item:match("^%s*(.-)%s*$")
            if item ~= "" and item ~= "on" then
                local k, x = item:match("^([%w_]+)%s*=%s*(%S+)$")
                if not k then
                    return nil, "bad setting '" .. item:sub(1, 40) .. "' (expected 'on' or"
                                .. " 'error_delta=0.02, latency_ratio=2, min_requests=200,"
                                .. " window=60')"
                end
                given[k] = k == "node" and x or tonumber(x) or x
            end
        end
    else
        return nil, "must be 'on', a string of settings or a table, got " .. tostring(v)
    end
    local g = {}
    for k, x in pairs(given) do
        if DEFAULTS[k] == nil then
            return nil, "unknown setting '" .. tostring(k) .. "' (known: error_delta,"
                        .. " latency_ratio, min_requests, window, node)"
        end
        g[k] = x
    end
    for k, d in pairs(DEFAULTS) do
        if g[k] == nil then
            g[k] = d
        end
    end
    for k, lim in pairs(LIMITS) do
        local x = g[k]
        if type(x) ~= "number" or x ~= x or x < lim[1] or x > lim[2]
           or (lim[3] and x % 1 ~= 0) then
            return nil, k .. " must be " .. (lim[3] and "an integer" or "a number") .. " from "
                        .. lim[1] .. " to " .. lim[2] .. ", got " .. tostring(x)
        end
    end
    if g.node ~= false and (type(g.node) ~= "string" or not g.node:find("^[%w._:-]+$")
                            or #g.node > 64) then
        return nil, "node must be a name of 1 to 64 letters, digits, '.', '_', ':', '-'"
    end
    return g
end

-- erfc(x) for x >= 0 (Abramowitz and Stegun 7.1.26, error < 1.5e-7): the
-- p-value in a halt's reason.
local function erfc(x)
    local t = 1 / (1 + 0.3275911 * x)
    local y = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
              + t * 1.061405429))))
    return y * exp(-x * x)
end

--- The one-sided two-proportion z-test of e1/n1 > e2/n2: z and its
-- p-value (pooled standard error; z = 0, p = 1 when both ratios are 0 or
-- 1).
function _M.z_test(e1, n1, e2, n2)
    local p1, p2 = e1 / n1, e2 / n2
    local pooled = (e1 + e2) / (n1 + n2)
    local var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0 then
        return 0, 1
    end
    local z = (p1 - p2) / sqrt(var)
    if z <= 0 then
        return z, 1
    end
    return z, 0.5 * erfc(z / sqrt(2))
end

--- The verdict on a target against stable: t and s are { n = requests,
-- e = 5xx responses, p95 = seconds or nil } over the same window; g the
-- guard's settings. Returns nil (no halt) or the reason (text).
function _M.judge(t, s, g)
    if t.n < g.min_requests or s.n < g.min_requests then
        return nil
    end
    local pt, ps = t.e / t.n, s.e / s.n
    if pt - ps > g.error_delta then
        local z, p = _M.z_test(t.e, t.n, s.e, s.n)
        if z > Z_CRIT then
            return format("errors: 5xx %.1f%% of %d vs stable %.1f%% of %d (z=%.1f, p=%.1g)",
                          pt * 100, t.n, ps * 100, s.n, z, p)
        end
    end
    if t.p95 and s.p95 and s.p95 > 0 and t.p95 > g.latency_ratio * s.p95 then
        return format("latency: p95 %.3f s vs stable %.3f s (x%.1f > x%g), %d requests",
                      t.p95, s.p95, t.p95 / s.p95, g.latency_ratio, t.n)
    end
    return nil
end

-- ---- the timer ------------------------------------------------------------

local hostname
local function node_name(g)
    if g.node then
        return g.node
    end
    if not hostname then
        local f = io.open("/proc/sys/kernel/hostname") or io.open("/etc/hostname")
        hostname = f and f:read("*l") or nil
        if f then
            f:close()
        end
        if not hostname or not hostname:find("^[%w._:-]+$") then
            hostname = "nginx"
        end
    end
    return hostname
end

-- One check of every guarded target of w (a watch: see start).
local function check(w)
    local halt, outcome = w.halt, w.outcome
    local now = ngx.now()
    local g = w.guard
    for _, name in ipairs(w.names) do
        if not halt.halted(name) then
            local seconds = g.window
            local since = halt.changed_at(name) or w.started_at
            if since then
                seconds = min(seconds, floor(now - since))
            end
            if seconds >= 1 then
                local n, e, p95 = outcome.window(name, seconds, w.shm)
                local sn, se, sp95 = outcome.window("stable", seconds, w.shm)
                local reason = n and sn and _M.judge({ n = n, e = e, p95 = p95 },
                                                     { n = sn, e = se, p95 = sp95 }, g)
                if reason then
                    local key = w.keys[name]
                    local value = halt.value(node_name(g), "guard: " .. reason, ngx.time())
                    local ok, err = w.mc:add(key, value, { timeout = 1000 })
                    if ok then
                        ngx.log(ngx.WARN, "gray: guard halts target ", name, " (", key,
                                "): ", reason)
                        halt.set(name, value, key)
                    elseif ok == nil then
                        ngx.log(ngx.ERR, "gray: guard cannot halt target ", name, " (",
                                key, "): ", err)
                    end
                    -- false: halted already (another node); the refresh reads it
                end
            end
        end
    end
end

local function on_timer(premature, w)
    if premature then
        return
    end
    local ok, err = pcall(check, w)
    if not ok then
        ngx.log(ngx.ERR, "gray: guard check failed: ", err)
    end
end

--- Starts the guard of a router in this worker when it is the node's
-- guard worker (worker 0; any in a single process). opts: guard (the
-- parsed settings), keys (target name -> halt key: the targets guarded),
-- mc (a gray.memcached client), shm (the metrics dict's name). Returns
-- true (started or not this worker's), or nil, err.
function _M.start(opts)
    local id = ngx.worker.id()
    if id ~= nil and id ~= 0 then
        return true
    end
    local names, sig = {}, {}
    for name in pairs(opts.keys) do
        names[#names + 1] = name
    end
    table.sort(names)
    -- one watch per distinct guard in a worker: routers built again for the
    -- same configuration (the drop-in's) start no second timer
    for _, name in ipairs(names) do
        sig[#sig + 1] = opts.keys[name]
    end
    for _, k in ipairs({ "error_delta", "latency_ratio", "min_requests", "window", "node" }) do
        sig[#sig + 1] = tostring(opts.guard[k])
    end
    sig[#sig + 1] = tostring(opts.shm)
    sig = table.concat(sig, "\n")
    if watches[sig] then
        return true
    end
    local w = {
        guard = opts.guard, keys = opts.keys, names = names, mc = opts.mc, shm = opts.shm,
        halt = require "gray.halt", outcome = require "gray.outcome",
        started_at = nil,
    }
    local ok, err = ngx.timer.every(INTERVAL, on_timer, w)
    if not ok then
        return nil, err
    end
    watches[sig] = w
    return true
end

require("jit").off(_M.parse)
require("jit").off(_M.z_test)
require("jit").off(_M.judge)
require("jit").off(erfc)
require("jit").off(node_name)
require("jit").off(check)
require("jit").off(on_timer)
require("jit").off(_M.start)

return _M
