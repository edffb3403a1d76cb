-- gray.memcached: a small cosocket memcached client for the router's hot
-- path. One request per call, the reply decoded by the C decoder, usually in
-- a single receive; pooled keepalive connections; a connection that saw an
-- error is closed, never pooled; a circuit breaker per server; every key
-- passes the key-safety check before anything is sent.
--
-- Every call has one deadline, `timeout` ms after it starts, for connect,
-- send and every read together (the tries after dead pooled ones included):
-- a server that trickles bytes cannot hold the caller past it.
--
--   local client = assert(memcached.new({ servers = "127.0.0.1:11211" }))
--   local value, err, kind = client:get("192.168.2.20")
--   -- value: the data, false on a miss; nil, err, kind on failure, where
--   -- kind is one of "key" (refused to send), "down" (breaker open),
--   -- "timeout" (the deadline passed), "closed", "network" (refused,
--   -- reset...), "protocol" (malformed reply), "server" (an ERROR line
--   -- from memcached), "value" (a value over value_max: refused unread)
--
-- The meta protocol (memcached >= 1.6): meta_cas(key) asks "mg <key> c",
-- the cas alone, to tell whether a value changed without reading it;
-- get_meta(key) and get_multi_meta(keys) read values with "mg <key> v".
-- A server that answers ERROR to mg (memcached < 1.6, some proxies) is
-- remembered as text-only for the life of the worker (logged once), and
-- these calls then use gets/get on it, transparently.

local gray_ffi = require "gray.ffi"
local metrics = require "gray.metrics"
local util = require "gray.util"

local decode_get1 = gray_ffi.mc_decode_get1
local decode_meta1 = gray_ffi.mc_decode_meta1
local decode_meta_list = gray_ffi.mc_decode_meta_list
local meta_request = gray_ffi.mc_meta_request
local meta_list, LIST_KEYS = gray_ffi.mc_meta_list, gray_ffi.LIST_KEYS
local META_PIPELINE, META_VALUE, META_QUIET = gray_ffi.META_PIPELINE, gray_ffi.META_VALUE,
    gray_ffi.META_QUIET
local key_ok = gray_ffi.mc_key_ok
local server_for = gray_ffi.server_for
local new_continuum = gray_ffi.new_continuum
local parse_server_list = gray_ffi.parse_servers
local new_reply_buffer = gray_ffi.new_reply_buffer
local tcp = ngx.socket.tcp
local now = ngx.now
local update_time = ngx.update_time
local type, tostring, setmetatable, pairs, ipairs = type, tostring, setmetatable, pairs,
    ipairs
local floor = math.floor
local concat = table.concat
local spawn, wait = ngx.thread.spawn, ngx.thread.wait
local ngx_log, WARN = ngx.log, ngx.WARN
local EMPTY = {}
local option_error = util.option_error

-- Servers (by name as configured) that answered ERROR to mg: text protocol
-- only, for the life of this worker, whichever client asks.
local text_only = {}

-- The last key get() found valid (key_ok is a function of the string
-- alone): a client missing again (cache_ttl 0, a burst of requests) asks
-- for the same key, and its check is a string compare, not a C call (about
-- 60 instructions a lookup, make bench).
local last_ok_key = {}          -- equal to no key: the first get checks its key

