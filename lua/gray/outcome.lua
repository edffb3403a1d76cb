-- gray.outcome: what each request's target answered, counted by target. In
-- the log phase a request that the router sent somewhere counts its status
-- class and its response time under that target's name, into plain Lua
-- tables of its worker; gray.metrics' flush timer adds them into the
-- metrics dict (every worker's, for the page) and into per-second window
-- counts that a guard reads (outcome.window()). Needs the metrics dict.
--
--   http {
--       lua_shared_dict gray_metrics 1m;
--       log_by_lua_file /path/to/lua-resty-gray/lua/gray/outcome.lua;
--   }
--
-- The status is the last one of $upstream_status where there is one
-- ("502, 200" after a retry: 200; "500 : 200" after an error_page to a
-- named location: 200), else the response's (ngx.status); a status outside
-- 100..599 is not counted. The time is ngx.now() - ngx.req.start_time(),
-- what $request_time shows, in seconds. Reading $upstream_status costs
-- about 1,400 instructions a request; it is read only where nginx.conf can
-- make the two statuses differ: where its files (gray.nginxconf reads them
-- once per worker) use one of UPSTREAM_DIRECTIVES, or cannot be read.
-- Elsewhere nginx passes the last upstream status on as the response's.
--
-- The target is known from router:exec(), which notes it before its
-- ngx.exec(). That internal redirect clears ngx.ctx, so the note is kept in
-- a table of the worker keyed by the request's address (lua-resty-core's
-- get_request()) with the request's start time; the log phase takes it out.
-- A note whose start time differs (a subrequest's: no log phase) is not
-- the request's. Code that does its own proxying after router:decide()
-- calls outcome.note(target_name) itself. A request with no note (the
-- /metrics page, a location without the router) is not counted.
--
-- This file is both the log_by_lua_file script and the module
-- "gray.outcome" (as gray/dep.lua is): run as a script, it hands the
-- request to the module's log().
local log = package.loaded["gray.outcome log"]
if log then
    return log()                    -- every request after the first
end
local loaded = package.loaded["gray.outcome"]
if type(loaded) == "table" then
    return loaded.log()
end

local ffi = require "ffi"
local base = require "resty.core.base"
local metrics = require "gray.metrics"
local nginxconf = require "gray.nginxconf"

local ngx = ngx
local ngx_now = ngx.now
local ngx_var = ngx.var
local ngx_shared = ngx.shared
local req_start_time = ngx.req.start_time
local get_request = base.get_request
local ffi_cast = ffi.cast
-- ngx.status and ngx.req.start_time()'s C functions (lua-resty-core
-- declares them), called with the request log() already holds: the status
-- without ngx.status's lookups (the ngx table, its metatable, the getter)
require "resty.core.misc"
require "resty.core.request"
local ffi_resp_status = ffi.C.ngx_http_lua_ffi_get_resp_status
local ffi_start_time = ffi.C.ngx_http_lua_ffi_req_start_time
local tonumber, type, pairs, tostring = tonumber, type, pairs, tostring
local byte = string.byte
local concat = table.concat
local ngx_log, NOTICE = ngx.log, ngx.NOTICE
local floor = math.floor
local error = error

local _M = { _VERSION = "0.1.0" }

-- The histogram's upper bounds, seconds (Prometheus' default buckets); a
-- last bucket, +Inf, takes the rest.
local BOUNDS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local NB = #BOUNDS + 1
local LE = {}
for i = 1, #BOUNDS do
    LE[i] = tostring(BOUNDS[i])
end
LE[NB] = "+Inf"
_M.BOUNDS = BOUNDS

local CLASSES = { "1xx", "2xx", "3xx", "4xx", "5xx" }
local WINDOW_MAX = 60       -- s a window count is kept: the longest window
local SLOTS_MAX = 65536     -- notes that no log phase took back before a reset
-- The window counts, in the metrics dict, for a guard to read (window()):
-- per target and second, "~w|<target>|<second>|<field>" where the field is
-- n (requests), e (5xx responses) or 1..12 (requests in histogram bucket i,
-- not cumulative; 12: above 10 s), each added to by every worker's flush
-- (the second of the flush) and kept WINDOW_MAX + 5 s. A key that is not
-- there is 0. The page leaves them out (no metric name starts with "~").
local WPREFIX = "~w|"

