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
local memcached = require "gray.memcached"
local client = require "gray.client"
local client_key_of = client.key
local gray_log = require "gray.log"
local lrucache = require "resty.lrucache"

local ngx = ngx
local ngx_now = ngx.now
local ngx_exec = ngx.exec
local get_phase = ngx.get_phase
local ngx_log = ngx.log
local WARN = ngx.WARN
local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local setmetatable = setmetatable
local math_max = math.max

local _M = { _VERSION = "0.1.0", VERSION = "0.1.0" }
local mt = { __index = _M }

-- Every option, its default and what it is. Options not listed here are
-- refused, so a typo cannot go unnoticed.
local DEFAULTS = {
    memcached = "127.0.0.1:11211",          -- "host:port[, host:port...]" or a table
    trusted = client.DEFAULTS.trusted,      -- proxies whose headers count ("none")
    client_headers = client.DEFAULTS.client_headers, -- also "Forwarded"; "none"
    stable = "@server",                     -- location for everybody else
    target = "@server_test",                -- location for value "1"
    targets = false,                        -- { [value] = location, ... }
    key_prefix = "",                        -- prepended to the address key
    cache_ttl = 1,                          -- s a hit is trusted; 0: no cache
    neg_ttl = false,                        -- s a miss is trusted (cache_ttl)
    stale_ttl = 60,                         -- s an expired answer may serve in an outage
    cache_size = 10000,                     -- entries per worker
    log_interval = 5,                       -- s between two logs of one error kind
}
-- the memcached client's own: timeout, value_max, pool_size, ...
for name, default in pairs(memcached.DEFAULTS) do
    if name ~= "servers" then
        DEFAULTS[name] = default
    end
end
_M.DEFAULTS = DEFAULTS

-- Phases where a cache miss can ask memcached (cosockets are enabled).
local COSOCKET_PHASES = {
    rewrite = true, access = true, content = true, timer = true,
    ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}

local function opt_error(name, what)
    return nil, "gray.new: option '" .. name .. "' " .. what
end

local function check_location(name, v)
    if type(v) ~= "string" or not (v:find("^@%S+$") or v:find("^/%S*$")) then
        return opt_error(name, "must be a named location ('@name') or a URI ('/path'), got "
                         .. tostring(v))
    end
    return v
end
_M.check_location = check_location

local function check_seconds(name, v, max)
    if type(v) ~= "number" or v ~= v or v < 0 or v > max then
        return opt_error(name, "must be a number of seconds from 0 to " .. max
                         .. ", got " .. tostring(v))
    end
    return v
end

-- The locations: value "1" -> target, plus `targets`.
local function build_targets(get)
    local target, err = check_location("target", get("target"))
    if not target then
        return nil, err
    end
    local targets = { ["1"] = target }
    local extra = get("targets")
    if extra then
        if type(extra) ~= "table" then
            return opt_error("targets", "must be a table of value = location")
        end
        for value, loc in pairs(extra) do
            if type(value) ~= "string" then
                return opt_error("targets", "keys must be memcached values (strings)")
            end
            targets[value], err = check_location("targets[" .. value .. "]", loc)
            if not targets[value] then
                return nil, err
            end
        end
    end
    return targets
end

-- cache_ttl, neg_ttl, stale_ttl, cache_size, log_interval into self.
local function build_cache(self, get)
    local cache_ttl, neg_ttl, stale_ttl, log_interval, err
    cache_ttl, err = check_seconds("cache_ttl", get("cache_ttl"), 86400)
    if not cache_ttl then
        return nil, err
    end
    neg_ttl = get("neg_ttl")
    if neg_ttl == false then
        neg_ttl = cache_ttl
    end
    neg_ttl, err = check_seconds("neg_ttl", neg_ttl, 86400)
    if not neg_ttl then
        return nil, err
    end
    stale_ttl, err = check_seconds("stale_ttl", get("stale_ttl"), 86400)
    if not stale_ttl then
        return nil, err
    end
    log_interval, err = check_seconds("log_interval", get("log_interval"), 3600)
    if not log_interval then
        return nil, err
    end
    local size = get("cache_size")
    if type(size) ~= "number" or size < 1 or size > 10000000 or size % 1 ~= 0 then
        return opt_error("cache_size", "must be an integer from 1 to 10000000")
    end

    -- lrucache keeps an entry until ttl, then returns it as stale until it
    -- is evicted; a ttl of 0 would still count as fresh within the same
    -- millisecond, so "no fresh life" is a slightly negative ttl instead.
    self.pos_ttl = cache_ttl > 0 and cache_ttl or -0.001
    self.neg_ttl = neg_ttl > 0 and neg_ttl or -0.001
    self.use_fresh = cache_ttl > 0 or neg_ttl > 0
    self.stale_limit = math_max(cache_ttl, neg_ttl) + stale_ttl
    -- an entry holds a decision (a location string shared with
    -- self.targets, or false), never what memcached sent
    self.cache = lrucache.new(size)
    self.log = gray_log.new(log_interval)
    return true
