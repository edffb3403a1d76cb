-- Drop-in for the classic dep.lua gray-release script:
--
--     location / {
--         content_by_lua_file /path/to/lua-resty-gray/lua/gray/dep.lua;
--     }
--     location @server      { proxy_pass http://127.0.0.1:5001; }
--     location @server_test { proxy_pass http://127.0.0.1:5002; }
--
-- Same behaviour by default (memcached at 127.0.0.1:11211, the client
-- address as key, value "1" = @server_test (the target named "gray"),
-- else @server), without its
-- faults: the address comes from X-Real-IP/X-Forwarded-For only through
-- trusted proxies, connections are pooled, decisions are cached for a
-- second, each lookup has one 50 ms deadline, and any trouble (memcached
-- down or slow, a bad setting, even libgray.so missing) sends the request
-- to @server instead of an error page. Optional nginx variables, set in the
-- location or the server, configure it:
--
--     set $gray_memcached      "127.0.0.1:11211, 127.0.0.1:11212";
--     set $gray_trusted        "10.0.0.0/8, 127.0.0.1";   # or "none"
--     set $gray_client_headers "X-Forwarded-For";         # or "none"
--     set $gray_stable         "@server";
--     set $gray_target         "@server_test";
--     set $gray_cache_ttl      1s;      # a bare number is seconds; 0: no cache
--     set $gray_timeout        50ms;    # a bare number is milliseconds
--     set $gray_targets        "v2=@server_v2, v3=@server_v3";  # value -> location
--     set $gray_ids            "uid=cookie:uid, dev=header:X-Device-Id";
--     set $gray_lists          "dev";            # gray:list:dev, for identity dev
--     set $gray_ranges_key     "gray:ranges";    # "off": no ranges
--     set $gray_percent_key    "gray:percent";   # "off": no percentage
--     set $gray_ramp_key       "gray:ramp";      # "off": no timed ramp
--     set $gray_force          "header:X-Gray";  # tester override, with one of:
--     set $gray_force_from     "10.1.2.0/24";    #   testers' client addresses
--     set $gray_secret_file    /etc/nginx/gray.secret;  # signed tokens (gray-admin token)
--     set $gray_debug_header   "X-Gray-Debug";   # response header: target; reason
--     set $gray_distribution   ketama;           # several servers: or ketama-weighted, modula
--     set $gray_shm            gray_cache;       # lua_shared_dict: a cache for all workers
--     set $gray_stale_ttl      1m;      # an old decision may serve this long in an outage
--     set $gray_upstreams      "stable=app_v1, gray=app_v2";  # gray/route.lua's upstreams
--     set $gray_guard          "on";     # or "error_delta=0.02, latency_ratio=2,
--                                        #     min_requests=200, window=60" (gray.guard)
--     set $gray_halt_key       "gray:halt";   # halts: gray:halt:<target>; "off": none
--
-- Settings for one location only go to run() instead, in the same syntax:
-- a variable `set` in some locations is read in all the others too, where
-- nginx warns "using uninitialized" on every request (its rewrite module's
-- handler answers every such read; nothing reads around it):
--
--     location /b {
--         content_by_lua_block { require("gray.dep").run("$gray_cache_ttl 0") }
--     }
--
-- This file is both the content_by_lua_file script and the module
-- "gray.dep". Run as a script it hands the request to the module's run(),
-- defining the module on its first run, so it works wherever the file is.
--
-- The script's chunk runs interpreted on every request (LuaJIT starts no
-- trace at a main chunk, a vararg function; the trace starts in run()), so
-- its fast path is one table read and a call: the module keeps run() under
-- a key no module name can have ("gray.dep run"). A type() check here cost
-- about 120 instructions per request (make bench).
local run = package.loaded["gray.dep run"]
if run then
    return run()                    -- every request after the first
end
local loaded = package.loaded["gray.dep"]
if type(loaded) == "table" then
    return loaded.run()
end

local gray_log = require "gray.log"

local ngx = ngx
local ngx_var = ngx.var
local ngx_exec = ngx.exec
local ngx_now = ngx.now
local ngx_log = ngx.log
local ERR = ngx.ERR
local pcall, require, type, tostring, tonumber = pcall, require, type, tostring, tonumber
local loadstring, assert = loadstring, assert
local concat = table.concat

local _M = { _VERSION = "0.1.0" }

local STABLE = "@server"
local LOG_INTERVAL = 5          -- s between two logs of one failure kind
local RETRY_LOAD = 5            -- s between two tries to load a failed "gray"
local ROUTERS_MAX = 64          -- distinct configurations kept per worker

local log = gray_log.new(LOG_INTERVAL)

-- nginx time units in seconds (ngx_parse_time)
local TIME_UNITS = {
    ms = 0.001, s = 1, m = 60, h = 3600, d = 86400, w = 7 * 86400,
    M = 30 * 86400, y = 365 * 86400,
}

--- Parses nginx time syntax ("500ms", "1s", "1m30s") into seconds; a bare
-- number (fractions allowed) is taken in `bare_unit` seconds. nil, err.
local function parse_time(text, bare_unit)
    if text:find("^%d+%.?%d*$") or text:find("^%.%d+$") then
        return tonumber(text) * bare_unit
    end
    local total, pos, seen = 0, 1, {}
    while pos <= #text do
        local s, e, digits, unit = text:find("^ *(%d+)(%a+) *", pos)
        if not s or not TIME_UNITS[unit] or seen[unit] then
            return nil
        end
        seen[unit] = true
        total = total + tonumber(digits) * TIME_UNITS[unit]
        pos = e + 1
    end
    if pos == 1 then
        return nil
    end
    return total
end
_M.parse_time = parse_time

-- { nginx variable, gray.new option, converter } in the order read.
local VARS = {
    { "gray_memcached", "memcached" },
    { "gray_trusted", "trusted" },
    { "gray_client_headers", "client_headers" },
    { "gray_stable", "stable" },
    { "gray_target", "target" },
    { "gray_cache_ttl", "cache_ttl", 1, "a bare number is seconds" },
    { "gray_timeout", "timeout", 0.001, "a bare number is milliseconds" },
    { "gray_targets", "targets" },
    { "gray_ids", "ids" },
    { "gray_lists", "lists" },
    { "gray_lists_dir", "lists_dir" },
    { "gray_ranges_key", "ranges_key" },
    { "gray_percent_key", "percent_key" },
    { "gray_force", "force" },
    { "gray_debug_header", "debug_header" },
    { "gray_distribution", "distribution" },
    { "gray_shm", "shm" },
    { "gray_stale_ttl", "stale_ttl", 1, "a bare number is seconds" },
    { "gray_force_from", "force_from" },
    { "gray_secret_file", "secret_file" },
    { "gray_ramp_key", "ramp_key" },
    { "gray_upstreams", "upstreams" },
    { "gray_guard", "guard" },
    { "gray_halt_key", "halt_key" },
}
local NVARS = #VARS      -- a row added above is read, parsed and named: nothing else to do
_M.VARS = VARS

-- VARS' index by variable name (no "$"), for run()'s settings.
local INDEX = {}
for i = 1, NVARS do
    INDEX[VARS[i][1]] = i
end

-- Options a variable can turn off with "off".
local OFF = { ranges_key = true, percent_key = true, ramp_key = true, shm = true, force = true,
              debug_header = true, guard = true, halt_key = true }

--- The gray.new options for the variables' values (vals[i] for VARS[i], ""
-- and nil meaning not set), or nil, err naming the nginx variable.
local function options(vals)
    local opts = {}
    for i = 1, NVARS do
        local v = vals[i]
        if v ~= nil and v ~= "" then
            local var = VARS[i]
            if var[2] == "targets" then
                local targets = {}
                for item in v:gmatch("[^,]+") do
                    local name, loc = item:match("^%s*([^=%s]+)%s*=%s*(%S+)%s*$")
                    if not name then
                        return nil, "$gray_targets: bad entry '" .. item:match("^%s*(.-)%s*$")
                                    .. "' (expected name=@location, ...)"
                    end
                    targets[name] = loc
                end
                v = targets
            elseif OFF[var[2]] and v == "off" then
                v = false
            elseif var[3] then
                local seconds = parse_time(v, var[3])
                if not seconds then
                    return nil, "$" .. var[1] .. ": bad time '" .. v .. "' (nginx time syntax:"
                                .. " 500ms, 1s, 1m30s; " .. var[4] .. ")"
                end
                v = var[2] == "timeout" and seconds * 1000 or seconds
            end
            opts[var[2]] = v
        end
    end
    return opts