-- What a first read asks for: a membership reply fits many times over.
local RECV_CHUNK = 4096
-- A long value (a list's part, in a timer) is read in turns of at most
-- this many bytes, with a 1 ms sleep between them: a 900 kB part read in
-- one go held the event loop 1-4 ms (a receiveany per socket buffer, 4 kB).
local YIELD_BYTES = 64 * 1024
local sleep = ngx.sleep
-- Room for "VALUE <key> <flags> <bytes> <cas>\r\n" beyond the key, and for
-- the CRLF after the data plus "END\r\n".
local VALUE_LINE_EXTRA = 64
local REPLY_TAIL = 7

local DEFAULTS = {
    servers = "127.0.0.1:11211",
    distribution = "ketama",    -- with several servers: ketama, ketama-weighted or modula,
                                -- as libmemcached 1.1 places keys
    timeout = 50,               -- ms for a whole lookup: connect, send, reads
    value_max = 1024,           -- bytes; a longer value is refused unread
    pool_size = 32,             -- idle connections kept per server and worker
    keepalive_timeout = 60000,  -- ms an idle pooled connection is kept
    breaker_failures = 5,       -- consecutive failures that open the breaker
    breaker_cooldown = 1,       -- seconds before a probe is let through
}

-- { min, max, unit } of each numeric option
local LIMITS = {
    timeout = { 1, 60000, "ms" },
    value_max = { 1, 1024 * 1024, "bytes" },
    pool_size = { 1, 100000, "connections" },
    keepalive_timeout = { 0, 3600000, "ms" },
    breaker_failures = { 1, 1000000, "failures" },
    breaker_cooldown = { 0, 3600, "s" },
}

-- Options of earlier versions, refused with what replaces them.
local REPLACED = {
    connect_timeout = "timeout", send_timeout = "timeout", read_timeout = "timeout",
}

local _M = { _VERSION = gray_ffi.VERSION, DEFAULTS = DEFAULTS, LIMITS = LIMITS,
             REPLACED = REPLACED }
local mt = { __index = _M }

--- Parses "host:port[, host:port ...]" (or a table of such strings) into
-- server records. IPv6 hosts are written in brackets: "[::1]:11211".
local function parse_servers(spec)
    local list = spec
    if type(spec) == "string" then
        list = { spec }
    end
    if type(list) ~= "table" or #list == 0 then
        return nil, "expected 'host:port[, host:port...]'"
    end
    -- one spelling rule with gray-admin (gray_servers_parse in dist.c):
    -- addresses only (a name would need a resolver in nginx and fail on
    -- every request), IPv6 in brackets, hosts kept as written
    local parsed = {}
    for i, item in ipairs(list) do
        if type(item) ~= "string" then
            return nil, "server " .. i .. " is not a string"
        end
        local these, err = parse_server_list(item)
        if not these then
            return nil, err
        end
        if type(spec) ~= "string" and #these ~= 1 then
            return nil, "bad server '" .. item .. "' (one host:port per list item)"
        end
        for _, p in ipairs(these) do
            parsed[#parsed + 1] = p
        end
    end
    local servers = {}
    for i, p in ipairs(parsed) do
        servers[i] = {
            name = p.name,
            addr = p.host,      -- as written: libmemcached hashes the name
            weight = p.weight,
            -- cosocket connect() wants IPv6 in brackets
            host = p.bracketed and "[" .. p.host .. "]" or p.host,
            port = p.port,
            failures = 0,       -- consecutive
            open_until = 0,     -- breaker: no request before this time
            -- gray.metrics series, built once
            m_requests = metrics.series("gray_memcached_requests_total", { server = p.name }),
            m_breaker = { server = p.name },
        }
    end
    return servers
end
_M.parse_servers = parse_servers

--- Checks one numeric option against LIMITS; returns the value or nil and
-- a refusal record (gray.util).
local function check_number(name, v)
    local range = LIMITS[name]
    if type(v) ~= "number" or v ~= v or v < range[1] or v > range[2] then
        return option_error(name, "must be a number from " .. range[1] .. " to "
                            .. range[2] .. " (" .. range[3] .. "), got " .. tostring(v))
    end
    return v
end

-- new(), with a refused option as a gray.util record.
local function new_client(opts)
    opts = opts or {}
    if type(opts) ~= "table" then
        return option_error(nil, "options must be a table")
    end
    for name in pairs(opts) do
        if REPLACED[name] then
            return option_error(name, "is gone: '" .. REPLACED[name]
                                .. "' bounds the whole lookup")
        elseif DEFAULTS[name] == nil then
            return option_error(nil, "unknown option '" .. tostring(name) .. "'")
        end
    end
    local servers, err = parse_servers(opts.servers or DEFAULTS.servers)
    if not servers then
        return option_error("servers", err, nil, ": ")
    end
    local self = { servers = servers, nservers = #servers, continuum = false }
    local dist = opts.distribution or DEFAULTS.distribution
    if #servers > 1 then
        local list = {}
        for i, srv in ipairs(servers) do
            list[i] = { host = srv.addr, port = srv.port, weight = srv.weight }
        end
        self.continuum, err = new_continuum(list, dist)
        if not self.continuum then
            return option_error("distribution", "/ 'servers': " .. err)
        end
    elseif dist ~= "ketama" and dist ~= "ketama-weighted" and dist ~= "modula" then
        return option_error("distribution", "must be ketama, ketama-weighted or modula")
    end
    for name in pairs(LIMITS) do
        local v = opts[name]
        if v == nil then
            v = DEFAULTS[name]
        end
        v, err = check_number(name, v)
        if not v then
            return nil, err
        end
        self[name] = v
    end
    self.pool_size = floor(self.pool_size)
    self.value_max = floor(self.value_max)
    return setmetatable(self, mt)
end
_M._new = new_client

--- Creates a client; options and defaults in DEFAULTS. Returns nil, err for
-- a bad option.
_M.new = util.worded(new_client)

local function error_kind(err)
    if err == "timeout" then
        return "timeout"
    elseif err == "closed" then
        return "closed"
    end
    return "network"    -- refused, reset, unreachable...
end

-- Closes a socket after a failure; returns err, kind and whether the
-- connection had come from the pool (a dead pooled socket is worth a retry).
local function fail(sock, what, err, kind)
    local reused = (sock:getreusedtimes() or 0) > 0
    sock:close()
    return what .. err, kind or error_kind(err), reused
end

-- Milliseconds left before the deadline, at least 1 when any is left, or
-- nil when it has passed (cosocket timeouts are whole milliseconds). t:
-- the clock as the caller read it, with no yield since (else read here).
local function time_left(deadline, t)
    local left = (deadline - (t or now())) * 1000
    if left < 0.5 then
        return nil
    end
    return left < 1 and 1 or floor(left + 0.5)
end

local function too_large(self, sock, srv)
    return fail(sock, "reply from " .. srv.name .. ": ",
                "a value over value_max (" .. self.value_max .. " bytes)", "value")
end

-- Reads before the deadline: up to RECV_CHUNK bytes when the reply's
-- length is not known yet, else exactly n bytes. The latter in pieces as they
-- come, joined once: receive(n) re-arms its timer on every arrival, so a
-- server sending a byte just within each timeout would outlive the deadline.
-- nil, "timeout" once the deadline has passed.
-- armed: the ms sock's timeout was last set to. It is set again only when
-- less time is left (a settimeout is a C call the JIT cannot compile: most
-- lookups need one, before connect). Returns the piece or nil, err, and
-- the ms armed now.
local function read_some(sock, deadline, armed)
    local left = time_left(deadline)
    if not left then
        return nil, "timeout", armed
    end
    if left < armed then
        sock:settimeout(left)
        armed = left
    end
    local piece, err = sock:receiveany(RECV_CHUNK)
    return piece, err, armed
end

-- read_n sets the timeout as it goes: what it left is not tracked
local ARMED_UNKNOWN = math.huge

local function read_n(sock, n, deadline)
    local parts, count, got, turn = nil, 0, 0, 0
    while true do
        local left = time_left(deadline)
        if not left then
            return nil, "timeout"
        end
        sock:settimeout(left)
        local piece, err = sock:receiveany(n - got)
        if not piece then
            return nil, err
        end
        got = got + #piece
        if got == n and count == 0 then
            return piece                -- the usual case: one piece
        end
        parts = parts or {}
        count = count + 1
        parts[count] = piece
        if got == n then
            return concat(parts, "", 1, count)
        end
        turn = turn + #piece
        if turn >= YIELD_BYTES then
            turn = 0
            sleep(0.001)
        end
    end
end

-- The next piece of a reply: exactly need bytes once a data block's length
-- is known (never past the reply, so the connection stays in step), else
-- what the socket has.
local function read_next(sock, need, deadline, armed)
    if need > 2 then
        local piece, err = read_n(sock, need, deadline)
        return piece, err, ARMED_UNKNOWN
    end
    return read_some(sock, deadline, armed)
end

-- After a whole reply: back to the pool, unless bytes followed it (the
-- stream is then out of step and the connection is closed).
local function release(self, sock, in_step)
    if in_step then
        sock:setkeepalive(self.keepalive_timeout, self.pool_size)
    else
        sock:close()
    end
end

-- A reply that is an error line ("server") or malformed ("protocol"); to
-- mg (meta), a bare ERROR is "meta": the server lacks the meta protocol.
local function bad_reply(sock, srv, msg, meta)
    local kind = msg:find("^[A-Z_]*ERROR") and "server" or "protocol"
    if meta and (msg == "ERROR" or msg:find("^ERROR ")) then
        kind = "meta"
    end
    return fail(sock, "reply from " .. srv.name .. ": ", msg, kind)
end

-- Remembers that srv refused mg; logs it once per worker.
local function meta_refused(srv, err)
    if not text_only[srv.name] then
        text_only[srv.name] = true
        ngx_log(WARN, "gray: memcached ", srv.name, " does not speak the meta protocol (",
                err, "): using get/gets with it from now on")
    end
end

-- Connects (or takes a pooled connection) and sends req, before the
-- deadline (t: the clock the deadline was set by, if nothing yielded
-- since). Returns the socket, nil, nil, nil and the ms its timeout is
-- armed for (see read_some); or nil, err, kind, reused.
local function open(srv, req, deadline, t)
    local left = time_left(deadline, t)
    if not left then
        return nil, "connect to " .. srv.name .. ": timeout", "timeout", false
    end
    local sock = tcp()
    sock:settimeout(left)
    -- no options table: the pool is the default one for host:port, created
    -- with pool_size by the first setkeepalive()
    local ok, err = sock:connect(srv.host, srv.port)
    if not ok then
        return nil, "connect to " .. srv.name .. ": " .. err, error_kind(err), false
    end

    -- a pooled connection took no time: the timeout set still fits
    local armed = left
    left = time_left(deadline)
    if not left then
        return nil, fail(sock, "send to " .. srv.name .. ": ", "timeout")
    end
    if left < armed then
        sock:settimeout(left)
        armed = left
    end
    ok, err = sock:send(req)
    if not ok then
        return nil, fail(sock, "send to " .. srv.name .. ": ", err)
    end
    return sock, nil, nil, nil, armed
end

-- One request on one connection, all of it before the deadline (t: as
-- open's). Returns value|false, or nil, err, kind, reused.
local function query(self, srv, req, key, deadline, t)
    local sock, err, kind, reused, armed = open(srv, req, deadline, t)
    if not sock then
        return nil, err, kind, reused
    end

    -- the whole reply may not exceed this: the value line, the data, END
    local limit = self.value_max + #key + VALUE_LINE_EXTRA + REPLY_TAIL
    local buf, need = nil, 0
    while true do
        local more
        more, err, armed = read_next(sock, need, deadline, armed)
        if not more then
            return nil, fail(sock, "read from " .. srv.name .. ": ", err)
        end
        -- at most a few joins per reply: a short first read, then the rest
        buf = buf and buf .. more or more

        local value, consumed
        value, consumed, need = decode_get1(buf, key)
        if value and #value > self.value_max then
            -- arrived whole in the first read: refused all the same
            return nil, too_large(self, sock, srv)
        end
        if value ~= nil then
            release(self, sock, consumed == #buf)
            return value
        end
        if consumed ~= "again" then
            return nil, bad_reply(sock, srv, consumed)
        end
        if #buf + need > limit then
            return nil, too_large(self, sock, srv)     -- before reading the data
        end
    end
end

-- Circuit breaker: while open, no request; once the cooldown is over one
-- request probes and the others keep waiting until it succeeds. Returns
-- true when srv may be asked now.
local function breaker_allows(self, srv, t)
    local open_until = srv.open_until
    if open_until ~= 0 then
        if t < open_until then
            return false
        end
        srv.open_until = t + self.breaker_cooldown
    end
    return true
end

-- Counts an outcome for srv's breaker (and for gray.metrics: the request,
-- its failure by kind); returns err, extended when the breaker opens.
local function account(self, srv, answered, err, kind)
    if metrics.on then
        metrics.incr(srv.m_requests)
        if not answered or (kind and kind ~= "value") then
            metrics.add("gray_memcached_errors_total", { server = srv.name, kind = kind or "?" })
        end
        if answered and srv.failures >= self.breaker_failures then
            metrics.set("gray_breaker_open", srv.m_breaker, 0)
        end
    end
    if answered then
        -- an answer, even an error line, shows the server is reachable
        srv.failures = 0
        srv.open_until = 0
        return err
    end
    local failures = srv.failures + 1
    srv.failures = failures
    if failures >= self.breaker_failures then
        if metrics.on then
            metrics.set("gray_breaker_open", srv.m_breaker, 1)
        end
        srv.open_until = now() + self.breaker_cooldown
        err = err .. " (breaker open for " .. self.breaker_cooldown .. " s after "
              .. failures .. " failures)"
    end
    return err
end

-- A pooled connection the server dropped (restart, idle timeout) is worth
-- another try, within the same deadline, while the failed one came from the
-- pool: after a restart every idle connection in it is dead, and a worker
-- that has not yet handled their FINs takes them in turn (a single retry
-- took the next dead one: "closed"). Each is closed as it fails, so the
-- tries end on a fresh connection or at the deadline.
local function retry_worth(reused, kind)
    return reused and (kind == "closed" or kind == "network")
end

--- The servers as this client places keys on them, in order: "name/weight"
-- each (two clients given "a,b" and "a, b" name them alike).
function _M.server_names(self)
    local names = {}
    for i, srv in ipairs(self.servers) do
        names[i] = srv.name .. "/" .. tostring(srv.weight)
    end
    return names
end

--- The client's timeout: ms for one lookup, whole.
function _M.timeout_ms(self)
    return self.timeout
end

--- get(key [, timeout]): the value (a string), false on a miss, or nil,
-- err, kind. timeout: ms for this lookup (default: the client's timeout),
-- for a caller that already spent part of its deadline.
function _M.get(self, key, timeout)
    if key ~= last_ok_key then
        if not key_ok(key) then
            return nil, "refused to send an invalid memcached key", "key"
        end
        last_ok_key = key
    end
    local srv = self.servers[1]
    if self.nservers > 1 then
        srv = self.servers[server_for(self.continuum, key)]
    end

    -- the cached clock may be a whole event-loop iteration old
    update_time()
    local t = now()
    if not breaker_allows(self, srv, t) then
        return nil, "memcached " .. srv.name .. " marked down", "down"
    end

    local deadline = t + (timeout or self.timeout) / 1000
    local req = "get " .. key .. "\r\n"
    local value, err, kind, reused = query(self, srv, req, key, deadline, t)
    while value == nil and retry_worth(reused, kind) do
        value, err, kind, reused = query(self, srv, req, key, deadline)
    end
    err = account(self, srv, value ~= nil or kind == "server" or kind == "value", err,
                  value == nil and kind or nil)
    if value ~= nil then
        return value
    end
    return nil, err, kind
end

-- A multi-key request on one connection before the deadline: the reply is
-- collected in a reply buffer (linear however large), values decoded in
-- place. Returns the decoded table, or nil, err, kind, reused.
local function query_multi(self, srv, req, keys, nkeys, deadline, limit, with_cas, meta_mode)
    local sock, err, kind, reused, armed = open(srv, req, deadline)
    if not sock then
        return nil, err, kind, reused
    end
    -- small at first: most multi-key replies are a few short values
    local buf = new_reply_buffer(512)
    local need = 0
    while true do
        local more
        more, err, armed = read_next(sock, need, deadline, armed)
        if not more then
            return nil, fail(sock, "read from " .. srv.name .. ": ", err)
        end
        buf:append(more)
        local res, consumed
        if meta_mode then
            res, consumed, need = buf:decode_meta(keys, nkeys, meta_mode, with_cas)
        else
            res, consumed, need = buf:decode(keys, nkeys, with_cas)
        end
        if res then
            release(self, sock, consumed == buf.len)
            return res
        end
        if consumed ~= "again" then
            return nil, bad_reply(sock, srv, consumed, meta_mode)
        end
        if buf.len + need > limit then
            -- with several keys the reply is cut short: no key's value is
            -- known, not just the oversized one's ("partial" is a failure to
            -- the router, but the server answered: not one for the breaker)
            return nil, fail(sock, "reply from " .. srv.name .. ": ",
                             "over " .. limit .. " bytes", nkeys == 1 and "value" or "partial")
        end
    end
end

-- One server's part of a multi-get: its keys in one request (tried again
-- after a dead pooled connection), counted for its breaker. Returns the decoded
-- table, or nil, err, kind.
local function ask(self, srv, group, deadline, t, bulk, with_cas, meta)
    if not breaker_allows(self, srv, t) then
        return nil, "memcached " .. srv.name .. " marked down", "down"
    end
    local keystr = concat(group, " ")
    local limit = bulk or #group * (self.value_max + VALUE_LINE_EXTRA + REPLY_TAIL) + #keystr
    local res, err, kind, reused
    if meta and not text_only[srv.name] then
        -- "mg <key> v q O<i>" each (q: no EN for a miss; O: the position,
        -- shorter than the key echoed by k), then "mn" ends the reply
        local req = meta_request(keystr, with_cas and "v f c q" or "v q")
        local mode = META_PIPELINE + META_VALUE + META_QUIET
        res, err, kind, reused = query_multi(self, srv, req, keystr, #group, deadline, limit,
                                             with_cas, mode)
        while res == nil and retry_worth(reused, kind) do
            res, err, kind, reused = query_multi(self, srv, req, keystr, #group, deadline,
                                                 limit, with_cas, mode)
        end
        if kind == "meta" then
            meta_refused(srv, err)
            res, kind = nil, nil
        end
    end
    if res == nil and kind == nil then
        local req = (with_cas and "gets " or "get ") .. keystr .. "\r\n"
        res, err, kind, reused = query_multi(self, srv, req, keystr, #group, deadline, limit,
                                             with_cas)
        while res == nil and retry_worth(reused, kind) do
            res, err, kind, reused = query_multi(self, srv, req, keystr, #group, deadline,
                                                 limit, with_cas)
        end
    end
    err = account(self, srv, res ~= nil or kind == "server" or kind == "value"
                             or kind == "partial", err, res == nil and kind or nil)
    return res, err, kind
end

-- Adds one server's answer to results (or its keys to failed); returns the
-- first error message and failed.
local function merge(self, srv, group, res, err, kind, bulk, with_cas, results, failed,
                     first_err)
    if res then
        for key, v in pairs(res) do
            if not bulk and #(with_cas and v.value or v) > self.value_max then
                failed = failed or {}
                failed[key] = "value"
                first_err = first_err or "reply from " .. srv.name .. ": a value over"
                                         .. " value_max (" .. self.value_max .. " bytes)"
            else
                results[key] = v
            end
        end
    else
        failed = failed or {}
        for _, key in ipairs(group) do
            failed[key] = kind
        end
        first_err = first_err or err
    end
    return first_err, failed
end

-- The keys by server: groups[n] = { key, ... } for the servers in order;
-- invalid keys go to failed. Returns groups, order, failed, first_err.
local function group_keys(self, keys)
    local groups, order, failed, first_err = {}, {}, nil, nil
    for i = 1, #keys do
        local key = keys[i]
        if not key_ok(key) then
            failed = failed or {}
            failed[key] = "key"
            first_err = first_err or "refused to send an invalid memcached key"
        else
            local n = self.nservers > 1 and server_for(self.continuum, key) or 1
            local group = groups[n]
            if not group then
                group = {}
                groups[n] = group
                order[#order + 1] = n
            end
            group[#group + 1] = key
        end
    end
    return groups, order, failed, first_err
end

--- get_multi(keys [, opts]): several keys in one request per server (the
-- servers asked at once), all within one deadline (`timeout`,
-- or opts.timeout ms). opts.cas: "gets", values as { value = , cas = }.
-- opts.max_bytes: the limit of one server's whole reply (default: what
-- the keys' values can take under value_max); a value over value_max is
-- refused too, unless max_bytes was given (bulk reads). Returns:
--   results  key -> value (or { value, cas }); a key memcached lacks is absent
--   failed   nil, or key -> kind ("key", "down", "timeout", "value", ...)
--            for each key whose value is unknown
--   err      the first error message, for the log
local function get_multi(self, keys, opts, meta)
    opts = opts or EMPTY
    local with_cas = opts.cas and true or false
    local bulk = opts.max_bytes
    local results = {}
    local groups, order, failed, first_err = group_keys(self, keys)

    update_time()
    local t = now()
    local deadline = t + (opts.timeout or self.timeout) / 1000
    if #order == 1 then
        local n = order[1]
        local res, err, kind = ask(self, self.servers[n], groups[n], deadline, t, bulk, with_cas,
                                   meta)
        first_err, failed = merge(self, self.servers[n], groups[n], res, err, kind, bulk,
                                  with_cas, results, failed, first_err)
        return results, failed, first_err
    end
    -- several servers: asked at once, each in a light thread, all within
    -- the one deadline
    local threads = {}
    for i, n in ipairs(order) do
        threads[i] = spawn(ask, self, self.servers[n], groups[n], deadline, t, bulk, with_cas,
                           meta)
    end
    for i, n in ipairs(order) do
        local ok, res, err, kind = wait(threads[i])
        if not ok then
            res, err, kind = nil, "memcached " .. self.servers[n].name .. ": " .. tostring(res),
                             "protocol"
        end
        first_err, failed = merge(self, self.servers[n], groups[n], res, err, kind, bulk,
                                  with_cas, results, failed, first_err)
    end
    return results, failed, first_err
end

--- get_multi_bulk(keys, opts): get_multi for timers (the lists' refresh):
-- the same options and results, in functions of its own that the JIT leaves
-- to the interpreter. Its loops run over many keys now and then; traced,
-- they would start traces that abort ("leaving loop in root trace") and
-- make a request that calls the same functions abort with them. The
-- request path (get_multi, get_keys) runs none of this code.
local function get_multi_bulk(self, keys, opts)
    opts = opts or EMPTY
    local with_cas = opts.cas and true or false
    local bulk = opts.max_bytes
    local results, failed, first_err = {}, nil, nil
    local groups, order = {}, {}
    for i = 1, #keys do
        local key = keys[i]
        if not key_ok(key) then
            failed = failed or {}
            failed[key] = "key"
            first_err = first_err or "refused to send an invalid memcached key"
        else
            local n = self.nservers > 1 and server_for(self.continuum, key) or 1
            local group = groups[n]
            if not group then
                group = {}
                groups[n] = group
                order[#order + 1] = n
            end
            group[#group + 1] = key
        end
    end
    -- the cached clock may be a whole event-loop iteration old
    update_time()
    local t = now()
    local deadline = t + (opts.timeout or self.timeout) / 1000
    -- several servers: asked at once, each in a light thread
    local threads = {}
    if #order > 1 then
        for i, n in ipairs(order) do
            threads[i] = spawn(ask, self, self.servers[n], groups[n], deadline, t, bulk,
                               with_cas, false)
        end
    end
    for i, n in ipairs(order) do
        local srv = self.servers[n]
        local ok, res, err, kind
        if #order > 1 then
            ok, res, err, kind = wait(threads[i])
        else
            ok, res, err, kind = true, ask(self, srv, groups[n], deadline, t, bulk, with_cas,
                                           false)
        end
        if not ok then
            res, err, kind = nil, "memcached " .. srv.name .. ": " .. tostring(res), "protocol"
        end
        if res then
            for key, v in pairs(res) do
                if not bulk and #(with_cas and v.value or v) > self.value_max then
                    failed = failed or {}
                    failed[key] = "value"
                    first_err = first_err or "reply from " .. srv.name .. ": a value over"
                                             .. " value_max (" .. self.value_max .. " bytes)"
                else
                    results[key] = v
                end
            end
        else
            failed = failed or {}
            for _, key in ipairs(groups[n]) do
                failed[key] = kind
            end
            first_err = first_err or err
        end
    end
    return results, failed, first_err
end
require("jit").off(get_multi_bulk)
_M.get_multi_bulk = get_multi_bulk

function _M.get_multi(self, keys, opts)
    if opts and opts.max_bytes then
        -- a bulk read (the lists' refresh timer): off the request path
        return get_multi_bulk(self, keys, opts)
    end
    return get_multi(self, keys, opts, false)
end

--- get_multi_meta(keys [, opts]): get_multi with the meta protocol: one
-- "mg <key> v q O<i>" per key and "mn" in one request per server (with
-- opts.cas, "c" too). The same options and results as get_multi; a server
-- without the meta protocol is asked with get/gets instead.
function _M.get_multi_meta(self, keys, opts)
    return get_multi(self, keys, opts, true)
end

-- query_list after a first read that did not hold the whole reply (first:
-- its bytes, need: what the decoder wants more): reads on into a buffer.
local function query_list_more(self, srv, sock, first, need, keystr, nkeys, deadline, limit,
                               into, armed)
    local buf = new_reply_buffer(#first + need + 64)
    buf:append(first)
    while true do
        if buf.len + need > limit then
            return nil, fail(sock, "reply from " .. srv.name .. ": ",
                             "over " .. limit .. " bytes", nkeys == 1 and "value" or "partial")
        end
        local more, err
        more, err, armed = read_next(sock, need, deadline, armed)
        if not more then
            return nil, fail(sock, "read from " .. srv.name .. ": ", err)
        end
        buf:append(more)
        local res, consumed
        res, consumed, need = buf:decode_meta_list(keystr, nkeys, into)
        if res then
            release(self, sock, consumed == buf.len)
            return res
        end
        if consumed ~= "again" then
            return nil, bad_reply(sock, srv, consumed, true)
        end
    end
end

-- The reply to a get_keys pipeline, decoded by position. Returns the values
-- (out[i]: the i-th key's value or false; into: the table to fill, else a
-- new one), or nil, err, kind, reused. The usual reply comes in one read:
-- decoded from that string, no loop (a loop of one turn would abort the
-- request's trace), a buffer only when more must be read.
local function query_list(self, srv, req, keystr, nkeys, deadline, limit, into, t)
    local sock, err, kind, reused, armed = open(srv, req, deadline, t)
    if not sock then
        return nil, err, kind, reused
    end
    local more
    more, err, armed = read_some(sock, deadline, armed)
    if not more then
        return nil, fail(sock, "read from " .. srv.name .. ": ", err)
    end
    local res, consumed, need = decode_meta_list(more, keystr, nkeys, into)
    if res then
        release(self, sock, consumed == #more)
        return res
    end
    if consumed ~= "again" then
        return nil, bad_reply(sock, srv, consumed, true)
    end
    return query_list_more(self, srv, sock, more, need, keystr, nkeys, deadline, limit, into,
                           armed)
end

-- get_keys where the meta pipeline does not fit: several servers, a
-- text-only server, a key refused. get_multi, its results by position.
local function get_keys_split(self, keystr, nkeys, timeout)
    local keys = {}
    for key in keystr:gmatch("%S+") do
        keys[#keys + 1] = key
    end
    local res, failed, err = get_multi(self, keys, timeout and { timeout = timeout } or nil,
                                       false)
    local out, fails = {}, nil
    for i = 1, nkeys do
        local key = keys[i]
        local kind = key and (failed and failed[key]) or (not key and "key")
        out[i] = key and res[key] or false
        if kind then
            fails = fails or {}
            fails[i] = kind
            out[i] = false
        end
    end
    return out, fails, err
end

-- Every key of a get_keys failed alike.
local function all_failed(nkeys, kind)
    local fails = {}
    for i = 1, nkeys do
        fails[i] = kind
    end
    return fails
end

-- get_keys' and get_list's pipeline req on srv, decoded against keystr
-- (nkeys keys, or their stand-ins), the values into `into` (or a new
-- table). Returns what get_keys does; or nil, nil, nil, ms left when srv
-- refused mg (the caller asks again as get_multi, in that time).
local function pipeline(self, srv, req, keystr, nkeys, timeout, into)
    -- the cached clock may be a whole event-loop iteration old
    update_time()
    local t = now()
    if not breaker_allows(self, srv, t) then
        return EMPTY, all_failed(nkeys, "down"), "memcached " .. srv.name .. " marked down"
    end
    local deadline = t + (timeout or self.timeout) / 1000
    local limit = nkeys * (self.value_max + VALUE_LINE_EXTRA + REPLY_TAIL) + #keystr
    local res, err, kind, reused = query_list(self, srv, req, keystr, nkeys, deadline, limit, into,
                                              t)
    while res == nil and retry_worth(reused, kind) do
        res, err, kind, reused = query_list(self, srv, req, keystr, nkeys, deadline, limit,
                                            into)
    end
    if kind == "meta" then
        meta_refused(srv, err)
        local left = time_left(deadline)
        if not left then
            return EMPTY, all_failed(nkeys, "timeout"), "memcached " .. srv.name .. ": timeout"
        end
        return nil, nil, nil, left
    end
    err = account(self, srv, res ~= nil or kind == "server" or kind == "value"
                             or kind == "partial", err, res == nil and kind or nil)
    if res == nil then
        return EMPTY, all_failed(nkeys, kind), err
    end
    -- a value over value_max: refused as get_multi refuses it
    local max, failed = self.value_max, nil
    if (res[1] and #res[1] > max) or (res[2] and #res[2] > max) or (res[3] and #res[3] > max)
       or (res[4] and #res[4] > max) or (res[5] and #res[5] > max) or nkeys > 5 then
        for i = 1, nkeys do
            if res[i] and #res[i] > max then
                failed = failed or {}
                failed[i] = "value"
                res[i] = false
                err = err or "reply from " .. srv.name .. ": a value over value_max ("
                             .. max .. " bytes)"
            end
        end
    end
    return res, failed, err
end

--- get_keys(keystr, nkeys [, timeout]): the request path's multi-key
-- lookup. keystr: nkeys keys, single spaces between them. On one server,
-- one meta pipeline ("mg <key> v q O<i>" per key, then "mn": a miss sends
-- nothing), its reply decoded by position in one C call, no table keyed by
-- key; elsewhere (several servers, a server without mg) as get_multi.
-- timeout: ms for the whole lookup (default: the client's). Returns:
--   values  values[i]: the i-th key's value, false when memcached lacks it
--           (or its value is unknown: see failed)
--   failed  nil, or i -> kind ("key", "down", "timeout", "value", ...) for
--           each key whose value is unknown
--   err     the first error message, for the log
function _M.get_keys(self, keystr, nkeys, timeout)
    local srv = self.servers[1]
    if self.nservers > 1 or text_only[srv.name] then
        return get_keys_split(self, keystr, nkeys, timeout)
    end
    local req = meta_request(keystr, "v q")
    if not req then
        return get_keys_split(self, keystr, nkeys, timeout)    -- names the bad key
    end
    local res, failed, err, left = pipeline(self, srv, req, keystr, nkeys, timeout, nil)
    if left then
        return get_keys_split(self, keystr, nkeys, left)
    end
    return res, failed, err
end

-- get_list's keys joined, for get_keys_split.
local function joined(k1, k2, k3, k4, k5)
    local keys = {}
    if k1 then keys[#keys + 1] = k1 end
    if k2 then keys[#keys + 1] = k2 end
    if k3 then keys[#keys + 1] = k3 end
    if k4 then keys[#keys + 1] = k4 end
    if k5 then keys[#keys + 1] = k5 end
    return concat(keys, " ")
end

-- get_list's values: one table per worker, refilled by each call
local list_out = { false, false, false, false, false }

--- get_list(nkeys, k1, k2, k3, k4, k5 [, timeout]): get_keys for the
-- request path, its keys separate: each a key already checked (gray.ffi's
-- mc_key_ok; gray.ids' key does) or nil (skipped); nkeys: how many are
-- given (1 to 5). The request is built in C from them (no joined list),
-- the reply decoded by position. Returns what get_keys does, but the
-- values table is the worker's one, refilled by the next call: read it
-- before anything that may yield.
function _M.get_list(self, nkeys, k1, k2, k3, k4, k5, timeout)
    local srv = self.servers[1]
    if self.nservers > 1 or text_only[srv.name] then
        return get_keys_split(self, joined(k1, k2, k3, k4, k5), nkeys, timeout)
    end
    local req, rerr = meta_list(k1, k2, k3, k4, k5)
    if not req then
        return EMPTY, all_failed(nkeys, "key"), rerr
    end
    local res, failed, err, left = pipeline(self, srv, req, LIST_KEYS[nkeys], nkeys, timeout,
                                            list_out)
    if left then
        return get_keys_split(self, joined(k1, k2, k3, k4, k5), nkeys, left)
    end
    return res, failed, err
end

-- One "mg" on one connection, all of it before the deadline. Returns the
-- value (VA), true (HD) or false (EN), and the cas; or nil, err, kind,
-- reused (kind "meta": the server answered ERROR, it lacks mg).
local function query_meta(self, srv, req, key, with_value, deadline)
    local sock, err, kind, reused, armed = open(srv, req, deadline)
    if not sock then
        return nil, err, kind, reused
    end
    -- "VA <size> c<cas>", the data and its CRLF; no key is echoed
    local limit = self.value_max + VALUE_LINE_EXTRA + REPLY_TAIL
    local buf, need = nil, 0
    while true do
        local more
        more, err, armed = read_next(sock, need, deadline, armed)
        if not more then
            return nil, fail(sock, "read from " .. srv.name .. ": ", err)
        end
        buf = buf and buf .. more or more
        local v, consumed, more_or_flags, cas = decode_meta1(buf, key, with_value)
        if type(v) == "string" and #v > self.value_max then
            return nil, too_large(self, sock, srv)
        end
        if v ~= nil then
            release(self, sock, consumed == #buf)
            return v, cas
        end
        need = more_or_flags
        if consumed ~= "again" then
            return nil, bad_reply(sock, srv, consumed, true)
        end
        if #buf + need > limit then
            return nil, too_large(self, sock, srv)
        end
    end
end

-- One key with the meta protocol, on the server it lives on, within one
-- deadline (opts.timeout or timeout ms): mg_req first unless the server is
-- known text-only, then the text fallback (text(self, srv, key, deadline,
-- opts) -> as query_meta) on a refusal. Returns the result, cas; or nil,
-- err, kind.
local function lookup_meta(self, key, mg_req, with_value, text, opts)
    if not key_ok(key) then
        return nil, "refused to send an invalid memcached key", "key"
    end
    local srv = self.servers[1]
    if self.nservers > 1 then
        srv = self.servers[server_for(self.continuum, key)]
    end
    update_time()
    local t = now()
    if not breaker_allows(self, srv, t) then
        return nil, "memcached " .. srv.name .. " marked down", "down"
    end
    local deadline = t + (opts.timeout or self.timeout) / 1000

    local v, cas, kind, reused
    if not text_only[srv.name] then
        v, cas, kind, reused = query_meta(self, srv, mg_req, key, with_value, deadline)
        while v == nil and retry_worth(reused, kind) do
            v, cas, kind, reused = query_meta(self, srv, mg_req, key, with_value, deadline)
        end
        if kind == "meta" then
            meta_refused(srv, cas)
            v, kind = nil, nil
        end
    end
    if v == nil and kind == nil then
        v, cas, kind, reused = text(self, srv, key, deadline, opts)
        while v == nil and retry_worth(reused, kind) do
            v, cas, kind, reused = text(self, srv, key, deadline, opts)
        end
    end
    local err = account(self, srv, v ~= nil or kind == "server" or kind == "value",
                        v == nil and cas or nil, v == nil and kind or nil)
    if v == nil then
        return nil, err, kind
    end
    return v, cas
end

-- The text fallbacks: "gets" (the value comes with the cas, bounded by
-- opts.max_bytes or value_max) and "get".
local function text_gets(self, srv, key, deadline, opts)
    local bulk = opts.max_bytes
    local limit = bulk or self.value_max + #key + VALUE_LINE_EXTRA + REPLY_TAIL
    local res, err, kind, reused = query_multi(self, srv, "gets " .. key .. "\r\n", key, 1,
                                               deadline, limit, true)
    if not res then
        return nil, err, kind, reused
    end
    local entry = res[key]
    if not entry then
        return false
    end
    if not bulk and #entry.value > self.value_max then
        return nil, "reply from " .. srv.name .. ": a value over value_max ("
                    .. self.value_max .. " bytes)", "value"
    end
    return entry.value, entry.cas
end

local function text_get(self, srv, key, deadline)
    return query(self, srv, "get " .. key .. "\r\n", key, deadline)
end

--- meta_cas(key [, opts]): the cas unique of key (decimal text), false
-- when memcached lacks the key, or nil, err, kind. Asks "mg <key> c": no
-- value is sent, a reply of about 20 bytes whatever the value's size, to
-- tell whether a value changed since it was read. A server without the
-- meta protocol is asked "gets <key>", which sends the value too: it comes
-- back second then (use it rather than reading it again), bounded like
-- get_multi's: opts.max_bytes, else value_max (kind "value" over it).
-- opts.timeout: ms for the whole call (default: timeout).
function _M.meta_cas(self, key, opts)
    local v, cas, kind = lookup_meta(self, key, "mg " .. tostring(key) .. " c\r\n", false,
                                     text_gets, opts or EMPTY)
    if v == nil then
        return nil, cas, kind
    end
    if v == false then
        return false
    end
    if not cas then
        -- a hit without a cas: the server ignored "c" (or gets)
        return nil, "reply from memcached: a hit without a cas", "protocol"
    end
    if v == true then
        return cas
    end
    return cas, v
end

--- get_meta(key [, opts]): as get, with "mg <key> v" (a shorter reply,
-- no END line; a miss is "EN"); get on a server without the meta
-- protocol. opts.timeout: ms for the whole call (default: timeout).
function _M.get_meta(self, key, opts)
    local v, err, kind = lookup_meta(self, key, "mg " .. tostring(key) .. " v\r\n", true,
                                     text_get, opts or EMPTY)
    if v == nil then
        return nil, err, kind
    end
    return v
end


--- add(key, value [, opts]): stores value under key only if memcached has
-- no such key ("add <key> 0 0 <n>"; it never expires). Returns true when
-- stored, false when the key exists (NOT_STORED), or nil, err, kind.
-- opts.timeout: ms for the whole call (default: timeout). For timers (a
-- guard's halt), not the request path.
local parse_line = gray_ffi.mc_parse_line
local function add(self, key, value, opts)
    if not key_ok(key) then
        return nil, "refused to send an invalid memcached key", "key"
    end
    value = tostring(value)
    local n = self.nservers > 1 and server_for(self.continuum, key) or 1
    local srv = self.servers[n]
    update_time()
    local deadline = now() + ((opts and opts.timeout) or self.timeout) / 1000
    local sock, err, kind = open(srv, "add " .. key .. " 0 0 " .. #value .. "\r\n" .. value
                                      .. "\r\n", deadline)
    if not sock then
        return nil, err, kind
    end
    local buf, armed = "", ARMED_UNKNOWN
    while true do
        local more
        more, err, armed = read_some(sock, deadline, armed)
        if not more then
            return nil, fail(sock, "read from " .. srv.name .. ": ", err)
        end
        buf = buf .. more
        local reply, text, consumed = parse_line(buf)
        if reply == "STORED" or reply == "NOT_STORED" then
            release(self, sock, consumed == #buf)
            return reply == "STORED"
        elseif reply then
            return nil, bad_reply(sock, srv, reply .. (text and " " .. text or ""))
        elseif text ~= "again" or #buf > 1024 then
            return nil, bad_reply(sock, srv, tostring(text))
        end
    end
end
require("jit").off(add)
_M.add = add

return _M
