-- gray.lists: the memcached values a router compiles instead of asking per
-- request: the address ranges (`gray:ranges`), id lists (`gray:list:<name>`)
-- and the percentage (`gray:percent`). Each worker keeps its compiled copy
-- and a timer checks for changes every refresh_interval seconds with one
-- `gets` of all their keys: an unchanged CAS is never recompiled, a failed
-- refresh keeps the last good copy, and no request ever waits for a list.
--
-- A list larger than one memcached item is split: the main key then holds
-- "#gray-parts <n> <tag>" and the parts are "<main key>:<tag>:1".."<n>",
-- read together in one multi-get (a new tag per rewrite, so old and new
-- parts never mix).

local gray_ffi = require "gray.ffi"
local metrics = require "gray.metrics"

local new_rangeset = gray_ffi.new_rangeset
local target_name_ok = gray_ffi.target_name_ok
local rangeset_find = gray_ffi.rangeset_find
local bucket = gray_ffi.bucket
local timer_every = ngx.timer.every
local timer_at = ngx.timer.at
local ngx_log = ngx.log
local WARN = ngx.WARN
local tonumber, tostring, pairs, ipairs, pcall, next = tonumber, tostring, pairs, ipairs, pcall,
    next
local concat = table.concat
local floor = math.floor
local update_time, ngx_now = ngx.update_time, ngx.now

local function now_precise()
    update_time()
    return ngx_now()
end
local setmetatable = setmetatable

local _M = { _VERSION = gray_ffi.VERSION }
local mt = { __index = _M }

local PARTS_MAX = 1024