end
_M.options = options

-- The nginx variable of each gray.new option ("$gray_cache_ttl"), to name
-- the variable in a refusal (gray.options).
local VAR_OF = {}
for i = 1, NVARS do
    VAR_OF[VARS[i][2]] = "$" .. VARS[i][1]
end

-- The router module, loaded on first use. A failed load (libgray.so not
-- built or not on lua_package_cpath) is retried every RETRY_LOAD seconds,
-- and meanwhile every request goes to the stable location.
local gray, gray_options, load_failed_at

local function load_gray()
    local t = ngx_now()
    if load_failed_at and t - load_failed_at < RETRY_LOAD then
        return nil
    end
    local ok, mod = pcall(require, "gray")
    if ok and type(mod) == "table" then
        gray, gray_options = mod, require "gray.options"
        return mod
    end
    -- require leaves its loading sentinel behind after an error: without
    -- this, the next require would return it instead of trying again
    package.loaded.gray = nil
    package.loaded["gray.ffi"] = nil
    load_failed_at = t
    log:report("load", "dep.lua: cannot load the router, sending every request to the stable"
                       .. " location: " .. tostring(mod))
    return nil
end

-- A variable not defined anywhere in nginx.conf stays so for the worker's
-- life (a reload starts new workers): it is not read again, and a request
-- in a configuration without $gray_* variables reads none at all. A nil read
-- alone does not prove it (a map without a default reads nil), so the first
-- one is confirmed by nginx refusing a write for lack of a definition.
local undefined, ndefined = {}, NVARS
local build_read_all      -- below: read_all over the variables not known undefined

