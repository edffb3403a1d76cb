-- gray.options: the router's options, their defaults and their checks.
-- check() returns the options as a router is built from them, or nil and a
-- refusal record (gray.util.option_error) naming the option, so that each
-- caller words it its own way: gray.new as "gray.new: option 'x' ...", the
-- drop-in (gray.dep) as "$gray_x ...".
--
--   local o, err = options.check({ cache_ttl = 2 })
--   if not o then return nil, options.text(err) end   -- "gray.new: option ..."
--
-- What check() returns holds every option, the defaults filled in, some in
-- the form the router uses (marked "checked:" in DEFAULTS), and what had to
-- be built to be checked: `mc` (the gray.memcached client), `client` (the
-- gray.client picker), `force_var` (the nginx variable of `force`), `secret`
-- (the key read from secret_file).

local gray_ffi = require "gray.ffi"
local memcached = require "gray.memcached"
local client = require "gray.client"
local ids_mod = require "gray.ids"
local util = require "gray.util"
local read_secret = require("gray.token").read_secret
local guard_mod = require "gray.guard"

local ngx_log = ngx.log
local WARN = ngx.WARN
local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local option_error, option_text, split_list = util.option_error, util.option_text,
    util.split_list

local _M = {}

-- Every option, its default and what it is. Options not listed here are
-- refused, so a typo cannot go unnoticed.
local DEFAULTS = {
    memcached = "127.0.0.1:11211",          -- "host:port[, host:port...]" or a table
    trusted = client.DEFAULTS.trusted,      -- proxies whose headers count ("none")
    client_headers = client.DEFAULTS.client_headers, -- also "Forwarded"; "none"
    stable = "@server",                     -- location for everybody else
    target = "@server_test",                -- location of the default target, named
                                            -- "gray" (values "1" and "gray")
    targets = false,                        -- { [name] = location, ... }: values naming them
                                            -- (checked: a table, maybe empty)
    upstreams = false,                      -- "stable=app_v1, gray=app_v2, v3=app_v3":
                                            -- upstream() names them (checked: a table
                                            -- target name -> upstream, or false)
    ids = false,                            -- "uid=cookie:uid, dev=header:X-Device-Id"
                                            -- (checked: gray.ids.parse's list, or false)
    lists = false,                          -- id list names: { "dev" } (gray:list:dev)
                                            -- (checked: a table, or false)
    ranges_key = "gray:ranges",             -- address ranges list; false: none
    percent_key = "gray:percent",           -- sticky percentage; false: none
    ramp_key = "gray:ramp",                 -- timed ramp (replaces the percentage); false: none
    halt_key = "gray:halt",                 -- halts: <halt_key>:<target>; false: none
    guard = false,                          -- "on", or "error_delta=0.02, latency_ratio=2,
                                            -- min_requests=200, window=60" (or a table)
                                            -- (checked: gray.guard.parse's record, or false)
    refresh_interval = 2,                   -- s between two checks of the lists
    refresh_timeout = 2000,                 -- ms for one refresh of them all
    list_max = 32 * 1024 * 1024,            -- bytes of one list (all its parts)
    lists_dir = "/dev/shm/lua-resty-gray",  -- tmpfs directory of the node's list images
                                            -- (checked by gray.lists.new)
    force = false,                          -- tester override: "header:X-Gray" or "cookie:gray"
    force_from = false,                     -- testers' CIDRs (the resolved client's address)
                                            -- (checked: a gray.ffi ipset, or false)
    secret_file = false,                    -- file of the HMAC key: signed tokens
    debug_header = false,                   -- "X-Gray-Debug": target and reason (exec())
    metrics_shm = "gray_metrics",           -- lua_shared_dict for gray.metrics; false: off
    key_prefix = "",                        -- prepended to the address key
    cache_ttl = 1,                          -- s a hit is trusted; 0: no cache
    neg_ttl = false,                        -- s a miss is trusted (cache_ttl)
                                            -- (checked: a number)
    stale_ttl = 60,                         -- s an expired answer may serve in an outage
    cache_size = 10000,                     -- entries per worker
    shm = false,                            -- lua_shared_dict: a cache shared by the workers
    log_interval = 5,                       -- s between two logs of one error kind
}
-- the memcached client's own: timeout, value_max, pool_size, ...
for name, default in pairs(memcached.DEFAULTS) do
    if name ~= "servers" then
        DEFAULTS[name] = default
    end
end
_M.DEFAULTS = DEFAULTS

-- Target names a router may have: "stable", the unknown-target decision and
-- "1" (the default target's other name) take three of the GRAY_TARGETS_MAX
-- (255) indexes of a compiled ranges list.
local TARGETS_MAX = 252

--- A refusal record as gray.new says it ("gray.new: option 'x' ..."), or
-- with the option named as `name` (say "$gray_x").
function _M.text(err, name)
    if name then
        return option_text(err, name)
    end
    return "gray.new: " .. option_text(err)
end

--- A location option's value: v, or nil and a refusal record. index: the
-- entry of a table option ("v2" of targets), if any.
local function check_location(name, v, index)
    if type(v) ~= "string" or not (v:find("^@%S+$") or v:find("^/%S*$")) then
        return option_error(name, "must be a named location ('@name') or a URI ('/path'),"
                            .. " got " .. tostring(v), index)
    end
    return v
end
_M.check_location = check_location

local function check_seconds(o, name, max)
    local v = o[name]
    if type(v) ~= "number" or v ~= v or v < 0 or v > max then
        return option_error(name, "must be a number of seconds from 0 to " .. max
                            .. ", got " .. tostring(v))
    end
    return v
end

-- parse(o[name]) (a parse of the option's value that returns nil, err):
-- its result, or nil and a refusal naming the option.
local function parse_option(o, name, parse)
    local v, err = parse(o[name])
    if not v then
        return option_error(name, err)
    end
    return v
end

-- Every name known, opts a table; then every option's value, the
-- defaults filled in.
local function with_defaults(opts)
    if opts == nil then
        opts = {}
    elseif type(opts) ~= "table" then
        return option_error(nil, "options must be a table")
    end
    for name in pairs(opts) do
        if memcached.REPLACED[name] then
            return option_error(name, "is gone: 'timeout' (ms) bounds the whole lookup")
        elseif name == "force_untrusted" then
            return option_error(name, "is gone: the override counts only from the addresses"
                                .. " in 'force_from' or as a token signed with 'secret_file'")
        elseif DEFAULTS[name] == nil then
            return option_error(nil, "unknown option '" .. tostring(name) .. "'")
        end
    end
    local o = {}
    for name, default in pairs(DEFAULTS) do
        local v = opts[name]
        if v == nil then
            v = default
        end
        o[name] = v
    end
    return o
end

-- The memcached client (memcached, and its own options under their names)
-- and the client picker (trusted, client_headers) into o.mc, o.client.
local function check_peers(o)
    local mc_opts = { servers = o.memcached }
    for name in pairs(memcached.DEFAULTS) do
        if name ~= "servers" then
            mc_opts[name] = o[name]
        end
    end
    local err, warnings
    o.mc, err = memcached._new(mc_opts)
    if not o.mc then
        if err.option == "servers" then
            return option_error("memcached", err.message, err.index, err.sep)
        end
        return nil, err
    end
    o.client, err, warnings = client._new({ trusted = o.trusted,
                                            client_headers = o.client_headers })
    if not o.client then
        return nil, err
    end
    for _, w in ipairs(warnings) do
        ngx_log(WARN, "gray: trusted ", w)
    end
    return true
end

-- stable, target, targets.
local function check_targets(o)
    local err
    o.stable, err = check_location("stable", o.stable)
    if not o.stable then
        return nil, err
    end
    o.target, err = check_location("target", o.target)
    if not o.target then
        return nil, err
    end
    local extra = o.targets
    o.targets = {}
    if not extra then
        return true
    elseif type(extra) ~= "table" then
        return option_error("targets", "must be a table of value = location")
    end
    local n = 0
    for value, loc in pairs(extra) do
        if type(value) ~= "string" then
            return option_error("targets", "keys must be memcached values (strings)")
        elseif value == "stable" then
            return option_error("targets", "names 'stable', which is reserved: a value"
                                .. " 'stable' pins a client to the stable location")
        elseif value == "gray" or value == "1" then
            return option_error("targets", "names '" .. value .. "', which is reserved: the"
                                .. " default target ('target') is named 'gray' (value 1 or"
                                .. " gray)")
        elseif not gray_ffi.target_name_ok(value) then
            return option_error("targets", "names '" .. value .. "', which is not a target"
                                .. " name (1 to " .. gray_ffi.TARGET_NAME_MAX .. " printable"
                                .. " ASCII bytes without '#', not 0)")
        end
        loc, err = check_location("targets", loc, value)
        if not loc then
            return nil, err
        end
        o.targets[value] = loc
        n = n + 1
        if n > TARGETS_MAX - 1 then
            return option_error("targets", "has more than " .. TARGETS_MAX - 1 .. " names")
        end
    end
    return true
end

-- ids, lists (names of ids), ranges_key, percent_key, ramp_key, and the refresh of
-- the lists: refresh_interval, refresh_timeout, list_max.
local function check_lists(o)
    if o.ids then
        local ids, err = parse_option(o, "ids", ids_mod.parse)
        if not ids then
            return nil, err
        end
        o.ids = #ids > 0 and ids or false
    end
    local lists = split_list(o.lists)
    if lists then
        if type(lists) ~= "table" then
            return option_error("lists", "must be a list of identity names")
        end
        for _, name in ipairs(lists) do
            local known = false
            for _, id in ipairs(o.ids or {}) do
                known = known or id.name == name
            end
            if not known then
                return option_error("lists", "names '" .. tostring(name) .. "', which is not"
                                    .. " one of the identities in 'ids'")
            end
        end
    end
    o.lists = lists
    for _, name in ipairs({ "ranges_key", "percent_key", "ramp_key", "halt_key" }) do
        local key = o[name]
        if key ~= false and not gray_ffi.mc_key_ok(key) then
            return option_error(name, "must be a memcached key or false")
        end
    end
    local interval = o.refresh_interval
    if type(interval) ~= "number" or interval < 0.1 or interval > 3600 then
        return option_error("refresh_interval", "must be a number of seconds from 0.1 to 3600")
    end
    local rtimeout = o.refresh_timeout
    if type(rtimeout) ~= "number" or rtimeout < 1 or rtimeout > 60000 then
        return option_error("refresh_timeout", "must be a number of ms from 1 to 60000")
    end
    local list_max = o.list_max
    if type(list_max) ~= "number" or list_max < 1024 or list_max > 1024 * 1024 * 1024 then
        return option_error("list_max", "must be a number of bytes from 1024 to 1 GiB")
    end
    return true
end

-- The tester override and what may steer routing: force (into
-- o.force_var), force_from (a set), secret_file (into o.secret); the ids'
-- signed cookies need the secret.
local function check_trust(o)
    local force, err = o.force
    o.force_var = false
    if force then
        local source, field
        if type(force) == "string" then
            source, field = force:match("^(%a+):([%w_%-]+)$")
        end
        if source == "header" then
            o.force_var = "http_" .. field:lower():gsub("%-", "_")
        elseif source == "cookie" then
            o.force_var = "cookie_" .. field
        else
            return option_error("force", "must be 'header:Name' or 'cookie:name', got "
                                .. tostring(force))
        end
    end
    -- who may use it: testers' addresses, or anyone holding a signed token
    if o.force_from then
        local set
        set, err = parse_option(o, "force_from", gray_ffi.new_ipset)
        if not set then
            return nil, err
        end
        for _, w in ipairs(set.warnings) do
            ngx_log(WARN, "gray: force_from ", w)
        end
        o.force_from = set.count > 0 and set or false
    end
    o.secret = false
    if o.secret_file then
        o.secret, err = parse_option(o, "secret_file", read_secret)
        if not o.secret then
            return nil, err
        end
    end
    for _, id in ipairs(o.ids or {}) do
        if id.context and not o.secret then
            return option_error("ids", "identity '" .. id.name .. "': signed-cookie: needs"
                                .. " 'secret_file' (the secret that signs the cookies)")
        end
    end
    if o.force_var and not (o.force_from or o.secret) then
        return option_error("force", "needs 'force_from' (the testers' addresses) or"
                            .. " 'secret_file' (signed tokens): otherwise every client could"
                            .. " choose its own route")
    end
    return true
end

-- debug_header, metrics_shm, key_prefix (and the ids' keys with it).
local function check_outputs(o)
    local debug_header = o.debug_header
    if debug_header and (type(debug_header) ~= "string"
                         or not debug_header:find("^[%w%-]+$")) then
        return option_error("debug_header", "must be a header name or false")
    end
    o.debug_header = debug_header or false
    local shm = o.metrics_shm
    if shm ~= false and type(shm) ~= "string" then
        return option_error("metrics_shm", "must be a lua_shared_dict name or false")
    end
    local prefix = o.key_prefix
    if type(prefix) ~= "string" or #prefix > 200
       or (prefix ~= "" and not gray_ffi.mc_key_ok(prefix)) then
        return option_error("key_prefix", "must be a string of at most 200 bytes without"
                            .. " spaces or control characters")
    end
    if o.ids then
        local err = ids_mod.check_keys(o.ids, { ranges_key = o.ranges_key,
                                               percent_key = o.percent_key,
                                               ramp_key = o.ramp_key }, prefix)
        if err then
            return option_error("ids", err)
        end
    end
    return true
end

-- cache_ttl, neg_ttl (cache_ttl when false), stale_ttl, log_interval,
-- cache_size; shm, which needs a fresh life to share.
local function check_cache(o)
    local err
    o.cache_ttl, err = check_seconds(o, "cache_ttl", 86400)
    if not o.cache_ttl then
        return nil, err
    end
    if o.neg_ttl == false then
        o.neg_ttl = o.cache_ttl
    end
    for _, name in ipairs({ "neg_ttl", "stale_ttl" }) do
        o[name], err = check_seconds(o, name, 86400)
        if not o[name] then
            return nil, err
        end
    end
    o.log_interval, err = check_seconds(o, "log_interval", 3600)
    if not o.log_interval then
        return nil, err
    end
    local size = o.cache_size
    if type(size) ~= "number" or size < 1 or size > 10000000 or size % 1 ~= 0 then
        return option_error("cache_size", "must be an integer from 1 to 10000000")
    end
    local shm = o.shm
    if shm == false then
        return true
    elseif type(shm) ~= "string" or shm == "" then
        return option_error("shm", "must be a lua_shared_dict name or false")
    elseif not (o.cache_ttl > 0 or o.neg_ttl > 0) then
        return option_error("shm", "needs cache_ttl or neg_ttl above 0 (nothing would be"
                            .. " shared)")
    end
    return true
end

-- An upstream name for proxy_pass http://$gray_upstream: an upstream{}
-- block's name or host:port ([v6]:port).
local function upstream_ok(v)
    return type(v) == "string" and #v <= 255 and (v:find("^[%w_][%w_%.%-]*$") ~= nil
                                                 or v:find("^[%w_][%w_%.%-]*:%d+$") ~= nil
                                                 or v:find("^%[[%x:%.]+%]:%d+$") ~= nil)
end

-- upstreams: "stable=app_v1, gray=app_v2, v3=app_v3" (or a table), an
-- upstream for every target: stable, the default one (gray) and each of
-- targets. A name not in targets becomes one (a target of upstream() only:
-- its location is "@<name>", for exec()).
local function check_upstreams(o)
    local ups = o.upstreams
    if not ups then
        return true
    end
    local map = {}
    if type(ups) == "string" then
        for item in ups:gmatch("[^,]+") do
            local name, up = item:match("^%s*([^=%s]+)%s*=%s*(%S+)%s*$")
            if not name then
                return option_error("upstreams", "bad entry '" .. item:match("^%s*(.-)%s*$")
                                    .. "' (expected 'stable=app_v1, gray=app_v2, v3=app_v3')")
            end
            if map[name] then
                return option_error("upstreams", "names target '" .. name .. "' twice")
            end
            map[name] = up
        end
    elseif type(ups) == "table" then
        for name, up in pairs(ups) do
            map[name] = up
        end
    else
        return option_error("upstreams", "must be 'stable=app_v1, gray=app_v2, ...' or a table"
                            .. " of target name = upstream")
    end
    if map["1"] and map.gray == nil then
        map.gray, map["1"] = map["1"], nil
    end
    for name, up in pairs(map) do
        if type(name) ~= "string" or not (name == "stable" or name == "gray"
                                          or gray_ffi.target_name_ok(name)) then
            return option_error("upstreams", "names '" .. tostring(name) .. "', which is not a"
                                .. " target name")
        elseif not upstream_ok(up) then
            return option_error("upstreams", "gives target '" .. name .. "' the upstream '"
                                .. tostring(up) .. "', which is not an upstream name or"
                                .. " host:port")
        end
        if name ~= "stable" and name ~= "gray" and not o.targets[name] then
            o.targets[name] = "@" .. name
        end
    end
    local missing = {}
    if not map.stable then missing[#missing + 1] = "stable" end
    if not map.gray then missing[#missing + 1] = "gray" end
    for name in pairs(o.targets) do
        if not map[name] then
            missing[#missing + 1] = name
        end
    end
    if #missing > 0 then
        table.sort(missing)
        return option_error("upstreams", "has no upstream for target" .. (#missing > 1 and "s"
                            or "") .. " '" .. table.concat(missing, "', '") .. "' (every"
                            .. " target needs one: stable, gray and the names of targets)")
    end
    o.upstreams = map
    return true
end

-- guard (a record), and the halt keys it and the refresh use: every target
-- name must make a memcached key under halt_key.
local function check_guard(o)
    if o.guard then
        local g, err = parse_option(o, "guard", guard_mod.parse)
        if not g then
            return nil, err
        end
        o.guard = g
        if not o.halt_key then
            return option_error("guard", "needs 'halt_key' (a guard halts by writing it)")
        elseif not o.metrics_shm then
            return option_error("guard", "needs 'metrics_shm' (the outcomes it compares)")
        end
    end
    if o.halt_key then
        if not gray_ffi.mc_key_ok(o.halt_key .. ":gray") then
            return option_error("halt_key", "must leave room for ':<target>' in a memcached"
                                .. " key (250 bytes)")
        end
        for name in pairs(o.targets) do
            if not gray_ffi.mc_key_ok(o.halt_key .. ":" .. name) then
                return option_error("targets", "names '" .. name .. "', which cannot end a"
                                    .. " memcached key (" .. o.halt_key .. ":<target>: no"
                                    .. " spaces); or set 'halt_key' false")
            end
        end
    end
    return true
end

-- In the order their refusals are reported.
local CHECKS = { check_peers, check_targets, check_upstreams, check_lists, check_trust, check_outputs,
                 check_cache, check_guard }

--- Checks gray.new's options. Returns them as the router is built from
-- them (see the top of this file), or nil and a refusal record (gray.util)
-- naming the first bad one.
function _M.check(opts)
    local o, err = with_defaults(opts)
    if not o then
        return nil, err
    end
    for _, check in ipairs(CHECKS) do
        local ok
        ok, err = check(o)
        if not ok then
            return nil, err
        end
    end
    return o
end

return _M
