-- gray: the gray-release router. Build one router per configuration and
-- reuse it; per request it picks the client address (trusted proxies only),
-- looks its decision up in a per-worker cache, then asks memcached, and
-- answers with the location to go to and why. It never fails a request: any
-- trouble with memcached routes to the stable location (or a recent cached
-- answer), within one deadline (`timeout`).
--
--   local router = assert(gray.new({ memcached = "127.0.0.1:11211" }))
--   local target, reason, source = router:decide()
--   router:exec()      -- decide() then ngx.exec(target)

local gray_ffi = require "gray.ffi"
local options = require "gray.options"
local util = require "gray.util"
local option_error, worded = util.option_error, util.worded
local client = require "gray.client"
local ids_mod = require "gray.ids"
local lists_mod = require "gray.lists"
local metrics = require "gray.metrics"
local count_decision = metrics.decision
local count = metrics.incr
local note_outcome = require("gray.outcome").note
local client_key_of = client.key
local gray_log = require "gray.log"
local lrucache = require "resty.lrucache"
local gray_cache = require "gray.cache"
local shcache = require "gray.shcache"
-- looked up once: a method call would go through the metatables
local lru_get, cache_get = lrucache.get, gray_cache.get

local ngx = ngx
local ngx_now = ngx.now
local ngx_time = ngx.time
local ngx_exec = ngx.exec
local get_phase = ngx.get_phase
local worker_exiting = ngx.worker.exiting
local ngx_var = ngx.var
local ngx_header = ngx.header
local id_value, id_key = ids_mod.value, ids_mod.key
local list_range, list_listed, in_percent = lists_mod.range, lists_mod.listed,
    lists_mod.in_percent
local has_list, has_idlists, has_ranges, percent_on = lists_mod.has_list,
    lists_mod.has_idlists, lists_mod.has_ranges, lists_mod.percent_on
local ip_in = gray_ffi.peer_trusted
local token_check = gray_ffi.token_check
local ngx_log = ngx.log
local WARN = ngx.WARN
local pairs, ipairs, tostring = pairs, ipairs, tostring
local setmetatable = setmetatable
local math_max = math.max
local format, concat, sort = string.format, table.concat, table.sort
local ok_new, table_new = pcall(require, "table.new")
if not ok_new then
    table_new = function() return {} end
end

local _M = { _VERSION = "0.1.0", VERSION = "0.1.0" }
local mt = { __index = _M }

-- Every option and its default (gray.options, where they are checked).
_M.DEFAULTS = options.DEFAULTS
_M.check_location = options.check_location

-- Phases where a cache miss can ask memcached (cosockets are enabled).
local COSOCKET_PHASES = {
    rewrite = true, access = true, content = true, timer = true,
    ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}

-- A decision: where a rule sends the client (location), the target name
-- that got it there (name: the label of $gray_target_name and the metrics)
-- and, for the unknown-target decision only, the reason that replaces the
-- rule's (else false). One record per target name and router, made here
-- once: the caches hold these records, never what memcached sent, so a hit
-- allocates nothing.
local function new_decision(name, location, reason)
    return { location = location, name = name, reason = reason or false }
end

