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

-- The floors of a cache miss: what any router pays for one memcached round
-- trip on a pooled connection (connect from the pool, one "get" of 1 or 3
-- keys, the reply read to its END, setkeepalive, ngx.exec). memcached at
-- 127.0.0.1:11211, as the drop-in's default.
local tcp = ngx.socket.tcp

local function get(request)
    local sock = tcp()
    sock:settimeout(1000)
    local ok, err = sock:connect("127.0.0.1", 11211)
    if not ok then
        ngx.log(ngx.ERR, "reads_floor: connect: ", err)
        return ngx_exec("@server")
    end
    local gray = false
    ok, err = sock:send(request)
    local line
    if ok then
        line, err = sock:receive("*l")
        while line and line ~= "END" do
            -- "VALUE <key> <flags> <bytes>", then the data line
            local data = sock:receive("*l")
            gray = gray or data == "1"
            line, err = sock:receive("*l")
        end
    end
    if line ~= "END" then
        ngx.log(ngx.ERR, "reads_floor: memcached: ", err)
        sock:close()
    else
        sock:setkeepalive(10000, 16)
    end
    return ngx_exec(gray and "@server_test" or "@server")
end

--- 1 key: the X-Real-IP address (the bench's client is a trusted proxy).
function _M.get1()
    local peer, real_ip = ngx_var.remote_addr, ngx_var.http_x_real_ip
    if not peer or not real_ip then
        return ngx_exec("@server")
    end
    return get("get " .. real_ip .. "\r\n")
end

--- 3 keys in one request: the address and the two ids (X-Uid, X-Dev).
function _M.get3()
    local peer, real_ip = ngx_var.remote_addr, ngx_var.http_x_real_ip
    local uid, dev = ngx_var.http_x_uid, ngx_var.http_x_dev
    if not peer or not real_ip then
        return ngx_exec("@server")
    end
    return get("get " .. real_ip .. " uid:" .. (uid or "-") .. " dev:" .. (dev or "-") .. "\r\n")
end

return _M
