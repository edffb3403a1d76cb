-- gray.metrics: counters for a Prometheus /metrics location. A request
-- counts into plain Lua tables of its worker (a few table operations, no
-- lock); a timer adds them into `lua_shared_dict gray_metrics` every second,
-- and once more when the worker exits (a reload loses no count), so the page
-- sums every worker. Without that dict nothing is counted. A full dict keeps
-- the series it has: what it cannot take is counted in
-- gray_metrics_dropped_total and logged.
--
--   http { lua_shared_dict gray_metrics 1m; ... }
--   location = /metrics { content_by_lua_block { require("gray.metrics").render() } }

local ngx = ngx
local ngx_shared = ngx.shared
local timer_every = ngx.timer.every
local worker_exiting = ngx.worker.exiting
local ngx_log = ngx.log
local ngx_say = ngx.say
local WARN = ngx.WARN
local pairs, ipairs, type, tostring = pairs, ipairs, type, tostring
local setmetatable, rawset = setmetatable, rawset
local error = error
local concat, sort = table.concat, table.sort
local byte, format = string.byte, string.format
local floor = math.floor

-- on: counting is enabled; exited: this worker's last flush is done (what
-- is counted later goes straight into the dict)
local _M = { _VERSION = "0.1.0", on = false, exited = false }

local DEFAULT_SHM = "gray_metrics"
local flush_interval = 1        -- s between two flushes of a worker's counts
local DROPPED = "gray_metrics_dropped_total"
local log = require("gray.log").new(5)   -- a full dict is logged once per 5 s

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
local dict_name = DEFAULT_SHM

local ESCAPES = { ["\\"] = "\\\\", ["\n"] = "\\n", ['"'] = '\\"' }

