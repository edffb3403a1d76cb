-- gray.rules: the router's decision rules, in precedence order: the tester
-- override (force), the identities' and the address's memcached entries
-- (through the worker's caches and the shared one), the id lists, the
-- ranges, the percentage, then the stable location. gray.lua builds the
-- router record these functions take (self) and calls decide(self) once per
-- request.
--
--   local target, reason, source = rules.decide(router)   -- a decision record

local gray_ffi = require "gray.ffi"
local client = require "gray.client"
local ids_mod = require "gray.ids"
local lists_mod = require "gray.lists"
local client_key_of = client.key
local gray_cache = require "gray.cache"
local shcache = require "gray.shcache"
local shared_look, shared_fetch = shcache.look, shcache.fetch
-- looked up once: a method call would go through the metatables
local lru_get, cache_get = gray_cache.lru_get, gray_cache.get

local ngx = ngx
local ngx_now = ngx.now
local ngx_time = ngx.time
local get_phase = ngx.get_phase
local ngx_var = ngx.var
local id_value, id_key = ids_mod.value, ids_mod.key
local list_range, list_listed, in_percent = lists_mod.range, lists_mod.listed,
    lists_mod.in_percent
local has_list, has_idlists, has_ranges, percent_on = lists_mod.has_list,
    lists_mod.has_idlists, lists_mod.has_ranges, lists_mod.percent_on
local ip_in = gray_ffi.peer_trusted
local token_check = gray_ffi.token_check
local tostring = tostring
local EMPTY = {}
-- a clock past every cache entry's expiry (the request's clock without
-- fresh life: cache_ttl and neg_ttl 0)
local ALL_STALE = math.huge
local ok_new, table_new = pcall(require, "table.new")
if not ok_new then
    table_new = function() return {} end
end

local _M = {}

-- Phases where a cache miss can ask memcached (cosockets are enabled).
local COSOCKET_PHASES = {
    rewrite = true, access = true, content = true, timer = true,
    ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}

-- nil where a cache miss can ask memcached, else the error that says why not.
local function needs_cosockets()
    local phase = get_phase()
    if COSOCKET_PHASES[phase] then
        return nil
    end
    return "gray: decide() needs cosockets on a cache miss: call it in the rewrite,"
           .. " access or content phase, not in " .. phase
end

-- What a memcached value decides: its target's decision ("stable" pins
-- the client to the stable location), false (no match: a miss, "0", "", an
-- oversized value), or for any other value the unknown-target decision
-- (the stable location, logged).
local function decision_of(self, key, value)
    if not value or value == "" or value == "0" then
        return false
    end
    local target = self.targets[value]
    if target then
        return target
    end
    self.log:report("target", "the value of " .. key .. " names no target: '"
                    .. value:sub(1, 40) .. "' (known: 1, gray, stable and the names in targets);"
                    .. " sent to the stable location")
    return self.unknown_target
end

-- The failure reason of a memcached error kind: "store-down" while the
-- server's breaker is open, else "store-error".
local function failure_of(kind)
    return kind == "down" and "store-down" or "store-error"
end

-- Asks memcached about one key (timeout: ms, nil for the whole one):
-- the decision (a location or false), nil, and whether memcached had a
-- value; or nil, failure reason ("store-error", "store-down") when it
-- failed (logged). The shared cache's fetch calls it under the key's lock.
local function ask_one(self, key, timeout)
    local value, err, kind = self.mc:get(key, timeout)
    if kind == "value" then
        -- an oversized value is an answer, just not a membership one
        self.log:report(kind, err)
        value = ""
    end
    if value == nil then
        self.log:report(kind, err)
        return nil, failure_of(kind)
    end
    return decision_of(self, key, value), nil, value and true
end

-- Asks memcached for one key and caches the decision. Returns the decision
-- (a location or false), or nil, failure reason ("store-error",
-- "store-down") when memcached failed; stale decisions are the caller's.
-- With a shared cache, only the worker holding the key's lock asks; the
-- others wait for its decision (source "shm"). seen: the stored_at of the
-- expired entry found in the shared cache, if any.
local function fetch_one(self, cache, key, seen)
    local shared = self.shared
    if shared then
        return shared_fetch(shared, cache, key, seen, ask_one, self)
    end
    local target, failure, found = ask_one(self, key, nil)
    if target == nil then
        return nil, failure
    end
    -- the entry keeps when it was stored, which bounds its stale use
    cache:set(key, target, found and self.pos_ttl or self.neg_ttl, ngx_now())
    return target, nil, "memcached"
