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
-- lru(): the addresses' cache, least recently used first out, with the
-- same get and set. Both keep when each entry was stored (it bounds an
-- entry's stale use).
--
--   local cache = require("gray.cache").new(10000)
--   cache:set(key, decision, ttl, now)
--   local decision, stale, stored_at = cache:get(key, now)

local setmetatable, ipairs = setmetatable, ipairs
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

local lru = {}
local lru_mt = { __index = lru }
-- on the first lru(): new() runs in plain Lua too, without nginx
local ngx_now
local ffi = require "ffi"
local int32_array, double_array = ffi.typeof("int32_t[?]"), ffi.typeof("double[?]")
local ffi_copy = ffi.copy
local ffi_sizeof = ffi.sizeof

-- Slots an LRU cache starts with (or size, if less); they double as it
-- fills, up to size.
local LRU_ROOM = 1024

-- The slots' numbers, in cdata arrays (the collector never walks them):
-- the links (prev, next), and an entry's three numbers side by side in ent
-- (slot i: ent[3i] when it expires, ent[3i + 1] when it was stored,
-- ent[3i + 2] its decision's index), so that a hit reads one array field,
-- not three (make bench, the cached drop-in's trace).
local ENT = 3

local function lru_arrays(self, room)
    local old = self.room
    local prev, next = int32_array(room), int32_array(room)
    local ent = double_array(ENT * room)
    if old then
        ffi_copy(prev, self.prev, old * ffi_sizeof("int32_t"))
        ffi_copy(next, self.next, old * ffi_sizeof("int32_t"))
        ffi_copy(ent, self.ent, old * ENT * ffi_sizeof("double"))
    end
    self.prev, self.next, self.ent = prev, next, ent
    self.room = room
end

--- An LRU cache for at most `size` entries, with get and set as above, of
-- the decisions in the list `decisions` (a router's; a decision not in it
-- is not kept) or false. An entry is a slot (1..size) of parallel arrays:
-- the key (a Lua array), and in cdata arrays when it expires, when it was
-- stored, its decision's index (0: false), and its links in the recency list
-- (prev, next; slot 0 is the list's head); one table maps a key to its
-- slot. A hit, or a store over a key already there, is a table read and a
-- few array writes, with no clock read of its own (the caller's now) and
-- nothing allocated (a new key may grow the key tables and the arrays). The
-- least recently used entry (got or set) is the one a new key replaces
-- once all slots are taken, as in resty.lrucache, which this replaces: its
-- clock reads, its queue and its three tables per key cost a miss from a
-- new client about 800 instructions more (make bench, callgrind).
function _M.lru(size, decisions)
    if not ngx_now then
        ngx_now = ngx.now
    end
    local index, of = {}, table_new(#decisions + 1, 0)
    of[0] = false
    for i, decision in ipairs(decisions) do
        index[decision], of[i] = i, decision
    end
    -- the key tables grow with the entries, not made for size at once: the
    -- collector walks every slot of a table at each cycle, and a cache
    -- that holds few clients cost every request about 100 instructions more
    -- made for 10,000 (make bench, the cached drop-in); filling, a new
    -- client's miss pays their rehashes instead (dropin-distinct: 300 to 400)
    -- get as an own field: cache:get() is one slot read in the request's
    -- trace, not a miss in this table, its metatable, then lru
    local self = setmetatable({ index = index, of = of, size = size, n = 0, slot = {},
                                keys = {}, get = lru.get }, lru_mt)
    lru_arrays(self, min(size, LRU_ROOM) + 1)
    return self
end

-- Slot i (in the recency list) to its head: the most recently used.
local function to_head(self, i)
    local next = self.next
    if next[0] == i then
        return          -- there already (one client's requests in a row)
    end
    local prev = self.prev
    local p, n = prev[i], next[i]
    next[p], prev[n] = n, p
    local h = next[0]
    prev[i], next[i] = 0, h
    prev[h], next[0] = i, i
end

--- As get above; now: the caller's clock (ngx.now() when nil).
local function lru_get(self, key, now)
    local i = self.slot[key]
    if i == nil then
        return nil
    end
    to_head(self, i)
    local ent, e = self.ent, ENT * i
    if ent[e] < (now or ngx_now()) then
        return nil, self.of[ent[e + 2]], ent[e + 1]
    end
    return self.of[ent[e + 2]], nil, ent[e + 1]
end
lru.get = lru_get
_M.lru_get = lru_get

--- As set above: fresh until now + ttl, then stale until evicted. A
-- decision not in the cache's list is not kept (nor is an entry already
-- there for key changed: the router's decisions are all in its list).
function lru.set(self, key, decision, ttl, now)
    local d = 0
    if decision then
        d = self.index[decision]
        if not d then
            return
        end
    end
    local i = self.slot[key]
    if i then
        to_head(self, i)
    else
        local n = self.n
        if n < self.size then
            n = n + 1
            if n == self.room then
                lru_arrays(self, min(2 * n, self.size + 1))
            end
            self.n, i = n, n
            -- a new slot: linked at the head
            local prev, next = self.prev, self.next
            local h = next[0]
            prev[i], next[i] = 0, h
            prev[h], next[0] = i, i
        else
            i = self.prev[0]        -- the least recently used goes
            self.slot[self.keys[i]] = nil
            to_head(self, i)
        end
        self.keys[i] = key
        self.slot[key] = i
    end
    local ent, e = self.ent, ENT * i
    ent[e], ent[e + 1], ent[e + 2] = now + ttl, now, d
end

return _M
