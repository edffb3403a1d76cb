-- gray.ids: the identities a router keys on besides the client address: a
-- user id in a cookie, a device id in a header, a query argument, or an
-- nginx variable that an authentication module sets (`var:remote_user`).
-- Each has a name, which is its memcached key prefix: `uid:42`, `dev:a1b2`.
-- Cookies, headers and query arguments are the client's choice; a variable
-- set by authentication is not, nor is a signed cookie (`signed-cookie:uid`,
-- holding a token of `gray-admin token <id> --id uid`: its id counts only
-- while the signature and the expiry hold).
--
--   local ids = assert(require("gray.ids").parse("uid=cookie:uid, dev=header:X-Device-Id"))
--   local key = ids.key(ids[1])      -- "uid:42", or nil when absent or unusable

local gray_ffi = require "gray.ffi"

local ngx_var = ngx.var
local ngx_time = ngx.time
local key_ok = gray_ffi.mc_key_ok
local token_check = gray_ffi.token_check
local type, ipairs, pairs = type, ipairs, pairs

local _M = { _VERSION = gray_ffi.VERSION }

local IDS_MAX = 4           -- identities per router (gray.lua unrolls over them)
local VALUE_MAX = 200       -- bytes of an id value; a longer one is ignored
_M.VALUE_MAX = VALUE_MAX

-- source -> the nginx variable prefix that reads it
local SOURCES = { cookie = "cookie_", header = "http_", query = "arg_", arg = "arg_", var = "",
                  ["signed-cookie"] = "cookie_" }

-- The router's own keys start so: list keys are gray:list:<name>, and the
-- default ranges_key and percent_key are gray:ranges and gray:percent.
local RESERVED = "gray"

--- Parses "name=source:field, ..." (or a list of such strings) into an
-- array of { name, prefix = "name:", var = nginx variable, source, field }.
-- A name is letters, digits, '_' and '-', and holds a letter past 'f', so
-- that no "name:value" key can ever read as an IPv6 address. nil, err.
function _M.parse(spec)
    local list = spec
    if type(spec) == "string" then
        list = {}
        for item in spec:gmatch("[^,]+") do
            item = item:match("^%s*(.-)%s*$")
            if item ~= "" then
                list[#list + 1] = item
            end
        end
    end
    if type(list) ~= "table" then
        return nil, "must be 'name=source:field, ...' (a string or a list of them)"
    end
    local ids, seen = {}, {}
    for i, item in ipairs(list) do
        if type(item) ~= "string" then
            return nil, "entry " .. i .. " is not a string"
        end
        local name, source, field = item:match("^([%w_%-]+)%s*=%s*(%a[%a%-]*):([%w_%-%.]+)$")
        if not name then
            return nil, "bad identity '" .. item .. "' (expected name=cookie:field,"
                        .. " name=header:Field-Name, name=query:arg, name=var:variable or"
                        .. " name=signed-cookie:field)"
        end
        source = source:lower()
        if not SOURCES[source] then
            return nil, "identity '" .. name .. "': unknown source '" .. source
                        .. "' (cookie, header, query, var or signed-cookie)"
        end
        if source == "var" and not field:find("^[%a_][%w_]*$") then
            return nil, "identity '" .. name .. "': var: takes an nginx variable name"
                        .. " (letters, digits and '_', as in var:remote_user), got '"
                        .. field .. "'"
        end
        if name == RESERVED then
            return nil, "identity name '" .. name .. "' is reserved: the router's own keys"
                        .. " (gray:list:<name>, gray:ranges, gray:percent) start with '"
                        .. RESERVED .. ":'"
        end
        if #name > 32 or not name:lower():find("[g-z_%-]") then
            return nil, "identity name '" .. name .. "' must be at most 32 bytes and hold a"
                        .. " letter past 'f' (or '_', '-'), so its keys never read as IPv6"
        end
        if seen[name] then
            return nil, "identity '" .. name .. "' is named twice"
        end
        seen[name] = true
        local var = SOURCES[source] .. (source == "header" and field:lower():gsub("%-", "_")
                                         or field)
        -- a signed cookie's token context, its key (set by the router: its
        -- secret_file) and the last token checked (raw value, id, expiry)
        local signed = source == "signed-cookie"
        ids[#ids + 1] = { name = name, prefix = name .. ":", var = var, source = source,
                          field = field, reason = "id:" .. name, list_reason = "list:" .. name,
                          context = signed and "id:" .. name or false, secret = false,
                          cache = false,    -- bind(): the router's cache of its decisions
                          memo_raw = false, memo_value = false, memo_expiry = 0 }
    end
    if #ids > IDS_MAX then
        return nil, "at most " .. IDS_MAX .. " identities"
    end
    return ids
end

--- nil, or a message when some identity's keys ("name:value") could be
-- one of the router's own: keys (ranges_key, percent_key: the key or one
-- of its parts, "<key>:<tag>:<i>") or an address key under key_prefix.
function _M.check_keys(ids, keys, key_prefix)
    for _, id in ipairs(ids) do
        local p = id.prefix
        for option, key in pairs(keys) do
            if key and (key .. ":"):sub(1, #p) == p then
                return "identity '" .. id.name .. "': its keys '" .. p .. "<value>' could be"
                       .. " the router's own key '" .. key .. "' (" .. option
                       .. "): name it otherwise"
            end
        end
        if key_prefix and key_prefix ~= "" and (p:sub(1, #key_prefix) == key_prefix
                                                 or key_prefix:sub(1, #p) == p) then
            return "identity '" .. id.name .. "': its keys '" .. p .. "<value>' could be"
                   .. " address keys under key_prefix '" .. key_prefix .. "': name it otherwise"
        end
    end
    return nil
end

--- Gives an identity parsed above its router's parts: the secret (or
-- false) that checks its signed cookies, and the cache of its decisions
-- (a gray.cache, keyed by the raw value).
function _M.bind(id, secret, cache)
    id.secret, id.cache = secret, cache
end

-- The id in a signed cookie's value v, or nil when v is no token of this
-- identity under its secret, or has expired. The last value checked is
-- remembered, good or bad: the rules ask for the value up to four times per
-- request, and one HMAC costs about a microsecond.
local function signed_value(id, v)
    local now = ngx_time()
    if v ~= id.memo_raw then
        local subject, expiry = token_check(id.context, id.secret, v, now)
        if not subject or #subject > VALUE_MAX then
            subject, expiry = false, 0
        end
        id.memo_raw, id.memo_value, id.memo_expiry = v, subject, expiry
    end
    if now < id.memo_expiry then
        return id.memo_value
    end
    return nil
end

--- This request's value of an identity, or nil when it is absent, empty,
-- longer than VALUE_MAX, not usable in a memcached key, or (a signed
-- cookie) not validly signed: such a value is never sent anywhere.
function _M.value(id)
    local v = ngx_var[id.var]
    if v == nil or v == "" then
        return nil
    end
    if id.context then
        return signed_value(id, v)
    end
    if #v > VALUE_MAX then
        return nil
    end
    return v
end

--- The memcached key of an identity's value ("uid:42"), or nil when the
-- value cannot be a key (spaces, control bytes).
function _M.key(id, value)
    local key = id.prefix .. value
    if not key_ok(key) then
        return nil
    end
    return key
end

return _M