-- s with every byte that is not part of valid UTF-8 (RFC 3629: no overlong
-- form, no surrogate, nothing above U+10FFFF), and every control byte but
-- the newline, written as the text \xNN: a valid label value stays apart
-- from the others, and one bad byte does not make the page unreadable.
local function to_utf8(s)
    local out, i, n = {}, 1, #s
    while i <= n do
        local c = byte(s, i)
        local len, min = 0, 0
        if c < 0x80 then
            len = (c >= 0x20 and c ~= 0x7F or c == 0x0A) and 1 or 0
        elseif c >= 0xC2 and c <= 0xDF then
            len, min = 2, 0x80
        elseif c >= 0xE0 and c <= 0xEF then
            len, min = 3, 0x800
        elseif c >= 0xF0 and c <= 0xF4 then
            len, min = 4, 0x10000
        end
        if len > 1 then
            local cp = c % 2 ^ (7 - len)
            for j = i + 1, i + len - 1 do
                local b = byte(s, j)        -- nil past the end
                if not b or b < 0x80 or b > 0xBF then
                    len = 0
                    break
                end
                cp = cp * 64 + (b - 0x80)
            end
            if len > 1 and (cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF)) then
                len = 0
            end
        end
        if len == 0 then
            out[#out + 1] = format("\\x%02x", c)
            i = i + 1
        else
            out[#out + 1] = s:sub(i, i + len - 1)
            i = i + len
        end
    end
    return concat(out)
end

-- A label value as the text format wants it: valid UTF-8, with \\, \" and
-- \n escaped. Runs once per distinct series, never per request.
local function escape(v)
    v = tostring(v)
    if v:find("[%z\1-\9\11-\31\127-\255]") then
        v = to_utf8(v)
    end
    return (v:gsub('[\\\n"]', ESCAPES))
end

-- Notes what the dict could not take (err: "no memory" when it is full) for
-- gray_metrics_dropped_total, logged once per 5 s; returns how many so far.
local function refused(dropped, key, err)
    if err == "no memory" then
        log:report("full", "metrics: lua_shared_dict " .. dict_name .. " is full: "
                   .. key:sub(1, 200) .. " and what else is new are not counted"
                   .. " (gray_metrics_dropped_total); make the dict larger")
    else
        log:report("store", "metrics: cannot store " .. key:sub(1, 200) .. ": " .. tostring(err))
    end
    return dropped + 1
end

-- Adds n to the counter key in the dict; never evicts a series: incr on an
-- existing key allocates nothing, a new one goes in by safe_add, or not at
-- all. Returns true, or nil, err.
local function store(key, n)
    local ok, err = dict:incr(key, n)
    if ok or err ~= "not found" then
        return ok, err
    end
    ok, err = dict:safe_add(key, n)
    if not ok and err == "exists" then      -- another worker added it just now
        return dict:incr(key, n)
    end
    return ok, err
end

-- Functions that move a module's own counts in at each flush, before the
-- pending ones go (gray.outcome).
local hooks, nhooks = {}, 0

local function flush()
    if not dict then
        return
    end
    for i = 1, nhooks do
        hooks[i]()
    end
    for i = 1, nleaves do
        local leaf = leaves[i]
        local n = leaf.n
        if n ~= 0 then
            leaf.n = 0
            pending[leaf.key] = (pending[leaf.key] or 0) + n
        end
    end
    local dropped = 0
    for key, n in pairs(pending) do
        if n ~= 0 then
            local ok, err = store(key, n)
            if not ok then
                dropped = refused(dropped, key, err)
            end
            pending[key] = 0
        end
    end
    if dropped > 0 then
        store(DROPPED, dropped)
    end
end

-- Runs once a second: left to the interpreter (see gray.lists), its loops
-- never record traces among the request path's hot counters.
require("jit").off(flush)
require("jit").off(to_utf8)

-- Once the worker's last flush is done, a count that a request still in
-- flight makes goes straight into the dict: a leaf loses its field n, so
-- `leaf.n = leaf.n + 1` reads 0 here and writes 1 through __newindex, and
-- so does pending. Until then the request path pays nothing for it.
local exited = false

local function store_now(key, n)
    if n ~= 0 then
        local ok, err = store(key, n)
        if not ok then
            store(DROPPED, refused(0, key, err))
        end
    end
end

local direct_leaf = {
    __index = function(_, k)
        if k == "n" then
            return 0
        end
    end,
    __newindex = function(leaf, k, v)
        if k == "n" then
            store_now(leaf.key, v)
        else
            rawset(leaf, k, v)
        end
    end,
}

local direct_pending = {
    __newindex = function(_, key, n)
        store_now(key, n)
    end,
}

local function go_direct(leaf)
    leaf.n = nil
    setmetatable(leaf, direct_leaf)
end

-- premature: the worker exits (a reload, a stop): its last counts go in
-- now, and any later one at once.
local function on_timer(premature)
    if not premature then
        flush()
    elseif worker_exiting() and not exited then
        flush()
        exited = true
        _M.exited = true
        for i = 1, nleaves do
            go_direct(leaves[i])
        end
        for key in pairs(pending) do
            pending[key] = nil
        end
        setmetatable(pending, direct_pending)
    end
end

--- Sets the module's options (before a worker's first decision, as in
-- init_by_lua): flush_interval, the seconds between two flushes of a
-- worker's counts into the dict (default 1; a scrape flushes its own
-- worker's at once).
function _M.configure(opts)
    if type(opts) ~= "table" then
        error("gray.metrics.configure: opts must be a table", 2)
    end
    local interval = opts.flush_interval
    if interval ~= nil then
        if type(interval) ~= "number" or not (interval > 0 and interval <= 3600) then
            error("gray.metrics.configure: flush_interval must be a number of seconds"
                  .. " above 0, at most 3600", 2)
        end
        flush_interval = interval
    end
    return true
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
    local ok, err = timer_every(flush_interval, on_timer)
    if not ok and worker_exiting() then
        -- a first decision while the worker exits: no timer, counts go
        -- straight into the dict
        exited = true
        _M.exited = true
        setmetatable(pending, direct_pending)
    elseif not ok then
        ngx_log(WARN, "gray: metrics: cannot start the flush timer: ", err)
        return false
    end
    dict, dict_name, started = d, shm or DEFAULT_SHM, true
    d:safe_add(DROPPED, 0)
    _M.on = true
    return true
end

-- A new leaf for a decision series (once per distinct series).
local function new_leaf(by_location, name, reason, source)
    local leaf = { n = 0, key = 'gray_decisions_total{target="' .. escape(name) .. '",reason="'
                                .. escape(reason) .. '",source="' .. (source or "none") .. '"}' }
    by_location[source or false] = leaf
    if exited then
        go_direct(leaf)
    end
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

_M.escape = escape

--- The shared dict counting goes to, once enabled (else nil), and its name.
function _M.dict()
    return dict or nil
end

function _M.dict_name()
    return dict_name
end

--- Adds fn to what each flush runs first: it moves a module's own counts
-- in (with _M.incr, or into _M.dict() itself). Once per module.
function _M.on_flush(fn)
    nhooks = nhooks + 1
    hooks[nhooks] = fn
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

--- Sets a gauge in the shared dict at once (breaker state, list sizes);
-- a full dict keeps it out rather than evict another series.
function _M.set(name, labels, value)
    if dict then
        local key = series(name, labels)
        local ok, err = dict:safe_set(key, value)
        if not ok then
            store(DROPPED, refused(0, key, err))
        end
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
    gray_sticky_ratio = "gauge The share of clients the sticky percentage sends to gray, 0 to 1",
    gray_metrics_dropped_total = "counter Series updates lost because the metrics dict was full",
    gray_responses_total = "counter Responses by target and status class ($upstream_status's last,"
                           .. " else the response's; gray.outcome)",
    gray_response_seconds = "histogram Response time by target: ngx.now() - ngx.req.start_time()"
                            .. " (gray.outcome)",
}
-- a histogram's samples: name_bucket, name_sum, name_count
local HISTOGRAM_PART = { _bucket = true, _sum = true, _count = true }

