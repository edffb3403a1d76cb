-- gray.memcached: a small cosocket memcached client for the router's hot
-- path. One request per call, the reply decoded by the C decoder, usually in
-- a single receive; pooled keepalive connections; a connection that saw an
-- error is closed, never pooled; a circuit breaker per server; every key
-- passes the key-safety check before anything is sent.
--
--   local client = assert(memcached.new({ servers = "127.0.0.1:11211" }))
--   local value, err, kind = client:get("192.168.2.20")
--   -- value: the data, false on a miss; nil, err, kind on failure, where
--   -- kind is one of "key" (refused to send), "down" (breaker open),
--   -- "timeout", "closed", "network" (refused, reset...), "protocol"
--   -- (malformed reply), "server" (an ERROR line from memcached)

local gray_ffi = require "gray.ffi"

local decode_get1 = gray_ffi.mc_decode_get1
local key_ok = gray_ffi.mc_key_ok
local server_index = gray_ffi.server_index
local canonical_ip = gray_ffi.canonical_ip
local tcp = ngx.socket.tcp
local now = ngx.now
local type, tonumber, setmetatable = type, tonumber, setmetatable
local math_max = math.max

-- a reply larger than this is treated as a protocol error: the router only
-- stores short membership values
local REPLY_MAX = 1024 * 1024
local RECV_CHUNK = 4096

local DEFAULTS = {
    servers = "127.0.0.1:11211",
    connect_timeout = 30,       -- ms
    send_timeout = 30,          -- ms
    read_timeout = 50,          -- ms
    pool_size = 32,             -- idle connections kept per server and worker
    keepalive_timeout = 60000,  -- ms an idle pooled connection is kept
    breaker_failures = 5,       -- consecutive failures that open the breaker
    breaker_cooldown = 1,       -- seconds before a probe is let through
}

local _M = { DEFAULTS = DEFAULTS }
local mt = { __index = _M }

