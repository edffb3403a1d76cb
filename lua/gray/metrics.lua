-- gray.metrics: counters for a Prometheus /metrics location. A request
-- counts into plain Lua tables of its worker (a few table operations, no
-- lock); a timer adds them into `lua_shared_dict gray_metrics` every second,
-- so the page sums every worker. Without that dict nothing is counted.
--
--   http { lua_shared_dict gray_metrics 1m; ... }
--   location = /metrics { content_by_lua_block { require("gray.metrics").render() } }

local ngx = ngx
local ngx_shared = ngx.shared
local timer_every = ngx.timer.every
local ngx_log = ngx.log
local ngx_say = ngx.say
local WARN = ngx.WARN
local pairs, ipairs, type, tostring, tonumber = pairs, ipairs, type, tostring, tonumber
local concat, sort = table.concat, table.sort

local _M = { _VERSION = "0.1.0", on = false }   -- on: counting is enabled

local FLUSH_INTERVAL = 1        -- s between two flushes of a worker's counts
local DEFAULT_SHM = "gray_metrics"

-- This worker's counts since the last flush: key -> number, keys being the
-- series' names with their labels, built once per distinct series.
local pending = {}
-- The decision counters: decisions[reason][location][source] -> a leaf
-- { n = count since the last flush, key = its series }, so a request adds 1
-- to a field and builds no string. Sources are "cache" (the worker's own
-- cache), "shm" (the cache shared by the workers), "memcached", "stale" or
-- false (none).
local decisions = {}
local leaves, nleaves = {}, 0    -- every leaf, for the flush
local started = false
local dict = false               -- the shared dict, once found; false: none

local function escape(v)
    return (tostring(v):gsub("[\\\n\"]", { ["\\"] = "\\\\", ["\n"] = "\\n", ['"'] = '\\"' }))
end

local function flush()
    if not dict then
        return
    end
    for i = 1, nleaves do
        local leaf = leaves[i]
        local n = leaf.n
        if n ~= 0 then
            leaf.n = 0
            pending[leaf.key] = (pending[leaf.key] or 0) + n
        end
    end
    for key, n in pairs(pending) do
        if n ~= 0 then
            local ok, err = dict:incr(key, n, 0)
            if not ok then
                ngx_log(WARN, "gray: metrics: ", err)
                break
            end
            pending[key] = 0
        end
    end
end

-- Runs once a second: left to the interpreter (see gray.lists), its loops
-- never record traces among the request path's hot counters.
require("jit").off(flush)

local function on_timer(premature)
    if not premature then
        flush()
    end
end

--- Finds the shared dict (name: shm, default "gray_metrics") and starts
-- this worker's flush timer; returns whether counting is on. Called by the
-- router when it is built or first used.
function _M.enable(shm)
    if started then
        return dict ~= false
    end
    local d = ngx_shared[shm or DEFAULT_SHM]
    if not d then
        return false
    end
    local ok, err = timer_every(FLUSH_INTERVAL, on_timer)
    if not ok then
        ngx_log(WARN, "gray: metrics: cannot start the flush timer: ", err)
        return false
    end
    dict, started = d, true
    _M.on = true
    return true
end

-- A new leaf for a decision series (once per distinct series).
local function new_leaf(by_location, name, reason, source)
    local leaf = { n = 0, key = 'gray_decisions_total{target="' .. escape(name) .. '",reason="'
                                .. escape(reason) .. '",source="' .. (source or "none") .. '"}' }
    by_location[source or false] = leaf
    nleaves = nleaves + 1
    leaves[nleaves] = leaf
    return leaf
end

--- Counts one decision: location (what decide() returned), names (location
-- -> target name, for the label; "stable" when absent), the reason and the
-- source. Three table lookups and an addition once the series exists.
function _M.decision(location, names, reason, source)
    local by_reason = decisions[reason]
    if by_reason == nil then
        by_reason = {}
        decisions[reason] = by_reason
    end
    local by_location = by_reason[location]
    if by_location == nil then
        by_location = {}
        by_reason[location] = by_location
    end
    local leaf = by_location[source or false]
    if leaf == nil then
        leaf = new_leaf(by_location, names[location] or "stable", reason, source)
    end
    leaf.n = leaf.n + 1
end

--- The series key of a name and its labels (a table), built once by the
-- caller where it can: `gray_memcached_requests_total{server="..."}`.
local function series(name, labels)
    if not labels then
        return name
    end
    local parts = {}
    for k, v in pairs(labels) do
        parts[#parts + 1] = k .. '="' .. escape(v) .. '"'
    end
    sort(parts)
    return name .. "{" .. concat(parts, ",") .. "}"
end
_M.series = series

--- Adds n (default 1) to a counter, given its series key.
function _M.incr(key, n)
    pending[key] = (pending[key] or 0) + (n or 1)
end

--- Adds n to a counter given by name and labels.
function _M.add(name, labels, n)
    local key = series(name, labels)
    pending[key] = (pending[key] or 0) + (n or 1)
end

--- Sets a gauge in the shared dict at once (breaker state, list sizes).
function _M.set(name, labels, value)
    if dict then
        dict:set(series(name, labels), value)
    end
end

local HELP = {
    gray_decisions_total = "counter Routing decisions by target, reason and where the entry came from"
                           .. " (cache: the worker's own cache, shm: the shared one, memcached)",
    gray_shm_waits_total = "counter Keys a request waited for while another worker asked memcached",
    gray_memcached_requests_total = "counter memcached requests by server",
    gray_memcached_errors_total = "counter memcached failures by server and kind (timeout, network, ...)",
    gray_breaker_open = "gauge 1 while a server's circuit breaker is open",
    gray_list_compiles_total = "counter Lists compiled (ranges, id lists, percentage) by key",
    gray_list_compile_seconds = "gauge Time the last compile of a list took",
    gray_list_entries = "gauge Entries of the list in use (ranges, ids)",
    gray_list_version = "gauge The version of the list in use: memcached's CAS of the copy compiled",
    gray_percent = "gauge The sticky percentage in use",
}

--- The Prometheus text of every worker's counts (this worker's pending
-- ones flushed first), for a content handler: render() prints it; text()
-- returns it.
function _M.text()
    flush()
    if not dict then
        return "# gray: metrics are off (no lua_shared_dict " .. DEFAULT_SHM .. ")\n"
    end
    local keys = dict:get_keys(0)
    sort(keys)
    local out, seen = {}, {}
    for _, key in ipairs(keys) do
        local name = key:match("^[%w_]+")
        if not seen[name] and HELP[name] then
            seen[name] = true
            local kind, help = HELP[name]:match("^(%S+) (.*)$")
            out[#out + 1] = "# HELP " .. name .. " " .. help
            out[#out + 1] = "# TYPE " .. name .. " " .. kind
        end
        local v = dict:get(key)
        if type(v) == "number" then
            out[#out + 1] = key .. " " .. tostring(tonumber(v))
        end
    end
    out[#out + 1] = ""
    return concat(out, "\n")
end

function _M.render()
    ngx.header["Content-Type"] = "text/plain; version=0.0.4"
    ngx_say(_M.text())
end

return _M
