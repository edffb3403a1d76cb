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
-- not there are reported to the caller, which asks memcached itself.
--
--   local shared = assert(shcache.new({ dict = "gray_cache", locations = { "@server_test" },
--                                       namespace = "g1a2b3c4d", ... }))
--   local decision, stale, stored_at = shared:get(key, ngx.now())

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
-- deadline, and the longest wait for it). nil, err without the dict.
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
    }, mt)
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

--- Waits, until deadline (default: the lookup's timeout from now), for the
-- worker that holds the lock on key to store its decision. seen: the
-- stored_at of the (expired) entry the caller found before it tried the
-- lock, or nil. Returns decision, stored_at, ttl once a new one is there
-- (fresh or not: the holder's answer is this request's, whatever its TTL);
-- nil, failure ("store-down", "store-error") when the holder's lookup
-- failed or the time is up; nil, "lost" when the lock went without a
-- decision (the holder could not store it, or the dict evicted it or the
-- lock): the caller asks memcached itself, in the time left.
function _M.wait(self, key, deadline, seen)
    local dict = self.dict
    local data, lock = self.data_prefix .. key, self.lock_prefix .. key
    deadline = deadline or ngx_now() + self.wait_max
    local step = WAIT_FIRST
    while true do
        local decision, stored_at, ttl = read(self, data)
        if decision ~= nil and (stored_at ~= seen or ngx_now() - stored_at < ttl) then
            return decision, stored_at, ttl
        end
        local holder = dict:get(lock)
        if holder ~= true then
            -- let go: read once more, the decision may have landed between
            decision, stored_at, ttl = read(self, data)
            if decision ~= nil and stored_at ~= seen then
                return decision, stored_at, ttl
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

return _M
