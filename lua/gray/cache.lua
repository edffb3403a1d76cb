-- gray.cache: a bounded decision cache with a cheap hit, for the
-- identities (one per identity, keyed by the raw value). A hit costs one or
-- two table lookups and a compare with a clock the caller read once per
-- request: no queue to reorder, no clock call per lookup. Eviction is by
-- generations: new entries go to the young generation; when it holds
-- `size / 2` entries it becomes the old one and the previous old one is
-- dropped; a hit in the old generation moves the entry back. So an entry
-- used again within size / 2 insertions survives, and at most `size`
-- entries live. Expired entries stay until evicted, for use as stale
-- decisions while memcached fails, as in lua-resty-lrucache.
--
-- A generation is three tables keyed alike (the decision, when it expires,
-- when it was stored), not a table per entry: a miss path that stores an
-- entry per identity on every request allocates nothing for it, and the
-- garbage collector has no per-entry tables to allocate, mark and sweep.
--
--   local cache = require("gray.cache").new(10000)
--   cache:set(key, decision, ttl, now)
--   local decision, stale, stored_at = cache:get(key, now)

local setmetatable = setmetatable
local ceil = math.ceil

local _M = {}
local mt = { __index = _M }

--- A cache for at most `size` entries.
function _M.new(size)
    return setmetatable({ young = {}, young_exp = {}, young_at = {}, old = {}, old_exp = {},
                          old_at = {}, nyoung = 0, half = ceil(size / 2) }, mt)
end

-- Adds key to the young generation (not in it yet).
local function put(self, key, decision, expires, stored_at)
    local n = self.nyoung
    if n >= self.half then
        -- the young generation is full: it becomes the old one
        self.old, self.old_exp, self.old_at = self.young, self.young_exp, self.young_at
        self.young, self.young_exp, self.young_at = {}, {}, {}
        n = 0
    end
    self.young[key] = decision
    self.young_exp[key] = expires
    self.young_at[key] = stored_at
    self.nyoung = n + 1
end

-- Takes key out of the old generation: its decision, expiry, stored_at.
local function take_old(self, key)
    local old, old_exp, old_at = self.old, self.old_exp, self.old_at
    local decision, expires, stored_at = old[key], old_exp[key], old_at[key]
    old[key], old_exp[key], old_at[key] = nil, nil, nil
    return decision, expires, stored_at
end

--- The decision for key at time now: decision, nil, stored_at while fresh;
-- nil, decision, stored_at once expired (stale); nil when absent.
function _M.get(self, key, now)
    local decision = self.young[key]
    local expires, stored_at
    if decision == nil then
        if self.old[key] == nil then
            return nil
        end
        decision, expires, stored_at = take_old(self, key)
        put(self, key, decision, expires, stored_at)
    else
        expires, stored_at = self.young_exp[key], self.young_at[key]
    end
    if expires < now then
        return nil, decision, stored_at
    end
    return decision, nil, stored_at
end

--- Stores decision (not nil) for ttl seconds from now (ttl <= 0: stale at
-- once, kept for outages only).
function _M.set(self, key, decision, ttl, now)
    if self.young[key] ~= nil then
        self.young[key] = decision
        self.young_exp[key] = now + ttl
        self.young_at[key] = now
        return
    end
    if self.old[key] ~= nil then
        take_old(self, key)
    end
    put(self, key, decision, now + ttl, now)
end

return _M