--- Parses "host:port[, host:port ...]" (or a table of such strings) into
-- server records. IPv6 hosts are written in brackets: "[::1]:11211".
local function parse_servers(spec)
    local list = spec
    if type(spec) == "string" then
        list = {}
        for item in spec:gmatch("[^,%s]+") do
            list[#list + 1] = item
        end
    end
    if type(list) ~= "table" or #list == 0 then
        return nil, "expected 'host:port[, host:port...]'"
    end
    local servers = {}
    for i, item in ipairs(list) do
        if type(item) ~= "string" then
            return nil, "server " .. i .. " is not a string"
        end
        local host, port = item:match("^%[([^%]]+)%]:(%d+)$")
        local bracketed = host ~= nil
        if not host then
            host, port = item:match("^([^:]+):(%d+)$")
        end
        port = tonumber(port)
        if not host or not port or port < 1 or port > 65535 then
            return nil, "bad server '" .. item .. "' (expected host:port)"
        end
        -- addresses only: a name would need a resolver in nginx and fail
        -- on every request
        local canonical = canonical_ip(host)
        if not canonical or (canonical:find(":", 1, true) ~= nil) ~= bracketed then
            return nil, "bad server '" .. item .. "' (the host must be an IP address;"
                        .. " IPv6 as [addr]:port)"
        end
        servers[i] = {
            name = item,
            -- cosocket connect() wants IPv6 in brackets
            host = bracketed and "[" .. host .. "]" or host,
            port = port,
            failures = 0,       -- consecutive
            open_until = 0,     -- breaker: no request before this time
        }
    end
    return servers
end
_M.parse_servers = parse_servers

local function check_number(opts, name, min, max)
    local v = opts[name]
    if v == nil then
        return DEFAULTS[name]
    end
    if type(v) ~= "number" or v ~= v or v < min or (max and v > max) then
        return nil, "option '" .. name .. "' must be a number >= " .. min
                    .. (max and " and <= " .. max or "")
    end
    return v
end

--- Creates a client; options and defaults in DEFAULTS (times in ms but
-- breaker_cooldown in seconds). Returns nil, err for a bad option.
function _M.new(opts)
    opts = opts or {}
    if type(opts) ~= "table" then
        return nil, "options must be a table"
    end
    local self = {}
    for name in pairs(opts) do
        if DEFAULTS[name] == nil then
            return nil, "unknown option '" .. tostring(name) .. "'"
        end
    end
    local servers, err = parse_servers(opts.servers or DEFAULTS.servers)
    if not servers then
        return nil, "option 'servers': " .. err
    end
    self.servers = servers
    self.nservers = #servers
    local limits = {
        connect_timeout = { 1, 60000 }, send_timeout = { 1, 60000 },
        read_timeout = { 1, 60000 }, pool_size = { 1, 100000 },
        keepalive_timeout = { 0, 3600000 }, breaker_failures = { 1, 1000000 },
        breaker_cooldown = { 0, 3600 },
    }
    for name, range in pairs(limits) do
        local v
        v, err = check_number(opts, name, range[1], range[2])
        if not v then
            return nil, err
        end
        self[name] = v
    end
    self.pool_size = math.floor(self.pool_size)
    return setmetatable(self, mt)
end

local function error_kind(err)
    if err == "timeout" then
        return "timeout"
    elseif err == "closed" then
        return "closed"
    end
    return "network"    -- refused, reset, unreachable...
end

-- One request on one connection. Returns value|false, or nil, err, kind,
-- plus whether the connection came from the pool (a stale pooled socket is
-- worth one retry).
-- Closes a socket after a failure; returns err, kind and whether the
-- connection had come from the pool (a dead pooled socket is worth a retry).
local function fail(sock, what, err, kind)
    local reused = (sock:getreusedtimes() or 0) > 0
    sock:close()
    return what .. err, kind or error_kind(err), reused
end

local function query(self, srv, req, key)
    local sock = tcp()
    sock:settimeouts(self.connect_timeout, self.send_timeout, self.read_timeout)
    -- no options table: the pool is the default one for host:port, created
    -- with pool_size by the first setkeepalive()
    local ok, err = sock:connect(srv.host, srv.port)
    if not ok then
        return nil, "connect to " .. srv.name .. ": " .. err, error_kind(err), false
    end

    ok, err = sock:send(req)
    if not ok then
        return nil, fail(sock, "send to " .. srv.name .. ": ", err)
    end

    local buf
    buf, err = sock:receiveany(RECV_CHUNK)
    if not buf then
        return nil, fail(sock, "read from " .. srv.name .. ": ", err)
    end
    while true do
        local value, consumed, need = decode_get1(buf, key)
        if value ~= nil then
            if consumed == #buf then
                sock:setkeepalive(self.keepalive_timeout, self.pool_size)
            else
                -- bytes after the reply: the stream is out of step
                sock:close()
            end
            return value
        end
        if consumed ~= "again" then
            local kind = consumed:find("^[A-Z_]*ERROR") and "server" or "protocol"
            return nil, fail(sock, "reply from " .. srv.name .. ": ", consumed, kind)
        end
        if #buf + need > REPLY_MAX then
            return nil, fail(sock, "reply from " .. srv.name .. ": ",
                             "over " .. REPLY_MAX .. " bytes", "protocol")
        end
        local more
        more, err = sock:receiveany(math_max(need, RECV_CHUNK))
        if not more then
            return nil, fail(sock, "read from " .. srv.name .. ": ", err)
        end
        buf = buf .. more
    end
end

--- get(key): the value (a string), false on a miss, or nil, err, kind.
function _M.get(self, key)
    if not key_ok(key) then
        return nil, "refused to send an invalid memcached key", "key"
    end
    local srv = self.servers[1]
    if self.nservers > 1 then
        srv = self.servers[server_index(key, self.nservers)]
    end

    -- circuit breaker: while open, no request; once the cooldown is over one
    -- request probes and the others keep waiting until it succeeds
    local open_until = srv.open_until
    if open_until ~= 0 then
        local t = now()
        if t < open_until then
            return nil, "memcached " .. srv.name .. " marked down", "down"
        end
        srv.open_until = t + self.breaker_cooldown
    end

    local req = "get " .. key .. "\r\n"
    local value, err, kind, reused = query(self, srv, req, key)
    if value == nil and reused and (kind == "closed" or kind == "network") then
        -- a pooled connection the server dropped (restart, idle timeout)
        value, err, kind = query(self, srv, req, key)
    end

    if value ~= nil or kind == "server" then
        -- an answer, even an error line, shows the server is reachable
        srv.failures = 0
        srv.open_until = 0
        if value ~= nil then
            return value
        end
    else
        local failures = srv.failures + 1
        srv.failures = failures
        if failures >= self.breaker_failures then
            srv.open_until = now() + self.breaker_cooldown
            err = err .. " (breaker open for " .. self.breaker_cooldown .. " s after "
                  .. failures .. " failures)"
        end
    end
    return nil, err, kind
end

return _M