local function clear_var(name)
    ngx_var[name] = nil
end

-- Marks VARS[i] as never to be read again if nginx.conf does not define it.
local function forget_if_undefined(i)
    -- no closure here: pcall(function() ... end) per call would allocate
    local ok, err = pcall(clear_var, VARS[i][1])
    if not ok and tostring(err):find("not found for writing", 1, true) then
        undefined[i] = true
        ndefined = ndefined - 1
        build_read_all()
    end
end

-- Routers by configuration (the variables' values joined), and the last
-- configuration seen, which is nearly always this request's too.
local routers, nrouters = {}, 0
local vals, last = {}, {}
local last_router

-- The stable upstream of $gray_upstreams' text (nil when it names none),
-- for route() while no router can be built.
local UPSTREAMS = INDEX.gray_upstreams
local function stable_upstream(svals)
    local text = svals and svals[UPSTREAMS] or vals[UPSTREAMS]
    return text and text:match("%f[%w]stable%s*=%s*([^,%s]+)")
end

-- route()'s fallback: $gray_upstream as nginx.conf set it (its `set` names
-- the stable upstream), else the stable one of $gray_upstreams.
local function set_stable_upstream(up)
    if up then
        ngx_var.gray_upstream = up
    end
end

-- A stand-in for a configuration that gray.new refused.
local function fallback_router(stable, svals)
    local up = stable_upstream(svals)
    return { exec = function() return ngx_exec(stable) end,
             set_upstream = function() return set_stable_upstream(up) end }
end