-- The directives that can make a response's status differ from the last
-- of $upstream_status: error_page (an intercepted upstream error, or
-- nginx's own 502/504, sent to a page or another location), a Lua header
-- filter (ngx.status =), a cache (a revalidated 304 sent as 200), the
-- image filter (415).
local UPSTREAM_DIRECTIVES = { "error_page", "header_filter_by_lua", "proxy_cache",
                              "fastcgi_cache", "scgi_cache", "uwsgi_cache", "image_filter" }
_M.UPSTREAM_DIRECTIVES = UPSTREAM_DIRECTIVES

-- Whether the status comes from $upstream_status: true until nginx.conf
-- is found not to need it (from_conf()), or as configure() says.
local read_upstream = true
local chosen = nil          -- configure()'s upstream_status; nil: from nginx.conf
local why = "nginx.conf not read yet"

--- Sets the module's options (in init_by_lua, before any request):
-- upstream_status: true reads $upstream_status on every request, false
-- counts the response's status (ngx.status) alone; by default (nil) it is
-- read where nginx.conf uses one of UPSTREAM_DIRECTIVES (see above).
function _M.configure(opts)
    if type(opts) ~= "table" then
        error("gray.outcome.configure: opts must be a table", 2)
    end
    if opts.upstream_status ~= nil then
        if type(opts.upstream_status) ~= "boolean" then
            error("gray.outcome.configure: upstream_status must be true or false", 2)
        end
        chosen = opts.upstream_status
        read_upstream, why = chosen, "configure({ upstream_status = " .. tostring(chosen) .. " })"
    end
    return true
end

-- Decides read_upstream from nginx.conf's files, unless configure() did.
local function from_conf()
    if chosen ~= nil then
        return
    end
    local found, detail = nginxconf.running_mentions(UPSTREAM_DIRECTIVES)
    if found == false then
        read_upstream = false
        why = detail .. " and its includes use none of " .. concat(UPSTREAM_DIRECTIVES, ", ")
    elseif found then
        read_upstream, why = true, detail .. " (or an include) uses " .. found
    else
        read_upstream, why = true, "nginx.conf could not be read: " .. tostring(detail)
        ngx_log(NOTICE, "gray: outcome: $upstream_status is read on every request: ", why)
    end
end

--- Whether the log phase reads $upstream_status, and why: configure()'s
-- choice, or what nginx.conf uses (a worker reads it in a timer at its
-- start: until then, true).
function _M.reads_upstream_status()
    return read_upstream, why
end

-- The notes: request address -> target name, and its start time.
local slots, stamps = {}, {}
local live = 0              -- notes not taken back yet

-- This worker's counts by target name: a record of arrays, made once per
-- target; the flush moves them out (the page's series keys are built once).
--   classes[1..5]  requests by status class since the last flush
--   buckets[1..NB] requests by histogram bucket (not cumulative)
--   sum            response seconds
local by_target = {}

local function new_record(name)
    local rec = { classes = {}, buckets = {}, sum = 0, class_keys = {}, bucket_keys = {},
                  seeded = false }
    local label = 'target="' .. metrics.escape(name) .. '"'
    for c = 1, 5 do
        rec.classes[c] = 0
        rec.class_keys[c] = "gray_responses_total{" .. label .. ',class="' .. CLASSES[c] .. '"}'
    end
    for b = 1, NB do
        rec.buckets[b] = 0
        rec.bucket_keys[b] = "gray_response_seconds_bucket{" .. label .. ',le="' .. LE[b] .. '"}'
    end
    rec.sum_key = "gray_response_seconds_sum{" .. label .. "}"
    rec.count_key = "gray_response_seconds_count{" .. label .. "}"
    rec.wkey = WPREFIX .. name .. "|"
    by_target[name] = rec
    return rec
end

-- The request's address as a number (a table key). Kept in a local, not
-- returned by a tail call to tonumber: a trace begun at this function's
-- entry (interpreted code calling it, as after a cosocket's yield) could
-- not end there and would abort, "leaving loop in root trace at tonumber".
local uintptr = ffi.typeof("uintptr_t")
local function request_key()
    local r = get_request()
    if r == nil then
        return nil
    end
    local key = tonumber(ffi_cast(uintptr, r))
    return key
end

--- Notes the target that serves this request (its name: "stable", "1" or a
-- name of `targets`), for the log phase to count its outcome. router:exec()
-- calls it; code that proxies on its own after router:decide() calls it
-- before that. A second note replaces the first.
function _M.note(name)
    local key = request_key()
    if key == nil then
        return nil, "no request"
    end
    if slots[key] == nil then
        live = live + 1
        if live > SLOTS_MAX then
            -- notes that nothing takes back: no log_by_lua here, or
            -- subrequests; start again rather than grow
            slots, stamps, live = {}, {}, 1
        end
    end
    slots[key] = name
    stamps[key] = req_start_time()
    return true
end

-- The last status of $upstream_status ("502, 504, 200", "500 : 200"), or
-- nil when it does not end in one ("-": no answer).
local function last_status(s)
    local n = #s
    if n < 3 then
        return nil
    end
    local a, b, c = byte(s, n - 2, n)
    if a < 49 or a > 53 or b < 48 or b > 57 or c < 48 or c > 57 then
        return nil
    end
    return (a - 48) * 100 + (b - 48) * 10 + (c - 48)
end

-- The histogram bucket of a response time: the first bound it does not
-- exceed (NB: +Inf). Comparisons, not a loop: a loop of a few turns in the
-- log phase makes LuaJIT start a trace there that aborts ("leaving loop in
-- root trace"), and the request's log phase would run interpreted. Kept in
-- step with BOUNDS by a check at load.
local function bucket_of(t)
    if t <= 0.1 then
        if t <= 0.01 then
            return t <= 0.005 and 1 or 2
        end
        if t <= 0.025 then return 3 end
        return t <= 0.05 and 4 or 5
    end
    if t <= 1 then
        if t <= 0.25 then return 6 end
        return t <= 0.5 and 7 or 8
    end
    if t <= 2.5 then return 9 end
    if t <= 5 then return 10 end
    return t <= 10 and 11 or 12
end
for i = 1, NB - 1 do
    assert(bucket_of(BOUNDS[i]) == i and bucket_of(BOUNDS[i] * 1.0001) == i + 1,
           "gray.outcome: bucket_of is out of step with BOUNDS")
end

local function count(rec, status, elapsed)
    local c = floor(status / 100)
    if c < 1 or c > 5 then
        return
    end
    local classes = rec.classes
    classes[c] = classes[c] + 1
    local b = bucket_of(elapsed)
    local buckets = rec.buckets
    buckets[b] = buckets[b] + 1
    rec.sum = rec.sum + elapsed
end

--- The log phase: counts this request's outcome under its noted target.
-- Nothing for a request without a note.
function _M.log()
    local r = get_request()
    if r == nil then
        return
    end
    local key = tonumber(ffi_cast(uintptr, r))
    local name = slots[key]
    if name == nil then
        return
    end
    local stamp = stamps[key]
    slots[key] = nil
    stamps[key] = nil
    live = live - 1
    local start = tonumber(ffi_start_time(r))
    if stamp ~= start then
        return                      -- another request's note
    end
    local status
    if read_upstream then
        local upstream = ngx_var.upstream_status
        if upstream then
            status = last_status(upstream)
        end
    end
    if not status then
        status = ffi_resp_status(r)     -- ngx.status (-101 for a fake request: not counted)
    end
    local rec = by_target[name] or new_record(name)
    count(rec, status, ngx_now() - start)
    if metrics.exited then
        _M.flush()                  -- after the worker's last flush: at once
    end
end

-- ---- the flush (gray.metrics' timer) and the window ------------------------

-- Adds n to a window key (kept WINDOW_MAX + 5 s); never evicts: a full
-- dict keeps the key out, as gray.metrics does for its series.
local function wadd(dict, key, n)
    local ok, err = dict:incr(key, n)
    if ok or err ~= "not found" then
        return
    end
    ok, err = dict:safe_add(key, n, WINDOW_MAX + 5)
    if not ok and err == "exists" then
        dict:incr(key, n)
    end
end

--- Moves this worker's counts into the metrics dict: the page's counters
-- (cumulative buckets) and the window counts of the current second (the
-- second of the flush: a window is as fine as gray.metrics' flush_interval).
-- Run by gray.metrics' flush, never on the request path.
function _M.flush()
    local dict = metrics.dict()
    if not dict then
        return
    end
    local sec = floor(ngx_now())
    local incr = metrics.incr
    for _, rec in pairs(by_target) do
        if not rec.seeded then
            -- every bucket on the page from the first count on
            rec.seeded = true
            for b = 1, NB do
                dict:safe_add(rec.bucket_keys[b], 0)
            end
        end
        local classes, n = rec.classes, 0
        for c = 1, 5 do
            n = n + classes[c]
        end
        if n > 0 then
            local wkey = rec.wkey .. sec .. "|"
            local errors = classes[5]
            for c = 1, 5 do
                local v = classes[c]
                if v ~= 0 then
                    incr(rec.class_keys[c], v)
                    classes[c] = 0
                end
            end
            local buckets, cum = rec.buckets, 0
            for b = 1, NB do
                local v = buckets[b]
                if v ~= 0 then
                    cum = cum + v
                    wadd(dict, wkey .. b, v)
                    buckets[b] = 0
                end
                if cum ~= 0 then
                    incr(rec.bucket_keys[b], cum)
                end
            end
            incr(rec.count_key, n)
            incr(rec.sum_key, rec.sum)
            rec.sum = 0
            wadd(dict, wkey .. "n", n)
            if errors ~= 0 then
                wadd(dict, wkey .. "e", errors)
            end
        end
    end
end
metrics.on_flush(_M.flush)
-- run by a timer: left to the interpreter, as gray.metrics' own flush is
require("jit").off(_M.flush)

--- The counts of a target (its name) over the last `seconds` (1 to 60,
-- default 60) on this node, every worker's, as the flushes left them:
-- requests, 5xx responses, and the 95th percentile of the response time
-- (s) estimated from the histogram's buckets (linear within a bucket, as
-- Prometheus' histogram_quantile(); the last finite bound for the +Inf
-- bucket), nil when there was no request. shm: the dict, when not
-- gray_metrics. For a guard; a timer's or a handler's work, not a
-- request's (60 x 13 shared-dict reads).
function _M.window(name, seconds, shm)
    if type(name) ~= "string" then
        error("gray.outcome.window: name must be a target name", 2)
    end
    seconds = seconds or WINDOW_MAX
    if type(seconds) ~= "number" or seconds < 1 or seconds > WINDOW_MAX then
        error("gray.outcome.window: seconds must be a number from 1 to " .. WINDOW_MAX, 2)
    end
    local dict = ngx_shared[shm or metrics.dict_name()]
    if not dict then
        return nil, "no lua_shared_dict " .. tostring(shm or metrics.dict_name())
    end
    local now = floor(ngx_now())
    local requests, errors, counts = 0, 0, {}
    for b = 1, NB do
        counts[b] = 0
    end
    local prefix = WPREFIX .. name .. "|"
    for sec = now - floor(seconds) + 1, now do
        local wkey = prefix .. sec .. "|"
        local n = dict:get(wkey .. "n")
        if n then
            requests = requests + n
            errors = errors + (dict:get(wkey .. "e") or 0)
            for b = 1, NB do
                counts[b] = counts[b] + (dict:get(wkey .. b) or 0)
            end
        end
    end
    if requests == 0 then
        return 0, 0, nil
    end
    local rank, cum = 0.95 * requests, 0
    for b = 1, NB do
        local v = counts[b]
        if cum + v >= rank and v > 0 then
            if b == NB then
                return requests, errors, BOUNDS[NB - 1]
            end
            local lo = b == 1 and 0 or BOUNDS[b - 1]
            return requests, errors, lo + (BOUNDS[b] - lo) * (rank - cum) / v
        end
        cum = cum + v
    end
    return requests, errors, BOUNDS[NB - 1]
end

require("jit").off(_M.window)

-- nginx.conf, read once: here in init_by_lua (the workers inherit the
-- choice), else in a timer of the worker, off the request path. Under
-- lua_code_cache off each request loads this module afresh (a Lua VM of
-- its own) and could never use the choice: a mark in the metrics dict
-- ("~conf|<pid>", CONF_MARK_TTL s; the page leaves "~" keys out) lets one
-- load of a worker read the files in that time; the others keep the read.
local CONF_MARK_TTL = 60
local function first_load()
    local dict = ngx_shared[metrics.dict_name()]
    if not dict then
        return true
    end
    local ok, err = dict:add("~conf|" .. ngx.worker.pid(), true, CONF_MARK_TTL)
    return ok or err ~= "exists"
end

if ngx.get_phase() == "init" then
    from_conf()
elseif not first_load() then
    why = "loaded again in this worker within " .. CONF_MARK_TTL
          .. " s (lua_code_cache off?): nginx.conf not read"
else
    -- (pcall: a phase without timers raises; the read then stays)
    local ok, started, err = pcall(ngx.timer.at, 0, function(premature)
        if not premature then
            from_conf()
        end
    end)
    if not ok or not started then
        why = "nginx.conf not read: " .. tostring(ok and err or started)
    end
end

-- First run as a log_by_lua_file script: register the module and count
-- this request; under require, the module itself.
package.loaded["gray.outcome log"] = _M.log
if loaded == nil then
    package.loaded["gray.outcome"] = _M
    return _M.log()
end
return _M
