-- gray.client: who the client is. The canonical text of its address, chosen
-- as nginx's realip module does with real_ip_recursive on: the forwarding
-- headers count only when the socket peer is a trusted proxy, and each
-- header is read only when the decision still needs it (an ngx.var read
-- costs about a thousand instructions).
--
--   local client = assert(require("gray.client").new({ trusted = { "10.0.0.0/8" } }))
--   local key = client:key()    -- "203.0.113.7", or nil for a unix-socket peer

local gray_ffi = require "gray.ffi"
local util = require "gray.util"

local ngx_var = ngx.var
local ngx_req = ngx.req
local concat = table.concat
local type, ipairs, tostring = type, ipairs, tostring
local setmetatable = setmetatable
local peer_trusted = gray_ffi.peer_trusted
local client_key = gray_ffi.client_key
local header_key = gray_ffi.header_key
local peer_key = gray_ffi.peer_key
local split_list, option_error = util.split_list, util.option_error

-- Peers whose trust is remembered per client picker: proxies are few.
local PEER_MEMO_MAX = 1024

local _M = { _VERSION = gray_ffi.VERSION }
local mt = { __index = _M }

local DEFAULTS = {
    trusted = { "127.0.0.0/8", "::1" },
    client_headers = { "X-Real-IP", "X-Forwarded-For" },
}
_M.DEFAULTS = DEFAULTS

local HEADERS = {
    ["x-real-ip"] = "use_real_ip",
    ["x-forwarded-for"] = "use_xff",
    ["forwarded"] = "use_forwarded",
}

-- new(), with a refused option as a gray.util record.
local function new_picker(opts)
    local trusted = opts.trusted
    if trusted == nil then
        trusted = DEFAULTS.trusted
    end
    if trusted == "none" then
        trusted = {}
    end
    if type(trusted) ~= "table" and type(trusted) ~= "string" then
        return option_error("trusted", "must be a list of CIDRs")
    end
    local set, err = gray_ffi.new_ipset(trusted)
    if not set then
        return option_error("trusted", err)
    end

    local headers = opts.client_headers
    if headers == nil then
        headers = DEFAULTS.client_headers
    elseif headers == "none" then
        headers = {}
    else
        headers = split_list(headers)
    end
    if type(headers) ~= "table" then
        return option_error("client_headers", "must be a list of header names or 'none'")
    end
    local self = { trusted = set, use_real_ip = false, use_xff = false, use_forwarded = false }
    for _, h in ipairs(headers) do
        local field = type(h) == "string" and HEADERS[h:lower()]
        if not field then
            return option_error("client_headers", "has '" .. tostring(h)
                                .. "'; known: X-Real-IP, X-Forwarded-For, Forwarded (or 'none')")
        end
        self[field] = true
    end
    -- no header: the trusted check itself is not needed per request
    self.any_header = self.use_real_ip or self.use_xff or self.use_forwarded
    -- peer text -> trusted?, so a proxy's address is not parsed per request
    self.peer_memo, self.peer_memo_size = {}, 0
    return setmetatable(self, mt), nil, set.warnings
end
_M._new = new_picker

--- Builds a client-key picker from `trusted` (CIDRs: a table, a comma or
-- blank separated string, or "none") and `client_headers` (a list of
-- X-Real-IP, X-Forwarded-For, Forwarded; or "none" for the peer only).
-- Returns it, nil and the CIDR warnings (a list of strings); or nil, err
-- naming the option.
_M.new = util.worded(new_picker)

-- $http_forwarded holds only the first Forwarded line, and a proxy may add
-- its own line after the client's: all lines, joined as one list.
local function forwarded_lines()
    local v = ngx_req.get_headers()["forwarded"]
    if type(v) == "table" then
        return concat(v, ", ")
    end
    return v
end

--- Whether this request's socket peer is a trusted proxy.
function _M.peer_is_trusted(self)
    local peer = ngx_var.remote_addr
    if peer == nil then
        return false
    end
    local trusted = self.peer_memo[peer]
    if trusted == nil then
        trusted = peer_trusted(self.trusted, peer)
    end
    return trusted
end

-- A text already among the cache's keys is a canonical address (nothing
-- else gets in), so it needs no parse: found, then the entry as cache:get
-- returns it (value, stale value, stored_at); now: the request's clock.
local function probe(cache, text, now)
    local value, stale, flags = cache:get(text, now)
    if value ~= nil or stale ~= nil then
        return true, value, stale, flags
    end
    return false
end

--- The client's canonical address text for this request, or nil when the
-- peer is not an IP address (a unix socket). In the common cases (a proxy's
-- X-Real-IP or one-element X-Forwarded-For in canonical form, or a direct
-- client) the key is the nginx variable's own string: nothing is copied.
-- With `cache` (a gray.cache whose keys are canonical addresses only), a
-- text found there is returned with its entry (key, value, stale,
-- stored_at) and not parsed at all; now (optional): the clock its
-- freshness is judged by (the cache reads one without it).
function _M.key(self, cache, now)
    local peer = ngx_var.remote_addr
    if peer == nil then
        return nil
    end
    local found, value, stale, flags
    if self.any_header then
        local trusted = self.peer_memo[peer]
        if trusted == nil then
            trusted = peer_trusted(self.trusted, peer)
            -- bounded: past it, peers not yet seen are checked in C each time
            if self.peer_memo_size < PEER_MEMO_MAX then
                self.peer_memo[peer] = trusted
                self.peer_memo_size = self.peer_memo_size + 1
            end
        end
        if trusted then
            local hdr
            if self.use_real_ip then
                hdr = ngx_var.http_x_real_ip
                if hdr then
                    if cache then
                        found, value, stale, flags = probe(cache, hdr, now)
                        if found then
                            return hdr, value, stale, flags
                        end
                    end
                    -- nil when no element is an address: the lists decide
                    local key = header_key(self.trusted, hdr)
                    if key then
                        return key      -- the other headers are never read
                    end
                end
            end
            if self.use_xff then
                hdr = ngx_var.http_x_forwarded_for
                if hdr then
                    if cache then
                        found, value, stale, flags = probe(cache, hdr, now)
                        if found then
                            return hdr, value, stale, flags
                        end
                    end
                    return header_key(self.trusted, hdr) or peer_key(self.trusted, peer)
                end
            end
            if self.use_forwarded and ngx_var.http_forwarded then
                return (client_key(self.trusted, peer, nil, nil, forwarded_lines()))
            end
        end
    end
    if cache then
        found, value, stale, flags = probe(cache, peer, now)
        if found then
            return peer, value, stale, flags
        end
    end
    -- (self.trusted read where needed, not up front: a probe's hit needs none)
    return peer_key(self.trusted, peer)
end

return _M
