-- gray.cache: a bounded decision cache with a cheap hit, for the
-- identities (one per identity, keyed by the raw value). A hit costs one or
-- two table lookups and a compare with a clock the caller read once per
-- request: no queue to reorder, no clock call per lookup. Eviction is by
-- generations: new entries go to the young table; when it holds `size / 2`
-- entries it becomes the old one and the previous old one is dropped; a hit
-- in the old table moves the entry back. So an entry used again within
-- size / 2 insertions survives, and at most `size` entries live. Expired entries stay until evicted, for use
-- as stale decisions while memcached fails, as in lua-resty-lrucache.
--
--   local cache = require("gray.cache").new(10000)
--   cache:set(key, decision, ttl, now)
--   local decision, stale, stored_at = cache:get(key, now)

local setmetatable = setmetatable
local ceil, min = math.ceil, math.min
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

return _M
