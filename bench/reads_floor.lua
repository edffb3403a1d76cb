-- reads_floor: a reference row for make bench. It reads exactly the nginx
-- variables the drop-in reads per request in the /dropin location (its two
-- $gray_* settings, $remote_addr and, the loopback client being a trusted
-- proxy by default, the two forwarding headers), decides nothing, and goes
-- to @server. What it costs above /exec-only is the part of the drop-in's
-- cost that comes from reading nginx variables, not from the router.
--
--   location /reads-only { content_by_lua_file <repo>/bench/reads_only.lua; }

local _M = {}

local ngx_var, ngx_exec = ngx.var, ngx.exec

function _M.run()
    local m, c = ngx_var.gray_memcached, ngx_var.gray_cache_ttl
    local peer = ngx_var.remote_addr
    local real_ip, xff = ngx_var.http_x_real_ip, ngx_var.http_x_forwarded_for
    if not (m and c and peer) or real_ip == "" or xff == "" then
        return ngx_exec("@server_test")     -- never: the bench checks the answer
    end
    return ngx_exec("@server")
end

return _M