--- The compiled lists of one router. opts: mc (a gray.memcached client),
-- ranges_key and percent_key (false: none), lists (id list names), interval
-- (s), timeout (ms for one refresh), max_bytes (one list's limit), names
-- (target names, index 1 = "1"), decisions (the router's decision for each
-- of them, by index), unknown (the decision for a name not in names: its
-- index is #names + 1), log (a gray.log).
function _M.new(opts)
    local keys, kinds = {}, {}
    if opts.ranges_key then
        keys[#keys + 1] = opts.ranges_key
        kinds[opts.ranges_key] = "ranges"
    end
    if opts.percent_key then
        keys[#keys + 1] = opts.percent_key
        kinds[opts.percent_key] = "percent"
    end
    local list_keys = {}
    for _, name in ipairs(opts.lists or {}) do
        local key = "gray:list:" .. name
        keys[#keys + 1] = key
        kinds[key] = "list"
        list_keys[key] = name
    end
    local self = setmetatable({
        mc = opts.mc, keys = keys, kinds = kinds, list_keys = list_keys,
        interval = opts.interval, timeout = opts.timeout, max_bytes = opts.max_bytes,
        names = opts.names, decisions = opts.decisions, unknown = opts.unknown,
        log = opts.log,
        by_name = {},           -- target name -> decision
        ranges = false,         -- a compiled range set, or false
        idlists = {},           -- list name -> { [id] = decision }
        any_idlist = false,     -- whether idlists holds any
        threshold = 0,          -- percent * 100: buckets below it are gray
        cas = {},               -- key -> cas of the value compiled
        compiles = 0,           -- values compiled (not counting unchanged ones)
        refreshes = 0,          -- refreshes that reached memcached
        started = #keys == 0,   -- nothing to refresh: never start a timer
    }, mt)
    local decisions = self.decisions
    self.unknown_index = #self.names + 1
    decisions[self.unknown_index] = self.unknown
    for i, name in ipairs(self.names) do
        self.by_name[name] = decisions[i]
    end
    return self
end

-- The decision of a list line's target name ("" : the default target): a
-- known one's, the unknown-target decision for a name that is not
-- configured, or nil when it is not a target name at all (a bad line).
local function decision_of_name(self, name)
    if name == "" then
        name = "1"
    end
    local decision = self.by_name[name]
    if decision then
        return decision
    end
    return target_name_ok(name) and self.unknown or nil
end

local function compile_ranges(self, key, text)
    local set, err = new_rangeset(text, self.names, self.unknown_index)
    if not set then
        return nil, err
    end
    if set.bad > 0 or set.unknown > 0 then
        local what = {}
        if set.bad > 0 then
            what[1] = set.bad .. " bad lines (" .. concat(set.bad_lines, ", ") .. ")"
        end
        if set.unknown > 0 then
            what[#what + 1] = set.unknown .. " lines naming an unknown target ("
                              .. concat(set.unknown_lines, ", ")
                              .. ": their addresses go to the stable location)"
        end
        self.log:report("ranges", key .. ": " .. concat(what, " and ")
                        .. "; " .. (set.count - set.unknown) .. " lines route")
    end
    self.ranges = set.count > 0 and set or false
    return true, set.count
end

local function compile_list(self, key, text)
    local ids, bad, unknown, n = {}, 0, 0, 0
    for line in text:gmatch("[^\n]+") do
        local id, name, rest = line:match("^%s*([^%s#]%S*)%s*(%S*)%s*(%S*)")
        if id then
            if rest ~= "" or #id > 200 then
                bad = bad + 1
            else
                local decision = decision_of_name(self, name)
                if not decision then
                    bad = bad + 1
                else
                    if not ids[id] then
                        n = n + 1
                    end
                    ids[id] = decision
                    if decision == self.unknown then
                        unknown = unknown + 1
                    end
                end
            end
        end
    end
    if bad > 0 or unknown > 0 then
        self.log:report("list", key .. ": " .. bad .. " bad lines skipped and " .. unknown
                        .. " lines naming an unknown target (those ids go to the stable"
                        .. " location)")
    end
    self.idlists[self.list_keys[key]] = ids
    self.any_idlist = true
    return true, n
end

local function compile_percent(self, key, text)
    text = text:match("^%s*(.-)%s*$")
    local pct = (text:find("^%d+$") or text:find("^%d+%.%d%d?$")) and tonumber(text)
    if not pct or pct > 100 then
        return nil, key .. ": '" .. text:sub(1, 40) .. "' is not a percentage (0 to 100, at"
                    .. " most two decimals)"
    end
    self.threshold = floor(pct * 100 + 0.5)
    return true, pct
end

local COMPILE = { ranges = compile_ranges, list = compile_list, percent = compile_percent }

local function clear(self, key)
    local kind = self.kinds[key]
    if kind == "ranges" then
        self.ranges = false
    elseif kind == "percent" then
        self.threshold = 0
    else
        self.idlists[self.list_keys[key]] = nil
        self.any_idlist = next(self.idlists) ~= nil
    end
    self.cas[key] = nil
    if metrics.on then
        local labels = { key = key }
        metrics.set("gray_list_version", labels, 0)
        metrics.set(kind == "percent" and "gray_sticky_ratio" or "gray_list_entries", labels, 0)
    end
end

-- The whole text of a split list, or nil, err when a part is missing.
local function join_parts(self, key, header)
    local n, tag = header:match("^#gray%-parts (%d+) (%S+)")
    n = tonumber(n)
    if not n or n < 1 or n > PARTS_MAX then
        return nil, key .. ": bad parts header '" .. header:sub(1, 60) .. "'"
    end
    local keys = {}
    for i = 1, n do
        keys[i] = key .. ":" .. tag .. ":" .. i
    end
    local res, failed, err = self.mc:get_multi(keys, { timeout = self.timeout,
                                                     max_bytes = self.max_bytes })
    if failed then
        return nil, key .. ": parts: " .. tostring(err)
    end
    local parts = {}
    for i = 1, n do
        local part = res[keys[i]]
        if part == nil then
            return nil, key .. ": part " .. keys[i] .. " is missing"
        end
        parts[i] = part
    end
    return concat(parts)
end

--- One refresh: a gets of every key; what changed is compiled and swapped
-- in, what failed keeps its last good copy. Returns the number compiled.
function _M.refresh(self)
    local res, failed, err = self.mc:get_multi(self.keys, { cas = true, timeout = self.timeout,
                                                            max_bytes = self.max_bytes })
    self.refreshes = self.refreshes + 1
    local compiled = 0
    for _, key in ipairs(self.keys) do
        local entry = res[key]
        if failed and failed[key] then
            self.log:report("refresh", "refreshing " .. key .. " failed, the last copy stays: "
                            .. tostring(err))
        elseif entry == nil then
            if self.cas[key] then
                clear(self, key)        -- deleted in memcached
            end
        elseif entry.cas == nil or entry.cas ~= self.cas[key] then
            local text, why = entry.value, nil
            if text:find("^#gray%-parts ") then
                text, why = join_parts(self, key, text:match("^[^\n]*"))
            end
            local ok, size
            local t0 = now_precise()
            if text then
                -- why is the error, size what the list holds
                ok, size = COMPILE[self.kinds[key]](self, key, text)
                why = size
            end
            if ok and metrics.on then
                local labels = { key = key }
                metrics.add("gray_list_compiles_total", labels)
                metrics.set("gray_list_compile_seconds", labels, now_precise() - t0)
                -- the version in use: memcached's CAS of the copy compiled
                metrics.set("gray_list_version", labels, tonumber(entry.cas) or 0)
                if self.kinds[key] == "percent" then
                    metrics.set("gray_sticky_ratio", labels, size / 100)   -- a ratio, 0 to 1
                else
                    metrics.set("gray_list_entries", labels, size)
                end
            end
            if ok then
                self.cas[key] = entry.cas
                self.compiles = self.compiles + 1
                compiled = compiled + 1
            else
                self.log:report("compile", why .. "; the last copy stays")
            end
        end
    end
    return compiled
end

-- A refresh runs every few seconds, never often enough to be worth a
-- trace: left to the interpreter, its loops cannot make LuaJIT record and
-- abort traces in the middle of the request path's hot counters.
require("jit").off(_M.refresh)

local function on_timer(premature, self)
    if premature then
        return
    end
    local ok, err = pcall(_M.refresh, self)
    if not ok then
        ngx_log(WARN, "gray: refreshing the lists failed: ", err)
    end
end

--- Starts the refresh timer (and a first refresh now); from a phase where
-- timers may be created. Returns true, or nil, err.
function _M.start(self)
    local ok, err = timer_at(0, on_timer, self)
    if ok then
        ok, err = timer_every(self.interval, on_timer, self)
    end
    if not ok then
        return nil, err
    end
    self.started = true
    return true
end

--- The decision of the most specific range holding a canonical address,
-- or nil.
function _M.range(self, addr)
    local set = self.ranges
    if not set then
        return nil
    end
    local index = rangeset_find(set, addr)
    return index and self.decisions[index]
end

--- The decision an id list gives an identity's value, or nil.
function _M.listed(self, name, value)
    local ids = self.idlists[name]
    return ids and ids[value]
end

--- Whether an identity key falls in the percentage.
function _M.in_percent(self, key)
    local threshold = self.threshold
    return threshold > 0 and bucket(key) < threshold
end

--- What has been compiled, for logs and specs.
function _M.stats(self)
    local lists = {}
    for name, ids in pairs(self.idlists) do
        local n = 0
        for _ in pairs(ids) do
            n = n + 1
        end
        lists[name] = n
    end
    return {
        ranges = self.ranges and self.ranges.count or 0,
        lists = lists,
        percent = self.threshold / 100,
        compiles = self.compiles,
        refreshes = self.refreshes,
    }
end

return _M
