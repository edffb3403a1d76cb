-- gray.ids: the identities a router keys on besides the client address: a
-- user id in a cookie, a device id in a header, a query argument. Each has
-- a name, which is its memcached key prefix: `uid:42`, `dev:a1b2`.
--
--   local ids = assert(require("gray.ids").parse("uid=cookie:uid, dev=header:X-Device-Id"))
--   local key = ids.key(ids[1])      -- "uid:42", or nil when absent or unusable

local gray_ffi = require "gray.ffi"

local ngx_var = ngx.var
local key_ok = gray_ffi.mc_key_ok
local type, ipairs = type, ipairs

local _M = { _VERSION = gray_ffi.VERSION }

local IDS_MAX = 4           -- identities per router (gray.lua unrolls over them)
local VALUE_MAX = 200       -- bytes of an id value; a longer one is ignored
_M.VALUE_MAX = VALUE_MAX

-- source -> the nginx variable prefix that reads it
local SOURCES = { cookie = "cookie_", header = "http_", query = "arg_", arg = "arg_" }

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
        local name, source, field = item:match("^([%w_%-]+)%s*=%s*(%a+):([%w_%-%.]+)$")
        if not name then
            return nil, "bad identity '" .. item .. "' (expected name=cookie:field,"
                        .. " name=header:Field-Name or name=query:arg)"
        end
        source = source:lower()
        if not SOURCES[source] then
            return nil, "identity '" .. name .. "': unknown source '" .. source
                        .. "' (cookie, header or query)"
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
        ids[#ids + 1] = { name = name, prefix = name .. ":", var = var, source = source,
                          field = field, reason = "id:" .. name, list_reason = "list:" .. name }
    end
    if #ids > IDS_MAX then
        return nil, "at most " .. IDS_MAX .. " identities"
    end
    return ids
end

--- This request's value of an identity, or nil when it is absent, empty,
-- longer than VALUE_MAX or not usable in a memcached key: such a value is
-- never sent anywhere.
function _M.value(id)
    local v = ngx_var[id.var]
    if v == nil or v == "" or #v > VALUE_MAX then
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