--- Parses run()'s settings, "$gray_cache_ttl 0; $gray_trusted '10.0.0.0/8'"
-- (the `set` lines of the variables, "set" and "$" optional), into values by
-- VARS index; nil, err naming what is wrong.
local function parse_settings(text)
    if type(text) ~= "string" then
        return nil, "run(): the settings must be a string, got " .. type(text)
    end
    local svals = {}
    for item in text:gmatch("[^;]+") do
        if item:find("%S") then
            local name, value = item:match("^%s*set%s+%$([%w_]+)%s+(.-)%s*$")
            if not name then
                name, value = item:match("^%s*%$?([%w_]+)%s+(.-)%s*$")
            end
            if value then
                value = value:match('^"(.*)"$') or value:match("^'(.*)'$") or value
            end
            if not (name and INDEX[name]) then
                return nil, "run(): bad setting '" .. item:match("^%s*(.-)%s*$") .. "' (expected"
                            .. " '$gray_<name> <value>; ...' for a documented variable)"
            end
            svals[INDEX[name]] = value ~= "" and value or nil
        end
    end
    return svals
end
_M.parse_settings = parse_settings

-- run()'s settings parsed, by their text (a location's settings are a
-- constant: few distinct texts per worker); and, while no variable is
-- defined, the router of each text ("": none), so that locations taking
-- turns cost a table read, not a configuration.
local parsed, by_settings, nparsed = {}, {}, 0

local function build(config, svals)
    local opts, err
    if svals then
        -- a location's own settings win over the variables
        local merged = {}
        for i = 1, NVARS do
            local v = svals[i]
            if v == nil then
                v = vals[i]
            end
            merged[i] = v
        end
        opts, err = options(merged)
    else
        opts, err = options(vals)
    end
    if opts then
        -- a refusal comes as a record naming the option: worded here with
        -- the variable's name
        opts, err = gray._new(opts)
        if not opts then
            err = gray_options.text(err, VAR_OF[err.option])
        end
    end
    local router = opts
    if not router then
        ngx_log(ERR, "gray: dep.lua: bad configuration, sending everybody to the stable",
                " location: ", err)
        local stable = svals and svals[4] or vals[4]
        if not (stable and gray.check_location("stable", stable)) then
            stable = STABLE
        end
        router = fallback_router(stable, svals)
    end
    if nrouters >= ROUTERS_MAX then
        routers, nrouters = {}, 0
    end
    routers[config] = router
    nrouters = nrouters + 1
    return router
end

-- The router for the variables in vals and run()'s settings (loading the
-- router module first), remembered as the last one; nil and the settings'
-- stable location (if any) while the module cannot be loaded.
local last_settings

local function configure(settings)
    local svals
    if settings ~= nil then
        svals = parsed[settings]
        if svals == nil then
            local err
            svals, err = parse_settings(settings)
            if not svals then
                svals = { err = err }
            end
            if type(settings) == "string" then
                if nparsed >= ROUTERS_MAX then
                    parsed, by_settings, nparsed = {}, {}, 0
                end
                parsed[settings] = svals
                nparsed = nparsed + 1
            end
        end
    end
    if gray == nil and not load_gray() then
        return nil, svals and svals[4]
    end
    local parts = {}
    for i = 1, NVARS do
        parts[i] = vals[i] or ""
    end
    parts[NVARS + 1] = settings ~= nil and tostring(settings) or ""
    local config = concat(parts, "\0")
    local router
    if svals and svals.err then
        -- settings that do not parse: logged at most once per LOG_INTERVAL
        log:report("settings", "dep.lua: bad configuration, sending everybody to the stable"
                               .. " location: " .. svals.err)
        local stable = vals[4]
        router = fallback_router(stable and stable:find("^[@/]%S*$") and stable or STABLE, nil)
    else
        router = routers[config] or build(config, svals)
        if ndefined == 0 and (settings == nil or type(settings) == "string") then
            by_settings[settings or ""] = router
        end
    end
    for i = 1, NVARS do
        last[i] = vals[i]
    end
    last_settings = settings
    last_router = router
    return router
end

