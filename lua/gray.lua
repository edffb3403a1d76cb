-- gray: the gray-release router. Build one router per configuration and
-- reuse it; per request it picks the client address (trusted proxies only),
-- looks the address up in a per-worker cache, then in memcached, and answers
-- with the location to go to and why. It never fails a request: any trouble
-- with memcached routes to the stable location (or a recent cached answer).
--
--   local router = assert(gray.new({ memcached = "127.0.0.1:11211" }))
--   local target, reason, source = router:decide()
--   router:exec()      -- decide() then ngx.exec(target)

local gray_ffi = require "gray.ffi"
local memcached = require "gray.memcached"
local lrucache = require "resty.lrucache"

local ngx = ngx
local ngx_var = ngx.var
local ngx_now = ngx.now
local ngx_exec = ngx.exec
local ngx_req = ngx.req
local concat = table.concat
local ngx_log = ngx.log
local ERR, WARN = ngx.ERR, ngx.WARN
local peer_ip = gray_ffi.peer_ip
local client_ip = gray_ffi.client_ip
local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local setmetatable = setmetatable
local math_max = math.max

local _M = { VERSION = gray_ffi.VERSION }
local mt = { __index = _M }

-- Every option, its default and what it is. Options not listed here are
-- refused, so a typo cannot go unnoticed.
local DEFAULTS = {
    memcached = "127.0.0.1:11211",          -- "host:port[, host:port...]" or a table
    trusted = { "127.0.0.0/8", "::1" },     -- proxies whose headers count ("none")
    client_headers = { "X-Real-IP", "X-Forwarded-For" }, -- also "Forwarded"
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
for name, default in pairs(memcached.DEFAULTS) do
    if name ~= "servers" then
        DEFAULTS[name] = default
    end
end
_M.DEFAULTS = DEFAULTS

local HEADERS = {
    ["x-real-ip"] = "use_real_ip",
    ["x-forwarded-for"] = "use_xff",
    ["forwarded"] = "use_forwarded",
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

local function check_seconds(name, v, max)
    if type(v) ~= "number" or v ~= v or v < 0 or v > max then
        return opt_error(name, "must be a number of seconds from 0 to " .. max
                         .. ", got " .. tostring(v))
    end
    return v
end

--- Builds a router. Every option is checked; nil, err names the bad one.
function _M.new(opts)
    if opts == nil then
        opts = {}
    elseif type(opts) ~= "table" then
        return nil, "gray.new: options must be a table"
    end
    for name in pairs(opts) do
        if DEFAULTS[name] == nil then
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
    local err

    -- memcached client: its own option checks
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

    local trusted = get("trusted")
    if trusted == "none" then
        trusted = {}
    end
    if type(trusted) ~= "table" and type(trusted) ~= "string" then
        return opt_error("trusted", "must be a list of CIDRs")
    end
    self.trusted, err = gray_ffi.new_ipset(trusted)
    if not self.trusted then
        return opt_error("trusted", err)
    end
    for _, w in ipairs(self.trusted.warnings) do
        ngx_log(WARN, "gray: trusted ", w)
    end

    local headers = get("client_headers")
    if type(headers) ~= "table" then
        return opt_error("client_headers", "must be a list of header names")
    end
    self.use_real_ip, self.use_xff, self.use_forwarded = false, false, false
    for _, h in ipairs(headers) do
        local field = type(h) == "string" and HEADERS[h:lower()]
        if not field then
            return opt_error("client_headers", "has '" .. tostring(h)
                             .. "'; known: X-Real-IP, X-Forwarded-For, Forwarded")
        end
        self[field] = true
    end

    self.stable, err = check_location("stable", get("stable"))
    if not self.stable then
        return nil, err
    end
    local target
    target, err = check_location("target", get("target"))
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
    self.targets = targets

    local prefix = get("key_prefix")
    if type(prefix) ~= "string" or #prefix > 200
       or (prefix ~= "" and not gray_ffi.mc_key_ok(prefix)) then
        return opt_error("key_prefix", "must be a string of at most 200 bytes without"
                         .. " spaces or control characters")
    end
    self.key_prefix = prefix ~= "" and prefix or nil

    local cache_ttl, neg_ttl, stale_ttl, log_interval
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
    self.cache = lrucache.new(size)
    self.log_interval = log_interval
    self.logged_at = {}
    self.suppressed = {}
    return setmetatable(self, mt)
end

-- Logs one failure kind at most once per log_interval, with how many were
-- left out in between: no log flood at high request rates.
local function report(self, kind, err)
    local t = ngx_now()
    local last = self.logged_at[kind]
    if last and t - last < self.log_interval then
        self.suppressed[kind] = (self.suppressed[kind] or 0) + 1
        return
    end
    local left_out = self.suppressed[kind] or 0
    self.logged_at[kind] = t
    self.suppressed[kind] = 0
    if left_out > 0 then
        ngx_log(ERR, "gray: ", err, " (", left_out, " more like it since the last report)")
    else
        ngx_log(ERR, "gray: ", err)
    end
end

-- $http_forwarded holds only the first Forwarded line, and a proxy may add
-- its own line after the client's: all lines, joined as one list.
local function forwarded_lines()
    local v = ngx_req.get_headers()["forwarded"]
    if type(v) == "table" then
        return concat(v, ", ")
    end
    return v
end

--- The client key: the canonical client address (with key_prefix), or nil
-- when there is none (a unix-socket peer). The headers are read only when
-- the peer is a trusted proxy.
local function client_key(self)
    local peer = ngx_var.remote_addr
    local key, trusted = peer_ip(self.trusted, peer)
    if trusted == true then
        local real_ip = self.use_real_ip and ngx_var.http_x_real_ip or nil
        local xff = self.use_xff and ngx_var.http_x_forwarded_for or nil
        local fwd = self.use_forwarded and ngx_var.http_forwarded or nil
        if fwd and not xff then
            fwd = forwarded_lines()
        end
        if real_ip or xff or fwd then
            key = client_ip(self.trusted, peer, real_ip, xff, fwd)
        end
    end
    if key and self.key_prefix then
        key = self.key_prefix .. key
    end
    return key
end
_M.client_key = client_key

--- Decides without side effects on the request: returns the location, the
-- reason ("ip": gray by address, "default": not gray, "store-error":
-- memcached failed, "store-down": its breaker is open, "no-client": no
-- client address) and where the answer came from ("cache", "memcached",
-- "stale", or nil when there was none).
function _M.decide(self)
    local key = client_key(self)
    if not key then
        return self.stable, "no-client"
    end

    local cache = self.cache
    local value, source, stale, stored_at
    if self.use_fresh then
        -- an expired entry comes back as stale, for use if memcached fails
        value, stale, stored_at = cache:get(key)
        source = "cache"
    end
    if value == nil then
        local err, kind
        value, err, kind = self.mc:get(key)
        local t = ngx_now()
        if value ~= nil then
            -- lrucache's flags keep when the answer was stored (whole
            -- seconds: they are a uint32), which bounds its stale use
            cache:set(key, value, value and self.pos_ttl or self.neg_ttl, t)
            source = "memcached"
        else
            report(self, kind, err)
            if not self.use_fresh then
                -- with no fresh life every entry is expired: it is stale
                value, stale, stored_at = cache:get(key)
                if value ~= nil then
                    stale = value
                end
            end
            if stale == nil or t - stored_at > self.stale_limit then
                return self.stable, kind == "down" and "store-down" or "store-error"
            end
            value = stale
            source = "stale"
        end
    end

    local target = value and self.targets[value]
    if target then
        return target, "ip", source
    end
    return self.stable, "default", source
end

--- decide(), then ngx.exec() to the location.
function _M.exec(self)
    return ngx_exec((self:decide()))
end

-- The drop-in for the classic dep.lua (lua/gray/dep.lua calls this). Its
-- configuration comes from optional nginx variables set in the location:
-- $gray_memcached, $gray_trusted, $gray_stable, $gray_target and
-- $gray_cache_ttl. One router is built per distinct configuration per
-- worker; a bad configuration is logged once and routes to the stable
-- location.

local DEP_ROUTERS_MAX = 64
local dep_routers = {}      -- config key -> router (or a stand-in for a bad one)
local dep_count = 0
local last_m, last_t, last_s, last_g, last_c, last_router

local function dep_build(m, t, s, g, c)
    -- a variable set in another location reads as "" here: not set
    if m == "" then m = nil end
    if t == "" then t = nil end
    if s == "" then s = nil end
    if g == "" then g = nil end
    if c == "" then c = nil end
    local ckey = (m or "") .. "\0" .. (t or "") .. "\0" .. (s or "") .. "\0" .. (g or "")
                 .. "\0" .. (c or "")
    local router = dep_routers[ckey]
    if router == nil then
        local opts = { memcached = m, stable = s, target = g }
        if t then
            opts.trusted = t
        end
        if c then
            opts.cache_ttl = tonumber(c) or c
        end
        local err
        router, err = _M.new(opts)
        if not router then
            ngx_log(ERR, "gray: dep.lua: bad configuration, sending everybody to the ",
                    "stable location: ", err)
            local fallback = check_location("stable", s or DEFAULTS.stable) or DEFAULTS.stable
            router = { exec = function() return ngx_exec(fallback) end }
        end
        if dep_count >= DEP_ROUTERS_MAX then
            dep_routers, dep_count = {}, 0
        end
        dep_routers[ckey] = router
        dep_count = dep_count + 1
    end
    return router
end

-- A variable that is not defined anywhere in nginx.conf stays so for the
-- worker's life (a reload starts new workers): it is not read again. A nil
-- read alone does not prove it (a map without a default reads nil), so the
-- first one is confirmed by nginx refusing a write for lack of a definition.
local dep_undefined = {}

local function clear_var(name)
    ngx_var[name] = nil
end

local function dep_var(name)
    if dep_undefined[name] then
        return nil
    end
    local v = ngx_var[name]
    if v == nil then
        -- no closure here: one would make every return of this function
        -- close an upvalue, which LuaJIT cannot compile
        local ok, err = pcall(clear_var, name)
        if not ok and tostring(err):find("not found for writing", 1, true) then
            dep_undefined[name] = true
        end
    end
    return v
end

function _M.dep()
    local m, t = dep_var("gray_memcached"), dep_var("gray_trusted")
    local s, g, c = dep_var("gray_stable"), dep_var("gray_target"), dep_var("gray_cache_ttl")
    local router = last_router
    if router == nil or m ~= last_m or t ~= last_t or s ~= last_s or g ~= last_g
       or c ~= last_c then
        router = dep_build(m, t, s, g, c)
        last_m, last_t, last_s, last_g, last_c, last_router = m, t, s, g, c, router
    end
    return router:exec()
end

return _M
