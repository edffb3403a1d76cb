-- The access-phase drop-in: routing by variable, for configurations that
-- proxy to a variable rather than exec to named locations
-- (proxy_pass http://$var, as many existing configs do):
--
--     upstream app_v1 { server 127.0.0.1:5001; }
--     upstream app_v2 { server 127.0.0.1:5002; }
--     server {
--         location / {
--             set $gray_upstream  app_v1;      # defines it; stable if the router cannot run
--             set $gray_upstreams "stable=app_v1, gray=app_v2, v3=app_v3";
--             access_by_lua_file /path/to/lua-resty-gray/lua/gray/route.lua;
--             proxy_pass http://$gray_upstream;
--         }
--     }
--
-- It sets $gray_upstream to the upstream of the router's decision, with
-- every rule, cache, halt and ramp of the content-phase drop-in
-- (gray/dep.lua, whose $gray_* variables it reads the same way: this file
-- calls its route()). $gray_upstreams names an upstream for each target:
-- stable, gray (the default target) and any other name (a name there is a
-- target; $gray_targets is not needed). A configuration with a target
-- without an upstream is refused when its router is built, logged naming
-- $gray_upstreams, and its requests go to the stable upstream. There is
-- no internal redirect, yet it costs about 180 to 480 instructions per
-- request more than ngx.exec (make bench, docs/performance.md): proxy_pass
-- evaluates and parses its URL and looks the upstream up by name on each
-- request, and the variable's write hashes its name. Cheapest: declare
-- $gray_upstream by an http-level `map $host $gray_upstream { default
-- app_v1; }` (no `set` per request) and give the settings in route("...").
--
-- Settings for one location only: access_by_lua_block {
-- require("gray.dep").route("$gray_upstreams 'stable=a, gray=b'") }.
--
-- This file is both the access_by_lua_file script and the module
-- "gray.route" ({ route = gray.dep's route }), as gray/dep.lua is. As
-- there, the script's chunk is its fast path: one table read and a call.
local route = package.loaded["gray.dep route"]
if route then
    return route()                  -- every request after the first
end
local loaded = package.loaded["gray.route"]
if type(loaded) == "table" then
    return loaded.route()
end
local dep = package.loaded["gray.dep"]
if type(dep) ~= "table" then
    dep = require "gray.dep"
end
local _M = { _VERSION = "0.1.0", route = dep.route }
package.loaded["gray.dep route"] = dep.route
-- First run as a script: register the module and route this request;
-- under require, the module itself.
if loaded == nil then
    package.loaded["gray.route"] = _M
    return dep.route()
end
return _M