-- Reads VARS[i] into vals[i] (read_all calls it for the variables not
-- known undefined); returns whether anything read so far differs from the
-- last request's values.
local function read_var(i, changed)
    local v = ngx_var[VARS[i][1]]
    if v == nil then
        forget_if_undefined(i)
    elseif v == "" then
        v = nil     -- set in another location only: not set here
    end
    vals[i] = v
    return changed or v ~= last[i]
end

-- Reads every variable in VARS' order (read_var(1, c) ... read_var(NVARS,
-- c)) but those known undefined; returns whether any differs from the last
-- request's. Straight-line, not a loop: LuaJIT cannot trace a loop of one
-- or two turns from the function's entry (it aborts the trace, "leaving
-- loop in root trace"), and one defined variable is the common case.
-- Generated from VARS, so that a row added there is read with no other
-- change; generated again each time a variable is found undefined (at most
-- NVARS times per worker), so that a request tests none of those (with
-- one variable set, 23 table tests in the trace: too few instructions to
-- tell apart in make bench, but no reason to pay them).
local read_all
function build_read_all()
    local code = { "local read_var = ... return function(c)" }
    for i = 1, NVARS do
        if not undefined[i] then
            code[#code + 1] = " c = read_var(" .. i .. ", c)"
        end
    end
    code[#code + 1] = " return c end"
    read_all = assert(loadstring(concat(code), "=gray.dep read_all"))(read_var)
end
build_read_all()

-- The router for this request's location: last time's when there is
-- nothing to read (no variable defined) and the settings are the same; the
-- one made for these settings; else the one the variables just read make
-- (configure: nil, stable when none can be made).
local function router_for(settings)
    local router = last_router
    if ndefined == 0 and router ~= nil then
        if settings == last_settings then
            return router
        end
        -- nothing to read: the router depends on the settings alone
        local made = by_settings[settings or ""]
        if made then
            last_settings, last_router = settings, made
            return made
        end
    end
    if ndefined > 0 or router == nil or settings ~= last_settings then
        if read_all(router == nil or settings ~= last_settings) then
            return configure(settings)
        end
    end
    return router
end

--- The drop-in, per request: the router for this location's variables,
-- then exec to its decision. settings (optional): the location's own
-- values of the variables, as a constant string ("$gray_cache_ttl 0;
-- $gray_shm gray_cache"), from content_by_lua_block { require("gray.dep")
-- .run("...") }: unlike a `set` in some locations only, they define no
-- nginx variable, so the other locations read nothing and nginx warns of
-- nothing. They win over the variables.
function _M.run(settings)
    local router, stable = router_for(settings)
    if not router then
        stable = stable or vals[4]
        return ngx_exec(stable and stable:find("^[@/]%S*$") and stable or STABLE)
    end
    return router:exec()
end

-- route()'s router has no upstreams ($gray_upstreams not set): logged, and
-- the request goes where nginx.conf's `set $gray_upstream` sends it.
local function no_upstreams(up, err)
    if not up and err then
        log:report("upstreams", "gray/route.lua: $gray_upstreams is not set (the upstream of"
                                .. " every target: \"stable=app_v1, gray=app_v2\"); requests"
                                .. " go to $gray_upstream as set")
    end
    return up
end

--- The access-phase drop-in (gray/route.lua), per request: the router for
-- this location's variables, as run(), then $gray_upstream set to the
-- upstream ($gray_upstreams) of its decision, for proxy_pass
-- http://$gray_upstream: the same rules, caches, halts and ramp, no
-- internal redirect. settings: as run()'s.
function _M.route(settings)
    local router = router_for(settings)
    if not router then
        -- the router module cannot load: $gray_upstream as set
        return set_stable_upstream(nil)
    end
    return no_upstreams(router:set_upstream())
end

-- First run as a content_by_lua_file script: register the module and route
-- this request; under require, the module itself.
package.loaded["gray.dep run"] = _M.run
if loaded == nil then
    package.loaded["gray.dep"] = _M
    return _M.run()
end
return _M
