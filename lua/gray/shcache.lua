-- gray.shcache: the decision cache shared by a node's workers, the second
-- level under each worker's own cache (lua-resty-mlcache's layering). A
-- worker that misses its own cache looks here before memcached, and only
-- one worker at a time asks memcached about a key: the others wait for its
-- answer (a lock per key, taken with shdict:add), so a node asks about a key
-- once per TTL rather than once per worker.
--
-- An entry is a decision, never what memcached sent: the value is the time
-- it was stored (a number), the flags the index of its target in the
-- router's list (0: not gray) and whether memcached had a value (which TTL
-- applies). It lives `keep` seconds in the dict (the longer TTL plus
-- stale_ttl), so an expired entry can still serve as a stale decision while
-- memcached fails; freshness is checked here against the time stored.
-- A dict too small is no failure of the lookup: a decision that cannot be
-- stored, a lock that cannot be taken, a wait whose holder's decision is
-- not there are logged, and the worker asks memcached itself.
--
-- The protocol, as the router runs it after a miss in its worker's cache:
-- look (the dict), then fetch (one key) or fetch_many (the identities and
-- the address in one multi-get): take the key's lock, or wait for the
-- worker holding it; under the lock, ask memcached (the router's ask
-- function), store the decision at both levels, let go. Code holding a
-- lock leaves through one exit, unlock_and_ret (lua-resty-mlcache's).
--
--   local shared = assert(shcache.new({ dict = "gray_cache", locations = { "@server_test" },
--                                       namespace = "g1a2b3c4d", log = log, ... }))
--   local decision, stale, stored_at = shared:look(cache, key, key, ngx.now())
--   decision, failure, source = shared:fetch(cache, key, stored_at, ask, router)

local count = require("gray.metrics").incr

local ngx = ngx
local ngx_shared = ngx.shared
local ngx_sleep = ngx.sleep
local ngx_now = ngx.now
local type, tostring, ipairs = type, tostring, ipairs
local setmetatable = setmetatable
local floor = math.floor

local _M = {}
local mt = { __index = _M }

local WAIT_FIRST = 0.001        -- s of the first sleep while another worker asks
local WAIT_MAX_STEP = 0.016     -- s: longest sleep between two looks
local LOCK_MARGIN = 0.1         -- s a lock outlives its holder's deadline
local FAILED_FOR = 0.05         -- s a failed lookup's lock tells waiters why

--- A shared cache over `lua_shared_dict opts.dict`. opts: locations (the
-- router's gray locations, by index; index 0 is "not gray"), namespace (a
-- prefix that sets this router's entries apart from other routers' in the
-- same dict), pos_ttl and neg_ttl (s a gray / not gray decision is fresh),
-- keep (s an entry lives in the dict, stale use included), timeout (ms: the lock's holder's
-- deadline, and the longest wait for it), log (a gray.log: a dict too
-- small). nil, err without the dict.
function _M.new(opts)
    local dict = ngx_shared[opts.dict]
    if not dict then
        return nil, "names no lua_shared_dict '" .. tostring(opts.dict)
                    .. "' (declare it in the http block: lua_shared_dict "
                    .. tostring(opts.dict) .. " 10m;)"
    end
    local index = {}
    for i, loc in ipairs(opts.locations) do
        index[loc] = i
    end
    return setmetatable({
        dict = dict,
        name = opts.dict,
        locations = opts.locations,
        index = index,
        data_prefix = opts.namespace .. ":",       -- data keys: "<ns>:<memcached key>"
        lock_prefix = opts.namespace .. " ",       -- lock keys: "<ns> <key>" (no key has a space)
        pos_ttl = opts.pos_ttl,
        neg_ttl = opts.neg_ttl,
        keep = opts.keep,
        wait_max = opts.timeout / 1000,
        lock_ttl = opts.timeout / 1000 + LOCK_MARGIN,
        log = opts.log,
        metrics = false,        -- count_waits(): gray_shm_waits_total
    }, mt)
end

--- From now on, each wait for another worker's decision counts in
-- gray.metrics' gray_shm_waits_total.
function _M.count_waits(self)
    self.metrics = true
end

-- An entry read back: decision, stored_at, ttl (of its kind), or nil when
-- absent or unreadable. flags: the target's index times 2, plus 1 when
-- memcached had no value (the TTL is then neg_ttl, as in the worker's cache;
-- a value that is not gray, "0" say, keeps pos_ttl).
local function read(self, data_key)
    local stored_at, flags = self.dict:get(data_key)
    if type(stored_at) ~= "number" then
        return nil
    end
    flags = flags or 0
    local index = floor(flags / 2)
    local decision = false
    if index > 0 then
        decision = self.locations[index]
        if decision == nil then
            return nil          -- an index this router does not have
        end
    end
    return decision, stored_at, flags % 2 == 1 and self.neg_ttl or self.pos_ttl
end

--- The decision for key at time now: decision, nil, stored_at, ttl while
-- fresh; nil, decision, stored_at, ttl once expired (stale); nil when
-- absent. ttl is how long it is fresh from stored_at.
function _M.get(self, key, now)
    local decision, stored_at, ttl = read(self, self.data_prefix .. key)
    if decision == nil then
        return nil
    end
    if now - stored_at < ttl then
        return decision, nil, stored_at, ttl
    end
    return nil, decision, stored_at, ttl
end

--- Stores decision (a location or false) for key, stored at time now;
-- found: whether memcached had a value (its TTL then is pos_ttl). true, or
-- nil, err when the dict cannot hold it (full even after evicting its least
-- recently used entries): the workers waiting for it then ask memcached.
function _M.set(self, key, decision, now, found)
    local index = 0
    if decision then
        index = self.index[decision]
        if not index then
            return true     -- not one of the router's locations: not shared
        end
    end
    local ok, err = self.dict:set(self.data_prefix .. key, now, self.keep,
                                  index * 2 + (found and 0 or 1))
    if not ok then
        return nil, err
    end
    return true
end

--- Takes the lock for asking memcached about key: true when this worker
-- holds it now, false when another one does, nil, err when no lock can be
-- taken (a full dict: ask anyway, holding nothing, so never unlock).
function _M.lock(self, key)
    local ok, err = self.dict:add(self.lock_prefix .. key, true, self.lock_ttl)
    if ok then
        return true
    elseif err == "exists" then
        return false
    end
    return nil, err
end

--- Lets go of the lock on key. failure ("store-down", "store-error"): the
-- lookup failed; the lock then says so for FAILED_FOR seconds, so that the
-- workers waiting for it learn why, and go on at once. true, or nil, err
-- when that could not be written (the lock is gone then: the waiters ask
-- memcached themselves).
function _M.unlock(self, key, failure)
    if failure then
        local ok, err = self.dict:set(self.lock_prefix .. key, failure, FAILED_FOR)
        if not ok then
            return nil, err
        end
    else
        self.dict:delete(self.lock_prefix .. key)
    end
    return true
end

--- The deadline of the waits for other workers' decisions begun at now.
local function wait_deadline(self, now)
    return now + self.wait_max
end
_M.wait_deadline = wait_deadline

--- Waits, until deadline (default: the lookup's timeout from now), for the
-- worker that holds the lock on key to store its decision. seen: the
-- stored_at of the (expired) entry the caller found before it tried the
-- lock, or nil. Returns decision, nil, stored_at, ttl once a new one is
-- there (fresh or not: the holder's answer is this request's, whatever its
-- TTL); nil, failure ("store-down", "store-error") when the holder's lookup
-- failed or the time is up; nil, "lost" when the lock went without a
-- decision (the holder could not store it, or the dict evicted it or the
-- lock): the caller asks memcached itself, in the time left.
function _M.wait(self, key, deadline, seen)
    local dict = self.dict
    local data, lock = self.data_prefix .. key, self.lock_prefix .. key
    deadline = deadline or wait_deadline(self, ngx_now())
    local step = WAIT_FIRST
    while true do
        local decision, stored_at, ttl = read(self, data)
        if decision ~= nil and (stored_at ~= seen or ngx_now() - stored_at < ttl) then
            return decision, nil, stored_at, ttl
        end
        local holder = dict:get(lock)
        if holder ~= true then
            -- let go: read once more, the decision may have landed between
            decision, stored_at, ttl = read(self, data)
            if decision ~= nil and stored_at ~= seen then
                return decision, nil, stored_at, ttl
            end
            return nil, type(holder) == "string" and holder or "lost"
        end
        local left = deadline - ngx_now()
        if left < 0.001 then
            -- ngx.sleep counts whole ms: a shorter one would be sleep(0),
            -- which does not advance the clock (a busy loop)
            return nil, "store-error"
        end
        ngx_sleep(step < left and step or left)
        step = step * 2
        if step > WAIT_MAX_STEP then
            step = WAIT_MAX_STEP
        end
    end
end

-- ---- the protocol ------------------------------------------------------
-- cache, ckey: a worker's cache (gray.cache: the router's address cache or
-- an identity's) and the key there of memcached's key `key`.

-- A dict write, lock or wait that failed (a dict too small for its
-- entries): the request asks memcached instead, and this is logged once per
-- log_interval.
local function shm_failed(self, what, err)
    self.log:report("shm", "lua_shared_dict " .. self.name .. ": " .. what .. " ("
                    .. tostring(err) .. "), so memcached was asked instead: make the dict"
                    .. " larger")
end

-- Milliseconds left before deadline, or nil when none is (less than 1 ms).
local ms_left = require("gray.util").ms_left

-- Keeps a decision taken from the dict in a worker's cache for as long as
-- it is fresh there (ttl from stored_at: the TTL its writer gave it). An
-- expired one goes in as stale.
local function keep_shared(cache, ckey, decision, stored_at, ttl)
    cache:set(ckey, decision, ttl, stored_at)
end

-- The one way out for code that may hold key's lock (held: true when this
-- worker took it): lets go of it, saying why the lookup failed (failure)
-- to the workers waiting, then returns decision, failure, source.
local function unlock_and_ret(self, key, held, decision, failure, source)
    if held and not _M.unlock(self, key, failure) then
        shm_failed(self, "no room to tell the waiting workers why " .. key .. " failed",
                   "no memory")
    end
    return decision, failure, source
end

--- The decision for key in the dict at time now: decision, nil, stored_at
-- while fresh (kept in cache under ckey); nil, decision, stored_at once
-- expired (stale); nil when absent.
function _M.look(self, cache, ckey, key, now)
    local decision, stale, stored_at, ttl = _M.get(self, key, now)
    if decision ~= nil then
        keep_shared(cache, ckey, decision, stored_at, ttl)
    end
    return decision, stale, stored_at
end

--- Stores a decision memcached gave at time now at both levels: in cache
-- under ckey (for pos_ttl when memcached had a value, found, else neg_ttl)
-- and in the dict (logged when it cannot hold it).
function _M.store(self, cache, ckey, key, decision, now, found)
    cache:set(ckey, decision, found and self.pos_ttl or self.neg_ttl, now)
    local ok, err = _M.set(self, key, decision, now, found)
    if not ok then
        shm_failed(self, "the decision for " .. key .. " could not be stored", err)
    end
end

-- Waits for the worker that asks memcached about key (it holds the shared
-- lock): its decision, kept in cache under ckey, or nil, failure
-- ("store-down", "store-error") when its lookup failed or time ran out, or
-- nil, "lost" when the lock went without a decision (logged: the caller
-- asks memcached itself in the time left).
local function wait_shared(self, cache, ckey, key, deadline, seen)
    if self.metrics then
        count("gray_shm_waits_total")
    end
    local target, failure, stored_at, ttl = _M.wait(self, key, deadline, seen)
    if target == nil then
        if failure == "lost" then
            shm_failed(self, "another worker's decision for " .. key .. " is not in it",
                       "not stored, or evicted")
        end
        return nil, failure
    end
    keep_shared(cache, ckey, target, stored_at, ttl)
    return target
end

-- After trying key's lock (held: whether this worker took it): the decision
-- another worker stored between this worker's look and its lock, kept in
-- cache under ckey (the lock is let go); else nil (the lock kept).
local function shared_since(self, cache, ckey, key, held, now)
    local target, _, stored_at, ttl = _M.get(self, key, now or ngx_now())
    if target == nil then
        return nil
    end
    keep_shared(cache, ckey, target, stored_at, ttl)
    return (unlock_and_ret(self, key, held, target))
end

--- After a miss in the worker's cache (which holds key under key itself)
-- and in the dict: the decision another worker stored since, or the one of
-- the worker holding key's lock (waited for), or else the answer of
-- ask(arg, key, timeout) under the lock, stored at both levels. ask returns
-- decision, nil, found (whether memcached had a value) or nil, failure;
-- timeout is in ms, nil for the whole of it. seen: the stored_at of the
-- expired entry found in the dict, if any. Returns decision, nil, source
-- ("shm", "memcached"); nil, failure, "shm" when the wait failed; nil,
-- failure when ask did.
function _M.fetch(self, cache, key, seen, ask, arg)
    local held, lerr = _M.lock(self, key)
    local timeout = nil
    if held == false then
        local deadline = wait_deadline(self, ngx_now())
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
    local failure, found
    target, failure, found = ask(arg, key, timeout)
    if target == nil then
        return unlock_and_ret(self, key, held, nil, failure, nil)
    end
    _M.store(self, cache, key, key, target, ngx_now(), found)
    return unlock_and_ret(self, key, held, target, nil, "memcached")
end

-- shared_pass when other workers ask memcached about every key left
-- (others): waits for their decisions (known, this worker's cache), within
-- one deadline for all the waits and what is asked after them, as for one
-- multi-get. Returns what shared_pass does (no key is locked).
local function wait_all(self, others, pending, known)
    local failed, lost, deadline = nil, {}, wait_deadline(self, ngx_now())
    for i = 1, #others do
        local key = others[i]
        local p = pending[key]
        local target, failure = wait_shared(self, p.cache, p.ckey, key, deadline, p.seen)
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

-- The dict's part in a multi-key lookup: the keys it knows leave
-- pending for known (and the worker's cache); their stale decisions stand
-- in for missing ones of the worker. Of the rest, this worker takes the
-- lock of every key it can. If it took none (other workers ask about them
-- all) it waits for their decisions; otherwise it asks memcached about all
-- of them in one multi-get, as it would have anyway. Returns the keys to ask
-- memcached for, the keys locked (or false), the keys that failed while
-- waiting (or nil), and the ms left for asking (nil: the whole timeout).
-- A key whose holder's decision was lost is asked for after the waits.
local function shared_pass(self, keys, pending, known, now)
    local rest, others, mine, ask = {}, {}, false, false
    for i = 1, #keys do
        local key = keys[i]
        local p = pending[key]
        local target, stale, stored_at, ttl = _M.get(self, key, now)
        local held, lerr
        if target == nil then
            held, lerr = _M.lock(self, key)   -- nil: a full dict, ask holding nothing
            if held == nil then
                shm_failed(self, "no lock for " .. key, lerr)
            end
        end
        if target == nil and held ~= false then
            target = shared_since(self, p.cache, p.ckey, key, held)
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
            p.seen = stored_at          -- what it saw: wait for a newer one
        else
            keep_shared(p.cache, p.ckey, target, stored_at, ttl)
        end
        if target ~= nil then
            known[key] = target
            pending[key] = nil
        elseif stale ~= nil and (p.stale == nil or stored_at > p.stored_at) then
            p.stale, p.stored_at = stale, stored_at     -- the newer stale decision
        end
    end
    if ask or #rest == 0 then
        return rest, mine, nil
    end
    return wait_all(self, others, pending, known)
end

-- The one way out of fetch_many: lets go of the keys locked (mine), each
-- saying why its lookup failed (its pending record's failure), then
-- returns failure, source.
local function unlock_all_and_ret(self, mine, pending, failure, source)
    if mine then
        for i = 1, #mine do
            local key = mine[i]
            unlock_and_ret(self, key, true, nil, pending[key].failure)
        end
    end
    return failure, source
end

-- ---- one key at a time, for the request path --------------------------
-- The same protocol as fetch_many, a key per call: the router calls these
-- once per key, straight-line (a loop of a few turns would abort the
-- request's trace), then asks memcached about the keys left in one lookup.

--- A key's step after a miss in the worker's cache (cache, ckey): the
-- dict's decision (kept in cache), or the key's lock. Returns decision;
-- or nil, held (true: this worker took the lock and asks; nil: no lock
-- could be taken, it asks holding nothing; false: another worker asks),
-- seen (the stored_at of the expired entry found, for wait_one), and that
-- entry's stale decision and stored_at.
function _M.pass_one(self, cache, ckey, key, now)
    local target, stale, stored_at, ttl = _M.get(self, key, now)
    if target ~= nil then
        keep_shared(cache, ckey, target, stored_at, ttl)
        return target
    end
    local held, lerr = _M.lock(self, key)   -- nil: a full dict, ask holding nothing
    if held == nil then
        shm_failed(self, "no lock for " .. key, lerr)
    end
    if held ~= false then
        -- the time cached by nginx, as ngx.now() would give it here
        target = shared_since(self, cache, ckey, key, held, now)
        if target ~= nil then
            return target
        end
    end
    return nil, held, stored_at, stale, stored_at
end

--- Waits until deadline for the decision of the worker holding key's lock
-- (pass_one's held false; seen: its seen): the decision (kept in cache);
-- or nil, "down" or "error" when that worker's lookup or the wait failed;
-- or nil, "lost" when its decision is lost (ask memcached, holding nothing).
function _M.wait_one(self, cache, ckey, key, deadline, seen)
    local target, failure = wait_shared(self, cache, ckey, key, deadline, seen)
    if target ~= nil then
        return target
    elseif failure == "lost" then
        return nil, "lost"
    end
    return nil, failure == "store-down" and "down" or "error"
end

--- After the lookup: lets go of key's lock when this worker holds it
-- (held true), saying why the lookup failed (failure, or nil).
function _M.release(self, key, held, failure)
    unlock_and_ret(self, key, held, nil, failure)
end

_M.ms_left = ms_left

--- fetch for several keys at once (the identities and the address): keys,
-- and pending, a record per key: { cache, ckey, stale, stored_at (its
-- stale decision, if any), seen = false, failure = false }. The keys the
-- dict knows, or that other workers' lookups give, move from pending to
-- known (key -> decision). ask(arg, rest, pending, known, waited, timeout)
-- asks memcached about the rest under their locks, and settles every key
-- still pending (into known, its record's failure set when memcached
-- failed); waited: the keys whose wait failed (their memcached error kind
-- by key, or nil), timeout: ms, nil for the whole of it. It returns
-- failure, source, which fetch_many returns after letting go of the locks.
function _M.fetch_many(self, keys, pending, known, now, ask, arg)
    local rest, mine, waited, timeout = shared_pass(self, keys, pending, known, now)
    local failure, source = ask(arg, rest, pending, known, waited, timeout)
    return unlock_all_and_ret(self, mine, pending, failure, source)
end

return _M