end

--- Builds a router. Every option is checked; nil, err names the bad one.
function _M.new(opts)
    if opts == nil then
        opts = {}
    elseif type(opts) ~= "table" then
        return nil, "gray.new: options must be a table"
    end
    for name in pairs(opts) do
        if memcached.REPLACED[name] then
            return opt_error(name, "is gone: 'timeout' (ms) bounds the whole lookup")
        elseif DEFAULTS[name] == nil then
            return nil, "gray.new: unknown option '" .. tostring(name) .. "'"
        end
    end
    local function get(name)
        local v = opts[name]
        if v == nil then
            return DEFAULTS[name]
        end
        return v
    end

    local self = {}
    local err, ok

    local mc_opts = { servers = get("memcached") }
    for name in pairs(memcached.DEFAULTS) do
        if name ~= "servers" then
            mc_opts[name] = get(name)
        end
    end
    self.mc, err = memcached.new(mc_opts)
    if not self.mc then
        return nil, "gray.new: " .. err:gsub("^option 'servers'", "option 'memcached'")
    end

    local warnings
    self.client, warnings = client.new({ trusted = get("trusted"),
                                         client_headers = get("client_headers") })
    if not self.client then
        return nil, "gray.new: " .. warnings
    end
    for _, w in ipairs(warnings) do
        ngx_log(WARN, "gray: trusted ", w)
    end

    self.stable, err = check_location("stable", get("stable"))
    if not self.stable then
        return nil, err
    end
    self.targets, err = build_targets(get)
    if not self.targets then
        return nil, err
    end

    local prefix = get("key_prefix")
    if type(prefix) ~= "string" or #prefix > 200
       or (prefix ~= "" and not gray_ffi.mc_key_ok(prefix)) then
        return opt_error("key_prefix", "must be a string of at most 200 bytes without"
                         .. " spaces or control characters")
    end
    -- false, not nil: a field that is present costs the JIT no metatable lookup
    self.key_prefix = prefix ~= "" and prefix or false

    ok, err = build_cache(self, get)
    if not ok then
        return nil, err
    end
    -- Only canonical addresses are keys of self.cache (identities, lists
    -- and the like must never share it), so a header or peer whose text is
    -- a key there is known to be that address: gray.client then skips its
    -- parse. With a key_prefix no raw text can match.
    self.probe = not self.key_prefix and self.cache
    return setmetatable(self, mt)
end

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

-- A cache miss: ask memcached, cache the decision, or fall back to a stale
-- decision or the stable location.
local function lookup(self, key, stale, stored_at)
    local phase = get_phase()
    if not COSOCKET_PHASES[phase] then
        return nil, "gray: decide() needs cosockets on a cache miss: call it in the rewrite,"
                    .. " access or content phase, not in " .. phase
    end
    local cache = self.cache
    local value, err, kind = self.mc:get(key)
    local t = ngx_now()
    if kind == "value" then
        -- an oversized value is an answer, just not a membership one
        self.log:report(kind, err)
        value = ""
    end
    if value ~= nil then
        local target = value and self.targets[value] or false
        -- lrucache's flags keep when the answer was stored (whole seconds:
        -- they are a uint32), which bounds its stale use
        cache:set(key, target, value and self.pos_ttl or self.neg_ttl, t)
        if target then
            return target, "ip", "memcached"
        end
        return self.stable, "default", "memcached"
    end

    self.log:report(kind, err)
    if not self.use_fresh then
        -- with no fresh life every entry is expired: it is stale
        local fresh
        fresh, stale, stored_at = cache:get(key)
        if fresh ~= nil then
            stale = fresh
        end
    end
    if stale == nil or t - stored_at > self.stale_limit then
        return self.stable, kind == "down" and "store-down" or "store-error"
    end
    if stale then
        return stale, "ip", "stale"
    end
    return self.stable, "default", "stale"
end

--- Decides without side effects on the request: returns the location, the
-- reason ("ip": gray by address, "default": not gray, "store-error":
-- memcached failed, "store-down": its breaker is open, "no-client": no
-- client address) and where the answer came from ("cache", "memcached",
-- "stale", or nil when there was none). nil, err where a cache miss cannot
-- ask memcached (a phase without cosockets).
local function decide(self)
    -- the probe hands back the entry of an address already in the cache
    local key, target, stale, stored_at = client_key_of(self.client, self.probe)
    if not key then
        return self.stable, "no-client"
    end
    if target == nil and stale == nil then
        if self.key_prefix then
            key = self.key_prefix .. key
        end
        if self.use_fresh then
            -- an expired entry comes back as stale, for use if memcached fails
            target, stale, stored_at = self.cache:get(key)
        end
    end
    if target then
        return target, "ip", "cache"
    elseif target == false then
        return self.stable, "default", "cache"
    end
    return lookup(self, key, stale, stored_at)
end

_M.decide = decide

--- decide(), then ngx.exec() to the location.
function _M.exec(self)
    return ngx_exec(decide(self) or self.stable)
end

return _M
