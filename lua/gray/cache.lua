-- gray.cache: the worker's bounded decision caches. new(): a cache with a
-- cheap hit, for the identities (one per identity, keyed by the raw
-- value). A hit costs one or two table lookups and a compare with a clock
-- the caller read once per request: no queue to reorder, no clock call per
-- lookup. Eviction is by generations: new entries go to the young table;
-- when it holds `size / 2` entries it becomes the old one and the previous
-- old one is dropped; a hit in the old table moves the entry back. So an
-- entry used again within size / 2 insertions survives, and at most `size`
-- entries live. Expired entries stay until evicted, for use as stale
-- decisions while memcached fails, as in lua-resty-lrucache.
--
-- lru(): the addresses' cache, least recently used first out (over
-- resty.lrucache), with the same get and set. Both keep when each entry was
-- stored, to the millisecond (it bounds an entry's stale use).
--
--   local cache = require("gray.cache").new(10000)
--   cache:set(key, decision, ttl, now)
--   local decision, stale, stored_at = cache:get(key, now)

local setmetatable, assert, ipairs = setmetatable, assert, ipairs
local ceil, floor, min = math.ceil, math.floor, math.min
local ok_new, table_new = pcall(require, "table.new")
if not ok_new then
    table_new = function() return {} end
end

-- A young generation's table is made with room for this many entries (or
-- size / 2, if less): filled from empty, a table grows by rehashing every
-- entry at each doubling, and a miss stores an entry per identity. make
-- bench's 3-key miss (api-distinct-ids): 51,536 instr/req pre-sized,
-- 53,252 grown (callgrind); the cached rows unchanged.
local PRESIZE_MAX = 16384

local _M = {}
local mt = { __index = _M }

--- A cache for at most `size` entries.
function _M.new(size)
    local half = ceil(size / 2)
    return setmetatable({ young = table_new(0, min(half, PRESIZE_MAX)), old = {}, nyoung = 0,
                          half = half }, mt)
end

local function put(self, key, entry)
    local n = self.nyoung
    if n >= self.half then
        self.old = self.young           -- the young generation is full
        self.young = table_new(0, min(self.half, PRESIZE_MAX))
        n = 0
    end
    self.young[key] = entry
    self.nyoung = n + 1
end

--- The decision for key at time now: decision, nil, stored_at while fresh;
-- nil, decision, stored_at once expired (stale); nil when absent.
function _M.get(self, key, now)
    local entry = self.young[key]
    if entry == nil then
        entry = self.old[key]
        if entry == nil then
            return nil
        end
        self.old[key] = nil
        put(self, key, entry)
    end
    if entry[2] < now then
        return nil, entry[1], entry[3]
    end
    return entry[1], nil, entry[3]
end

--- Stores decision (not nil) for ttl seconds from now (ttl <= 0: stale at
-- once, kept for outages only).
function _M.set(self, key, decision, ttl, now)
    local entry = self.young[key]
    if entry then
        entry[1], entry[2], entry[3] = decision, now + ttl, now
        return
    end
    entry = self.old[key]
    if entry then
        self.old[key] = nil
        entry[1], entry[2], entry[3] = decision, now + ttl, now
    else
        entry = { decision, now + ttl, now }
    end
    put(self, key, entry)
end

local lru = {}
local lru_mt = { __index = lru }
-- on the first lru(): new() runs in plain Lua too, without nginx
local lrucache, lrucache_get, lrucache_set, ngx_now

-- An entry of the LRU cache is one number, so that it costs no table of
-- its own: when it was stored, in ms (ngx.now()'s resolution), times
-- SLOTS, plus its decision's index (0: false). resty.lrucache's own slot
-- for a number beside the value (its flags) is a uint32, which would drop
-- the fraction of stored_at. 2^53 / SLOTS ms reach past the year 2500.
local SLOTS = 512

--- An LRU cache for at most `size` entries, with get and set as above, of
-- the decisions in the list `decisions` (by index; a router has at most
-- 256) or false. A hit allocates nothing.
function _M.lru(size, decisions)
    if not lrucache then
        lrucache = require "resty.lrucache"
        lrucache_get, lrucache_set, ngx_now = lrucache.get, lrucache.set, ngx.now
    end
    assert(#decisions < SLOTS, "gray.cache: too many decisions")
    local index = {}
    for i, decision in ipairs(decisions) do
        index[decision] = i
    end
    return setmetatable({ lru = lrucache.new(size), decisions = decisions, index = index },
                        lru_mt)
end

--- As get above (now is not needed: resty.lrucache reads the clock).
local function lru_get(self, key)
    local entry, stale = lrucache_get(self.lru, key)
    if entry then
        local i = entry % SLOTS
        return i > 0 and self.decisions[i], nil, (entry - i) / SLOTS / 1000
    elseif stale then
        local i = stale % SLOTS
        return nil, i > 0 and self.decisions[i], (stale - i) / SLOTS / 1000
    end
    return nil
end
lru.get = lru_get
_M.lru_get = lru_get

--- As set above: fresh until now + ttl, then stale until evicted. A
-- decision not in the cache's list is not kept.
function lru.set(self, key, decision, ttl, now)
    local i = 0
    if decision then
        i = self.index[decision]
        if not i then
            return
        end
    end
    lrucache_set(self.lru, key, floor(now * 1000 + 0.5) * SLOTS + i, now + ttl - ngx_now())
end

return _M
