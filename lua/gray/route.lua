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
-- $gray_upstreams, and its requests go to the stable upstream. No internal
-- redirect: it costs less than ngx.exec (make bench).
--
-- Settings for one location only: access_by_lua_block {
-- require("gray.dep").route("$gray_upstreams 'stable=a, gray=b'") }.
--
-- As gray/dep.lua, the script's chunk is its fast path: one table read
-- and a call.
local route = package.loaded["gray.dep route"]
if route then
    return route()                  -- every request after the first
end
local dep = package.loaded["gray.dep"]
if type(dep) ~= "table" then
    dep = require "gray.dep"
end
package.loaded["gray.dep route"] = dep.route
return dep.route()
