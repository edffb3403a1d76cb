-- gray.halt: which targets are halted, fleet-wide. A halt is a memcached
-- key, <halt_key>:<target> (default gray:halt:gray for the default target),
-- written with `add` (the first writer wins; a halt stays until `gray-admin
-- resume` deletes it) whose value is one line:
--
--   <unix seconds> <node> <reason text>
--
-- Each worker reads every halt key of its routers with its lists' refresh
-- (gray.lists, every refresh_interval: one multi-get of a few keys, a
-- reply of "END" alone while nothing is halted), so every node follows a
-- halt within refresh_interval. While a target is halted the router sends
-- its requests to the stable location with reason "halted", except the
-- tester override (force). A halt and its end are logged once per node
-- (the metrics dict decides which worker logs) and shown as the gauge
-- gray_halted{target} (1 or 0).
--
--   local halt = require "gray.halt"
--   if halt.halted("gray") then ... end      -- a table lookup: the request path
--
-- The state is the worker's, by target name: the routers of a worker share
-- it (a fleet names its targets alike). What each read finds is also kept
-- in the metrics dict ("~halt|now|<target>", written when it differs), from
-- which a worker starting later (a reload, a respawn) takes the node's last
-- known halts before its first decision (seed), not at its first refresh.

local metrics = require "gray.metrics"
local ms_left = require("gray.util").ms_left

local ngx = ngx
local tostring, tonumber, pairs, ipairs = tostring, tonumber, pairs, ipairs
local floor = math.floor
local concat = table.concat

local _M = { _VERSION = "0.1.0" }

-- target name -> true while halted: the request path's one lookup
local state = {}
-- target name -> the halt key's value (its record's text), while halted
local values = {}
-- target name -> ngx.now() of the last change seen by this worker
local changed_at = {}
-- target names whose gauge this worker has set once
local gauged = {}
-- target name -> when the read in force was sent (ngx.now(), updated): a
-- read sent before it and back after it (two refreshes at once on a loaded
-- machine, or two routers' of one worker) is older news, not a change
local read_at = {}

local VALUE_MAX = 1000          -- bytes of a halt's value (reason included)
_M.VALUE_MAX = VALUE_MAX

--- Whether target `name` is halted (on this worker's last refresh).
function _M.halted(name)
    return state[name] == true
end

--- The halt record of a target: { at = unix seconds, node = , reason = ,
-- text = the value }, or nil when it is not halted.
function _M.record(name)
    local v = values[name]
    if not v then
        return nil
    end
    return _M.parse(v)
end

--- Every halt this worker knows: target name -> record (see record()),
-- for a status page.
function _M.all()
    local out = {}
    for name, v in pairs(values) do
        out[name] = _M.parse(v)
    end
    return out
end

--- Parses a halt value "<unix seconds> <node> <reason>": a record, or a
-- record with at = nil for a value not in that form (still a halt: a key
-- that exists halts, whatever it holds).
function _M.parse(v)
    local at, node, reason = v:match("^(%d+) (%S+) ?(.*)$")
    return { at = tonumber(at), node = node or "?", reason = reason or v, text = v }
end

--- Since when target name is halted, as the ramp freezes on it: the
-- halt's unix seconds (its value's time, the same on every node), true
-- for a halt whose value has no time, false when it is not halted.
function _M.since(name)
    local v = values[name]
    if not v then
        return false
    end
    local at = tonumber(v:match("^(%d+) "))
    return at and at > 0 and at or true
end

--- The seconds (ngx.now()) of the last halt or resume of name this worker
-- saw, or nil: what a guard counts its window from.
function _M.changed_at(name)
    return changed_at[name]
end

--- The value of a halt written now by node for reason: one line, at most
-- VALUE_MAX bytes (control bytes become spaces).
function _M.value(node, reason, now)
    local text = concat({ tostring(floor(tonumber(now) or 0)), tostring(node),
                          tostring(reason) }, " ")
    text = text:gsub("[%c]", " ")
    return text:sub(1, VALUE_MAX)
end

-- Logs a change once per node: the worker whose dict:add of the change's
-- mark succeeds logs it (every worker when there is no metrics dict).
local function log_once(name, mark, text)
    local dict = metrics.dict()
    if dict then
        local ok = dict:add("~halt|" .. name .. "|" .. mark, true, 86400)
        if not ok then
            return
        end
    end
    ngx.log(ngx.WARN, "gray: ", text)
end

-- The node's copy of what a read found (see seed), in the metrics dict if
-- there is one: made right at every read that differs from it, not only at
-- this worker's own changes. Each worker's view moves on by itself, so a
-- copy written only at changes could stay wrong for good: two workers' reads
-- across a resume and a new halt land in either order (the older read's
-- delete last: the halt stands, its copy is gone), and a worker started then
-- (a reload) decided without the halt until its first refresh read it.
local function keep(name, value)
    local dict = metrics.dict() or ngx.shared[metrics.dict_name()]
    if dict then
        local key = "~halt|now|" .. name
        local copy = dict:get(key)
        if value then
            if copy ~= value then
                dict:set(key, value)
            end
        elseif copy ~= nil then
            dict:delete(key)
        end
    end
end

--- Takes the node's last known halts of the targets of keys (target name
-- -> halt key) from the metrics dict: at a router's start, before its
-- first decision and its first refresh.
function _M.seed(keys)
    local dict = metrics.dict() or ngx.shared[metrics.dict_name()]
    if not dict then
        return
    end
    for name in pairs(keys) do
        local v = dict:get("~halt|now|" .. name)
        if v and not values[name] then
            state[name], values[name] = true, v
        end
    end