-- A sample value as the text format writes it: an integer in full (not
-- tostring's 14 digits: a large count or CAS stays exact), NaN, +Inf, -Inf.
local function number(v)
    if v ~= v then
        return "NaN"
    elseif v == 1 / 0 then
        return "+Inf"
    elseif v == -1 / 0 then
        return "-Inf"
    elseif v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then
        return format("%d", v)
    end
    return tostring(v)
end

-- The metric name of a series key (nil for a key that is not a series:
-- gray.outcome's window counts start with "~").
local function name_of(key)
    return key:match("^[%a_:][%w_:]*")
end

-- The family of a sample's name: a histogram's _bucket, _sum and _count
-- samples belong to the histogram's name.
local function family_of(name)
    if HELP[name] then
        return name
    end
    local base, part = name:match("^(.-)(_%a+)$")
    if base and HISTOGRAM_PART[part] and HELP[base] and HELP[base]:find("^histogram ") then
        return base
    end
    return name
end

-- A bucket's bound, for the sort: +Inf last.
local function bound(le)
    return le == "+Inf" and 1 / 0 or tonumber(le) or 0
end

-- Sorts series keys by family, then metric name, so a name's samples stay
-- together (a '{' sorts after '_'), and a histogram's buckets by bound.
local function by_name(a, b)
    local na, nb = name_of(a), name_of(b)
    if na ~= nb then
        local fa, fb = family_of(na), family_of(nb)
        if fa ~= fb then
            return fa < fb
        end
        return na < nb
    end
    local pa, la = a:match('^(.*),le="([^"]+)"}$')
    local pb, lb = b:match('^(.*),le="([^"]+)"}$')
    if pa and pa == pb then
        return bound(la) < bound(lb)
    end
    return a < b
end

--- The Prometheus text of every worker's counts (this worker's pending
-- ones flushed first), for a content handler: render() prints it; text()
-- returns it. shm: the dict's name, when not "gray_metrics". The page
-- answers from any worker, also one that has counted nothing, whenever
-- nginx.conf declares the dict.
function _M.text(shm)
    flush()
    local d = ngx_shared[shm or dict_name]
    if not d then
        return "# gray: metrics are off (no lua_shared_dict " .. (shm or dict_name) .. ")\n"
    end
    d:safe_add(DROPPED, 0)
    local keys, n = d:get_keys(0), 0
    for _, key in ipairs(keys) do
        if name_of(key) then          -- not a window count
            n = n + 1
            keys[n] = key
        end
    end
    for i = #keys, n + 1, -1 do
        keys[i] = nil
    end
    sort(keys, by_name)
    local out, seen = {}, {}
    for _, key in ipairs(keys) do
        local name = name_of(key)
        local family = family_of(name)
        if not seen[family] and HELP[family] then
            seen[family] = true
            local kind, help = HELP[family]:match("^(%S+) (.*)$")
            out[#out + 1] = "# HELP " .. family .. " " .. help
            out[#out + 1] = "# TYPE " .. family .. " " .. kind
        end
        local v = d:get(key)
        if name and type(v) == "number" then
            out[#out + 1] = key .. " " .. number(v)
        end
    end
    out[#out + 1] = ""
    return concat(out, "\n")
end

function _M.render(shm)
    ngx.header["Content-Type"] = "text/plain; version=0.0.4"
    ngx_say(_M.text(shm))
end

return _M
