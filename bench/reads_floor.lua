-- reads_floor: a reference row for make bench. It reads exactly the nginx
-- variables the routing decision needs in the bench's scenario ($remote_addr
-- to know the peer is a trusted proxy, $http_x_real_ip for the client's
-- address), decides nothing, and goes to @server. What it costs above
-- /exec-only is the part of the drop-in's cost that any router reading those
-- two variables pays; what the drop-in costs above it is the router's own.
--
--   location /reads-only { content_by_lua_file <repo>/bench/reads_only.lua; }

local _M = {}

local ngx_var, ngx_exec = ngx.var, ngx.exec

function _M.run()
    local peer, real_ip = ngx_var.remote_addr, ngx_var.http_x_real_ip
    if not peer or real_ip == "" then
        return ngx_exec("@server_test")     -- never: the bench checks the answer
    end
    return ngx_exec("@server")
end

--- The same plus the two identity headers of the api-ids row (User-Agent
-- and Accept, which every curl request carries): the floor of that row.
function _M.run_ids()
    local peer, real_ip = ngx_var.remote_addr, ngx_var.http_x_real_ip
    local uid, dev = ngx_var.http_user_agent, ngx_var.http_accept
    if not peer or real_ip == "" or uid == "" or dev == "" then
        return ngx_exec("@server_test")     -- never: the bench checks the answer
    end
    return ngx_exec("@server")
end

return _M