end

local function gauge(name, v)
    if metrics.on then
        metrics.set("gray_halted", { target = name }, v)
    end
end

--- Sets a target's state from its halt key's value (a string: halted;
-- false: not), read by a request sent at `at` (ngx.now(); default: now).
-- Called by the refresh, and by a guard that just halted. A read sent
-- before the one in force is dropped: a stale "not halted" taken in last
-- resumed a halted target (and spent its resume's log line) until the next
-- refresh, and deleted the node's copy.
function _M.set(name, value, key, at)
    if not at then
        ngx.update_time()
        at = ngx.now()
    end
    local last = read_at[name]
    if last and at < last then
        return
    end
    read_at[name] = at
    if not gauged[name] then
        gauged[name] = true
        gauge(name, value and 1 or 0)
    end
    local old = values[name]
    keep(name, value)
    if value == (old or false) then
        return
    end
    changed_at[name] = ngx.now()
    if value then
        state[name], values[name] = true, value
        gauge(name, 1)
        log_once(name, value, "target " .. name .. " is halted (" .. tostring(key) .. " = '"
                 .. value .. "'): its requests go to the stable location")
    else
        state[name], values[name] = nil, nil
        gauge(name, 0)
        log_once(name, "resumed|" .. old, "target " .. name .. " is resumed (" .. tostring(key)
                 .. " deleted): its requests are routed again")
    end
end

--- Reads the halt keys (keys: target name -> memcached key), one "mg
-- <key> v" each (a miss is answered "EN": 4 bytes), all within timeout
-- ms, through mc (a gray.memcached client); a key whose read failed keeps
-- its last state. log: a gray.log, for failures. (The lists' timer code
-- path: the request path's multi-get code is left alone, so that no timer
-- makes it record new traces.)
function _M.refresh(keys, mc, timeout, log)
    local deadline = ngx.now() + timeout / 1000
    for name, key in pairs(keys) do
        local left = ms_left(deadline)
        if not left then
            if log then
                log:report("refresh:halt", "reading the halts failed, the last state stays:"
                           .. " no time left in refresh_timeout")
            end
            return
        end
        -- a value over value_max is a failed read too (a halt's value is at
        -- most VALUE_MAX bytes): a server that answers every key with junk
        -- halts nothing
        ngx.update_time()
        local at = ngx.now()
        local v, err = mc:get_meta(key, { timeout = left })
        if v == nil then
            if log then
                log:report("refresh:halt", "reading " .. key .. " failed, the last state"
                           .. " stays: " .. tostring(err))
            end
        else
            _M.set(name, v ~= false and v or false, key, at)
        end
    end
end

--- The halt keys of a router: target name -> <halt_key>:<name>, for every
-- name of names but "stable" (the compiled lists' names: "1" is an alias).
function _M.keys(halt_key, names)
    local keys = {}
    for _, name in ipairs(names) do
        if name ~= "stable" and name ~= "1" then
            keys[name] = halt_key .. ":" .. name
        end
    end
    return keys
end

-- forget everything (specs)
function _M._reset()
    for _, t in ipairs({ state, values, changed_at, gauged, read_at }) do
        for k in pairs(t) do
            t[k] = nil
        end
    end
end

require("jit").off(_M.set)
require("jit").off(_M.refresh)
require("jit").off(_M.keys)
require("jit").off(_M.value)
require("jit").off(_M.parse)
require("jit").off(_M.since)
require("jit").off(log_once)
require("jit").off(gauge)
require("jit").off(keep)
require("jit").off(_M.seed)
require("jit").off(_M.all)

return _M