-- The decisions into self: by target name ("1", the default target,
-- `targets`, and "stable", reserved: pinned to the stable location), and
-- by index as the compiled lists number them. Returns the target names in
-- that order: index 1 is "1", the last "stable"; the unknown-target
-- decision comes after them.
local function build_decisions(self, o)
    self.targets = { ["1"] = new_decision("1", o.target),
                     stable = new_decision("stable", o.stable) }
    for name, location in pairs(o.targets) do
        self.targets[name] = new_decision(name, location)
    end
    self.default_target = self.targets["1"]
    self.stable_target = self.targets.stable
    -- a value naming no target: stable, whatever the later rules say
    self.unknown_target = new_decision("stable", o.stable, "unknown-target")
    -- the metrics' labels: target name -> itself
    self.target_names = {}
    for name in pairs(self.targets) do
        self.target_names[name] = name
    end
    local names = { "1" }
    for name in pairs(self.targets) do
        if name ~= "1" and name ~= "stable" then
            names[#names + 1] = name
        end
    end
    sort(names, function(a, b) return a == "1" or (b ~= "1" and a < b) end)
    names[#names + 1] = "stable"
    self.decisions = {}
    for i, name in ipairs(names) do
        self.decisions[i] = self.targets[name]
    end
    self.decisions[#names + 1] = self.unknown_target
    return names
end

-- The per-worker caches into self (its key_prefix and ids set): cache_ttl,
-- neg_ttl, stale_ttl, cache_size; and the log (log_interval).
local function build_cache(self, o)
    local cache_ttl, neg_ttl = o.cache_ttl, o.neg_ttl
    -- lrucache keeps an entry until ttl, then returns it as stale until it
    -- is evicted; a ttl of 0 would still count as fresh within the same
    -- millisecond, so "no fresh life" is a slightly negative ttl instead.
    self.pos_ttl = cache_ttl > 0 and cache_ttl or -0.001
    self.neg_ttl = neg_ttl > 0 and neg_ttl or -0.001
    self.use_fresh = cache_ttl > 0 or neg_ttl > 0
    self.stale_limit = math_max(cache_ttl, neg_ttl) + o.stale_ttl
    -- an entry holds a decision (a record of self.targets, the
    -- unknown-target one, or false), never what memcached sent
    self.cache = lrucache.new(o.cache_size)
    self.log = gray_log.new(o.log_interval)
    -- Only canonical addresses are keys of self.cache (identities, lists
    -- and the like must never share it), so a header or peer whose text is
    -- a key there is known to be that address: gray.client then skips its
    -- parse. With a key_prefix no raw text can match.
    self.probe = not self.key_prefix and self.cache
    -- each identity's decisions in a cache of its own, keyed by the raw
    -- value: a hit needs no key built and no key check (only values that
    -- passed the check get in)
    for _, id in ipairs(self.ids or {}) do
        id.cache = gray_cache.new(o.cache_size)
    end
end

-- The cache shared by the workers (option shm), or false. Its entries are
-- set apart from other routers' in the same dict by a namespace: a hash of
-- what gives a key its decision here (servers, placement, targets).
local function build_shared(self, o, names)
    self.shared = false
    if o.shm == false then
        return true
    end
    -- the servers as parsed ("a,b" and "a, b" are one cluster), their
    -- placement, what counts as a value (value_max), and the targets
    local parts = { tostring(o.distribution), tostring(o.value_max) }
    for _, srv in ipairs(self.mc.servers) do
        parts[#parts + 1] = srv.name .. "/" .. tostring(srv.weight)
    end
    -- the decisions by index, as the compiled lists number them; the last
    -- one is the unknown-target decision
    for i, name in ipairs(names) do
        parts[#parts + 1] = name .. "=" .. self.decisions[i].location
    end
    parts[#parts + 1] = "?=" .. self.stable
    local shared, err = shcache.new({
        dict = o.shm, locations = self.decisions,
        namespace = format("g%08x", gray_ffi.murmur3(concat(parts, "\n"))),
        pos_ttl = self.pos_ttl, neg_ttl = self.neg_ttl, keep = self.stale_limit,
        timeout = self.mc.timeout,
    })
    if not shared then
        return option_error("shm", err)
    end
    self.shared = shared
    return true
end

--- Builds a router from options (gray.options checks them); nil and the
-- refusal record (gray.util) of a bad one, which gray.dep words with the
-- nginx variable's name.
local function new_router(opts)
    local o, err = options.check(opts)
    if not o then
        return nil, err
    end
    local self = {
        mc = o.mc, client = o.client, stable = o.stable, ids = o.ids,
        force_var = o.force_var, force_from = o.force_from, secret = o.secret,
        debug_header = o.debug_header, metrics_shm = o.metrics_shm,
        -- false, not nil: a field that is present costs the JIT no metatable lookup
        key_prefix = o.key_prefix ~= "" and o.key_prefix or false,
        metrics = false,        -- on once started and the dict exists
        started = false,        -- the list refresh and the metrics' timers
    }
    for _, id in ipairs(self.ids or {}) do
        id.secret = self.secret
    end
    local names = build_decisions(self, o)
    build_cache(self, o)
    local ok
    ok, err = build_shared(self, o, names)
    if not ok then
        return nil, err
    end
    self.lists, err = lists_mod.new({
        mc = self.mc, ranges_key = o.ranges_key, percent_key = o.percent_key,
        lists = o.lists or nil, interval = o.refresh_interval, timeout = o.refresh_timeout,
        max_bytes = o.list_max, names = names, decisions = self.decisions,
        unknown = self.unknown_target, log = self.log, dir = o.lists_dir,
        distribution = o.distribution,
    })
    if not self.lists then
        return option_error("lists_dir", err)
    end
    return setmetatable(self, mt)
end
_M._new = new_router

--- Builds a router. Every option is checked; nil, err names the bad one.
_M.new = worded(new_router, options.text)

--- The memcached key for this request: the canonical client address (with
-- key_prefix), or nil when there is none (a unix-socket peer).
local function client_key(self)
    local key = client_key_of(self.client)
    if key and self.key_prefix then
        key = self.key_prefix .. key
    end
    return key
end
_M.client_key = client_key

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
                    .. value:sub(1, 40) .. "' (known: 1, stable and the names in targets);"
                    .. " sent to the stable location")
    return self.unknown_target
end

-- Keeps a decision taken from the shared cache in this worker's cache
-- (self.cache, or an identity's) for as long as it is fresh there (ttl from
-- stored_at: the TTL its writer gave it). An expired one goes in as stale.
local function keep_shared(self, cache, ckey, decision, stored_at, ttl)
    if cache == self.cache then
        cache:set(ckey, decision, stored_at + ttl - ngx_now(), stored_at)
    else
        cache:set(ckey, decision, ttl, stored_at)
    end
end

-- A shared-dict write, lock or wait that failed (a dict too small for its
-- entries): the request asks memcached instead, and this is logged once per
-- log_interval.
local function shm_failed(self, what, err)
    self.log:report("shm", "lua_shared_dict " .. self.shared.name .. ": " .. what .. " ("
                    .. tostring(err) .. "), so memcached was asked instead: make the dict"
                    .. " larger")
end

-- Milliseconds left before deadline, or nil when none is (less than 1 ms).
local function ms_left(deadline)
    local left = (deadline - ngx_now()) * 1000
    if left < 1 then
        return nil
    end
    return left
end

-- Waits for the worker that asks memcached about key (it holds the shared
-- lock): its decision, kept in cache under ckey, or nil, failure
-- ("store-down", "store-error") when its lookup failed or time ran out, or
-- nil, "lost" when the lock went without a decision (logged: the caller
-- asks memcached itself in the time left).
local function wait_shared(self, cache, ckey, key, deadline, seen)
    local shared = self.shared
    if self.metrics then
        count("gray_shm_waits_total")
    end
    local target, stored_at, ttl = shared:wait(key, deadline, seen)
    if target == nil then
        if stored_at == "lost" then
            shm_failed(self, "another worker's decision for " .. key .. " is not in it",
                       "not stored, or evicted")
        end
        return nil, stored_at
    end
    keep_shared(self, cache, ckey, target, stored_at, ttl)
    return target
end

-- After trying key's lock (held: whether this worker took it): the decision
-- another worker stored between this worker's look and its lock, kept in
-- cache under ckey (the lock is let go); else nil.
local function shared_since(self, cache, ckey, key, held)
    local target, _, stored_at, ttl = self.shared:get(key, ngx_now())
    if target ~= nil then
        if held then
            self.shared:unlock(key)
        end
        keep_shared(self, cache, ckey, target, stored_at, ttl)
    end
    return target
end

-- The failure reason of a memcached error kind: "store-down" while the
-- server's breaker is open, else "store-error".
local function failure_of(kind)
    return kind == "down" and "store-down" or "store-error"
end

-- Asks memcached for one key and caches the decision. Returns the decision
-- (a location or false), or nil, failure reason ("store-error",
-- "store-down") when memcached failed; stale decisions are the caller's.
-- With a shared cache, only the worker holding the key's lock asks; the
-- others wait for its decision (source "shm"). seen: the stored_at of the
-- expired entry found in the shared cache, if any.
local function fetch_one(self, cache, key, seen)
    local shared = self.shared
    local held, timeout = false, nil
    if shared then
        local lerr
        held, lerr = shared:lock(key)
        if held == false then
            local deadline = ngx_now() + self.mc.timeout / 1000
            local target, failure = wait_shared(self, cache, key, key, deadline, seen)
            if failure ~= "lost" then
                return target, failure, "shm"
            end
            -- the holder's decision is lost: ask memcached within the
            -- same deadline, holding nothing
            timeout = ms_left(deadline)
            if not timeout then
                return nil, "store-error", "shm"
            end
            held = nil
        elseif held == nil then
            shm_failed(self, "no lock for " .. key, lerr)
        end
        local target = shared_since(self, cache, key, key, held)
        if target ~= nil then
            return target, nil, "shm"
        end
    end
    local value, err, kind = self.mc:get(key, timeout)
    if kind == "value" then
        -- an oversized value is an answer, just not a membership one
        self.log:report(kind, err)
        value = ""
    end
    if value == nil then
        local failure = failure_of(kind)
        if held and not shared:unlock(key, failure) then
            shm_failed(self, "no room to tell the waiting workers why " .. key .. " failed",
                       "no memory")
        end
        self.log:report(kind, err)
        return nil, failure
    end
    local target = decision_of(self, key, value)
    -- the entry keeps when it was stored, which bounds its stale use
    local now = ngx_now()
    cache:set(key, target, value and self.pos_ttl or self.neg_ttl, now)
    if shared then
        local ok, serr = shared:set(key, target, now, value and true)
        if not ok then
            shm_failed(self, "the decision for " .. key .. " could not be stored", serr)
        end
        if held then
            shared:unlock(key)
        end
    end
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

-- The rules below the memcached entries: id lists, ranges, percentage.
-- pkey is the percentage's identity key (the first identity present, else
-- the canonical address); failure, when memcached failed for an entry,
-- replaces "default".
-- The location an id list gives this request's value of identity id, or
-- nil (id may be nil: past the last identity).
local function listed(lists, id)
    if id == nil or not has_list(lists, id.name) then
        return nil
    end
    local v = id_value(id)
    return v and list_listed(lists, id.name, v)
end

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

-- The address alone (no identities): the fast path of the classic dep.lua setup.
local function decide_address(self, addr, target, stale, stored_at)
    local key = addr
    if target == nil and stale == nil then
        if self.key_prefix then
            key = self.key_prefix .. addr
        end
        if self.use_fresh then
            -- an expired entry comes back as stale, for use if memcached fails
            target, stale, stored_at = lru_get(self.cache, key)
        end
    end
    if target then
        return target, target.reason or "ip", "cache"
    elseif target == false then
        return decide_lists(self, addr, nil, nil, nil, "cache")
    end
    local shared, seen = self.shared, nil
    if shared then
        -- another worker may have asked memcached already
        local s_stale, s_ttl
        target, s_stale, seen, s_ttl = shared:get(key, ngx_now())
        if target ~= nil then
            keep_shared(self, self.cache, key, target, seen, s_ttl)
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

-- The shared cache's part in a multi-key lookup: the keys it knows leave
-- pending for known (and this worker's cache); their stale decisions stand
-- in for missing ones of this worker. Of the rest, this worker takes the
-- lock of every key it can. If it took none (other workers ask about them
-- all) it waits for their decisions; otherwise it asks memcached about all
-- of them in one multi-get, as it would have anyway. Returns the keys to ask
-- memcached for, the keys locked (or false), the keys that failed while
-- waiting (or nil), and the ms left for asking (nil: the whole timeout).
-- A key whose holder's decision was lost is asked for after the waits.
local function shared_pass(self, keys, pending, known, now)
    local shared = self.shared
    local rest, others, mine, ask = {}, {}, false, false
    for i = 1, #keys do
        local key = keys[i]
        local p = pending[key]
        local target, stale, stored_at, ttl = shared:get(key, now)
        local held, lerr
        if target == nil then
            held, lerr = shared:lock(key)   -- nil: a full dict, ask holding nothing
            if held == nil then
                shm_failed(self, "no lock for " .. key, lerr)
            end
        end
        if target == nil and held ~= false then
            target = shared_since(self, p[1], p[2], key, held)
            if target == nil then
                if held then
                    mine = mine or {}
                    mine[#mine + 1] = key
                end
                ask = true
                rest[#rest + 1] = key
            end
        elseif target == nil then
            others[#others + 1] = key
            rest[#rest + 1] = key
            p[5] = stored_at            -- what it saw: wait for a newer one
        else
            keep_shared(self, p[1], p[2], target, stored_at, ttl)
        end
        if target ~= nil then
            known[key] = target
            pending[key] = nil
        elseif stale ~= nil and (p[3] == nil or stored_at > p[4]) then
            p[3], p[4] = stale, stored_at   -- the newer stale decision
        end
    end
    if ask or #rest == 0 then
        return rest, mine, nil
    end
    -- one deadline for all the waits and what is asked after them, as for
    -- one multi-get
    local failed, lost, deadline = nil, {}, ngx_now() + self.mc.timeout / 1000
    for i = 1, #others do
        local key = others[i]
        local p = pending[key]
        local target, failure = wait_shared(self, p[1], p[2], key, deadline, p[5])
        if failure == "lost" then
            lost[#lost + 1] = key
        elseif target == nil then
            failed = failed or {}
            failed[key] = failure == "store-down" and "down" or "error"
        else
            known[key] = target
            pending[key] = nil
        end
    end
    if #lost == 0 then
        return lost, false, failed
    end
    local left = ms_left(deadline)
    if not left then
        failed = failed or {}
        for i = 1, #lost do
            failed[lost[i]] = "error"
        end
        return {}, false, failed
    end
    return lost, false, failed, left
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
-- on), else the key joins the lookup. Returns the lookup's keys and count.
local function slot_open(self, st, f, cache, ckey, key, target, stale, stored_at, keystr, n)
    st[f + 4], st[f + 5] = cache, ckey
    if target == nil or not self.use_fresh then
        n = n + 1
        st[f + 1], st[f + 2], st[f + 6], st[f + 7] = key, n, stale, stored_at
        return n == 1 and key or keystr .. " " .. key, n
    end
    st[f + 1], st[f + 3] = false, target
    return keystr, n
end

-- An identity's slot, from its value v (nil: absent) and its key (nil: not
-- built yet; false: v is not a key).
local function slot_id(self, st, f, id, v, key, now, keystr, n)
    if key == nil then
        key = v and id_key(id, v)
    end
    if not key then
        st[f + 1] = false
        return keystr, n
    end
    if not self.use_fresh then
        -- asked whatever the cache holds; a stale decision is looked up
        -- only if memcached fails (stale_of)
        return slot_open(self, st, f, id.cache, v, key, nil, nil, nil, keystr, n)
    end
    local target, stale, stored_at = id.cache:get(v, now)
    return slot_open(self, st, f, id.cache, v, key, target, stale, stored_at, keystr, n)
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

local function decide_ids_direct(self, addr, akey, a_target, a_stale, a_stored, pid, pv, now,
                                 v1, v2, v3, v4, k1, k2, k3, k4)
    local ids = self.ids
    -- the address's slot right after the last identity's: no room for
    -- identities the router does not have (the table is the miss's garbage)
    local af = #ids * SLOT
    local st = table_new(af + SLOT, 0)
    local keystr, n = nil, 0
    keystr, n = slot_id(self, st, 0, ids[1], v1, k1, now, keystr, n)
    if ids[2] then keystr, n = slot_id(self, st, SLOT, ids[2], v2, k2, now, keystr, n) end
    if ids[3] then keystr, n = slot_id(self, st, 2 * SLOT, ids[3], v3, k3, now, keystr, n) end
    if ids[4] then keystr, n = slot_id(self, st, 3 * SLOT, ids[4], v4, k4, now, keystr, n) end
    if addr then
        keystr, n = slot_open(self, st, af, self.cache, akey, akey, a_target, a_stale,
                              a_stored, keystr, n)
    else
        st[af + 1] = false
    end

    local failure, source = nil, "memcached"
    if n > 0 then
        local res, failed, ferr
        if n == 1 then
            -- one key: a plain get (no mn to end a pipeline)
            local value, kind
            value, ferr, kind = self.mc:get(keystr)
            res = { value or false }
            failed = value == nil and { kind } or nil
        else
            res, failed, ferr = self.mc:get_keys(keystr, n)
        end
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

    local d = st[3]
    if d then return d, d.reason or ids[1].reason, source end
    d = ids[2] and st[SLOT + 3]
    if d then return d, d.reason or ids[2].reason, source end
    d = ids[3] and st[2 * SLOT + 3]
    if d then return d, d.reason or ids[3].reason, source end
    d = ids[4] and st[3 * SLOT + 3]
    if d then return d, d.reason or ids[4].reason, source end
    d = st[af + 3]
    if d then return d, d.reason or "ip", source end
    return decide_lists(self, addr, pid, pv, failure, source)
end

-- Identities and the address. The first identity (in the order of `ids`)
-- with a gray entry decides, then the address's entry; the entries not in
-- the caches are asked for, all of them in one multi-get.
local function decide_ids(self, addr, a_target, a_stale, a_stored)
    local ids = self.ids
    local akey = addr
    if addr and a_target == nil and a_stale == nil then
        if self.key_prefix then
            akey = self.key_prefix .. addr
        end
        if self.use_fresh then
            a_target, a_stale, a_stored = lru_get(self.cache, akey)
        end
    end

    -- from the caches alone, while nothing before is unknown. Straight-line
    -- over the (at most 4) identities, not a loop: LuaJIT cannot trace a
    -- loop of one or two turns inside the request's trace (it aborts:
    -- "leaving loop in root trace") and the request would run interpreted.
    local now = ngx_now()
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
    local keys, known, pending = {}, {}, {}
    for i = 1, #ids do
        local id = ids[i]
        local v = id_value(id)
        local key = v and id_key(id, v)
        if key then
            local target, stale, stored_at = id.cache:get(v, now)
            if target == nil or not self.use_fresh then
                keys[#keys + 1] = key
                pending[key] = { id.cache, v, stale, stored_at }
            else
                known[key] = target
            end
        end
    end
    if addr and (a_target == nil or not self.use_fresh) then
        keys[#keys + 1] = akey
        pending[akey] = { self.cache, akey, a_stale, a_stored }
    elseif addr then
        known[akey] = a_target
    end

    local failure, source = nil, "memcached"
    local res, failed, ferr, mine, timeout
    if self.shared then
        keys, mine, failed, timeout = shared_pass(self, keys, pending, known, now)
        if #keys == 0 then
            source = "shm"
        end
        ferr = failed and "the worker asking memcached failed or timed out" or nil
    end
    local waited = failed       -- keys whose wait failed (none asked below)
    if #keys == 1 then
        local value, kind
        value, ferr, kind = self.mc:get(keys[1], timeout)
        res = { [keys[1]] = value or nil }
        failed = value == nil and { [keys[1]] = kind } or nil
    elseif #keys > 1 then
        res, failed, ferr = self.mc:get_multi(keys, timeout and { timeout = timeout } or nil)
    end
    if waited and failed ~= waited then
        failed = failed or {}
        for key, kind in pairs(waited) do
            failed[key] = kind
        end
    end
    res = res or {}
    now = ngx_now()
    for key, p in pairs(pending) do
        local kind = failed and failed[key]
        if kind and kind ~= "value" then
            failure = failure or failure_of(kind)
            -- its stale decision, when recent enough
            local stale = stale_of(self, p[1], p[2], p[3], p[4])
            if stale ~= nil then
                known[key] = stale
                source = "stale"
            end
        else
            -- an oversized value is an answer, just not a membership one
            local value = kind ~= "value" and res[key] or ""
            local target = decision_of(self, key, value)
            p[1]:set(p[2], target, (res[key] or kind) and self.pos_ttl or self.neg_ttl, now)
            if self.shared then
                local ok, serr = self.shared:set(key, target, now, (res[key] or kind) and true)
                if not ok then
                    shm_failed(self, "the decision for " .. key .. " could not be stored", serr)
                end
            end
            known[key] = target
        end
    end
    if mine then
        for i = 1, #mine do
            local kind = failed and failed[mine[i]]
            -- a failed lookup's lock tells the waiting workers why
            if not self.shared:unlock(mine[i], kind and kind ~= "value" and failure_of(kind)) then
                shm_failed(self, "no room to tell the waiting workers why " .. mine[i]
                           .. " failed", "no memory")
            end
        end
    end
    if failure or (failed and ferr) then
        self.log:report(failure or "value", tostring(ferr))
    end

    for i = 1, #ids do
        local id = ids[i]
        local v = id_value(id)
        local key = v and id_key(id, v)
        local target = key and known[key]
        if target then
            return target, target.reason or id.reason, source
        end
    end
    local a = addr and known[akey]
    if a then
        return a, a.reason or "ip", source
    end
    return decide_lists(self, addr, pid, pv, failure, source)
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

--- Decides without side effects on the request: returns the location, the
-- reason and where the entry came from ("cache", "memcached", "stale", or
-- nil). Reasons, in precedence order: "force" (the tester override),
-- "id:<name>" (an identity's entry), "ip" (the address's entry),
-- "list:<name>" (an id list), "range", "percent", then "default" (not
-- gray), "store-error" / "store-down" (memcached failed, nothing else
-- matched) or "no-client" (no address: a unix-socket peer); an entry or
-- line naming no target is "unknown-target" (stable). nil, err where
-- a cache miss cannot ask memcached (a phase without cosockets).
local function start(self)
    self.started = true
    local lists = self.lists
    if not lists.started then
        local ok, err = lists:start()
        if not ok then
            self.log:report("timer", "cannot start the list refresh: " .. tostring(err))
        end
    end
    if self.metrics_shm then
        self.metrics = metrics.enable(self.metrics_shm)
    end
end

local function decide_rules(self)
    -- the probe hands back the entry of an address already in the cache
    local addr, target, stale, stored_at = client_key_of(self.client, self.probe)
    if self.force_var then
        local forced_to = forced(self, addr)
        if forced_to then
            return forced_to, "force"
        end
    end
    if self.ids then
        return decide_ids(self, addr, target, stale, stored_at)
    end
    if not addr then
        return self.stable_target, "no-client"
    end
    return decide_address(self, addr, target, stale, stored_at)
end

-- decide_rules, counted for gray.metrics when the dict is there: the
-- decision (a record: location, name), reason, source; nil, err.
local function decide_target(self)
    -- no timers from a worker that is shutting down: a refresh started
    -- then leaves a socket open at its exit (nginx alerts "open socket")
    if not self.started and get_phase() ~= "init" and not worker_exiting() then
        start(self)
    end
    local target, reason, source = decide_rules(self)
    if self.metrics and target then
        count_decision(target.name, self.target_names, reason, source)
    end
    return target, reason, source
end

local function decide(self)
    local target, reason, source = decide_target(self)
    if not target then
        return nil, reason
    end
    return target.location, reason, source
end

_M.decide = decide

--- decide(), then ngx.exec() to the location (with the debug header, when
-- configured).
--
-- When nginx.conf defines $gray_target_name or $gray_reason (`set` at
-- server level), exec() fills them for log_format: the target's name
-- ("stable", "1" for the default target, or a name of `targets`) and the
-- reason; each is filled if defined, whether the other is or not. Whether
-- one is defined is found once per worker; when neither is, this costs two
-- field tests per request. With the metrics dict, it notes the target for
-- gray.outcome's log phase (log_by_lua_file .../gray/outcome.lua).
local log_target_name, log_reason = nil, nil    -- nil: not known yet; then true or false

local function set_log_var(name, value)
    ngx_var[name] = value
end

-- Whether $<name> can be written (nginx.conf defines it); found once.
local function log_var_defined(name)
    local ok, err = pcall(set_log_var, name, "")
    if ok then
        return true
    elseif not tostring(err):find("not found for writing", 1, true) then
        ngx_log(WARN, "gray: $", name, " cannot be written: ", err)
    end
    return false
end

function _M.exec(self)
    local target, reason = decide_target(self)
    if not target then
        target, reason = self.stable_target, "error"
    end
    local location = target.location
    if self.debug_header then
        ngx_header[self.debug_header] = location .. "; " .. reason
    end
    if log_target_name ~= false then
        if log_target_name == nil then
            log_target_name = log_var_defined("gray_target_name")
        end
        if log_target_name then
            ngx_var.gray_target_name = target.name
        end
    end
    if log_reason ~= false then
        if log_reason == nil then
            log_reason = log_var_defined("gray_reason")
        end
        if log_reason then
            ngx_var.gray_reason = reason
        end
    end
    if self.metrics then
        -- for the log phase's gray.outcome (ngx.exec clears ngx.ctx)
        note_outcome(target.name)
    end
    return ngx_exec(location)
end

--- What the router's lists hold: ranges, list sizes, percentage, compiles.
function _M.list_stats(self)
    return self.lists:stats()
end

return _M