end

-- The stale decision of a key after memcached failed, or nil when it is
-- too old or there is none.
local function stale_of(self, cache, key, stale, stored_at)
    if not self.use_fresh then
        -- with no fresh life every entry is expired: it is stale
        local fresh
        fresh, stale, stored_at = cache:get(key, ngx_now())
        if fresh ~= nil then
            stale = fresh
        end
    end
    if stale == nil or ngx_now() - stored_at > self.stale_limit then
        return nil
    end
    return stale
end

-- The location an id list gives this request's value of identity id, or
-- nil (id may be nil: past the last identity).
local function listed(lists, id)
    if id == nil or not has_list(lists, id.name) then
        return nil
    end
    local v = id_value(id)
    return v and list_listed(lists, id.name, v)
end

-- The rules below the memcached entries: id lists, ranges, percentage.
-- The percentage's key is the first identity present (pid, its value pv),
-- else the canonical address (addr); failure, when memcached failed for an
-- entry, replaces "default"; source is returned as it is.
local function decide_lists(self, addr, pid, pv, failure, source)
    local lists = self.lists
    local ids = self.ids
    if ids and has_idlists(lists) then
        -- straight-line over the (at most 4) identities, not a loop: see
        -- decide_ids
        local d = listed(lists, ids[1])
        if d then return d, d.reason or ids[1].list_reason, source end
        d = listed(lists, ids[2])
        if d then return d, d.reason or ids[2].list_reason, source end
        d = listed(lists, ids[3])
        if d then return d, d.reason or ids[3].list_reason, source end
        d = listed(lists, ids[4])
        if d then return d, d.reason or ids[4].list_reason, source end
    end
    if addr and has_ranges(lists) then
        local d = list_range(lists, addr)
        if d then
            return d, d.reason or "range", source
        end
    end
    if percent_on(lists) then
        -- the first identity present, else the canonical address
        local pkey = pid and pid.prefix .. pv or addr
        if pkey and in_percent(lists, pkey) then
            return self.default_target, "percent", source
        end
    end
    return self.stable_target, failure or "default", source
end

-- The address's key (addr, under key_prefix) and its entry in this
-- worker's cache at time now: decision, stale decision, stored_at; unless
-- the client's probe found that entry already (target or stale given:
-- returned as they are).
local function address_entry(self, addr, target, stale, stored_at, now)
    local key = addr
    if target == nil and stale == nil then
        if self.key_prefix then
            key = self.key_prefix .. addr
        end
        if self.use_fresh then
            -- an expired entry comes back as stale, for use if memcached fails
            target, stale, stored_at = lru_get(self.cache, key, now)
        end
    end
    return key, target, stale, stored_at
end

-- The address alone (no identities): the fast path of the classic dep.lua setup.
local function decide_address(self, addr, target, stale, stored_at, now)
    local key
    key, target, stale, stored_at = address_entry(self, addr, target, stale, stored_at, now)
    if target then
        return target, target.reason or "ip", "cache"
    elseif target == false then
        return decide_lists(self, addr, nil, nil, nil, "cache")
    end
    local shared, seen = self.shared, nil
    if shared then
        -- another worker may have asked memcached already
        local s_stale
        target, s_stale, seen = shared_look(shared, self.cache, key, key, now)
        if target ~= nil then
            if target then
                return target, target.reason or "ip", "shm"
            end
            return decide_lists(self, addr, nil, nil, nil, "shm")
        end
        -- the newer of the two stale decisions, for an outage
        if s_stale ~= nil and (stale == nil or seen > stored_at) then
            stale, stored_at = s_stale, seen
        end
    end
    local err = needs_cosockets()
    if err then
        return nil, err
    end
    local failure, source
    target, failure, source = fetch_one(self, self.cache, key, seen)
    if target then
        return target, target.reason or "ip", source
    elseif target == false then
        return decide_lists(self, addr, nil, nil, nil, source)
    end
    target = stale_of(self, self.cache, key, stale, stored_at)
    if target then
        return target, target.reason or "ip", "stale"
    elseif target == false then
        return decide_lists(self, addr, nil, nil, nil, "stale")
    end
    return decide_lists(self, addr, nil, nil, failure, nil)
