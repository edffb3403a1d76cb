-- classic_dep: the baseline `make bench` compares the drop-in against. It does
-- per request what the classic dep.lua recipe does, written plainly:
--
--   * the client address as the recipe takes it: the X-Real-IP header, else
--     the whole X-Forwarded-For header, else the peer address (headers read
--     through ngx.req.get_headers(), twice when X-Real-IP is absent, as the
--     recipe does), the key escaped as lua-resty-memcached does by default;
--   * a NEW memcached connection for every request (connect, "get <ip>",
--     the reply read line by line with receive("*l") and the data with
--     receive(n), the way lua-resty-memcached reads it), then closed: no
--     connection pool;
--   * value "1" -> ngx.exec("@server_test"), anything else -> "@server".
--
-- The memcached address comes from the location ("set $classic_memcached
-- host:port;", default 127.0.0.1:11211, the recipe's). Unlike the recipe it
-- does not print an error page when memcached fails: it goes to @server.
--
--   location / { content_by_lua_file /path/to/bench/classic_dep.lua; }

local ngx = ngx
local tcp = ngx.socket.tcp
local tonumber, type = tonumber, type

-- as the recipe writes it: get_headers() for X-Real-IP, and again for
-- X-Forwarded-For when the first is absent
local function client_ip()
    local ip = ngx.req.get_headers()["X-Real-IP"]
    if ip == nil then
        ip = ngx.req.get_headers()["x_forwarded_for"]
    end
    if ip == nil then
        ip = ngx.var.remote_addr
    end
    return ip
end

-- One "get" on a fresh connection: the value, or nil (miss or error).
local function mc_get(host, port, key)
    local sock = tcp()
    sock:settimeout(1000)
    local ok, err = sock:connect(host, port)
    if not ok then
        ngx.log(ngx.ERR, "classic_dep: connect to memcached: ", err)
        return nil
    end
    local value
    -- lua-resty-memcached, which the recipe uses, escapes keys by default
    ok, err = sock:send("get " .. ngx.escape_uri(key) .. "\r\n")
    if ok then
        local line
        line, err = sock:receive("*l")
        if line and line ~= "END" then
            local len = line:match("^VALUE %S+ %d+ (%d+)$")
            if len then
                local data, crlf, last
                data, err = sock:receive(tonumber(len))
                if data then
                    -- the data's CRLF, then the closing END line
                    crlf, err = sock:receive(2)
                    if crlf then
                        last, err = sock:receive("*l")
                        if last == "END" then
                            value = data
                        elseif last then
                            err = "unexpected reply: " .. last
                        end
                    end
                end
            else
                err = "unexpected reply: " .. line
            end
        end
    end
    if err then
        ngx.log(ngx.ERR, "classic_dep: memcached get: ", err)
    end
    sock:close()
    return value
end

local host, port = (ngx.var.classic_memcached or "127.0.0.1:11211"):match("^(.+):(%d+)$")
local ip = client_ip()
if type(ip) == "table" then
    ip = ip[1]      -- the header appeared more than once
end
if ip and mc_get(host, tonumber(port), ip) == "1" then
    return ngx.exec("@server_test")
end
return ngx.exec("@server")
