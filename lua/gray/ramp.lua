-- gray.ramp: a timed sticky ramp, the memcached key gray:ramp (option
-- ramp_key). Its value is "<start unix seconds> <schedule>", the schedule
-- as "5% 25%@10m 50%@30m 100%@1h" (offsets from the start; gray.h, "timed
-- ramps", has the syntax; gray-admin ramp writes it). While the key exists
-- its share in force replaces the percentage (gray:percent): each node
-- takes it from its own clock (now - start), with the percentage's murmur3
-- buckets, so a member stays in as the share rises.
--
--   local r = ramp.new("gray:ramp")
--   ramp.refresh(r, mc, log, deadline)    -- in the lists' timer: mg <key> c
--   local share = ramp.share(r, ngx.now(), halted)   -- percent * 100, or nil
--
-- The value is read as the percentage is: "mg <key> c" each refresh, the
-- value only when its CAS changed. A value that does not parse is logged
-- once and the last good ramp stays. Nothing here runs on the request
-- path: the lists set their threshold from share() at each refresh and at
-- each step's time (a timer), so a request still compares one number.

local gray_ffi = require "gray.ffi"

local value_parse = gray_ffi.ramp_value_parse
local ms_left = require("gray.util").ms_left_fresh
local tostring = tostring

local _M = {}

--- A ramp's state for key: nothing read yet.
function _M.new(key)
    return {
        key = key,
        cas = nil,              -- CAS of the value read (nil: no key)
        start = false,          -- unix seconds, false while there is no ramp
        steps = false,          -- { { at = s, share = percent * 100 }, ... }
        frozen_at = false,      -- the step index a halt froze, or false
        value = false,          -- the value in force (the node's copy: gray.lists)
        held = false,           -- the halt frozen on (share()'s halted), or false
        stale = false,          -- the last refresh failed to read the key
        reads = 0,              -- values parsed
    }
end

--- Checks the key's CAS with mg and reads the value when it changed
-- (mc: a gray.memcached client; log: a gray.log; deadline: the refresh's,
-- ngx.now() seconds). Returns true when the ramp changed (set, replaced
-- or removed).
function _M.refresh(r, mc, log, deadline)
    local key = r.key
    r.stale = true
    local left = ms_left(deadline)
    if not left then
        return false
    end
    local cas, value, kind = mc:meta_cas(key, { timeout = left })
    if cas == nil then
        log:report("refresh:" .. key, "refreshing " .. key .. " failed, the last copy stays: "
                   .. tostring(value) .. (kind and " (" .. kind .. ")" or ""))
        return false
    end
    if cas == false then
        r.stale = false
        -- a ramp taken from the node's copy (seed: no CAS) goes too
        if r.cas == nil and not r.steps then
            return false
        end
        r.cas, r.start, r.steps, r.frozen_at, r.value = nil, false, false, false, false
        return true
    end
    if cas == r.cas then
        r.stale = false
        return false
    end
    if value == nil then
        left = ms_left(deadline)
        if not left then
            return false
        end
        local res, bad, err = mc:get_multi_bulk({ key }, { cas = true, timeout = left })
        if bad then
            log:report("refresh:" .. key, "refreshing " .. key .. " failed, the last copy"
                       .. " stays: " .. tostring(err))
            return false
        end
        local entry = res[key]
        if not entry then
            return false        -- deleted meanwhile: the next check says so
        end
        value, cas = entry.value, entry.cas or cas
    end
    r.cas = cas                 -- a bad value is logged once per change
    r.stale = false
    local start, steps = value_parse(value)
    if not start then
        log:report("compile", key .. ": '" .. value:sub(1, 60) .. "' is not a ramp: "
                   .. tostring(steps) .. "; the last copy stays")
        return false
    end
    r.start, r.steps, r.frozen_at, r.value = start, steps, false, value
    r.reads = r.reads + 1
    return true
end

--- Takes value (the node's copy of the key's value: gray.lists keeps it)
-- into a ramp that has read nothing yet: a worker started by a reload
-- follows the ramp from its first request. No CAS: the next refresh reads
-- the key's value itself. A value that does not parse is ignored.
function _M.seed(r, value)
    if r.cas ~= nil or r.steps or type(value) ~= "string" then
        return
    end
    local start, steps = value_parse(value)
    if start then
        r.start, r.steps, r.frozen_at, r.value = start, steps, false, value
    end
end

-- The index of the step in force at elapsed s after the start (the first
-- one before the start: a clock behind the writer's).
local function step_at(steps, elapsed)
    local i = 1
    while steps[i + 1] and steps[i + 1].at <= elapsed do
        i = i + 1
    end
    return i
end

-- The index of the step a halt froze: the step in force at the halt's
-- time (halted: its unix seconds, the same on every node: the halt key's
-- value; a time ahead of this clock, a writer's clock ahead or a hostile
-- value, counts as now, as gray-admin resume takes it), or, for a halt
-- whose value has no time (halted == true), at the time this worker first
-- saw it.
local function frozen_step(r, now, halted)
    if halted == true then
        local i = r.frozen_at
        if not i then
            i = step_at(r.steps, now - r.start)
            r.frozen_at = i
        end
        return i
    end
    return step_at(r.steps, (halted < now and halted or now) - r.start)
end

-- The halt the ramp freezes on: halted, or, once its end is seen, the
-- last one until a refresh reads the ramp again. A refresh that saw the
-- halt gone but failed to read the ramp (gray-admin resume moved its start
-- before it deleted the halt) would take the old start's later step for a
-- refresh_interval, then fall back to the moved one: members would join,
-- then leave.
local function holding(r, halted)
    if halted then
        r.held = halted
        return halted
    end
    if r.held and r.stale then
        return r.held
    end
    r.held = false
    return false
end

--- The ramp's share in force at now (percent * 100), and the unix time
-- of its next step (nil: the last step is in force), or nil while there is
-- no ramp. halted (the default target is halted: the halt's unix seconds,
-- or true when its value has no time; false or nil: not halted): the ramp
-- is frozen, its share the step in force at the halt's time, and no next
-- step comes. `gray-admin resume gray` moves the ramp's start on by the
-- halt's duration, so that after it the ramp goes on from that step; the
-- ramp stays frozen after the halt's end until a refresh reads it again.
function _M.share(r, now, halted)
    local steps = r.steps
    if not steps then
        return nil
    end
    halted = holding(r, halted)
    if halted then
        return steps[frozen_step(r, now, halted)].share, nil
    end
    r.frozen_at = false
    local i = step_at(steps, now - r.start)
    local nxt = steps[i + 1]
    return steps[i].share, nxt and r.start + nxt.at or nil
end

--- What a status shows: nil without a ramp, else { key, start, steps,
-- share (percent), step (index in force), next_at (unix s or nil),
-- next_share (percent or nil), frozen, frozen_since (the halt's unix s,
-- or nil) }. halted: as share()'s.
function _M.info(r, now, halted)
    local share, next_at = _M.share(r, now, halted)
    if not share then
        return nil
    end
    halted = r.held
    local i = halted and frozen_step(r, now, halted) or step_at(r.steps, now - r.start)
    local nxt = next_at and r.steps[i + 1]
    return {
        key = r.key, start = r.start, steps = r.steps, share = share / 100, step = i,
        next_at = next_at, next_share = nxt and nxt.share / 100 or nil,
        frozen = halted and true or false,
        frozen_since = type(halted) == "number" and halted or nil,
    }
end

-- Timer-only (the lists' refresh): left to the interpreter, one line each
-- (spec/jit_spec.lua reads them).
require("jit").off(_M.refresh)
require("jit").off(step_at)
require("jit").off(frozen_step)
require("jit").off(holding)
require("jit").off(_M.share)
require("jit").off(_M.info)
require("jit").off(_M.seed)

return _M