end

-- One identity in the cache-only pass of decide_ids: its gray decision
-- when no identity before it is unknown, whether any is unknown so far, and
-- the first identity present and its value (for the percentage), the value
-- read and its key when built (false: not a key; nil: not built), which the
-- miss path reuses (an ngx.var read costs ~1,000 instructions). id may be
-- nil (past the last identity).
local function id_from_cache(self, now, id, unknown, pid, pv)
    if id == nil then
        return nil, unknown, pid, pv, nil, nil
    end
    local v = id_value(id)
    if not v then
        return nil, unknown, pid, pv, nil, nil
    end
    local target
    if self.use_fresh then
        target = cache_get(id.cache, v, now)
    end
    local key
    if target == nil then
        -- not cached: a usable value must be asked for, junk is as absent
        key = id_key(id, v) or false
        if not key then
            return nil, unknown, pid, pv, v, false
        end
        unknown = true
    elseif target and not unknown then
        return target, unknown, pid or id, pv or v, v, nil
    end
    if pid then
        return nil, unknown, pid, pv, v, key
    end
    return nil, unknown, id, v, v, key
end

-- The miss path of decide_ids without a shared cache: one table per
-- request, no loop (a loop of a few turns aborts the request's trace), one
-- lookup (get_keys: one round trip on one server). Slots: the identities
-- in order, then the address (right after the last one), SLOT fields each
-- from f = (i - 1) * SLOT:
--   f+1 the memcached key asked (false: none), f+2 its position in the
--   lookup, f+3 the decision (nil: unknown), f+4 the cache, f+5 the key in
--   it, f+6 the stale decision, f+7 when that was stored
local SLOT = 7

-- Opens slot f: the decision when the cache has it (and fresh life is
-- on), else the key joins the lookup. Returns the lookup's key count.
local function slot_open(self, st, f, cache, ckey, key, target, stale, stored_at, n)
    st[f + 4], st[f + 5] = cache, ckey
    if target == nil or not self.use_fresh then
        n = n + 1
        st[f + 1], st[f + 2], st[f + 3], st[f + 6], st[f + 7] = key, n, nil, stale, stored_at
        return n
    end
    st[f + 1], st[f + 3] = false, target
    return n
end

-- An identity's slot, from its value v (nil: absent) and its key (nil: not
-- built yet; false: v is not a key).
local function slot_id(self, st, f, id, v, key, now, n)
    if key == nil then
        key = v and id_key(id, v)
    end
    if not key then
        st[f + 1], st[f + 3] = false, nil
        return n
    end
    if not self.use_fresh then
        -- asked whatever the cache holds; a stale decision is looked up
        -- only if memcached fails (stale_of)
        n = slot_open(self, st, f, id.cache, v, key, nil, nil, nil, n)
        return n    -- not a tail call: see decide_rules
    end
    local target, stale, stored_at = id.cache:get(v, now)
    n = slot_open(self, st, f, id.cache, v, key, target, stale, stored_at, n)
    return n
end

-- Closes slot f with the lookup's answer: the decision (cached), or after
-- a failure its stale decision if recent enough. Returns failure, source.
local function slot_close(self, st, f, res, failed, now, failure, source)
    local key = st[f + 1]
    if not key then
        return failure, source
    end
    local pos = st[f + 2]
    local kind = failed and failed[pos]
    if kind and kind ~= "value" then
        failure = failure or failure_of(kind)
        local stale = stale_of(self, st[f + 4], st[f + 5], st[f + 6], st[f + 7])
        if stale ~= nil then
            st[f + 3] = stale
            source = "stale"
        end
        return failure, source
    end
    -- an oversized value is an answer, just not a membership one
    local value = res[pos]
    local target = decision_of(self, key, kind ~= "value" and value or "")
    st[f + 4]:set(st[f + 5], target, (value or kind) and self.pos_ttl or self.neg_ttl, now)
    st[f + 3] = target
    return failure, source
end

-- The decision from the slots (stride S, the address's at af), in
-- precedence order: the identities', the address's, then the lists.
local function slots_decide(self, st, S, af, addr, pid, pv, failure, source)
    local ids = self.ids
    local d = st[3]
    if d then return d, d.reason or ids[1].reason, source end
    d = ids[2] and st[S + 3]
    if d then return d, d.reason or ids[2].reason, source end
    d = ids[3] and st[2 * S + 3]
    if d then return d, d.reason or ids[3].reason, source end
    d = ids[4] and st[3 * S + 3]
    if d then return d, d.reason or ids[4].reason, source end
    d = st[af + 3]
    if d then return d, d.reason or "ip", source end
    local reason
    d, reason, source = decide_lists(self, addr, pid, pv, failure, source)  -- not a tail call
    return d, reason, source
end

-- Slot tables to reuse, by the number of identities (a table's layout
-- depends on nothing else): a request holds one across its lookup's yield,
-- so each worker keeps as many as it has misses in flight, at most
-- POOL_MAX per count. Every field a request reads it has written first
-- (slot_open, slot_id: the decision's field too).
local POOL_MAX = 64
local pools = { { n = 0 }, { n = 0 }, { n = 0 }, { n = 0 } }

-- The one lookup of a miss with identities: the n (>= 1) keys asked, in
-- the slots of st (S fields each, the address's at af; a key false: not
-- asked), a plain get for one (no mn to end a pipeline), else the meta
-- pipeline built from them in C, each key its position in it. Returns the
-- answers and the failures by position (nil: none) and an error text; the
-- answers of several are the client's table: read them before any yield.
local function ask_slots(self, st, S, af, n, timeout)
    local ids = self.ids
    if n == 1 then
        local value, err, kind = self.mc:get(st[1] or (ids[2] and st[S + 1])
                                             or (ids[3] and st[2 * S + 1])
                                             or (ids[4] and st[3 * S + 1]) or st[af + 1],
                                             timeout)
        return { value or false }, value == nil and { kind } or nil, err
    end
    local res, failed, err = self.mc:get_list(n, st[1] or nil, ids[2] and st[S + 1] or nil,
                                              ids[3] and st[2 * S + 1] or nil,
                                              ids[4] and st[3 * S + 1] or nil,
                                              st[af + 1] or nil, timeout)
    return res, failed, err
end

local function decide_ids_direct(self, addr, akey, a_target, a_stale, a_stored, pid, pv, now,
                                 v1, v2, v3, v4, k1, k2, k3, k4)
    local ids = self.ids
    -- the address's slot right after the last identity's: no room for
    -- identities the router does not have
    local af = #ids * SLOT
    local pool = pools[#ids]
    local st = pool[pool.n]
    if st then
        pool[pool.n] = nil
        pool.n = pool.n - 1
    else
        st = table_new(af + SLOT, 0)
    end
    local n = slot_id(self, st, 0, ids[1], v1, k1, now, 0)
    if ids[2] then n = slot_id(self, st, SLOT, ids[2], v2, k2, now, n) end
    if ids[3] then n = slot_id(self, st, 2 * SLOT, ids[3], v3, k3, now, n) end
    if ids[4] then n = slot_id(self, st, 3 * SLOT, ids[4], v4, k4, now, n) end
    if addr then
        n = slot_open(self, st, af, self.cache, akey, akey, a_target, a_stale, a_stored, n)
    else
        st[af + 1], st[af + 3] = false, nil
    end

    local failure, source = nil, "memcached"
    if n > 0 then
        local res, failed, ferr = ask_slots(self, st, SLOT, af, n, nil)
        now = ngx_now()
        failure, source = slot_close(self, st, 0, res, failed, now, failure, source)
        if ids[2] then
            failure, source = slot_close(self, st, SLOT, res, failed, now, failure, source)
        end
        if ids[3] then
            failure, source = slot_close(self, st, 2 * SLOT, res, failed, now, failure, source)
        end
        if ids[4] then
            failure, source = slot_close(self, st, 3 * SLOT, res, failed, now, failure, source)
        end
        failure, source = slot_close(self, st, af, res, failed, now, failure, source)
        if failure or (failed and ferr) then
            self.log:report(failure or "value", tostring(ferr))
        end
    end

    local d, reason
    d, reason, source = slots_decide(self, st, SLOT, af, addr, pid, pv, failure, source)
    if pool.n < POOL_MAX then
        pool.n = pool.n + 1
        pool[pool.n] = st
    end
    return d, reason, source
end

-- The miss path of decide_ids with a shared cache: decide_ids_direct's
-- slots (SHARED_SLOT fields each: SLOT's, then f+8 the lock (true: this
-- worker's; nil: none could be taken; false: another worker's), f+9 the
-- stored_at of the expired dict entry seen, f+10 the memcached error kind
-- of a failed wait), each key through the shared cache's protocol one call
-- at a time, straight-line: the dict, the key's lock; waits for the other
-- workers' decisions only when this worker holds no lock (as fetch_many);
-- then one lookup for the keys left, each stored at both levels and
-- unlocked.
local SHARED_SLOT = 10
local shared_pass_one, shared_wait_one, shared_release, ms_left = shcache.pass_one,
    shcache.wait_one, shcache.release, shcache.ms_left
local shared_wait_deadline = shcache.wait_deadline
local WAIT_FAILED = "the worker asking memcached failed or timed out"

-- Slot f's step in the dict: its decision, or its lock. Returns the counts
-- of keys this worker asks about (nask) and of keys others do (nother).
local function slot_share(self, st, f, now, nask, nother)
    local key = st[f + 1]
    if not key then
        return nask, nother
    end
    local target, held, seen, stale, stored_at = shared_pass_one(self.shared, st[f + 4],
                                                                 st[f + 5], key, now)
    if target ~= nil then
        st[f + 1], st[f + 3] = false, target
        return nask, nother
    end
    st[f + 8], st[f + 9] = held, seen
    if stale ~= nil and (st[f + 6] == nil or stored_at > st[f + 7]) then
        st[f + 6], st[f + 7] = stale, stored_at     -- the newer stale decision
    end
    if held == false then
        return nask, nother + 1
    end
    return nask + 1, nother
end

-- Slot f, another worker's key: waits for that worker's decision (until
-- deadline). A failed wait leaves the lookup (f+10: its kind); a lost
-- decision stays in it, asked for in the time left (slot_lost: none).
local function slot_wait(self, st, f, deadline)
    local key = st[f + 1]
    if not key or st[f + 8] ~= false then
        return
    end
    local target, kind = shared_wait_one(self.shared, st[f + 4], st[f + 5], key, deadline,
                                         st[f + 9])
    if target ~= nil then
        st[f + 1], st[f + 3] = false, target
    elseif kind ~= "lost" then
        st[f + 1], st[f + 10] = false, kind
    end
end

-- Slot f after the waits with no time left: a lost decision is a failure.
local function slot_lost(st, f)
    if st[f + 1] and st[f + 8] == false then
        st[f + 1], st[f + 10] = false, "error"
    end
end

-- Slot f's position in the lookup, if it is in it. Returns the count.
local function slot_place(st, f, n)
    if st[f + 1] then
        n = n + 1
        st[f + 2] = n
    end
    return n
end

-- Closes slot f as slot_close does, storing its decision at both levels
-- and letting go of its lock (saying why the lookup failed, if it did).
local function slot_settle(self, st, f, res, failed, now, failure, source)
    local key, wkind = st[f + 1], st[f + 10]
    if not key and not wkind then
        return failure, source
    end
    local kind = wkind or (failed and failed[st[f + 2]])
    if kind and kind ~= "value" then
        local why = failure_of(kind)
        failure = failure or why
        local stale = stale_of(self, st[f + 4], st[f + 5], st[f + 6], st[f + 7])
        if stale ~= nil then
            st[f + 3] = stale
            source = "stale"
        end
        if key then
            shared_release(self.shared, key, st[f + 8], why)
        end
        return failure, source
    end
    -- an oversized value is an answer, just not a membership one
    local value = res[st[f + 2]]
    local target = decision_of(self, key, kind ~= "value" and value or "")
    self.shared:store(st[f + 4], st[f + 5], key, target, now, (value or kind) and true)
    st[f + 3] = target
    shared_release(self.shared, key, st[f + 8], nil)
    return failure, source
end

local function decide_ids_shared(self, addr, akey, a_target, a_stale, a_stored, pid, pv, now,
                                 v1, v2, v3, v4, k1, k2, k3, k4)
    local ids = self.ids
    local S = SHARED_SLOT
    local af = #ids * S
    local st = table_new(af + S, 0)
    slot_id(self, st, 0, ids[1], v1, k1, now, 0)
    if ids[2] then slot_id(self, st, S, ids[2], v2, k2, now, 0) end
    if ids[3] then slot_id(self, st, 2 * S, ids[3], v3, k3, now, 0) end
    if ids[4] then slot_id(self, st, 3 * S, ids[4], v4, k4, now, 0) end
    if addr then
        slot_open(self, st, af, self.cache, akey, akey, a_target, a_stale, a_stored, 0)
    else
        st[af + 1] = false
    end

    -- the dict, and the locks (positions in the lookup: slot_place below)
    local nask, nother = slot_share(self, st, 0, now, 0, 0)
    if ids[2] then nask, nother = slot_share(self, st, S, now, nask, nother) end
    if ids[3] then nask, nother = slot_share(self, st, 2 * S, now, nask, nother) end
    if ids[4] then nask, nother = slot_share(self, st, 3 * S, now, nask, nother) end
    nask, nother = slot_share(self, st, af, now, nask, nother)

    -- other workers ask about every key left: their decisions, within one
    -- deadline for the waits and what is asked after them
    local timeout, ferr = nil, nil
    if nask == 0 and nother > 0 then
        local deadline = shared_wait_deadline(self.shared, ngx_now())
        slot_wait(self, st, 0, deadline)
        if ids[2] then slot_wait(self, st, S, deadline) end
        if ids[3] then slot_wait(self, st, 2 * S, deadline) end
        if ids[4] then slot_wait(self, st, 3 * S, deadline) end
        slot_wait(self, st, af, deadline)
        timeout = ms_left(deadline)
        if not timeout then
            -- the lost decisions have no time left to be asked for
            slot_lost(st, 0)
            if ids[2] then slot_lost(st, S) end
            if ids[3] then slot_lost(st, 2 * S) end
            if ids[4] then slot_lost(st, 3 * S) end
            slot_lost(st, af)
        end
        if st[10] or (ids[2] and st[S + 10]) or (ids[3] and st[2 * S + 10])
           or (ids[4] and st[3 * S + 10]) or st[af + 10] then
            ferr = WAIT_FAILED
        end
    end

    -- the keys left, in one lookup
    local n = slot_place(st, 0, 0)
    if ids[2] then n = slot_place(st, S, n) end
    if ids[3] then n = slot_place(st, 2 * S, n) end
    if ids[4] then n = slot_place(st, 3 * S, n) end
    n = slot_place(st, af, n)
    local failure, source = nil, "memcached"
    local res, failed = EMPTY, nil
    if n == 0 then
        source = "shm"
    else
        res, failed, ferr = ask_slots(self, st, S, af, n, timeout)
    end
    now = ngx_now()
    failure, source = slot_settle(self, st, 0, res, failed, now, failure, source)
    if ids[2] then failure, source = slot_settle(self, st, S, res, failed, now, failure, source) end
    if ids[3] then
        failure, source = slot_settle(self, st, 2 * S, res, failed, now, failure, source)
    end
    if ids[4] then
        failure, source = slot_settle(self, st, 3 * S, res, failed, now, failure, source)
    end
    failure, source = slot_settle(self, st, af, res, failed, now, failure, source)
    if failure or (failed and ferr) then
        self.log:report(failure or "value", tostring(ferr))
    end
    local d, reason
    d, reason, source = slots_decide(self, st, S, af, addr, pid, pv, failure, source)
    return d, reason, source
end

-- Identities and the address. The first identity (in the order of `ids`)
-- with a gray entry decides, then the address's entry; the entries not in
-- the caches are asked for, all of them in one multi-get.
local function decide_ids(self, addr, a_target, a_stale, a_stored, now)
    local ids = self.ids
    local akey = addr
    if addr then
        akey, a_target, a_stale, a_stored = address_entry(self, addr, a_target, a_stale, a_stored,
                                                          now)
    end

    -- from the caches alone, while nothing before is unknown. Straight-line
    -- over the (at most 4) identities, not a loop: LuaJIT cannot trace a
    -- loop of one or two turns inside the request's trace (it aborts:
    -- "leaving loop in root trace") and the request would run interpreted.
    local t, unknown, pid, pv, v1, k1 = id_from_cache(self, now, ids[1], false, nil, nil)
    if t then return t, t.reason or ids[1].reason, "cache" end
    local v2, v3, v4, k2, k3, k4
    t, unknown, pid, pv, v2, k2 = id_from_cache(self, now, ids[2], unknown, pid, pv)
    if t then return t, t.reason or ids[2].reason, "cache" end
    t, unknown, pid, pv, v3, k3 = id_from_cache(self, now, ids[3], unknown, pid, pv)
    if t then return t, t.reason or ids[3].reason, "cache" end
    t, unknown, pid, pv, v4, k4 = id_from_cache(self, now, ids[4], unknown, pid, pv)
    if t then return t, t.reason or ids[4].reason, "cache" end
    if not unknown then
        if a_target then
            return a_target, a_target.reason or "ip", "cache"
        elseif a_target == false or not addr then
            return decide_lists(self, addr, pid, pv, nil, "cache")
        end
    end

    -- some entry is unknown: ask memcached for every unknown one at once
    local err = needs_cosockets()
    if err then
        return nil, err
    end
    if not self.shared then
        return decide_ids_direct(self, addr, akey, a_target, a_stale, a_stored, pid, pv, now,
                                 v1, v2, v3, v4, k1, k2, k3, k4)
    end
    local reason, source
    t, reason, source = decide_ids_shared(self, addr, akey, a_target, a_stale, a_stored, pid, pv,
                                          now, v1, v2, v3, v4, k1, k2, k3, k4)
    return t, reason, source
end

-- The location an override value names: "always" / "never" (any case) or
-- a target name; nil for anything else.
local function force_target(self, v)
    local n = #v
    if n == 6 or n == 5 then
        local word = v:lower()
        if word == "always" then
            return self.default_target
        elseif word == "never" then
            return self.stable_target
        end
    end
    return self.targets[v]
end

-- The tester override: the force header or cookie holding a token signed
-- with secret_file (of context "force": its target), or, from a client
-- whose resolved address (addr, after the trusted-proxy walk) is in
-- force_from, "always", "never" or a target name. Anything else is no
-- override.
local function forced(self, addr)
    local v = ngx_var[self.force_var]
    if v == nil or v == "" then
        return nil
    end
    if self.secret then
        local subject = token_check("force", self.secret, v, ngx_time())
        if subject then
            return force_target(self, subject)
        end
    end
    if self.force_from and addr and ip_in(self.force_from, addr) then
        return force_target(self, v)
    end
    return nil
end

--- The decision for this request, as gray.decide documents it: the
-- decision record (location, name, reason), the reason, the source; nil,
-- err in a phase without cosockets on a cache miss.
local function decide_rules(self)
    -- the clock the worker's caches are read by, once per request (nothing
    -- yields before they are); with no fresh life every entry is stale
    -- whenever it is read, and no clock is needed to say so
    local now = self.use_fresh and ngx_now() or ALL_STALE
    -- the probe hands back the entry of an address already in the cache
    local addr, target, stale, stored_at = client_key_of(self.client, self.probe, now)
    if self.force_var then
        local forced_to = forced(self, addr)
        if forced_to then
            return forced_to, "force"
        end
    end
    if self.ids then
        -- not tail calls: LuaJIT counts more than 15 in one trace as a
        -- loop (and aborts it); resty.core's shdict and ngx.now make many
        local reason, source
        target, reason, source = decide_ids(self, addr, target, stale, stored_at, now)
        return target, reason, source
    end
    if not addr then
        return self.stable_target, "no-client"
    end
    return decide_address(self, addr, target, stale, stored_at, now)
end

_M.decide = decide_rules

return _M
